"""A generated set on disk: the one hand-off between generating tumors and measuring them.

Every method (TumorGen, DiffTumor, BLD, SynTumor, or any outside tool) is evaluated from the same
folder layout, so `evaluate` never needs to know which method made a set:

    DIR/generated.json               {"format": "tumorgen-generated", "version", "method", "sampler",
                                      "steps", "model": {run, version, sha256}, "data": PREP path,
                                      "split", "seconds_per_sample",
                                      "samples": [{"case", "k", "image", "mask", "box", "seed", "seconds"}]}
    DIR/<case>_<k>_image.nii.gz      float32 in model range [0, 1], on the PREP case's grid and affine
    DIR/<case>_<k>_mask.nii.gz       uint8 {0, 1}, same grid

The index is written last, so a folder with a generated.json only lists complete files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorgen.errors import fail_on
from tumorgen.io.atomic import write_json
from tumorgen.io.files import read_json_index
from tumorgen.io.nifti import check_same_grid, load_volume, save_volume

FORMAT = "tumorgen-generated"
VERSION = 1
INDEX_NAME = "generated.json"
_REQUIRED_KEYS = ("format", "version", "method", "samples")
_REQUIRED_SAMPLE_KEYS = ("case", "k", "image", "mask", "box")


def sample_names(case: str, k: int) -> tuple[str, str]:
    """File names of sample k of a case: (image, mask)."""
    return f"{case}_{k}_image.nii.gz", f"{case}_{k}_mask.nii.gz"


@dataclass(frozen=True)
class GeneratedSample:
    """One generated volume as listed in generated.json; `load` reads its files."""

    case: str
    k: int
    image_path: Path
    mask_path: Path
    box: tuple[int, int, int, int, int, int]
    seed: int | None = None
    seconds: float | None = None

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image float32 (X, Y, Z) in [0, 1], mask uint8 (X, Y, Z), affine (4, 4))."""
        image = load_volume(self.image_path, kind="image")
        mask = load_volume(self.mask_path, kind="mask")
        check_same_grid(image, mask)
        return image.array.astype(np.float32, copy=False), mask.array, image.affine


@dataclass(frozen=True)
class GeneratedSet:
    """A parsed generated set: its index (`info`) and its samples in index order."""

    root: Path
    info: dict
    samples: list[GeneratedSample] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.info["method"])


def write_index(out_dir: str | Path, *, method: str, samples: list[dict], data: str | Path, split: str,
                sampler: str | None = None, steps: int | None = None, model: dict | None = None,
                extra: dict | None = None) -> Path:
    """Write generated.json for sample files already in `out_dir` (call it last).

    Args:
        out_dir: the set's folder.
        method: "tumorgen", "difftumor", "bld", "syntumor", or another tool's name.
        samples: dicts with case, k, image, mask (file names in `out_dir`), box, seed, seconds.
        data: the PREP folder the set was generated into.
        split: the PREP split ("test" normally).
        sampler, steps: how the method sampled (None for rule-based methods).
        model: the generator's record ({"run", "version", "step", "checkpoint_sha256"}), {} for a method
            without a model, or None.
        extra: other provenance to keep (e.g. the seed of the run).
    """
    seconds = [s["seconds"] for s in samples if s.get("seconds") is not None]
    index = {"format": FORMAT, "version": VERSION, "method": method, "sampler": sampler, "steps": steps,
             "model": model or {}, "data": str(data), "split": split,
             "seconds_per_sample": float(np.mean(seconds)) if seconds else None,
             **(extra or {}), "samples": samples}
    return write_json(Path(out_dir) / INDEX_NAME, index)


def save_sample(out_dir: str | Path, *, case: str, k: int, image: np.ndarray, mask: np.ndarray,
                affine: np.ndarray) -> tuple[str, str]:
    """Write one sample's image (float32, clipped to [0, 1]) and mask (uint8); returns the file names."""
    image_name, mask_name = sample_names(case, k)
    save_volume(np.clip(image, 0.0, 1.0), affine, Path(out_dir) / image_name, dtype=np.float32)
    save_volume((np.asarray(mask) > 0).astype(np.uint8), affine, Path(out_dir) / mask_name, dtype=np.uint8)
    return image_name, mask_name


def load_generated_set(path: str | Path) -> GeneratedSet:
    """Open a generated set folder, checking generated.json before any volume is read."""
    root = Path(path)
    index = root / INDEX_NAME
    if not root.is_dir():
        raise fail_on(root, "is not a folder; --generated needs a folder written by `tumorgen generate-set`")
    if not index.is_file():
        raise fail_on(index, "not found; this folder was not written by `tumorgen generate-set`")
    info = read_json_index(index, fmt=FORMAT, required=_REQUIRED_KEYS)
    if not isinstance(info["samples"], list) or not info["samples"]:
        raise fail_on(index, "lists no samples")
    samples = []
    for entry in info["samples"]:
        lacking = [key for key in _REQUIRED_SAMPLE_KEYS if key not in entry]
        if lacking:
            raise fail_on(index, f"sample {entry.get('case')!r} lacks the keys {', '.join(lacking)}")
        paths = []
        for key in ("image", "mask"):
            file = (root / entry[key]).resolve()
            if root.resolve() not in file.parents:
                raise fail_on(index, f"lists the file {entry[key]!r}, which is outside the set's folder")
            if not file.is_file():
                raise fail_on(file, "is listed in generated.json but missing")
            paths.append(file)
        box = entry["box"]
        if not isinstance(box, list) or len(box) != 6:
            raise fail_on(index, f"sample {entry['case']!r} has a box {box!r}, not six voxel indices")
        samples.append(GeneratedSample(case=str(entry["case"]), k=int(entry["k"]), image_path=paths[0],
                                       mask_path=paths[1], box=tuple(int(v) for v in box),
                                       seed=entry.get("seed"), seconds=entry.get("seconds")))
    return GeneratedSet(root=root, info=info, samples=samples)
