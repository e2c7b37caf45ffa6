"""The paired protocol: every method regenerates the same erased tumor boxes of real test scans.

    python benchmarks/paired_protocol.py --data PREP --out DIR [--split test|val] [--tumorgen RUN]
        [--steps 1,2,4,10,50] [--methods tumorgen,syntumor,blob,empty] [--seed 0]
        [--difftumor RUN] [--bld RUN] [--baseline-steps 50] [--baseline-sampler ddim]
        [--features inception|pixels|none] [--inception PATH] [--feature-cache DIR] [--device cpu]
        [--save-volumes] [--overwrite]

Why paired: a generated set judged against real scans at *other* places mixes up "is the tumor real-
looking" with "is this place real-looking". Here every method works at the place of a real tumor, in
the same scan, so the real scan is the answer key:

- per test case (a PREP case with a tumor), the box is the tight box of its real mask plus 2 voxels on
  each side, clipped to the volume (half-open, PREP grid voxels);
- the box is erased (`tumorgen.synthesis.erase.erase_box`: a smooth background from the 3-voxel shell
  around it, with the scan's grain), the same erased scan for every method, so no method can reuse the
  real tumor left in its box; each method then regenerates the box from the erased scan;
- outside the box the output *is* the real scan (the method's own changes there, e.g. SynTumor's
  blurred rim, are dropped and reported as `raw_outside_box_max_abs_diff`); the mask is kept inside
  the box;
- the outputs are compared with the real test scans on tumor-centred slices (each set through its own
  mask; an empty generated mask through the box centre), 9 slices per plane: FID per plane
  (axial/sagittal/coronal) and their average, and KID(Avg). Beside them the real-vs-real floor: the same
  metric between the real test cases and equally many real TRAIN cases (different cases; mean and
  spread over 5 random draws), so a reader sees how large FID is at this n for two real sets;
- per case: mean and max SUV inside the generated mask against inside the real mask (median ratio, and
  the fraction of cases within +-20% for the mean), mask volume generated/real (median, fraction within
  +-30%), the fraction of masks that are one 26-connected component and that are non-empty, the seam
  step (`evaluation.evaluate.seam_step`: mean |inside face layer - layer outside| over the box faces),
  and seconds per sample (the method's call only; the erase is the protocol's).

Methods: `tumorgen` (a `tumorgen train` run, one table row per Euler step count in --steps, named
`tumorgen-N`; an uptake-conditioned run draws each tumor's mean SUV from the training tumors', and adds
rows `tumorgen-N-told` for N in --told-steps, told each real tumor's mean SUV), `syntumor` (the
rule-based baseline, uptake fitted to the training tumors), `blob` (an anchor: a hot ellipsoid with
semi-axes 0.4 x the box extent, centred in the box, a Gaussian-smoothed (sigma 1 voxel) profile scaled so
its mean SUV in the mask is the training tumors' median mean SUV; the mask is the ellipsoid), `empty`
(the erased scan, empty mask: the score of removing the tumor), and, with their run folders,
`difftumor` and `bld` (DDIM/DDPM through `tumorgen.evaluation.generate.model_generator_for` and the
synthesis pipeline). For the model methods the fixed cost (loading the run, plus a first call on the
first case) is reported apart from seconds per sample.

--split val chooses settings without touching the test split: --val-cases N cases drawn (seeded by
--val-seed) from the TRAIN split play the test cases; the floor's real set and the baselines' uptake
statistics then come from the remaining train cases. (A TumorGen run trained on that split has seen
those cases, so val numbers flatter it; they are for comparing its own settings.)

Writes DIR/table.md, table.csv, metrics.json (everything, per case too) and montage.png (rows: real,
then each method; columns: up to 10 cases; each cell the three planes through the mask centre of a crop
of the box plus 50% a side; inverted gray PET from 0 to the real crop's SUV p99; real mask red, generated
mask green, box dashed). The folder is built in a staging folder and moved into place at the end.
Prints the table; one progress line per case on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.evaluate import PixelFeatures, cached_features
from tumorgen.evaluation.tumor_measures import box_mask, seam_step
from tumorgen.evaluation.fid import plane_features, scores_from_features
from tumorgen.synthesis.pipeline import sample_seeds
from tumorgen.evaluation.slices import PLANE_AXIS, PLANES, tumor_slice_indices
from tumorgen.evaluation.tables import Column, render_markdown, write_table
from tumorgen.io.atomic import atomic_path, staged_dir, write_json
from tumorgen.synthesis.erase import erase_box

BOX_MARGIN = 2  # voxels added to each side of the real tumor's tight box
ERASE_SHELL = 3  # voxels around the box the erased background is taken from
SLICES_PER_PLANE = 9  # tumor-centred slices per plane and volume for FID/KID
FLOOR_REPEATS = 5  # random draws of train cases averaged for the real-vs-real floor
MONTAGE_CASES = 10  # columns of the montage
CROP_GROW = 0.5  # the montage crop: the box plus this fraction of its extent on each side
BLOB_AXIS_FRACTION = 0.4  # blob semi-axes as a fraction of the box extent (0.5 would touch the faces)
BLOB_SIGMA = 1.0  # voxels: smoothing of the blob's profile (about the PET blur)
MEAN_TOLERANCE = 0.2  # "within +-20%" for the mean SUV ratio
VOLUME_TOLERANCE = 0.3  # "within +-30%" for the volume ratio
FIXED_METHODS = ("syntumor", "blob", "empty")  # need no run folder
MODEL_METHODS = ("tumorgen", "difftumor", "bld")
FLOOR_NAME = "real vs real (test vs train)"
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)  # a tumor touching at an edge or corner is one piece

COLUMNS = (
    Column("method", "method", "{}"),
    Column("FID(A)", "A", "{:.1f}", std_key="A_spread"),
    Column("FID(S)", "S", "{:.1f}", std_key="S_spread"),
    Column("FID(C)", "C", "{:.1f}", std_key="C_spread"),
    Column("FID(Avg)", "Avg", "{:.1f}", std_key="Avg_spread"),
    Column("KID(Avg)", "KID_Avg", "{:.4f}", std_key="KID_Avg_spread"),
    Column("mean SUV ratio", "mean_ratio_median", "{:.2f}"),
    Column("mean ±20%", "mean_within", "{:.0%}"),
    Column("median mean SUV gen/real", "mean_suv_of_medians", "{:.2f}"),
    Column("max SUV ratio", "max_ratio_median", "{:.2f}"),
    Column("volume ratio", "volume_ratio_median", "{:.2f}"),
    Column("volume ±30%", "volume_within", "{:.0%}"),
    Column("one component", "one_component", "{:.0%}"),
    Column("non-empty", "nonempty", "{:.0%}"),
    Column("seam step (SUV)", "seam_step", "{:.3f}"),
    Column("s/sample", "seconds_per_sample", "{:.3f}"),
    Column("n", "n_cases", "{}"),
)


@dataclass
class Case:
    """One protocol case: the real scan (SUV), its real mask, the box and the erased scan."""

    name: str
    suv: np.ndarray  # (X, Y, Z) float32 SUV
    mask: np.ndarray  # (X, Y, Z) uint8
    affine: np.ndarray  # (4, 4)
    box: tuple[int, int, int, int, int, int]
    seed: int
    erased: np.ndarray  # (X, Y, Z) float32 SUV, equal to `suv` outside the box


def padded_tight_box(mask: np.ndarray, margin: int = BOX_MARGIN) -> tuple[int, ...]:
    """The half-open tight box of a non-empty mask, grown by `margin` voxels a side, clipped to the volume."""
    coords = np.argwhere(np.asarray(mask) > 0)  # (V, 3)
    if coords.size == 0:
        raise ValueError("the mask is empty: no box")
    lo = np.maximum(coords.min(axis=0) - margin, 0)
    hi = np.minimum(coords.max(axis=0) + 1 + margin, mask.shape)
    return tuple(int(v) for v in (*lo, *hi))


def _box_slices(box) -> tuple[slice, slice, slice]:
    return tuple(slice(int(a), int(b)) for a, b in zip(box[:3], box[3:]))


# ---------------------------------------------------------------------------------------------------
# Methods: each is `generate(case) -> (suv, mask)` working on `case.erased` inside `case.box`.


def blob_generator(uptake_suv: float) -> Callable:
    """The anchor: a smoothed hot ellipsoid whose mean SUV in its mask is `uptake_suv`."""

    def generate(case: Case):
        lo, hi = np.array(case.box[:3]), np.array(case.box[3:])
        grid = np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi)], indexing="ij"))
        centre = (lo + hi - 1) / 2.0
        radii = np.maximum(BLOB_AXIS_FRACTION * (hi - lo), 0.5)
        inside = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0
        if not inside.any():  # a box one voxel thick: keep the centre voxel
            inside[tuple(((hi - lo) - 1) // 2)] = True
        profile = ndimage.gaussian_filter(inside.astype(np.float64), BLOB_SIGMA, mode="constant")
        background = case.erased[_box_slices(case.box)].astype(np.float64)
        # Scale the added profile so the mean SUV in the mask (background + blob) is the training median.
        amplitude = max(uptake_suv - background[inside].mean(), 0.0) / profile[inside].mean()
        suv = np.array(case.erased, copy=True)
        suv[_box_slices(case.box)] = (background + amplitude * profile).astype(suv.dtype)
        mask = np.zeros(suv.shape, np.uint8)
        mask[_box_slices(case.box)] = inside
        return suv, mask

    return generate


def empty_generator(case: Case):
    return np.array(case.erased, copy=True), np.zeros(case.suv.shape, np.uint8)


def syntumor_generator(train_suv: list[np.ndarray], train_masks: list[np.ndarray], seed: int) -> Callable:
    from tumorgen.baselines.syntumor import SuvStats, SynTumor

    syntumor = SynTumor(suv_stats=SuvStats.from_tumors(train_suv, train_masks), seed=seed)

    def generate(case: Case):
        return syntumor.generate(case.erased, box=case.box, rng=np.random.default_rng([case.seed, 2]))

    return generate


def tumorgen_generator(tg, steps: int, *, told: bool = False) -> Callable:
    """TumorGen through its public API; `told`: an uptake-conditioned model is given the real tumor's mean
    SUV (what a user asking for a given uptake gets), else it draws one of the training tumors'."""
    def generate(case: Case):
        suv_mean = float(case.suv[case.mask > 0].mean()) if told else None
        res = tg.synthesize(case.erased, affine=case.affine, box=case.box, steps=steps, seed=case.seed,
                            suv_mean=suv_mean)[0]
        return res.image, res.mask

    return generate


