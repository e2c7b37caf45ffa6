"""A PNG to look at first: three planes through the tumor, its mask contour, the box, an SUV bar.

"Pictures first, numbers second" (docs/METHOD.md). The volume is reoriented to the closest RAS axes before
slicing so every preview reads the same way whatever the scan's voxel order, and each panel's aspect
follows the voxel spacing so anisotropic scans are not stretched.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from tumorgen.data.box_geometry import box_slices
from tumorgen.io.atomic import atomic_path
from tumorgen.io.spacing import voxel_spacing


def to_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """An (X, Y, Z) array reoriented to RAS voxel axes through its affine, so every figure faces one way."""
    return nib.orientations.apply_orientation(array, nib.orientations.io_orientation(affine))


def save_figure(figure, path: str | Path, *, dpi: int, title: str = "") -> Path:
    """Title a matplotlib figure, write it as a PNG atomically and close it."""
    if title:
        figure.suptitle(title, fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    if getattr(figure.canvas, "manager", None) is not None:  # made by pyplot: let it forget the figure
        import matplotlib.pyplot as plt

        plt.close(figure)
    return path


def _bounds(indicator: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    where = np.argwhere(indicator)
    return where.min(axis=0), where.max(axis=0) + 1


def write_preview(
    path: str | Path,
    *,
    image: np.ndarray,
    mask: np.ndarray,
    box,
    affine: np.ndarray,
    title: str = "",
) -> Path:
    """Write the three-plane preview PNG atomically.

    Args:
        path: the PNG to write.
        image: (X, Y, Z) SUV.
        mask: (X, Y, Z) binary tumor mask.
        box: half-open box in the image's voxels.
        affine: the image's voxel-to-world affine (for orientation and spacing).
        title: a line above the panels.
    """
    # a bare Figure, not pyplot: importing pyplot costs ~0.2 s of every `synthesize` call, and files need no GUI
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    box_indicator = np.zeros(image.shape, dtype=bool)
    box_indicator[box_slices(box)] = True
    ornt = nib.orientations.io_orientation(affine)
    image_ras = to_ras(image, affine)
    mask_ras = to_ras(mask > 0, affine)
    box_ras = to_ras(box_indicator, affine)
    spacing = voxel_spacing(affine)[np.argsort(ornt[:, 0])]  # RAS axis order
    box_lo, box_hi = _bounds(box_ras)
    if mask_ras.any():
        center = np.round(np.argwhere(mask_ras).mean(axis=0)).astype(int)
    else:
        center = (box_lo + box_hi - 1) // 2
    inside = image_ras[mask_ras]
    vmax = max(float(np.percentile(image_ras, 99.5)), float(inside.max()) if inside.size else 0.0, 1e-6)

    # (plane name, axis held fixed, horizontal axis, vertical axis)
    planes = (("axial", 2, 0, 1), ("coronal", 1, 0, 2), ("sagittal", 0, 1, 2))
    figure = Figure(figsize=(13, 4.6), layout="constrained")
    axes = figure.subplots(1, 3)
    shown = None
    for ax, (name, fixed, horizontal, vertical) in zip(axes, planes):
        index = [slice(None)] * 3
        index[fixed] = int(center[fixed])
        plane = image_ras[tuple(index)].T  # (vertical, horizontal) for imshow
        plane_mask = mask_ras[tuple(index)].T
        shown = ax.imshow(plane, cmap="gray_r", vmin=0.0, vmax=vmax, origin="lower",
                          aspect=spacing[vertical] / spacing[horizontal], interpolation="nearest")
        if plane_mask.any() and not plane_mask.all():
            ax.contour(plane_mask.astype(np.float32), levels=[0.5], colors="red", linewidths=1.0)
        ax.add_patch(Rectangle((box_lo[horizontal] - 0.5, box_lo[vertical] - 0.5),
                               box_hi[horizontal] - box_lo[horizontal], box_hi[vertical] - box_lo[vertical],
                               fill=False, edgecolor="deepskyblue", linewidth=1.0, linestyle="--"))
        ax.set_title(f"{name} {'xyz'[fixed]}={int(center[fixed])} (RAS voxels)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.colorbar(shown, ax=list(axes), shrink=0.85, label="SUV")
    return save_figure(figure, path, dpi=100, title=title)
