"""Export a trained run as a model folder: EMA weights as safetensors, config and data record as JSON.

The folder is what synthesis needs and nothing else (no optimizer, no pickled checkpoints): about a
tenth of the run's size, loadable without pickle, every weights file pinned by its SHA-256 in
model.json. Give it to `--model` like a run folder, or share it. Add a MODEL_CARD.md by hand: what it
was trained on, how, and how good it is (`tumorgen models --card FOLDER` prints it).

Example:
  tumorgen export-model --model runs/tumorgen --out models/my-pet-model
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN", help="a finished `tumorgen train` run folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="the model folder to write (must not exist)")
    parser.add_argument("--name", default=None, help="the model's name (default: the --out folder's name)")
    parser.add_argument("--half", action="store_true",
                        help="store the weights as float16: half the size, computed in float32 after loading")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    from tumorgen.training.model_bundle import export_model, read_model_record

    out = export_model(args.model, args.out, name=args.name, half=args.half, overwrite=args.overwrite)
    record = read_model_record(out)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 2**20
    print(f"exported {args.model} (VAE {record['steps']['vae']} + TumorGen {record['steps']['tumorgen']} steps) "
          f"to {out}: {size:.1f} MB")
    return 0
