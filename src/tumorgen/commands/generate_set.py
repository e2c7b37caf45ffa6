"""Generate tumors into every case of a prepared split with one method, for `tumorgen evaluate`.

Every method gets the same boxes: the BA-PMG box of each case's real tumor (a training-sized box in
the body for healthy cases), drawn from --seed alone. The PREP grid is the model's window, so nothing
is resampled; the generated box is blended into the scan as `tumorgen synthesize` does. For tumorgen,
--model defaults to the bundled model (or names another bundled model, an exported model folder or
a run folder); difftumor, bld, medfusion and hagan need their run folder; SynTumor needs no --model (its uptake comes
from the PREP training tumors).

Examples:
  tumorgen generate-set --method tumorgen --model runs/tumorgen --data prep --out sets/rfm10 --steps 10
  tumorgen generate-set --method difftumor --model runs/difftumor --data prep --sampler ddpm --steps 50 --out sets/ddpm50
  tumorgen generate-set --method syntumor --data prep --out sets/syntumor --per-case 2
"""

from __future__ import annotations

import argparse

from tumorgen.commands.synthesize import MODEL_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True,
                        choices=("tumorgen", "difftumor", "bld", "medfusion", "hagan", "syntumor"))
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help=f"tumorgen: {MODEL_HELP}. difftumor, bld, medfusion, hagan: the run folder from "
                             "`tumorgen train-baseline` (required). syntumor: none")
    parser.add_argument("--data", required=True, help="the PREP folder written by `tumorgen prepare`")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="which split to generate into")
    parser.add_argument("--per-case", type=int, default=1, help="samples per case (default 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: the run's flow.sample_steps or diffusion.sample_steps)")
    parser.add_argument("--sampler", choices=("euler", "ddpm", "ddim"), default=None,
                        help="euler for tumorgen; ddpm or ddim for difftumor/bld (default ddim) and medfusion "
                             "(default its own); none for hagan")
    parser.add_argument("--seed", type=int, default=0, help="boxes and samples derive from it (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--latent-factor", type=int, default=None,
                        help="syntumor: the VAE factor f of the models its set is compared with (boxes are whole "
                             "latent voxels; the models' data.json says it); model methods read their own")
    parser.add_argument("--out", required=True, help="the generated set folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from tumorgen.evaluation.generate import generate_set

    index = generate_set(method=args.method, data=args.data, out=args.out, model=args.model, split=args.split,
                         per_case=args.per_case, steps=args.steps, sampler=args.sampler, seed=args.seed,
                         device=args.device, latent_factor=args.latent_factor, overwrite=args.overwrite,
                         progress=not args.no_progress)
    seconds = index["seconds_per_sample"]
    print(f"{len(index['samples'])} samples of {args.method} in {args.out} "
          f"({seconds:.3f} s per sample); next: tumorgen evaluate --real {args.data} --generated {args.out} --out OUT")
    return 0
