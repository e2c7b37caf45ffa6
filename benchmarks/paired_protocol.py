"""The paired protocol on a PREP cache, with the run folders of this repository's studies.

    python benchmarks/paired_protocol.py --data PREP --out DIR [--split test|val] [--tumorgen RUN]
        [--steps 1,2,4,10,50] [--methods tumorgen,syntumor,blob,empty] [--seed 0]
        [--difftumor RUN] [--bld RUN] [--medfusion RUN] [--hagan RUN] [--baseline-steps 50]
        [--baseline-sampler ddim]
        [--features inception|pixels|none] [--inception PATH] [--feature-cache DIR] [--device cpu]
        [--save-volumes] [--radiomics] [--overwrite]

The protocol itself (erase each real tumor's box, let every method regenerate it, compare with the real
scan; FID/KID beside the real-vs-real floor, uptake, volume, shape, seam and time per case) is the
package's: `tumorgen.evaluation.paired`, also as `tumorgen evaluate-paired`, whose docstrings say what
every number is. This script keeps the benchmark's own arguments: a run folder per model method
(`--tumorgen`, `--difftumor`, `--bld`, `--medfusion`, `--hagan`), and by default every method whose run
folder is given plus syntumor, blob and empty. It prints the table; one progress line per case on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tumorgen.commands.evaluate_paired import add_protocol_options, protocol_kwargs
from tumorgen.errors import TumorGenError
from tumorgen.evaluation.paired import run_paired
from tumorgen.evaluation.paired_report import summary_lines

FIXED_METHODS = ("syntumor", "blob", "empty")  # need no run folder
MODEL_METHODS = ("tumorgen", "difftumor", "bld", "medfusion", "hagan")


def methods_from_args(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """(kind, run folder) pairs in table order, from --methods and the run folders."""
    runs = {m: getattr(args, m) for m in MODEL_METHODS}
    if args.methods is None:
        names = [m for m in MODEL_METHODS if runs[m] is not None] + list(FIXED_METHODS)
    else:
        names = [t.strip() for t in args.methods.split(",") if t.strip()]
        if not names:
            raise TumorGenError("--methods is empty")
        unknown = [m for m in names if m not in MODEL_METHODS + FIXED_METHODS]
        if unknown:
            raise TumorGenError(f"--methods: unknown {', '.join(unknown)}; choose from "
                                f"{', '.join(MODEL_METHODS + FIXED_METHODS)}")
        missing = [m for m in names if m in MODEL_METHODS and runs[m] is None]
        if missing:
            raise TumorGenError(f"--methods {', '.join(missing)} needs its run folder (--{missing[0]} RUN)")
    return [(m, runs.get(m)) for m in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a PREP cache (`tumorgen prepare`)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--tumorgen", type=Path, default=None, help="a `tumorgen train` run folder")
    parser.add_argument("--difftumor", type=Path, default=None, help="a DiffTumor run folder")
    parser.add_argument("--bld", type=Path, default=None, help="a BLD run folder")
    parser.add_argument("--medfusion", type=Path, default=None, help="a MedFusion run folder")
    parser.add_argument("--hagan", type=Path, default=None, help="a HA-GAN run folder")
    parser.add_argument("--methods", default=None,
                        help="comma-separated: tumorgen,difftumor,bld,medfusion,hagan,syntumor,blob,empty "
                             "(default: all available)")
    add_protocol_options(parser)
    parser.set_defaults(device="cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        metrics = run_paired(data=args.data, out=args.out, methods=methods_from_args(args), **protocol_kwargs(args))
    except TumorGenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in summary_lines(metrics):
        print(line)
    print(f"wrote {args.out}/table.md, table.csv, metrics.json, montage.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
