"""Train TumorGen on a downstream cell's own real cases only: the generators of arm `tumorgen-own`.

    python benchmarks/downstream_generators.py --data PREP --out RUNS --n-real 5,10 --seeds 0,1,2 \
        [--config phantom] [--vae-steps 1500] [--steps 1600] [--set KEY=VALUE ...] [--no-progress]

then `python benchmarks/downstream.py ... --arms real,tumorgen-own,... --tumorgen-own RUNS`.

Why: the study's `--tumorgen` run learned from the whole train split, so at n = 5 its synthetic cases
carry what it saw in the other 25 or so; a user who has 5 annotated cases has no such model. For each
(n, seed) this takes exactly the real cases the study's cell takes (`downstream_plan.real_order`: the seed's
permutation of the train split, its first n), writes them as a PREP cache of their own (hard links) and
trains both stages on it, the VAE too (its loss weights the tumor, so it reads the labels):

    RUNS/n005_s0/plan.json    written first: the real cases, data, preset, overrides and step budgets
    RUNS/n005_s0/prep/        the n cases (train split only)
    RUNS/n005_s0/vae/         `tumorgen train-vae --steps VAE_STEPS`
    RUNS/n005_s0/tumorgen/    `tumorgen train --steps STEPS`
    RUNS/n005_s0/generators.json   written last: the plan, the steps reached, the minutes of this
                                   call and the sha256 of TumorGen's last checkpoint (the study's
                                   synthetic pools and cells are keyed by it)

Budgets are steps, not minutes (`max_minutes` is switched off, whatever the preset says), so every
(n, seed) gets the same training whatever else the machine is doing. A pair whose generators.json
exists is skipped; an interrupted one resumes from its checkpoints; a folder planned with other
settings is refused, not silently reused.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.downstream_data import write_training_set
from tumorgen.evaluation.downstream_plan import (
    OWN_DONE, OWN_FORMAT, own_folder, parse_n_values, parse_seeds, real_order,
)
from tumorgen.io.atomic import write_json
from tumorgen.io.files import read_json_index, sha256_file
from tumorgen.training.checkpoint import load_checkpoint


NO_TIME_CAP = ["vae_train.max_minutes=none", "train.max_minutes=none"]


def _stage(command: list[str], run: Path, *, steps: int, progress: bool) -> float:
    """Run one training stage to `steps` (resuming a run cut short); its minutes in this call."""
    argv = [sys.executable, "-m", "tumorgen", *command, "--out", str(run), "--steps", str(steps)]
    if (run / "checkpoints" / "last.pt").is_file():
        argv.append("--resume")
    elif run.exists():  # cut before its first checkpoint: nothing to resume
        shutil.rmtree(run)
    if not progress:
        argv.append("--no-progress")
    started = time.perf_counter()
    done = subprocess.run(argv)
    if done.returncode != 0:
        raise TumorGenError(f"{shlex.join(argv)} failed (exit {done.returncode}); its run folder is {run}")
    reached = load_checkpoint(run).get("step")
    if reached != steps:
        raise fail_on(run, f"stopped at step {reached}, not the {steps} asked for")
    return (time.perf_counter() - started) / 60


def train_pair(*, dataset, folder: Path, plan: dict, progress: bool) -> dict:
    """The VAE and TumorGen of one (n, seed), trained on `plan["real_cases"]` only."""
    done, planned = folder / OWN_DONE, folder / "plan.json"
    if planned.is_file() and read_json_index(planned, fmt=OWN_FORMAT, required=()) != plan:
        raise fail_on(planned, "was planned with other cases or settings than this call's; choose another --out "
                               "or delete the folder")
    if done.is_file():
        return read_json_index(done, fmt=OWN_FORMAT, required=("real_cases", "trained"))
    write_json(planned, plan)
    real = plan["real_cases"]
    prep = folder / "prep"
    if not (prep / "dataset.json").is_file() or [c.name for c in load_prepared(prep).split("train")] != real:
        write_training_set(prep, dataset=dataset, real=real, synthetic=[])
    sets = ["--set", *plan["overrides"], *NO_TIME_CAP]
    vae_minutes = _stage(["train-vae", "--data", str(prep), "--config", plan["config"], *sets], folder / "vae",
                         steps=plan["vae_steps"], progress=progress)
    flow_minutes = _stage(["train", "--data", str(prep), "--vae", str(folder / "vae"), "--config", plan["config"],
                           *sets], folder / "tumorgen", steps=plan["steps"], progress=progress)
    checkpoint = sha256_file(folder / "tumorgen" / "checkpoints" / "last.pt")
    record = {**plan, "trained": {"vae_steps": plan["vae_steps"], "steps": plan["steps"], "config": plan["config"],
                                  "overrides": plan["overrides"], "checkpoint_sha256": checkpoint},
              "minutes_this_call": {"vae": round(vae_minutes, 2), "tumorgen": round(flow_minutes, 2)}}
    write_json(done, record)  # last: its presence means both stages finished
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the study's PREP cache")
    parser.add_argument("--out", type=Path, required=True, help="RUNS: one n###_s# folder per (n, seed)")
    parser.add_argument("--n-real", default="5,10", help="numbers of real cases, as the study's --n-real")
    parser.add_argument("--seeds", default="0,1,2", help="the study's seeds")
    parser.add_argument("--config", default="phantom", help="training preset of both stages")
    parser.add_argument("--vae-steps", type=int, default=1500, help="VAE training steps per (n, seed)")
    parser.add_argument("--steps", type=int, default=1600, help="TumorGen training steps per (n, seed)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="config overrides for both stages")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.vae_steps < 1 or args.steps < 1:
            raise TumorGenError("--vae-steps and --steps must be >= 1")
        dataset = load_prepared(args.data)
        train = [c.name for c in dataset.split("train")]
        if not train:
            raise fail_on(dataset.root / "dataset.json", "has no training cases")
        notes: list[str] = []
        n_values = parse_n_values(args.n_real, len(train), notes)
        seeds = parse_seeds(args.seeds)
        for seed in seeds:
            order = real_order(train, seed)
            for n in n_values:
                real = order[:n]
                if all(dataset.case(name).healthy for name in real):
                    notes.append(f"n = {n}, seed {seed}: no tumor among the real cases, nothing to train on")
                    continue
                folder = own_folder(args.out, n, seed)
                plan = {"format": OWN_FORMAT, "real_cases": real, "data": str(Path(args.data).resolve()),
                        "config": args.config, "overrides": list(args.overrides), "vae_steps": args.vae_steps,
                        "steps": args.steps}
                record = train_pair(dataset=dataset, folder=folder, plan=plan, progress=args.progress)
                print(f"n = {n}, seed {seed}: {folder} (this call: VAE {record['minutes_this_call']['vae']} min, "
                      f"TumorGen {record['minutes_this_call']['tumorgen']} min)", file=sys.stderr)
    except TumorGenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
