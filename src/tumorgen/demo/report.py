"""The demo's `report.md`: what ran (as commands a user can type), how long each part took, first numbers.

Numbers come with what they mean at this scale: minutes of CPU training on phantoms buy a working
pipeline, not the paper's quality, and FID on a dozen slices is mostly small-sample bias, so the
real-vs-real floor at the same set size is printed beside it.
"""

from __future__ import annotations

import os
import platform


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _mean_sd(entry: dict, spec: str = ".2f") -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:{spec}} ± {entry['sd']:{spec}}"


def clock(seconds: float) -> str:
    """A duration as the demo says it, on the console and in report.md: `42.3 s`, `3 min 5 s`."""
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.1f} s"


def render_report(result) -> str:
    """The whole report as Markdown, from a `demo.plan.DemoResult` whose quality stage has run."""
    plan, paths, q = result.plan, result.paths, result.quality
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# TumorGen demo report", "",
        f"Preset `{plan.preset}`, seed {plan.seed}: {plan.tumor_cases} phantoms with a tumor and {plan.healthy_cases} "
        f"healthy ones at {plan.size}^3 in the AutoPET layout; training budgets {plan.vae_minutes:g} min (VAE) and "
        f"{plan.train_minutes:g} min (TumorGen); {plan.samples_per_case} synthetic tumors per healthy phantom.",
        f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, load average {load:.1f} when the report was written. "
        f"Total time of this run: {clock(result.seconds)}.", "",
        "## What ran", "",
        "| step | time | | what you would type |", "|---|---|---|---|",
    ]
    for s in result.stages:
        status = "reused" if s.reused else "ran"
        note = f" ({s.note})" if s.note and s.note != "reusing" else ""
        lines.append(f"| {s.name} | {clock(s.seconds)} | {status}{note} | {f'`{s.command}`' if s.command else ''} |")
    lines += ["", f"Outputs: `{paths.montage}` (montage), `{paths.synthetic}/` (synthetic PET in SUV and masks as NIfTI, "
              "one preview PNG per sample, `manifest.json`), loss curves in each run folder under "
              f"`{paths.out / 'runs'}/`.", ""]
    lines += _training_section(q)
    lines += _tumor_section(q)
    lines += _fid_section(q)
    lines += ["## What to run next", "",
              "- Longer training gives better tumors: run the demo again with a larger `--minutes` (it resumes), "
              "or train with the commands above without `max_minutes`.",
              "- Your own data: `tumorgen prepare --layout hecktor --root /path/to/hecktor --out prep/hecktor` "
              "(or `autopet`, `nnunet`, `pairs`), then `train-vae`, `train`, `synthesize` and `augment` as above "
              "with `--config hecktor` / `autopet`.", ""]
    return "\n".join(lines)


def _training_section(q: dict) -> list[str]:
    recon = q.get("vae_reconstruction", {})
    lines = ["## Training", "", "| stage | steps | minutes | stopped by time | s/step | first loss | final losses |",
             "|---|---|---|---|---|---|---|"]
    for name, key in (("VAE", "vae_run"), ("TumorGen", "tumorgen_run")):
        run = q.get(key, {})
        losses = ", ".join(f"{k} {v:.4g}" for k, v in run.get("losses", {}).items())
        lines.append(f"| {name} | {run.get('step', '-')} | {_fmt(run.get('train_minutes'), '.1f')} | "
                     f"{'yes' if run.get('stopped_by_time') else 'no'} | {_fmt(run.get('sec_per_step'), '.2f')} | "
                     f"{_fmt(run.get('first_loss'), '.4g')} | {losses} |")
    lines += ["", f"VAE reconstruction on {recon.get('cases', 0)} {recon.get('on', 'whole volumes')} of the "
              f"{recon.get('split', 'test')} cases (encode -> decode): mean absolute error {_fmt(recon.get('mae_suv'))} SUV over the volume, "
              f"{_fmt(recon.get('tumor_mae_suv'))} SUV inside tumors.", ""]
    return lines


