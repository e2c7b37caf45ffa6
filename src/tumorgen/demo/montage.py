"""The demo's picture: real phantom tumors above synthetic ones, three planes each, mask contours on.

"Pictures first, numbers second" (docs/METHOD.md): the first thing to judge is whether a synthetic tumor
sits in the lung like a real one, with a plausible shape, uptake and noise. Every row is reoriented
to RAS and cut through its tumor's center (the box center when the mask is empty), and all rows
share one SUV scale so uptake compares across them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from tumorgen.data.box_geometry import box_slices  # noqa: E402
from tumorgen.synthesis.preview import save_figure, to_ras  # noqa: E402

REAL_ROWS = 3
SYNTHETIC_ROWS = 4
# (plane, axis held fixed, horizontal axis, vertical axis), in RAS voxel axes
PLANES = (("axial", 2, 0, 1), ("coronal", 1, 0, 2), ("sagittal", 0, 1, 2))


def write_montage(path: str | Path, rows: list[dict], *, title: str = "") -> Path:
    """Write a (rows x 3) PNG atomically.

    Args:
        path: the PNG to write.
        rows: dicts with "label", "image" (X, Y, Z) SUV, "mask" (X, Y, Z), "affine" (4, 4) and "box"
            (half-open voxel box, or None for real tumors).
        title: a line above the grid.
    """
    if not rows:
        raise ValueError("a montage needs at least one row")
    vmax = max(float(np.percentile(r["image"], 99.5)) for r in rows)
    vmax = max(vmax, max(float(r["image"][r["mask"] > 0].max()) if r["mask"].any() else 0.0 for r in rows), 1e-6)
    figure, axes = plt.subplots(len(rows), 3, figsize=(9.5, 3.1 * len(rows)), squeeze=False, constrained_layout=True)
    shown = None
    for ax_row, row in zip(axes, rows):
        affine = np.asarray(row["affine"])
        ornt = nib.orientations.io_orientation(affine)
        image, mask = to_ras(row["image"], affine), to_ras(row["mask"] > 0, affine)
        spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[np.argsort(ornt[:, 0])]  # RAS axis order
        box_ras = None
        if row.get("box") is not None:
            indicator = np.zeros(row["image"].shape, dtype=bool)
            indicator[box_slices(row["box"])] = True
            where = np.argwhere(to_ras(indicator, affine))
            box_ras = (where.min(axis=0), where.max(axis=0) + 1)
        if mask.any():
            center = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
        elif box_ras is not None:
            center = (box_ras[0] + box_ras[1] - 1) // 2
        else:
            center = np.array(image.shape) // 2
        for col, (ax, (plane, fixed, horizontal, vertical)) in enumerate(zip(ax_row, PLANES)):
            index = [slice(None)] * 3
            index[fixed] = int(center[fixed])
            shown = ax.imshow(image[tuple(index)].T, cmap="gray_r", vmin=0.0, vmax=vmax, origin="lower",
                              aspect=spacing[vertical] / spacing[horizontal], interpolation="nearest")
            plane_mask = mask[tuple(index)].T  # (vertical, horizontal)
            if plane_mask.any() and not plane_mask.all():
                ax.contour(plane_mask.astype(np.float32), levels=[0.5], colors="red", linewidths=1.0)
            if box_ras is not None:
                lo, hi = box_ras
                ax.add_patch(Rectangle((lo[horizontal] - 0.5, lo[vertical] - 0.5), hi[horizontal] - lo[horizontal],
                                       hi[vertical] - lo[vertical], fill=False, edgecolor="deepskyblue",
                                       linewidth=0.8, linestyle="--"))
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(row["label"], fontsize=8)
            if row is rows[0]:
                ax.set_title(plane, fontsize=9)
    figure.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6, label="SUV")
    return save_figure(figure, path, dpi=90, title=title)


def short_name(case: str) -> str:
    """AutoPET phantom names are long (PETCT_<id>_<study>); the id is enough on a picture."""
    parts = case.split("_")
    return "_".join(parts[:2]) if case.startswith("PETCT_") and len(parts) > 1 else case


def write_demo_montage(*, paths, plan) -> Path:
    """Real test-split tumors (then training ones) above synthetic samples, as OUT/montage.png."""
    from tumorgen.demo.plan import load_real_tumors, load_synthetic

    real = load_real_tumors(paths, split="test") + load_real_tumors(paths, split="train")
    synthetic = load_synthetic(paths)
    rows = [{**r, "label": f"real {short_name(r['case'])}"} for r in real[:REAL_ROWS]]
    rows += [{**s, "label": f"synthetic {short_name(s['case'])} #{s['k']}"} for s in synthetic[:SYNTHETIC_ROWS]]
    return write_montage(paths.montage, rows, title=f"TumorGen demo ({plan.preset} preset): real (top) vs "
                                                    "synthetic (bottom); red = mask, dashed = box")
