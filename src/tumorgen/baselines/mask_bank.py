"""Real tumor masks to place in a box: DiffTumor and BLD generate a tumor inside a *given* mask.

TumorGen generates its own mask from a box; the diffusion baselines cannot, so, as in DiffTumor, each
synthetic tumor takes the shape of a real one. The bank holds the training tumors' masks cropped to
their tight boxes (image grid). Placing a mask in a box picks, with a seeded numpy Generator, one of
the masks that fit the box (or, when none fits, any mask shrunk with nearest-neighbour zoom by one
factor on all axes, keeping its shape, until it fits) and puts it at a seeded offset inside the box.
A placed mask therefore never leaves its box and is never empty.

On disk (`RUN/mask_bank.npz`, read with `allow_pickle=False`): `voxels` uint8 (all masks' voxels
concatenated in C order) and `shapes` int64 (N, 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorgen.data.box_geometry import box_slices, tight_box
from tumorgen.errors import fail_on
from tumorgen.io.atomic import atomic_path

def crop_to_tight_box(mask: np.ndarray) -> np.ndarray:
    """The (X, Y, Z) binary mask cut to the tight box of its nonzero voxels (uint8)."""
    if not np.any(mask):
        raise ValueError("cannot crop an empty mask")
    return (mask[box_slices(tight_box(mask))] > 0).astype(np.uint8)


def shrink_to_fit(mask: np.ndarray, box_size: tuple[int, int, int]) -> np.ndarray:
    """Nearest-neighbour zoom of a cropped mask by one factor <= 1 so that it fits `box_size`; never empty."""
    from scipy.ndimage import zoom

    factor = min(1.0, *(b / s for b, s in zip(box_size, mask.shape)))
    if factor >= 1.0:
        return mask
    out = np.zeros(tuple(min(b, max(1, int(np.floor(s * factor)))) for b, s in zip(box_size, mask.shape)), np.uint8)
    zoomed = zoom(mask.astype(np.float32), [o / s for o, s in zip(out.shape, mask.shape)], order=0, grid_mode=True,
                  mode="grid-constant") > 0.5
    region = tuple(slice(0, min(o, z)) for o, z in zip(out.shape, zoomed.shape))
    out[region] = zoomed[region]
    if not out.any():  # a mask shrunk below one voxel keeps its centre voxel
        out[tuple(s // 2 for s in out.shape)] = 1
    return crop_to_tight_box(out)


@dataclass(frozen=True)
class MaskBank:
    """Cropped binary tumor masks (uint8 arrays of varying shapes) of the training split.

    Args:
        masks: one array per training tumor, each cropped to its tight box.
    """

    masks: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if not self.masks:
            raise ValueError("a mask bank needs at least one mask")

    @classmethod
    def from_masks(cls, masks: list[np.ndarray]) -> "MaskBank":
        """Build the bank from full-volume masks (the empty ones, healthy cases, are left out)."""
        return cls(masks=tuple(crop_to_tight_box(m) for m in masks if np.any(m)))

    def save(self, path: str | Path) -> Path:
        shapes = np.array([m.shape for m in self.masks], dtype=np.int64)  # (N, 3)
        voxels = np.concatenate([m.reshape(-1) for m in self.masks]).astype(np.uint8)  # (sum of sizes,)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, voxels=voxels, shapes=shapes)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "MaskBank":
        path = Path(path)
        if not path.is_file():
            raise fail_on(path, "mask bank not found; the baseline run folder is incomplete")
        try:
            with np.load(path, allow_pickle=False) as data:
                voxels, shapes = data["voxels"], data["shapes"]
        except (OSError, ValueError, KeyError) as err:
            raise fail_on(path, f"is not a readable mask bank ({type(err).__name__}: {err})") from None
        if shapes.ndim != 2 or shapes.shape[1] != 3 or (shapes < 1).any() or int(shapes.prod(1).sum()) != voxels.size:
            raise fail_on(path, "is a corrupt mask bank (the mask shapes do not add up to the stored voxels)")
        masks, start = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            masks.append((voxels[start:start + n].reshape(tuple(int(s) for s in shape)) > 0).astype(np.uint8))
            start += n
        if not masks or not all(m.any() for m in masks):
            raise fail_on(path, "holds no masks or an empty mask")
        return cls(masks=tuple(masks))

    def choose(self, box_size: tuple[int, int, int], *, rng: np.random.Generator) -> np.ndarray:
        """A cropped mask that fits `box_size`: a random fitting one, else a random one shrunk to fit."""
        fitting = [m for m in self.masks if all(s <= b for s, b in zip(m.shape, box_size))]
        if fitting:
            return fitting[int(rng.integers(len(fitting)))]
        return shrink_to_fit(self.masks[int(rng.integers(len(self.masks)))], box_size)

    def place(self, box: tuple[int, ...], shape: tuple[int, int, int], *, rng: np.random.Generator) -> np.ndarray:
        """A full (X, Y, Z) uint8 mask of `shape` with one bank mask inside the half-open `box`.

        Args:
            box: (x0, y0, z0, x1, y1, z1), inside `shape`, non-empty.
            shape: the volume's grid.
            rng: seeded numpy Generator (which mask, and where in the box).
        """
        lo = [int(v) for v in box[:3]]
        hi = [int(v) for v in box[3:]]
        if any(a < 0 or b > s or b <= a for a, b, s in zip(lo, hi, shape)):
            raise ValueError(f"box {tuple(box)} is empty or outside the volume {tuple(shape)}")
        box_size = tuple(b - a for a, b in zip(lo, hi))
        chosen = self.choose(box_size, rng=rng)
        offset = [a + int(rng.integers(b - s + 1)) for a, b, s in zip(lo, box_size, chosen.shape)]
        out = np.zeros(tuple(shape), dtype=np.uint8)
        out[offset[0]:offset[0] + chosen.shape[0], offset[1]:offset[1] + chosen.shape[1],
            offset[2]:offset[2] + chosen.shape[2]] = chosen
        return out
