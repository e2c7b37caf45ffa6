"""Train the segmentation network that `tumorgen evaluate` uses for DSC/NSD (docs/METHOD.md section 6).

A MONAI 3D UNet trained with Dice + BCE on the real training split of a PREP cache (random flips;
whole volumes, or random 64^3 patches of larger grids), on the same fit loop as the generators:
checkpoints, --resume, metrics.jsonl, loss_curve.png. The `train` config section sets steps, lr,
batch size, EMA and device; train-seg starts from lr 1e-3 (a segmentation UNet's usual Adam rate)
unless --set train.lr=... says otherwise. At the end it reports the DSC on the real test split and
keeps it in SEG/test_dice.json.

Examples:
  tumorgen train-seg --data prep --out runs/seg --steps 400
  tumorgen train-seg --data prep --out runs/seg --resume --steps 800
"""

from __future__ import annotations

import argparse

from tumorgen.commands.train_vae import add_training_arguments

DEFAULT_OVERRIDES = ("train.lr=1e-3",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tumorgen.evaluation.segmenter import dice_on_test_split, load_segmenter, train_segmenter, write_test_dice
    from tumorgen.training.run_setup import resolve_config

    out = Path(args.out)
    overrides = [] if args.resume else list(DEFAULT_OVERRIDES)
    cfg = resolve_config(out=out, config=args.config, overrides=overrides + list(args.overrides), steps=args.steps,
                         device=args.device, resume=args.resume, stage_field="train")
    result = train_segmenter(data=args.data, out=out, config=cfg, resume=args.resume, progress=not args.no_progress)
    if result.checkpoint is None:  # not rank 0
        return 0
    model, spec = load_segmenter(out)
    scores = dice_on_test_split(model, spec, args.data)
    write_test_dice(out, scores)
    print(f"segmenter run: {out} (step {result.step}); DSC on the real test split: {scores['DSC']:.3f} "
          f"over {scores['n']} cases")
    print(f"next: tumorgen evaluate --real {args.data} --generated SET --segmenter {out} --out OUT")
    return 0
