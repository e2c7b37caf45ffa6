"""The downstream study (issue 10): does synthetic data make a PET tumor segmenter better?

    python benchmarks/downstream.py --data PREP --out benchmarks/results/downstream \
        [--arms real,tumorgen,tumorgen-own,syntumor,difftumor] [--n-real 5,10,20,all] [--seeds 0,1,2] \
        [--seg-steps 1000] [--synthetic 2x] [--modes regenerate,place] \
        [--tumorgen RUN] [--tumorgen-own RUNS] [--tumorgen-steps 10] [--difftumor RUN] [--bld RUN] \
        [--baseline-steps 50] [--baseline-sampler ddim] [--seg-channels 16,32,64,128] [--seg-roi 64] \
        [--seg-batch 2] [--seg-lr 1e-3] [--nsd-tolerance-mm 2] [--device cpu] [--keep-models]

One prepared dataset (a PREP cache with its seeded train/test split). For every cell (arm, number of
real training cases n, seed) a segmenter (`tumorgen.evaluation.segmenter`: MONAI 3D UNet, Dice + BCE,
the project's fit loop) is trained for the same number of steps on

- `real`: the n real cases alone;
- `tumorgen`, `syntumor`, `difftumor` (and `bld`): the same n real cases plus the same number of
  synthetic cases, made by that generator from those n real cases only,
- `tumorgen-own`: as `tumorgen`, but with a VAE and TumorGen trained on the cell's own n real cases and
  nothing else (`benchmarks/downstream_generators.py` trains one pair per (n, seed) into RUNS; a cell
  whose pair is not there is left out with a note) — the strict version of the question,

and judged on the real test split: DSC and NSD (`evaluation.segmentation_metrics`, NSD at
`--nsd-tolerance-mm`) per test case with a tumor; healthy test cases count false positives.

The design, and why:
- **Real cases**: per seed, one seeded permutation of the train split; a cell with n real cases takes
  its first n. So the sets are nested (10 contains 5), every arm of a (n, seed) sees the same real
  cases, and the curve over n is not blurred by a new draw at each n.
- **Synthetic cases** (`--synthetic`: a count, or `2x` = twice n): the j-th comes from the j-th tumor
  case of those n (round robin), its k-th sample. Sample k of a case uses `--modes[k % len]`:
  `regenerate` (the real tumor's box, tight + 2 voxels, is erased and a new tumor generated in it: new
  mask and texture in real context; the label is the new mask in the box, the real label outside it)
  or `place` (a box of the tumor's size in the body, clear of the real tumor by 2 voxels; the label is
  the union; where the scan has no room it regenerates instead). See `synthesis.rand_tumor`.
  The box, the mode and the seed of sample (case, k) depend only on the real case and the seed, so
  every arm puts its tumor into the same box of the same scan with the same seed: only the generator
  differs.
- **Built once**: a synthetic sample is written once per (arm, seed) under OUT/synthetic/ (in a folder
  named after the settings it depends on: modes, generator, data) and reused
  by every n (SynTumor, whose uptake statistics are fitted to the n real tumors it may see, once per
  (seed, n), and `tumorgen-own`'s, whose generator is the cell's own). The generators given by
  `--tumorgen`, `--difftumor` and `--bld` were trained on the whole train split: at small n they carry
  what they learned from the other cases; `tumorgen-own` is the arm without that advantage.
- **Same budget**: every cell trains `--seg-steps` steps (not wall time) of batch `--seg-batch`, the
  same architecture and seed (same initial weights and the same draw sequence for crops and flips).
- **Reporting**: per (n, arm), DSC and NSD as mean ± sd over seeds (each seed: the mean over test
  cases), and against `real` paired per test case and seed: each test case's difference averaged over
  seeds, their mean ± sd, a two-sided Wilcoxon signed-rank p over test cases, and how many test cases
  got better / worse.
- **Resumable**: a cell whose OUT/cells/<cell>/result.json exists (with the same settings) is not run
  again; an interrupted segmenter run resumes from its checkpoint. A model-based arm without its run
  folder is skipped with a note in the table.

Writes OUT/table.md, table.csv, results.json (settings, machine, every cell with its per-test-case
scores), dsc_vs_n.png (DSC and NSD against n, one line per arm, ± sd over seeds) and README.md (the
exact command, the budgets, the machine, the table).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tumorgen.synthesis.pipeline import derived_seed
from tumorgen.data.prepared import PreparedCase, PreparedDataset, load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.tables import Column, render_markdown, write_table
from tumorgen.io.atomic import atomic_path, write_json, write_text
from tumorgen.io.files import read_json_index
from tumorgen.io.nifti import save_volume
from tumorgen.synthesis.boxes import body_mask
from tumorgen.synthesis.rand_tumor import (
    InsertedTumor,
    TumorMaker,
    insert_tumor,
    placement_box,
    regeneration_box,
    syntumor_maker,
    tumorgen_maker,
)

ARMS = ("real", "tumorgen", "tumorgen-own", "syntumor", "difftumor", "bld")
MODEL_ARMS = ("tumorgen", "tumorgen-own", "difftumor", "bld")  # need a run folder
OWN_ARM = "tumorgen-own"  # TumorGen trained on the cell's own n real cases (benchmarks/downstream_generators.py)
OWN_DONE = "generators.json"  # written last in a (n, seed) folder of --tumorgen-own: both stages finished
OWN_FORMAT = "tumorgen-downstream-generators"  # the "format" of plan.json and generators.json there
MODES = ("regenerate", "place")
RESULT_NAME = "result.json"
FORMAT = "tumorgen-downstream"

COLUMNS = (
    Column("n real", "n_real", "{}"),
    Column("arm", "arm", "{}"),
    Column("synthetic", "n_synthetic", "{}"),
    Column("seeds", "seeds", "{}"),
    Column("DSC", "DSC", "{:.3f}", std_key="DSC_sd"),
    Column("NSD", "NSD", "{:.3f}", std_key="NSD_sd"),
    Column("ΔDSC vs real", "dDSC", "{:.3f}", std_key="dDSC_sd"),
    Column("p (DSC)", "p_DSC", "{:.3g}"),
    Column("better/worse", "better_worse", "{}"),
    Column("ΔNSD vs real", "dNSD", "{:.3f}", std_key="dNSD_sd"),
    Column("p (NSD)", "p_NSD", "{:.3g}"),
    Column("healthy FP", "healthy_fp", "{:.2f}"),
    Column("note", "note", "{}"),
)


# ---------------------------------------------------------------------------------------------------
# Which real and synthetic cases a cell sees.


def real_order(train: list[str], seed: int) -> list[str]:
    """The seed's permutation of the train split; a cell with n real cases takes its first n."""
    rng = np.random.default_rng(derived_seed(seed, "real-order"))
    return [train[i] for i in rng.permutation(len(train))]


