"""Train a diffusion baseline on the same data, the same VAE and the same U-Net size as TumorGen.

difftumor: DiffTumor-style latent inpainting, eps([z_t ; z (1 - m) ; m], t), trained with the DDPM
objective on real tumor cases; bld: an unconditional latent DDPM sampled with blended latent
diffusion. Both are sampled with DDPM-N or DDIM-N (the `diffusion` config section) inside real tumor
masks from the run's mask_bank.npz. The run folder is laid out as `tumorgen train`'s.

Examples:
  tumorgen train-baseline --method difftumor --data prep --vae runs/vae --out runs/difftumor --config phantom
  tumorgen train-baseline --method bld --data prep --vae runs/vae --out runs/bld --set diffusion.schedule=linear
  tumorgen train-baseline --method bld --data prep --out runs/bld --resume --steps 4000
"""

from __future__ import annotations

import argparse

from tumorgen.commands.train_vae import add_training_arguments

METHOD_CHOICES = ("difftumor", "bld")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=METHOD_CHOICES, help="which baseline to train")
    add_training_arguments(parser)
    parser.add_argument("--vae", default=None,
                        help="the train-vae run folder (or VAE checkpoint) to build on; not needed with --resume")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tumorgen.baselines.stage import train_baseline
    from tumorgen.errors import TumorGenError
    from tumorgen.training.checkpoint import load_checkpoint
    from tumorgen.training.run_setup import resolve_config

    if args.vae is None and not args.resume:
        raise TumorGenError(f"--vae is required: the train-vae run folder to build the {args.method} baseline on")
    out = Path(args.out)
    if args.resume:  # resuming a DiffTumor run as BLD (or the reverse) would fail deep in the loop
        load_checkpoint(out, expected_kind=args.method)
    cfg = resolve_config(out=out, config=args.config, overrides=args.overrides, steps=args.steps,
                         device=args.device, resume=args.resume, stage_field="train")
    result = train_baseline(method=args.method, data=args.data, vae_run=args.vae or out / "vae.pt", out=out,
                            config=cfg, resume=args.resume, progress=not args.no_progress)
    if result.checkpoint is not None:  # rank 0 only
        print(f"{args.method} run: {out} (step {result.step}, checkpoint {result.checkpoint})")
    return 0
