"""Tumors placed in the tumor-free tissue of real scans: the paper's Fig. 4 ("healthy subjects") on real PET.

The paper shows TumorGen growing tumors where there was none. The IBSI scans all hold a sarcoma, but each
is cropped 5 cm around it, so most of every scan is tumor-free tissue: here that tissue plays the
healthy subject. Per evaluated case (the PREP split's cases, healthy ones too), `per_case` tumors:

- **where**: a box whose size is one of the model's training boxes (`ModelInfo.box_sizes_mm`, drawn
  as `tumorgen synthesize` draws a sampled box, `synthesis.boxes.sample_box`) and whose centre is a body
  voxel (`boxes.body_mask`); it is kept when none of its voxels lies within `clearance_mm` of the real
  tumor or of a hot spot, and at least `body_fraction` of it is body. A hot spot is a connected region
  above `hot_suv` of at least `HOT_MIN_ML` (bladder, brain, heart, another lesion): a tumor put there
  would be judged against an organ's uptake, not against healthy tissue. `PLACE_TRIES` draws (a size
  and a centre each) before the case is reported as having no room for that tumor;
- **what**: the generator's tumor in that box, the scan unchanged outside it and nothing erased (the
  tissue is healthy): `augmentation.rand_tumor.insert_tumor`, as the downstream study places tumors;
- **judged** by the demo's four tumor checks (`tumor_measures.tumor_check`: a mask, one main
  component, 5-95% of its box, twice as hot as the rest of the box), with its volume and SUV;
- **shown** in one montage by the montage writer: a row per case, its real tumor first, then each
  placed tumor (green), its box dashed.

Every draw comes from `seed` and the case's name, so the same call gives the same boxes and tumors.
Writes OUT/montage.png, table.md/.csv and metrics.json (built in a staging folder, moved at the end).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from tumorgen.api import as_volume
from tumorgen.augmentation.rand_tumor import insert_tumor
from tumorgen.data.box_geometry import box_slices, tight_box
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.tables import Column, render_markdown, write_table
from tumorgen.evaluation.tumor_measures import tumor_check
from tumorgen.generators import TumorGenerator
from tumorgen.io.atomic import staged_dir, write_json
from tumorgen.io.spacing import voxel_spacing
from tumorgen.synthesis.boxes import body_mask, check_box, sample_box
from tumorgen.synthesis.manifest import tumor_stats
from tumorgen.synthesis.montage import Panel, write_montage
from tumorgen.synthesis.pipeline import ModelInfo, derived_seed, sample_seeds

CLEARANCE_MM = 20.0  # a placed box keeps this far from the real tumor: beyond PET's blur (~5-8 mm) and its rim
HOT_SUV = 5.0  # above healthy tissue (muscle, fat ~0.5-1, liver and blood ~2-3), below brain and bladder
HOT_MIN_ML = 1.0  # a hot region smaller than this is noise or a vessel, not an organ
BODY_FRACTION = 0.8  # the share of a placed box inside the body: a tumor half in the air is no test
PLACE_TRIES = 500  # (size, centre) draws per tumor before the case has no room for it
MONTAGE_CASES = 10  # column groups of the montage

COLUMNS = (
    Column("case", "case", "{}"),
    Column("#", "k", "{}"),
    Column("box size (mm)", "size_mm", "{}"),
    Column("to real tumor (mm)", "clearance_mm", "{:.0f}"),
    Column("volume (mL)", "tumor_volume_ml", "{:.1f}"),
    Column("SUV mean", "suv_mean", "{:.2f}"),
    Column("contrast", "contrast", "{:.1f}"),
    Column("box share", "box_share", "{:.0%}"),
    Column("largest component", "largest_share", "{:.0%}"),
    Column("passes", "verdict", "{}"),
)


@dataclass(frozen=True)
class Placement:
    """Where one tumor goes in one scan, or why it does not.

    Args:
        box: the half-open box, or None when no draw fitted.
        tries: draws made.
        clearance_mm: the box's distance to the real tumor (None without a tumor or a box).
    """

    box: tuple[int, int, int, int, int, int] | None
    tries: int
    clearance_mm: float | None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def hot_spots(suv: np.ndarray, tumor: np.ndarray, spacing, *, hot_suv: float = HOT_SUV,
              min_ml: float = HOT_MIN_ML) -> np.ndarray:
    """(X, Y, Z) bool: connected regions above `hot_suv` of at least `min_ml`, the real tumor left out."""
    above = (np.asarray(suv) > hot_suv) & ~(np.asarray(tumor) > 0)
    labels, count = ndimage.label(above)
    if count == 0:
        return above
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(labels.ravel())[1:] * voxel_ml  # (count,) mL
    keep = np.flatnonzero(sizes >= min_ml) + 1
    return np.isin(labels, keep)


@dataclass(frozen=True)
class Zone:
    """Where tumors may go in one scan; every array (X, Y, Z).

    Args:
        near: within the clearance of the real tumor or of a hot spot: no placed box may touch it.
        body: the patient (`boxes.body_mask`): a placed box lies mostly in it.
        to_tumor: mm to the nearest real tumor voxel (inf without a tumor).
    """

    near: np.ndarray
    body: np.ndarray
    to_tumor: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        """The voxels a box centre is drawn from: the body away from the tumor and the hot spots."""
        return self.body & ~self.near


def placement_zone(suv: np.ndarray, tumor: np.ndarray, affine: np.ndarray, *, clearance_mm: float = CLEARANCE_MM,
                   hot_suv: float = HOT_SUV) -> Zone:
    """The scan's `Zone`: what lies within `clearance_mm` of the real tumor or a hot spot, the body, the distances."""
    spacing = voxel_spacing(affine)
    tumor = np.asarray(tumor) > 0
    avoid = tumor | hot_spots(suv, tumor, spacing, hot_suv=hot_suv)
    far = ndimage.distance_transform_edt(~avoid, sampling=spacing) if avoid.any() else np.full(tumor.shape, np.inf)
    to_tumor = (ndimage.distance_transform_edt(~tumor, sampling=spacing) if tumor.any()
                else np.full(tumor.shape, np.inf))
    return Zone(near=far < clearance_mm, body=body_mask(np.asarray(suv)), to_tumor=to_tumor)


