"""The downstream study's data: PREP cases in SUV, the synthetic pools, and the cells' training sets.

A `SyntheticPool` writes the synthetic cases of one generator once and reuses them in every cell;
`write_training_set` writes a cell's real and synthetic cases as a PREP cache of their own (hard links),
which is what `tumorgen train-seg` (and `benchmarks/downstream_generators.py`) read.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from tumorgen.augmentation.rand_tumor import InsertedTumor, TumorMaker, insert_tumor
from tumorgen.data.prepared import PreparedDataset
from tumorgen.errors import TumorGenError
from tumorgen.evaluation.downstream_plan import plan_placement
from tumorgen.io.atomic import write_json
from tumorgen.io.nifti import save_volume


class Loaded:
    """The PREP cases in SUV, loaded once."""

    def __init__(self, dataset: PreparedDataset):
        self.dataset = dataset
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def suv(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(SUV (X, Y, Z) float32, label uint8, affine) of a case."""
        if name not in self._cache:
            image, mask, affine = self.dataset.case(name).load()
            self._cache[name] = (image * np.float32(self.dataset.suv_max), mask.astype(np.uint8), affine)
        return self._cache[name]


class SyntheticPool:
    """Synthetic cases of one generator, written once under `folder` and reused by every cell.

    A sample is `<case>_syn<k>_image.nii.gz` (PREP range) + `_mask.nii.gz` (the training label: real
    and new tumor), then `<case>_syn<k>.json` (written last: its presence means the sample is whole).
    A generator that refuses a sample (a box its model cannot hold) leaves a json with "error".
    """

    def __init__(self, folder: Path, *, loaded: Loaded, make: Callable[[], TumorMaker], seed: int,
                 modes: tuple[str, ...]):
        self.folder = Path(folder)
        self.loaded = loaded
        self._make_factory = make
        self._make: TumorMaker | None = None
        self.seed = seed
        self.modes = modes

    def paths(self, case: str, k: int) -> dict:
        stem = self.folder / f"{case}_syn{k}"
        return {"image": Path(f"{stem}_image.nii.gz"), "mask": Path(f"{stem}_mask.nii.gz"),
                "record": Path(f"{stem}.json")}

    def get(self, case: str, k: int) -> dict:
        """The sample's record ({"case", "k", "mode", "box", "seed", ...} or with "error"), built if missing."""
        paths = self.paths(case, k)
        if paths["record"].is_file():
            return json.loads(paths["record"].read_text())
        suv, label, affine = self.loaded.suv(case)
        where = plan_placement(suv, label, case=case, k=k, seed=self.seed, modes=self.modes)
        record = {"case": case, "k": k, "mode": where.mode, "box": list(where.box), "seed": where.seed}
        if self._make is None:
            self._make = self._make_factory()
        started = time.perf_counter()
        try:
            inserted: InsertedTumor = insert_tumor(suv, label, affine=affine, box=where.box, make=self._make,
                                                   seed=where.seed, erase=where.mode == "regenerate")
        except TumorGenError as err:
            record["error"] = str(err)
            write_json(paths["record"], record)
            return record
        suv_max = np.float32(self.loaded.dataset.suv_max)
        save_volume(np.clip(inserted.image, 0, suv_max) / suv_max, affine, paths["image"], dtype=np.float32)
        save_volume(inserted.label, affine, paths["mask"], dtype=np.uint8)
        record.update(new_voxels=int(inserted.mask.sum()), label_voxels=int(inserted.label.sum()),
                      real_voxels=int(label.sum()), seconds=time.perf_counter() - started)
        write_json(paths["record"], record)
        return record



def _link(src: Path, dst: Path) -> None:
    """Hard link (a PREP cache may not point outside itself), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_training_set(folder: Path, *, dataset: PreparedDataset, real: list[str],
                       synthetic: list[tuple[dict, dict]]) -> Path:
    """A PREP cache whose train split is the cell's real and synthetic cases (what train-seg reads)."""
    if folder.exists():
        shutil.rmtree(folder)
    cases, entries = folder / "cases", []
    for name in real:
        case = dataset.case(name)
        _link(case.image_path, cases / case.image_path.name)
        _link(case.mask_path, cases / case.mask_path.name)
        entries.append({**case.meta, "image": f"cases/{case.image_path.name}", "mask": f"cases/{case.mask_path.name}"})
    for record, paths in synthetic:
        name = f"{record['case']}_syn{record['k']}"
        _link(paths["image"], cases / paths["image"].name)
        _link(paths["mask"], cases / paths["mask"].name)
        entries.append({**dataset.case(record["case"]).meta, "name": name, "healthy": False,
                        "image": f"cases/{paths['image'].name}", "mask": f"cases/{paths['mask'].name}",
                        "synthetic": {k: record[k] for k in ("mode", "box", "seed")}})
    info = {**dataset.info, "cases": entries, "split": {"train": [e["name"] for e in entries], "test": []},
            "root": str(dataset.root)}
    write_json(folder / "dataset.json", info)
    return folder
