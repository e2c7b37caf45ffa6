"""The paper's experiments on real PET, regenerated from one PREP cache: Tables 1-3 and Fig. 4.

    python benchmarks/paper_tables.py --data prep/ibsi --out benchmarks/results/paper [--dry-run]
        [--config ibsi] [--steps N] [--vae-steps N] [--seg-steps 2000] [--seeds 0,1,2]
        [--parts table1,table2,table3,fig4] [--reuse vae=runs/ibsi/vae] [--work DIR] [--features inception]
        [--radiomics]

Trains, bounded by steps (every variant the same number of updates; default: the config's), the VAE,
TumorGen, its four ablations, DiffTumor, BLD, MedFusion, HA-GAN and the alignment segmenter into --work
(default OUT/work, which .gitignore ignores), resuming whatever is there; then judges them on the test
split with the paired protocol, times the samplers, places tumors in healthy tissue, and writes
OUT/table{1,2,3}.md/.csv, table1_paper.md, table1_montage.png, fig4_healthy.png/.md, summary.json and
README.md. Interrupted, it continues where it stopped when run again. --dry-run prints the plan (jobs,
steps, what is done) and runs nothing. The logic is `tumorgen.evaluation.paper` (plan: `paper_plan`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tumorgen.errors import TumorGenError
from tumorgen.evaluation.paper import dry_run, run_paper
from tumorgen.evaluation.paper_plan import PARTS, PaperOptions


def integers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def reuse_pairs(text: str) -> dict[str, Path]:
    pairs = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, sep, run = item.partition("=")
        if not sep or not run:
            raise argparse.ArgumentTypeError(f"--reuse takes NAME=RUN pairs, got {item!r}")
        pairs[name.strip()] = Path(run.strip())
    return pairs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the PREP cache (the IBSI recipe's prep/ibsi)")
    parser.add_argument("--out", type=Path, required=True, help="tables and README, e.g. benchmarks/results/paper")
    parser.add_argument("--work", type=Path, default=None, help="runs, protocol folders, logs (default OUT/work)")
    parser.add_argument("--config", default="ibsi", help="preset or config file every model trains with")
    parser.add_argument("--steps", type=int, default=None, help="updates per model (default: the config's train.steps)")
    parser.add_argument("--vae-steps", type=int, default=None,
                        help="VAE updates (default: the config's vae_train.steps)")
    parser.add_argument("--seg-steps", type=int, default=2000, help="updates of the alignment segmenter")
    parser.add_argument("--seg-batch", type=int, default=2, help="the segmenter's batch")
    parser.add_argument("--seeds", type=integers, default=(0, 1, 2),
                        help="protocol seeds: the first for all, the others for Table 2's rows within the noise")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--reuse", type=reuse_pairs, default={},
                        help="NAME=RUN,...: finished runs to read instead of training (e.g. vae=runs/ibsi/vae)")
    parser.add_argument("--features", choices=("inception", "pixels"), default="inception")
    parser.add_argument("--inception", default=None, help="a local TorchScript FID Inception file")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--sample-steps", type=int, default=10, help="TumorGen's Euler steps in Tables 1-2, Fig. 4")
    parser.add_argument("--speed-batch", type=int, default=8, help="Table 3's batch beside batch 1")
    parser.add_argument("--speed-repeats", type=int, default=3, help="timed runs per configuration (median)")
    parser.add_argument("--healthy-per-case", type=int, default=2, help="Fig. 4's tumors per test scan")
    parser.add_argument("--clearance-mm", type=float, default=20.0, help="Fig. 4's distance from the real tumor")
    parser.add_argument("--radiomics", action="store_true",
                        help="also the IBSI radiomic panel of every method in Table 1 (needs tumorgen[radiomics])")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and run nothing")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    options = PaperOptions(
        data=args.data, out=args.out, work=args.work, config=args.config, steps=args.steps, vae_steps=args.vae_steps,
        seg_steps=args.seg_steps, seg_batch=args.seg_batch, seeds=args.seeds,
        parts=tuple(p.strip() for p in args.parts.split(",") if p.strip()), features=args.features,
        inception=args.inception, device=args.device, reuse=args.reuse, sample_steps=args.sample_steps,
        speed_batch=args.speed_batch, speed_repeats=args.speed_repeats, healthy_per_case=args.healthy_per_case,
        clearance_mm=args.clearance_mm, radiomics=args.radiomics)
    try:
        if args.dry_run:
            print("\n".join(dry_run(options)))
            return 0
        command = "python benchmarks/paper_tables.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        run_paper(options, command=command)
    except TumorGenError as err:
        print(f"paper_tables.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("paper_tables.py: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    print(f"wrote {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
