"""`tumorgen synthesize` end to end through `tumorgen.cli.main`: outputs, manifest, table, a sampled box in
the lungs of a healthy AutoPET-layout phantom, and every bad input refused in one line with nothing written."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tumorgen.cli import main
from tumorgen.data.box_geometry import box_mask
from tumorgen.data.phantom import case_rng, make_phantom
from tumorgen.data.phantom_layouts import write_phantom_dataset
from tumorgen.io.nifti import save_volume

BOX = [16, 16, 12, 22, 22, 18]


def outside(array: np.ndarray, box) -> np.ndarray:
    """The voxels outside a half-open box (the ones synthesis must leave as they were)."""
    return array[box_mask(array.shape, box) == 0]


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


@pytest.mark.parametrize("problem", ["box_outside", "box_too_small", "ct_not_suv", "normalised_scan", "not_a_run",
                                     "missing_organ_mask", "corrupt_scan", "center_outside", "center_without_size",
                                     "size_not_positive", "unsafe_name"])
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
    elif problem == "normalised_scan":  # a PET divided by its maximum: peaks at 1
        pet = nib.load(scan)
        values = np.asarray(pet.dataobj, dtype=np.float32)
        named = scan = str(save_volume(values / values.max(), pet.affine, tmp_path / "normalised.nii.gz"))
    elif problem == "not_a_run":
        named = model = str(tmp_path)
    elif problem == "missing_organ_mask":
        named = str(tmp_path / "no_such_mask.nii.gz")
        extra = ["--organ-mask", named]
    elif problem == "corrupt_scan":
        named = scan = str(_write_garbage(tmp_path / "broken.nii.gz"))
    elif problem == "center_outside":
        extra = ["--center-mm", "-1000", "0", "0", "--size-mm", "20", "20", "20"]
    elif problem == "center_without_size":
        named, extra = "--size-mm", ["--center-mm", "0", "0", "0"]
    elif problem == "size_not_positive":
        named, extra = "--size-mm", ["--center-mm", "0", "0", "0", "--size-mm", "20", "0", "20"]
    elif problem == "unsafe_name":
        named, extra = "--name", [*extra, "--name", "../elsewhere"]
    code = main(["synthesize", "--model", model, "--input", scan, "--out", str(out), "--steps", "2", "--no-progress",
                 *extra])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tumorgen synthesize: error: ") and named in lines[0], err
    assert "Traceback" not in err
    assert not out.exists()


def scan_mm(path, index) -> list[str]:
    """World mm (RAS+) of a continuous voxel index, as command-line strings."""
    affine = nib.load(str(path)).affine
    return [f"{v:.6f}" for v in (affine @ [*index, 1.0])[:3]]


@pytest.mark.slow
def test_a_box_in_world_mm_becomes_the_voxel_box_that_covers_it(trained_debug_run, scan_path, tmp_path, capsys):
    spacing = np.sqrt((nib.load(str(scan_path)).affine[:3, :3] ** 2).sum(axis=0))
    lo, hi = np.array(BOX[:3]), np.array(BOX[3:])
    # centered on the border between two voxels, a whole number of voxels wide: exactly BOX
    center, size = scan_mm(scan_path, (lo + hi - 1) / 2), [f"{v:g}" for v in (hi - lo) * spacing]
    out = tmp_path / "out"
    assert main(["synthesize", "--model", str(trained_debug_run), "--input", str(scan_path), "--out", str(out),
                 "--center-mm", *center, "--size-mm", *size, "--steps", "1", "--no-progress"]) == 0
    assert f"box {' '.join(map(str, BOX))} in scan voxels" in capsys.readouterr().out
    case = json.loads((out / "manifest.json").read_text())["cases"][0]
    assert case["samples"][0]["box"] == BOX
    np.testing.assert_allclose(case["box_mm"]["center_ras"], [float(v) for v in center])
    np.testing.assert_allclose(case["box_mm"]["size_along_voxel_axes"], (hi - lo) * spacing)


@pytest.mark.slow
def test_generic_file_names_take_their_folder_and_name_overrides(trained_debug_run, scan_path, tmp_path):
    """STS keeps every patient's scan as STS_xxx/PET_image.nii.gz: two of them go into one folder."""
    out = tmp_path / "out"
    source = nib.load(str(scan_path))
    inputs = []
    for patient in ("STS_001", "STS_002"):
        inputs.append(save_volume(np.asarray(source.dataobj), source.affine, tmp_path / patient / "PET_image.nii.gz"))
    common = ["--model", str(trained_debug_run), "--out", str(out), "--box", *map(str, BOX), "--steps", "1",
              "--no-progress"]
    for path in inputs:
        assert main(["synthesize", "--input", str(path), *common]) == 0
    assert main(["synthesize", "--input", str(inputs[0]), "--name", "STS_001.retry", *common]) == 0
    cases = {c["case"]: c["input"] for c in json.loads((out / "manifest.json").read_text())["cases"]}
    assert cases == {"STS_001": str(inputs[0]), "STS_002": str(inputs[1]), "STS_001.retry": str(inputs[0])}
    for case in cases:
        assert (out / f"{case}_0_pet.nii.gz").is_file() and (out / f"{case}_0_mask.nii.gz").is_file()


