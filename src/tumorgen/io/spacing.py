"""Voxel spacing from an affine, written once: (3,) mm per voxel along the array's own axes.

Why a file of its own: every part that measures in millimetres (windows, boxes, montages, volumes,
radiomics, placement checks) needs it, and it had been written out in a dozen places.
"""

from __future__ import annotations

import numpy as np


def voxel_spacing(affine) -> np.ndarray:
    """(3,) float64 mm per voxel along array axes i, j, k: the column norms of the affine's 3x3 part."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
