"""The paired protocol: every method regenerates the same erased tumor boxes of real held-out scans.

Why paired: a generated set judged against real scans at *other* places mixes up "is the tumor real-
looking" with "is this place real-looking". Here every method works at the place of a real tumor, in
the same scan, so the real scan is the answer key:

- per evaluated case (a PREP case with a tumor), the box is the tight box of its real mask plus
  `BOX_MARGIN` voxels on each side, clipped to the volume (half-open, PREP grid voxels);
- the box is erased (`data.erase.erase_box`: a smooth background from the `ERASE_SHELL`-voxel
  shell around it, with the scan's grain), the same erased scan for every method, so no method can
  reuse the real tumor left in its box; each method (a `generators.TumorGenerator`) then regenerates
  the box from the erased scan;
- outside the box the output *is* the real scan (the method's own changes there, e.g. SynTumor's
  blurred rim, are dropped and reported as `raw_outside_box_max_abs_diff`); the mask is kept inside
  the box;
- the outputs are compared with the real cases on tumor-centred slices (each set through its own
  mask; an empty generated mask through the box centre), `slices_per_plane` per plane: FID per plane
  (axial/sagittal/coronal) and their average, and KID(Avg). Beside them the real-vs-real floor: the same
  metric between the real evaluated cases and equally many real TRAIN cases (mean and spread over
  `FLOOR_REPEATS` draws), so a reader sees how large FID is at this n for two real sets;
- per case (`evaluation.paired_measures`): mean and max SUV inside the generated mask against inside
  the real mask, mask volume generated/real, one 26-connected component, non-empty, the seam step, and
  seconds per sample (the method's call only; the erase is the protocol's).

Methods: `tumorgen` (one row per Euler step count in `steps`, named `tumorgen-N`; an uptake-conditioned
model draws each tumor's mean SUV from the training tumors', and adds rows `tumorgen-N-told` for N in
`told_steps`, told each real tumor's mean SUV), `difftumor`, `bld` and `medfusion` (`baseline_sampler`
with `baseline_steps`, the same for all three), `hagan` (one pass, no sampler), `syntumor` and `blob` (fitted to the train split's tumors), `empty` (the erased scan,
empty mask: the score of removing the tumor). For the model methods the fixed cost (loading, plus a
first call on the first case) is reported apart from seconds per sample.

`split="val"` chooses settings without touching the test split: `val_cases` cases drawn (seeded by
`val_seed`) from the TRAIN split play the test cases; the floor's real set and the reference tumors
then come from the remaining train cases.

Writes OUT/table.md, table.csv, metrics.json (everything, per case too) and montage.png (rows: real,
then each method; columns: up to `MONTAGE_CASES` cases). The folder is built in a staging folder and
moved into place at the end. The scores are `paired_scores`' (FID/KID, floor, radiomics), the
per-case measures `paired_measures`', the table, montage and printed summary `paired_report`'s.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tumorgen.data.box_geometry import box_slices, tight_box
from tumorgen.data.erase import erase_box
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.paired_measures import MEAN_TOLERANCE, VOLUME_TOLERANCE, case_measures, summarize
from tumorgen.evaluation.paired_report import COLUMNS, write_paired_montage
from tumorgen.evaluation.paired_scores import FLOOR_REPEATS, feature_extractor, fid_scores, radiomic_scores
from tumorgen.evaluation.radiomics import mirp_available
from tumorgen.evaluation.uptake_request import parse_asked, render_requests, request_uptakes  # noqa: F401 (parse_asked: the command's)
from tumorgen.evaluation.radiomics_compare import render as render_radiomics
from tumorgen.evaluation.tables import write_table
from tumorgen.evaluation.tumor_measures import connected_components, seam_step
from tumorgen.generators import (BASELINE_KINDS, KINDS, MODEL_KINDS, REAL_INPUT_KINDS, TumorGenerator, build_generator,
                                 reference_uptake)
from tumorgen.io.atomic import staged_dir, write_json, write_text
from tumorgen.synthesis.pipeline import sample_seeds

BOX_MARGIN = 2  # voxels added to each side of the real tumor's tight box
ERASE_SHELL = 3  # voxels around the box the erased background is taken from
SLICES_PER_PLANE = 9  # tumor-centred slices per plane and volume for FID/KID
MONTAGE_CASES = 10  # column groups of the montage
FEATURES = ("inception", "pixels", "none")
FLOOR_NAME = "real vs real (test vs train)"



@dataclass
class PairedCase:
    """One protocol case: the real scan (SUV), its real mask, the box and the erased scan."""

    name: str
    suv: np.ndarray  # (X, Y, Z) float32 SUV
    mask: np.ndarray  # (X, Y, Z) uint8
    affine: np.ndarray  # (4, 4)
    box: tuple[int, int, int, int, int, int]
    seed: int
    erased: np.ndarray  # (X, Y, Z) float32 SUV, equal to `suv` outside the box


@dataclass(frozen=True)
class Row:
    """One table row: a generator, and whether it is told each real tumor's mean SUV."""

    name: str
    generator: TumorGenerator
    told: bool = False

    def __call__(self, case: PairedCase) -> tuple[np.ndarray, np.ndarray]:
        if self.generator.kind in REAL_INPUT_KINDS:  # the real tumor seen through a model: keep its mask
            return self.generator(case.suv, case.affine, case.box, case.seed)[0], case.mask
        suv_mean = float(case.suv[case.mask > 0].mean()) if self.told else None
        return self.generator(case.erased, case.affine, case.box, case.seed, suv_mean=suv_mean)