@pytest.mark.parametrize("where", [["--box", *map(str, BOX)], ["--organ-mask", "organ.nii.gz"]])
def test_center_mm_with_another_box_flag_is_refused_by_the_parser(where, scan_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["synthesize", "--input", str(scan_path), "--out", str(tmp_path / "out"),
              "--center-mm", "0", "0", "0", "--size-mm", "10", "10", "10", *where])
    assert exit_.value.code == 2
    assert f"argument {where[0]}: not allowed with argument --center-mm" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_model_the_default_is_passed_on_to_the_api(trained_debug_run, scan_path, tmp_path, monkeypatch,
                                                            capsys):
    """--model is optional: None goes to `peek_model_info` and `TumorGen.load`, which pick the bundled model."""
    from tumorgen import api

    asked, real_load, real_peek = [], api.TumorGen.load, api.peek_model_info

    def peek(source=None):
        asked.append(("peek", source))
        return real_peek(trained_debug_run)

    def load(source=None, *, device="auto"):
        asked.append(("load", source))
        return real_load(trained_debug_run, device="cpu")

    monkeypatch.setattr(api, "peek_model_info", peek)
    monkeypatch.setattr(api.TumorGen, "load", staticmethod(load))
    out = tmp_path / "out"
    assert main(["synthesize", "--input", str(scan_path), "--out", str(out), "--box", *map(str, BOX),
                 "--steps", "1", "--no-progress"]) == 0
    assert asked == [("peek", None), ("load", None)]
    assert (out / "patient_7_0_pet.nii.gz").is_file()


def test_augment_and_generate_set_pass_no_model_on_as_none(tmp_path, monkeypatch, capsys):
    from tumorgen import api
    from tumorgen.errors import TumorGenError
    from tumorgen.evaluation import generate

    asked = []

    def load(source=None, *, device="auto"):
        asked.append(("augment", source))
        raise TumorGenError("stop here")  # what happens after the load is tested in test_augment.py

    def generate_set(**kwargs):
        asked.append(("generate-set", kwargs["model"]))
        return {"samples": [], "seconds_per_sample": 0.0}

    monkeypatch.setattr(api.TumorGen, "load", staticmethod(load))
    monkeypatch.setattr(generate, "generate_set", generate_set)
    data = tmp_path / "autopet"
    write_phantom_dataset(layout="autopet", out=data, cases=0, healthy=1, size=16, seed=0)
    assert main(["augment", "--data", str(data), "--layout", "autopet", "--out", str(tmp_path / "raw"),
                 "--no-progress"]) == 2
    assert "stop here" in capsys.readouterr().err
    assert main(["generate-set", "--method", "tumorgen", "--data", str(tmp_path / "prep"),
                 "--out", str(tmp_path / "set"), "--no-progress"]) == 0
    assert asked == [("augment", None), ("generate-set", None)]
