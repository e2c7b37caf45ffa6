"""Train TumorGen on a downstream cell's own real cases only: the generators of arm `tumorgen-own`.

    python benchmarks/downstream_generators.py --data PREP --out RUNS --n-real 5,10 --seeds 0,1,2 \
        [--config phantom] [--vae-steps 1500] [--steps 1600] [--set KEY=VALUE ...] [--no-progress]

then `python benchmarks/downstream.py ... --arms real,tumorgen-own,... --tumorgen-own RUNS`.

Why: the study's `--tumorgen` run learned from the whole train split, so at n = 5 its synthetic cases
carry what it saw in the other 25 or so; a user who has 5 annotated cases has no such model. For each
(n, seed) this takes exactly the real cases the study's cell takes (`downstream.real_order`: the seed's
permutation of the train split, its first n), writes them as a PREP cache of their own (hard links) and
trains both stages on it, the VAE too (its loss weights the tumor, so it reads the labels):

    RUNS/n005_s0/prep/        the n cases (train split only)
    RUNS/n005_s0/vae/         `tumorgen train-vae --steps VAE_STEPS`
    RUNS/n005_s0/tumorgen/    `tumorgen train --steps STEPS`
    RUNS/n005_s0/generators.json   written last: the real cases, the commands, steps and minutes

Budgets are steps, not minutes, so every (n, seed) gets the same training whatever else the machine
is doing. A pair whose generators.json exists is skipped; an interrupted one resumes from its
checkpoints. n equal to the whole train split is allowed but is the `--tumorgen` arm again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from downstream import OWN_DONE, _n_values, _parse_list, own_folder, real_order, write_training_set  # noqa: E402

from tumorgen.data.prepared import load_prepared  # noqa: E402
from tumorgen.errors import TumorGenError, fail_on  # noqa: E402
from tumorgen.io.atomic import write_json  # noqa: E402


def _stage(command: list[str], run: Path, *, steps: int, progress: bool) -> float:
    """Run one training stage to `steps` (resuming a run cut short); its minutes."""
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
    return (time.perf_counter() - started) / 60


def train_pair(*, dataset, folder: Path, real: list[str], config: str, overrides: list[str], vae_steps: int,
               steps: int, progress: bool) -> dict:
    """The VAE and TumorGen of one (n, seed), trained on `real` only."""
    done = folder / OWN_DONE
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("real_cases") != real:
            raise fail_on(done, "was trained on other real cases (another dataset or split?); choose another --out")
        return record
    prep = folder / "prep"
    if not (prep / "dataset.json").is_file():
        write_training_set(prep, dataset=dataset, real=real, synthetic=[])
    sets = ["--set", *overrides] if overrides else []
    vae_minutes = _stage(["train-vae", "--data", str(prep), "--config", config, *sets], folder / "vae",
                         steps=vae_steps, progress=progress)
    flow_minutes = _stage(["train", "--data", str(prep), "--vae", str(folder / "vae"), "--config", config, *sets],
                          folder / "tumorgen", steps=steps, progress=progress)
    record = {"real_cases": real, "config": config, "overrides": overrides,
              "trained": {"vae_steps": vae_steps, "steps": steps, "config": config, "overrides": overrides},
              "minutes": {"vae": round(vae_minutes, 2), "tumorgen": round(flow_minutes, 2)}}
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
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
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
        n_values = _n_values(args.n_real, len(train), notes)
        seeds = [int(s) for s in _parse_list(args.seeds, "seeds")]
        for seed in seeds:
            order = real_order(train, seed)
            for n in n_values:
                real = order[:n]
                if all(dataset.case(name).healthy for name in real):
                    notes.append(f"n = {n}, seed {seed}: no tumor among the real cases, nothing to train on")
                    continue
                folder = own_folder(args.out, n, seed)
                record = train_pair(dataset=dataset, folder=folder, real=real, config=args.config,
                                    overrides=args.overrides, vae_steps=args.vae_steps, steps=args.steps,
                                    progress=args.progress)
                print(f"n = {n}, seed {seed}: {folder} (VAE {record['minutes']['vae']} min, "
                      f"TumorGen {record['minutes']['tumorgen']} min)", file=sys.stderr)
    except TumorGenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
