"""Where a tumor goes: a user's box checked against the scan and the model, or one sampled.

A box is a half-open range of the input scan's voxel indices `(x0, y0, z0, x1, y1, z1)`, like a
numpy slice (DESIGN.md), on the axes of nibabel's array: (X, Y, Z) = the NIfTI's (i, j, k). That is the
reverse of SimpleITK's `GetArrayFromImage` and nnU-Net's numpy arrays, which are (Z, Y, X). A box the
model cannot honour is refused with one sentence naming the scan: outside it, empty, thinner than one
latent voxel (the model cannot place anything smaller), or larger than the model's window (the model
never sees beyond it).

A box can also be given in world mm (`box_from_world`), which has no axis-order question: a center in
the NIfTI's RAS+ scanner space (what `affine @ [i, j, k, 1]` gives) and a size along the scan's voxel
axes, turned into the smallest voxel box that contains it.

Without a box, one is sampled (docs/METHOD.md section 5): a center drawn uniformly from the voxels of a
region (an organ mask; else the lungs found on the CT; else the body) and a size drawn from the
training boxes' sizes in mm, so sampled tumors have the sizes the model learned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from tumorgen.data.window import to_scan_axes, window_axes
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.nifti import Volume, check_same_grid, load_volume
from tumorgen.io.spacing import voxel_spacing

Box = tuple[int, int, int, int, int, int]

# Voxels above this SUV count as body when nothing better is known: air and the scanner bed sit near
# 0, the least active tissue (lung, fat) at about 0.2-0.5 SUV.
BODY_SUV_THRESHOLD = 0.1


def parse_box(values: Sequence, *, path: str | Path) -> Box:
    """Six integers from the command line (or a list) as a box; anything else is refused."""
    if len(values) != 6:
        raise fail_on(path, f"a box needs 6 numbers X0 Y0 Z0 X1 Y1 Z1, got {len(values)}")
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise fail_on(path, f"box {' '.join(str(v) for v in values)} is not six integers") from None
    if not all(n.is_integer() for n in numbers):
        raise fail_on(path, f"box {' '.join(str(v) for v in values)} is not six integers (voxel indices)")
    return tuple(int(n) for n in numbers)  # type: ignore[return-value]


def parse_mm(values: Sequence, *, flag: str, positive: bool = False) -> np.ndarray:
    """Three numbers in mm from the command line (or a list) as a (3,) float array.

    Args:
        values: what the user gave.
        flag: how the error names them, e.g. "--center-mm".
        positive: refuse zero and negative values (sizes).
    """
    text = " ".join(str(v) for v in values)
    try:
        numbers = np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise TumorGenError(f"{flag} {text} is not three numbers in mm") from None
    if numbers.shape != (3,) or not np.all(np.isfinite(numbers)):
        raise TumorGenError(f"{flag} {text} is not three finite numbers in mm")
    if positive and np.any(numbers <= 0):
        raise TumorGenError(f"{flag} {text} must be three sizes in mm above 0")
    return numbers


def box_from_world(center_mm: Sequence[float], size_mm: Sequence[float], *, affine: np.ndarray,
                   shape: Sequence[int], path: str | Path) -> Box:
    """The voxel box that covers a box given in world mm, clipped to the scan.

    Voxel i spans the indices i - 0.5 .. i + 0.5 (its center is at i). The result holds every voxel
    the mm box overlaps, so a box centered on a voxel center with an even number of voxels in
    its size gets one voxel more than the size (8 mm at 2 mm spacing: 5 voxels); centered on a voxel
    border it gets exactly the size (4 voxels). The part outside the scan is cut off; a center
    outside the scan is refused.

    Args:
        center_mm: (3,) the center in world mm, in the NIfTI's RAS+ scanner space: what
            `affine @ [i, j, k, 1]` gives (nibabel's convention; 3D Slicer shows these; DICOM and
            SimpleITK physical points are LPS, i.e. x and y negated).
        size_mm: (3,) the box's extent in mm along the scan's voxel axes i, j, k (for an oblique scan
            these are not the R, A, S directions).
        affine: (4, 4) the scan's voxel-to-world map.
        shape: the scan's (X, Y, Z).
        path: the scan, named in errors.

    Returns:
        (x0, y0, z0, x1, y1, z1), half-open, in nibabel's (X, Y, Z) voxel order.
    """
    center = parse_mm(center_mm, flag="box center")
    size = parse_mm(size_mm, flag="box size", positive=True)
    affine = np.asarray(affine, dtype=np.float64)
    shape = np.asarray(shape, dtype=np.int64)
    center_vox = np.linalg.solve(affine[:3, :3], center - affine[:3, 3])  # (3,) continuous voxel index
    spacing = voxel_spacing(affine)  # mm per voxel along i, j, k
    half = size / spacing / 2.0  # (3,) half-size in voxels
    shown = ", ".join(f"{v:g}" for v in center)
    if np.any(center_vox < -0.5) or np.any(center_vox > shape - 0.5):
        index = ", ".join(f"{v:.1f}" for v in center_vox)
        raise fail_on(path, f"the box centered at ({shown}) mm lies outside the scan: that point is at voxel "
                            f"({index}) of a {tuple(int(s) for s in shape)} grid")
    # A voxel belongs when it overlaps the box by more than rounding noise (not when it only touches it).
    eps = 1e-6
    lo = np.floor(center_vox - half - 0.5 + eps).astype(np.int64) + 1
    hi = np.ceil(center_vox + half + 0.5 - eps).astype(np.int64)
    hi = np.maximum(hi, lo + 1)  # a size far below one voxel still covers the voxel it sits in
    lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
    if np.any(hi <= lo):  # only a center on the scan's very border with a vanishing size gets here
        raise fail_on(path, f"the box centered at ({shown}) mm has no voxel inside the scan")
    return tuple(int(v) for v in (*lo, *hi))  # type: ignore[return-value]


def model_limits_on_scan(scan_affine: np.ndarray, *, size, spacing, latent_factor: int,
                         axcodes: str | None = "RAS"):
    """The model's latent voxel (`latent_factor` window voxels) and window extents in mm, on the scan's axes.

    Returns:
        (latent_mm, window_mm): two (3,) arrays, per scan axis.
    """
    perm, _ = window_axes(scan_affine, axcodes)
    spacing_on_scan = to_scan_axes(spacing, perm)
    size_on_scan = to_scan_axes(size, perm)
    return latent_factor * spacing_on_scan, size_on_scan * spacing_on_scan


def check_box(box: Sequence[int], *, scan: Volume, size, spacing, latent_factor: int,
              axcodes: str | None = "RAS") -> Box:
    """Refuse a box the scan or the model cannot hold; return it as a tuple of ints.

    Args:
        box: half-open box in the scan's voxels.
        scan: the input scan (its shape, affine and path are used).
        size, spacing: the model's grid (per model axis).
        latent_factor: the model's VAE factor f (a box spans at least one latent voxel).
        axcodes: the model's orientation (to match model axes with scan axes).
    """
    box = parse_box(box, path=scan.path)
    lo, hi = np.array(box[:3]), np.array(box[3:])
    shape = np.array(scan.array.shape)
    text = " ".join(str(v) for v in box)
    if np.any(hi <= lo):
        raise fail_on(scan.path, f"box {text} is empty or inverted (each X1 must exceed X0)")
    if np.any(lo < 0) or np.any(hi > shape):
        raise fail_on(scan.path, f"box {text} lies outside the scan's {tuple(int(s) for s in shape)} voxels")
    extent_mm = (hi - lo) * np.asarray(scan.spacing)
    latent_mm, window_mm = model_limits_on_scan(scan.affine, size=size, spacing=spacing,
                                                latent_factor=latent_factor, axcodes=axcodes)
    if np.any(extent_mm < latent_mm - 1e-6):
        axis = int(np.argmax(latent_mm - extent_mm))
        raise fail_on(
            scan.path,
            f"box {text} is {extent_mm[axis]:.1f} mm along axis {axis}, smaller than one latent voxel of the model "
            f"({latent_mm[axis]:.1f} mm)",
        )
    if np.any(extent_mm > window_mm + 1e-6):
        axis = int(np.argmax(extent_mm - window_mm))
        raise fail_on(
            scan.path,
            f"box {text} is {extent_mm[axis]:.1f} mm along axis {axis}, larger than the model's window "
            f"({window_mm[axis]:.1f} mm)",
        )
    return box


def body_mask(suv: np.ndarray, *, threshold: float = BODY_SUV_THRESHOLD) -> np.ndarray:
    """The largest connected region above a small SUV: the patient, without the bed or stray noise."""
    above = suv > threshold
    labels, count = ndimage.label(above)
    if count == 0:
        return np.ones(suv.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def autopet_ct_beside(scan_path: Path) -> Path | None:
    """AutoPET keeps the CT resampled to the PET grid as CTres.nii.gz beside SUV.nii.gz."""
    if scan_path.name != "SUV.nii.gz":
        return None
    ct = scan_path.with_name("CTres.nii.gz")
    return ct if ct.is_file() else None


def sampling_region(
    scan: Volume,
    *,
    organ_mask: Volume | None = None,
    ct: Volume | None = None,
    find_lungs: Callable | None = None,
) -> tuple[np.ndarray, str]:
    """The voxels a sampled box center may fall on, and what they are ("organ", "lungs", "body").

    Args:
        scan: the input scan (SUV).
        organ_mask: a mask on the scan's grid; its voxels win over everything else.
        ct: a CT in HU on the scan's grid; if None, CTres.nii.gz beside an AutoPET SUV.nii.gz is used.
        find_lungs: `(ct_hu, spacing) -> uint8 mask`; default `tumorgen.data.lungs.find_lungs`.
    """
    if organ_mask is not None:
        check_same_grid(scan, organ_mask)
        region = organ_mask.array > 0
        if not region.any():
            raise fail_on(organ_mask.path, "the organ mask is empty; there is nowhere to place a tumor")
        return region, "organ"
    if ct is None:
        beside = autopet_ct_beside(scan.path)
        ct = load_volume(beside) if beside is not None else None
    if ct is not None:
        check_same_grid(scan, ct)
        if find_lungs is None:
            from tumorgen.data.lungs import find_lungs
        lungs = np.asarray(find_lungs(ct.array, ct.spacing)) > 0
        if lungs.any():
            return lungs, "lungs"
    return body_mask(scan.array), "body"


def sample_box(
    *,
    rng: np.random.Generator,
    region: np.ndarray,
    scan: Volume,
    box_sizes_mm: Sequence[Sequence[float]],
    size,
    spacing,
    latent_factor: int,
    axcodes: str | None = "RAS",
) -> Box:
    """Draw one box: center uniform over `region`'s voxels, size one of the training boxes'.

    The size (in mm, on the model's axes) becomes scan voxels, is kept between one latent voxel and
    the model's window, and the box is shifted (then clipped) to lie inside the scan.

    Args:
        rng: a seeded generator; the only source of randomness.
        region: (X, Y, Z) bool, where the center may fall (see `sampling_region`).
        scan: the input scan.
        box_sizes_mm: training box sizes, (N, 3) in mm on the model's axes (RUN/data.json).
        size, spacing: the model's grid.
        latent_factor: the model's VAE factor f.
        axcodes: the model's orientation.
    """
    sizes = np.asarray(box_sizes_mm, dtype=np.float64).reshape(-1, 3)  # (N, 3)
    if len(sizes) == 0:
        raise TumorGenError("the model has no training box sizes (data.json: box_sizes_mm); pass --box instead")
    centers = np.flatnonzero(region)
    if centers.size == 0:
        raise fail_on(scan.path, "the region to place a tumor in is empty")
    center = np.array(np.unravel_index(centers[rng.integers(centers.size)], region.shape))
    perm, _ = window_axes(scan.affine, axcodes)
    size_mm = to_scan_axes(sizes[rng.integers(len(sizes))], perm)
    scan_spacing = np.asarray(scan.spacing)
    latent_mm, window_mm = model_limits_on_scan(scan.affine, size=size, spacing=spacing,
                                                latent_factor=latent_factor, axcodes=axcodes)
    lo_vox = np.ceil(latent_mm / scan_spacing - 1e-6)
    hi_vox = np.floor(window_mm / scan_spacing + 1e-6)
    extent = np.clip(np.round(size_mm / scan_spacing), lo_vox, hi_vox)
    shape = np.asarray(region.shape)
    extent = np.minimum(extent, shape).astype(np.int64)
    start = np.clip(center - extent // 2, 0, shape - extent)
    return tuple(int(v) for v in (*start, *(start + extent)))  # type: ignore[return-value]
