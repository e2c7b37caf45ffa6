"""`run_demo`: the demo's stages in order, the montage and the report, and the demo folder's state file.

What the demo does and what it reuses is in the package docstring (`tumorgen.demo`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from tumorgen.demo.plan import STATE_FILE, DemoPaths, DemoPlan, DemoResult, StageRecord, plan_demo
from tumorgen.demo.report import clock
from tumorgen.errors import fail_on
from tumorgen.io.atomic import write_json


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
    from tumorgen.demo import stages

    steps = (stages.phantoms, stages.prepare, stages.train_vae_stage, stages.train_tumorgen_stage,
             stages.synthesize_stage, stages.quality_stage)
    for number, stage in enumerate(steps, start=1):
        t0 = time.perf_counter()
        record = stage(plan=plan, paths=paths, result=result, progress=progress,
                       say=lambda text, n=number: say(f"[{n}/{len(steps) + 1}] {text}"))
        record.seconds = time.perf_counter() - t0
        result.stages.append(record)
        verb = "reused" if record.reused else "done"
        say(f"      {verb} in {clock(record.seconds)}{f' - {record.note}' if record.note else ''}")
        _save_state(paths, plan, result)

    t0 = time.perf_counter()
    say(f"[{len(steps) + 1}/{len(steps) + 1}] montage and report")
    from tumorgen.demo.montage import write_demo_montage
    from tumorgen.demo.report import render_report

    write_demo_montage(paths=paths, plan=plan)
    result.stages.append(StageRecord(name="montage and report", seconds=time.perf_counter() - t0, reused=False))
    result.seconds = time.perf_counter() - started
    from tumorgen.io.atomic import write_text

    write_text(paths.report, render_report(result))
    _save_state(paths, plan, result)
    say(f"      done in {clock(result.stages[-1].seconds)}")
    say(closing_words(result))
    return result


def closing_words(result: DemoResult) -> str:
    """Where to look, and what to run next on one's own data."""
    p = result.paths
    return "\n".join([
        f"demo finished in {clock(result.seconds)}.",
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