def place_box(*, rng: np.random.Generator, zone: Zone, scan, info: ModelInfo, body_fraction: float = BODY_FRACTION,
              tries: int = PLACE_TRIES) -> Placement:
    """Draw boxes (`boxes.sample_box`: a training size, a centre in `zone.centres`) until one touches nothing
    `near` and lies `body_fraction` in the body; boxes the model cannot hold are drawn again."""
    centres = zone.centres
    if not centres.any():
        return Placement(box=None, tries=0, clearance_mm=None)
    for attempt in range(1, tries + 1):
        box = sample_box(rng=rng, region=centres, scan=scan, box_sizes_mm=info.box_sizes_mm, **info.sampling_grid())
        inside = box_slices(box)
        if zone.near[inside].any() or zone.body[inside].mean() < body_fraction:
            continue
        try:
            check_box(box, scan=scan, **info.grid_for(box, scan.affine))
        except TumorGenError:
            continue
        distance = float(zone.to_tumor[inside].min())
        return Placement(box=box, tries=attempt, clearance_mm=distance if np.isfinite(distance) else None)
    return Placement(box=None, tries=tries, clearance_mm=None)


def training_box_info(dataset, generator: TumorGenerator) -> ModelInfo:
    """The model's `ModelInfo`; for a generator without one (syntumor, blob), the PREP grid at its median
    spacing with the training tumors' tight boxes as sizes and no latent grid (factor 1)."""
    if generator.info is not None:
        return generator.info
    sizes, spacings = [], []
    for case in dataset.tumor_cases("train"):
        _, mask, affine = case.load()
        box, spacing = tight_box(mask), voxel_spacing(affine)
        sizes.append(tuple(float((b - a) * s) for a, b, s in zip(box[:3], box[3:], spacing)))
        spacings.append(spacing)
    if not sizes:
        raise fail_on(dataset.root / "dataset.json", "has no training tumors to draw box sizes from")
    return ModelInfo(size=dataset.size, spacing=tuple(float(s) for s in np.median(spacings, axis=0)),
                     suv_max=dataset.suv_max, latent_factor=1, box_sizes_mm=tuple(sizes))


