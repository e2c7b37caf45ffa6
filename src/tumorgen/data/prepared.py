"""Read a PREP cache and put results back onto the original scan's grid.

`tumorgen prepare` writes every case on its own grid (reoriented, resampled, cropped, resized), but
each cached NIfTI keeps its true voxel-to-world affine and `dataset.json` keeps the original scan's
shape and affine. Whatever chain produced the cache is therefore undone by one resampling through
the two affines (`map_to_original`), and the reverse (`map_from_original`) cuts a window out of a raw
scan at the model's grid. Both are `resample_to_grid`, which the synthesis code may use directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.files import read_json_index
from tumorgen.io.nifti import check_same_grid, load_volume

FORMAT = "tumorgen-prep"
VERSION = 1
_REQUIRED_KEYS = ("format", "version", "size", "suv_max", "split", "cases")
_REQUIRED_CASE_KEYS = ("name", "image", "mask", "healthy", "original_shape", "original_affine")
# Voxels of the destination are resampled in slabs of about this many voxels, so mapping a small
# cached grid back onto a whole-body scan never builds coordinate arrays of the whole scan.
_SLAB_VOXELS = 1 << 21


def to_suv(x, suv_max: float):
    """Model range [0, 1] -> SUV (the inverse of the clip-and-scale in `prepare`)."""
    return x * suv_max


def from_suv(suv, suv_max: float):
    """SUV -> model range: clip to [0, suv_max], divide by suv_max (numpy arrays or torch tensors)."""
    if hasattr(suv, "clamp"):
        return suv.clamp(0.0, suv_max) / suv_max
    return np.clip(suv, 0.0, suv_max) / suv_max


@dataclass(frozen=True)
class PreparedCase:
    """One cached case: its files and the metadata `prepare` stored for it (`meta`, from dataset.json)."""

    name: str
    healthy: bool
    image_path: Path
    mask_path: Path
    meta: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (image float32 (X, Y, Z) in [0, 1], mask uint8 (X, Y, Z), affine (4, 4))."""
        image = load_volume(self.image_path, kind="image")
        mask = load_volume(self.mask_path, kind="mask")
        check_same_grid(image, mask)
        return image.array.astype(np.float32, copy=False), mask.array, image.affine

    @property
    def original_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.meta["original_shape"])

    @property
    def original_affine(self) -> np.ndarray:
        return np.asarray(self.meta["original_affine"], dtype=np.float64)


