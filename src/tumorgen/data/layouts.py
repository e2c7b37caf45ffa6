"""Dataset readers: a folder and a layout name -> the list of cases and their files.

Readers only find files; they read no voxels. A file a layout requires but that is absent (a SEG.nii.gz
missing beside its SUV.nii.gz) is still listed at its expected path, so that reading it later fails
with one sentence naming exactly that file, and `prepare --on-error skip` can skip that case alone.
Case names become output file names, so they are sanitized here, once.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from tumorgen.errors import TumorGenError, fail_on

LAYOUTS = ("autopet", "hecktor", "nnunet", "pairs")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_BBOX_COLUMNS = ("PatientID", "x1", "x2", "y1", "y2", "z1", "z2")


@dataclass(frozen=True)
class CaseFiles:
    """One case's files. `mask` is None when the dataset has no label for it (HECKTOR test cases)."""

    name: str
    image: Path
    mask: Path | None
    ct: Path | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def sanitize_name(text: str) -> str:
    """A case name safe as a file name: only [A-Za-z0-9._-], no '..', no leading dot."""
    name = _UNSAFE.sub("_", text.strip())
    name = re.sub(r"\.{2,}", "_", name).strip("._-")
    return name or "case"


def find_cases(root: str | Path, layout: str, *, image_glob: str | None = None,
               mask_glob: str | None = None) -> list[CaseFiles]:
    """List the cases of a dataset folder, sorted by name.

    Args:
        root: the dataset folder.
        layout: "autopet", "hecktor", "nnunet" or "pairs".
        image_glob: for "pairs", the images' glob pattern relative to root (e.g. "*/PET_image.nii.gz").
        mask_glob: for "pairs", the masks' glob pattern; an image and a mask pair up when the parts
            their patterns' wildcards matched are equal (e.g. the case folder's name).
    """
    if layout not in LAYOUTS:
        raise TumorGenError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.exists():
        raise fail_on(root, "dataset folder not found")
    if not root.is_dir():
        raise fail_on(root, "is not a folder")
    if not any(root.iterdir()):
        raise fail_on(root, "dataset folder is empty")
    if layout == "pairs":
        if not image_glob or not mask_glob:
            raise TumorGenError("the pairs layout needs both --image-glob and --mask-glob")
        cases = _find_pairs(root, image_glob, mask_glob)
        expected = f"images matching {image_glob!r}"
    else:
        cases = {"autopet": _find_autopet, "hecktor": _find_hecktor, "nnunet": _find_nnunet}[layout](root)
        expected = {"autopet": "PETCT_*/<study>/SUV.nii.gz", "hecktor": "<case>_pt.nii.gz",
                    "nnunet": "imagesTr/<case>_0000.nii.gz"}[layout]
    if not cases:
        raise fail_on(root, f"no {layout} cases found (looked for {expected})")
    return _unique_names(sorted(cases, key=lambda c: c.name))


def _unique_names(cases: list[CaseFiles]) -> list[CaseFiles]:
    """Sanitizing may map two names onto one; number the later ones rather than overwrite outputs."""
    seen: dict[str, int] = {}
    out = []
    for case in cases:
        count = seen.get(case.name, 0)
        seen[case.name] = count + 1
        if count:
            case = CaseFiles(name=f"{case.name}-{count + 1}", image=case.image, mask=case.mask,
                             ct=case.ct, extra=case.extra)
        out.append(case)
    return out


def _find_autopet(root: Path) -> list[CaseFiles]:
    cases = []
    for patient in sorted(p for p in root.glob("PETCT_*") if p.is_dir()):
        for study in sorted(p for p in patient.iterdir() if p.is_dir()):
            files = [study / n for n in ("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz")]
            if not any(f.exists() for f in files):
                continue
            cases.append(CaseFiles(name=sanitize_name(f"{patient.name}_{study.name}"), image=files[0],
                                   mask=files[2], ct=files[1]))
    return cases


