"""Write phantom datasets in the folder layouts and file names of the real datasets.

The readers of `tumorgen prepare` are written for AutoPET, HECKTOR 2021 and nnU-Net v2 folders; the
phantoms are written in exactly those layouts so the readers are tested on the layout they will meet:

- autopet: `PETCT_<hex id>/<study date-like folder>/SUV.nii.gz, CTres.nii.gz, SEG.nii.gz`
  (SEG all zero for healthy cases, as for AutoPET's negative studies); torso anatomy.
- hecktor: `<CENTER><nnn>_pt.nii.gz, _ct.nii.gz, _gtvt.nii.gz` plus `bbox.csv`
  (PatientID,x1,x2,y1,y2,z1,z2: a 144 mm box in world mm around the oropharynx); head-and-neck anatomy.
  Unlike real HECKTOR, CT and GTVt are on the PET grid here.
- nnunet: `imagesTr/<case>_0000.nii.gz`, `labelsTr/<case>.nii.gz`, `dataset.json` (v2); torso anatomy.

Each case is seeded from (seed, tumor/healthy, index), so growing --cases leaves earlier cases
byte-identical; nibabel writes gzip with mtime 0 and no file name, so same seed means same bytes.
The whole folder is staged and renamed at the end: a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tumorgen.data.phantom import PhantomCase, case_rng, make_phantom
from tumorgen.io.atomic import staged_dir, write_json, write_text
from tumorgen.io.nifti import save_volume

LAYOUTS = ("autopet", "hecktor", "nnunet")
LAYOUT_REGION = {"autopet": "torso", "hecktor": "head-neck", "nnunet": "torso"}
HECKTOR_CENTERS = ("CHGJ", "CHMR", "CHUM", "CHUS")  # the HECKTOR 2021 training centres
HECKTOR_HEALTHY_FROM = 500  # healthy cases are numbered from here, so tumor ids never move
HECKTOR_BOX_MM = 144.0  # HECKTOR 2021's bounding boxes are 144 mm cubes around the oropharynx


@dataclass(frozen=True)
class WrittenCase:
    """What was written for one case (paths are final, not staged)."""

    name: str
    healthy: bool
    tumor_volume_ml: float
    suv_max: float  # SUVmax in the tumor mask; 0 for a healthy case
    files: tuple[Path, ...]


def case_name(layout: str, *, seed: int, healthy: bool, index: int) -> str:
    """The case identifier in the layout's own style (independent of how many cases are written)."""
    if layout == "autopet":
        digest = hashlib.sha256(f"{seed}:{int(healthy)}:{index}".encode()).hexdigest()
        return f"PETCT_{digest[:10]}"
    if layout == "hecktor":
        number = index // len(HECKTOR_CENTERS) + 1 + (HECKTOR_HEALTHY_FROM if healthy else 0)
        return f"{HECKTOR_CENTERS[index % len(HECKTOR_CENTERS)]}{number:03d}"
    if layout == "nnunet":
        return f"{'healthy' if healthy else 'tumor'}_{index:03d}"
    raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")


