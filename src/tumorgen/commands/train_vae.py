"""Train the 3D KL-VAE on random patches of a prepared dataset (stage 1 of TumorGen).

The run folder gets config.json, metrics.jsonl, loss_curve.png and checkpoints/ (step_*.pt, last.pt);
each checkpoint stores the latent scale factor computed from the training volumes.

Examples:
  tumorgen train-vae --data prep --out runs/vae --config phantom
  tumorgen train-vae --data prep --out runs/vae --resume --steps 3000
  tumorgen train-vae --data prep --out runs/maisi --set vae.arch=maisi vae.weights=autoencoder.pt --steps 0
  torchrun --nproc_per_node=2 -m tumorgen train-vae --data prep --out runs/vae
"""

from __future__ import annotations

import argparse

from tumorgen.config import PRESETS


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags both trainers share."""
    parser.add_argument("--data", required=True, help="the PREP folder written by `tumorgen prepare`")
    parser.add_argument("--out", required=True, help="the run folder to create (or to continue with --resume)")
    parser.add_argument("--config", default=None,
                        help=f"preset ({', '.join(PRESETS)}) or a .toml/.json file (default phantom)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set train.lr=2e-4 ablate=no_bapmg")
    parser.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="where to train (default: the config's, normally auto = CUDA if available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tumorgen.training.run_setup import resolve_config
    from tumorgen.training.vae_stage import train_vae

    out = Path(args.out)
    cfg = resolve_config(out=out, config=args.config, overrides=args.overrides, steps=args.steps,
                         device=args.device, resume=args.resume, stage_field="vae_train")
    result = train_vae(data=args.data, out=out, config=cfg, resume=args.resume, progress=not args.no_progress)
    if result.checkpoint is not None:  # rank 0 only
        print(f"VAE run: {out} (step {result.step}, checkpoint {result.checkpoint})")
        print(f"next: tumorgen train --data {args.data} --vae {out} --out RUN"
              f"{' --config ' + args.config if args.config else ''}")
    return 0
