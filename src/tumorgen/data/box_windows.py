"""Box-normalised training windows: every tumor, 8 mm or 30 cm, at the same share of the model's grid.

Why: a model that works on a fixed grid at a fixed spacing (the PREP cache) sees an 8 mm tumor as a
few voxels and cannot hold a 30 cm one, and a VAE trained on patches but run on whole volumes sees
other GroupNorm statistics than it learnt (measured: tumors came back 1.5-2.4x too hot). Here both
training stages and synthesis cut the same kind of window: centred on a box, spacing chosen per axis
so that the box spans `fill` of the window's `size` voxels (`data.window`'s
`box_window_spacing`), intensities on the model's scale (`tumorgen.data.intensity`). The paper crops to the
tumor region too; this makes the crop's scale explicit.

Training boxes follow BA-PMG (docs/METHOD.md section 1) in the PREP case's voxels: the tight tumor box, each
face grown by `U(0.5, 1.5) * pad` voxels plus `U(0, alpha * extent)`, so the box is what a user draws
("the tumor and a little around it"), and the window is cut around that box, exactly as synthesis
cuts it around the user's box. Random flips along each axis are the other augmentation, and, when asked
(`data.transpose_windows`), a random order of the window's axes: a tumor's box-normalised shape seen
along another axis, 48 orientations instead of 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorgen.data.box_geometry import tight_box
from tumorgen.data.intensity import suv_to_model
from tumorgen.data.window import box_in_window, box_window_spacing, place_window, scan_to_window_values


@dataclass(frozen=True)
class BoxWindowSpec:
    """How a box window is cut.

    Args:
        size: the window's side in voxels.
        fill: voxels the box spans along each axis (up to `box_window_spacing`'s aspect cap).
        suv_max: the top of the intensity scale.
        intensity: "linear" or "log" (`tumorgen.data.intensity`).
        factor: the VAE's latent factor: the box in the window is snapped outward to its multiples.
        alpha: BA-PMG's expansion, as a share of the tumor's extent per axis.
        pad: voxels (of the case's grid) added on every face, times U(0.5, 1.5).
    """

    size: int
    fill: int
    suv_max: float
    factor: int
    intensity: str = "log"
    alpha: float = 0.1
    pad: float = 2.0


def training_box(mask: np.ndarray, spec: BoxWindowSpec, rng: np.random.Generator) -> tuple[int, ...]:
    """A BA-PMG box around a mask's tumor: grown faces, clipped to the volume (half-open, voxels)."""
    box = np.asarray(tight_box(mask), dtype=np.float64)
    extent = box[3:] - box[:3]
    grow = rng.uniform(0.5, 1.5, size=6) * spec.pad + rng.uniform(0.0, 1.0, size=6) * spec.alpha * np.tile(extent, 2)
    lo = np.maximum(np.floor(box[:3] - grow[:3]), 0)
    hi = np.minimum(np.ceil(box[3:] + grow[3:]), mask.shape)
    return tuple(int(v) for v in (*lo, *hi))


def cut_box_window(suv: np.ndarray, mask: np.ndarray | None, affine: np.ndarray, box, spec: BoxWindowSpec
                   ) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """The window around `box`: image on the model's scale, mask (float {0, 1}), box in the window.

    The same placement as synthesis (`data.window.cut_window` with the box's spacing), so the
    model trains on the windows it will be given.
    """
    spacing = box_window_spacing(box, affine, fill=spec.fill, axcodes="RAS")
    grid = place_window(scan_shape=suv.shape, scan_affine=affine, box=box, size=(spec.size,) * 3,
                        spacing=spacing, axcodes="RAS")
    image = suv_to_model(scan_to_window_values(suv, grid, order=1, mode="nearest"), suv_max=spec.suv_max,
                         kind=spec.intensity)
    window_mask = None
    if mask is not None:
        window_mask = (scan_to_window_values(mask.astype(np.float32), grid, order=1) >= 0.5).astype(np.float32)
    return image, window_mask, box_in_window(box, grid, latent_factor=spec.factor)


def flip_window(image: np.ndarray, mask: np.ndarray, box, axes) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Mirror a window, its mask and its box along the given axes."""
    box = list(box)
    for axis in axes:
        image, mask = np.flip(image, axis), np.flip(mask, axis)
        size = image.shape[axis]
        box[axis], box[axis + 3] = size - box[axis + 3], size - box[axis]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask), tuple(box)


def transpose_window(image: np.ndarray, mask: np.ndarray, box, order) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Reorder a cubic window's axes (window axis j becomes old axis `order[j]`), its mask's and its box's."""
    order = [int(a) for a in order]
    if sorted(order) != [0, 1, 2]:
        raise ValueError(f"order must be a permutation of (0, 1, 2), got {order}")
    box = tuple(int(box[a]) for a in order) + tuple(int(box[a + 3]) for a in order)
    return (np.ascontiguousarray(np.transpose(image, order)), np.ascontiguousarray(np.transpose(mask, order)), box)


def random_windows(suvs, masks, affines, spec: BoxWindowSpec, rng: np.random.Generator, count: int,
                   *, flips: bool = True, transposes: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` random training windows from the tumor cases.

    Args:
        suvs, masks, affines: per case, the SUV volume, its tumor mask (non-empty) and its affine.
        spec: how windows are cut.
        rng: the only source of randomness (case, box margins, flips, axis orders).
        count: windows to cut.
        flips: mirror each window along a random subset of the axes.
        transposes: then put its axes in a random order (draws from `rng` only when on, so the windows
            without it stay those of earlier versions).

    Returns:
        images (count, 1, S, S, S) float32 model range, masks (count, 1, S, S, S) float32,
        boxes (count, 6) int64 half-open in window voxels, multiples of `spec.factor`.
    """
    images, window_masks, boxes = [], [], []
    for _ in range(count):
        i = int(rng.integers(len(suvs)))
        box = training_box(masks[i], spec, rng)
        image, mask, wbox = cut_box_window(suvs[i], masks[i], affines[i], box, spec)
        if flips:
            axes = [a for a in range(3) if rng.random() < 0.5]
            image, mask, wbox = flip_window(image, mask, wbox, axes)
        if transposes:
            image, mask, wbox = transpose_window(image, mask, wbox, rng.permutation(3))
        images.append(image)
        window_masks.append(mask)
        boxes.append(wbox)
    return (np.stack(images)[:, None], np.stack(window_masks)[:, None], np.asarray(boxes, dtype=np.int64))


def box_window_spec(config, suv_max: float) -> BoxWindowSpec:
    """The box-window cut a `config.Config` describes: both training stages use this one."""
    factor = 2 ** (len(config.vae.channels) - 1) if config.vae.arch == "kl" else 4
    d = config.data
    return BoxWindowSpec(size=d.window_size, fill=d.box_fill, suv_max=suv_max, intensity=d.intensity,
                         factor=factor, alpha=config.flow.alpha, pad=d.box_pad)
