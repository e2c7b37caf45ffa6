"""Can the model make a hot rim at all? Its tumors in the boxes of the real tumors that have one.

Issue 21 measures the share of tumors whose outer half is > 1.2x hotter than their inner half (a
necrotic sarcoma: a hot rim around a cold core). This probe asks the narrower question first: in the
box of each real tumor with a rim (training cases included, which the model has seen), regenerated
`--samples` times with the uptake drawn and told the real mean SUV, how high does the generated
rim/core ratio go? It also prints every split's rim share, since a model that learns its training
tumors can make rims only as often as they have them.

    python benchmarks/rim_probe.py --data prep/ibsi --model runs/ibsi625/tumorgen [--samples 6]
        [--threshold 1.2] [--out benchmarks/results/NAME]   # writes rim_probe.md

The box is the paired protocol's (the real tumor's tight box + `BOX_MARGIN` voxels a face), erased as
the protocol erases it before synthesis, so no voxel of the real tumor reaches the generated one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tumorgen.api import TumorGen
from tumorgen.data.box_geometry import tight_box
from tumorgen.data.erase import erase_box
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError
from tumorgen.evaluation.paired import BOX_MARGIN, ERASE_SHELL
from tumorgen.evaluation.radiomics import RIM_THRESHOLD, rim_core_ratio
from tumorgen.io.atomic import atomic_path
from tumorgen.io.spacing import voxel_spacing


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the PREP cache")
    parser.add_argument("--model", default=None, help="run folder, exported model or bundled name (default: bundled)")
    parser.add_argument("--samples", type=int, default=6, help="tumors per box, for each of drawn and told")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the model's)")
    parser.add_argument("--threshold", type=float, default=RIM_THRESHOLD,
                        help="rim/core above which a tumor has a hot rim")
    parser.add_argument("--out", type=Path, default=None, help="folder for rim_probe.md")
    return parser.parse_args(argv)


def real_ratios(dataset) -> list[dict]:
    """Every tumor case's split, real rim/core ratio and mean SUV."""
    rows = []
    for split in ("train", "test"):
        for case in dataset.tumor_cases(split):
            image, mask, affine = case.load()
            suv = image * dataset.suv_max  # the cache stores SUV / suv_max
            spacing = voxel_spacing(affine)
            rows.append({"case": case, "split": split, "suv": suv, "mask": mask > 0, "affine": affine,
                         "spacing": spacing, "ratio": rim_core_ratio(suv, mask > 0, spacing),
                         "suv_mean": float(suv[mask > 0].mean())})
    return rows


def probe(model: TumorGen, row: dict, *, samples: int, steps: int | None) -> dict[str, list[float]]:
    """Generated rim/core ratios in the real tumor's erased box: uptake drawn, then told the real mean SUV."""
    box = tight_box(row["mask"], margin=BOX_MARGIN)
    erased = erase_box(row["suv"], box, rng=np.random.default_rng(0), shell=ERASE_SHELL)
    result = {}
    for label, told in (("drawn", None), ("told", row["suv_mean"])):
        outputs = model.synthesize(erased, affine=row["affine"], box=box, num=samples, steps=steps, seed=0,
                                   suv_mean=told)
        result[label] = [rim_core_ratio(o.image, o.mask > 0, row["spacing"]) for o in outputs]
    return result


def report(rows: list[dict], probes: dict[str, dict], *, threshold: float, model: str) -> str:
    lines = [f"# Hot rims: the real tumors' and the model's ({model})", ""]
    for split in ("train", "test"):
        ratios = np.array([r["ratio"] for r in rows if r["split"] == split])
        if not ratios.size:
            continue
        hot = int(np.sum(ratios > threshold))
        lines.append(f"- {split}: {hot} of {ratios.size} real tumors have rim/core > {threshold:g} "
                     f"({100 * hot / ratios.size:.0f}%); median rim/core {np.nanmedian(ratios):.2f}")
    lines += ["", "| case | split | real rim/core | generated, uptake drawn | generated, told the real SUVmean "
              "| highest generated |", "|---|---|---:|---|---|---:|"]
    for row in rows:
        name = row["case"].name
        if name not in probes:
            continue
        drawn, told = probes[name]["drawn"], probes[name]["told"]
        lines.append(f"| {name} | {row['split']} | {row['ratio']:.2f} | {' '.join(f'{v:.2f}' for v in drawn)} "
                     f"| {' '.join(f'{v:.2f}' for v in told)} | {np.nanmax(drawn + told):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        dataset = load_prepared(args.data)
        model = TumorGen.load(args.model)
        rows = real_ratios(dataset)
        probes = {}
        for row in rows:
            if row["ratio"] > args.threshold:
                probes[row["case"].name] = probe(model, row, samples=args.samples, steps=args.steps)
                print(f"{row['case'].name}: real {row['ratio']:.2f}, generated up to "
                      f"{np.nanmax(probes[row['case'].name]['drawn'] + probes[row['case'].name]['told']):.2f}",
                      flush=True)
    except TumorGenError as err:
        print(f"rim_probe.py: error: {err}", file=sys.stderr)
        return 2
    text = report(rows, probes, threshold=args.threshold, model=args.model or "bundled")
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out / "rim_probe.md") as tmp:
            Path(tmp).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
