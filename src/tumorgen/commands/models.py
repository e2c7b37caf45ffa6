"""List the models that ship inside the package, or describe one model folder.

A bundled model needs no training and no --model flag: `synthesize`, `augment`, `generate-set` and
the API use the default one (`ibsi-fdg`) when none is named. Each model folder carries a model card
(MODEL_CARD.md): its data, recipe, measured quality and limits.

Examples:
  tumorgen models                      # every bundled model, with its card's first lines
  tumorgen models --card ibsi-fdg      # print one model's whole card
  tumorgen models --card runs/export   # the same for an exported model folder
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--card", default=None, metavar="MODEL",
                        help="print the whole model card of a bundled model (by name) or an exported model folder")


def run(args: argparse.Namespace) -> int:
    from tumorgen.errors import fail_on
    from tumorgen.training.model_bundle import DEFAULT_MODEL, bundled_models, model_summary, resolve_model

    if args.card is not None:
        folder = resolve_model(args.card)
        card = folder / "MODEL_CARD.md"
        if not card.is_file():
            raise fail_on(folder, "has no MODEL_CARD.md")
        print(card.read_text().rstrip())
        return 0
    models = bundled_models()
    if not models:
        print("no bundled models are installed (a source checkout without src/tumorgen/bundled?)")
        return 0
    for name, folder in models.items():
        s = model_summary(folder)
        default = "  (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}: {s['title']}")
        print(f"  steps: VAE {s['steps']['vae']}, TumorGen {s['steps']['tumorgen']}; {s['megabytes']:.1f} MB; "
              f"{s['folder']}")
        for line in s["summary"]:
            print(f"  {line}")
        print(f"  whole card: tumorgen models --card {name}")
    return 0
