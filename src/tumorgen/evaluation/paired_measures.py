"""The paired protocol's per-case measures and their summary over cases (`evaluation.paired`).

Each output (a method's SUV volume and mask for one case) is measured against the real tumor the box
was erased from: mean and max SUV inside the generated mask against inside the real mask, the volume
ratio, the number of 26-connected components, and the seam step across the box faces.
"""

from __future__ import annotations

import numpy as np

from tumorgen.evaluation.tumor_measures import connected_components, seam_step

MEAN_TOLERANCE = 0.2  # "within +-20%" for the mean SUV ratio
VOLUME_TOLERANCE = 0.3  # "within +-30%" for the volume ratio


def case_measures(real_suv: np.ndarray, real_mask: np.ndarray, box, suv: np.ndarray, mask: np.ndarray) -> dict:
    """Uptake, volume, shape and seam of one output (`suv`, `mask`) against the real tumor of its case.

    Args:
        real_suv, real_mask: (X, Y, Z) the real scan in SUV and its tumor mask (not empty).
        box: the half-open box the output was generated in.
        suv, mask: (X, Y, Z) the output; an empty mask gives None for its SUV measures.
    """
    real_values = real_suv[real_mask > 0]
    values = suv[mask > 0]
    out = {"real_mean_suv": float(real_values.mean()), "real_max_suv": float(real_values.max()),
           "real_volume": int(real_values.size), "volume": int(values.size),
           "mean_suv": float(values.mean()) if values.size else None,
           "max_suv": float(values.max()) if values.size else None,
           "components": connected_components(mask),
           "seam_step": seam_step(suv, box), "real_seam_step": seam_step(real_suv, box)}
    out["mean_ratio"] = out["mean_suv"] / out["real_mean_suv"] if values.size else None
    out["max_ratio"] = out["max_suv"] / out["real_max_suv"] if values.size else None
    out["volume_ratio"] = out["volume"] / out["real_volume"]
    return out


def summarize(per_case: list[dict]) -> dict:
    """Medians and fractions over cases; an empty mask counts as outside every tolerance."""
    def median(key):
        values = [c[key] for c in per_case if c.get(key) is not None]
        return float(np.median(values)) if values else None

    n = len(per_case)
    mean_ratios = [c["mean_ratio"] for c in per_case]
    return {
        "n_cases": n,
        "mean_ratio_median": median("mean_ratio"),
        "mean_within": float(np.mean([r is not None and abs(r - 1) <= MEAN_TOLERANCE for r in mean_ratios])),
        # the distributions, not the pairs: a generator that cannot know the erased tumor's uptake can
        # still match how hot tumors are over the cases
        "mean_suv_of_medians": (median("mean_suv") / median("real_mean_suv")) if median("mean_suv") else None,
        "max_ratio_median": median("max_ratio"),
        "volume_ratio_median": median("volume_ratio"),
        "volume_within": float(np.mean([abs(c["volume_ratio"] - 1) <= VOLUME_TOLERANCE for c in per_case])),
        "one_component": float(np.mean([c["components"] == 1 for c in per_case])),
        "nonempty": float(np.mean([c["volume"] > 0 for c in per_case])),
        "seam_step": float(np.nanmean([c["seam_step"] for c in per_case])),
        "real_seam_step": float(np.nanmean([c["real_seam_step"] for c in per_case])),
        "seconds_per_sample": float(np.mean([c["seconds"] for c in per_case])),
        "failed": sum(1 for c in per_case if c.get("error")),
    }