def run_healthy(*, data: str | Path, out: str | Path, generator: TumorGenerator, split: str = "test",
                per_case: int = 2, clearance_mm: float = CLEARANCE_MM, hot_suv: float = HOT_SUV,
                body_fraction: float = BODY_FRACTION, seed: int = 0, overwrite: bool = False,
                log: Callable[[str], None] = _stderr) -> dict:
    """Place `per_case` tumors in the tumor-free tissue of each case of a PREP split; write OUT.

    Args:
        data: the PREP cache.
        out: the output folder (staged; an existing one needs `overwrite`).
        generator: what makes the tumors (`generators.build_generator`), e.g. a TumorGen run at RFM-10.
        split: "test" or "train".
        per_case: tumors per case, each its own box and seed.
        clearance_mm: the least distance of a box from the real tumor and from hot spots.
        hot_suv: SUV above which a region of `HOT_MIN_ML` or more is a hot spot to keep away from.
        body_fraction: the least share of a box inside the body.
        seed: seeds the boxes and the tumors (with each case's name).
        overwrite: replace an existing `out`.
        log: where progress lines go.

    Returns:
        The metrics dictionary written to OUT/metrics.json.
    """
    if per_case < 1:
        raise TumorGenError(f"per_case must be >= 1, got {per_case}")
    if clearance_mm < 0 or not 0 < body_fraction <= 1:
        raise TumorGenError(f"clearance must be >= 0 mm and the body fraction in (0, 1], got {clearance_mm} "
                            f"and {body_fraction}")
    if split not in ("test", "train"):
        raise TumorGenError(f"split must be test or train, got {split!r}")
    dataset = load_prepared(data)
    cases = dataset.split(split)
    if not cases:
        raise fail_on(dataset.root / "dataset.json", f"has no {split} cases")
    info = training_box_info(dataset, generator)
    if not info.box_sizes_mm:
        raise TumorGenError(f"{generator.name} has no training box sizes to draw from (data.json: box_sizes_mm)")
    with staged_dir(out, overwrite=overwrite) as stage:
        records, groups = [], []
        for case in cases:
            record, group = _place_in_case(case, dataset.suv_max, generator, info, per_case=per_case,
                                           clearance_mm=clearance_mm, hot_suv=hot_suv, body_fraction=body_fraction,
                                           seed=seed)
            records.append(record)
            if len(groups) < MONTAGE_CASES:
                groups.append((case.name, group))
            log(f"{case.name}: " + ", ".join(s["verdict"] for s in record["samples"]))
        rows = [{"case": r["case"], **s} for r in records for s in r["samples"]]
        placed = [s for s in rows if s["box"] is not None and "error" not in s]
        metrics = {
            "data": str(Path(data).resolve()), "split": split, "seed": seed, "per_case": per_case,
            "settings": {"clearance_mm": clearance_mm, "hot_suv": hot_suv, "hot_min_ml": HOT_MIN_ML,
                         "body_fraction": body_fraction, "place_tries": PLACE_TRIES},
            "generator": {"name": generator.name, "kind": generator.kind, "steps": generator.steps,
                          "source": generator.source, "record": generator.record},
            "summary": {"cases": len(records), "asked": len(rows), "placed": len(placed),
                        "passing": sum(bool(s["passes"]) for s in placed),
                        "no_room": sum(s["box"] is None for s in rows),
                        "failed": sum("error" in s for s in rows)},
            "cases": records,
        }
        write_table(COLUMNS, rows, stage / "table")
        _write_montage(stage / "montage.png", groups, per_case, generator.name, clearance_mm)
        write_json(stage / "metrics.json", metrics)  # last: its presence means the folder is complete
    return metrics


