"""`report.md` of the bundled-model demo: every sample, its four checks, and the command that makes it.

The checks are the demo's (`evaluation.tumor_measures.tumor_check`): a mask that is not empty, one
main component (>= 90% of the mask), 5-95% of its box, and a mean SUV inside >= 2x the median of the
rest of the box. For the example scans the real tumor's volume and SUV stand beside each sample: the
model was never trained on these three cases, and its uptake is drawn from the training tumors', so
a sample matches its real tumor only as one more tumor of the same kind, not voxel for voxel.
"""

from __future__ import annotations

import os
import platform


def _f(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def render_bundled_report(result) -> str:
    """The report as Markdown, from a `demo.bundled.BundledDemoResult`."""
    model = result.model
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# TumorGen demo: the bundled model", "",
        f"Model `{model['run']}` (TumorGen {model['version']}, {model['step']} training steps, weights SHA-256 "
        f"`{model['checkpoint_sha256'][:16]}...`). Machine: {os.cpu_count()} CPUs, {platform.machine()}, load "
        f"average {load:.1f}. This run: {result.seconds['total']:.1f} s "
        + "(" + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items() if k != "total") + ").", "",
        f"**{result.passed} of {len(result.samples)}** synthetic tumors pass all four checks.", "",
        "| scan | # | box (x0 y0 z0 x1 y1 z1) | mL | SUV mean / max | real tumor: mL, SUV mean / max | components "
        "| box share | contrast | passes | s |",
        "|---|---:|---|---:|---|---|---:|---:|---:|---|---:|",
    ]
    for s in result.samples:
        st, ck = s.stats, s.check
        real = (f"{s.real['tumor_volume_ml']:.1f}, {_f(s.real['suv_mean'])} / {_f(s.real['suv_max'])}"
                if s.real else "(healthy phantom)")
        lines.append(
            f"| {s.case} | {s.k} | {' '.join(map(str, s.box))} | {st['tumor_volume_ml']:.1f} | "
            f"{_f(st['suv_mean'])} / {_f(st['suv_max'])} | {real} | {st['components']} | {ck['box_share']:.0%} | "
            f"{ck['contrast']:.1f}x | {'yes' if ck['passes'] else 'no'} | {s.seconds:.2f} |")
    lines += [
        "", "Checks: mask not empty; largest component >= 90% of the mask; 5-95% of its box; mean SUV inside >= 2x "
        "the median of the box outside the mask. Example scans: the real tumor is erased from its box (tight box + 2 "
        "voxels a face) and a new one grown there, its uptake drawn from the training tumors'. Phantoms: boxes sampled "
        "in the lungs found on CT, sizes from the training tumors'.", "",
        "## Pictures", "",
        "- `montage_examples.png`: each example's real tumor (row `real`), then the synthetic ones in the same box.",
        "- `montage_phantoms.png`: the tumors grown in the healthy phantoms' lungs.",
        "- `synthetic/`: every sample as NIfTI (SUV, mask) on its input's grid, a PNG each, `manifest.json`.", "",
        "## The commands that make the same files", "",
    ]
    lines += [f"    {c}" for c in result.commands]
    lines += ["", "Same seed, same samples. The model card: `tumorgen models --card ibsi-fdg`.", ""]
    return "\n".join(lines)
