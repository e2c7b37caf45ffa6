"""Write procedural PET phantoms (PET in SUV, CT in HU, tumor masks) in a real dataset's folder layout.

  autopet  PETCT_<id>/<study>/SUV.nii.gz, CTres.nii.gz, SEG.nii.gz     torso, tumors in the lungs
  hecktor  <CENTER><nnn>_pt/_ct/_gtvt.nii.gz and bbox.csv               head and neck, oropharynx tumors
  nnunet   imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json   torso

Example: tumorgen phantom --layout autopet --out data/phantom-autopet --cases 8 --healthy 2
"""

from __future__ import annotations

import argparse

from tumorgen.errors import TumorGenError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", required=True, choices=("autopet", "hecktor", "nnunet"),
                        help="the dataset layout and anatomy to write")
    parser.add_argument("--out", required=True, help="output folder (must not exist, unless --overwrite)")
    parser.add_argument("--cases", type=int, default=8, help="number of tumor-bearing cases (default 8)")
    parser.add_argument("--healthy", type=int, default=0, help="number of healthy cases (default 0)")
    parser.add_argument("--size", type=int, default=64,
                        help="grid edge in voxels (default 64); the anatomy keeps its size in mm")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed: same seed, same bytes (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tumorgen.data.phantom import MIN_SIZE
    from tumorgen.data.phantom_layouts import write_phantom_dataset

    if args.cases < 0 or args.healthy < 0 or args.cases + args.healthy == 0:
        raise TumorGenError(f"--cases {args.cases} --healthy {args.healthy}: ask for at least one case, none negative")
    if args.size < MIN_SIZE:
        raise TumorGenError(f"--size {args.size}: the grid edge must be at least {MIN_SIZE} voxels")
    rows = []
    with tqdm(total=args.cases + args.healthy, desc=f"phantom {args.layout}", unit="case") as bar:

        def on_case(case) -> None:
            rows.append(case)
            bar.update(1)

        write_phantom_dataset(layout=args.layout, out=args.out, cases=args.cases, healthy=args.healthy,
                              size=args.size, seed=args.seed, overwrite=args.overwrite, on_case=on_case)
    width = max(len(r.name) for r in rows)
    print(f"{'case':<{width}}  {'tumor mL':>8}  {'SUVmax':>6}  files")
    for r in rows:
        suv = "-" if r.healthy else f"{r.suv_max:.2f}"
        print(f"{r.name:<{width}}  {r.tumor_volume_ml:8.2f}  {suv:>6}  {', '.join(str(f) for f in r.files)}")
    print(f"wrote {len(rows)} cases ({args.cases} with tumor, {args.healthy} healthy) to {args.out}")
    return 0
