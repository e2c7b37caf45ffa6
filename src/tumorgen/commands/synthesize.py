"""Synthesize tumors, with their masks, into one PET scan (in SUV) with a trained TumorGen model.

The model is the bundled one unless --model names another bundled model (see `tumorgen models`), an
exported model folder or a `tumorgen train` run folder.

Where the tumor goes, one of:
  --box X0 Y0 Z0 X1 Y1 Z1   voxel indices, half-open (X0 <= x < X1) like numpy slices, on the axes of
                            nibabel's array: (X, Y, Z) = the NIfTI's (i, j, k). This is the REVERSE of
                            the (Z, Y, X) numpy order of SimpleITK's GetArrayFromImage and of nnU-Net.
  --center-mm X Y Z --size-mm A B C
                            world mm, which avoids the axis-order question: the center in the NIfTI's
                            RAS+ scanner space (what nibabel's `affine @ [i, j, k, 1]` gives; 3D Slicer
                            shows these; SimpleITK/DICOM points are LPS: negate X and Y), the size along
                            the scan's voxel axes (i, j, k). The smallest voxel box holding it is used,
                            cut to the scan; a center outside the scan is refused.
  --organ-mask MASK         a sampled box centered in the mask.
  (none)                    a sampled box: centered in the lungs of --ct (or of the CTres.nii.gz beside an
                            AutoPET SUV.nii.gz), else in the body; its size from the training tumors.

Per sample k, in the input's own grid and affine: <case>_<k>_pet.nii.gz (SUV, unchanged outside the
box), <case>_<k>_mask.nii.gz (binary), <case>_<k>.png (three planes through the tumor, mask contour),
and manifest.json (model, version, weights SHA-256, boxes, seeds, steps, seconds). <case> is --name,
else the input's file name, else, when that only names the modality or "the image" (made of the words
PET, PT, SUV, CT, CTres, image, img: STS_001/PET_image.nii.gz), its folder: "STS_001"; for AutoPET,
PETCT_x/<study>/SUV.nii.gz -> "PETCT_x_<study>".

Examples:
  tumorgen synthesize --input scan.nii.gz --out synth --box 40 52 30 56 68 46
  tumorgen synthesize --input scan.nii.gz --out synth --center-mm -12.5 30 -840 --size-mm 20 20 16
  tumorgen synthesize --model runs/tumorgen --input PETCT_x/study/SUV.nii.gz --out synth --num 4 --seed 1
"""

from __future__ import annotations

import argparse