def baseline_generator(method: str, run: str | Path, *, steps: int, sampler: str, device: str,
                       size: tuple[int, int, int]) -> Callable:
    """DiffTumor or BLD through the synthesis pipeline, as `tumorgen synthesize` would run it."""
    from tumorgen.api import as_volume
    from tumorgen.evaluation.generate import model_generator_for
    from tumorgen.synthesis.pipeline import synthesize_into_scan

    generate_window, _ = model_generator_for(method, run, steps=steps, sampler=sampler, device=device, size=size)
    info = json.loads((Path(run) / "data.json").read_text())

    def generate(case: Case):
        scan = as_volume(case.erased, affine=case.affine, what="erased scan")
        res = synthesize_into_scan(scan=scan, boxes=[case.box], generate=generate_window, model_info=info, num=1,
                                   seed=case.seed)[0]
        return res.image, res.mask

    return generate


# ---------------------------------------------------------------------------------------------------
# Per-case and per-method measurements.


def case_measures(case: Case, suv: np.ndarray, mask: np.ndarray) -> dict:
    """Uptake, volume, shape and seam of one output against the real tumor of its case."""
    real_values = case.suv[case.mask > 0]
    values = suv[mask > 0]
    out = {"real_mean_suv": float(real_values.mean()), "real_max_suv": float(real_values.max()),
           "real_volume": int(real_values.size), "volume": int(values.size),
           "mean_suv": float(values.mean()) if values.size else None,
           "max_suv": float(values.max()) if values.size else None,
           "components": int(ndimage.label(mask > 0, structure=CONNECTIVITY_26)[1]),
           "seam_step": seam_step(suv, case.box), "real_seam_step": seam_step(case.suv, case.box)}
    out["mean_ratio"] = out["mean_suv"] / out["real_mean_suv"] if values.size else None
    out["max_ratio"] = out["max_suv"] / out["real_max_suv"] if values.size else None
    out["volume_ratio"] = out["volume"] / out["real_volume"]
    return out


