"""Read a dataset folder and write the preprocessed cache (PREP) that training reads.

Layouts: autopet (PETCT_*/<study>/SUV.nii.gz, CTres.nii.gz, SEG.nii.gz; cropped to the lungs found on
CT or given by --lung-masks), hecktor (<case>_pt/_ct/_gtvt.nii.gz and bbox.csv; cropped to the
head-and-neck box), nnunet (imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz) and pairs (any
image/mask files matched by --image-glob and --mask-glob). Every case is oriented to RAS, resampled
to an isotropic spacing (fixed, or per case with --spacing auto so the tumor fits), SUV-scaled to
[0, 1] and cut to --size voxels; each cached file keeps its true affine, so results map back.

Example:
  tumorgen prepare --layout pairs --root ../shared/data/ibsi-sts-pet --out prep/ibsi \\
      --image-glob "*/PET_image.nii.gz" --mask-glob "*/PET_mask.nii.gz"
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", required=True, choices=("autopet", "hecktor", "nnunet", "pairs"),
                        help="the dataset's folder layout")
    parser.add_argument("--root", required=True, help="the dataset folder")
    parser.add_argument("--out", required=True, help="the PREP folder to write")
    parser.add_argument("--size", type=int, nargs="+", default=[64], metavar="S",
                        help="model grid in voxels: one int (a cube) or three (default 64)")
    parser.add_argument("--spacing", default="auto",
                        help="isotropic voxel size in mm, or 'auto' to choose it per case so the region "
                             "plus --margin fits the grid (default auto)")
    parser.add_argument("--min-spacing", type=float, default=4.0,
                        help="with --spacing auto, the finest spacing in mm (default 4, about PET resolution)")
    parser.add_argument("--margin", type=float, default=20.0,
                        help="with --spacing auto, mm of context kept around the region (default 20)")
    parser.add_argument("--suv-max", type=float, default=20.0, help="SUV mapped to 1; higher is clipped (default 20)")
    parser.add_argument("--test-fraction", type=float, default=None,
                        help="test share (default: the paper's, hecktor 24/224, autopet 15/168, else 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default 0)")
    parser.add_argument("--image-glob", default=None, help="pairs layout: images' glob pattern, relative to --root")
    parser.add_argument("--mask-glob", default=None, help="pairs layout: masks' glob pattern, relative to --root")
    parser.add_argument("--lung-masks", default=None, metavar="DIR",
                        help="autopet: folder of <case>.nii.gz lung masks used instead of the CT lung finder")
    parser.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                        help="a bad case stops everything (fail, default) or is listed and skipped (skip)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PREP cache")


def run(args: argparse.Namespace) -> int:
    from tumorgen.data.prepare import prepare_dataset
    from tumorgen.errors import TumorGenError

    if len(args.size) not in (1, 3):
        raise TumorGenError(f"--size takes one or three integers, got {len(args.size)}")
    info = prepare_dataset(
        layout=args.layout, root=args.root, out=args.out, size=args.size, spacing=args.spacing,
        min_spacing_mm=args.min_spacing, margin_mm=args.margin, suv_max=args.suv_max,
        test_fraction=args.test_fraction, seed=args.seed, image_glob=args.image_glob, mask_glob=args.mask_glob,
        lung_masks=args.lung_masks, on_error=args.on_error, overwrite=args.overwrite,
    )
    print(summary(info, args.out))
    return 0


def summary(info: dict, out) -> str:
    """What a user wants to see after prepare: counts, skips with reasons, spacings, where it went."""
    cases = info["cases"]
    healthy = sum(1 for c in cases if c["healthy"])
    spacings = [c["spacing"][0] for c in cases]
    lines = [
        f"prepared {len(cases)} cases ({len(cases) - healthy} with tumor, {healthy} healthy) "
        f"into {out}: train {len(info['split']['train'])}, test {len(info['split']['test'])}",
        f"grid {'x'.join(str(s) for s in info['size'])}, spacing {min(spacings):.2f}-{max(spacings):.2f} mm, "
        f"SUV 0-{info['suv_max']:g} -> [0, 1]",
    ]
    cut = [c["name"] for c in cases if c.get("tumor_cut")]
    if cut:
        lines.append(f"warning: the tumor does not fit the grid in {len(cut)} cases ({', '.join(cut[:5])}); "
                     "use --spacing auto or a larger --size")
    if info["skipped"]:
        lines.append(f"skipped {len(info['skipped'])}:")
        lines += [f"  {s['reason']}" for s in info["skipped"]]
    return "\n".join(lines)
