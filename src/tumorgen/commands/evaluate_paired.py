"""The paired protocol: every method regenerates the same erased tumor boxes of your held-out cases.

Each held-out case with a tumor (the PREP test split) has the tight box of its tumor (+2 voxels) erased;
every method regenerates that box from the same erased scan, and the outputs are compared with the real
scans: FID/KID per plane on tumor-centred slices beside the real-vs-real floor (test vs train cases),
uptake, volume, shape and seam per case. Writes OUT/table.md, table.csv, metrics.json and montage.png,
and prints the table (`tumorgen.evaluation.paired`).

Methods (--methods, comma-separated, in table order): tumorgen[=MODEL] (the bundled model, a bundled
name, an exported model or a run folder; one row per --steps), difftumor=RUN, bld=RUN, medfusion=RUN
(all three sampled with --baseline-sampler and --baseline-steps), hagan=RUN (one pass), syntumor, blob
(a hot ellipsoid anchor), empty (the erased scan: the score of removing the tumor) and
vae-roundtrip[=MODEL] (no generator: the real tumor through the model's VAE and back, the same window
and seam; what its latent space can hold at all).

Examples:
  tumorgen evaluate-paired --data prep --out eval/paired --methods tumorgen=runs/tg,syntumor,blob,empty
  tumorgen evaluate-paired --data prep --out eval/paired --methods tumorgen,difftumor=runs/dt --steps 1,10
  tumorgen evaluate-paired --data prep --out eval/paired --methods tumorgen=runs/tg,hagan=runs/hagan,medfusion=runs/mf
"""

from __future__ import annotations

import argparse

FEATURES = ("inception", "pixels", "none")  # as tumorgen.evaluation.paired.FEATURES (kept import-free)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a PREP cache (`tumorgen prepare`) with its test split")
    parser.add_argument("--out", required=True, help="the output folder")
    parser.add_argument("--methods", default="tumorgen,syntumor,blob,empty",
                        help="comma-separated KIND[=MODEL]: tumorgen[=MODEL], difftumor=RUN, bld=RUN, "
                             "medfusion=RUN, hagan=RUN, syntumor, blob, empty (default: the bundled TumorGen, "
                             "syntumor, blob, empty)")
    add_protocol_options(parser)


def add_protocol_options(parser: argparse.ArgumentParser) -> None:
    """The protocol's options past the data, output and methods (`benchmarks/paired_protocol.py` shares them)."""
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="test: the PREP test split; val: --val-cases drawn from the train split")
    parser.add_argument("--val-cases", type=int, default=10, help="with --split val, cases drawn from train")
    parser.add_argument("--val-seed", type=int, default=0, help="with --split val, seeds the draw")
    parser.add_argument("--steps", default="10", help="Euler step counts for TumorGen, comma-separated")
    parser.add_argument("--told-steps", default="10",
                        help="for an uptake-conditioned TumorGen, also rows `tumorgen-N-told` given each real "
                             "tumor's mean SUV (comma-separated step counts; empty: none)")
    parser.add_argument("--baseline-steps", type=int, default=50, help="sampling steps for difftumor / bld / medfusion")
    parser.add_argument("--baseline-sampler", choices=("ddim", "ddpm"), default="ddim")
    parser.add_argument("--seed", type=int, default=0, help="seeds erasing, sampling, the floor's draws and KID")
    parser.add_argument("--features", choices=FEATURES, default="inception",
                        help="FID features: the FID Inception network, 32x32 pixels (smoke tests), or no FID")
    parser.add_argument("--inception", default=None, help="a local TorchScript FID Inception file")
    parser.add_argument("--feature-cache", default=None,
                        help="folder keeping the real cases' features between runs (they do not depend on the methods)")
    parser.add_argument("--slices-per-plane", type=int, default=9, help="tumor-centred slices per plane and volume")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--save-volumes", action="store_true",
                        help="also write every output as OUT/volumes/<case>_<method>_suv/_mask.nii.gz")
    parser.add_argument("--radiomics", action="store_true",
                        help="also an IBSI radiomic panel per real and generated tumor, against the real-vs-real "
                             "floor (OUT/radiomics.md; needs MIRP: pip install 'tumorgen[radiomics]')")
    parser.add_argument("--uptake-grid", default="",
                        help="also ask each uptake-conditioned TumorGen row for these mean SUVs in every case's box "
                             "(comma-separated, e.g. 1.5,3,6,9,12): achieved vs asked in OUT/uptake_request.md")
    parser.add_argument("--guidance", type=float, default=None,
                        help="TumorGen's classifier-free guidance toward a told uptake: the told rows and "
                             "--uptake-grid (models trained with flow.uptake_dropout; default: the model's own "
                             "flow.guidance; drawn uptakes sample at 1)")
    parser.add_argument("--no-match-uptake", action="store_true",
                        help="judge TumorGen's own uptake for told SUVs instead of the exact one users get "
                             "(synthesize scales a told tumor to the asked mean SUV)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def protocol_kwargs(args: argparse.Namespace) -> dict:
    """`run_paired`'s keyword arguments from the options of `add_protocol_options` (data, out, methods aside)."""
    from tumorgen.evaluation.paired import parse_asked, parse_counts

    return dict(split=args.split, val_cases=args.val_cases, val_seed=args.val_seed,
                steps=parse_counts(args.steps, "--steps"),
                told_steps=parse_counts(args.told_steps, "--told-steps", allow_empty=True),
                baseline_steps=args.baseline_steps, baseline_sampler=args.baseline_sampler, seed=args.seed,
                features=args.features, inception=args.inception, feature_cache=args.feature_cache,
                slices_per_plane=args.slices_per_plane, device=args.device, save_volumes=args.save_volumes,
                radiomics=args.radiomics, overwrite=args.overwrite,
                uptake_grid=parse_asked(args.uptake_grid) if args.uptake_grid else (), guidance=args.guidance,
                match_uptake=not args.no_match_uptake)


def run(args: argparse.Namespace) -> int:
    from tumorgen.evaluation.paired import parse_methods, run_paired
    from tumorgen.evaluation.paired_report import summary_lines

    metrics = run_paired(data=args.data, out=args.out, methods=parse_methods(args.methods), **protocol_kwargs(args))
    for line in summary_lines(metrics):
        print(line)
    return 0
