"""Cut the model's fixed-size input window out of a raw scan, and map the model's output back.

The model only ever sees volumes on its training grid: `size` voxels at the training `spacing`, in
model range `[0, 1]`. A user's scan has any shape, spacing and orientation, so synthesis works in a
window: a box of the model's grid placed around the user's box, resampled from the scan, and the
model's output is resampled back onto the scan's own grid inside the box only.

The window's axes are the scan's own voxel axes, permuted and flipped into the orientation the
training cache uses (RAS by default, as MONAI's `Orientation` transform leaves it). The map from
window voxels to scan voxels is therefore a signed permutation times a per-axis scale plus a shift:
no rotation, so no interpolation across an oblique direction, even for oblique scans.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from tumorgen.data.intensity import suv_to_model
from tumorgen.io.spacing import voxel_spacing

def window_axes(scan_affine: np.ndarray, axcodes: str | None = "RAS") -> tuple[np.ndarray, np.ndarray]:
    """Which scan axis, and which direction along it, each window axis follows.

    Args:
        scan_affine: the scan's (4, 4) voxel-to-world affine.
        axcodes: the orientation of the training cache ("RAS"), or None to keep the scan's axes.

    Returns:
        `perm` (3,) ints: window axis j runs along scan axis `perm[j]`; `flip` (3,) of +1/-1: whether
        it runs along that axis (+1) or against it (-1).
    """
    if axcodes is None:
        return np.arange(3), np.ones(3, dtype=np.int64)
    target = nib.orientations.axcodes2ornt(tuple(axcodes))
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(scan_affine), target)
    perm = np.zeros(3, dtype=np.int64)
    flip = np.zeros(3, dtype=np.int64)
    for scan_axis, (window_axis, sign) in enumerate(ornt.astype(np.int64)):
        perm[window_axis] = scan_axis
        flip[window_axis] = sign
    return perm, flip


def to_scan_axes(values_on_window_axes, perm: np.ndarray) -> np.ndarray:
    """Reorder a per-axis quantity (a spacing, a size in mm) from window axes to scan axes."""
    values = np.asarray(values_on_window_axes, dtype=np.float64)
    out = np.empty(3, dtype=np.float64)
    out[perm] = values
    return out


@dataclass(frozen=True)
class WindowGrid:
    """The model's window placed in a scan.

    `window_to_scan` maps homogeneous window voxel coordinates to scan voxel coordinates;
    `affine` (= scan affine @ window_to_scan) is the window's own voxel-to-world map.
    """

    window_to_scan: np.ndarray  # (4, 4)
    shape: tuple[int, int, int]
    scan_affine: np.ndarray  # (4, 4)
    scan_shape: tuple[int, int, int]

    @property
    def affine(self) -> np.ndarray:
        return self.scan_affine @ self.window_to_scan

    @property
    def scan_to_window(self) -> np.ndarray:
        return np.linalg.inv(self.window_to_scan)


def place_window(
    *,
    scan_shape,
    scan_affine: np.ndarray,
    box,
    size,
    spacing,
    axcodes: str | None = "RAS",
) -> WindowGrid:
    """Place the model's window around a box: centered on it, shifted to stay inside the scan.

    Args:
        scan_shape: the scan's (X, Y, Z).
        scan_affine: the scan's voxel-to-world affine.
        box: the box in scan voxels, half-open `(x0, y0, z0, x1, y1, z1)`.
        size: the model's grid size per window axis (3 ints).
        spacing: the model's spacing in mm per window axis (3 floats).
        axcodes: the training cache's orientation, or None to keep the scan's axes.
    """
    size = np.asarray(size, dtype=np.int64)
    spacing = np.asarray(spacing, dtype=np.float64)
    scan_shape = np.asarray(scan_shape, dtype=np.int64)
    scan_affine = np.asarray(scan_affine, dtype=np.float64)
    scan_spacing = voxel_spacing(scan_affine)
    perm, flip = window_axes(scan_affine, axcodes)
    lo, hi = np.asarray(box[:3], dtype=np.float64), np.asarray(box[3:], dtype=np.float64)
    center = (lo + hi - 1.0) / 2.0  # box center in scan voxel coordinates
    window_to_scan = np.eye(4)
    for j in range(3):
        i = perm[j]
        step = flip[j] * spacing[j] / scan_spacing[i]  # scan voxels per window voxel, signed
        half_span = abs(step) * (size[j] - 1) / 2.0
        room = (scan_shape[i] - 1) / 2.0
        if half_span <= room:  # the window fits along this axis: keep it inside the scan
            c = float(np.clip(center[i], half_span, scan_shape[i] - 1 - half_span))
        else:  # it cannot fit: center it on the scan, which still holds the whole box
            c = room
        window_to_scan[i, :] = 0.0
        window_to_scan[i, j] = step
        window_to_scan[i, 3] = c - step * (size[j] - 1) / 2.0
    return WindowGrid(
        window_to_scan=window_to_scan,
        shape=tuple(int(s) for s in size),
        scan_affine=scan_affine,
        scan_shape=tuple(int(s) for s in scan_shape),
    )


def scan_to_window_values(array: np.ndarray, grid: WindowGrid, *, order: int = 1, fill: float = 0.0,
                          mode: str = "constant") -> np.ndarray:
    """Resample a scan-grid array into the window (linear by default).

    Outside the scan: `fill` with mode "constant", the nearest scan voxel with mode "nearest" (box
    windows, whose context may reach past a tight crop: a band of zeros would be an edge the model
    never sees inside a body).
    """
    matrix = grid.window_to_scan
    out = ndimage.affine_transform(
        np.asarray(array, dtype=np.float32),
        matrix[:3, :3],
        offset=matrix[:3, 3],
        output_shape=grid.shape,
        order=order,
        mode=mode,
        cval=fill,
    )
    return out.astype(np.float32)


def window_to_scan_values(values: np.ndarray, grid: WindowGrid, *, region=None, order: int = 1) -> np.ndarray:
    """Resample a window-grid array back onto the scan's grid, over `region` only.

    Args:
        values: (Sx, Sy, Sz) array on the window grid.
        grid: the window's placement.
        region: a half-open box in scan voxels (default: the whole scan); the result has its shape.
        order: 1 (linear) for images and probabilities, 0 (nearest) for labels.
    """
    if region is None:
        region = (0, 0, 0, *grid.scan_shape)
    lo = np.asarray(region[:3], dtype=np.float64)
    shape = tuple(int(b - a) for a, b in zip(region[:3], region[3:]))
    matrix = grid.scan_to_window
    out = ndimage.affine_transform(
        np.asarray(values, dtype=np.float32),
        matrix[:3, :3],
        offset=matrix[:3, :3] @ lo + matrix[:3, 3],  # region voxel p is scan voxel p + lo
        output_shape=shape,
        order=order,
        mode="nearest",  # the box lies inside the window; this only guards rounding at its faces
    )
    return out.astype(np.float32)


def box_in_window(box, grid: WindowGrid, *, latent_factor: int) -> tuple[int, ...]:
    """The window voxels covering a scan box, snapped outward to multiples of the VAE's `latent_factor`
    (a box edge between two latent voxels would cut one in two; the model's data.json records f).

    The box covers scan voxels `x0 .. x1-1`, i.e. the continuous range `[x0 - 0.5, x1 - 0.5]`; every
    window voxel whose center falls in it (or touches it) is included, then the faces move outward to
    the latent grid and are clipped to the window.
    """
    lo = np.asarray(box[:3], dtype=np.float64) - 0.5
    hi = np.asarray(box[3:], dtype=np.float64) - 0.5
    corners = np.array([[*corner, 1.0] for corner in itertools.product(*zip(lo, hi))])  # (8, 4)
    in_window = (grid.scan_to_window @ corners.T).T[:, :3]  # (8, 3)
    first = np.floor(in_window.min(axis=0) + 0.5 + 1e-6)
    last = np.ceil(in_window.max(axis=0) - 0.5 - 1e-6)
    start = np.floor(first / latent_factor) * latent_factor
    stop = np.ceil((last + 1) / latent_factor) * latent_factor
    size = np.asarray(grid.shape)
    start = np.clip(start, 0, size).astype(int)
    stop = np.clip(stop, 0, size).astype(int)
    return tuple(int(v) for v in (*start, *stop))


def box_window_spacing(box, scan_affine: np.ndarray, *, fill: int, axcodes: str | None = "RAS",
                       max_aspect: float = 3.0) -> tuple[float, float, float]:
    """Window spacing (mm, per window axis) at which the box spans `fill` window voxels on each axis.

    A box-normalised model (`data.window = "box"`) sees every box, 8 mm or 30 cm, at the same share
    of its window: the spacing follows the box, so no box is too large or too small for the model.
    Each axis is scaled on its own (sarcomas are long along the limb: 16 x 19 x 43 voxels is typical),
    so the tumor gets the whole grid, but never stretched more than `max_aspect` times relative to the
    box's longest side (a flat box would otherwise become a grid of smeared voxels).
    """
    scan_spacing = voxel_spacing(scan_affine)
    extent = (np.asarray(box[3:], dtype=np.float64) - np.asarray(box[:3], dtype=np.float64)) * scan_spacing
    extent = np.maximum(extent, max(extent.max(), 1e-3) / max_aspect)  # per scan axis, mm
    perm, _ = window_axes(scan_affine, axcodes)
    return tuple(float(extent[perm[j]] / fill) for j in range(3))


def cut_window(
    suv: np.ndarray,
    scan_affine: np.ndarray,
    box,
    *,
    size,
    spacing,
    suv_max: float,
    axcodes: str | None = "RAS",
    intensity: str = "linear",
    latent_factor: int,
    edge: str = "constant",
) -> tuple[np.ndarray, WindowGrid, tuple[int, ...]]:
    """The model's input for one box: the window image in model range, its grid, the box in it.

    Args:
        suv: the scan in SUV, (X, Y, Z).
        scan_affine: its voxel-to-world affine.
        box: half-open box in scan voxels.
        size, spacing: the model's grid (per window axis).
        suv_max: the training value range's top (DESIGN.md).
        axcodes: the training cache's orientation.
        intensity: the model's intensity scale (`tumorgen.data.intensity`).
        latent_factor: the VAE's f; the box in the window is snapped outward to multiples of it.
        edge: "constant" (zeros) or "nearest" outside the scan.
    """
    grid = place_window(scan_shape=suv.shape, scan_affine=scan_affine, box=box, size=size, spacing=spacing, axcodes=axcodes)
    window = suv_to_model(scan_to_window_values(suv, grid, order=1, fill=0.0, mode=edge), suv_max=suv_max,
                          kind=intensity)
    return window, grid, box_in_window(box, grid, latent_factor=latent_factor)