def summarize(per_case: list[dict]) -> dict:
    """Medians and fractions over cases; an empty mask counts as outside every tolerance."""
    def median(key):
        values = [c[key] for c in per_case if c.get(key) is not None]
        return float(np.median(values)) if values else None

    n = len(per_case)
    mean_ratios = [c["mean_ratio"] for c in per_case]
    return {
        "n_cases": n,
        "mean_ratio_median": median("mean_ratio"),
        "mean_within": float(np.mean([r is not None and abs(r - 1) <= MEAN_TOLERANCE for r in mean_ratios])),
        # the distributions, not the pairs: a generator that cannot know the erased tumor's uptake can
        # still match how hot tumors are over the cases
        "mean_suv_of_medians": (median("mean_suv") / median("real_mean_suv")) if median("mean_suv") else None,
        "max_ratio_median": median("max_ratio"),
        "volume_ratio_median": median("volume_ratio"),
        "volume_within": float(np.mean([abs(c["volume_ratio"] - 1) <= VOLUME_TOLERANCE for c in per_case])),
        "one_component": float(np.mean([c["components"] == 1 for c in per_case])),
        "nonempty": float(np.mean([c["volume"] > 0 for c in per_case])),
        "seam_step": float(np.nanmean([c["seam_step"] for c in per_case])),
        "real_seam_step": float(np.nanmean([c["real_seam_step"] for c in per_case])),
        "seconds_per_sample": float(np.mean([c["seconds"] for c in per_case])),
        "failed": sum(1 for c in per_case if c.get("error")),
    }


