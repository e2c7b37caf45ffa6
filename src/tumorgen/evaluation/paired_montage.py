"""The paired protocol's montage: real, then each method, in the erased box of each case."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tumorgen.evaluation.slices import PLANE_AXIS, PLANES, tumor_slice_indices
from tumorgen.data.box_geometry import box_mask, box_slices
from tumorgen.io.atomic import atomic_path

CROP_GROW = 0.5  # the montage crop: the box plus this fraction of its extent on each side


def _crop(box, shape) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.array(box[:3]), np.array(box[3:])
    grow = np.ceil(CROP_GROW * (hi - lo)).astype(int)
    return np.maximum(lo - grow, 0), np.minimum(hi + grow, shape)


def write_paired_montage(path: Path, cases: list, rows: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> None:
    """Rows: real, then each method; columns: cases; each cell axial / sagittal / coronal of the crop.

    Args:
        path: the PNG to write.
        cases: `evaluation.paired.PairedCase`s (name, suv, mask, box).
        rows: method -> one (suv, mask) per case, in the order of `cases`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    names = ["real"] + list(rows)
    fig, axes = plt.subplots(len(names), 3 * len(cases), figsize=(1.3 * 3 * len(cases), 1.4 * len(names) + 0.5),
                             squeeze=False)
    for col, case in enumerate(cases):
        lo, hi = _crop(case.box, case.suv.shape)
        crop = box_slices((*lo, *hi))
        vmax = max(float(np.percentile(case.suv[crop], 99)), 1e-6)
        box_lo, box_hi = np.array(case.box[:3]) - lo, np.array(case.box[3:]) - lo
        outputs = [(case.suv, case.mask)] + [row[col] for row in rows.values()]
        for r, (name, (suv, mask)) in enumerate(zip(names, outputs)):
            image, cut_mask = suv[crop], mask[crop]
            centre = cut_mask if cut_mask.any() else box_mask(cut_mask.shape, (*box_lo, *box_hi))
            index = tumor_slice_indices(centre)
            for p, plane in enumerate(PLANES):
                ax = axes[r, 3 * col + p]
                axis, i = PLANE_AXIS[plane], index[plane][0]
                ax.imshow(np.take(image, i, axis=axis).T, cmap="gray_r", vmin=0.0, vmax=vmax, origin="lower",
                          interpolation="nearest")
                outline = np.take(cut_mask, i, axis=axis).T
                if outline.any():
                    ax.contour(outline, levels=[0.5], colors="red" if name == "real" else "lime", linewidths=0.8)
                shown = [a for a in range(3) if a != axis]  # (horizontal, vertical) axes of the slice
                ax.add_patch(Rectangle((box_lo[shown[0]] - 0.5, box_lo[shown[1]] - 0.5),
                                       box_hi[shown[0]] - box_lo[shown[0]], box_hi[shown[1]] - box_lo[shown[1]],
                                       fill=False, edgecolor="tab:blue", linestyle="--", linewidth=0.6))
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{case.name} {plane[0].upper()}" if p == 1 else plane[0].upper(), fontsize=7)
                if col == 0 and p == 0:
                    ax.set_ylabel(name, fontsize=8)
    fig.suptitle("paired protocol: real (red mask) and each method (green mask) in the erased box (dashed); "
                 "inverted gray, 0 to SUV p99 of the real crop", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