def own_folder(root: Path, n_real: int, seed: int) -> Path:
    """Where `downstream_generators.py` trains the generators of cell (n, seed): <root>/n005_s0/."""
    return Path(root) / f"n{n_real:03d}_s{seed}"


def own_generators(root: Path, n_real: int, seed: int, real: list[str]) -> dict | None:
    """The finished record of the generators trained on exactly `real`, or None (not trained, not finished)."""
    done = own_folder(root, n_real, seed) / OWN_DONE
    if not done.is_file():
        return None
    record = read_json_index(done, fmt=OWN_FORMAT, required=("real_cases", "trained"))
    if record["real_cases"] != real:
        raise fail_on(done, f"was trained on other real cases than cell n = {n_real}, seed {seed} takes "
                            "(another dataset or split?); train them again into another folder")
    return record


def synthetic_count(spec: str, n_real: int) -> int:
    """`--synthetic`: "2x" -> 2 n, "12" -> 12."""
    text = spec.strip().lower()
    try:
        if text.endswith("x"):
            count = round(float(text[:-1]) * n_real)
        else:
            count = int(text)
    except ValueError:
        raise TumorGenError(f"--synthetic must be a count (e.g. 20) or a multiple of n (e.g. 2x), got {spec!r}") from None
    if count < 0:
        raise TumorGenError(f"--synthetic must not be negative, got {spec!r}")
    return count


