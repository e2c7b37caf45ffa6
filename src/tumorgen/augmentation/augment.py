"""The augment job: synthesize tumors into a dataset and write an nnU-Net v2 raw dataset.

What synthetic tumors are for is training a segmenter. For every case of a dataset (any layout
`data.layouts` reads) this writes the real case (PET + its own label; a healthy case gets an empty
label) and `per_case` synthetic ones, `<case>_syn<k>`, into `nnUNet_raw/DatasetXXX_Name/`, then
dataset.json, ready for `nnUNetv2_plan_and_preprocess`.

- Boxes are sampled as `tumorgen synthesize` samples them (lungs of the CT beside an AutoPET scan,
  else the body) from a seed derived from (seed, case name, k), so a case's samples do not depend on
  `--limit`, on the order of the cases or on an interruption.
- A case that already holds a tumor keeps it: the synthetic label is the union of the existing tumor
  and the generated one, and a sampled box that overlaps the existing tumor is drawn again (up to
  `MAX_BOX_TRIES` times, then that sample is skipped and reported).
- Resumable: a case counts as written when its label exists (the writer writes it last), and such
  cases are skipped; dataset.json is written at the end from what is on disk.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorgen.errors import TumorGenError, fail_on
from tumorgen.export.nnunet import NnunetDatasetWriter
from tumorgen.io.atomic import write_json
from tumorgen.io.nifti import Volume, check_same_grid, load_volume
from tumorgen.synthesis.boxes import check_box, sample_box, sampling_region
from tumorgen.synthesis.pipeline import check_scan_is_suv, derived_seed

MAX_BOX_TRIES = 5  # a box overlapping the case's own tumor is drawn again this many times at most
PROVENANCE_NAME = "tumorgen_augment.json"  # beside dataset.json; nnU-Net ignores it


@dataclass
class AugmentReport:
    """What one augment run did.

    Args:
        dataset_dir: the nnU-Net dataset folder.
        real_written, synthetic_written: cases written by this run.
        resumed: cases (real or synthetic) already on disk, skipped.
        skipped_cases: (case, reason) for bad cases skipped with on_error="skip".
        skipped_samples: (case id, reason) for samples with no box clear of the existing tumor.
        num_training: numTraining in the final dataset.json.
    """

    dataset_dir: Path
    real_written: int = 0
    synthetic_written: int = 0
    resumed: int = 0
    skipped_cases: list = field(default_factory=list)
    skipped_samples: list = field(default_factory=list)
    num_training: int = 0


def load_case(case) -> tuple[Volume, np.ndarray, Volume | None]:
    """A case's PET (checked to be SUV), its tumor mask (zeros without one) and its CT, if any."""
    scan = load_volume(case.image)
    check_scan_is_suv(scan, whole=True)
    if case.mask is not None:
        mask = load_volume(case.mask, kind="mask")
        check_same_grid(scan, mask)
        tumor = mask.array.astype(np.uint8)
    else:
        tumor = np.zeros(scan.array.shape, dtype=np.uint8)
    ct = None
    if case.ct is not None and Path(case.ct).is_file():
        ct = load_volume(case.ct)
        check_same_grid(scan, ct)
    return scan, tumor, ct


def _box_clear_of(box, tumor: np.ndarray) -> bool:
    x0, y0, z0, x1, y1, z1 = box
    return not tumor[x0:x1, y0:y1, z0:z1].any()


def choose_box(*, info, scan: Volume, tumor: np.ndarray, region: np.ndarray, seeds: list[int]):
    """The first sampled box (one try per seed) that does not overlap the case's tumor, or None.

    `info` is the model's `pipeline.ModelInfo`: its training box sizes and the window a box must fit."""
    for try_seed in seeds:
        box = sample_box(rng=np.random.default_rng(try_seed), region=region, scan=scan,
                         box_sizes_mm=info.box_sizes_mm, size=info.size, spacing=info.spacing,
                         latent_factor=info.latent_factor, axcodes=info.axcodes)
        box = check_box(box, scan=scan, size=info.size, spacing=info.spacing, latent_factor=info.latent_factor,
                        axcodes=info.axcodes)
        if _box_clear_of(box, tumor):
            return box
    return None


