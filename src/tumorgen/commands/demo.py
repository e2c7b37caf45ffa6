"""What to run first: the bundled model grows tumors in real PET and in phantoms, in about a minute.

By default no training happens: the model that ships in the package synthesizes 2 tumors into each of
the 3 example scans (real FDG-PET sarcomas it never saw in training: each real tumor is erased and a
new one grown in its box) and into 3 healthy PET/CT phantoms (boxes in the lungs found on CT), checks
every tumor (mask not empty, one main component, 5-95% of its box, hotter than its surroundings), and
writes montages, report.md and the NIfTI outputs into --out.

--train runs the whole pipeline instead: phantoms -> prepare -> train the VAE and TumorGen at the
`phantom` preset within --minutes -> synthesize -> montage and report. It reuses what is complete
and continues training with a larger --minutes.

Examples:
  tumorgen demo                              # the bundled model, ~1 minute on 2 CPU cores, into demo_out/
  tumorgen demo --model runs/tumorgen        # the same with your own model
  tumorgen demo --train --out demo_train     # train on phantoms: about 11 minutes on 2 CPU cores
  tumorgen demo --train --minutes 30         # continue that demo with more training time
  tumorgen demo --train --fast --out /tmp/d  # 1-2 minutes, debug-size models: checks that everything runs
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="the demo folder (default demo_out)")
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help="without --train: the model to show (a bundled name, an exported model or a run "
                             "folder); default: the bundled model")
    parser.add_argument("--train", action="store_true",
                        help="train on phantoms first (the whole pipeline, ~11 minutes) instead of using a ready model")
    parser.add_argument("--minutes", type=float, default=None,
                        help="with --train: the whole budget in minutes; training gets all but ~1 (default 11)")
    parser.add_argument("--fast", action="store_true",
                        help="the training demo's 1-2 minute variant at the debug preset (implies --train; CI checks)")
    parser.add_argument("--seed", type=int, default=0, help="seeds phantoms, split, training, synthesis (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from tumorgen.errors import TumorGenError

    if args.train or args.fast:  # --fast is a variant of the training demo
        args.minutes = 11.0 if args.minutes is None else args.minutes
        from tumorgen.demo.plan import OVERHEAD_MINUTES
        from tumorgen.demo.run import run_demo

        if args.model is not None:
            raise TumorGenError("--model shows a ready model; --train trains its own: give one or the other")
        if not args.fast and args.minutes < OVERHEAD_MINUTES + 1:
            raise TumorGenError(f"--minutes {args.minutes:g} leaves no time to train; give at least "
                                f"{OVERHEAD_MINUTES + 1:g}")
        run_demo(out=args.out, minutes=args.minutes, fast=args.fast, seed=args.seed, progress=not args.no_progress)
        return 0
    if args.minutes is not None:
        raise TumorGenError("--minutes is the training demo's budget: give it with --train")
    from tumorgen.demo.bundled import run_bundled_demo

    run_bundled_demo(out=args.out, model=args.model, seed=args.seed, progress=not args.no_progress)
    return 0
