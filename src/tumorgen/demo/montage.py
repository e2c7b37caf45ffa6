"""The demo's pictures: real tumors above synthetic ones, three planes each, mask contours on.

"Pictures first, numbers second" (docs/METHOD.md): the first thing to judge is whether a synthetic tumor
sits in its scan like a real one, with a plausible shape, uptake and noise. Drawn by the package's one
montage writer (`synthesis.montage`): RAS, cut through each tumor's center, one SUV scale for all rows,
or one per case (`case_tops`) where real scans differ in uptake.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tumorgen.demo.plan import load_real_tumors, load_synthetic
from tumorgen.synthesis.montage import Panel, write_montage

REAL_ROWS = 3
SYNTHETIC_ROWS = 4


def write_labelled_rows(path: str | Path, rows: list[dict], *, title: str = "", by_case: bool = False) -> Path:
    """Rows of dicts with "label", "image" (X, Y, Z) SUV, "mask", "affine" and "box" (or None), one volume a row.

    `by_case`: each case's rows on one scale of their own (`case_tops`, rows then need "case"); else one
    scale for all.
    """
    if not rows:
        raise ValueError("a montage needs at least one row")
    panels = [[Panel(image=r["image"], mask=r["mask"], box=r.get("box"), affine=r["affine"])] for r in rows]
    return write_montage(path, panels, row_labels=[r["label"] for r in rows], title=title,
                         scale=case_tops(rows) if by_case else "shared")


def case_tops(rows: list[dict]) -> list[float]:
    """One gray-scale top per row: its case's first row's SUVmax inside that row's mask (its 99.5th
    percentile without a mask).

    Why: one scale for every case is set by the hottest sample of all (a 24 SUV voxel in one case left
    every other real sarcoma a pale gray). With the real tumor first in each case, its case's synthetic
    tumors are shown on the real one's scale: uptake compares within a case, and a synthetic tumor
    hotter than the real one saturates to black.
    """
    tops: dict[str, float] = {}
    for row in rows:
        if row["case"] not in tops:
            inside = np.asarray(row["image"])[np.asarray(row["mask"]) > 0]
            tops[row["case"]] = float(inside.max()) if inside.size else float(np.percentile(row["image"], 99.5))
    return [tops[row["case"]] for row in rows]


def short_name(case: str) -> str:
    """AutoPET phantom names are long (PETCT_<id>_<study>); the id is enough on a picture."""
    parts = case.split("_")
    return "_".join(parts[:2]) if case.startswith("PETCT_") and len(parts) > 1 else case


def write_demo_montage(*, paths, plan) -> Path:
    """Real test-split tumors (then training ones) above synthetic samples, as OUT/montage.png."""
    real = load_real_tumors(paths, split="test") + load_real_tumors(paths, split="train")
    synthetic = load_synthetic(paths)
    rows = [{**r, "label": f"real {short_name(r['case'])}"} for r in real[:REAL_ROWS]]
    rows += [{**s, "label": f"synthetic {short_name(s['case'])} #{s['k']}"} for s in synthetic[:SYNTHETIC_ROWS]]
    return write_labelled_rows(paths.montage, rows, title=f"TumorGen demo ({plan.preset} preset): real (top) vs "
                                                          "synthetic (bottom); red = mask, dashed = box")
