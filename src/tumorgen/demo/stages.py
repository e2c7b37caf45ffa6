"""The demo's stages, one function each: `(plan, paths, result, progress, say) -> StageRecord`.

Each stage first checks whether its output is already complete (the reuse rules are in the `tumorgen.demo`
package docstring), then calls the library function the matching command calls, and records the command a
user would type to do the same step alone.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tumorgen.config import Config, apply_overrides, load_config
from tumorgen.demo.plan import DemoPaths, DemoPlan, DemoResult, StageRecord, remove_incomplete_run
from tumorgen.synthesis.pipeline import derived_seed


def q(path) -> str:
    """A path as a shell word (AutoPET study folders have spaces in their names)."""
    return shlex.quote(str(path))


def phantoms(*, plan: DemoPlan, paths: DemoPaths, result: DemoResult, progress: bool, say) -> StageRecord:
    from tqdm import tqdm

    from tumorgen.data.phantom_layouts import write_phantom_dataset

    command = (f"tumorgen phantom --layout autopet --out {q(paths.raw)} --cases {plan.tumor_cases} "
               f"--healthy {plan.healthy_cases} --size {plan.size} --seed {plan.seed}")
    name = f"phantoms: {plan.tumor_cases} with a tumor + {plan.healthy_cases} healthy, {plan.size}^3, AutoPET layout"
    if paths.raw.is_dir():  # written through a staged folder: it exists only when complete
        say(f"{name} - reusing {paths.raw}")
        return StageRecord(name="phantoms", seconds=0.0, reused=True, note="reusing", command=command)
    say(name)
    with tqdm(total=plan.tumor_cases + plan.healthy_cases, desc="phantoms", unit="case", disable=not progress) as bar:
        write_phantom_dataset(layout="autopet", out=paths.raw, cases=plan.tumor_cases, healthy=plan.healthy_cases,
                              size=plan.size, seed=plan.seed, on_case=lambda case: bar.update(1))
    return StageRecord(name="phantoms", seconds=0.0, reused=False, command=command)


def prepare(*, plan: DemoPlan, paths: DemoPaths, result: DemoResult, progress: bool, say) -> StageRecord:
    from tumorgen.data.prepare import prepare_dataset

    command = f"tumorgen prepare --layout autopet --root {q(paths.raw)} --out {q(paths.prep)} --size {plan.size} --seed {plan.seed}"
    if (paths.prep / "dataset.json").is_file():
        say(f"prepare: reusing the PREP cache {paths.prep}")
        return StageRecord(name="prepare", seconds=0.0, reused=True, note="reusing", command=command)
    say(f"prepare: orient, resample, crop to the lungs found on CT, SUV -> [0, 1], {plan.size}^3 -> {paths.prep}")
    info = prepare_dataset(layout="autopet", root=paths.raw, out=paths.prep, size=plan.size, seed=plan.seed,
                           progress=progress)
    split = info["split"]
    return StageRecord(name="prepare", seconds=0.0, reused=False, command=command,
                       note=f"train {len(split['train'])} / test {len(split['test'])} cases")


def stage_config(plan: DemoPlan, *, field: str, minutes: float) -> Config:
    """The preset with the demo's seed and a wall-time budget for one stage (`vae_train` or `train`)."""
    overrides = [f"{field}.seed={plan.seed}", f"{field}.max_minutes={minutes:.4f}"]
    if plan.train_steps is not None:
        overrides.append(f"{field}.steps={plan.train_steps}")
    return apply_overrides(load_config(plan.preset), overrides)


def _set_flags(plan: DemoPlan, field: str, minutes: float) -> str:
    flags = f"--set {field}.seed={plan.seed} {field}.max_minutes={minutes:g}"
    return flags + (f" --steps {plan.train_steps}" if plan.train_steps is not None else "")


def _train(*, kind: str, field: str, run_dir: Path, budget: float, plan: DemoPlan, say, train_fn, command: str
           ) -> StageRecord:
    """Train a stage fresh, resume it with the time left, or reuse it when its budget or steps are spent."""
    from tumorgen.training.checkpoint import load_checkpoint

    if remove_incomplete_run(run_dir):
        say(f"{kind}: {run_dir} was interrupted before its first checkpoint; starting it again")
    last = run_dir / "checkpoints" / "last.pt"
    steps = getattr(stage_config(plan, field=field, minutes=budget), field).steps
    if last.exists():
        payload = load_checkpoint(last, expected_kind="vae" if field == "vae_train" else "tumorgen")
        spent = float(payload["extra"].get("train_seconds", 0.0))
        step = int(payload["step"])
        if step >= steps or spent >= budget * 60.0:
            say(f"{kind}: reusing {run_dir} (step {step}, {spent / 60:.1f} of {budget:g} min trained)")
            return StageRecord(name=kind, seconds=0.0, reused=True, command=command,
                               note=f"reusing: step {step}, {spent / 60:.1f} min trained")
        left = budget - spent / 60.0
        say(f"{kind}: resuming {run_dir} at step {step} for the {left:.1f} min left of its {budget:g} min")
        fit = train_fn(config=stage_config(plan, field=field, minutes=left), resume=True)
    else:
        say(f"{kind}: training for up to {budget:g} min or {steps} steps -> {run_dir}")
        fit = train_fn(config=stage_config(plan, field=field, minutes=budget), resume=False)
    ended = "time budget spent" if fit.stopped_by_time else "all steps done"
    return StageRecord(name=kind, seconds=0.0, reused=False, command=command,
                       note=f"step {fit.step}, {ended}, loss {fit.last_losses.get('loss', float('nan')):.4f}")


