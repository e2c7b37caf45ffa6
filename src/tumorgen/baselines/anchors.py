"""Two anchors for a table of generators: a hot blob and nothing at all.

Neither is a method anyone would use; they bracket the scores. `blob_tumor` is what a generator that
knows only "tumors are hot and roundish" makes; `empty_tumor` is the score of removing the tumor (the
box left as it came in, an empty mask).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from tumorgen.data.box_geometry import box_slices

BLOB_AXIS_FRACTION = 0.4  # blob semi-axes as a fraction of the box extent (0.5 would touch the faces)
BLOB_SIGMA = 1.0  # voxels: smoothing of the blob's profile (about the PET blur)


def blob_tumor(suv: np.ndarray, box: Sequence[int], *, uptake_suv: float) -> tuple[np.ndarray, np.ndarray]:
    """A smoothed hot ellipsoid centred in `box` whose mean SUV in its mask is `uptake_suv`.

    Args:
        suv: (X, Y, Z) the scan in SUV; not modified.
        box: half-open voxel box; the ellipsoid's semi-axes are `BLOB_AXIS_FRACTION` x its extent.
        uptake_suv: the mean SUV inside the mask (background plus blob).

    Returns:
        (suv, mask): the scan with the blob added inside the box, and the ellipsoid as uint8.
    """
    lo, hi = np.array(box[:3]), np.array(box[3:])
    grid = np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi)], indexing="ij"))
    centre = (lo + hi - 1) / 2.0
    radii = np.maximum(BLOB_AXIS_FRACTION * (hi - lo), 0.5)
    inside = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0
    if not inside.any():  # a box one voxel thick: keep the centre voxel
        inside[tuple(((hi - lo) - 1) // 2)] = True
    profile = ndimage.gaussian_filter(inside.astype(np.float64), BLOB_SIGMA, mode="constant")
    background = suv[box_slices(box)].astype(np.float64)
    # Scale the added profile so the mean SUV in the mask (background + blob) is `uptake_suv`.
    amplitude = max(uptake_suv - background[inside].mean(), 0.0) / profile[inside].mean()
    out = np.array(suv, copy=True)
    out[box_slices(box)] = (background + amplitude * profile).astype(out.dtype)
    mask = np.zeros(out.shape, np.uint8)
    mask[box_slices(box)] = inside
    return out, mask


def empty_tumor(suv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scan as it came in and an empty mask."""
    return np.array(suv, copy=True), np.zeros(np.shape(suv), np.uint8)
