"""The `tumorgen` command: argument parsing only.

Each subcommand lives in `tumorgen.commands.<name>` with two functions, `add_arguments(parser)` and
`run(args) -> int`. Command modules import torch and MONAI inside `run`, so parsing stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tumorgen import __version__
from tumorgen.errors import TumorGenError

# (subcommand, module under tumorgen.commands, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("phantom", "phantom", "write procedural PET phantoms in a dataset's folder layout"),
    ("prepare", "prepare", "read a dataset folder and write the preprocessed training cache"),
    ("train-vae", "train_vae", "train the 3D KL-VAE (stage 1)"),
    ("train", "train", "train TumorGen: BA-PMG + SC-VFE rectified flow + VMR (stage 2)"),
    ("synthesize", "synthesize", "scan + box -> synthetic tumor image + mask, in the scan's own grid"),
    ("augment", "augment", "synthesize tumors into a dataset and write an nnU-Net v2 raw dataset"),
    ("train-baseline", "train_baseline", "train a baseline (difftumor, bld, medfusion, hagan) on the same data"),
    ("evaluate", "evaluate", "FID/KID per plane, DSC/NSD, uptake and seam checks of a generated set"),
    ("evaluate-paired", "evaluate_paired",
     "the paired protocol: every method regenerates the erased tumor boxes of held-out cases; table, floor, montage"),
    ("generate-set", "generate_set", "generate tumors into a prepared split with one method, for evaluation"),
    ("train-seg", "train_seg", "train the segmentation network used for DSC/NSD"),
    ("examples", "examples", "the real PET example scans that ship with TumorGen, with a ready command each"),
    ("models", "models", "list the bundled (ready-trained) models and their model cards"),
    ("export-model", "export_model", "export a trained run as safetensors + JSON, the form models ship in"),
    ("demo", "demo", "the whole pipeline on phantoms in bounded time: montage, NIfTIs and report.md"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorgen",
        description="Synthesize realistic 3D tumors, with their masks, into PET scans.",
    )
    parser.add_argument("--version", action="version", version=f"tumorgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(f"tumorgen.commands.{module_name}")
        doc = (module.__doc__ or help_text).strip()
        command_parser = sub.add_parser(
            name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except TumorGenError as err:
        print(f"tumorgen {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tumorgen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
