"""Radiomic fidelity: each method's tumors against the real ones, feature by feature, beside a floor.

Per feature of the panel (`evaluation.radiomics`):
- the standardized difference `d = (mean(method) - mean(real)) / sd(real)`: is the method's typical
  tumor the real typical tumor (0) or off by how many real standard deviations;
- a distribution distance, the Wasserstein-1 distance between the two sets of values in units of
  sd(real): do they spread like the real ones (0), not only center alike.
The floor is what two sets of real tumors give: the real test tumors against as many real training
tumors, drawn `repeats` times; a method's |d| "within the floor" is no larger than the largest floor
draw's. With 10 test tumors a feature's floor is wide, and the table says so.
Pure numpy/scipy on panels (dicts), so it is tested without MIRP.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.stats import wasserstein_distance

from tumorgen.evaluation.radiomics import FEATURES, PANEL, RIM_THRESHOLD
from tumorgen.evaluation.tables import Column, render_markdown

LABELS = {**{key: label for key, (label, _) in FEATURES.items()}, "rim_core_ratio": "rim/core SUV ratio"}


def _values(panels: Sequence[Mapping], key: str) -> np.ndarray:
    values = np.array([p.get(key, np.nan) for p in panels], dtype=np.float64)
    return values[np.isfinite(values)]


def standardized_difference(real: np.ndarray, other: np.ndarray) -> float:
    """(mean(other) - mean(real)) / sd(real) (sample sd); NaN when either set is too small."""
    if real.size < 2 or not other.size:
        return float("nan")
    sd = float(np.std(real, ddof=1))
    return float((other.mean() - real.mean()) / sd) if sd > 0 else float("nan")


def distribution_distance(real: np.ndarray, other: np.ndarray) -> float:
    """Wasserstein-1 distance between the two samples, in units of sd(real); NaN when too small."""
    if real.size < 2 or not other.size:
        return float("nan")
    sd = float(np.std(real, ddof=1))
    return float(wasserstein_distance(real, other) / sd) if sd > 0 else float("nan")


def rim_share(panels: Sequence[Mapping]) -> float:
    """The share of tumors with a hot rim (rim/core ratio above `RIM_THRESHOLD`); NaN without any ratio."""
    ratios = _values(panels, "rim_core_ratio")
    return float(np.mean(ratios > RIM_THRESHOLD)) if ratios.size else float("nan")


def compare_panels(real: Sequence[Mapping], methods: Mapping[str, Sequence[Mapping]],
                   reference: Sequence[Mapping], *, repeats: int = 5, seed: int = 0) -> dict:
    """Every method's panels against the real ones, with the real-vs-real floor.

    Args:
        real: the real test tumors' panels.
        methods: method -> its tumors' panels (one per case, empty masks give NaN panels).
        reference: real training tumors' panels, drawn from for the floor.
        repeats: floor draws of `len(real)` reference tumors (all of them, when there are fewer).
        seed: seeds the draws.

    Returns:
        {"features": {key: {"real_median", "floor_abs_d_mean", "floor_abs_d_max", "floor_w_mean",
        "methods": {name: {"median", "d", "w", "within_floor"}}}}, "rim_share": {"real", "floor", name...},
        "within_floor": {name: count of features within the floor}, "n_features"}.
    """
    rng = np.random.default_rng(seed)
    n = min(len(real), len(reference))
    draws = [list(rng.choice(len(reference), size=n, replace=False)) for _ in range(repeats)] if n else []
    features = {}
    for key in PANEL:
        r = _values(real, key)
        floor_d = [abs(standardized_difference(r, _values([reference[i] for i in draw], key))) for draw in draws]
        floor_w = [distribution_distance(r, _values([reference[i] for i in draw], key)) for draw in draws]
        floor_max = float(np.nanmax(floor_d)) if np.isfinite(floor_d).any() else float("nan")
        entry = {"real_median": float(np.median(r)) if r.size else float("nan"),
                 "floor_abs_d_mean": float(np.nanmean(floor_d)) if np.isfinite(floor_d).any() else float("nan"),
                 "floor_abs_d_max": floor_max,
                 "floor_w_mean": float(np.nanmean(floor_w)) if np.isfinite(floor_w).any() else float("nan"),
                 "methods": {}}
        for name, panels in methods.items():
            o = _values(panels, key)
            d = standardized_difference(r, o)
            entry["methods"][name] = {"median": float(np.median(o)) if o.size else float("nan"), "d": d,
                                      "w": distribution_distance(r, o),
                                      "within_floor": bool(np.isfinite(d) and abs(d) <= floor_max)}
        features[key] = entry
    rims = {"real": rim_share(real),
            "floor": float(np.mean([rim_share([reference[i] for i in draw]) for draw in draws])) if draws else None,
            **{name: rim_share(panels) for name, panels in methods.items()}}
    within = {name: sum(features[k]["methods"][name]["within_floor"] for k in PANEL) for name in methods}
    return {"features": features, "rim_share": rims, "within_floor": within, "n_features": len(PANEL),
            "n_real": len(real), "n_reference": len(reference), "repeats": repeats}


def table_rows(comparison: Mapping) -> tuple[list[Column], list[dict]]:
    """The radiomics table: one row per feature, then the hot-rim share and the count within the floor."""
    methods = list(next(iter(comparison["features"].values()))["methods"])
    columns = [Column("feature", "feature", "{}"), Column("real median", "real", "{:.3g}"),
               Column("floor |d| mean / max", "floor_d", "{}"), Column("floor W", "floor_w", "{:.2f}")]
    for name in methods:
        columns += [Column(f"{name} median", f"{name}:median", "{:.3g}"), Column(f"{name} d", f"{name}:d", "{}"),
                    Column(f"{name} W", f"{name}:w", "{:.2f}")]
    rows = []
    for key, entry in comparison["features"].items():
        row = {"feature": LABELS[key], "real": entry["real_median"], "floor_w": entry["floor_w_mean"],
               "floor_d": f"{entry['floor_abs_d_mean']:.2f} / {entry['floor_abs_d_max']:.2f}"}
        for name, m in entry["methods"].items():
            mark = "" if m["within_floor"] else " *"
            row.update({f"{name}:median": m["median"], f"{name}:w": m["w"],
                        f"{name}:d": f"{m['d']:+.2f}{mark}" if np.isfinite(m["d"]) else "–"})
        rows.append(row)
    rims = comparison["rim_share"]
    rows.append({"feature": f"hot rim share (rim/core > {RIM_THRESHOLD})", "real": rims["real"],
                 "floor_d": "–" if rims["floor"] is None else f"{rims['floor']:.2f}",
                 **{f"{name}:median": rims[name] for name in methods}})
    rows.append({"feature": "features within the floor", "floor_d": "–",
                 **{f"{name}:d": f"{comparison['within_floor'][name]} of {comparison['n_features']}"
                    for name in methods}})
    return columns, rows


def render(comparison: Mapping) -> str:
    """The table as Markdown, with a line saying how to read it."""
    columns, rows = table_rows(comparison)
    note = (f"\nd: standardized difference of means (units of the real tumors' sd); * = |d| beyond the floor's "
            f"largest draw; W: Wasserstein-1 in the same units; floor: the {comparison['n_real']} real tumors "
            f"against {comparison['repeats']} draws of as many real training tumors "
            f"(of {comparison['n_reference']}).\n")
    return render_markdown(columns, rows) + note
