"""`tumorgen demo`: the whole pipeline on phantoms, on a CPU, in bounded time: what a newcomer runs first.

It calls the same functions as the individual commands, in order: phantoms in the AutoPET layout ->
prepare -> train the VAE -> train TumorGen -> synthesize tumors into the healthy phantoms (boxes in
the lungs found on CT) -> montage, first quality numbers and `report.md`. Each training stage gets a
wall-time budget (`train.max_minutes`), so the demo ends in the time asked whatever the machine.

Everything lands under one folder, and a second run reuses what is complete: phantoms and the PREP
cache when their folders exist (both are written atomically), a training stage when its checkpoint
reached its budget or its steps (otherwise it resumes with the time left), and the synthetic cases
when their manifest names the current checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tumorgen.errors import fail_on
from tumorgen.io.atomic import write_json

STATE_FILE = "demo.json"
LAYOUT = "autopet"  # a CT beside each PET, so sampled boxes go into the lungs found on it
# Seconds kept for phantoms, prepare, synthesis, quality numbers and the report (measured ~1.5 min on
# 2 busy cores); the rest of --minutes trains, 40% VAE and 60% TumorGen (the flow model needs more).
OVERHEAD_MINUTES = 2.0
VAE_SHARE = 0.4


@dataclass(frozen=True)
class DemoPlan:
    """What one demo run does; stored in OUT/demo.json so a later run can tell what it may reuse.

    Args:
        preset: the config preset both stages train with ("phantom", or "debug" for --fast).
        tumor_cases, healthy_cases: phantoms written with and without a tumor.
        size: phantom and model grid edge in voxels.
        vae_minutes, train_minutes: wall-time budgets of the two training stages.
        train_steps: steps of each training stage, or None for the preset's (time usually stops first).
        samples_per_case: synthetic tumors per healthy phantom.
        sample_steps: Euler steps at synthesis.
        fid: compute FID/KID on tumor-center slices (an Inception pass, ~0.5 min on a CPU).
        seed: seeds phantoms, split, training and synthesis.
    """

    preset: str
    tumor_cases: int
    healthy_cases: int
    size: int
    vae_minutes: float
    train_minutes: float
    train_steps: int | None
    samples_per_case: int
    sample_steps: int
    fid: bool
    seed: int


def plan_demo(*, minutes: float = 11.0, fast: bool = False, seed: int = 0) -> DemoPlan:
    """The default demo (phantom preset, 64^3) or the --fast one (debug preset, 32^3, seconds).

    Args:
        minutes: the demo's whole budget; training gets what is left after OVERHEAD_MINUTES.
        fast: the CI-sized variant: tiny models that only prove the pipeline runs.
        seed: the demo's seed.
    """
    if fast:
        # steps, not time, end the fast demo's training (a time cut on a busy CI machine would vary)
        return DemoPlan(preset="debug", tumor_cases=5, healthy_cases=2, size=32, vae_minutes=5.0, train_minutes=5.0,
                        train_steps=2, samples_per_case=1, sample_steps=2, fid=False, seed=seed)
    training = minutes - OVERHEAD_MINUTES
    if training < 1.0:
        raise ValueError(f"--minutes {minutes:g} leaves no time to train; give at least {OVERHEAD_MINUTES + 1:g}")
    return DemoPlan(preset="phantom", tumor_cases=24, healthy_cases=6, size=64,
                    vae_minutes=round(VAE_SHARE * training, 2), train_minutes=round((1 - VAE_SHARE) * training, 2),
                    train_steps=None, samples_per_case=2, sample_steps=10, fid=True, seed=seed)


@dataclass
class DemoPaths:
    """The demo folder's layout."""

    out: Path

    @property
    def raw(self) -> Path:
        return self.out / "data" / f"phantom-{LAYOUT}"

    @property
    def prep(self) -> Path:
        return self.out / "prep"

    @property
    def vae(self) -> Path:
        return self.out / "runs" / "vae"

    @property
    def tumorgen(self) -> Path:
        return self.out / "runs" / "tumorgen"

    @property
    def synthetic(self) -> Path:
        return self.out / "synthetic"

    @property
    def montage(self) -> Path:
        return self.out / "montage.png"

    @property
    def report(self) -> Path:
        return self.out / "report.md"


@dataclass
class StageRecord:
    """One stage as the report shows it: name, seconds this run, whether it was reused, a note."""

    name: str
    seconds: float
    reused: bool
    note: str = ""
    command: str = ""


@dataclass
class DemoResult:
    plan: DemoPlan
    paths: DemoPaths
    stages: list[StageRecord] = field(default_factory=list)
    quality: dict = field(default_factory=dict)
    seconds: float = 0.0


