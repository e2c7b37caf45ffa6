"""MONAI transform chains that bring one scan onto the model's grid, keeping the true affine.

One chain for every layout: orient to RAS, resample to an isotropic spacing (linear for the image,
nearest for the masks), clip and scale SUV to [0, 1], then cut a window of exactly the model's size
centred on a region of interest (lungs, head and neck, the tumor), padding with zeros where the
window leaves the scan. Each step is a MONAI dict transform on MetaTensors, so the affine that comes
out is the cached array's real voxel-to-world map and `prepared.map_to_original` can undo it all.

The spacing is either fixed or chosen per case (`choose_spacing`): the smallest isotropic spacing at
which the region plus a margin fits the grid, never finer than a floor. Real PET crops hold tumors
up to 27 cm across, which no fixed spacing fits into 64^3 without wasting the small ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KEYS = ("image", "mask", "roi")


@dataclass(frozen=True)
class TransformedCase:
    """A case on the model's grid, with what the crop did to its region and its tumor."""

    image: np.ndarray  # float32 (X, Y, Z) in [0, 1]
    mask: np.ndarray  # uint8 (X, Y, Z)
    affine: np.ndarray  # (4, 4) voxel-to-world of both
    spacing: tuple[float, float, float]
    roi_cut: bool  # the region of interest did not fit the window
    tumor_cut: bool  # some tumor voxels fell outside the window


def roi_extent_mm(roi: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The world-axis extent (mm, RAS order) of the box around a region's voxels, whole voxels included."""
    index = np.argwhere(roi)
    if len(index) == 0:
        raise ValueError("the region of interest is empty")
    lo, hi = index.min(axis=0) - 0.5, index.max(axis=0) + 0.5
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1)  # (3, 8)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]  # (3, 8)
    return world.max(axis=1) - world.min(axis=1)


def choose_spacing(extent_mm, size, *, margin_mm: float, floor_mm: float) -> float:
    """The smallest isotropic spacing (mm, rounded up to 0.01) at which extent + 2 margins fits `size`.

    Args:
        extent_mm: the region's extent along the world axes (RAS order), mm.
        size: the grid's size along the same axes, voxels.
        margin_mm: context kept on each side of the region.
        floor_mm: the finest spacing allowed (no finer than the scanner resolves).
    """
    needed = max((float(e) + 2.0 * margin_mm) / int(s) for e, s in zip(extent_mm, size))
    return max(float(floor_mm), math.ceil(needed * 100.0 - 1e-6) / 100.0)


def orient_resample_scale(*, spacing, suv_max: float):
    """The MONAI chain from a raw scan to RAS at `spacing` with SUV scaled to [0, 1]."""
    from monai.transforms import Compose, Orientationd, ScaleIntensityRanged, Spacingd

    return Compose([
        Orientationd(keys=KEYS, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys=KEYS, pixdim=tuple(float(s) for s in spacing), mode=("bilinear", "nearest", "nearest"),
                 padding_mode=("border", "zeros", "zeros")),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=float(suv_max), b_min=0.0, b_max=1.0, clip=True),
    ])


def crop_window(data: dict, *, start, size) -> dict:
    """Cut `size` voxels from `start` (which may lie outside the volume), zero-padding what is missing."""
    from monai.transforms import BorderPadd, SpatialCropd

    shape = np.asarray(data["image"].shape[1:])
    start, size = np.asarray(start, dtype=int), np.asarray(size, dtype=int)
    before = np.maximum(0, -start)
    after = np.maximum(0, start + size - shape)
    if np.any(before) or np.any(after):
        border = [int(v) for pair in zip(before, after) for v in pair]  # (x0, x1, y0, y1, z0, z1)
        data = BorderPadd(keys=KEYS, spatial_border=border, mode="constant")(data)
    begin = start + before
    return SpatialCropd(keys=KEYS, roi_start=begin.tolist(), roi_end=(begin + size).tolist())(data)


def transform_case(image: np.ndarray, mask: np.ndarray, roi: np.ndarray, affine: np.ndarray, *, size,
                   spacing, suv_max: float) -> TransformedCase:
    """Bring one scan onto the model's grid.

    Args:
        image: SUV (X, Y, Z) on the original grid.
        mask: binary tumor mask (X, Y, Z), same grid.
        roi: binary region to centre the window on (X, Y, Z), same grid; empty means the whole scan.
        affine: the original voxel-to-world map (4, 4).
        size: the model grid (X, Y, Z) in voxels.
        spacing: isotropic mm, one number or three.
        suv_max: SUV mapped to 1.
    """
    import torch
    from monai.data import MetaTensor

    spacing = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)
    size = tuple(int(s) for s in size)
    affine_t = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    data = {
        "image": MetaTensor(torch.as_tensor(np.asarray(image, np.float32))[None], affine=affine_t.clone()),  # (1, X, Y, Z)
        "mask": MetaTensor(torch.as_tensor(np.asarray(mask, np.float32))[None], affine=affine_t.clone()),
        "roi": MetaTensor(torch.as_tensor(np.asarray(roi, np.float32))[None], affine=affine_t.clone()),
    }
    data = orient_resample_scale(spacing=spacing, suv_max=suv_max)(data)
    roi_index = np.argwhere(data["roi"][0].numpy() > 0.5)
    shape = np.asarray(data["image"].shape[1:])
    if len(roi_index):
        lo, hi = roi_index.min(axis=0), roi_index.max(axis=0) + 1
    else:
        lo, hi = np.zeros(3, int), shape
    start = np.floor((lo + hi) / 2.0 - np.asarray(size) / 2.0 + 0.5).astype(int)
    roi_cut = bool(np.any(lo < start) or np.any(hi > start + np.asarray(size)))
    tumor_before = int((data["mask"][0] > 0.5).sum())
    data = crop_window(data, start=start, size=size)
    out_mask = (data["mask"][0].numpy() > 0.5).astype(np.uint8)
    out_image = np.clip(data["image"][0].numpy().astype(np.float32), 0.0, 1.0)
    out_affine = np.asarray(data["image"].affine, dtype=np.float64)
    if out_image.shape != size:
        raise AssertionError(f"the chain produced {out_image.shape}, not the model size {size}")
    return TransformedCase(image=out_image, mask=out_mask, affine=out_affine, spacing=spacing, roi_cut=roi_cut,
                           tumor_cut=int(out_mask.sum()) < tumor_before)