def write_phantom_dataset(
    *,
    layout: str,
    out: str | Path,
    cases: int,
    healthy: int = 0,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
    on_case: Callable[[WrittenCase], None] | None = None,
) -> list[Path]:
    """Write `cases` tumor-bearing and `healthy` tumor-free phantoms in `layout` under `out`.

    Args:
        layout: "autopet", "hecktor" or "nnunet".
        out: the dataset folder; refused if it exists, unless `overwrite`.
        cases: number of tumor-bearing cases.
        healthy: number of healthy cases.
        size: grid edge in voxels (the anatomy keeps its size in mm; voxels get finer).
        seed: the dataset seed; each case's generator derives from (seed, kind, index).
        overwrite: replace an existing `out` (only once the new one is complete).
        on_case: called after each case with what was written (for progress and tables).

    Returns:
        The final paths of all files written, in writing order.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if cases < 0 or healthy < 0 or cases + healthy == 0:
        raise ValueError(f"need at least one case and no negative counts; got cases={cases}, healthy={healthy}")
    out = Path(out)
    written: list[Path] = []
    bbox_rows: list[str] = []
    names: list[str] = []
    with staged_dir(out, overwrite=overwrite) as stage:
        plan = [(False, i) for i in range(cases)] + [(True, k) for k in range(healthy)]
        for is_healthy, index in plan:
            rng = case_rng(seed, healthy=is_healthy, index=index)
            phantom = make_phantom(region=LAYOUT_REGION[layout], size=size, with_tumor=not is_healthy, rng=rng)
            name = case_name(layout, seed=seed, healthy=is_healthy, index=index)
            relative = _write_case(layout, stage, name, phantom, rng)
            if layout == "hecktor":
                bbox_rows.append(_hecktor_bbox_row(name, phantom))
            names.append(name)
            files = tuple(out / r for r in relative)
            written.extend(files)
            if on_case is not None:
                on_case(WrittenCase(name, is_healthy, phantom.tumor_volume_ml, phantom.suv_max, files))
        if layout == "hecktor":
            write_text(stage / "bbox.csv", "PatientID,x1,x2,y1,y2,z1,z2\n" + "".join(bbox_rows))
            written.append(out / "bbox.csv")
        if layout == "nnunet":
            write_json(stage / "dataset.json", _nnunet_dataset_json(len(names)))
            written.append(out / "dataset.json")
    return written


def _write_case(layout: str, stage: Path, name: str, phantom: PhantomCase, rng: np.random.Generator) -> list[Path]:
    """Write one case's files under `stage`; return their paths relative to the dataset folder."""
    if layout == "autopet":
        folder = Path(name) / _autopet_study(rng)
        files = {"SUV.nii.gz": (phantom.suv, np.float32), "CTres.nii.gz": (phantom.ct, np.int16),
                 "SEG.nii.gz": (phantom.mask, np.uint8)}
        relative = [folder / f for f in files]
    elif layout == "hecktor":
        files = {f"{name}_pt.nii.gz": (phantom.suv, np.float32), f"{name}_ct.nii.gz": (phantom.ct, np.int16),
                 f"{name}_gtvt.nii.gz": (phantom.mask, np.uint8)}
        relative = [Path(f) for f in files]
    else:
        files = {f"imagesTr/{name}_0000.nii.gz": (phantom.suv, np.float32),
                 f"labelsTr/{name}.nii.gz": (phantom.mask, np.uint8)}
        relative = [Path(f) for f in files]
    for rel, (array, dtype) in zip(relative, files.values()):
        save_volume(array, phantom.affine, stage / rel, dtype=dtype)
    return relative


def _autopet_study(rng: np.random.Generator) -> str:
    """A study folder named like AutoPET's (date-like, then the study description and a number)."""
    year, month, day = int(rng.integers(2002, 2021)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return f"{month:02d}-{day:02d}-{year}-NA-PET-CT Ganzkoerper  primaer mit KM-{int(rng.integers(10000, 99999))}"


def _hecktor_bbox_row(name: str, phantom: PhantomCase) -> str:
    """A 144 mm box in world mm centred on the oropharynx, as HECKTOR 2021's bbox.csv gives."""
    voxels = np.argwhere(phantom.organs["oropharynx"]).mean(axis=0)  # (3,) voxel centre
    center = phantom.affine[:3, :3] @ voxels + phantom.affine[:3, 3]  # (3,) world mm
    low, high = center - HECKTOR_BOX_MM / 2, center + HECKTOR_BOX_MM / 2
    values = [v for pair in zip(low, high) for v in pair]  # x1, x2, y1, y2, z1, z2
    return name + "," + ",".join(f"{v:.3f}" for v in values) + "\n"


def _nnunet_dataset_json(num_training: int) -> dict:
    return {
        "name": "TumorGenPhantom",
        "description": "Procedural FDG-PET torso phantoms with lung tumors, written by `tumorgen phantom`.",
        "channel_names": {"0": "PET"},
        "labels": {"background": 0, "tumor": 1},
        "numTraining": num_training,
        "file_ending": ".nii.gz",
    }