def train_vae_stage(*, plan: DemoPlan, paths: DemoPaths, result: DemoResult, progress: bool, say) -> StageRecord:
    from tumorgen.training.vae_stage import train_vae

    command = (f"tumorgen train-vae --data {q(paths.prep)} --out {q(paths.vae)} --config {plan.preset} "
               + _set_flags(plan, "vae_train", plan.vae_minutes))

    def train_fn(*, config: Config, resume: bool):
        return train_vae(data=paths.prep, out=paths.vae, config=config, resume=resume, progress=progress)

    return _train(kind="train VAE", field="vae_train", run_dir=paths.vae, budget=plan.vae_minutes, plan=plan,
                  say=say, train_fn=train_fn, command=command)


def train_tumorgen_stage(*, plan: DemoPlan, paths: DemoPaths, result: DemoResult, progress: bool, say) -> StageRecord:
    from tumorgen.io.files import sha256_file
    from tumorgen.training.tumorgen_stage import train_tumorgen

    command = (f"tumorgen train --data {q(paths.prep)} --vae {q(paths.vae)} --out {q(paths.tumorgen)} "
               f"--config {plan.preset} " + _set_flags(plan, "train", plan.train_minutes))
    data_json = paths.tumorgen / "data.json"
    if data_json.is_file():
        pinned = json.loads(data_json.read_text()).get("vae_sha256")
        if pinned != sha256_file(paths.vae / "checkpoints" / "last.pt"):  # the VAE trained on: start again
            import shutil

            say(f"train TumorGen: the VAE changed since {paths.tumorgen} was trained; training it again")
            shutil.rmtree(paths.tumorgen)

    def train_fn(*, config: Config, resume: bool):
        return train_tumorgen(data=paths.prep, vae_run=paths.vae, out=paths.tumorgen, config=config, resume=resume,
                              progress=progress)

    return _train(kind="train TumorGen", field="train", run_dir=paths.tumorgen, budget=plan.train_minutes,
                  plan=plan, say=say, train_fn=train_fn, command=command)


def healthy_scans(paths: DemoPaths) -> list[tuple[str, Path]]:
    """(case name, raw SUV path) of the healthy phantoms, from the PREP cache's records."""
    info = json.loads((paths.prep / "dataset.json").read_text())
    return [(c["name"], paths.raw / c["source_image"]) for c in info["cases"] if c["healthy"]]


def synthesize_stage(*, plan: DemoPlan, paths: DemoPaths, result: DemoResult, progress: bool, say) -> StageRecord:
    from tqdm import tqdm

    from tumorgen.io.files import sha256_file
    from tumorgen.synthesis.manifest import MANIFEST_NAME
    from tumorgen.synthesis.pipeline import write_outputs

    scans = healthy_scans(paths)
    checkpoint_sha = sha256_file(paths.tumorgen / "checkpoints" / "last.pt")
    first_seed = derived_seed(plan.seed, 0)
    command = (f"tumorgen synthesize --model {q(paths.tumorgen)} --input {q(scans[0][1])} --out {q(paths.synthetic)} "
               f"--num {plan.samples_per_case} --steps {plan.sample_steps} --seed {first_seed}   (one call per healthy scan)")
    manifest_path = paths.synthetic / MANIFEST_NAME
    if manifest_path.is_file() and _manifest_complete(json.loads(manifest_path.read_text()), scans, plan, checkpoint_sha,
                                                      paths.synthetic):
        say(f"synthesize: reusing {paths.synthetic} (made with the current checkpoint)")
        return StageRecord(name="synthesize", seconds=0.0, reused=True, note="reusing", command=command)
    from tumorgen.api import TumorGen

    say(f"synthesize: {plan.samples_per_case} tumors into each of {len(scans)} healthy phantoms, boxes sampled in the "
        f"lungs found on CT, {plan.sample_steps} Euler steps -> {paths.synthetic}")
    model = TumorGen.load(paths.tumorgen, device="cpu")
    record = model.model_record()
    with tqdm(total=len(scans) * plan.samples_per_case, desc="synthesize", unit="tumor", disable=not progress) as bar:
        for index, (name, scan) in enumerate(scans):
            results = model.synthesize(scan, num=plan.samples_per_case, steps=plan.sample_steps,
                                       seed=derived_seed(plan.seed, index), on_samples=bar.update)
            write_outputs(results, scan_path=scan, out_dir=paths.synthetic, case_name=name, overwrite=True,
                          manifest_extra={"model": record, "steps": plan.sample_steps})
    return StageRecord(name="synthesize", seconds=0.0, reused=False, command=command,
                       note=f"{len(scans) * plan.samples_per_case} synthetic tumors")


def _manifest_complete(manifest: dict, scans, plan: DemoPlan, checkpoint_sha: str, folder: Path) -> bool:
    by_case = {c.get("case"): c for c in manifest.get("cases", [])}
    for name, _ in scans:
        entry = by_case.get(name)
        if entry is None or entry.get("model", {}).get("checkpoint_sha256") != checkpoint_sha:
            return False
        samples = entry.get("samples", [])
        if len(samples) != plan.samples_per_case or entry.get("steps") != plan.sample_steps:
            return False
        if not all((folder / f).is_file() for s in samples for f in s["files"].values()):
            return False
    return True


def quality_stage(*, plan: DemoPlan, paths: DemoPaths, result: DemoResult, progress: bool, say) -> StageRecord:
    from tumorgen.demo.quality import measure_quality

    say("quality: VAE reconstruction, final losses, uptake/volume/components, seam noise"
        + (", FID/KID on tumor-center slices" if plan.fid else ""))
    result.quality = measure_quality(plan=plan, paths=paths, say=say)
    return StageRecord(name="quality numbers", seconds=0.0, reused=False)
