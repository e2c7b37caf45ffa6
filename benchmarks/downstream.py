"""The downstream study (issue 10): does synthetic data make a PET tumor segmenter better?

    python benchmarks/downstream.py --data PREP --out benchmarks/results/downstream \
        [--arms real,tumorgen,tumorgen-own,syntumor,difftumor] [--n-real 5,10,20,all] [--seeds 0,1,2] \
        [--seg-steps 1000] [--synthetic 2x] [--modes regenerate,place] \
        [--tumorgen RUN] [--tumorgen-own RUNS] [--tumorgen-steps 10] [--difftumor RUN] [--bld RUN] \
        [--baseline-steps 50] [--baseline-sampler ddim] [--seg-channels 16,32,64,128] [--seg-roi 64] \
        [--seg-batch 2] [--seg-lr 1e-3] [--nsd-tolerance-mm 2] [--device cpu] [--keep-models]

For every cell (arm, number of real training cases n, seed) a segmenter is trained for the same number
of steps on the n real cases, alone (`real`) or with as many synthetic cases from one generator, and
judged on the real test split (DSC, NSD, false positives on healthy cases). The study, its design and
why, is the package's: `tumorgen.evaluation.downstream` (plan, pools, cells, report); this script is its
command line. `benchmarks/downstream_generators.py` trains the generators of arm `tumorgen-own`.

Writes OUT/table.md, table.csv, results.json (settings, machine, every cell with its per-test-case
scores), dsc_vs_n.png (DSC and NSD against n, one line per arm, ± sd over seeds) and README.md (the
exact command, the budgets, the machine, the table). Resumable: finished cells are read, not run again.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tumorgen.errors import TumorGenError
from tumorgen.evaluation.downstream import DownstreamOptions, run_study
from tumorgen.evaluation.downstream_plan import ARMS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a PREP cache (`tumorgen prepare`) with its split")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed when it exists)")
    parser.add_argument("--arms", default="real,tumorgen,syntumor,difftumor",
                        help=f"comma-separated, from {','.join(ARMS)}")
    parser.add_argument("--n-real", default="5,10,20,all", help="numbers of real training cases ('all' = the split)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds: real-case draw, synthetic samples, segmenter")
    parser.add_argument("--synthetic", default="2x",
                        help="synthetic cases per cell, the same for every arm: a count, or a multiple of n ('2x')")
    parser.add_argument("--modes", default="regenerate,place",
                        help="how sample k goes in, cycled over k: regenerate (erase the real box) and/or place")
    parser.add_argument("--seg-steps", type=int, default=1000, help="segmenter training steps per cell")
    parser.add_argument("--seg-batch", type=int, default=2, help="segmenter batch size")
    parser.add_argument("--seg-lr", type=float, default=1e-3, help="segmenter learning rate (AdamW)")
    parser.add_argument("--seg-channels", default="16,32,64,128", help="UNet features per level")
    parser.add_argument("--seg-roi", type=int, default=64, help="training patch / sliding window side (voxels)")
    parser.add_argument("--seg-batch-dice", action="store_true",
                        help="Dice over the whole batch (nnU-Net's batch dice), for tumors much smaller than a patch")
    parser.add_argument("--seg-foreground", type=float, default=1 / 3,
                        help="share of training patches centered on a tumor voxel (when --seg-roi < the volume)")
    parser.add_argument("--tumorgen", type=Path, default=None, help="a `tumorgen train` run folder")
    parser.add_argument("--tumorgen-own", type=Path, default=None,
                        help="the folder `benchmarks/downstream_generators.py` trained TumorGen per (n, seed) into, "
                             "on the cell's own real cases only (arm tumorgen-own)")
    parser.add_argument("--tumorgen-steps", type=int, default=10, help="Euler steps of TumorGen's sampler")
    parser.add_argument("--difftumor", type=Path, default=None, help="a `tumorgen train-baseline --method difftumor` run")
    parser.add_argument("--bld", type=Path, default=None, help="a `tumorgen train-baseline --method bld` run")
    parser.add_argument("--baseline-steps", type=int, default=50, help="sampling steps of DiffTumor / BLD")
    parser.add_argument("--baseline-sampler", choices=("ddim", "ddpm"), default="ddim")
    parser.add_argument("--nsd-tolerance-mm", type=float, default=2.0, help="NSD tolerance (mm)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: segmenters and generators")
    parser.add_argument("--keep-models", action="store_true", help="keep each cell's segmenter checkpoints")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser



def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        command = "python benchmarks/downstream.py " + shlex.join(argv)
        summary = run_study(DownstreamOptions(**vars(args)), command=command)
    except TumorGenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary["table"], end="")
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.out}/table.md, table.csv, results.json, dsc_vs_n.png, README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
