"""Boxes on numpy volumes: the one box -> slices, tight box and box mask of the package.

A box is half-open voxel index ranges `(x0, y0, z0, x1, y1, z1)` with `x0 <= x < x1`, like numpy
slices and MONAI bounding boxes (docs/DESIGN.md). Pure numpy, no torch: the CLI's light paths use it.
(`tumorgen.bbox` holds BA-PMG's batched tensor versions for training.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def box_slices(box: Sequence[int]) -> tuple[slice, slice, slice]:
    """A half-open box as numpy slices: `volume[box_slices(box)]` is what lies in it."""
    return tuple(slice(int(a), int(b)) for a, b in zip(box[:3], box[3:]))


def box_mask(shape: Sequence[int], box: Sequence[int]) -> np.ndarray:
    """A uint8 volume of `shape`, 1 inside `box`."""
    mask = np.zeros(tuple(shape), dtype=np.uint8)
    mask[box_slices(box)] = 1
    return mask


def tight_box(mask: np.ndarray, *, margin: int = 0) -> tuple[int, int, int, int, int, int]:
    """The half-open tight box of a non-empty mask's nonzero voxels, grown by `margin` voxels a face and
    clipped to the volume.

    Raises:
        ValueError: the mask is empty.
    """
    mask = np.asarray(mask)
    coords = np.argwhere(mask > 0)  # (V, 3)
    if coords.size == 0:
        raise ValueError("the mask is empty: no box")
    lo = np.maximum(coords.min(axis=0) - margin, 0)
    hi = np.minimum(coords.max(axis=0) + 1 + margin, mask.shape)
    return tuple(int(v) for v in (*lo, *hi))  # type: ignore[return-value]