def synthetic_plan(sources: list[str], count: int) -> list[tuple[str, int]]:
    """(case, k) of each synthetic case: round robin over the tumor cases a cell sees."""
    if not sources:
        return []
    return [(sources[j % len(sources)], j // len(sources)) for j in range(count)]


@dataclass(frozen=True)
class Placement:
    """Where sample (case, k) of a seed goes: the same for every arm."""

    mode: str  # "regenerate" or "place"
    box: tuple[int, int, int, int, int, int]
    seed: int


def plan_placement(suv: np.ndarray, label: np.ndarray, *, case: str, k: int, seed: int,
                   modes: tuple[str, ...]) -> Placement:
    """The box and mode of sample k of a tumor case, from the real case and the seed alone."""
    own = regeneration_box(label)
    if own is None:
        raise TumorGenError(f"case {case}: no tumor box to regenerate (is it a healthy case?)")
    sample_seed = derived_seed(seed, case, k)
    if modes[k % len(modes)] == "place":
        size = [b - a for a, b in zip(own[:3], own[3:])]
        placed = placement_box(label, size=size, rng=np.random.default_rng(derived_seed(seed, case, k, 1)),
                               region=body_mask(suv))
        if placed is not None:
            return Placement("place", placed, sample_seed)
    return Placement("regenerate", own, sample_seed)


# ---------------------------------------------------------------------------------------------------
# Generators and the synthetic pool.


def pipeline_maker(method: str, run: Path, *, steps: int, sampler: str, device: str, size) -> TumorMaker:
    """DiffTumor or BLD through the synthesis pipeline, as `tumorgen synthesize` would run it."""
    from tumorgen.api import as_volume
    from tumorgen.evaluation.generate import model_generator_for
    from tumorgen.synthesis.pipeline import synthesize_into_scan

    generate_window, _ = model_generator_for(method, run, steps=steps, sampler=sampler, device=device, size=size)
    info = json.loads((Path(run) / "data.json").read_text())

    def make(suv, affine, box, seed):
        scan = as_volume(suv, affine=affine, what="scan")
        result = synthesize_into_scan(scan=scan, boxes=[box], generate=generate_window, model_info=info, num=1,
                                      seed=seed)[0]
        return result.image, result.mask

    return make


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


# ---------------------------------------------------------------------------------------------------
# One cell: training set, segmenter, scores.


@dataclass(frozen=True)
class Cell:
    arm: str
    n_real: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}_n{self.n_real:03d}_s{self.seed}"


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


def segmenter_config(args: argparse.Namespace, seed: int):
    from tumorgen.config import apply_overrides, load_config

    every = max(1, min(args.seg_steps, 250))  # a checkpoint every 250 steps: an interrupted cell resumes
    return apply_overrides(load_config(None), [
        f"train.steps={args.seg_steps}", f"train.lr={args.seg_lr}", f"train.batch_size={args.seg_batch}",
        f"train.seed={seed}", f"train.device={args.device}", f"train.checkpoint_every={every}",
        "train.keep_checkpoints=1", f"train.log_every={max(1, min(args.seg_steps // 20, 50))}",
        # EMA 0.99: averages the last ~100 steps; the default 0.999 would still carry the early weights
        # after the few hundred steps a cell may get
        "train.ema_decay=0.99", "train.max_minutes=none"])


def segmenter_spec(args: argparse.Namespace, size):
    from tumorgen.evaluation.segmenter import SegmenterSpec

    channels = tuple(int(c) for c in args.seg_channels.split(","))
    roi = tuple(min(int(args.seg_roi), int(s)) for s in size)
    return SegmenterSpec(channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=1, roi=roi,
                         foreground=args.seg_foreground, batch_dice=args.seg_batch_dice)


def score_test_split(run: Path, dataset: PreparedDataset, loaded: Loaded, *, tolerance_mm: float,
                     device: str) -> tuple[dict, dict]:
    """({tumor test case: {"DSC", "NSD"}}, {healthy test case: predicted tumor voxels})."""
    from tumorgen.evaluation.segmentation_metrics import dice, nsd
    from tumorgen.evaluation.segmenter import load_segmenter, predict_mask

    model, spec = load_segmenter(run, device=device)
    scores, healthy = {}, {}
    for case in dataset.split("test"):
        suv, label, affine = loaded.suv(case.name)
        pred = predict_mask(model, suv / np.float32(dataset.suv_max), roi=spec.roi, device=device)
        if case.healthy or not label.any():
            healthy[case.name] = int(pred.sum())
            continue
        spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
        scores[case.name] = {"DSC": dice(pred, label), "NSD": nsd(pred, label, tolerance_mm=tolerance_mm,
                                                                     spacing=spacing)}
    return scores, healthy


def run_cell(cell: Cell, *, args, dataset: PreparedDataset, loaded: Loaded, real: list[str],
             pool: SyntheticPool | None, plan: list[tuple[str, int]], out: Path, settings: dict) -> dict:
    """Train and score one cell, or read its result when it already ran with the same settings."""
    from tumorgen.evaluation.segmenter import train_segmenter

    folder = out / "cells" / cell.name
    fingerprint = hashlib.sha256(json.dumps({"cell": cell.name, "real": real, "plan": plan,
                                             "settings": settings}, sort_keys=True).encode()).hexdigest()[:16]
    result_path = folder / RESULT_NAME
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if result.get("fingerprint") != fingerprint:
            raise fail_on(result_path, "holds a result of other settings; choose another --out or delete the folder")
        return result
    started = time.perf_counter()
    synthetic, records = [], []
    for case, k in plan:
        record = pool.get(case, k)
        records.append(record)
        if "error" not in record:
            synthetic.append((record, pool.paths(case, k)))
    built = time.perf_counter()
    trainset = write_training_set(folder / "trainset", dataset=dataset, real=real, synthetic=synthetic)
    seg_dir = folder / "seg"
    resume = (seg_dir / "checkpoints" / "last.pt").is_file()
    if seg_dir.exists() and not resume:
        shutil.rmtree(seg_dir)
    train_segmenter(data=trainset, out=seg_dir, config=segmenter_config(args, cell.seed),
                    spec=segmenter_spec(args, dataset.size), resume=resume, progress=args.progress)
    trained = time.perf_counter()
    scores, healthy = score_test_split(seg_dir, dataset, loaded, tolerance_mm=args.nsd_tolerance_mm,
                                       device=_torch_device(args.device))
    result = {"format": FORMAT, "cell": cell.name, "arm": cell.arm, "n_real": cell.n_real, "seed": cell.seed,
              "fingerprint": fingerprint, "real_cases": real, "synthetic": records,
              "n_synthetic": len(synthetic), "n_synthetic_failed": len(records) - len(synthetic),
              "per_case": scores, "healthy_predicted_voxels": healthy,
              "seconds": {"synthetic": built - started, "train": trained - built,
                          "evaluate": time.perf_counter() - trained}}
    shutil.rmtree(trainset)  # hard links; the pool and the PREP cache keep the files
    if not args.keep_models:
        shutil.rmtree(seg_dir / "checkpoints", ignore_errors=True)
    write_json(result_path, result)  # last: its presence means the cell is done
    return result


def _torch_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# ---------------------------------------------------------------------------------------------------
# Summaries.


def _paired(arm_cells: list[dict], real_cells: dict[int, dict], key: str) -> dict:
    """Per test case, the arm's score minus real's (same seed), averaged over seeds; mean, sd, Wilcoxon p."""
    diffs: dict[str, list[float]] = {}
    for cell in arm_cells:
        base = real_cells.get(cell["seed"])
        if base is None:
            continue
        for case, score in cell["per_case"].items():
            if case in base["per_case"]:
                diffs.setdefault(case, []).append(score[key] - base["per_case"][case][key])
    if not diffs:
        return {}
    d = np.array([np.mean(v) for v in diffs.values()])
    out = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if d.size > 1 else 0.0,
           "better": int((d > 0).sum()), "worse": int((d < 0).sum()), "p": None}
    if d.size >= 2:
        if not np.any(d != 0):
            out["p"] = 1.0
        else:
            from scipy.stats import wilcoxon

            out["p"] = float(wilcoxon(d, zero_method="zsplit").pvalue)
    return out


