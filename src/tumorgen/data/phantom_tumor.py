"""Procedural tumors: irregular, hot, heterogeneous, and wholly inside the organ they grow in.

A plain ellipsoid is the shape a model learns fastest and the one real tumors never have. Here a tumor
is the zero level set of a smooth function: the distance (in units of each lobe's semi-axes) to the
nearest of a few randomly rotated, overlapping ellipsoids, plus smoothly varying noise that dents and
bulges the surface. Its uptake is textured (multiplicative smooth noise), and tumors larger than
about 3 cm get a cooler necrotic core, as large FDG-avid tumors often do. The mask is the tumor's
true extent, clipped to its organ (a tumor touching the chest wall is flattened against it, as a
juxtapleural nodule is).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tumorgen.data.phantom_scanner import smooth_noise

DIAMETER_RANGE_MM = (8.0, 50.0)  # lung nodules and oropharyngeal primaries span about this
SUV_PEAK_RANGE = (4.0, 14.0)  # true peak uptake; the scanner's blur lowers small tumors' SUVmax
# Oropharyngeal primaries sit in warm tissue (tonsils, tongue) and are typically avid: SUVmax 6-20.
SUV_PEAK_RANGE_HEAD_NECK = (6.0, 16.0)
NECROSIS_FROM_MM = 30.0
MIN_DIAMETER_VOXELS = 3.0  # below this a tumor is a handful of voxels, not a shape


@dataclass(frozen=True)
class Tumor:
    """One tumor on the phantom's grid."""

    mask: np.ndarray  # (X, Y, Z) bool, the true extent
    activity: np.ndarray  # (X, Y, Z) true SUV inside the mask, 0 outside
    diameter_mm: float  # the nominal diameter it was drawn with


def grow_tumor(
    *,
    organ: np.ndarray,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    suv_peak_range: tuple[float, float] = SUV_PEAK_RANGE,
) -> Tumor:
    """Draw one tumor inside `organ`.

    Args:
        organ: (X, Y, Z) bool mask of the organ that hosts the tumor.
        spacing: voxel size (mm) per axis.
        rng: the random generator; the only source of randomness.
        suv_peak_range: range of the true peak uptake (SUV) drawn from.
    """
    if not organ.any():
        raise ValueError("the host organ is empty; no tumor can be placed")
    spacing_arr = np.asarray(spacing, dtype=float)
    depth_mm = ndimage.distance_transform_edt(organ, sampling=spacing)
    low = max(DIAMETER_RANGE_MM[0], MIN_DIAMETER_VOXELS * float(spacing_arr.max()))
    high = max(low, min(DIAMETER_RANGE_MM[1], 2.0 * float(depth_mm.max()) / 0.6))
    diameter = float(np.exp(rng.uniform(np.log(low), np.log(high))))  # small tumors are more common
    radius = diameter / 2.0
    # The centre must lie deep enough that most of the tumor fits; the rest is clipped to the organ.
    need = min(0.6 * radius, 0.95 * float(depth_mm.max()))
    candidates = np.argwhere(depth_mm >= need)  # (K, 3)
    center = candidates[rng.integers(len(candidates))]

    half = np.ceil(1.8 * radius / spacing_arr).astype(int) + 1
    lo = np.maximum(center - half, 0)
    hi = np.minimum(center + half + 1, organ.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local_shape = tuple(int(b - a) for a, b in zip(lo, hi))
    coords = [(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, center, spacing_arr)]
    points = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1)  # (x, y, z, 3) mm from centre

    level = _lobe_distance(points, radius, rng)
    surface_noise = smooth_noise(local_shape, np.maximum(0.3 * radius / spacing_arr, 0.8), rng)
    level = level + rng.uniform(0.12, 0.25) * surface_noise
    local = (level < 1.0) & organ[box]
    local = _component_at(local, tuple(int(c - a) for c, a in zip(center, lo)))
    if not local.any():  # the noise ate the centre: fall back to a ball that fits at the centre
        local = (np.linalg.norm(points, axis=-1) <= max(need, float(spacing_arr.max()))) & organ[box]

    local_activity = _uptake(local, diameter, spacing_arr, rng, suv_peak_range)
    mask = np.zeros(organ.shape, bool)
    activity = np.zeros(organ.shape)
    mask[box] = local
    activity[box] = local_activity
    return Tumor(mask=mask, activity=activity, diameter_mm=diameter)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))  # (3, 3) orthogonal, uniformly distributed


def _lobe_distance(points: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised distance to the nearest of 2-4 overlapping ellipsoids (< 1 inside one)."""
    n_lobes = int(rng.integers(2, 5))
    best = np.full(points.shape[:3], np.inf)
    for k in range(n_lobes):
        if k == 0:
            offset, semi = np.zeros(3), radius * rng.uniform(0.75, 1.1, size=3)
        else:
            direction = rng.standard_normal(3)
            offset = 0.55 * radius * direction / np.linalg.norm(direction)
            semi = radius * rng.uniform(0.35, 0.7, size=3)
        local = (points - offset) @ _random_rotation(rng)  # (x, y, z, 3) in the lobe's frame
        best = np.minimum(best, np.sqrt(((local / semi) ** 2).sum(axis=-1)))
    return best


def _component_at(mask: np.ndarray, seed: tuple[int, int, int]) -> np.ndarray:
    """The connected piece of `mask` holding `seed` (or the largest piece if the seed is outside)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    keep = labels[seed]
    if keep == 0:
        keep = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return labels == keep


def _uptake(mask: np.ndarray, diameter: float, spacing: np.ndarray, rng: np.random.Generator,
            suv_peak_range: tuple[float, float]) -> np.ndarray:
    """Textured true SUV inside the tumor, with a cooler necrotic core in large ones."""
    peak = rng.uniform(*suv_peak_range)
    texture = np.exp(0.2 * smooth_noise(mask.shape, np.maximum(4.0 / spacing, 0.7), rng))
    activity = peak * texture / texture[mask].max() if mask.any() else np.zeros(mask.shape)
    if diameter >= NECROSIS_FROM_MM and mask.any():
        depth = ndimage.distance_transform_edt(mask, sampling=tuple(spacing))
        relative = depth / depth.max()  # 0 at the rim, 1 at the deepest point
        core = np.clip((relative - 0.5) / 0.25, 0.0, 1.0)  # smooth ramp into the core
        activity *= 1.0 - core * (1.0 - rng.uniform(0.15, 0.4))
    return np.where(mask, activity, 0.0)
