"""generate-set and evaluate end to end on tiny PREP caches, the metric code's known answers, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_prep
from tumorgen.cli import main
from tumorgen.evaluation.evaluate import PixelFeatures, evaluate_set
from tumorgen.evaluation.generate import healthy_box, tumor_box
from tumorgen.evaluation.generated_set import load_generated_set, save_sample, write_index
from tumorgen.evaluation.tumor_measures import seam_step


@pytest.fixture(scope="module")
def eval_prep(tmp_path_factory) -> Path:
    """9 cases of 16^3 (the debug model's window): 3 test (tumors), 6 train (5 tumors + 1 healthy)."""
    return write_tiny_prep(tmp_path_factory.mktemp("eval") / "prep", n_cases=9, seed=3, n_test=3)


def identity_set(prep: Path, out: Path) -> Path:
    """The real test cases written as a generated set: evaluating it must give FID = 0."""
    from tumorgen.data.prepared import load_prepared

    samples = []
    for case in load_prepared(prep).split("test"):
        image, mask, affine = case.load()
        image_name, mask_name = save_sample(out, case=case.name, k=0, image=image, mask=mask, affine=affine)
        samples.append({"case": case.name, "k": 0, "image": image_name, "mask": mask_name,
                        "box": list(tumor_box(mask, alpha=0.0, seed=0, factor=4)), "seed": 0, "seconds": 0.0})
    write_index(out, method="identity", samples=samples, data=prep, split="test")
    return out


def test_tumor_box_holds_the_tumor_on_the_latent_grid():
    mask = np.zeros((16, 16, 16), np.uint8)
    mask[5:9, 6:7, 2:11] = 1
    tight = tumor_box(mask, alpha=0.0, seed=0, factor=4)
    assert tight == (4, 4, 0, 12, 8, 12)  # floor / ceil to multiples of 4
    grown = tumor_box(mask, alpha=0.5, seed=1, factor=4)
    assert all(g <= t for g, t in zip(grown[:3], tight[:3])) and all(g >= t for g, t in zip(grown[3:], tight[3:]))
    assert all(v % 4 == 0 for v in grown)
    assert grown == tumor_box(mask, alpha=0.5, seed=1, factor=4)  # seeded


def test_healthy_box_is_a_training_size_inside_the_volume():
    image = np.zeros((16, 16, 16), np.float32)
    image[4:12, 4:12, 4:12] = 1.0
    box = healthy_box(image, sizes=np.array([[8, 4, 4]]), seed=0, factor=4)
    assert [b - a for a, b in zip(box[:3], box[3:])] == [8, 4, 4]
    assert all(v % 4 == 0 for v in box) and min(box) >= 0 and max(box[3:]) <= 16


def test_seam_step_is_zero_for_a_flat_image_and_the_jump_for_a_pasted_block():
    flat = np.ones((16, 16, 16))
    assert seam_step(flat, (4, 4, 4, 12, 12, 12)) == 0.0
    pasted = flat.copy()
    pasted[4:12, 4:12, 4:12] = 3.0
    assert seam_step(pasted, (4, 4, 4, 12, 12, 12)) == pytest.approx(2.0)


def test_identical_set_gives_fid_zero(eval_prep, tmp_path):
    metrics = evaluate_set(real=eval_prep, generated=identity_set(eval_prep, tmp_path / "same"), out=tmp_path / "ev",
                           features=PixelFeatures())
    for where in ("middle", "tumor"):
        assert metrics[f"fid_{where}"]["Avg"] == pytest.approx(0.0, abs=1e-6)
        assert metrics[f"floor_{where}"]["Avg"] > 1e-3  # two different real sets are not identical
    assert metrics["uptake"]["generated"]["n"] == 3
    assert metrics["components"] == {"mean": 1.0, "empty_fraction": 0.0, "split_fraction": 0.0}


@pytest.mark.slow
def test_generate_and_evaluate_cli(eval_prep, trained_debug_run, tmp_path, capsys):
    tg, syn, seg = tmp_path / "tg", tmp_path / "syn", tmp_path / "seg"
    assert main(["generate-set", "--method", "tumorgen", "--model", str(trained_debug_run), "--data", str(eval_prep),
                 "--steps", "2", "--device", "cpu", "--out", str(tg), "--no-progress"]) == 0
    assert main(["generate-set", "--method", "syntumor", "--data", str(eval_prep), "--per-case", "2",
                 "--latent-factor", "4", "--out", str(syn), "--no-progress"]) == 0
    tg_set, syn_set = load_generated_set(tg), load_generated_set(syn)
    assert tg_set.info["model"]["checkpoint_sha256"] and tg_set.info["steps"] == 2 and tg_set.info["sampler"] == "euler"
    assert len(syn_set.samples) == 6
    # the same seed gives every method the same boxes
    assert [s.box for s in tg_set.samples] == [s.box for s in syn_set.samples if s.k == 0]
    from tumorgen.data.prepared import load_prepared

    for sample in tg_set.samples:
        image, mask, affine = sample.load()
        real, _, real_affine = load_prepared(eval_prep).case(sample.case).load()
        outside = ~np.pad(np.ones([b - a for a, b in zip(sample.box[:3], sample.box[3:])], bool),
                          [(a, 16 - b) for a, b in zip(sample.box[:3], sample.box[3:])])
        assert np.allclose(image[outside], real[outside], atol=1e-6)  # the scan is kept outside the box
        assert not mask[outside].any() and np.allclose(affine, real_affine)

    # a segmenter's predictions as an nnU-Net folder would give them: <case>_<k>.nii.gz
    from tumorgen.io.nifti import save_volume

    seg.mkdir()
    for sample in syn_set.samples:
        _, mask, affine = sample.load()
        save_volume(mask, affine, seg / f"{sample.case}_{sample.k}.nii.gz", dtype=np.uint8)
    out = tmp_path / "ev"
    assert main(["evaluate", "--real", str(eval_prep), "--generated", str(syn), "--predictions", str(seg),
                 "--features", "pixels", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("fid_middle", "fid_tumor", "floor_middle", "floor_tumor", "segmentation", "uptake", "noise_relative_sd",
                "components", "seam_step_suv_minus_real"):
        assert key in metrics, key
    assert set(metrics["fid_middle"]) >= {"A", "S", "C", "Avg", "KID_Avg", "n_real", "n_generated"}
    assert metrics["segmentation"]["DSC"] == 1.0 and metrics["segmentation"]["NSD"] == 1.0  # mask vs itself
    table = (out / "table1.md").read_text()
    assert "syntumor" in table and "real vs real (floor)" in table and "tumor-center" in table
    assert (out / "table1.csv").exists() and (out / "montage.png").stat().st_size > 1000
    assert "FID(Avg)" in capsys.readouterr().out


def test_bad_inputs_exit_with_one_line(eval_prep, tmp_path, capsys):
    empty = tmp_path / "not_a_set"
    empty.mkdir()
    assert main(["evaluate", "--real", str(eval_prep), "--generated", str(empty), "--features", "pixels",
                 "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip()
    assert "generated.json" in err and len(err.splitlines()) == 1
    assert main(["generate-set", "--method", "syntumor", "--data", str(empty), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "dataset.json" in err and len(err.splitlines()) == 1
    assert main(["generate-set", "--method", "difftumor", "--data", str(eval_prep), "--out", str(tmp_path / "o3")]) == 2
    assert "--model is required" in capsys.readouterr().err  # tumorgen alone defaults to the bundled model
    assert main(["generate-set", "--method", "tumorgen", "--model", "no-such-model", "--data", str(eval_prep),
                 "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err.strip()
    assert "neither a folder nor a bundled model" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()
