"""The one montage writer: volumes in a grid, three planes each through the tumor, mask contours, box.

Every picture of many tumors in TumorGen is this picture: the demo's (real above synthetic), `evaluate`'s
(a generated set) and the paired protocol's (the real tumor and each method's in the same erased box,
cases side by side). "Pictures first, numbers second" (docs/METHOD.md): one writer keeps them reading
the same way. A panel given its affine is reoriented to RAS and drawn with its voxel spacing's aspect,
as `preview` does; each panel is cut through its tumor's center of mass, or its box's center when the
mask is empty. Drawn on a bare matplotlib `Figure` (no pyplot), like the preview.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from tumorgen.data.box_geometry import box_mask, box_slices
from tumorgen.io.spacing import voxel_spacing
from tumorgen.synthesis.preview import save_figure, to_ras

# (plane, axis held fixed, horizontal axis, vertical axis), in (RAS) voxel axes
PLANES = (("axial", 2, 0, 1), ("coronal", 1, 0, 2), ("sagittal", 0, 1, 2))


@dataclass(frozen=True)
class Panel:
    """One volume of the grid: an image (X, Y, Z), its mask, optionally its box and affine."""

    image: np.ndarray
    mask: np.ndarray
    box: Sequence[int] | None = None  # half-open voxel box, drawn dashed
    affine: np.ndarray | None = None  # given: shown in RAS with the spacing's aspect; None: voxel axes
    contour: str = "red"  # the mask contour's color


@dataclass(frozen=True)
class PanelView:
    """What a panel shows: its (cropped, reoriented) image and mask, box bounds, spacing and center."""

    image: np.ndarray
    mask: np.ndarray
    box: tuple[np.ndarray, np.ndarray] | None  # (lo, hi) in the shown voxel axes
    spacing: np.ndarray  # (3,) mm per shown voxel axis (ones without an affine)
    center: np.ndarray  # (3,) the voxel the three planes go through


def panel_view(panel: Panel, *, crop: float | None = None) -> PanelView:
    """The panel as shown: cropped to its box grown by `crop` x its extent a side, then reoriented to RAS.

    The center is the mask's center of mass (rounded), else the box's center, else the volume's.
    """
    image, mask = np.asarray(panel.image, dtype=np.float32), np.asarray(panel.mask) > 0
    box = None if panel.box is None else np.asarray(panel.box, dtype=int)
    if crop is not None:
        if box is None:
            raise ValueError("a cropped montage needs each panel's box")
        lo, hi = box[:3], box[3:]
        grow = np.ceil(crop * (hi - lo)).astype(int)
        start, stop = np.maximum(lo - grow, 0), np.minimum(hi + grow, image.shape)
        window = box_slices((*start, *stop))
        image, mask, box = image[window], mask[window], np.concatenate([lo - start, hi - start])
    spacing = np.ones(3)
    indicator = None if box is None else box_mask(image.shape, box) > 0
    if panel.affine is not None:
        affine = np.asarray(panel.affine, dtype=np.float64)
        order = np.argsort(_io_axes(affine))
        spacing = voxel_spacing(affine)[order]
        image, mask = to_ras(image, affine), to_ras(mask, affine)
        indicator = None if indicator is None else to_ras(indicator, affine)
    bounds = None
    if indicator is not None and indicator.any():
        where = np.argwhere(indicator)
        bounds = (where.min(axis=0), where.max(axis=0) + 1)
    if mask.any():
        center = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
    elif bounds is not None:
        center = (bounds[0] + bounds[1] - 1) // 2
    else:
        center = np.array(image.shape) // 2
    return PanelView(image=image, mask=mask, box=bounds, spacing=spacing, center=center)


def _io_axes(affine: np.ndarray) -> np.ndarray:
    """For each voxel axis, the RAS axis it runs closest to (what `to_ras` sorts by)."""
    return nib.orientations.io_orientation(affine)[:, 0]


def gray_tops(views: list[list[PanelView]], scale) -> list[list[float]]:
    """The top of the gray scale for each panel, `[row][group]`: a number, one number per row, "shared",
    "column" or "row".

    "column": per column group, the first row's (the reference's) 99th percentile; "row": per row, its
    first panel's (when each row is a case whose scans differ in uptake); "shared": one for all, so
    uptake compares across every panel.
    """
    rows, groups = len(views), len(views[0])
    if isinstance(scale, (list, tuple, np.ndarray)):
        if len(scale) != rows:
            raise ValueError(f"{len(scale)} scale tops for {rows} rows: one per row")
        return [[max(float(top), 1e-6)] * groups for top in scale]
    if not isinstance(scale, str):
        return [[float(scale)] * groups for _ in range(rows)]
    if scale == "column":
        tops = [max(float(np.percentile(views[0][g].image, 99)), 1e-6) for g in range(groups)]
        return [list(tops) for _ in range(rows)]
    if scale == "row":
        return [[max(float(np.percentile(views[r][0].image, 99)), 1e-6)] * groups for r in range(rows)]
    if scale == "shared":
        top = max(max(float(np.percentile(v.image, 99.5)), float(v.image[v.mask].max()) if v.mask.any() else 0.0)
                  for row in views for v in row)
        return [[max(top, 1e-6)] * groups for _ in range(rows)]
    raise ValueError(f"scale must be a number, one per row, 'shared', 'column' or 'row', got {scale!r}")


def write_montage(path: str | Path, rows: Sequence[Sequence[Panel]], *, row_labels: Sequence[str],
                  group_titles: Sequence[str] | None = None, scale: float | str | Sequence[float] = "shared",
                  crop: float | None = None, title: str = "", panel_inches: float = 3.1,
                  colorbar: str | None = "SUV", dpi: int = 90) -> Path:
    """Write the grid as a PNG atomically: one row per `rows` entry, three plane columns per group.

    Args:
        path: the PNG to write.
        rows: equally long lists of panels; panel g of every row belongs to column group g (e.g. a case).
        row_labels: one label per row, left of its first panel.
        group_titles: one title per column group (default: the plane names only).
        scale: the gray scale's top: a number, one number per row, "shared" (one for all), "column" (per
            group, from row 0) or "row" (per row, from its first panel); see `gray_tops`. Where the rows'
            tops differ, each row gets its own colorbar.
        crop: None: whole volumes; a number: each panel cropped to its box grown by that x its extent a side.
        title: a line above the grid.
        panel_inches: the side of one plane's panel.
        colorbar: the colorbar's label, or None for none.
        dpi: the PNG's resolution.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if not rows or not rows[0]:
        raise ValueError("a montage needs at least one panel")
    if len(row_labels) != len(rows) or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError("a montage needs one label per row and the same number of panels in every row")
    views = [[panel_view(panel, crop=crop) for panel in row] for row in rows]
    tops = gray_tops(views, scale)
    groups = len(rows[0])
    figure = Figure(figsize=(panel_inches * 3 * groups + (0.8 if colorbar else 0.2), panel_inches * len(rows) + 0.5),
                    layout="constrained")
    axes = figure.subplots(len(rows), 3 * groups, squeeze=False)
    shown = None
    per_row = len({tuple(row_tops) for row_tops in tops}) > 1
    for r, (row, view_row) in enumerate(zip(rows, views)):
        for g, (panel, view) in enumerate(zip(row, view_row)):
            for p, (plane, fixed, horizontal, vertical) in enumerate(PLANES):
                ax = axes[r, 3 * g + p]
                index = [slice(None)] * 3
                index[fixed] = int(view.center[fixed])
                shown = ax.imshow(view.image[tuple(index)].T, cmap="gray_r", vmin=0.0, vmax=tops[r][g], origin="lower",
                                  aspect=view.spacing[vertical] / view.spacing[horizontal], interpolation="nearest")
                cut = view.mask[tuple(index)].T  # (vertical, horizontal)
                if cut.any() and not cut.all():
                    ax.contour(cut.astype(np.float32), levels=[0.5], colors=panel.contour, linewidths=0.9)
                if view.box is not None:
                    lo, hi = view.box
                    ax.add_patch(Rectangle((lo[horizontal] - 0.5, lo[vertical] - 0.5), hi[horizontal] - lo[horizontal],
                                           hi[vertical] - lo[vertical], fill=False, edgecolor="deepskyblue",
                                           linewidth=0.8, linestyle="--"))
                ax.set_xticks([])
                ax.set_yticks([])
                if g == 0 and p == 0:
                    ax.set_ylabel(row_labels[r], fontsize=8)
                if r == 0:
                    name = plane if group_titles is None else f"{group_titles[g]} {plane[0].upper()}"
                    ax.set_title(name, fontsize=8 if group_titles is None else 7)
        if colorbar and per_row:
            figure.colorbar(shown, ax=axes[r, :].tolist(), shrink=0.9, label=colorbar)
    if colorbar and not per_row:
        figure.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6, label=colorbar)
    return save_figure(figure, path, dpi=dpi, title=title)
