"""Uptake on request: does a tumor asked for SUVmean a come out with SUVmean a?

A user who asks for an SUV 8 lesion should get one. Each evaluated case's erased box (the paired
protocol's, so boxes of the real tumors' sizes) is regenerated once per asked mean SUV in a grid, with
the case's own seed; the achieved SUVmean is the mean SUV inside the generated mask. Reported per asked
value and over the grid: the share within `TOLERANCE` of the ask, the median achieved/asked ratio,
empty masks, and the least-squares slope of achieved on asked (1 = followed; below 1 = compressed
toward the middle, the failure this measures).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from tumorgen.data.box_geometry import box_slices
from tumorgen.errors import TumorGenError

ASKED = (1.5, 3.0, 6.0, 9.0, 12.0)  # SUVmean from a cold soft-tissue lesion to a hot sarcoma (issue 21's grid)
TOLERANCE = 0.2  # within +-20% of the asked SUVmean counts as followed


def parse_asked(text: str) -> list[float]:
    """`--uptake-grid 1.5,3,6,9,12` -> [1.5, 3.0, ...]; positive numbers only."""
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise TumorGenError(f"--uptake-grid takes comma-separated SUV values, got {text!r}") from None
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise TumorGenError(f"--uptake-grid takes positive SUV values, got {text!r}")
    return values


def achieved_mean(suv: np.ndarray, mask: np.ndarray) -> float:
    """SUVmean inside the generated mask; NaN when the mask is empty."""
    inside = np.asarray(mask) > 0
    return float(np.asarray(suv)[inside].mean()) if inside.any() else float("nan")


def summarize_requests(records: list[dict], tolerance: float = TOLERANCE) -> dict:
    """Per asked value and over the grid, from records {"case", "asked", "achieved", "voxels"}."""
    def stats(rs: list[dict]) -> dict:
        asked = np.array([r["asked"] for r in rs], dtype=float)
        got = np.array([r["achieved"] for r in rs], dtype=float)
        made = np.isfinite(got)
        ratio = got[made] / asked[made]
        return {"n": len(rs), "empty": int((~made).sum()),
                "within": float(np.mean(np.abs(got / asked - 1.0) <= tolerance)) if len(rs) else float("nan"),
                "ratio_median": float(np.median(ratio)) if made.any() else float("nan"),
                "achieved_median": float(np.median(got[made])) if made.any() else float("nan")}

    by_asked = {a: stats([r for r in records if r["asked"] == a]) for a in sorted({r["asked"] for r in records})}
    made = [r for r in records if np.isfinite(r["achieved"])]
    slope = intercept = float("nan")
    if len({r["asked"] for r in made}) >= 2:
        slope, intercept = (float(v) for v in np.polyfit([r["asked"] for r in made], [r["achieved"] for r in made], 1))
    return {"by_asked": by_asked, "overall": {**stats(records), "slope": slope, "intercept": intercept},
            "tolerance": tolerance}


def request_uptakes(generator: Callable, cases: Sequence, asked: Sequence[float], *,
                    log: Callable[[str], None] = lambda line: None) -> dict:
    """Ask `generator` (a `generators.TumorGenerator`) for each asked SUVmean in every paired-protocol case's
    erased box (`evaluation.paired.PairedCase`); the summary. As in the protocol, only the mask inside the
    box counts.

    A call that fails with a `TumorGenError` (e.g. a box the model's window cannot hold) is recorded
    as an empty mask with its error.
    """
    records = []
    for case in cases:
        inside = box_slices(case.box)
        for a in asked:
            try:
                suv, mask = generator(case.erased, case.affine, case.box, case.seed, suv_mean=float(a))
                kept = np.zeros(np.shape(suv), np.uint8)
                kept[inside] = np.asarray(mask)[inside] > 0
                record = {"case": case.name, "asked": float(a), "achieved": achieved_mean(suv, kept),
                          "voxels": int(kept.sum())}
            except TumorGenError as err:
                record = {"case": case.name, "asked": float(a), "achieved": float("nan"), "voxels": 0, "error": str(err)}
            records.append(record)
        got = ", ".join(f"{r['asked']:g}->{r['achieved']:.1f}" for r in records[-len(asked):])
        log(f"  uptake on request, {case.name}: {got}")
    return {"asked": [float(a) for a in asked], "records": records, **summarize_requests(records)}


def render_requests(results: dict[str, dict], *, matched: bool = False) -> str:
    """Markdown: one table per method, a row per asked SUVmean and one over the grid. `matched`: the
    tumors were scaled to the asked SUVmean (`synthesis.uptake_match`), so the grid checks that step and
    the masks, not the network."""
    how = ("the tumors scaled to the asked SUVmean after generation (`synthesis.uptake_match`, what users get; "
           "`--no-match-uptake` judges the network alone)" if matched else
           "the network's own uptake (no scaling afterwards)")
    lines = ["# Uptake on request", "",
             f"Each case's erased box regenerated once per asked SUVmean; achieved = SUVmean inside the generated "
             f"mask; within = |achieved / asked - 1| <= {TOLERANCE:.0%}; slope = least squares of achieved on "
             f"asked (1 = followed, < 1 = compressed toward the middle). Uptake: {how}.", ""]
    for name, result in results.items():
        overall = result["overall"]
        lines += [f"## {name}", "", "| asked SUVmean | achieved (median) | achieved / asked (median) | within | empty |",
                  "|---:|---:|---:|---:|---:|"]
        for a, s in result["by_asked"].items():
            lines.append(f"| {a:g} | {s['achieved_median']:.2f} | {s['ratio_median']:.2f} | "
                         f"{s['within']:.0%} ({round(s['within'] * s['n'])} of {s['n']}) | {s['empty']} |")
        lines += [f"| all | - | {overall['ratio_median']:.2f} | {overall['within']:.0%} "
                  f"({round(overall['within'] * overall['n'])} of {overall['n']}) | {overall['empty']} |", "",
                  f"slope of achieved on asked: **{overall['slope']:.2f}** (intercept {overall['intercept']:.2f} SUV)", ""]
    return "\n".join(lines)
