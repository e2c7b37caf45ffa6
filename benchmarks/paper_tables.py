"""The paper's three tables on any prepared dataset, end to end, in bounded wall time.

    python benchmarks/paper_tables.py --data PREP --out benchmarks/results/NAME
        [--minutes-per-model 3] [--device auto] [--config phantom] [--per-case 1] [--features inception]

Trains (each model bounded by --minutes-per-model through `max_minutes`; a run already in OUT/runs is
reused, not retrained) the VAE, TumorGen, its four ablations, DiffTumor, BLD and the segmenter; then
generates a set into the PREP test split with each method (TumorGen RFM-10 and RFM-50, the ablations
at RFM-10, DiffTumor DDPM-50 and DDIM-50, BLD DDIM-50, SynTumor), evaluates each against the real test
split with one shared feature cache, and writes:

    OUT/table1.md/.csv   per-plane FID and KID per method, middle and tumor-center slices, with the floor
    OUT/table2.md/.csv   ablations: FID(Avg) (middle slices, as the paper), KID, DSC, NSD
    OUT/table3.md/.csv   sampler, steps, FID(Avg), seconds per sample (this machine)
    OUT/summary.json     every evaluation's metrics.json, plus the machine and the budget
    OUT/README.md        the command, the machine, the budget and the headline rows

Everything is driven through the `tumorgen` CLI (one subprocess per job), so the tables measure exactly
what users run. Runs, sets and evaluations go to --work (default OUT/work, which .gitignore keeps out
of git); only the tables belong in the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from tumorgen.evaluation.tables import (
    FLOOR_NAME,
    TABLE1_COLUMNS,
    TABLE2_COLUMNS,
    TABLE3_COLUMNS,
    render_markdown,
    write_table,
)
from tumorgen.io.atomic import write_json, write_text

ABLATIONS = ("no_bapmg", "no_coarse", "no_fine", "no_vmr")
# (set name, method, run name, sampler, steps)
SETS = (
    ("tumorgen-rfm10", "tumorgen", "tumorgen", "euler", 10),
    ("tumorgen-rfm50", "tumorgen", "tumorgen", "euler", 50),
    ("difftumor-ddpm50", "difftumor", "difftumor", "ddpm", 50),
    ("difftumor-ddim50", "difftumor", "difftumor", "ddim", 50),
    ("bld-ddim50", "bld", "bld", "ddim", 50),
    ("syntumor", "syntumor", None, None, None),
    *((f"{a}-rfm10", "tumorgen", a, "euler", 10) for a in ABLATIONS),
)
BIG_STEPS = 1_000_000  # training stops on the wall-time limit long before this


def tumorgen_cli(*args: str, log: Path) -> None:
    """Run one `tumorgen` job, appending its output to the log; stop the benchmark if it fails."""
    command = [sys.executable, "-m", "tumorgen", *args]
    started = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ tumorgen {' '.join(args)}\n")
        fh.flush()
        result = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT)
    print(f"[{time.perf_counter() - started:7.1f} s] tumorgen {args[0]} {' '.join(args[1:3])}", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"tumorgen {args[0]} failed (exit {result.returncode}); see {log}")


def train_all(args, runs: Path, log: Path) -> None:
    limit = f"{args.minutes_per_model:g}"
    common = ["--data", str(args.data), "--config", args.config, "--device", args.device, "--no-progress"]
    if not (runs / "vae" / "checkpoints" / "last.pt").exists():
        tumorgen_cli("train-vae", *common, "--out", str(runs / "vae"), "--steps", str(BIG_STEPS),
                     "--set", f"vae_train.max_minutes={limit}", log=log)
    trainings = [("tumorgen", ["train"], []), *((a, ["train"], [f"ablate={a}"]) for a in ABLATIONS),
                 ("difftumor", ["train-baseline", "--method", "difftumor"], []),
                 ("bld", ["train-baseline", "--method", "bld"], [])]
    for name, command, overrides in trainings:
        if not (runs / name / "checkpoints" / "last.pt").exists():
            tumorgen_cli(*command, *common, "--vae", str(runs / "vae"), "--out", str(runs / name),
                         "--steps", str(BIG_STEPS), "--set", f"train.max_minutes={limit}", *overrides, log=log)
    if not (runs / "seg" / "checkpoints" / "last.pt").exists():
        tumorgen_cli("train-seg", *common, "--out", str(runs / "seg"), "--steps", str(BIG_STEPS),
                     "--set", f"train.max_minutes={limit}", log=log)


def generate_and_evaluate(args, work: Path, log: Path) -> dict:
    runs, sets, evals = work / "runs", work / "sets", work / "evals"
    results = {}
    for name, method, run, sampler, steps in SETS:
        if not (sets / name / "generated.json").exists():
            factor = json.loads((runs / "vae" / "data.json").read_text())["latent_factor"]  # syntumor shares its boxes
            extra = (["--model", str(runs / run), "--sampler", sampler, "--steps", str(steps)] if run
                     else ["--latent-factor", str(factor)])
            tumorgen_cli("generate-set", "--method", method, "--data", str(args.data), "--per-case",
                         str(args.per_case), "--seed", str(args.seed), "--device", args.device, "--out",
                         str(sets / name), "--overwrite", "--no-progress", *extra, log=log)
        if not (evals / name / "metrics.json").exists():
            tumorgen_cli("evaluate", "--real", str(args.data), "--generated", str(sets / name), "--segmenter",
                         str(runs / "seg"), "--features", args.features, "--feature-cache", str(work / "features"),
                         "--tumor-slices", str(args.tumor_slices), "--device", args.device, "--seed", str(args.seed),
                         "--out", str(evals / name), "--overwrite", log=log)
        results[name] = json.loads((evals / name / "metrics.json").read_text())
    return results


def build_tables(results: dict) -> tuple[list, list, list]:
    table1 = []
    for where, slices in (("middle", "middle"), ("tumor", "tumor-center")):
        for name, _, run, _, _ in SETS:
            if run in ABLATIONS:
                continue
            table1.append({**results[name][f"fid_{where}"], "method": results[name]["label"], "slices": slices})
        floor = results["tumorgen-rfm10"][f"floor_{where}"]
        if floor:
            table1.append({**floor, "method": FLOOR_NAME, "slices": slices})
    table2 = []
    for name, label in (("tumorgen-rfm10", "full"), *((f"{a}-rfm10", a) for a in ABLATIONS)):
        seg = results[name]["segmentation"] or {}
        table2.append({**results[name]["fid_middle"], **seg, "ablation": label})
    table3 = [{"method": results[name]["method"], "sampler": results[name]["sampler"], "steps": results[name]["steps"],
               "Avg": results[name]["fid_middle"]["Avg"], "seconds_per_sample": results[name]["seconds_per_sample"]}
              for name in ("tumorgen-rfm10", "tumorgen-rfm50", "difftumor-ddpm50", "difftumor-ddim50", "bld-ddim50")]
    return table1, table2, table3


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a PREP folder (tumorgen prepare)")
    parser.add_argument("--out", type=Path, required=True, help="where the tables go, e.g. benchmarks/results/phantom")
    parser.add_argument("--work", type=Path, default=None, help="runs, sets, evaluations (default OUT/work)")
    parser.add_argument("--minutes-per-model", type=float, default=3.0, help="wall-time limit of each training")
    parser.add_argument("--config", default="phantom", help="preset or config file for every training")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--per-case", type=int, default=1, help="generated samples per test case")
    parser.add_argument("--tumor-slices", type=int, default=1, help="tumor-center slices per plane")
    parser.add_argument("--features", choices=("inception", "pixels"), default="inception")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    started = time.perf_counter()
    train_all(args, work / "runs", log)
    results = generate_and_evaluate(args, work, log)
    table1, table2, table3 = build_tables(results)
    write_table(TABLE1_COLUMNS, table1, args.out / "table1")
    write_table(TABLE2_COLUMNS, table2, args.out / "table2")
    write_table(TABLE3_COLUMNS, table3, args.out / "table3")
    command = "python benchmarks/paper_tables.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = {"command": command, "machine": machine(), "minutes_per_model": args.minutes_per_model,
            "config": args.config, "wall_minutes": (time.perf_counter() - started) / 60.0,
            "training_steps": {run.name: _steps(run) for run in sorted((work / "runs").iterdir())},
            "results": results}
    write_json(args.out / "summary.json", info)
    write_text(args.out / "README.md", readme(info, table1, table2, table3))
    print(render_markdown(TABLE1_COLUMNS, table1))
    return 0


def _steps(run: Path) -> int | None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (run / "metrics.jsonl").exists() else []
    return rows[-1]["step"] if rows else None


def readme(info: dict, table1, table2, table3) -> str:
    m = info["machine"]
    steps = ", ".join(f"{k} {v}" for k, v in info["training_steps"].items())
    return f"""# Paper tables: {Path(info['results']['syntumor']['real']).name}

Made by (from the repository root):

    {info['command']}

Machine: {m['platform']}, {m['cpu_count']} CPU cores, torch {m['torch']}, GPU: {m['cuda'] or 'none'}.
Training budget: {info['minutes_per_model']:g} wall minutes per model (config `{info['config']}`), steps reached:
{steps}. Whole run: {info['wall_minutes']:.0f} minutes. Seconds per sample are this machine's (shared, so inflated).

## Table 1: FID / KID per plane (generated vs the real test split)
{render_markdown(TABLE1_COLUMNS, table1)}
## Table 2: ablations (middle-slice FID; DSC / NSD of the segmenter vs the generated masks)
{render_markdown(TABLE2_COLUMNS, table2)}
## Table 3: samplers and speed
{render_markdown(TABLE3_COLUMNS, table3)}
See `reading.md` beside this file (written by hand) for what these numbers do and do not show.
"""


if __name__ == "__main__":
    raise SystemExit(main())