def _tumor_section(q: dict) -> list[str]:
    real, synth = q.get("real", {}), q.get("synthetic", {})
    lines = ["## Tumors: real phantoms vs synthetic", "",
             "| | n | volume (mL) | SUV mean | SUV max | connected components |", "|---|---|---|---|---|---|"]
    for name, block in (("real phantoms", real), ("synthetic", synth)):
        lines.append(f"| {name} | {block.get('n', 0)} | {_mean_sd(block.get('tumor_volume_ml'))} | "
                     f"{_mean_sd(block.get('suv_mean'))} | {_mean_sd(block.get('suv_max'))} | "
                     f"{_mean_sd(block.get('components'), '.1f')} |")
    ratio = synth.get("noise_ratio", {})
    lines += ["", f"**Synthetic samples that look like tumors: {synth.get('passing', 0)} of {synth.get('n', 0)}** "
              "(mask not empty, its largest component >= 90% of it, 5-95% of its box, mean SUV inside >= 2x the "
              "median of the box's other voxels).", "",
              f"Synthetic masks that came out empty: {synth.get('empty_masks', 0)} of {synth.get('n', 0)}. "
              "Mean ± sd over tumors (empty masks left out of the SUV columns); a real phantom tumor is one component.",
              "", f"Noise grain inside the box vs a shell around it (relative residual sd, ratio 1 = seamless): "
              f"{_mean_sd(ratio)} over {ratio.get('n', 0)} samples.", "",
              "A `-` noise ratio: fewer than 32 smooth tissue voxels left in the box outside the mask (a mask that "
              "fills its box, as an undertrained model's does).", "",
              "| sample | passes | volume (mL) | SUV mean | SUV max | components | mask fills box | contrast | "
              "noise in/out | mask voxels outside box |", "|---|---|---|---|---|---|---|---|---|---|"]
    from tumorgen.demo.montage import short_name

    for s in synth.get("samples", []):
        lines.append(f"| {short_name(s['case'])} #{s['k']} | {'yes' if s.get('passes') else 'no'} | "
                     f"{_fmt(s['tumor_volume_ml'], '.2f')} | "
                     f"{_fmt(s['suv_mean'], '.2f')} | {_fmt(s['suv_max'], '.2f')} | {s['components']} | "
                     f"{_fmt(100 * s['box_fill'], '.0f')}% | {_fmt(s.get('contrast'), '.1f')}x | "
                     f"{_fmt(s['noise_ratio'], '.2f')} | {s['mask_outside_box']} |")
    return lines + [""]


def _fid_section(q: dict) -> list[str]:
    fid = q.get("fid")
    if fid is None:
        return ["## FID / KID", "", "Not computed in this variant (`--fast`).", ""]
    if "skipped" in fid:
        return ["## FID / KID", "", f"Skipped: {fid['skipped']}.", ""]
    s, floor = fid["scores"], fid.get("floor")
    lines = ["## FID / KID on tumor-center slices", "",
             f"Inception features of the axial, sagittal and coronal slices through each tumor's center: "
             f"{s['n_generated']} synthetic vs all {s['n_real']} real phantom tumors. At this set size FID is "
             "dominated by small-sample bias; compare it with the real-vs-real floor (two disjoint sets of real "
             "tumors of the same size, mean ± spread over 5 splits), not with the paper's numbers.", "",
             "| | FID axial | FID sagittal | FID coronal | FID avg | KID avg |", "|---|---|---|---|---|---|"]
    plane_keys = ("A", "S", "C")  # evaluation.fid.PLANE_KEYS: axial, sagittal, coronal
    row = " | ".join(_fmt(s[k], ".1f") for k in plane_keys)
    lines.append(f"| synthetic vs real | {row} | {_fmt(s['Avg'], '.1f')} | {_fmt(s['KID_Avg'], '.4f')} |")
    if floor:
        row = " | ".join(f"{floor[k]:.1f} ± {floor[k + '_spread']:.1f}" for k in plane_keys)
        lines.append(f"| real vs real floor (n={floor['n_real']}) | {row} | {floor['Avg']:.1f} ± "
                     f"{floor['Avg_spread']:.1f} | {floor['KID_Avg']:.4f} |")
    return lines + [""]
