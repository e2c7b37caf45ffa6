"""One set of tumor measures, used by `evaluate`, the demo's quality numbers and the healthy-subject
placements alike, so they never disagree about the same tumor: its connected components, its
surroundings' noise grain against the scan's, the step across the box faces, and the demo's four
tumor checks (`tumor_check`).

All work on numpy arrays `(X, Y, Z)` and half-open boxes `(x0, y0, z0, x1, y1, z1)`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tumorgen.data.box_geometry import box_slices
from tumorgen.synthesis.blend import BODY_SUV, NOISE_SHELL, NOISE_SIGMA

# 26-connectivity: voxels touching at a corner belong to one tumor (a blob is one component).
CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Voxel counts of the 26-connected components of a binary (X, Y, Z) mask (empty: no entries)."""
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=CONNECTIVITY)
    return np.bincount(labels.ravel(), minlength=count + 1)[1:]


def connected_components(mask: np.ndarray) -> int:
    """Number of 26-connected components of a binary (X, Y, Z) mask."""
    return int(component_sizes(mask).size)


def tumor_check(image: np.ndarray, mask: np.ndarray, box) -> dict:
    """Does a synthetic sample look like a tumor? The demo's four criteria (issue: "the demo shows tumors").

    A sample passes when its mask is not empty, its largest connected component holds >= 90% of it,
    it fills 5-95% of its box, and the mean SUV inside it is >= 2x the median of the box's voxels
    outside it (hotter than what it displaced).
    """
    inside = box_slices(box)
    in_box = mask[inside] > 0
    voxels = int(in_box.sum())
    row = {"nonempty": voxels > 0, "largest_share": 0.0, "box_share": float(in_box.mean()), "contrast": 0.0}
    if voxels:
        sizes = component_sizes(mask)
        row["largest_share"] = float(sizes.max() / sizes.sum())
        around = image[inside][~in_box]
        background = float(np.median(around)) if around.size else 0.0
        row["contrast"] = float(image[mask > 0].mean() / background) if background > 0 else float("inf")
    row["passes"] = bool(row["nonempty"] and row["largest_share"] >= 0.9 and 0.05 <= row["box_share"] <= 0.95
                         and row["contrast"] >= 2.0)
    return row


def noise_inside_vs_outside(image: np.ndarray, mask: np.ndarray, box, *, shell: int = NOISE_SHELL) -> dict:
    """Relative noise (residual sd / sqrt(local SUV)) in the box's tissue against a shell around the box.

    Tumor voxels (dilated by one) and edges of anatomy are left out: there the residual of a
    smoothing is structure, not noise. A ratio near 1 means the generated region has the scan's grain;
    well below 1, a too-smooth pasted region.

    Args:
        image: (X, Y, Z) SUV after synthesis.
        mask: (X, Y, Z) the generated tumor mask.
        box: the half-open box the tumor was generated in.
        shell: width in voxels of the reference shell outside the box.
    """
    image = image.astype(np.float64)
    smooth = ndimage.gaussian_filter(image, NOISE_SIGMA, mode="nearest")
    relative = (image - smooth) / np.sqrt(np.maximum(smooth, BODY_SUV))
    spread = ndimage.maximum_filter(smooth, size=5) - ndimage.minimum_filter(smooth, size=5)
    tissue = (smooth > BODY_SUV) & (spread < 0.5 * smooth)
    tissue &= ~ndimage.binary_dilation(mask > 0, structure=CONNECTIVITY)
    in_box = np.zeros(image.shape, dtype=bool)
    in_box[box_slices(box)] = True
    lo = np.maximum(np.array(box[:3]) - shell, 0)
    hi = np.minimum(np.array(box[3:]) + shell, image.shape)
    around = np.zeros(image.shape, dtype=bool)
    around[box_slices((*lo, *hi))] = True
    inside_sd = robust_sd(relative[tissue & in_box])
    outside_sd = robust_sd(relative[tissue & around & ~in_box])
    ratio = inside_sd / outside_sd if inside_sd is not None and outside_sd else None
    return {"noise_inside": inside_sd, "noise_outside": outside_sd, "noise_ratio": ratio}


def robust_sd(values: np.ndarray) -> float | None:
    """1.4826 * MAD: the sd of Gaussian noise, unmoved by a few structure voxels (None under 32 values)."""
    if values.size < 32:
        return None
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def seam_step(suv: np.ndarray, box) -> float:
    """Mean |inside face layer - layer just outside| over the box faces that are not the volume's edge."""
    steps = []
    for axis in range(3):
        for inner, outer in ((box[axis], box[axis] - 1), (box[axis + 3] - 1, box[axis + 3])):
            if outer < 0 or outer >= suv.shape[axis]:
                continue
            cut = [slice(a, b) for a, b in zip(box[:3], box[3:])]
            cut[axis] = inner
            a = suv[tuple(cut)]
            cut[axis] = outer
            steps.append(np.abs(a - suv[tuple(cut)]).mean())
    return float(np.mean(steps)) if steps else float("nan")