def run_demo(*, out: str | Path = "demo_out", minutes: float = 11.0, fast: bool = False, seed: int = 0,
             progress: bool = True, say: Callable[[str], None] | None = None) -> DemoResult:
    """Run (or continue) the demo in `out` and write its montage and report.

    Args:
        out: the demo folder; created, or reused when it holds an earlier demo with the same plan.
        minutes: the whole budget in minutes (ignored by `fast`).
        fast: the 1-2 minute variant on the debug preset.
        seed: the demo's seed.
        progress: show progress bars.
        say: where the narrative goes (default: print to stdout).
    """
    say = say or (lambda text: print(text, flush=True))
    plan = plan_demo(minutes=minutes, fast=fast, seed=seed)
    paths = DemoPaths(Path(out))
    _check_state(paths, plan)
    result = DemoResult(plan=plan, paths=paths)
    started = time.perf_counter()
    say(f"TumorGen demo ({'fast, debug preset' if fast else f'{minutes:g} min budget, phantom preset'}) in {paths.out}")
    from tumorgen import demo_stages as stages

    steps = (stages.phantoms, stages.prepare, stages.train_vae_stage, stages.train_tumorgen_stage,
             stages.synthesize_stage, stages.quality_stage)
    for number, stage in enumerate(steps, start=1):
        t0 = time.perf_counter()
        record = stage(plan=plan, paths=paths, result=result, progress=progress,
                       say=lambda text, n=number: say(f"[{n}/{len(steps) + 1}] {text}"))
        record.seconds = time.perf_counter() - t0
        result.stages.append(record)
        verb = "reused" if record.reused else "done"
        say(f"      {verb} in {_clock(record.seconds)}{f' - {record.note}' if record.note else ''}")
        _save_state(paths, plan, result)

    t0 = time.perf_counter()
    say(f"[{len(steps) + 1}/{len(steps) + 1}] montage and report")
    from tumorgen.demo_montage import write_demo_montage
    from tumorgen.demo_report import render_report

    write_demo_montage(paths=paths, plan=plan)
    result.stages.append(StageRecord(name="montage and report", seconds=time.perf_counter() - t0, reused=False))
    result.seconds = time.perf_counter() - started
    from tumorgen.io.atomic import write_text

    write_text(paths.report, render_report(result))
    _save_state(paths, plan, result)
    say(f"      done in {_clock(result.stages[-1].seconds)}")
    say(closing_words(result))
    return result


def closing_words(result: DemoResult) -> str:
    """Where to look, and what to run next on one's own data."""
    p = result.paths
    return "\n".join([
        f"demo finished in {_clock(result.seconds)}.",
        "Look at:",
        f"  {p.montage}   real phantom tumors (top) beside synthetic ones, mask contours in red",
        f"  {p.report}     what ran, how long each part took, the first quality numbers",
        f"  {p.synthetic}/   synthetic PET (SUV) + masks as NIfTI, one PNG per sample, manifest.json",
        f"  {p.tumorgen}/loss_curve.png, {p.vae}/loss_curve.png   the training curves",
        "Next, on your own data (see report.md for the exact commands the demo ran):",
        "  tumorgen prepare --layout hecktor --root /path/to/hecktor --out prep/hecktor      (or autopet, nnunet, pairs)",
        "  tumorgen train-vae --data prep/hecktor --out runs/vae --config hecktor",
        "  tumorgen train --data prep/hecktor --vae runs/vae --out runs/tumorgen --config hecktor",
        "  tumorgen synthesize --model runs/tumorgen --input scan_suv.nii.gz --out synth --num 4",
        "  tumorgen augment --model runs/tumorgen --data /path/to/hecktor --layout hecktor --out nnunet_raw --per-case 2",
        "Run the demo again with a larger --minutes to continue training where it stopped.",
    ])


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s" if seconds >= 60 else f"{seconds:.1f}s"


def _check_state(paths: DemoPaths, plan: DemoPlan) -> None:
    """Refuse to mix two demos in one folder: a fast demo's tiny models cannot continue a full one's."""
    state_path = paths.out / STATE_FILE
    if paths.out.exists() and not paths.out.is_dir():
        raise fail_on(paths.out, "exists and is not a folder; choose another --out")
    if not state_path.exists():
        if paths.out.exists() and any(paths.out.iterdir()):
            raise fail_on(paths.out, f"holds files but no {STATE_FILE}; it is not a demo folder, choose another --out")
        return
    try:
        old = json.loads(state_path.read_text())["plan"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise fail_on(state_path, "is not a demo state file; remove the folder or choose another --out") from None
    for key in ("preset", "tumor_cases", "healthy_cases", "size", "seed"):
        if old.get(key) != getattr(plan, key):
            raise fail_on(paths.out, f"holds a demo with {key}={old.get(key)!r}, not {getattr(plan, key)!r}; "
                                     "choose another --out (or delete it) to start a different demo")


def _save_state(paths: DemoPaths, plan: DemoPlan, result: DemoResult) -> None:
    paths.out.mkdir(parents=True, exist_ok=True)
    write_json(paths.out / STATE_FILE, {"format": "tumorgen-demo", "version": 1, "plan": asdict(plan),
                                        "stages": [asdict(s) for s in result.stages], "quality": result.quality,
                                        "python": sys.version.split()[0]})


def remove_incomplete_run(run_dir: Path) -> bool:
    """A run folder without checkpoints/last.pt was interrupted before its first checkpoint: start over."""
    if run_dir.exists() and not (run_dir / "checkpoints" / "last.pt").exists():
        shutil.rmtree(run_dir)
        return True
    return False


def derived_seed(seed: int, index: int) -> int:
    """An independent seed per healthy case, from the demo's seed."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])
