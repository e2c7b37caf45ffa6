"""Synthesize tumors into every case of a dataset and write an nnU-Net v2 raw dataset.

The model is the bundled one unless --model names another bundled model (see `tumorgen models`), an
exported model folder or a `tumorgen train` run folder.

The dataset folder nnUNet_raw/DatasetXXX_Name/ gets the real cases (PET + their own label; healthy
cases get an empty label) and --per-case synthetic ones per case (<case>_syn<k>), then dataset.json.
For a case that already has a tumor, the synthetic label is the union of its tumor and the new one,
and the new box never overlaps the old tumor. Interrupted runs resume: cases already written are
skipped. tumorgen_augment.json beside dataset.json records each synthetic case's box, seed and model.

Examples:
  tumorgen augment --data autopet --layout autopet --out nnUNet_raw \\
      --dataset-id 501 --name TumorGenAug --per-case 2 --healthy-only
  tumorgen augment --model runs/tumorgen --data hecktor --layout hecktor --out nnUNet_raw --dataset-id 502
  nnUNetv2_plan_and_preprocess -d 501 --verify_dataset_integrity
"""

from __future__ import annotations

import argparse

from tumorgen.commands.synthesize import MODEL_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--data", required=True, metavar="DIR", help="the dataset folder to augment")
    parser.add_argument("--layout", required=True, choices=("autopet", "hecktor", "nnunet", "pairs"),
                        help="the dataset's folder layout")
    parser.add_argument("--image-glob", default=None, help="pairs layout: images' glob pattern, relative to --data")
    parser.add_argument("--mask-glob", default=None, help="pairs layout: masks' glob pattern, relative to --data")
    parser.add_argument("--out", required=True, metavar="NNUNET_RAW",
                        help="nnUNet_raw (DatasetXXX_Name/ is made inside it) or the dataset folder itself")
    parser.add_argument("--dataset-id", type=int, default=501, help="nnU-Net dataset id, 1-999 (default 501)")
    parser.add_argument("--name", default="TumorGenAug", help="nnU-Net dataset name (default TumorGenAug)")
    parser.add_argument("--per-case", type=int, default=1, metavar="K", help="synthetic tumors per case (default 1)")
    parser.add_argument("--healthy-only", action="store_true",
                        help="synthesize only into cases without a tumor (every real case is still written)")
    parser.add_argument("--steps", type=int, default=None,
                        help="Euler steps of the flow sampler (default: the model's flow.sample_steps)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same dataset (default 0)")
    parser.add_argument("--suv-mean", type=float, default=None, metavar="SUV",
                        help="every synthetic tumor's mean SUV (default: each draws one training tumor's)")
    parser.add_argument("--guidance", type=float, default=None, metavar="W",
                        help="classifier-free guidance toward --suv-mean, for models trained with "
                             "flow.uptake_dropout (default: the model's flow.guidance; a drawn uptake always "
                             "samples at 1)")
    parser.add_argument("--no-match-uptake", action="store_true",
                        help="keep the network's own uptake instead of scaling each tumor to exactly --suv-mean")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N cases (by name)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run the model (default auto: CUDA if available)")
    parser.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                        help="a bad case stops everything (fail, default) or is listed and skipped (skip)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete this dataset folder first instead of resuming it")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from tumorgen.generators import build_generator, with_suv_mean
    from tumorgen.augmentation.augment import augment_dataset
    from tumorgen.data.layouts import find_cases
    from tumorgen.errors import TumorGenError
    from tumorgen.export.nnunet import dataset_folder_name

    for flag, value in (("--per-case", args.per_case), ("--steps", args.steps)):
        if value is not None and value < 1:
            raise TumorGenError(f"{flag} must be at least 1, got {value}")
    if args.limit is not None and args.limit < 1:
        raise TumorGenError(f"--limit must be at least 1, got {args.limit}")
    if args.guidance is not None and args.suv_mean is None:
        raise TumorGenError("--guidance steers toward an asked uptake: give --suv-mean with it "
                            "(a drawn uptake samples at guidance 1)")
    dataset_folder_name(args.dataset_id, args.name)  # refuse a bad id or name before any work
    cases = find_cases(args.data, args.layout, image_glob=args.image_glob, mask_glob=args.mask_glob)
    cases = cases[: args.limit] if args.limit else cases
    generator = with_suv_mean(build_generator("tumorgen", args.model, steps=args.steps, device=args.device,
                                              guidance=args.guidance, match_uptake=not args.no_match_uptake),
                               args.suv_mean)
    report = augment_dataset(generator=generator, cases=cases, out=args.out, dataset_id=args.dataset_id,
                             name=args.name, per_case=args.per_case, healthy_only=args.healthy_only, seed=args.seed,
                             on_error=args.on_error, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote {report.real_written} real and {report.synthetic_written} synthetic cases to {report.dataset_dir}")
    if report.resumed:
        print(f"resumed: {report.resumed} cases already written were skipped")
    for case_id, reason in report.skipped_samples:
        print(f"skipped sample {case_id}: {reason}")
    if report.skipped_cases:
        print(f"skipped {len(report.skipped_cases)} bad case(s):")
        for name, reason in report.skipped_cases:
            print(f"  {name}: {reason}")
    print(f"dataset.json: numTraining {report.num_training}; next: nnUNetv2_plan_and_preprocess "
          f"-d {args.dataset_id} --verify_dataset_integrity")
    return 0