def summary_rows(cells: list[dict], *, arms: list[str], n_values: list[int], skipped: dict[str, str]) -> list[dict]:
    """One row per (n, arm): mean ± sd over seeds, and the paired comparison with real."""
    rows = []
    for n in n_values:
        real_cells = {c["seed"]: c for c in cells if c["arm"] == "real" and c["n_real"] == n}
        for arm in arms:
            if arm in skipped:
                rows.append({"n_real": n, "arm": arm, "note": skipped[arm]})
                continue
            mine = sorted((c for c in cells if c["arm"] == arm and c["n_real"] == n), key=lambda c: c["seed"])
            if not mine:
                continue
            row = {"n_real": n, "arm": arm, "seeds": len(mine)}
            counts = sorted({c["n_synthetic"] for c in mine})
            row["n_synthetic"] = counts[0] if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            for key in ("DSC", "NSD"):
                per_seed = np.array([np.mean([s[key] for s in c["per_case"].values()]) if c["per_case"] else np.nan
                                     for c in mine])
                row[key] = float(np.mean(per_seed))
                row[f"{key}_sd"] = float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else 0.0
                if arm != "real":
                    paired = _paired(mine, real_cells, key)
                    if paired:
                        row[f"d{key}"], row[f"d{key}_sd"], row[f"p_{key}"] = paired["mean"], paired["sd"], paired["p"]
                        if key == "DSC":
                            row["better_worse"] = f"{paired['better']}/{paired['worse']}"
            healthy = [c["healthy_predicted_voxels"] for c in mine if c["healthy_predicted_voxels"]]
            if healthy:
                row["healthy_fp"] = float(np.mean([np.mean([v > 0 for v in h.values()]) for h in healthy]))
            failed = sum(c["n_synthetic_failed"] for c in mine)
            empty = sum(1 for c in mine for s in c["synthetic"] if s.get("new_voxels") == 0)
            notes = ([f"{failed} synthetic samples refused by the generator (left out)"] if failed else []) + (
                [f"{empty} synthetic samples with an empty new mask (kept: the generator made no tumor)"]
                if empty else [])
            if notes:
                row["note"] = "; ".join(notes)
            rows.append(row)
    return rows