@dataclass(frozen=True)
class PreparedDataset:
    """A PREP cache: the parsed dataset.json (`info`) and its cases in file order."""

    root: Path
    info: dict
    cases: list[PreparedCase]

    @property
    def suv_max(self) -> float:
        return float(self.info["suv_max"])

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.info["size"])

    def case(self, name: str) -> PreparedCase:
        for case in self.cases:
            if case.name == name:
                return case
        raise TumorGenError(f"{self.root / 'dataset.json'}: has no case named {name!r}")

    def split(self, name: str) -> list[PreparedCase]:
        """The cases of the "train" or "test" split, in the order dataset.json lists them."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        by_name = {case.name: case for case in self.cases}
        return [by_name[n] for n in self.info["split"][name]]

    def tumor_cases(self, split: str | None = None) -> list[PreparedCase]:
        """Cases with a non-empty tumor mask, of one split or of all."""
        cases = self.cases if split is None else self.split(split)
        return [case for case in cases if not case.healthy]


def load_prepared(prep_dir: str | Path) -> PreparedDataset:
    """Open a PREP cache written by `tumorgen prepare`, checking dataset.json before anything else."""
    root = Path(prep_dir)
    index = root / "dataset.json"
    if not root.is_dir():
        raise fail_on(root, "is not a prepared dataset folder (run `tumorgen prepare` first)")
    if not index.is_file():
        raise fail_on(index, "not found; this folder was not written by `tumorgen prepare`")
    info = read_json_index(index, fmt=FORMAT, required=_REQUIRED_KEYS, version=VERSION)
    cases = []
    for entry in info["cases"]:
        lacking = [key for key in _REQUIRED_CASE_KEYS if key not in entry]
        if lacking:
            raise fail_on(index, f"case {entry.get('name')!r} lacks the keys {', '.join(lacking)}")
        image_path, mask_path = _inside(root, entry["image"], index), _inside(root, entry["mask"], index)
        for path in (image_path, mask_path):
            if not path.is_file():
                raise fail_on(path, "is listed in dataset.json but missing")
        cases.append(PreparedCase(name=entry["name"], healthy=bool(entry["healthy"]),
                                  image_path=image_path, mask_path=mask_path, meta=entry))
    names = {case.name for case in cases}
    for split_name in ("train", "test"):
        unknown = [n for n in info["split"].get(split_name, []) if n not in names]
        if unknown:
            raise fail_on(index, f"split {split_name!r} names unknown cases {unknown[:3]}")
        info["split"].setdefault(split_name, [])
    return PreparedDataset(root=root, info=info, cases=cases)


def _inside(root: Path, relative: str, index: Path) -> Path:
    """Resolve a path from dataset.json and refuse one that leaves the cache folder."""
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise fail_on(index, f"lists the file {relative!r}, which is outside the cache folder")
    return path


def resample_to_grid(array: np.ndarray, *, src_affine: np.ndarray, dst_shape, dst_affine: np.ndarray,
                     order: int, fill: float = 0.0) -> np.ndarray:
    """Resample `array` (on the grid `src_affine`) onto another grid through world coordinates.

    A destination voxel takes the value at its centre's world position; voxels whose centre lies
    outside the source's field of view (the union of its voxels' cubes) get `fill`. When the two
    grids differ only by flips, permutations and whole-voxel shifts, order 0 copies voxels exactly.

    Args:
        array: the source values, (X, Y, Z).
        src_affine: the source voxel-to-world map (4, 4), world in mm.
        dst_shape: the destination grid's shape (X', Y', Z').
        dst_affine: the destination voxel-to-world map (4, 4).
        order: 0 nearest neighbour (masks, keeps the dtype), 1 linear (images, float32).
        fill: the value outside the source's field of view.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}")
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"array must be 3D (X, Y, Z), got shape {array.shape}")
    dst_shape = tuple(int(s) for s in dst_shape)
    dst_to_src = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, np.float64)
    out = np.full(dst_shape, fill, dtype=array.dtype if order == 0 else np.float32)
    lo, hi = _covered_box(array.shape, dst_to_src, dst_shape)
    if np.any(hi <= lo):
        return out
    source = array if order == 0 else array.astype(np.float32, copy=False)
    upper = np.asarray(array.shape, dtype=np.float64) - 0.5
    tol = 1e-6
    slab = max(1, _SLAB_VOXELS // max(1, int((hi[1] - lo[1]) * (hi[2] - lo[2]))))
    for x0 in range(lo[0], hi[0], slab):
        x1 = min(hi[0], x0 + slab)
        index = np.mgrid[x0:x1, lo[1]:hi[1], lo[2]:hi[2]].reshape(3, -1).astype(np.float64)  # (3, N)
        coords = dst_to_src[:3, :3] @ index + dst_to_src[:3, 3:4]  # (3, N) source voxel coordinates
        inside = np.all((coords >= -0.5 - tol) & (coords <= upper[:, None] + tol), axis=0)  # (N,)
        values = ndimage.map_coordinates(source, coords[:, inside], order=order, mode="nearest")
        flat = np.full(inside.shape, fill, dtype=out.dtype)  # (N,)
        flat[inside] = values
        out[x0:x1, lo[1]:hi[1], lo[2]:hi[2]] = flat.reshape(x1 - x0, hi[1] - lo[1], hi[2] - lo[2])
    return out


def _covered_box(src_shape, dst_to_src: np.ndarray, dst_shape) -> tuple[np.ndarray, np.ndarray]:
    """The half-open destination index box that can see the source's field of view."""
    src_to_dst = np.linalg.inv(dst_to_src)
    extent = [(-0.5, n - 0.5) for n in src_shape]
    corners = np.array(np.meshgrid(*extent, indexing="ij")).reshape(3, -1)  # (3, 8)
    mapped = src_to_dst[:3, :3] @ corners + src_to_dst[:3, 3:4]  # (3, 8) destination coordinates
    lo = np.clip(np.floor(mapped.min(axis=1)).astype(int), 0, dst_shape)
    hi = np.clip(np.ceil(mapped.max(axis=1)).astype(int) + 1, 0, dst_shape)
    return lo, hi


def map_to_original(array: np.ndarray, *, affine: np.ndarray, original_shape, original_affine: np.ndarray,
                    order: int, fill: float = 0.0) -> np.ndarray:
    """Put a cached-grid array (image: order 1, mask: order 0) back onto the original scan's grid.

    Args:
        array: values on the cached grid, (X, Y, Z).
        affine: the cached grid's voxel-to-world map (the cached NIfTI's affine).
        original_shape: the original scan's shape (dataset.json "original_shape").
        original_affine: the original scan's affine (dataset.json "original_affine").
        order: 0 nearest (masks), 1 linear (images).
        fill: the value of original voxels outside the cached field of view.
    """
    return resample_to_grid(array, src_affine=affine, dst_shape=original_shape,
                            dst_affine=original_affine, order=order, fill=fill)


def map_from_original(array: np.ndarray, *, original_affine: np.ndarray, shape, affine: np.ndarray,
                      order: int, fill: float = 0.0) -> np.ndarray:
    """Cut a grid (`shape`, `affine`, e.g. the model's window) out of an original-grid array.

    Args:
        array: values on the original scan's grid, (X, Y, Z).
        original_affine: the original scan's affine.
        shape: the wanted grid's shape.
        affine: the wanted grid's voxel-to-world map.
        order: 0 nearest (masks), 1 linear (images).
        fill: the value of wanted voxels outside the original scan.
    """
    return resample_to_grid(array, src_affine=original_affine, dst_shape=shape, dst_affine=affine,
                            order=order, fill=fill)
