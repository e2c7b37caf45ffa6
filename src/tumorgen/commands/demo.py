"""Run the whole pipeline on phantoms in bounded time: what to run first.

Writes procedural PET/CT phantoms in the AutoPET layout, prepares them, trains the VAE and TumorGen at
the `phantom` preset for a bounded wall time each, synthesizes tumors into the healthy phantoms
(boxes in the lungs found on CT), and writes into --out: the NIfTI outputs, montage.png (real tumors
beside synthetic ones) and report.md (the commands that ran, how long each took, first quality
numbers). Running it again reuses what is complete and continues training with the time left.

Examples:
  tumorgen demo                       # about 11 minutes plus set-up on 2 CPU cores, into demo_out/
  tumorgen demo --minutes 30          # continue the same demo with more training time
  tumorgen demo --fast --out /tmp/d   # 1-2 minutes, debug-size models: checks that everything runs
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="the demo folder (default demo_out)")
    parser.add_argument("--minutes", type=float, default=11.0,
                        help="the whole budget in minutes; training gets all but ~1 (default 11)")
    parser.add_argument("--fast", action="store_true", help="a 1-2 minute variant at the debug preset (CI checks)")
    parser.add_argument("--seed", type=int, default=0, help="seeds phantoms, split, training, synthesis (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from tumorgen.demo.plan import OVERHEAD_MINUTES
    from tumorgen.demo.run import run_demo
    from tumorgen.errors import TumorGenError

    if not args.fast and args.minutes < OVERHEAD_MINUTES + 1:
        raise TumorGenError(f"--minutes {args.minutes:g} leaves no time to train; give at least {OVERHEAD_MINUTES + 1:g}")
    run_demo(out=args.out, minutes=args.minutes, fast=args.fast, seed=args.seed, progress=not args.no_progress)
    return 0
