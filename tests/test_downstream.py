"""The downstream study (`tumorgen.evaluation.downstream`, behind benchmarks/downstream.py) on a tiny PREP
cache with a few segmenter steps: every arm sees the same real
cases and as many synthetic ones, synthetic labels lie in their box and keep the real label, same seed same
table, finished cells are reused, a missing model's arm is skipped with a note."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_prep
from tumorgen.data.box_geometry import box_slices
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError
from tumorgen.evaluation.downstream import DownstreamOptions, run_study
from tumorgen.evaluation.downstream_plan import real_order, synthetic_count, synthetic_plan
from tumorgen.evaluation.downstream_report import summary_rows
from tumorgen.io.nifti import load_volume

TINY_SEG = {"seg_steps": 2, "seg_channels": "4,8,16", "seg_roi": 16, "progress": False}
COMMAND = "python benchmarks/downstream.py (test)"
GENERATORS_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "downstream_generators.py"


def study_run(**options) -> dict:
    return run_study(DownstreamOptions(**{**TINY_SEG, **options}), command=COMMAND)


def generators_script(argv: list[str]):
    """benchmarks/downstream_generators.py in a subprocess (it trains through `python -m tumorgen` itself)."""
    import subprocess
    import sys

    from conftest import cli_env

    return subprocess.run([sys.executable, str(GENERATORS_SCRIPT), *argv], capture_output=True, text=True,
                          env=cli_env())


def tiny_study_prep(root: Path) -> Path:
    """8 cases of 16^3: train = case02..case07 (case07 healthy), test = case00, case01."""
    return write_tiny_prep(root, n_cases=8, n_test=2)


def _difftumor_run(prep: Path, *, vae: Path, out: Path) -> Path:
    """A DiffTumor run trained for one step (meaningless weights, a complete run folder)."""
    from tumorgen.baselines.stage import train_baseline
    from tumorgen.config import apply_overrides, load_config

    config = apply_overrides(load_config("debug"), ["train.steps=1"])
    train_baseline(method="difftumor", data=prep, vae_run=vae, out=out, config=config, progress=False)
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory, trained_debug_run, one_thread):
    root = tmp_path_factory.mktemp("downstream")
    prep = tiny_study_prep(root / "prep")
    difftumor = _difftumor_run(prep, vae=trained_debug_run.parent / "vae", out=root / "difftumor")
    out = root / "out"
    study_run(data=prep, out=out, arms="real,tumorgen,syntumor,difftumor,bld", tumorgen=trained_debug_run,
              tumorgen_steps=2, difftumor=difftumor, baseline_steps=2, n_real="2,all", seeds="0,1")
    return prep, out


def _cells(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["cells"]


@pytest.mark.slow
def test_outputs_and_the_skipped_arm(study):
    _, out = study
    for name in ("table.md", "table.csv", "results.json", "dsc_vs_n.png", "README.md"):
        assert (out / name).is_file(), name
    readme = (out / "README.md").read_text()
    assert COMMAND in readme and "2 steps" in readme
    rows = json.loads((out / "results.json").read_text())["rows"]
    skipped = [r for r in rows if r["arm"] == "bld"]
    assert skipped and all("skipped: no --bld run" in r["note"] for r in skipped)
    assert {(r["n_real"], r["arm"]) for r in rows if "DSC" in r} == {
        (n, a) for n in (2, 6) for a in ("real", "tumorgen", "syntumor", "difftumor")}
    for row in rows:
        if "DSC" in row:
            assert 0.0 <= row["DSC"] <= 1.0 and 0.0 <= row["NSD"] <= 1.0 and row["seeds"] == 2


@pytest.mark.slow
def test_every_arm_sees_the_same_real_cases_and_as_many_synthetic_ones(study):
    _, out = study
    cells = _cells(out)
    assert len(cells) == 4 * 2 * 2
    for n in (2, 6):
        for seed in (0, 1):
            group = {c["arm"]: c for c in cells if c["n_real"] == n and c["seed"] == seed}
            assert set(group) == {"real", "tumorgen", "syntumor", "difftumor"}
            assert len({tuple(c["real_cases"]) for c in group.values()}) == 1
            real = group["real"]["real_cases"]
            assert len(real) == n and group["real"]["n_synthetic"] == 0
            plans = []
            for arm in ("tumorgen", "syntumor", "difftumor"):
                cell = group[arm]
                assert cell["n_synthetic"] == 2 * n and cell["n_synthetic_failed"] == 0
                assert {s["case"] for s in cell["synthetic"]} <= set(real), "only the cell's own real cases"
                plans.append([(s["case"], s["k"], s["mode"], tuple(s["box"]), s["seed"]) for s in cell["synthetic"]])
            assert plans[0] == plans[1] == plans[2], "the same boxes, modes and seeds for every generator"
    # nested real sets: the 2 cases of a seed are the first 2 of its 6
    for seed in (0, 1):
        small = next(c for c in cells if c["arm"] == "real" and c["n_real"] == 2 and c["seed"] == seed)
        full = next(c for c in cells if c["arm"] == "real" and c["n_real"] == 6 and c["seed"] == seed)
        assert full["real_cases"][:2] == small["real_cases"]


@pytest.mark.slow
def test_synthetic_labels_lie_in_their_box_and_keep_the_real_label(study):
    prep, out = study
    dataset = load_prepared(prep)
    records = sorted((out / "synthetic").glob("*/*/*_syn*.json"))
    assert records
    modes, empty = set(), 0
    for path in records:
        record = json.loads(path.read_text())
        image = load_volume(path.with_name(path.stem + "_image.nii.gz")).array
        label = load_volume(path.with_name(path.stem + "_mask.nii.gz"), kind="mask").array
        real_image, real_label, _ = dataset.case(record["case"]).load()
        inside = np.zeros(label.shape, bool)
        inside[box_slices(record["box"])] = True
        assert np.allclose(image[~inside], real_image[~inside], atol=1e-6), "the scan is unchanged outside the box"
        assert np.array_equal(label[~inside], real_label[~inside]), "new tumor only inside the box"
        assert (label[inside] > 0).sum() == record["new_voxels"] and label.sum() == record["label_voxels"]
        empty += record["new_voxels"] == 0
        if record["mode"] == "place":
            assert not real_label[inside].any() and np.array_equal(np.maximum(label, real_label), label), "union"
        modes.add(record["mode"])
    assert modes == {"regenerate", "place"}
    assert empty <= len(records) // 4, "an untrained generator may make an empty tumor now and then, not mostly"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert all("empty new mask" in r.get("note", "") for r in rows if r["arm"] != "bld" and any(
        s.get("new_voxels") == 0 for c in _cells(out) if c["arm"] == r["arm"] and c["n_real"] == r["n_real"]
        for s in c["synthetic"]))


@pytest.mark.slow
def test_same_seed_same_table_and_finished_cells_are_reused(tmp_path, one_thread):
    prep = tiny_study_prep(tmp_path / "prep")
    common = {"data": prep, "arms": "real,syntumor", "n_real": "3", "seeds": "4"}
    study_run(**common, out=tmp_path / "a")
    study_run(**common, out=tmp_path / "b")
    assert (tmp_path / "a" / "table.csv").read_text() == (tmp_path / "b" / "table.csv").read_text()
    a, b = _cells(tmp_path / "a"), _cells(tmp_path / "b")
    assert [c["per_case"] for c in a] == [c["per_case"] for c in b]

    result = tmp_path / "a" / "cells" / "syntumor_n003_s4" / "result.json"
    before = result.stat().st_mtime_ns
    study_run(**common, out=tmp_path / "a")
    assert result.stat().st_mtime_ns == before, "a finished cell is read, not run again"
    with pytest.raises(TumorGenError, match="other settings"):
        study_run(**common, out=tmp_path / "a", seg_steps=3)


def test_plan_helpers():
    assert synthetic_count("2x", 5) == 10 and synthetic_count("7", 5) == 7
    assert synthetic_plan(["a", "b"], 5) == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert synthetic_plan([], 3) == []
    order = real_order([f"c{i}" for i in range(10)], 3)
    assert sorted(order) == sorted(f"c{i}" for i in range(10)) and order == real_order(
        [f"c{i}" for i in range(10)], 3)
    with pytest.raises(TumorGenError, match="--synthetic"):
        synthetic_count("lots", 3)


def test_paired_comparison_is_per_test_case_and_seed():
    def cell(arm, seed, dsc):
        return {"arm": arm, "n_real": 4, "seed": seed, "n_synthetic": 0 if arm == "real" else 8,
                "n_synthetic_failed": 0, "synthetic": [], "healthy_predicted_voxels": {},
                "per_case": {c: {"DSC": v, "NSD": v} for c, v in dsc.items()}}

    cells = [cell("real", 0, {"a": 0.5, "b": 0.4, "c": 0.2}), cell("real", 1, {"a": 0.7, "b": 0.2, "c": 0.2}),
             cell("syntumor", 0, {"a": 0.6, "b": 0.6, "c": 0.1}), cell("syntumor", 1, {"a": 0.8, "b": 0.2, "c": 0.1})]
    rows = summary_rows(cells, arms=["real", "syntumor"], n_values=[4], skipped={})
    real, syn = rows
    assert real["DSC"] == pytest.approx(np.mean([np.mean([0.5, 0.4, 0.2]), np.mean([0.7, 0.2, 0.2])]))
    # per test case, averaged over seeds: a +0.1, b +0.1, c -0.1
    assert syn["dDSC"] == pytest.approx(0.1 / 3) and syn["dDSC_sd"] == pytest.approx(np.std([0.1, 0.1, -0.1], ddof=1))
    assert syn["better_worse"] == "2/1" and 0.0 < syn["p_DSC"] <= 1.0 and "dDSC" not in real



@pytest.mark.slow
def test_tumorgen_own_trains_on_the_cells_real_cases_only(tmp_path, one_thread):
    prep = tiny_study_prep(tmp_path / "prep")
    runs = tmp_path / "runs"
    train = load_prepared(prep).split("train")
    expected = real_order([c.name for c in train], 0)[:2]
    gen_argv = ["--data", str(prep), "--out", str(runs), "--n-real", "2", "--seeds", "0", "--config", "debug",
                "--vae-steps", "1", "--steps", "1", "--no-progress"]
    assert generators_script(gen_argv).returncode == 0
    done = runs / "n002_s0" / "generators.json"
    record = json.loads(done.read_text())
    assert record["real_cases"] == expected
    own_prep = load_prepared(runs / "n002_s0" / "prep")
    assert [c.name for c in own_prep.split("train")] == expected, "the generators saw the cell's cases, no other"
    assert (runs / "n002_s0" / "tumorgen" / "config.json").is_file()
    before = done.stat().st_mtime_ns
    assert generators_script(gen_argv).returncode == 0
    assert done.stat().st_mtime_ns == before, "a finished pair is not trained again"

    out = tmp_path / "out"
    options = {"data": prep, "arms": "real,tumorgen-own", "tumorgen_own": runs, "tumorgen_steps": 2,
               "n_real": "2,all", "seeds": "0"}
    study_run(**options, out=out)
    cells = {(c["arm"], c["n_real"]): c for c in _cells(out)}
    assert set(cells) == {("real", 2), ("real", 6), ("tumorgen-own", 2)}, "no own generators for n = 6: no cell"
    own = cells[("tumorgen-own", 2)]
    assert own["real_cases"] == expected and own["n_synthetic"] == 4
    assert {s["case"] for s in own["synthetic"]} <= set(expected)
    pools = list((out / "synthetic" / "tumorgen-own").iterdir())
    assert [p.name[:7] for p in pools] == ["s0_n002"], "the pool of the cell's own generators, per (n, seed)"
    results = json.loads((out / "results.json").read_text())
    assert any("n = 6, seed 0" in note for note in results["notes"])
    generator = results["settings"]["generators"]["tumorgen-own"]
    assert generator["runs"] == str(runs.resolve())

    changed = [*gen_argv]
    changed[changed.index("--steps") + 1] = "2"
    done_again = generators_script(changed)
    assert done_again.returncode == 2, "other settings must not reuse a planned folder"
    assert "other cases or settings" in done_again.stderr

    record["real_cases"] = expected[::-1]  # generators of other cases must not score this cell
    done.write_text(json.dumps(record))
    with pytest.raises(TumorGenError, match="other real cases"):
        study_run(**options, out=tmp_path / "out2")
