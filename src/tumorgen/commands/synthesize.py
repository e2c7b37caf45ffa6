"""Synthesize tumors, with their masks, into one PET scan (in SUV) with a trained TumorGen run.

The box is in the input scan's voxel indices, half-open (X0 <= x < X1), like numpy slices. Without
--box, one box per sample is drawn: its center in --organ-mask; else in the lungs of --ct (or of the
CTres.nii.gz beside an AutoPET SUV.nii.gz); else in the body; its size from the training tumors.

Per sample k, in the input's own grid and affine: <case>_<k>_pet.nii.gz (SUV, unchanged outside the
box), <case>_<k>_mask.nii.gz (binary), <case>_<k>.png (three planes through the tumor, mask contour),
and manifest.json (model run, version, checkpoint SHA-256, boxes, seeds, steps, seconds).

Examples:
  tumorgen synthesize --model runs/tumorgen --input scan.nii.gz --out synth --box 40 52 30 56 68 46
  tumorgen synthesize --model runs/tumorgen --input PETCT_x/study/SUV.nii.gz --out synth --num 4 --seed 1
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN", help="a TumorGen run folder (from `tumorgen train`)")
    parser.add_argument("--input", required=True, metavar="SCAN", help="the PET scan in SUV (NIfTI)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the output folder (other cases in it are kept)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--box", nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"),
                       help="the tumor's box in scan voxels, half-open; default: sampled")
    where.add_argument("--organ-mask", default=None, metavar="MASK",
                       help="a binary mask on the scan's grid; sampled boxes are centered inside it")
    parser.add_argument("--ct", default=None, help="a CT in HU on the scan's grid; sampled boxes go into its lungs")
    parser.add_argument("--num", type=int, default=1, help="samples to draw (default 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="Euler steps of the flow sampler (default: the run's flow.sample_steps)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same samples (default 0)")
    parser.add_argument("--batch", type=int, default=1, help="samples per model call; results do not depend on it")
    parser.add_argument("--feather", type=int, default=3, help="seam width in voxels, inside the box (default 3)")
    parser.add_argument("--no-match-noise", action="store_true",
                        help="keep the model's smooth output instead of giving it the scan's noise grain")
    parser.add_argument("--suv-mean", type=float, default=None, metavar="SUV",
                        help="how hot the tumors are (mean SUV inside the mask), for a model trained with "
                             "flow.uptake_condition; default: each sample takes one training tumor's")
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
    from tumorgen.synthesis.boxes import check_box, parse_box
    from tumorgen.synthesis.manifest import case_name_from_path
    from tumorgen.synthesis.pipeline import check_scan_is_suv, output_names, write_outputs

    for flag in ("num", "steps", "batch"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise TumorGenError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.suv_mean is not None and not args.suv_mean > 0:
        raise TumorGenError(f"--suv-mean must be a positive SUV, got {args.suv_mean}")
    if args.feather < 0:
        raise TumorGenError(f"--feather must be 0 or more voxels, got {args.feather}")
    # every input is read and checked before the model loads and before anything is written
    scan = load_volume(args.input)
    check_scan_is_suv(scan)
    organ_mask = load_volume(args.organ_mask, kind="mask") if args.organ_mask else None
    ct = load_volume(args.ct) if args.ct else None
    for other in (organ_mask, ct):
        if other is not None:
            check_same_grid(scan, other)
    case = case_name_from_path(args.input)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise fail_on(out, "exists and is not a folder")
    if not args.overwrite:
        for k in range(args.num):
            for name in output_names(case, k).values():
                if (out / name).exists():
                    raise fail_on(out / name, "already exists; pass --overwrite to replace it")

    info = peek_model_info(args.model)
    if args.box is not None and info is not None:
        box = parse_box(args.box, path=scan.path)
        check_box(box, scan=scan, **info.grid_for(box, scan.affine))  # box windows: any size fits
    model = TumorGen.load(args.model, device=args.device)
    steps = model.sample_steps if args.steps is None else args.steps
    with tqdm(total=args.num, desc="synthesize", unit="sample", disable=args.no_progress) as bar:
        results = model.synthesize(scan, box=args.box, num=args.num, steps=steps, seed=args.seed,
                                   batch=args.batch, organ_mask=organ_mask, ct=ct, feather=args.feather,
                                   match_noise=not args.no_match_noise, suv_mean=args.suv_mean,
                                   on_samples=bar.update)
    manifest = write_outputs(results, scan_path=args.input, out_dir=out, case_name=case, overwrite=args.overwrite,
                             manifest_extra={"model": model.model_record(), "steps": steps, "seed": args.seed,
                                             "feather": args.feather, "match_noise": not args.no_match_noise,
                                             "suv_mean": args.suv_mean})
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
