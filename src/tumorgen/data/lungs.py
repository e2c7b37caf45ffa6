"""Find the lungs on a CT volume, well enough to crop to them and to place tumors in them.

The paper segments lungs with TotalSegmentator; that is a large network we cannot ship, and the crop
and the placement need only a plausible lung region. Lungs are the largest air-filled structures
inside the body: threshold the CT, keep what the body encloses, keep the one or two largest pieces
and close the holes vessels and nodules leave. A folder of given lung masks overrides this
(`prepare --lung-masks`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

AIR_HU = -400.0  # lung parenchyma is about -850 HU, soft tissue above -100: -400 separates them
BODY_HU = -500.0  # the body outline: anything denser than this is tissue, not air
MIN_LUNG_ML = 30.0  # smaller air pockets (bowel gas, the trachea alone) are not a lung
SECOND_LUNG_FRACTION = 0.1  # a second piece is a lung only if at least this fraction of the first
CLOSING_MM = 6.0  # closes the gaps vessels leave at the lung boundary


def find_lungs(ct_hu: np.ndarray, spacing) -> np.ndarray:
    """Return a uint8 lung mask (X, Y, Z) for a CT volume in Hounsfield units; all zeros if none.

    Args:
        ct_hu: the CT volume in HU, (X, Y, Z), Z the body's long axis.
        spacing: voxel size in mm (sx, sy, sz), to measure volumes and the closing radius.
    """
    ct_hu = np.asarray(ct_hu, dtype=np.float32)
    if ct_hu.ndim != 3:
        raise ValueError(f"ct_hu must be 3D (X, Y, Z), got shape {ct_hu.shape}")
    spacing = np.asarray(spacing, dtype=np.float64)
    body = _body_mask(ct_hu)
    air = (ct_hu < AIR_HU) & body
    labels, count = ndimage.label(air)
    if count == 0:
        return np.zeros(ct_hu.shape, np.uint8)
    touching = _labels_on_border(labels, axes=(0, 1))  # air reaching the sides is outside the body
    sizes = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float64)
    sizes[0] = 0
    sizes[touching] = 0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    order = np.argsort(sizes)[::-1]
    keep = [int(order[0])] if sizes[order[0]] * voxel_ml >= MIN_LUNG_ML else []
    if keep and count > 1:
        second = int(order[1])
        if sizes[second] * voxel_ml >= MIN_LUNG_ML and sizes[second] >= SECOND_LUNG_FRACTION * sizes[keep[0]]:
            keep.append(second)
    lungs = np.isin(labels, keep)
    if not lungs.any():
        return np.zeros(ct_hu.shape, np.uint8)
    radius = np.maximum(1, np.round(CLOSING_MM / spacing)).astype(int)
    lungs = ndimage.binary_closing(lungs, structure=_ellipsoid(radius), iterations=1, border_value=0)
    lungs = _fill_holes_per_slice(lungs)
    return lungs.astype(np.uint8)


def _body_mask(ct_hu: np.ndarray) -> np.ndarray:
    """The largest dense component, with its enclosed air filled slice by slice."""
    labels, count = ndimage.label(ct_hu > BODY_HU)
    if count == 0:
        return np.zeros(ct_hu.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return _fill_holes_per_slice(labels == int(np.argmax(sizes)))


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice: in 3D the airway would connect lung holes to the outside."""
    out = np.empty_like(mask)
    for z in range(mask.shape[2]):
        out[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    return out


def _labels_on_border(labels: np.ndarray, *, axes) -> np.ndarray:
    faces = []
    for axis in axes:
        faces.append(np.take(labels, 0, axis=axis).ravel())
        faces.append(np.take(labels, -1, axis=axis).ravel())
    found = np.unique(np.concatenate(faces))
    return found[found > 0]


def _ellipsoid(radius) -> np.ndarray:
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    return sum((g / max(r, 1)) ** 2 for g, r in zip(grid, radius)) <= 1.0