MODEL_HELP = ("a run folder from `tumorgen train`, an exported model folder, or a bundled model's name "
              "(see `tumorgen models`); default: the bundled model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--input", required=True, metavar="SCAN", help="the PET scan in SUV (NIfTI)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the output folder (other cases in it are kept)")
    parser.add_argument("--name", default=None, metavar="CASE",
                        help="the case name that starts every output file name (letters, digits, '.', '_', '-'); "
                             "default: from the input's file or folder name (see above)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--box", nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                       help="the tumor's box in scan voxel indices, half-open, in nibabel's (X, Y, Z) array order "
                            "(the reverse of SimpleITK's and nnU-Net's (Z, Y, X)); default: sampled")
    where.add_argument("--center-mm", nargs=3, default=None, metavar=("X", "Y", "Z"),
                       help="the tumor box's center in world mm, RAS+ scanner space (nibabel's affine @ [i, j, k, 1]); "
                            "needs --size-mm")
    where.add_argument("--organ-mask", default=None, metavar="MASK",
                       help="a binary mask on the scan's grid; sampled boxes are centered inside it")
    parser.add_argument("--size-mm", nargs=3, default=None, metavar=("A", "B", "C"),
                        help="with --center-mm: the box's extent in mm along the scan's voxel axes (i, j, k)")
    parser.add_argument("--ct", default=None, help="a CT in HU on the scan's grid; sampled boxes go into its lungs")
    parser.add_argument("--num", type=int, default=1, help="samples to draw (default 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="Euler steps of the flow sampler (default: the model's flow.sample_steps)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same samples (default 0)")
    parser.add_argument("--batch", type=int, default=1, help="samples per model call; results do not depend on it")
    parser.add_argument("--feather", type=int, default=3, help="seam width in voxels, inside the box (default 3)")
    parser.add_argument("--no-match-noise", action="store_true",
                        help="keep the model's smooth output instead of giving it the scan's noise grain")
    parser.add_argument("--suv-mean", type=float, default=None, metavar="SUV",
                        help="how hot the tumors are (mean SUV inside the mask), for a model trained with "
                             "flow.uptake_condition; default: each sample takes one training tumor's")
    parser.add_argument("--guidance", type=float, default=None, metavar="W",
                        help="classifier-free guidance toward --suv-mean: > 1 follows it more closely, at two "
                             "U-Net calls a step; for models trained with flow.uptake_dropout (default: the "
                             "model's flow.guidance; a drawn uptake always samples at 1)")
    parser.add_argument("--no-match-uptake", action="store_true",
                        help="keep the network's own uptake: by default a tumor asked for with --suv-mean is "
                             "scaled to exactly that mean SUV inside its mask (the network follows it roughly)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run the model (default auto: CUDA if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace this case's existing outputs in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from tumorgen.api import TumorGen, peek_model_info
    from tumorgen.errors import TumorGenError, fail_on
    from tumorgen.io.nifti import check_same_grid, load_volume
    from tumorgen.synthesis.boxes import box_from_world, check_box, parse_box, parse_mm
    from tumorgen.synthesis.manifest import case_name_from_path, check_case_name
    from tumorgen.synthesis.pipeline import check_scan_is_suv, output_names, write_outputs

    for flag in ("num", "steps", "batch"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise TumorGenError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.suv_mean is not None and not args.suv_mean > 0:
        raise TumorGenError(f"--suv-mean must be a positive SUV, got {args.suv_mean}")
    if args.feather < 0:
        raise TumorGenError(f"--feather must be 0 or more voxels, got {args.feather}")
    if (args.center_mm is None) != (args.size_mm is None):
        raise TumorGenError("--center-mm and --size-mm go together: give the box's center and its size in mm")
    if args.guidance is not None and args.suv_mean is None:
        raise TumorGenError("--guidance steers toward an asked uptake: give --suv-mean with it "
                            "(a drawn uptake samples at guidance 1)")
    center_mm = parse_mm(args.center_mm, flag="--center-mm") if args.center_mm else None
    size_mm = parse_mm(args.size_mm, flag="--size-mm", positive=True) if args.size_mm else None
    case = check_case_name(args.name) if args.name is not None else case_name_from_path(args.input)
    # every input is read and checked before the model loads and before anything is written
    scan = load_volume(args.input)
    check_scan_is_suv(scan, whole=True)
    organ_mask = load_volume(args.organ_mask, kind="mask") if args.organ_mask else None
    ct = load_volume(args.ct) if args.ct else None
    for other in (organ_mask, ct):
        if other is not None:
            check_same_grid(scan, other)
    box = args.box
    if center_mm is not None:
        box = box_from_world(center_mm, size_mm, affine=scan.affine, shape=scan.array.shape, path=scan.path)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise fail_on(out, "exists and is not a folder")
    if not args.overwrite:
        for k in range(args.num):
            for name in output_names(case, k).values():
                if (out / name).exists():
                    raise fail_on(out / name, "already exists; pass --overwrite to replace it, or --name to give "
                                              "this scan another case name")

    info = peek_model_info(args.model)
    box = parse_box(box, path=scan.path) if box is not None else None
    if box is not None and info is not None:
        check_box(box, scan=scan, **info.grid_for(box, scan.affine))  # box windows: any size fits
    model = TumorGen.load(args.model, device=args.device)
    steps = model.sample_steps if args.steps is None else args.steps
    if center_mm is not None:
        print(f"--center-mm/--size-mm -> box {' '.join(str(v) for v in box)} in scan voxels (X0 Y0 Z0 X1 Y1 Z1)")
    with tqdm(total=args.num, desc="synthesize", unit="sample", disable=args.no_progress) as bar:
        results = model.synthesize(scan, box=box, num=args.num, steps=steps, seed=args.seed,
                                   batch=args.batch, organ_mask=organ_mask, ct=ct, feather=args.feather,
                                   match_noise=not args.no_match_noise, suv_mean=args.suv_mean,
                                   guidance=args.guidance, match_uptake=not args.no_match_uptake,
                                   on_samples=bar.update)
    extra = {"model": model.model_record(), "steps": steps, "seed": args.seed, "feather": args.feather,
             "match_noise": not args.no_match_noise, "suv_mean": args.suv_mean, "guidance": args.guidance,
             "match_uptake": args.suv_mean is not None and not args.no_match_uptake}
    if center_mm is not None:
        extra["box_mm"] = {"center_ras": center_mm.tolist(), "size_along_voxel_axes": size_mm.tolist()}
    manifest = write_outputs(results, scan_path=args.input, out_dir=out, case_name=case, overwrite=args.overwrite,
                             manifest_extra=extra)
    entry = next(c for c in manifest["cases"] if c["case"] == case)
    print(sample_table(entry["samples"]))
    print(f"wrote {len(results)} sample(s) of {case} to {out} (NIfTI, PNG previews, manifest.json)")
    return 0


def sample_table(samples: list[dict]) -> str:
    """One row per sample: index, box (scan voxels), tumor volume, SUVmax, seconds."""
    rows = [("sample", "box (x0 y0 z0 x1 y1 z1)", "tumor mL", "SUVmax", "seconds")]
    for s in samples:
        suv_max = "-" if s["suv_max"] is None else f"{s['suv_max']:.2f}"
        rows.append((str(s["index"]), " ".join(str(v) for v in s["box"]), f"{s['tumor_volume_ml']:.2f}", suv_max,
                     f"{s['seconds']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
