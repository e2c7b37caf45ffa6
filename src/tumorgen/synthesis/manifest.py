"""manifest.json: what was synthesized, from what, with which model, so any output can be traced.

One manifest per output folder. Several cases may be written into one folder: each call replaces
its own case's entry and keeps the others. Case names become file names, so they are sanitized here.

A case's default name comes from its input path (`case_name_from_path`): the file's stem, unless
the stem only names the modality or "the image" (`PET_image`, `SUV`, `CTres`, ...), as in datasets that
keep one folder per patient; then the nearest folder whose name is not generic too, and for AutoPET
(`PETCT_<patient>/<study>/SUV.nii.gz`) the patient and study folders together.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from tumorgen import __version__
from tumorgen.errors import TumorGenError

MANIFEST_NAME = "manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# A stem made only of these words (any case, joined by "_", "-", "." or spaces) names a modality or
# "the image", not a case: STS's PET_image, AutoPET's SUV / CTres, pt / ct, image. ("scan" is not
# one: `scan.nii.gz -> scan_0_pet.nii.gz` is the documented single-file example.)
GENERIC_WORDS = frozenset({"pet", "pt", "suv", "ct", "ctres", "image", "img"})
# AutoPET's patient folders; their study folders (dates) only name a case together with the patient.
AUTOPET_PATIENT_PREFIX = "PETCT_"
# Case names become `<case>_<k>_mask.nii.gz`; most file systems stop at 255 bytes per name.
MAX_CASE_NAME = 200


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


def check_case_name(name: str, *, flag: str = "--name") -> str:
    """Refuse a user's case name that is not already a safe file-name stem (it is never rewritten).

    Safe: letters, digits, ".", "_" and "-", neither starting nor ending with ".", "_" or "-", no "..",
    at most `MAX_CASE_NAME` characters. `safe_case_name` leaves such a name unchanged, so the
    outputs carry exactly the name given.
    """
    name = str(name)
    try:
        safe = safe_case_name(name)
    except TumorGenError:
        safe = None
    if safe != name or len(name) > MAX_CASE_NAME:
        raise TumorGenError(f"{flag} {name!r} is not a safe file-name stem: use at most {MAX_CASE_NAME} letters, "
                            "digits, '.', '_' and '-', not '..', and start and end with a letter or digit")
    return name


def is_generic_name(name: str) -> bool:
    """True for a stem or folder name made only of `GENERIC_WORDS` ("PET_image", "SUV", "ct")."""
    words = [w for w in re.split(r"[\s._-]+", name.lower()) if w]
    return bool(words) and all(w in GENERIC_WORDS for w in words)


def case_name_from_path(path: str | Path) -> str:
    """A case name for an input scan, unique in the usual dataset layouts.

    `dir/case_007.nii.gz` -> "case_007" (the stem). A generic stem (`is_generic_name`) takes the nearest
    folder whose name is not generic: `STS_001/PET_image.nii.gz` -> "STS_001"; below an AutoPET
    patient folder, patient and study: `PETCT_0a1/03-2002-NA-PET/SUV.nii.gz` ->
    "PETCT_0a1_03-2002-NA-PET". A relative path is made absolute first, so a bare `SUV.nii.gz` is
    named after the current folder. With no usable folder the stem is kept.
    """
    path = Path(os.path.abspath(path))  # normalizes "..", keeps symlinked folders' own names
    stem = path.name
    for ending in (".nii.gz", ".nii"):
        if stem.endswith(ending):
            stem = stem[: -len(ending)]
            break
    if not is_generic_name(stem):
        return _case_name_or_fail(stem, path)
    folders = [p.name for p in path.parents if p.name]  # nearest first
    for i, folder in enumerate(folders):
        if is_generic_name(folder) or not _UNSAFE.sub("", folder).strip("._-"):
            continue
        above = folders[i + 1] if i + 1 < len(folders) else ""
        if above.startswith(AUTOPET_PATIENT_PREFIX) and not folder.startswith(AUTOPET_PATIENT_PREFIX):
            return safe_case_name(f"{above}_{folder}")
        return safe_case_name(folder)
    return _case_name_or_fail(stem, path)


def _case_name_or_fail(name: str, path: Path) -> str:
    try:
        return safe_case_name(name)
    except TumorGenError:
        raise TumorGenError(f"{path}: its name gives no usable case name (letters, digits, '.', '_', '-'); "
                            "choose one with --name") from None


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