def floor_scores(real_feats: dict, pool_feats: dict, *, seed: int, repeats: int = FLOOR_REPEATS) -> dict:
    """Real test cases vs equally many train cases (all of them if fewer), mean and spread over draws."""
    n_real, n_pool = real_feats[PLANES[0]].shape[0], pool_feats[PLANES[0]].shape[0]
    n_b = min(n_real, n_pool)
    rng = np.random.default_rng(seed)
    runs = []
    for r in range(repeats):
        pick = np.sort(rng.choice(n_pool, n_b, replace=False))
        runs.append(scores_from_features(real_feats, {p: f[pick] for p, f in pool_feats.items()}, seed=seed + r))
    result = {}
    for key in runs[0]:
        if key.startswith("n_"):
            continue
        values = np.array([run[key] for run in runs])
        result[key], result[f"{key}_spread"] = float(values.mean()), float(values.std())
    result.update(n_real=int(n_real), n_generated=int(n_b), repeats=repeats)
    return result


# ---------------------------------------------------------------------------------------------------
# The montage.


def _crop(box, shape) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.array(box[:3]), np.array(box[3:])
    grow = np.ceil(CROP_GROW * (hi - lo)).astype(int)
    return np.maximum(lo - grow, 0), np.minimum(hi + grow, shape)