def _place_in_case(case, suv_max: float, generator: TumorGenerator, info: ModelInfo, *, per_case: int,
                   clearance_mm: float, hot_suv: float, body_fraction: float, seed: int) -> tuple[dict, list[Panel]]:
    """One case's placements: its record for metrics.json and its montage column group (real, then placed)."""
    image, tumor, affine = case.load()
    suv = (image * np.float32(suv_max)).astype(np.float32)  # the cache is clip(SUV, 0, suv_max) / suv_max
    scan = as_volume(suv, affine=affine, what=f"{case.name} scan")
    zone = placement_zone(suv, tumor, affine, clearance_mm=clearance_mm, hot_suv=hot_suv)
    spacing = voxel_spacing(affine)
    panels = [Panel(image=suv, mask=tumor, affine=affine)]
    samples = []
    for k, sample_seed in enumerate(sample_seeds(derived_seed(seed, case.name), per_case)):
        where = place_box(rng=np.random.default_rng([sample_seed, 3]), zone=zone, scan=scan, info=info,
                          body_fraction=body_fraction)
        sample = {"k": k, "seed": sample_seed, "box": where.box, "tries": where.tries,
                  "clearance_mm": where.clearance_mm, "passes": False, "verdict": "no room"}
        panel = Panel(image=suv, mask=np.zeros_like(tumor), affine=affine, contour="lime")
        if where.box is not None:
            extent = np.subtract(where.box[3:], where.box[:3]) * spacing  # (3,) mm
            sample["size_mm"] = " x ".join(f"{e:.0f}" for e in extent)
            try:
                made = insert_tumor(suv, tumor, affine=affine, box=where.box, make=generator, seed=sample_seed,
                                    erase=False)
            except TumorGenError as err:  # a box the model refuses: reported, not fatal
                sample.update(error=str(err), verdict="failed")
            else:
                check = tumor_check(made.image, made.mask, where.box)
                sample.update(**tumor_stats(made.image, made.mask, spacing), **check,
                              verdict="yes" if check["passes"] else "no")
                panel = Panel(image=made.image, mask=made.mask, box=where.box, affine=affine, contour="lime")
        samples.append(sample)
        panels.append(panel)
    record = {"case": case.name, "healthy": bool(case.healthy),
              "real_tumor_ml": float(tumor.sum() * np.prod(spacing) / 1000.0),
              "room_share": float(zone.centres.sum() / max(zone.body.sum(), 1)), "samples": samples}
    return record, panels


def _write_montage(path: Path, groups: list[tuple[str, list[Panel]]], per_case: int, name: str,
                   clearance_mm: float) -> Path:
    """A row per case: its real tumor (red), then each placed tumor (green, box dashed), each case in its own
    gray scale (0 to the SUV p99 of its real scan)."""
    return write_montage(path, [panels for _, panels in groups], row_labels=[case for case, _ in groups],
                         group_titles=["real", *(f"placed #{k}" for k in range(per_case))], scale="row",
                         panel_inches=1.35, colorbar=None,
                         title=f"{name}: tumors placed in tumor-free tissue (green, box dashed)\n"
                               f">= {clearance_mm:g} mm from the real tumor (red) and from hot spots")


def summary_lines(metrics: dict) -> list[str]:
    """What a caller prints: the counts and the table."""
    s = metrics["summary"]
    lines = [f"healthy tissue: {s['placed']} of {s['asked']} tumors placed in {s['cases']} cases "
             f"({s['no_room']} without room, {s['failed']} failed); {s['passing']} pass the four tumor checks"]
    rows = [{"case": r["case"], **x} for r in metrics["cases"] for x in r["samples"]]
    return lines + render_markdown(COLUMNS, rows).splitlines()