def augment_dataset(
    *,
    generator,
    cases: list,
    out: str | Path,
    dataset_id: int,
    name: str,
    per_case: int,
    healthy_only: bool = False,
    seed: int = 0,
    on_error: str = "fail",
    overwrite: bool = False,
    progress: bool = True,
) -> AugmentReport:
    """Write real and synthetic cases into an nnU-Net v2 raw dataset (resumable).

    Args:
        generator: a model's `generators.TumorGenerator` (`build_generator("tumorgen", MODEL, steps=...)`):
            its `info` says where boxes may go, its `record` is written beside every sample.
        cases: `data.layouts.CaseFiles` to process (already limited by the caller).
        out: nnUNet_raw, or the dataset folder itself.
        dataset_id, name: the nnU-Net dataset id (1-999) and name.
        per_case: synthetic samples per case.
        healthy_only: synthesize only into cases without a tumor (all real cases are still written).
        seed: the run's seed; every sample's seed derives from (seed, case name, k).
        on_error: "fail" (a bad case stops the run) or "skip" (it is listed and skipped).
        overwrite: delete an existing dataset folder of this id and name first (default: resume it).
        progress: show a progress bar over cases.
    """
    from tqdm import tqdm

    if per_case < 0:
        raise TumorGenError(f"--per-case must be 0 or more, got {per_case}")
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    writer = NnunetDatasetWriter(out, dataset_id=dataset_id, name=name,
                                 description="PET with TumorGen synthetic tumors (tumorgen augment)")
    if overwrite and writer.dataset_dir.exists():
        shutil.rmtree(writer.dataset_dir)
    if generator.info is None:
        raise TumorGenError(f"augment needs a trained model's generator (it samples boxes as the model's "
                            f"training boxes), not {generator.kind}")
    report = AugmentReport(dataset_dir=writer.dataset_dir)
    provenance = _read_provenance(writer.dataset_dir)
    for case in tqdm(cases, desc="augment", unit="case", disable=not progress):
        try:
            _augment_case(case, generator=generator, writer=writer, report=report, provenance=provenance,
                          per_case=per_case, healthy_only=healthy_only, seed=seed)
        except TumorGenError as err:
            if on_error == "fail":
                raise
            report.skipped_cases.append((case.name, str(err)))
        if writer.dataset_dir.exists():  # after every case, so an interrupted run keeps its record
            provenance["skipped_cases"] = [{"case": c, "reason": r} for c, r in report.skipped_cases]
            write_json(writer.dataset_dir / PROVENANCE_NAME, provenance)
    writer.finalize()
    report.num_training = len(writer.case_ids())
    return report


def _augment_case(case, *, generator, writer: NnunetDatasetWriter, report: AugmentReport, provenance: dict,
                  per_case: int, healthy_only: bool, seed: int) -> None:
    synthetic_ids = [f"{case.name}_syn{k}" for k in range(per_case)]
    pending = [cid for cid in [case.name, *synthetic_ids] if not writer.has_case(cid)]
    report.resumed += 1 + per_case - len(pending)
    if not pending:
        return
    scan, tumor, ct = load_case(case)
    if not writer.has_case(case.name):
        writer.add_case(case.name, scan.array, tumor, scan.affine)
        report.real_written += 1
    has_tumor = bool(tumor.any())
    if healthy_only and has_tumor:
        return
    todo = [k for k, cid in enumerate(synthetic_ids) if cid in pending]
    if not todo:
        return
    region, region_name = sampling_region(scan, ct=ct)
    for k in todo:
        case_id = synthetic_ids[k]
        tries = [derived_seed(seed, case.name, k, attempt) for attempt in range(MAX_BOX_TRIES)]
        box = choose_box(info=generator.info, scan=scan, tumor=tumor, region=region, seeds=tries)
        if box is None:
            report.skipped_samples.append(
                (case_id, f"no box clear of the existing tumor in {MAX_BOX_TRIES} tries; sample skipped"))
            continue
        sample_seed = derived_seed(seed, case.name, k)
        image, mask = generator(scan.array, scan.affine, box, sample_seed)
        label = np.maximum(mask, tumor).astype(np.uint8)  # the existing tumor stays labelled
        writer.add_case(case_id, image, label, scan.affine)
        report.synthetic_written += 1
        provenance["synthetic"][case_id] = {"source": str(case.image), "box": [int(v) for v in box],
                                            "box_from": region_name, "seed": sample_seed,
                                            "steps": generator.steps, "model": generator.record}


def _read_provenance(dataset_dir: Path) -> dict:
    import json

    path = dataset_dir / PROVENANCE_NAME
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("synthetic"), dict):
                return data
        except (OSError, json.JSONDecodeError):
            pass
        raise fail_on(path, "is not a TumorGen augment record; move it away or pass --overwrite")
    return {"format": "tumorgen-augment", "version": 1, "synthetic": {}}
