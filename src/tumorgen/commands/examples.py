"""The example scans that ship with TumorGen, and a ready command that synthesizes into each.

Three real FDG-PET soft-tissue sarcomas (SUV, with their tumor masks) from the bundled model's test
split, CC BY 3.0 (licence and citation in the folder's README.md). The box printed for each is its
real tumor's box (tight + 2 voxels a face): the bundled model erases it and grows a new tumor there.

Example:
  tumorgen examples
  tumorgen synthesize --input "$(tumorgen examples --path STS_023)" --box 8 8 14 25 26 62 --out synth
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", default=None, metavar="CASE", help="print only this example's PET path")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tumorgen.data.examples import example_cases, examples_root, tumor_box
    from tumorgen.errors import TumorGenError
    from tumorgen.io.nifti import load_volume

    cases = example_cases()
    if args.path is not None:
        found = [c for c in cases if c.name == args.path]
        if not found:
            raise TumorGenError(f"no example named '{args.path}' (examples: {', '.join(c.name for c in cases) or 'none'})")
        print(found[0].image)
        return 0
    if not cases:
        print("no example scans are installed")
        return 0
    print(f"example scans in {examples_root()} (real FDG-PET, CC BY 3.0: see README.md there)")
    for case in cases:
        mask = load_volume(case.mask, kind="mask")
        box = " ".join(str(v) for v in tumor_box(np.asarray(mask.array) > 0))
        print(f"\n{case.name}: {case.image}")
        print(f"  tumorgen synthesize --input {case.image} --box {box} --out synth")
    return 0