def parse_methods(text: str) -> list[tuple[str, str | None]]:
    """`--methods`: "tumorgen=RUN,difftumor=RUN,syntumor,blob,empty" -> [(kind, source or None), ...]."""
    methods = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        kind, _, source = item.partition("=")
        kind = kind.strip()
        if kind not in KINDS:
            raise TumorGenError(f"--methods: unknown {kind!r}; choose from {', '.join(KINDS)}")
        if source and kind not in MODEL_KINDS:
            raise TumorGenError(f"--methods: {kind} takes no model ({item!r})")
        if any(kind == seen for seen, _ in methods):
            # Its rows would share names (tumorgen-10 twice) and overwrite each other's results.
            raise TumorGenError(f"--methods: {kind} is given twice; judge each {kind} model in its own call "
                                "(with the same --seed, the boxes and the floor are the same)")
        methods.append((kind, source.strip() or None))
    if not methods:
        raise TumorGenError("--methods is empty")
    return methods


def parse_counts(text: str, flag: str, *, allow_empty: bool = False) -> list[int]:
    """A comma-separated list of positive integers (`--steps 1,2,10`); empty only with `allow_empty`."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items and not allow_empty:
        raise TumorGenError(f"{flag} is empty")
    try:
        values = [int(t) for t in items]
    except ValueError:
        raise TumorGenError(f"{flag} takes comma-separated positive integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise TumorGenError(f"{flag} must be positive integers, got {text}")
    return values


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run_paired(*, data: str | Path, out: str | Path, methods: Sequence[tuple[str, str | Path | None]],
               split: str = "test", val_cases: int = 10, val_seed: int = 0, steps: Sequence[int] = (10,),
               told_steps: Sequence[int] = (10,), baseline_steps: int = 50, baseline_sampler: str = "ddim",
               seed: int = 0, features: str = "inception", inception: str | Path | None = None,
               feature_cache: str | Path | None = None, slices_per_plane: int = SLICES_PER_PLANE,
               device: str = "cpu", save_volumes: bool = False, radiomics: bool = False, overwrite: bool = False,
               uptake_grid: Sequence[float] = (), guidance: float | None = None, match_uptake: bool = True,
               log: Callable[[str], None] = _stderr) -> dict:
    """Run the paired protocol on a PREP cache's held-out cases and write its folder.

    Args:
        data: the PREP cache (`tumorgen prepare`).
        out: the output folder (built in a staging folder, moved into place at the end).
        methods: (kind, model) pairs in table order; model: tumorgen: None (the bundled model), a
            bundled name, an exported model or a run folder; difftumor/bld/medfusion/hagan: the run folder;
            else None.
        split: "test" (the PREP test split) or "val" (`val_cases` train cases drawn with `val_seed`).
        steps: Euler step counts for TumorGen, one row each.
        told_steps: for an uptake-conditioned TumorGen, rows told each real tumor's mean SUV.
        baseline_steps, baseline_sampler: DiffTumor / BLD / MedFusion sampling.
        seed: seeds erasing, sampling, the floor's draws and KID.
        features: "inception" (FID), "pixels" (32x32 thumbnails, smoke tests) or "none".
        inception: a local TorchScript FID Inception file.
        feature_cache: a folder keeping the real cases' features between runs.
        slices_per_plane: tumor-centred slices per plane and volume.
        device: where the models and Inception run.
        save_volumes: also write every output as OUT/volumes/<case>_<method>_suv/_mask.nii.gz.
        radiomics: also the radiomic panel of every real and generated tumor against the real-vs-real
            floor (`evaluation.radiomics_compare`; needs MIRP, `tumorgen[radiomics]`): OUT/radiomics.md.
        overwrite: replace an existing `out`.
        uptake_grid: asked SUVmeans for the uptake-on-request test of each uptake-conditioned TumorGen
            row (`evaluation.uptake_request`): OUT/uptake_request.md; empty: not run.
        guidance: TumorGen's classifier-free guidance toward a told uptake; None: the model's own.
        match_uptake: a told uptake made exact (`synthesis.uptake_match`), as users get it; False: the
            network's own uptake (what the uptake grid then measures is the network).
        log: where progress lines go (stderr).

    Returns:
        The metrics dictionary written to OUT/metrics.json.
    """
    if any(int(s) < 1 for s in steps) or not steps:
        raise TumorGenError(f"--steps must be positive integers, got {','.join(str(s) for s in steps) or 'none'}")
    if slices_per_plane < 1:
        raise TumorGenError(f"--slices-per-plane must be >= 1, got {slices_per_plane}")
    if features not in FEATURES:
        raise TumorGenError(f"--features must be one of {', '.join(FEATURES)}, got {features!r}")
    if split not in ("test", "val"):
        raise TumorGenError(f"--split must be test or val, got {split!r}")
    for kind, source in methods:
        if kind not in KINDS:
            raise TumorGenError(f"--methods: unknown {kind!r}; choose from {', '.join(KINDS)}")
        if kind in BASELINE_KINDS and source is None:
            raise TumorGenError(f"--methods {kind} needs its run folder ({kind}=RUN)")
    if Path(out).exists() and not overwrite:
        raise fail_on(out, "already exists; pass --overwrite to replace it")
    if radiomics and not mirp_available():
        raise TumorGenError("--radiomics needs MIRP: pip install 'tumorgen[radiomics]'")
    with staged_dir(out, overwrite=overwrite) as stage:
        return _run(stage, data=data, methods=list(methods), split=split, val_cases=val_cases, val_seed=val_seed,
                    steps=[int(s) for s in steps], told_steps=[int(s) for s in told_steps],
                    baseline_steps=baseline_steps, baseline_sampler=baseline_sampler, seed=seed, features=features,
                    inception=inception, feature_cache=feature_cache, slices_per_plane=slices_per_plane,
                    device=device, save_volumes=save_volumes, radiomics=radiomics, uptake_grid=list(uptake_grid),
                    guidance=guidance, match_uptake=match_uptake, log=log)


def _select_cases(dataset, split: str, val_cases: int, val_seed: int, log) -> tuple[list, list]:
    """(evaluated cases, train cases for floors and uptake statistics), both with tumors."""
    train = dataset.tumor_cases("train")
    if split == "test":
        chosen = dataset.split("test")
        healthy = [c.name for c in chosen if c.healthy]
        if healthy:
            log(f"skipping {len(healthy)} healthy test cases (no tumor box): {', '.join(healthy[:5])}")
        return [c for c in chosen if not c.healthy], train
    if val_cases < 2 or val_cases >= len(train):
        raise TumorGenError(f"--val-cases must be between 2 and {len(train) - 1} (the train split has "
                            f"{len(train)} tumor cases), got {val_cases}")
    pick = set(np.random.default_rng(val_seed).choice(len(train), val_cases, replace=False).tolist())
    return [c for i, c in enumerate(train) if i in pick], [c for i, c in enumerate(train) if i not in pick]






def _load_cases(eval_cases, *, suv_max: float, seed: int) -> list[PairedCase]:
    cases = []
    for case_entry, case_seed in zip(eval_cases, sample_seeds(seed, len(eval_cases))):
        image, mask, affine = case_entry.load()
        suv = (image * np.float32(suv_max)).astype(np.float32)  # the cache is clip(SUV, 0, suv_max) / suv_max
        box = tight_box(mask, margin=BOX_MARGIN)
        erased = erase_box(suv, box, rng=np.random.default_rng([case_seed, 1]), shell=ERASE_SHELL)
        cases.append(PairedCase(case_entry.name, suv, mask, affine, box, case_seed, erased))
    return cases


def _model_rows(kind, source, *, steps, told_steps, baseline_steps, baseline_sampler, device, grid,
                guidance=None, match_uptake=True) -> list[Row]:
    if kind == "tumorgen":
        from tumorgen.api import TumorGen

        tg = TumorGen.load(source, device=device)
        def generator(n):
            return build_generator("tumorgen", model=tg, steps=n, guidance=guidance, match_uptake=match_uptake)

        rows = [Row(f"tumorgen-{n}", generator(n)) for n in steps]
        if tg.run.models.uptake_condition:
            rows += [Row(f"tumorgen-{n}-told", generator(n), told=True) for n in told_steps]
        return rows
    if kind in REAL_INPUT_KINDS or kind == "hagan":  # HA-GAN draws in one pass: no sampler, no steps
        return [Row(kind, build_generator(kind, source, device=device, grid=grid))]
    generator = build_generator(kind, source, steps=baseline_steps, sampler=baseline_sampler, device=device,
                                grid=grid)
    return [Row(f"{kind}-{baseline_sampler}-{baseline_steps}", generator)]


def _run(stage: Path, *, data, methods, split, val_cases, val_seed, steps, told_steps, baseline_steps,
         baseline_sampler, seed, features, inception, feature_cache, slices_per_plane, device, save_volumes,
         radiomics, uptake_grid, guidance, match_uptake, log) -> dict:
    dataset = load_prepared(data)
    suv_max = dataset.suv_max
    eval_cases, train_cases = _select_cases(dataset, split, val_cases, val_seed, log)
    if not eval_cases:
        raise fail_on(dataset.root / "dataset.json", f"has no {split} cases with a tumor")
    if not train_cases:
        raise fail_on(dataset.root / "dataset.json", "has no training tumors for the floor and the baselines")

    feature_fn = feature_extractor(features, inception, device)  # before the work: a missing network fails fast
    started = time.perf_counter()
    cases = _load_cases(eval_cases, suv_max=suv_max, seed=seed)
    train_loaded = [c.load() for c in train_cases]
    train_suv = [im * np.float32(suv_max) for im, _, _ in train_loaded]
    train_masks = [m for _, m, _ in train_loaded]
    reference = (train_suv, train_masks)

    # Build the rows; model loading is timed as the fixed cost.
    rows: list[Row] = []
    fixed_cost: dict[str, dict] = {}
    notes: list[str] = []
    sources: dict[str, str | None] = {}
    for kind, source in methods:
        if kind in MODEL_KINDS:
            t0 = time.perf_counter()
            try:
                made = _model_rows(kind, source, steps=steps, told_steps=told_steps, baseline_steps=baseline_steps,
                                   baseline_sampler=baseline_sampler, device=device, grid=dataset.size,
                                   guidance=guidance, match_uptake=match_uptake)
            except TumorGenError as err:
                if kind == "tumorgen":
                    raise
                notes.append(f"{kind} skipped: {err}")
                log(notes[-1])
                continue
            sources[kind] = None if source is None else str(source)
            t1 = time.perf_counter()
            try:  # the first call (allocations, caches) is not timed with the samples
                made[0](cases[0])
            except TumorGenError as err:  # recorded per case below
                log(f"{made[0].name}: the first call failed on {cases[0].name}: {err}")
            fixed_cost[kind] = {"load_s": t1 - t0, "first_call_s": time.perf_counter() - t1,
                                "first_call": made[0].name}
            rows += made
        else:
            rows.append(Row(kind, build_generator(kind, reference=reference, seed=seed)))

    outputs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {row.name: [] for row in rows}
    per_case: dict[str, list[dict]] = {row.name: [] for row in rows}
    for i, case in enumerate(cases):
        inside = box_slices(case.box)
        outside = np.ones(case.suv.shape, dtype=bool)
        outside[inside] = False
        timings = []
        for row in rows:
            error = None
            t0 = time.perf_counter()
            try:
                raw_suv, raw_mask = row(case)
            except TumorGenError as err:  # e.g. a box the model's window cannot hold
                error = str(err)
                raw_suv, raw_mask = case.erased, np.zeros(case.suv.shape, np.uint8)
                log(f"  {row.name} failed on {case.name}: {error}")
            seconds = time.perf_counter() - t0
            raw_suv = np.asarray(raw_suv, dtype=np.float32)
            # The protocol's output: the real scan outside the box, the method's work inside it.
            suv = case.suv.copy()
            suv[inside] = raw_suv[inside]
            mask = np.zeros(case.suv.shape, np.uint8)
            mask[inside] = np.asarray(raw_mask)[inside] > 0
            record = {"case": case.name, "box": list(case.box), "seed": case.seed, "seconds": seconds,
                      "raw_outside_box_max_abs_diff": float(np.abs(raw_suv - case.suv)[outside].max()),
                      "raw_mask_voxels_outside_box": int((np.asarray(raw_mask)[outside] > 0).sum()),
                      **case_measures(case.suv, case.mask, case.box, suv, mask)}
            if error:
                record["error"] = error
            per_case[row.name].append(record)
            outputs[row.name].append((suv, mask))
            timings.append(f"{row.name} {seconds:.2f}s")
            if save_volumes:
                from tumorgen.io.nifti import save_volume

                folder = stage / "volumes"
                save_volume(suv, case.affine, folder / f"{case.name}_{row.name}_suv.nii.gz", dtype=np.float32)
                save_volume(mask, case.affine, folder / f"{case.name}_{row.name}_mask.nii.gz", dtype=np.uint8)
        log(f"[{i + 1}/{len(cases)}] {case.name} box {case.box}: " + ", ".join(timings))

    fid, floor = {}, None
    if feature_fn is not None and len(cases) < 2:
        notes.append(f"FID/KID skipped: {len(cases)} case; they need at least 2")
        feature_fn = None
    if feature_fn is not None:
        key = {"dataset": hashlib.sha256((dataset.root / "dataset.json").read_bytes()).hexdigest(),
               "features": features, "network": str(getattr(feature_fn, "path", "")), "n_per_plane": slices_per_plane}
        fid, floor = fid_scores(cases, train_cases, train_suv, train_masks, outputs, key=key, features=feature_fn,
                          cache=feature_cache, n=slices_per_plane, suv_max=suv_max, seed=seed)
        log(f"features ({features}) done at {time.perf_counter() - started:.0f} s")

    radiomic = None
    if radiomics:
        t0 = time.perf_counter()
        radiomic = radiomic_scores(cases, train_loaded, outputs, suv_max=suv_max, seed=seed)
        write_text(stage / "radiomics.md", render_radiomics(radiomic["comparison"]))
        log(f"radiomics ({sum(len(p) for p in radiomic['panels'].values())} tumors) done in "
            f"{time.perf_counter() - t0:.0f} s")

    requests = None
    if uptake_grid:
        chosen = [r for r in rows if r.generator.kind == "tumorgen" and r.generator.uptake_conditioned and not r.told]
        if not chosen:
            log("uptake on request skipped: no uptake-conditioned TumorGen row")
        requests = {row.name: request_uptakes(row.generator, cases, uptake_grid, log=log) for row in chosen}
        write_text(stage / "uptake_request.md", render_requests(requests, matched=match_uptake))

    summaries = {name: summarize(records) for name, records in per_case.items()}
    real_row = {"method": FLOOR_NAME, **(floor or {}), "n_cases": len(cases),
                "seam_step": float(np.nanmean([seam_step(c.suv, c.box) for c in cases])),
                "mean_ratio_median": 1.0, "mean_within": 1.0, "max_ratio_median": 1.0, "volume_ratio_median": 1.0,
                "volume_within": 1.0,
                "one_component": float(np.mean([connected_components(c.mask) == 1 for c in cases])),
                "nonempty": 1.0}
    table_rows = [real_row] + [{"method": name, **fid.get(name, {}), **summaries[name]} for name in outputs]
    metrics = {
        "protocol": {"box_margin": BOX_MARGIN, "erase_shell": ERASE_SHELL, "slices_per_plane": slices_per_plane,
                     "floor_repeats": FLOOR_REPEATS, "mean_tolerance": MEAN_TOLERANCE,
                     "volume_tolerance": VOLUME_TOLERANCE, "features": features,
                     "components_connectivity": 26},
        "data": str(Path(data).resolve()), "split": split, "suv_max": suv_max, "seed": seed,
        "val": {"cases": val_cases, "seed": val_seed} if split == "val" else None,
        "cases": [{"name": c.name, "box": list(c.box), "seed": c.seed, "real_tumor_voxels": int(c.mask.sum())}
                  for c in cases],
        "n_train_reference": len(train_suv), "blob_uptake_suv": reference_uptake(train_suv, train_masks),
        "tumorgen": {"run": sources["tumorgen"], "steps": steps} if "tumorgen" in fixed_cost else None,
        "fixed_cost": fixed_cost,
        "baselines": {**{kind: sources.get(kind) for kind in BASELINE_KINDS}, "steps": baseline_steps,
                      "sampler": baseline_sampler},
        "floor": floor, "fid": fid, "summary": summaries, "per_case": per_case, "notes": notes,
        "table": table_rows, "radiomics": radiomic, "uptake_request": requests, "guidance": guidance,
        "match_uptake": match_uptake,
        "seconds_total": time.perf_counter() - started,
    }
    write_table(COLUMNS, table_rows, stage / "table")
    write_paired_montage(stage / "montage.png", cases[:MONTAGE_CASES],
                         {name: outs[:MONTAGE_CASES] for name, outs in outputs.items()})
    write_json(stage / "metrics.json", metrics)  # last: its presence means the folder is complete
    return metrics
