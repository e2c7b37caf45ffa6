"""Read NIfTI volumes defensively and write them atomically.

Users point TumorGen at folders of clinical scans of uneven quality. Every check that can be made
from the header is made before any voxel is read (a header may claim a volume larger than memory),
and every failure becomes one `TumorGenError` sentence naming the file.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorgen.errors import fail_on
from tumorgen.io.atomic import atomic_path
from tumorgen.io.spacing import voxel_spacing

# Largest volume we agree to read: 1024^3 voxels of float32 is 4 GiB, more than any PET scan
# (AutoPET whole-body CTres is about 400 x 400 x 600).
MAX_VOXELS = 1024**3
# Deflate (gzip) cannot shrink data more than about 1032:1, so a .nii.gz smaller than 1/1032 of what its
# header claims cannot hold those voxels; nibabel would allocate the claimed size before finding out.
_MAX_DEFLATE_RATIO = 1032


@dataclass(frozen=True)
class Volume:
    """A 3D array with its voxel-to-world affine (RAS mm, as nibabel gives it) and where it came from."""

    array: np.ndarray  # (X, Y, Z)
    affine: np.ndarray  # (4, 4)
    path: Path

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in voxel_spacing(self.affine))


def read_header(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI file lazily and check what the header says, without reading the voxels."""
    path = Path(path)
    if not path.exists():
        raise fail_on(path, "file not found")
    if not path.is_file():
        raise fail_on(path, "is not a file")
    try:
        image = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise fail_on(path, f"is not a readable NIfTI file ({_short(err)})") from None
    shape = tuple(int(s) for s in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise fail_on(path, f"is {len(shape)}D with shape {tuple(image.shape)}; a 3D volume is needed")
    if min(shape) < 1:
        raise fail_on(path, f"has an empty shape {shape}")
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise fail_on(path, f"header claims {shape} voxels, more than the {MAX_VOXELS} TumorGen will read")
    _check_file_can_hold(path, image, shape)
    affine = image.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise fail_on(path, "has no valid voxel-to-world affine in its header")
    return image


def _check_file_can_hold(path: Path, image: nib.Nifti1Image, shape: tuple[int, ...]) -> None:
    """Refuse a single-file NIfTI too small for the voxels its header claims, before any allocation."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return  # .hdr/.img pairs and other formats keep their voxels elsewhere
    claimed = int(np.prod(shape, dtype=np.int64)) * image.get_data_dtype().itemsize
    claimed += int(image.header.get_data_offset())
    on_disk = path.stat().st_size
    room = on_disk * _MAX_DEFLATE_RATIO if name.endswith(".gz") else on_disk
    if claimed > room:
        raise fail_on(path, f"header claims {shape} voxels ({claimed / 2**20:.0f} MiB) but the file has only "
                            f"{on_disk} bytes; it is truncated or its header is wrong")


def load_volume(path: str | Path, *, kind: str = "image") -> Volume:
    """Read a 3D volume and check its values.

    Args:
        path: the NIfTI file.
        kind: "image" (finite float values required) or "mask" (values in {0, 1} required).
    """
    if kind not in ("image", "mask"):
        raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
    path = Path(path)
    image = read_header(path)
    try:
        array = np.asarray(image.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise fail_on(path, f"is truncated or corrupt ({_short(err)})") from None
    array = array.reshape(array.shape[:3]) if array.ndim > 3 else array
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise fail_on(path, f"contains {bad} NaN or infinite voxels")
    if kind == "mask":
        values = np.unique(array)
        if not np.all(np.isin(values, (0.0, 1.0))):
            shown = ", ".join(f"{v:g}" for v in values[:6])
            raise fail_on(path, f"is not a binary mask (values {shown}{', ...' if len(values) > 6 else ''})")
        array = array.astype(np.uint8)
    return Volume(array=array, affine=np.asarray(image.affine, dtype=np.float64), path=path)


def check_same_grid(a: Volume, b: Volume, *, atol_mm: float = 1e-3) -> None:
    """Refuse an image and a mask that do not share one voxel grid (same shape, same affine)."""
    if a.array.shape != b.array.shape:
        raise fail_on(b.path, f"has shape {b.array.shape} but {a.path.name} has {a.array.shape}")
    if not np.allclose(a.affine, b.affine, atol=atol_mm):
        raise fail_on(b.path, f"has a different affine (voxel-to-world) from {a.path.name}")


def save_volume(array: np.ndarray, affine: np.ndarray, path: str | Path, *, dtype=np.float32) -> Path:
    """Write a NIfTI file atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    image = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    image.header.set_qform(image.affine, code=1)
    image.header.set_sform(image.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return path


def _short(err: BaseException) -> str:
    """The library's own words, cut to one clause: nibabel's messages run on over several lines."""
    text = " ".join(str(err).split()) or type(err).__name__
    text = text.replace(" from - ", "; ").replace(" from )", ")")
    return text[:160]
