"""`tumorgen synthesize` end to end through `tumorgen.cli.main`: outputs, manifest, table, a sampled box in
the lungs of a healthy AutoPET-layout phantom, and every bad input refused in one line with nothing written."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tumorgen.cli import main
from tumorgen.data.phantom import case_rng, make_phantom
from tumorgen.data.phantom_layouts import write_phantom_dataset
from tumorgen.io.nifti import save_volume

BOX = [16, 16, 12, 22, 22, 18]


def outside(array: np.ndarray, box) -> np.ndarray:
    keep = np.ones(array.shape, dtype=bool)
    keep[box[0]:box[3], box[1]:box[4], box[2]:box[5]] = False
    return array[keep]


@pytest.fixture(scope="module")
def scan_path(tmp_path_factory):
    phantom = make_phantom(region="torso", size=(40, 40, 32), with_tumor=False, rng=np.random.default_rng(4))
    return save_volume(phantom.suv, phantom.affine, tmp_path_factory.mktemp("scan") / "patient_7.nii.gz")


@pytest.mark.slow
def test_synthesize_with_a_box_writes_outputs_manifest_and_a_table(trained_debug_run, scan_path, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["synthesize", "--model", str(trained_debug_run), "--input", str(scan_path), "--out", str(out),
            "--box", *map(str, BOX), "--num", "2", "--steps", "2", "--seed", "9", "--batch", "2", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tumor mL" in printed and "SUVmax" in printed and str(out) in printed
    source = nib.load(str(scan_path))
    for k in range(2):
        pet = nib.load(str(out / f"patient_7_{k}_pet.nii.gz"))
        mask = nib.load(str(out / f"patient_7_{k}_mask.nii.gz"))
        assert pet.shape == source.shape and np.allclose(pet.affine, source.affine)
        assert np.array_equal(outside(np.asarray(pet.dataobj), BOX), outside(np.asarray(source.dataobj), BOX))
        assert outside(np.asarray(mask.dataobj), BOX).sum() == 0
        assert (out / f"patient_7_{k}.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "manifest.json").read_text())
    case = manifest["cases"][0]
    assert case["case"] == "patient_7" and case["steps"] == 2 and case["seed"] == 9
    assert case["model"]["run"] == str(trained_debug_run) and len(case["model"]["checkpoint_sha256"]) == 64
    assert [s["box"] for s in case["samples"]] == [BOX, BOX] and all(s["seconds"] > 0 for s in case["samples"])
    # the same command again is refused (nothing replaced) until --overwrite
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_without_a_box_on_a_healthy_autopet_phantom_the_box_lands_in_the_lungs(trained_debug_run, tmp_path):
    data = tmp_path / "autopet"
    write_phantom_dataset(layout="autopet", out=data, cases=0, healthy=1, size=32, seed=0)
    suv_path = next(data.glob("*/*/SUV.nii.gz"))
    truth = make_phantom(region="torso", size=32, with_tumor=False, rng=case_rng(0, healthy=True, index=0))
    assert np.array_equal(np.asarray(nib.load(str(suv_path)).dataobj), truth.suv), "same phantom as written"
    out = tmp_path / "out"
    assert main(["synthesize", "--model", str(trained_debug_run), "--input", str(suv_path), "--out", str(out),
                 "--num", "2", "--steps", "2", "--seed", "3", "--no-progress"]) == 0
    samples = json.loads((out / "manifest.json").read_text())["cases"][0]["samples"]
    for sample in samples:
        box = sample["box"]
        center = tuple((a + b) // 2 for a, b in zip(box[:3], box[3:]))
        assert sample["box_from"] == "lungs" and truth.organs["lungs"][center]


def _write_garbage(path):
    path.write_bytes(b"\x1f\x8b not really a gzip file")
    return path


@pytest.mark.parametrize("problem", ["box_outside", "box_too_small", "ct_not_suv", "not_a_run",
                                     "missing_organ_mask", "corrupt_scan"])
def test_bad_input_is_one_sentence_naming_the_file_and_nothing_is_written(problem, trained_debug_run, scan_path,
                                                                          tmp_path, capsys):
    out = tmp_path / "out"
    model, scan, extra = str(trained_debug_run), str(scan_path), ["--box", *map(str, BOX)]
    named = scan
    if problem == "box_outside":
        extra = ["--box", "36", "10", "10", "42", "16", "16"]
    elif problem == "box_too_small":
        extra = ["--box", "10", "10", "10", "11", "14", "14"]
    elif problem == "ct_not_suv":
        named = scan = str(save_volume(np.full((40, 40, 32), -1000.0), np.diag([8.0, 8, 8, 1]), tmp_path / "ct.nii.gz"))
    elif problem == "not_a_run":
        named = model = str(tmp_path)
    elif problem == "missing_organ_mask":
        named = str(tmp_path / "no_such_mask.nii.gz")
        extra = ["--organ-mask", named]
    elif problem == "corrupt_scan":
        named = scan = str(_write_garbage(tmp_path / "broken.nii.gz"))
    code = main(["synthesize", "--model", model, "--input", scan, "--out", str(out), "--steps", "2", "--no-progress",
                 *extra])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tumorgen synthesize: error: ") and named in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()
