"""Train TumorGen on top of a trained VAE (stage 2): BA-PMG boxes, the SC-VFE rectified-flow model with
its coarse and fine spatial constraints, and the VAE-guided mask refiner.

The run folder gets config.json, data.json, metrics.jsonl, loss_curve.png, checkpoints/ and vae.pt (a
copy of the VAE, so the run folder alone is enough to synthesize). Ablations are config values:
--set ablate=no_bapmg (or no_coarse, no_fine, no_vmr, comma-separated).

Examples:
  tumorgen train --data prep --vae runs/vae --out runs/tumorgen --config phantom
  tumorgen train --data prep --vae runs/vae --out runs/no-vmr --set ablate=no_vmr
  tumorgen train --data prep --vae runs/vae --out runs/tumorgen --resume --steps 4000
"""

from __future__ import annotations

import argparse

from tumorgen.commands.train_vae import add_training_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)
    parser.add_argument("--vae", default=None,
                        help="the train-vae run folder (or VAE checkpoint) to build on; not needed with --resume")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tumorgen.errors import TumorGenError
    from tumorgen.training.run_setup import resolve_config
    from tumorgen.training.tumorgen_stage import train_tumorgen

    if args.vae is None and not args.resume:
        raise TumorGenError("--vae is required: the train-vae run folder to build TumorGen on")
    out = Path(args.out)
    cfg = resolve_config(out=out, config=args.config, overrides=args.overrides, steps=args.steps,
                         device=args.device, resume=args.resume, stage_field="train")
    result = train_tumorgen(data=args.data, vae_run=args.vae or out / "vae.pt", out=out, config=cfg,
                            resume=args.resume, progress=not args.no_progress)
    if result.checkpoint is not None:  # rank 0 only
        print(f"TumorGen run: {out} (step {result.step}, checkpoint {result.checkpoint})")
        print(f"next: tumorgen synthesize --model {out} ...  (the run folder holds everything it needs)")
    return 0
