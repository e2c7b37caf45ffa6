"""DSC and NSD between a segmenter's prediction and a generated mask (the paper's Table 2).

A segmentation network trained on real tumors should find a realistic synthetic tumor where the
generator says it is: high Dice (overlap) and high Normalized Surface Dice (the fraction of both
surfaces within a tolerance of the other, Nikolov et al. 2021). Both come from MONAI (`DiceMetric`,
`SurfaceDiceMetric` with Euclidean distances in mm via the voxel spacing).

Empty masks (MONAI would return NaN or warn): both empty -> 1.0 (the two agree that there is no
tumor), exactly one empty -> 0.0 (one found a tumor, the other none). Both DSC and NSD follow this.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

Spacing = Sequence[float]


def _as_pair(pred: np.ndarray, ref: np.ndarray):
    import torch

    pred, ref = np.asarray(pred) > 0, np.asarray(ref) > 0
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {pred.shape}")
    to_tensor = lambda m: torch.from_numpy(m.astype(np.float32))[None, None]  # (1, 1, X, Y[, Z])
    return pred, ref, to_tensor(pred), to_tensor(ref)


def _empty_convention(pred: np.ndarray, ref: np.ndarray) -> float | None:
    if not pred.any() and not ref.any():
        return 1.0
    if not pred.any() or not ref.any():
        return 0.0
    return None


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient 2|P & R| / (|P| + |R|) of two binary masks (empty: see module doc).

    Args:
        pred: the segmenter's mask, (X, Y, Z) (or 2D), nonzero = tumor.
        ref: the reference (generated) mask, same shape.
    """
    from monai.metrics import DiceMetric

    pred, ref, p, r = _as_pair(pred, ref)
    fixed = _empty_convention(pred, ref)
    if fixed is not None:
        return fixed
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    return float(metric(p, r).item())


def nsd(pred: np.ndarray, ref: np.ndarray, *, tolerance_mm: float, spacing: Spacing | None = None) -> float:
    """Normalized Surface Dice at `tolerance_mm` (empty: see module doc).

    The fraction of surface voxels of each mask that lie within `tolerance_mm` of the other mask's
    surface, with Euclidean distances scaled by the voxel spacing.

    Args:
        pred: the segmenter's mask, (X, Y, Z) (or 2D), nonzero = tumor.
        ref: the reference (generated) mask, same shape.
        tolerance_mm: the distance, in mm, within which a surface point counts as matched.
        spacing: voxel size in mm per axis; None means 1 mm (the tolerance is then in voxels).
    """
    from monai.metrics import SurfaceDiceMetric

    if tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    pred, ref, p, r = _as_pair(pred, ref)
    if spacing is not None and len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} must have one value per axis of shape {pred.shape}")
    fixed = _empty_convention(pred, ref)
    if fixed is not None:
        return fixed
    metric = SurfaceDiceMetric(class_thresholds=[float(tolerance_mm)], include_background=True,
                               distance_metric="euclidean", reduction="none")
    spacing_arg = None if spacing is None else [float(s) for s in spacing]
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own internal use of a deprecated argument of get_mask_edges.
        warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
        return float(metric(p, r, spacing=spacing_arg).item())


def segmentation_table(
    pred_masks: Sequence[np.ndarray],
    gen_masks: Sequence[np.ndarray],
    *,
    tolerance_mm: float,
    spacing: Spacing | Sequence[Spacing] | None = None,
) -> dict:
    """Mean and std of DSC and NSD over cases: {"DSC", "DSC_std", "NSD", "NSD_std", "n", "tolerance_mm"}.

    Args:
        pred_masks: the segmenter's masks, one per synthetic image.
        gen_masks: the generated masks, in the same order and on the same grids.
        tolerance_mm: NSD tolerance.
        spacing: one (sx, sy, sz) for all cases, a list with one per case, or None (1 mm).
    """
    if len(pred_masks) != len(gen_masks) or not pred_masks:
        raise ValueError(f"need equally many predicted and generated masks, got {len(pred_masks)} and {len(gen_masks)}")
    if spacing is None or np.isscalar(spacing[0]):
        spacings = [spacing] * len(pred_masks)
    else:
        spacings = list(spacing)
        if len(spacings) != len(pred_masks):
            raise ValueError(f"got {len(spacings)} spacings for {len(pred_masks)} cases")
    dscs = np.array([dice(p, g) for p, g in zip(pred_masks, gen_masks)])
    nsds = np.array([nsd(p, g, tolerance_mm=tolerance_mm, spacing=s) for p, g, s in zip(pred_masks, gen_masks, spacings)])
    return {"DSC": float(dscs.mean()), "DSC_std": float(dscs.std()), "NSD": float(nsds.mean()),
            "NSD_std": float(nsds.std()), "n": len(dscs), "tolerance_mm": float(tolerance_mm)}