def _find_hecktor(root: Path) -> list[CaseFiles]:
    boxes = _read_hecktor_boxes(root)
    cases = []
    for image in sorted(root.rglob("*_pt.nii.gz")):
        stem = image.name[: -len("_pt.nii.gz")]
        mask = image.with_name(f"{stem}_gtvt.nii.gz")
        extra = {"bbox_mm": boxes[stem]} if stem in boxes else {}
        if not mask.exists():
            extra["unlabelled"] = f"{mask.name} not found (an unlabelled test case)"
        cases.append(CaseFiles(name=sanitize_name(stem), image=image, mask=mask if mask.exists() else None,
                               ct=image.with_name(f"{stem}_ct.nii.gz"), extra=extra))
    return cases


def _read_hecktor_boxes(root: Path) -> dict[str, tuple[float, ...]]:
    """HECKTOR 2021's bbox.csv: PatientID,x1,x2,y1,y2,z1,z2 in world mm (as the challenge gives them)."""
    found = sorted(root.glob("*bbox*.csv"))
    if not found:
        return {}
    path = found[0]
    boxes = {}
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or any(c not in reader.fieldnames for c in _BBOX_COLUMNS):
                raise fail_on(path, f"needs the columns {','.join(_BBOX_COLUMNS)}")
            for row in reader:
                boxes[row["PatientID"].strip()] = tuple(float(row[c]) for c in _BBOX_COLUMNS[1:])
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
        raise fail_on(path, f"is not a readable bounding-box table ({err})") from None
    return boxes


def _find_nnunet(root: Path) -> list[CaseFiles]:
    cases = []
    for image in sorted((root / "imagesTr").glob("*_0000.nii.gz")):
        stem = image.name[: -len("_0000.nii.gz")]
        cases.append(CaseFiles(name=sanitize_name(stem), image=image, mask=root / "labelsTr" / f"{stem}.nii.gz"))
    return cases


def _find_pairs(root: Path, image_glob: str, mask_glob: str) -> list[CaseFiles]:
    masks = {}
    mask_pattern = _glob_regex(mask_glob)
    for path in root.glob(mask_glob):
        match = mask_pattern.fullmatch(path.relative_to(root).as_posix())
        if match and path.is_file():
            masks[match.groups()] = path
    image_pattern = _glob_regex(image_glob)
    cases = []
    for path in sorted(root.glob(image_glob)):
        match = image_pattern.fullmatch(path.relative_to(root).as_posix())
        if not match or not path.is_file():
            continue
        key = match.groups()
        name = sanitize_name(_pair_name(image_glob, path.relative_to(root), key))
        extra = {} if key in masks else {"missing_mask": f"no mask matching {mask_glob!r} pairs with it"}
        cases.append(CaseFiles(name=name, image=path, mask=masks.get(key), extra=extra))
    return cases


def _pair_name(pattern: str, relative: Path, key: tuple[str, ...]) -> str:
    """Name a pair by the folders its pattern's wildcards matched (STS_001), else by what they matched."""
    pattern_parts, path_parts = pattern.split("/"), relative.parts
    if len(pattern_parts) == len(path_parts):
        folders = [part for glob, part in zip(pattern_parts[:-1], path_parts[:-1]) if any(c in glob for c in "*?[")]
        if folders:
            return "_".join(folders)
    parts = [part.strip("/").replace("/", "_") for part in key if part.strip("/")]
    return "_".join(parts) or relative.parent.name or relative.name.split(".")[0]


def _glob_regex(pattern: str) -> re.Pattern:
    """A glob pattern as a regex whose groups capture what each wildcard matched."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("((?:[^/]+/)*)")
            i += 3
        elif pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif pattern[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append("([^/])")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end].replace("\\", "\\\\")
            out.append(f"([{'^' + body[1:] if body.startswith('!') else body}])")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))
