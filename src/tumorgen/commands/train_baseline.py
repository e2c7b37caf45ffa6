"""Train a learned baseline on the same data (box windows), masks and step budget as TumorGen.

difftumor: DiffTumor-style latent inpainting, eps([z_t ; z (1 - m) ; m], t), trained with the DDPM
objective on TumorGen's frozen VAE; bld: an unconditional latent DDPM on that VAE, sampled with
blended latent diffusion; medfusion: MedFusion's own VAE (trained first, in RUN/vae/, with the
vae_train section) and its latent DDPM (L1 noise loss, its schedule), conditioned as DiffTumor;
hagan: HA-GAN on the image (low-resolution window + high-resolution sub-volumes, two discriminators,
the amortized encoder), conditioned on the window with its box erased. All generate inside real tumor
masks from the run's mask_bank.npz. The run folder is laid out as `tumorgen train`'s.

Examples:
  tumorgen train-baseline --method difftumor --data prep --vae runs/vae --out runs/difftumor --config ibsi
  tumorgen train-baseline --method bld --data prep --vae runs/vae --out runs/bld --set diffusion.schedule=linear
  tumorgen train-baseline --method hagan --data prep --out runs/hagan --config ibsi
  tumorgen train-baseline --method medfusion --data prep --out runs/medfusion --config ibsi
  tumorgen train-baseline --method bld --data prep --out runs/bld --resume --steps 4000
"""

from __future__ import annotations

import argparse

from tumorgen.commands.train_vae import add_training_arguments

METHOD_CHOICES = ("difftumor", "bld", "medfusion", "hagan")
NO_VAE = ("medfusion", "hagan")  # MedFusion trains its own VAE; HA-GAN works on the image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=METHOD_CHOICES, help="which baseline to train")
    add_training_arguments(parser)
    parser.add_argument("--vae", default=None,
                        help="difftumor, bld: the train-vae run folder (or VAE checkpoint) to build on; not needed "
                             "with --resume. medfusion, hagan: not used (MedFusion trains its own)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tumorgen.baselines.stage import train_baseline
    from tumorgen.errors import TumorGenError
    from tumorgen.training.checkpoint import load_checkpoint
    from tumorgen.training.run_setup import resolve_config

    if args.method in NO_VAE and args.vae is not None:
        raise TumorGenError(f"--vae does not apply to {args.method}: "
                            + ("it trains its own VAE" if args.method == "medfusion" else "it works on the image"))
    if args.vae is None and not args.resume and args.method not in NO_VAE:
        raise TumorGenError(f"--vae is required: the train-vae run folder to build the {args.method} baseline on")
    out = Path(args.out)
    if args.resume and (out / "checkpoints" / "last.pt").exists():  # resuming one method as another would fail
        load_checkpoint(out, expected_kind=args.method)              # deep in the loop
    cfg = resolve_config(out=out, config=args.config, overrides=args.overrides, steps=args.steps,
                         device=args.device, resume=args.resume, stage_field="train")
    vae = None if args.method in NO_VAE else (args.vae or out / "vae.pt")
    result = train_baseline(method=args.method, data=args.data, vae_run=vae, out=out, config=cfg, resume=args.resume,
                            progress=not args.no_progress)
    if result.checkpoint is not None:  # rank 0 only
        print(f"{args.method} run: {out} (step {result.step}, checkpoint {result.checkpoint})")
    return 0
