"""The downstream study (issue 10): does synthetic data make a PET tumor segmenter better?

`run_study(DownstreamOptions(...))`; `benchmarks/downstream.py` is its command line, whose flags are the
options' names (`--seg-steps` is `seg_steps`). One prepared dataset (a PREP cache with its seeded train/test split). For every cell (arm, number of
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
  the union; where the scan has no room it regenerates instead). See `augmentation.rand_tumor`.
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

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from tumorgen.data.prepared import PreparedDataset, load_prepared
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.evaluation.downstream_data import Loaded, SyntheticPool, write_training_set
from tumorgen.evaluation.downstream_plan import (
    ARMS,
    MODEL_ARMS,
    MODES,
    OWN_ARM,
    own_folder,
    own_generators,
    parse_list,
    parse_n_values,
    parse_seeds,
    real_order,
    synthetic_count,
    synthetic_plan,
)
from tumorgen.evaluation.downstream_report import COLUMNS, git_commit, machine, readme_text, summary_rows, write_plot
from tumorgen.evaluation.tables import render_markdown, write_table
from tumorgen.generators import TumorGenerator, build_generator
from tumorgen.io.atomic import write_json, write_text
from tumorgen.io.spacing import voxel_spacing

RESULT_NAME = "result.json"
FORMAT = "tumorgen-downstream"


@dataclass(frozen=True)
class DownstreamOptions:
    """The study's settings; `benchmarks/downstream.py` has one flag each, with these defaults.

    Args:
        data: a PREP cache with its split. out: the output folder (resumed when it exists).
        arms: comma-separated, from `ARMS`. n_real: numbers of real training cases ("all": the split).
        seeds: real-case draw, synthetic samples, segmenter. synthetic: a count, or a multiple of n ("2x").
        modes: how sample k goes in, cycled over k: regenerate and/or place.
        seg_*: the segmenter's steps, batch, learning rate, UNet features per level, patch side, batch
            Dice, share of tumor-centred patches.
        tumorgen, tumorgen_own, difftumor, bld: run folders of the model arms (tumorgen_own: the folder
            `benchmarks/downstream_generators.py` trained into); tumorgen_steps: TumorGen's Euler steps.
        baseline_steps, baseline_sampler: DiffTumor / BLD sampling. nsd_tolerance_mm: NSD tolerance.
        device: cpu, cuda or auto. keep_models: keep each cell's segmenter checkpoints. progress: bars.
    """

    data: Path
    out: Path
    arms: str = "real,tumorgen,syntumor,difftumor"
    n_real: str = "5,10,20,all"
    seeds: str = "0,1,2"
    synthetic: str = "2x"
    modes: str = "regenerate,place"
    seg_steps: int = 1000
    seg_batch: int = 2
    seg_lr: float = 1e-3
    seg_channels: str = "16,32,64,128"
    seg_roi: int = 64
    seg_batch_dice: bool = False
    seg_foreground: float = 1 / 3
    tumorgen: Path | None = None
    tumorgen_own: Path | None = None
    tumorgen_steps: int = 10
    difftumor: Path | None = None
    bld: Path | None = None
    baseline_steps: int = 50
    baseline_sampler: str = "ddim"
    nsd_tolerance_mm: float = 2.0
    device: str = "cpu"
    keep_models: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Cell:
    arm: str
    n_real: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm}_n{self.n_real:03d}_s{self.seed}"


def segmenter_config(args: DownstreamOptions, seed: int):
    from tumorgen.config import apply_overrides, load_config

    every = max(1, min(args.seg_steps, 250))  # a checkpoint every 250 steps: an interrupted cell resumes
    return apply_overrides(load_config(None), [
        f"train.steps={args.seg_steps}", f"train.lr={args.seg_lr}", f"train.batch_size={args.seg_batch}",
        f"train.seed={seed}", f"train.device={args.device}", f"train.checkpoint_every={every}",
        "train.keep_checkpoints=1", f"train.log_every={max(1, min(args.seg_steps // 20, 50))}",
        # EMA 0.99: averages the last ~100 steps; the default 0.999 would still carry the early weights
        # after the few hundred steps a cell may get
        "train.ema_decay=0.99", "train.max_minutes=none"])


def segmenter_spec(args: DownstreamOptions, size):
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
        spacing = voxel_spacing(affine)
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


def run_study(args: DownstreamOptions, *, command: str) -> dict:
    """Run every cell (or read the finished ones), then write the table, plot, results and README.

    Args:
        args: the settings.
        command: the command line that ran the study, for the README and results.json.

    Returns:
        {"rows": the table's rows, "notes": what the table's reader should know, "table": the markdown}.
    """
    if args.seg_steps < 1 or args.seg_batch < 1:
        raise TumorGenError("--seg-steps and --seg-batch must be >= 1")
    if not 0.0 <= args.seg_foreground <= 1.0:
        raise TumorGenError(f"--seg-foreground is a share between 0 and 1, got {args.seg_foreground}")
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
    arms = parse_list(args.arms, "arms")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise TumorGenError(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if "real" not in arms:
        arms.insert(0, "real")
        notes.append("the real arm was added: every other arm is compared with it")
    arms = [a for a in ARMS if a in arms]
    modes = tuple(parse_list(args.modes, "modes"))
    if any(m not in MODES for m in modes):
        raise TumorGenError(f"--modes takes {', '.join(MODES)}, got {args.modes}")
    n_values = parse_n_values(args.n_real, len(train), notes)
    seeds = parse_seeds(args.seeds)
    synthetic_count(args.synthetic, 1)  # validate early
    if OWN_ARM in arms and args.tumorgen_own is not None:
        if not Path(args.tumorgen_own).is_dir():
            raise fail_on(args.tumorgen_own, "is not a folder (--tumorgen-own takes the --out of "
                                             "benchmarks/downstream_generators.py)")
        args = replace(args, tumorgen_own=Path(args.tumorgen_own).resolve())
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
    settings["git"] = git_commit()

    shared_models: dict[str, TumorGenerator] = {}

    def model_maker(arm: str, run: Path) -> Callable[[], TumorGenerator]:
        def build() -> TumorGenerator:  # loaded on first use, once per study (per cell for tumorgen-own)
            key = f"{arm}:{run}"
            if key not in shared_models:
                if arm == OWN_ARM:  # one (n, seed) at a time: drop the previous cell's model
                    for old in [k for k in shared_models if k.startswith(f"{OWN_ARM}:")]:
                        del shared_models[old]
                if arm in ("tumorgen", OWN_ARM):
                    shared_models[key] = build_generator("tumorgen", run, steps=args.tumorgen_steps,
                                                         device=args.device)
                else:
                    shared_models[key] = build_generator(arm, run, steps=args.baseline_steps,
                                                         sampler=args.baseline_sampler, device=args.device,
                                                         grid=dataset.size)
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


def _syntumor_factory(loaded: Loaded, sources: list[str], seed: int) -> Callable[[], TumorGenerator]:
    """SynTumor with uptake statistics fitted to the tumors of the cell's real cases only."""

    def build() -> TumorGenerator:
        images, masks = zip(*[loaded.suv(name)[:2] for name in sources])
        return build_generator("syntumor", reference=(images, masks), seed=seed)

    return build