def write_plot(path: Path, rows: list[dict], *, arms: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("DSC", "NSD")):
        for arm in arms:
            points = [(r["n_real"], r[key], r.get(f"{key}_sd", 0.0)) for r in rows
                      if r["arm"] == arm and r.get(key) is not None]
            if not points:
                continue
            n, mean, sd = (np.array(v, dtype=float) for v in zip(*points))
            ax.errorbar(n, mean, yerr=sd, marker="o", capsize=3, label=arm)
        ax.set_xlabel("real training cases")
        ax.set_ylabel(f"{key} (mean ± sd over seeds)")
        ax.set_title(f"{key} on the real test cases", fontsize=9)
        ax.set_xticks(sorted({r["n_real"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def machine() -> dict:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "python": platform.python_version(),
            "load_average_at_start": list(load) if load else None}


def _git_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def readme_text(*, command: str, settings: dict, info: dict, notes: list[str], table: str, seconds: float,
                cells: list[dict]) -> str:
    per_cell = [c["seconds"] for c in cells if "seconds" in c]
    train_s = np.median([s["train"] for s in per_cell]) if per_cell else float("nan")
    all_cells_min = sum(sum(s.values()) for s in per_cell) / 60
    lines = [
        "# Downstream study: segmenters trained with and without synthetic tumors",
        "",
        "```",
        command,
        "```",
        "",
        f"- data: `{settings['data']}` ({settings['n_train']} train / {settings['n_test_tumor']} test cases with a "
        f"tumor, {settings['n_test_healthy']} healthy test cases)",
        f"- arms: {', '.join(settings['arms'])}; real cases n: {', '.join(str(n) for n in settings['n_real'])}; "
        f"seeds: {', '.join(str(s) for s in settings['seeds'])}",
        f"- synthetic cases per cell: `{settings['synthetic']}` (modes {', '.join(settings['modes'])})",
        f"- segmenter budget per cell: {settings['seg']['steps']} steps, batch {settings['seg']['batch']}, "
        f"lr {settings['seg']['lr']}, MONAI UNet channels {settings['seg']['channels']}, roi {settings['seg']['roi']} "
        f"({settings['seg'].get('foreground', 0):.2f} of the patches centered on a tumor when smaller than the volume)",
        f"- generators: {json.dumps(settings['generators'])}",
        f"- NSD tolerance: {settings['nsd_tolerance_mm']} mm",
        f"- machine: {info['processor']}, {info['cpus']} CPUs, torch {info['torch']} with {info['torch_threads']} "
        f"threads, CUDA {info['cuda']}, load average at start {info['load_average_at_start']}",
        f"- code: {settings.get('git') or 'unknown commit'}; wall time of this call {seconds / 60:.1f} min; "
        f"median segmenter training per cell {train_s:.1f} s, all cells {all_cells_min:.1f} min (over every call)",
        "",
        "ΔDSC/ΔNSD: per test case, the arm's score minus real's at the same seed and n, averaged over seeds; "
        "mean ± sd over test cases, two-sided Wilcoxon signed-rank p, test cases better/worse.",
        "",
        table,
    ]
    lines += [f"- note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise TumorGenError(f"--{what} is empty")
    return items


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in _parse_list(text, "seeds")]
    except ValueError:
        raise TumorGenError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise TumorGenError(f"--seeds must not be negative, got {text!r}")
    return seeds


def _n_values(text: str, n_train: int, notes: list[str]) -> list[int]:
    values = []
    for item in _parse_list(text, "n-real"):
        if item.lower() == "all":
            n = n_train
        else:
            try:
                n = int(item)
            except ValueError:
                raise TumorGenError(f"--n-real takes integers or 'all', got {item!r}") from None
            if n < 1:
                raise TumorGenError(f"--n-real values must be >= 1, got {n}")
            if n > n_train:
                notes.append(f"n = {n} is more than the {n_train} training cases: all are used")
                n = n_train
        if n not in values:
            values.append(n)
    return sorted(values)


def run_study(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run every cell (or read the finished ones), then write the table, plot, results and README."""
    started = time.perf_counter()
    out = Path(args.out)
    dataset = load_prepared(args.data)
    loaded = Loaded(dataset)
    train = [c.name for c in dataset.split("train")]
    tumor_test = [c for c in dataset.split("test") if not c.healthy]
    if not train:
        raise fail_on(dataset.root / "dataset.json", "has no training cases")
    if not tumor_test:
        raise fail_on(dataset.root / "dataset.json", "has no test cases with a tumor to score")
    notes: list[str] = []
    arms = _parse_list(args.arms, "arms")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise TumorGenError(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if "real" not in arms:
        arms.insert(0, "real")
        notes.append("the real arm was added: every other arm is compared with it")
    arms = [a for a in ARMS if a in arms]
    modes = tuple(_parse_list(args.modes, "modes"))
    if any(m not in MODES for m in modes):
        raise TumorGenError(f"--modes takes {', '.join(MODES)}, got {args.modes}")
    n_values = _n_values(args.n_real, len(train), notes)
    seeds = _seeds(args.seeds)
    synthetic_count(args.synthetic, 1)  # validate early
    if OWN_ARM in arms and args.tumorgen_own is not None:
        if not Path(args.tumorgen_own).is_dir():
            raise fail_on(args.tumorgen_own, "is not a folder (--tumorgen-own takes the --out of "
                                             "benchmarks/downstream_generators.py)")
        args.tumorgen_own = Path(args.tumorgen_own).resolve()
    runs = {"tumorgen": args.tumorgen, OWN_ARM: args.tumorgen_own, "difftumor": args.difftumor, "bld": args.bld}
    skipped = {arm: f"skipped: no --{arm} run folder given" for arm in MODEL_ARMS
               if arm in arms and runs[arm] is None}
    for arm, why in skipped.items():
        notes.append(f"{arm} {why}")
    generators = {"tumorgen": {"run": str(args.tumorgen), "steps": args.tumorgen_steps} if args.tumorgen else None,
                  OWN_ARM: {"runs": str(args.tumorgen_own), "steps": args.tumorgen_steps,
                            "trained_on": "the cell's own n real cases"} if args.tumorgen_own else None,
                  "difftumor": {"run": str(args.difftumor), "steps": args.baseline_steps,
                                "sampler": args.baseline_sampler} if args.difftumor else None,
                  "bld": {"run": str(args.bld), "steps": args.baseline_steps,
                          "sampler": args.baseline_sampler} if args.bld else None,
                  "syntumor": {"suv_stats": "fitted to the cell's real tumors"}}
    spec = segmenter_spec(args, dataset.size)
    settings = {"data": str(Path(args.data).resolve()), "arms": arms, "n_real": n_values, "seeds": seeds,
                "synthetic": args.synthetic, "modes": list(modes), "nsd_tolerance_mm": args.nsd_tolerance_mm,
                "seg": {"steps": args.seg_steps, "batch": args.seg_batch, "lr": args.seg_lr,
                        "channels": list(spec.channels), "roi": list(spec.roi), "foreground": spec.foreground,
                        "batch_dice": spec.batch_dice},
                "generators": {a: g for a, g in generators.items() if a in arms and a not in skipped},
                "n_train": len(train), "n_test_tumor": len(tumor_test),
                "n_test_healthy": len(dataset.split("test")) - len(tumor_test)}
    common = {k: v for k, v in settings.items() if k not in ("arms", "n_real", "seeds", "generators")}
    settings["git"] = _git_commit()

    shared_models: dict[str, TumorMaker] = {}

    def model_maker(arm: str, run: Path) -> Callable[[], TumorMaker]:
        def build() -> TumorMaker:  # loaded on first use, once per study (per cell for tumorgen-own)
            key = f"{arm}:{run}"
            if key not in shared_models:
                if arm == OWN_ARM:  # one (n, seed) at a time: drop the previous cell's model
                    for old in [k for k in shared_models if k.startswith(f"{OWN_ARM}:")]:
                        del shared_models[old]
                if arm in ("tumorgen", OWN_ARM):
                    from tumorgen.api import TumorGen

                    shared_models[key] = tumorgen_maker(TumorGen.load(run, device=args.device),
                                                        steps=args.tumorgen_steps)
                else:
                    shared_models[key] = pipeline_maker(arm, run, steps=args.baseline_steps,
                                                        sampler=args.baseline_sampler, device=args.device,
                                                        size=dataset.size)
            return shared_models[key]

        return build

    # tumorgen-own's generators per (n, seed): a cell runs only where they were trained on its real cases
    own: dict[tuple[int, int], dict | None] = {}
    if OWN_ARM in arms and OWN_ARM not in skipped:
        for seed in seeds:
            order = real_order(train, seed)
            for n in n_values:
                own[n, seed] = own_generators(args.tumorgen_own, n, seed, order[:n])
    missing = [f"n = {n}, seed {seed}" for (n, seed), record in own.items() if record is None and any(
        not dataset.case(name).healthy for name in real_order(train, seed)[:n])]
    cells: list[dict] = []
    total = len(seeds) * len(n_values) * len([a for a in arms if a not in skipped]) - len(missing)
    done = 0
    for seed in seeds:
        order = real_order(train, seed)
        for n in n_values:
            real = order[:n]
            sources = [name for name in real if not dataset.case(name).healthy]
            count = synthetic_count(args.synthetic, n)
            plan = synthetic_plan(sources, count)
            if count and not sources:
                notes.append(f"seed {seed}, n = {n}: no tumor among the real cases, so no synthetic cases")
            for arm in arms:
                if arm in skipped:
                    continue
                generator, run = generators.get(arm), runs.get(arm)
                if arm == OWN_ARM and sources:  # this cell's own generators, or no cell
                    trained = own[n, seed]
                    if trained is None:
                        continue
                    run = own_folder(args.tumorgen_own, n, seed) / "tumorgen"
                    generator = {**generator, "run": str(run), "trained": trained["trained"]}
                pool = None
                # the pool's folder names what its samples depend on, so other settings never reuse them
                key = hashlib.sha256(json.dumps([list(modes), generator, settings["data"]]).encode())
                per_n = arm in ("syntumor", OWN_ARM)  # generators fitted to the cell's own n cases
                tag = f"s{seed}" + (f"_n{n:03d}" if per_n else "") + f"_{key.hexdigest()[:8]}"
                if arm in MODEL_ARMS:
                    pool = SyntheticPool(out / "synthetic" / arm / tag, loaded=loaded, make=model_maker(arm, run),
                                         seed=seed, modes=modes)
                elif arm == "syntumor":
                    pool = SyntheticPool(out / "synthetic" / "syntumor" / tag, loaded=loaded,
                                         make=_syntumor_factory(loaded, sources, seed), seed=seed, modes=modes)
                cell = Cell(arm, n, seed)
                t0 = time.perf_counter()
                result = run_cell(cell, args=args, dataset=dataset, loaded=loaded, real=real, pool=pool,
                                  plan=plan if arm != "real" else [], out=out,
                                  settings={**common, "generator": generator})
                cells.append(result)
                done += 1
                dsc = np.mean([s["DSC"] for s in result["per_case"].values()])
                print(f"[{done}/{total}] {cell.name}: {len(real)} real + {result['n_synthetic']} synthetic, "
                      f"DSC {dsc:.3f} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)

    if missing:
        notes.append(f"{OWN_ARM}: no finished generators under {args.tumorgen_own} for {'; '.join(missing)} "
                     "(benchmarks/downstream_generators.py trains them): those cells were not run")
    rows = summary_rows(cells, arms=arms, n_values=n_values, skipped=skipped)
    write_table(COLUMNS, rows, out / "table")
    command = "python benchmarks/downstream.py " + shlex.join(argv)
    table = render_markdown(COLUMNS, rows)
    write_plot(out / "dsc_vs_n.png", rows, arms=[a for a in arms if a not in skipped],
               title=f"segmenter DSC/NSD vs real training cases ({args.seg_steps} steps per cell, synthetic "
                     f"{args.synthetic}, {len(seeds)} seeds)")
    info = machine()
    seconds = time.perf_counter() - started
    write_json(out / "results.json", {"format": FORMAT, "version": 1, "command": command, "settings": settings,
                                      "machine": info, "notes": notes, "rows": rows, "cells": cells,
                                      "seconds_this_call": seconds})
    write_text(out / "README.md", readme_text(command=command, settings=settings, info=info, notes=notes,
                                              table=table, seconds=seconds, cells=cells))
    return {"rows": rows, "notes": notes, "table": table}


def _syntumor_factory(loaded: Loaded, sources: list[str], seed: int) -> Callable[[], TumorMaker]:
    """SynTumor with uptake statistics fitted to the tumors of the cell's real cases only."""

    def build() -> TumorMaker:
        from tumorgen.baselines.syntumor import SuvStats, SynTumor

        images, masks = zip(*[loaded.suv(name)[:2] for name in sources])
        return syntumor_maker(SynTumor(suv_stats=SuvStats.from_tumors(images, masks), seed=seed))

    return build


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a PREP cache (`tumorgen prepare`) with its split")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed when it exists)")
    parser.add_argument("--arms", default="real,tumorgen,syntumor,difftumor",
                        help=f"comma-separated, from {','.join(ARMS)}")
    parser.add_argument("--n-real", default="5,10,20,all", help="numbers of real training cases ('all' = the split)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds: real-case draw, synthetic samples, segmenter")
    parser.add_argument("--synthetic", default="2x",
                        help="synthetic cases per cell, the same for every arm: a count, or a multiple of n ('2x')")
    parser.add_argument("--modes", default="regenerate,place",
                        help="how sample k goes in, cycled over k: regenerate (erase the real box) and/or place")
    parser.add_argument("--seg-steps", type=int, default=1000, help="segmenter training steps per cell")
    parser.add_argument("--seg-batch", type=int, default=2, help="segmenter batch size")
    parser.add_argument("--seg-lr", type=float, default=1e-3, help="segmenter learning rate (AdamW)")
    parser.add_argument("--seg-channels", default="16,32,64,128", help="UNet features per level")
    parser.add_argument("--seg-roi", type=int, default=64, help="training patch / sliding window side (voxels)")
    parser.add_argument("--seg-batch-dice", action="store_true",
                        help="Dice over the whole batch (nnU-Net's batch dice), for tumors much smaller than a patch")
    parser.add_argument("--seg-foreground", type=float, default=1 / 3,
                        help="share of training patches centered on a tumor voxel (when --seg-roi < the volume)")
    parser.add_argument("--tumorgen", type=Path, default=None, help="a `tumorgen train` run folder")
    parser.add_argument("--tumorgen-own", type=Path, default=None,
                        help="the folder `benchmarks/downstream_generators.py` trained TumorGen per (n, seed) into, "
                             "on the cell's own real cases only (arm tumorgen-own)")
    parser.add_argument("--tumorgen-steps", type=int, default=10, help="Euler steps of TumorGen's sampler")
    parser.add_argument("--difftumor", type=Path, default=None, help="a `tumorgen train-baseline --method difftumor` run")
    parser.add_argument("--bld", type=Path, default=None, help="a `tumorgen train-baseline --method bld` run")
    parser.add_argument("--baseline-steps", type=int, default=50, help="sampling steps of DiffTumor / BLD")
    parser.add_argument("--baseline-sampler", choices=("ddim", "ddpm"), default="ddim")
    parser.add_argument("--nsd-tolerance-mm", type=float, default=2.0, help="NSD tolerance (mm)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: segmenters and generators")
    parser.add_argument("--keep-models", action="store_true", help="keep each cell's segmenter checkpoints")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.seg_steps < 1 or args.seg_batch < 1:
            raise TumorGenError("--seg-steps and --seg-batch must be >= 1")
        if not 0.0 <= args.seg_foreground <= 1.0:
            raise TumorGenError(f"--seg-foreground is a share between 0 and 1, got {args.seg_foreground}")
        summary = run_study(args, argv)
    except TumorGenError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary["table"], end="")
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.out}/table.md, table.csv, results.json, dsc_vs_n.png, README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
