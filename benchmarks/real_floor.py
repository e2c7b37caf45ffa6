"""The real-vs-real FID/KID floor on the real IBSI PET cases (METHOD.md section 6).

FID at small n is biased upward, so a generated set can only be judged against the same metric between
two disjoint sets of *real* cases of the same sizes. This script measures that floor on
`../shared/data/ibsi-sts-pet` (41 cases here; the 10 held-aside cases are not available, so "41 vs 10"
becomes 31 vs 10 disjoint subsets of the 41) and two halves (20 vs 21), with 1 and 9 tumor-center
slices per plane, averaged over random splits.

Choices, stated: intensities are SUV clipped to [0, suv_max] / suv_max with suv_max = 20 (a quarter
of these tumors peak above 16); each slice is the whole slice of the tumor-centered crop (the crops
are 5 cm around the tumor), resized to 299 x 299 without keeping the aspect ratio.

    python benchmarks/real_floor.py [--data ../shared/data/ibsi-sts-pet] [--suv-max 20] [--repeats 5]
        [--out benchmarks/results/real_floor]   # writes real_floor.md / .csv
        [--cache DIR]                           # keeps the Inception features for reruns
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tumorgen.evaluation.fid import plane_features, real_floor_from_features
from tumorgen.evaluation.inception import InceptionFeatures
from tumorgen.evaluation.tables import FID_WITH_SPREAD, Column, render_markdown, write_table
from tumorgen.io.atomic import atomic_path
from tumorgen.io.nifti import check_same_grid, load_volume

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ibsi-sts-pet"
# What METHOD.md quotes (FID(Avg)), for the comparison column.
QUOTED = {("41 vs 10", 1): 140.0, ("41 vs 10", 9): 84.0, ("two halves", 9): 73.0}

COLUMNS = (
    Column("split", "split", "{}"),
    Column("slices/plane", "n_per_plane", "{}"),
    Column("n_a", "n_real", "{}"),
    Column("n_b", "n_generated", "{}"),
    *FID_WITH_SPREAD,
    Column("METHOD.md FID(Avg)", "quoted", "{:.0f}"),
)


def load_cases(root: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, masks = [], []
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        image = load_volume(case / "PET_image.nii.gz")
        mask = load_volume(case / "PET_mask.nii.gz", kind="mask")
        check_same_grid(image, mask)
        images.append(image.array)
        masks.append(mask.array)
    return images, masks


def cached_features(args, images, masks, net, n_per_plane: int) -> dict[str, np.ndarray]:
    """Tumor-center features {plane: (cases, n_per_plane, 2048)}, from --cache when it holds them."""
    path = None
    if args.cache is not None:
        path = args.cache / f"ibsi_tumor_n{n_per_plane}_suv{args.suv_max:g}_{len(images)}cases.npz"
        if path.is_file():
            with np.load(path) as stored:
                return {plane: stored[plane] for plane in stored.files}
    per_volume = plane_features(images, features=net, where="tumor", masks=masks,
                                n_per_plane=n_per_plane, suv_max=args.suv_max)
    if path is not None:
        with atomic_path(path) as tmp:
            np.savez(tmp, **per_volume)
    return per_volume


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--suv-max", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=5, help="random splits averaged per row")
    parser.add_argument("--inception", type=Path, default=None, help="local TorchScript FID Inception file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write <out>.md and <out>.csv")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder to keep the Inception features in (reused when the settings match)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"{args.data}: data folder not found", file=sys.stderr)
        return 2

    images, masks = load_cases(args.data)
    n = len(images)
    net = InceptionFeatures(path=args.inception, device=args.device)
    splits = {"41 vs 10": (n - 10, 10), "two halves": (n // 2, n - n // 2)}
    rows = []
    for n_per_plane in (1, 9):
        start = time.perf_counter()
        per_volume = cached_features(args, images, masks, net, n_per_plane)
        print(f"features: {n} cases x 3 planes x {n_per_plane} slices in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
        for name, (n_a, n_b) in splits.items():
            floor = real_floor_from_features(per_volume, n_a=n_a, n_b=n_b, seed=args.seed, repeats=args.repeats)
            rows.append({**floor, "split": name, "n_per_plane": n_per_plane,
                         "quoted": QUOTED.get((name, n_per_plane))})
    print(f"{n} cases from {args.data}; tumor-center slices; SUV clipped to [0, {args.suv_max:g}]; "
          f"mean ± std over {args.repeats} random splits")
    print(render_markdown(COLUMNS, rows))
    if args.out is not None:
        for path in write_table(COLUMNS, rows, args.out):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
