"""manifest.json: what was synthesized, from what, with which model, so any output can be traced.

One manifest per output folder. Several cases may be written into one folder: each call replaces
its own case's entry and keeps the others. Case names become file names, so they are sanitized here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from tumorgen import __version__
from tumorgen.errors import TumorGenError

MANIFEST_NAME = "manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_case_name(name: str) -> str:
    """A case name usable as a file name prefix: no path separators, no "..", no odd characters.

    Runs of other characters become "_", leading dots and separators are dropped; a name with
    nothing left is refused.
    """
    cleaned = _UNSAFE.sub("_", str(name))
    cleaned = re.sub(r"\.{2,}", "_", cleaned).strip("._-")
    if not cleaned:
        raise TumorGenError(f"case name {name!r} has no usable characters (letters, digits, '.', '_', '-')")
    return cleaned


def case_name_from_path(path: str | Path) -> str:
    """`dir/case.nii.gz` -> "case"; AutoPET's `patient/study/SUV.nii.gz` -> "patient_study"."""
    path = Path(path)
    stem = path.name
    for ending in (".nii.gz", ".nii"):
        if stem.endswith(ending):
            stem = stem[: -len(ending)]
            break
    if stem == "SUV" and path.parent.name:
        grand = path.parent.parent.name
        stem = f"{grand}_{path.parent.name}" if grand else path.parent.name
    return safe_case_name(stem)


def tumor_stats(image: np.ndarray, mask: np.ndarray, spacing) -> dict:
    """Tumor volume in mL and SUV max/mean inside the mask (None when the mask is empty)."""
    inside = mask > 0
    count = int(inside.sum())
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0
    return {
        "tumor_voxels": count,
        "tumor_volume_ml": count * voxel_ml,
        "suv_max": float(image[inside].max()) if count else None,
        "suv_mean": float(image[inside].mean()) if count else None,
    }


def sample_entry(*, index: int, box, seed: int, seconds: float, files: dict, stats: dict, **extra) -> dict:
    """One sample's record: box (scan voxels, half-open), seed, time, files (relative names), stats."""
    return {"index": index, "box": [int(v) for v in box], "seed": int(seed), "seconds": float(seconds),
            "files": files, **stats, **extra}


def case_entry(*, case: str, input_path: str | Path, samples: list[dict], model: dict, **extra) -> dict:
    """One case's record: the input scan, the model (run, version, checkpoint hash, steps), samples."""
    return {"case": case, "input": str(input_path), "tumorgen_version": __version__, "model": model,
            **extra, "samples": samples}


def merged_manifest(out_dir: Path, entry: dict) -> dict:
    """The folder's manifest with `entry` replacing any earlier entry of the same case."""
    path = Path(out_dir) / MANIFEST_NAME
    cases: list[dict] = []
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            cases = [c for c in old.get("cases", []) if isinstance(c, dict) and c.get("case") != entry["case"]]
        except (json.JSONDecodeError, AttributeError):
            raise TumorGenError(f"{path}: is not a TumorGen manifest; move it away or pick another --out") from None
    cases.append(entry)
    return {"format": "tumorgen-synthesis", "version": 1, "cases": cases}
