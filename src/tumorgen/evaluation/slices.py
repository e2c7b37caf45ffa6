"""Which 2D slices of a 3D volume FID looks at.

The paper computes FID on the middle axial, sagittal and coronal slices of each volume. The middle
slice can miss a small tumor entirely, so we also take slices through the tumor: through its center
of mass, or several spread evenly across its extent.

Arrays are (X, Y, Z) in NIfTI voxel order (RAS-like): an axial slice fixes z and is (X, Y), a
sagittal slice fixes x and is (Y, Z), a coronal slice fixes y and is (X, Z).
"""

from __future__ import annotations

import numpy as np

PLANES = ("axial", "sagittal", "coronal")
PLANE_AXIS = {"axial": 2, "sagittal": 0, "coronal": 1}  # the axis a plane's slices hold fixed


def to_unit_range(volume: np.ndarray, *, suv_max: float | None = None) -> np.ndarray:
    """Intensities for the feature network, in [0, 1].

    Args:
        volume: a 3D array, either already in model range [0, 1] (`suv_max=None`) or in SUV.
        suv_max: when given, the volume is SUV and becomes clip(SUV, 0, suv_max) / suv_max, the same
            mapping as the PREP cache.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if suv_max is None:
        return np.clip(volume, 0.0, 1.0)
    if suv_max <= 0:
        raise ValueError(f"suv_max must be > 0, got {suv_max}")
    return np.clip(volume, 0.0, suv_max) / np.float32(suv_max)


def _check_volume(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D (X, Y, Z) volume, got shape {volume.shape}")
    return volume


def _take(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    return np.take(volume, int(index), axis=PLANE_AXIS[plane])


def middle_slices(volume: np.ndarray, *, suv_max: float | None = None) -> dict[str, np.ndarray]:
    """The middle slice in each plane: {"axial": (X, Y), "sagittal": (Y, Z), "coronal": (X, Z)}.

    Args:
        volume: (X, Y, Z) volume, in [0, 1] or in SUV (see `to_unit_range`).
        suv_max: None for model-range volumes, else the SUV that maps to 1.
    """
    volume = to_unit_range(_check_volume(volume), suv_max=suv_max)
    return {plane: _take(volume, plane, volume.shape[PLANE_AXIS[plane]] // 2) for plane in PLANES}


def tumor_slice_indices(mask: np.ndarray, *, n_per_plane: int = 1) -> dict[str, list[int]]:
    """Slice indices through the tumor for each plane.

    With one slice per plane, the slice through the mask's center of mass (rounded); with n > 1, n
    indices spread evenly from the tumor's first to its last slice along that axis (repeats allowed
    when the tumor is thinner than n slices).

    Args:
        mask: (X, Y, Z) binary mask; must not be empty.
        n_per_plane: slices per plane.
    """
    mask = _check_volume(mask) > 0
    if n_per_plane < 1:
        raise ValueError(f"n_per_plane must be >= 1, got {n_per_plane}")
    if not mask.any():
        raise ValueError("the tumor mask is empty; tumor-center slices need a tumor")
    coords = np.argwhere(mask)  # (V, 3)
    indices = {}
    for plane in PLANES:
        axis_coords = coords[:, PLANE_AXIS[plane]]
        if n_per_plane == 1:
            indices[plane] = [int(np.round(axis_coords.mean()))]
        else:
            spread = np.linspace(axis_coords.min(), axis_coords.max(), n_per_plane)
            indices[plane] = [int(i) for i in np.round(spread)]
    return indices


def tumor_center_slices(
    volume: np.ndarray, mask: np.ndarray, *, n_per_plane: int = 1, suv_max: float | None = None
) -> dict[str, np.ndarray]:
    """Slices through the tumor: {"axial": (n, X, Y), "sagittal": (n, Y, Z), "coronal": (n, X, Z)}.

    Args:
        volume: (X, Y, Z) volume, in [0, 1] or in SUV (see `to_unit_range`).
        mask: (X, Y, Z) tumor mask on the same grid; must not be empty.
        n_per_plane: slices per plane (see `tumor_slice_indices`).
        suv_max: None for model-range volumes, else the SUV that maps to 1.
    """
    volume = to_unit_range(_check_volume(volume), suv_max=suv_max)
    if np.shape(mask) != volume.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from volume shape {volume.shape}")
    indices = tumor_slice_indices(mask, n_per_plane=n_per_plane)
    return {plane: np.stack([_take(volume, plane, i) for i in indices[plane]]) for plane in PLANES}