def write_montage(path: Path, cases: list[Case], rows: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> None:
    """Rows: real, then each method; columns: cases; each cell axial / sagittal / coronal of the crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    names = ["real"] + list(rows)
    fig, axes = plt.subplots(len(names), 3 * len(cases), figsize=(1.3 * 3 * len(cases), 1.4 * len(names) + 0.5),
                             squeeze=False)
    for col, case in enumerate(cases):
        lo, hi = _crop(case.box, case.suv.shape)
        crop = _box_slices((*lo, *hi))
        vmax = max(float(np.percentile(case.suv[crop], 99)), 1e-6)
        box_lo, box_hi = np.array(case.box[:3]) - lo, np.array(case.box[3:]) - lo
        outputs = [(case.suv, case.mask)] + [row[col] for row in rows.values()]
        for r, (name, (suv, mask)) in enumerate(zip(names, outputs)):
            image, cut_mask = suv[crop], mask[crop]
            centre = cut_mask if cut_mask.any() else box_mask(cut_mask.shape, (*box_lo, *box_hi))
            index = tumor_slice_indices(centre)
            for p, plane in enumerate(PLANES):
                ax = axes[r, 3 * col + p]
                axis, i = PLANE_AXIS[plane], index[plane][0]
                ax.imshow(np.take(image, i, axis=axis).T, cmap="gray_r", vmin=0.0, vmax=vmax, origin="lower",
                          interpolation="nearest")
                outline = np.take(cut_mask, i, axis=axis).T
                if outline.any():
                    ax.contour(outline, levels=[0.5], colors="red" if name == "real" else "lime", linewidths=0.8)
                shown = [a for a in range(3) if a != axis]  # (horizontal, vertical) axes of the slice
                ax.add_patch(Rectangle((box_lo[shown[0]] - 0.5, box_lo[shown[1]] - 0.5),
                                       box_hi[shown[0]] - box_lo[shown[0]], box_hi[shown[1]] - box_lo[shown[1]],
                                       fill=False, edgecolor="tab:blue", linestyle="--", linewidth=0.6))
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{case.name} {plane[0].upper()}" if p == 1 else plane[0].upper(), fontsize=7)
                if col == 0 and p == 0:
                    ax.set_ylabel(name, fontsize=8)
    fig.suptitle("paired protocol: real (red mask) and each method (green mask) in the erased box (dashed); "
                 "inverted gray, 0 to SUV p99 of the real crop", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise TumorGenError(f"--{what} is empty")
    return items


def _features(kind: str, inception: Path | None, device: str):
    if kind == "none":
        return None
    if kind == "pixels":
        return PixelFeatures()
    from tumorgen.evaluation.inception import InceptionFeatures

    return InceptionFeatures(path=inception, device=device)


def _real_features(cache: Path | None, key: dict, compute: Callable[[], dict]) -> dict:
    """Real cases' `plane_features`, kept in `cache` (when given) under a hash of what determines them."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cached_features(cache, f"paired-{digest}", compute)


def _select_cases(dataset, args) -> tuple[list, list]:
    """(evaluated cases, train cases for floors and uptake statistics), both with tumors."""
    train = dataset.tumor_cases("train")
    if args.split == "test":
        chosen = dataset.split("test")
        healthy = [c.name for c in chosen if c.healthy]
        if healthy:
            print(f"skipping {len(healthy)} healthy test cases (no tumor box): {', '.join(healthy[:5])}",
                  file=sys.stderr)
        return [c for c in chosen if not c.healthy], train
    if args.val_cases < 2 or args.val_cases >= len(train):
        raise TumorGenError(f"--val-cases must be between 2 and {len(train) - 1} (the train split has "
                            f"{len(train)} tumor cases), got {args.val_cases}")
    pick = set(np.random.default_rng(args.val_seed).choice(len(train), args.val_cases, replace=False).tolist())
    return [c for i, c in enumerate(train) if i in pick], [c for i, c in enumerate(train) if i not in pick]


def run_protocol(args: argparse.Namespace, stage: Path) -> dict:
    """Run the protocol as `args` says, write the outputs into `stage`, return the metrics dictionary."""
    steps = [int(s) for s in _parse_list(args.steps, "steps")]
    if any(s < 1 for s in steps):
        raise TumorGenError(f"--steps must be positive integers, got {args.steps}")
    runs = {"tumorgen": args.tumorgen, "difftumor": args.difftumor, "bld": args.bld}
    if args.methods is None:
        methods = [m for m in MODEL_METHODS if runs[m] is not None] + list(FIXED_METHODS)
    else:
        methods = _parse_list(args.methods, "methods")
        unknown = [m for m in methods if m not in MODEL_METHODS + FIXED_METHODS]
        if unknown:
            raise TumorGenError(f"--methods: unknown {', '.join(unknown)}; choose from "
                                f"{', '.join(MODEL_METHODS + FIXED_METHODS)}")
        missing = [m for m in methods if m in MODEL_METHODS and runs[m] is None]
        if missing:
            raise TumorGenError(f"--methods {', '.join(missing)} needs its run folder (--{missing[0]} RUN)")

    dataset = load_prepared(args.data)
    suv_max = dataset.suv_max
    eval_cases, train_cases = _select_cases(dataset, args)
    if not eval_cases:
        raise fail_on(dataset.root / "dataset.json", f"has no {args.split} cases with a tumor")
    if not train_cases:
        raise fail_on(dataset.root / "dataset.json", "has no training tumors for the floor and the baselines")

    features = _features(args.features, args.inception, args.device)  # before the work: a missing network fails fast
    started = time.perf_counter()
    cases = []
    for case_entry, case_seed in zip(eval_cases, sample_seeds(args.seed, len(eval_cases))):
        image, mask, affine = case_entry.load()
        suv = (image * np.float32(suv_max)).astype(np.float32)  # the cache is clip(SUV, 0, suv_max) / suv_max
        box = padded_tight_box(mask)
        erased = erase_box(suv, box, rng=np.random.default_rng([case_seed, 1]), shell=ERASE_SHELL)
        cases.append(Case(case_entry.name, suv, mask, affine, box, case_seed, erased))
    train_loaded = [c.load() for c in train_cases]
    train_suv = [im * np.float32(suv_max) for im, _, _ in train_loaded]
    train_masks = [m for _, m, _ in train_loaded]
    uptake = float(np.median([s[m > 0].mean() for s, m in zip(train_suv, train_masks)]))

    # Build the methods (row name -> generate); model loading is timed as the fixed cost.
    generators: dict[str, Callable] = {}
    fixed_cost: dict[str, dict] = {}
    notes: list[str] = []
    for method in methods:
        if method in MODEL_METHODS:
            t0 = time.perf_counter()
            if method == "tumorgen":
                from tumorgen.api import TumorGen

                tg = TumorGen.load(args.tumorgen, device=args.device)
                made = {f"tumorgen-{n}": tumorgen_generator(tg, n) for n in steps}
                if tg.run.models.uptake_condition:
                    told = [int(v) for v in _parse_list(args.told_steps, "told steps")] if args.told_steps else []
                    made.update({f"tumorgen-{n}-told": tumorgen_generator(tg, n, told=True) for n in told})
            else:
                try:
                    made = {f"{method}-{args.baseline_sampler}-{args.baseline_steps}": baseline_generator(
                        method, runs[method], steps=args.baseline_steps, sampler=args.baseline_sampler,
                        device=args.device, size=dataset.size)}
                except TumorGenError as err:
                    notes.append(f"{method} skipped: {err}")
                    print(notes[-1], file=sys.stderr)
                    continue
            t1 = time.perf_counter()
            first_name, first = next(iter(made.items()))
            try:  # the first call (allocations, caches) is not timed with the samples
                first(cases[0])
            except TumorGenError as err:  # recorded per case below
                print(f"{first_name}: the first call failed on {cases[0].name}: {err}", file=sys.stderr)
            fixed_cost[method] = {"load_s": t1 - t0, "first_call_s": time.perf_counter() - t1,
                                  "first_call": first_name}
            generators.update(made)
        elif method == "syntumor":
            generators["syntumor"] = syntumor_generator(train_suv, train_masks, args.seed)
        elif method == "blob":
            generators["blob"] = blob_generator(uptake)
        else:
            generators["empty"] = empty_generator

    outputs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in generators}
    per_case: dict[str, list[dict]] = {name: [] for name in generators}
    for i, case in enumerate(cases):
        outside = np.ones(case.suv.shape, dtype=bool)
        outside[_box_slices(case.box)] = False
        timings = []
        for name, generate in generators.items():
            error = None
            t0 = time.perf_counter()
            try:
                raw_suv, raw_mask = generate(case)
            except TumorGenError as err:  # e.g. a box the model's window cannot hold
                error = str(err)
                raw_suv, raw_mask = case.erased, np.zeros(case.suv.shape, np.uint8)
                print(f"  {name} failed on {case.name}: {error}", file=sys.stderr)
            seconds = time.perf_counter() - t0
            raw_suv = np.asarray(raw_suv, dtype=np.float32)
            # The protocol's output: the real scan outside the box, the method's work inside it.
            suv = case.suv.copy()
            suv[_box_slices(case.box)] = raw_suv[_box_slices(case.box)]
            mask = np.zeros(case.suv.shape, np.uint8)
            mask[_box_slices(case.box)] = np.asarray(raw_mask)[_box_slices(case.box)] > 0
            record = {"case": case.name, "box": list(case.box), "seed": case.seed, "seconds": seconds,
                      "raw_outside_box_max_abs_diff": float(np.abs(raw_suv - case.suv)[outside].max()),
                      "raw_mask_voxels_outside_box": int((np.asarray(raw_mask)[outside] > 0).sum()),
                      **case_measures(case, suv, mask)}
            if error:
                record["error"] = error
            per_case[name].append(record)
            outputs[name].append((suv, mask))
            timings.append(f"{name} {seconds:.2f}s")
            if args.save_volumes:
                from tumorgen.io.nifti import save_volume

                folder = stage / "volumes"
                save_volume(suv, case.affine, folder / f"{case.name}_{name}_suv.nii.gz", dtype=np.float32)
                save_volume(mask, case.affine, folder / f"{case.name}_{name}_mask.nii.gz", dtype=np.uint8)
        print(f"[{i + 1}/{len(cases)}] {case.name} box {case.box}: " + ", ".join(timings), file=sys.stderr)

    # FID/KID on tumor-centred slices (model range [0, 1], as the PREP cache and `tumorgen evaluate`).
    fid, floor = {}, None
    if features is not None and len(cases) < 2:
        notes.append(f"FID/KID skipped: {len(cases)} case; they need at least 2")
        features = None
    if features is not None:
        n = args.slices_per_plane

        def to_unit(suv):
            return np.clip(suv / np.float32(suv_max), 0.0, 1.0)

        key = {"dataset": hashlib.sha256((dataset.root / "dataset.json").read_bytes()).hexdigest(),
               "features": args.features, "network": str(getattr(features, "path", "")), "n_per_plane": n}
        real_feats = _real_features(
            args.feature_cache, {**key, "cases": [c.name for c in cases]}, lambda: plane_features(
                [to_unit(c.suv) for c in cases], features=features, where="tumor", masks=[c.mask for c in cases],
                n_per_plane=n))
        if len(train_suv) >= 2:
            pool_feats = _real_features(
                args.feature_cache, {**key, "cases": [c.name for c in train_cases]}, lambda: plane_features(
                    [to_unit(s) for s in train_suv], features=features, where="tumor", masks=train_masks,
                    n_per_plane=n))
            floor = floor_scores(real_feats, pool_feats, seed=args.seed)
        for name, outs in outputs.items():
            centres = [m if m.any() else box_mask(m.shape, c.box) for c, (_, m) in zip(cases, outs)]
            gen_feats = plane_features([to_unit(s) for s, _ in outs], features=features, where="tumor",
                                       masks=centres, n_per_plane=n)
            fid[name] = scores_from_features(real_feats, gen_feats, seed=args.seed)
        print(f"features ({args.features}) done at {time.perf_counter() - started:.0f} s", file=sys.stderr)

    summaries = {name: summarize(records) for name, records in per_case.items()}
    real_row = {"method": FLOOR_NAME, **(floor or {}), "n_cases": len(cases),
                "seam_step": float(np.nanmean([seam_step(c.suv, c.box) for c in cases])),
                "mean_ratio_median": 1.0, "mean_within": 1.0, "max_ratio_median": 1.0, "volume_ratio_median": 1.0,
                "volume_within": 1.0, "one_component": float(np.mean(
                    [ndimage.label(c.mask > 0, structure=CONNECTIVITY_26)[1] == 1 for c in cases])),
                "nonempty": 1.0}
    table_rows = [real_row] + [{"method": name, **fid.get(name, {}), **summaries[name]} for name in generators]
    metrics = {
        "protocol": {"box_margin": BOX_MARGIN, "erase_shell": ERASE_SHELL, "slices_per_plane": args.slices_per_plane,
                     "floor_repeats": FLOOR_REPEATS, "mean_tolerance": MEAN_TOLERANCE,
                     "volume_tolerance": VOLUME_TOLERANCE, "features": args.features,
                     "components_connectivity": 26},
        "data": str(Path(args.data).resolve()), "split": args.split, "suv_max": suv_max, "seed": args.seed,
        "val": {"cases": args.val_cases, "seed": args.val_seed} if args.split == "val" else None,
        "cases": [{"name": c.name, "box": list(c.box), "seed": c.seed, "real_tumor_voxels": int(c.mask.sum())}
                  for c in cases],
        "n_train_reference": len(train_suv), "blob_uptake_suv": uptake,
        "tumorgen": {"run": str(args.tumorgen), "steps": steps} if "tumorgen" in fixed_cost else None,
        "fixed_cost": fixed_cost,
        "baselines": {"difftumor": _text(args.difftumor), "bld": _text(args.bld), "steps": args.baseline_steps,
                      "sampler": args.baseline_sampler},
        "floor": floor, "fid": fid, "summary": summaries, "per_case": per_case, "notes": notes,
        "table": table_rows, "seconds_total": time.perf_counter() - started,
    }
    write_table(COLUMNS, table_rows, stage / "table")
    write_montage(stage / "montage.png", cases[:MONTAGE_CASES],
                  {name: outs[:MONTAGE_CASES] for name, outs in outputs.items()})
    write_json(stage / "metrics.json", metrics)  # last: its presence means the folder is complete
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a PREP cache (`tumorgen prepare`)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="test: the PREP test split; val: --val-cases drawn from the train split")
    parser.add_argument("--val-cases", type=int, default=10, help="with --split val, cases drawn from train")
    parser.add_argument("--val-seed", type=int, default=0, help="with --split val, seeds the draw")
    parser.add_argument("--tumorgen", type=Path, default=None, help="a `tumorgen train` run folder")
    parser.add_argument("--steps", default="10", help="Euler step counts for TumorGen, comma-separated")
    parser.add_argument("--told-steps", default="10",
                        help="for an uptake-conditioned TumorGen, also rows `tumorgen-N-told` given each real "
                             "tumor's mean SUV (comma-separated step counts; empty: none)")
    parser.add_argument("--difftumor", type=Path, default=None, help="a DiffTumor run folder")
    parser.add_argument("--bld", type=Path, default=None, help="a BLD run folder")
    parser.add_argument("--baseline-steps", type=int, default=50, help="sampling steps for difftumor / bld")
    parser.add_argument("--baseline-sampler", choices=("ddim", "ddpm"), default="ddim")
    parser.add_argument("--methods", default=None,
                        help="comma-separated: tumorgen,difftumor,bld,syntumor,blob,empty (default: all available)")
    parser.add_argument("--seed", type=int, default=0, help="seeds erasing, sampling, the floor's draws and KID")
    parser.add_argument("--features", choices=("inception", "pixels", "none"), default="inception",
                        help="FID features: the FID Inception network, 32x32 pixels (smoke tests), or no FID")
    parser.add_argument("--inception", type=Path, default=None, help="a local TorchScript FID Inception file")
    parser.add_argument("--feature-cache", type=Path, default=None,
                        help="folder keeping the real cases' features between runs (they do not depend on the methods)")
    parser.add_argument("--slices-per-plane", type=int, default=SLICES_PER_PLANE)
    parser.add_argument("--device", default="cpu", help="device for the models and Inception")
    parser.add_argument("--save-volumes", action="store_true",
                        help="also write every output as OUT/volumes/<case>_<method>_suv/_mask.nii.gz")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.slices_per_plane < 1:
            raise TumorGenError(f"--slices-per-plane must be >= 1, got {args.slices_per_plane}")
        if Path(args.out).exists() and not args.overwrite:
            raise fail_on(args.out, "already exists; pass --overwrite to replace it")
        with staged_dir(args.out, overwrite=args.overwrite) as stage:
            metrics = run_protocol(args, stage)
    except TumorGenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"paired protocol on {metrics['split']} ({len(metrics['cases'])} cases), {args.features} features, "
          f"{args.slices_per_plane} tumor-centred slices per plane; floor = real test vs "
          f"{(metrics['floor'] or {}).get('n_generated', '-')} real train cases")
    print(render_markdown(COLUMNS, metrics["table"]), end="")
    for method, cost in metrics["fixed_cost"].items():
        print(f"{method} fixed cost (not in s/sample): load {cost['load_s']:.2f} s + first call "
              f"({cost['first_call']}) {cost['first_call_s']:.2f} s")
    for note in metrics["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.out}/table.md, table.csv, metrics.json, montage.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
