"""`tumorgen augment` end to end on AutoPET-layout phantoms: real + synthetic cases in an nnU-Net v2 raw
dataset, union labels with boxes clear of the existing tumor, resume, --healthy-only, bad cases."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from tumorgen.cli import main
from tumorgen.data.box_geometry import box_mask
from tumorgen.data.phantom_layouts import write_phantom_dataset


def read(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def outside(array: np.ndarray, box) -> np.ndarray:
    """The voxels outside a half-open box (the ones synthesis must leave as they were)."""
    return array[box_mask(array.shape, box) == 0]


@pytest.fixture(scope="module")
def autopet(tmp_path_factory):
    """One tumor-bearing and one healthy torso phantom (32^3) in the AutoPET layout."""
    root = tmp_path_factory.mktemp("augment") / "autopet"
    write_phantom_dataset(layout="autopet", out=root, cases=1, healthy=1, size=32, seed=0)
    return root


def _argv(run, data, out, *extra):
    return ["augment", "--model", str(run), "--data", str(data), "--layout", "autopet", "--out", str(out),
            "--dataset-id", "501", "--name", "TumorGenAug", "--steps", "2", "--no-progress", *extra]


@pytest.mark.slow
def test_augment_writes_real_and_synthetic_cases_with_union_labels_and_resumes(trained_debug_run, autopet, tmp_path,
                                                                               capsys):
    out = tmp_path / "nnUNet_raw"
    assert main(_argv(trained_debug_run, autopet, out, "--per-case", "1")) == 0
    assert "wrote 2 real and 2 synthetic cases" in capsys.readouterr().out
    dataset = out / "Dataset501_TumorGenAug"
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["numTraining"] == 4 and info["labels"] == {"background": 0, "tumor": 1}
    assert info["channel_names"] == {"0": "PET"} and info["file_ending"] == ".nii.gz"

    provenance = json.loads((dataset / "tumorgen_augment.json").read_text())["synthetic"]
    assert len(provenance) == 2
    for seg in sorted(autopet.glob("*/*/SEG.nii.gz")):
        tumor = read(seg).astype(np.uint8)
        suv = read(seg.with_name("SUV.nii.gz"))
        name = next(n for n in provenance if provenance[n]["source"] == str(seg.with_name("SUV.nii.gz")))
        real = name[: -len("_syn0")]
        assert np.array_equal(read(dataset / "labelsTr" / f"{real}.nii.gz"), tumor), "real label is its own"
        assert np.array_equal(read(dataset / "imagesTr" / f"{real}_0000.nii.gz"), suv)
        box = provenance[name]["box"]
        label = read(dataset / "labelsTr" / f"{name}.nii.gz")
        image = read(dataset / "imagesTr" / f"{name}_0000.nii.gz")
        assert np.all(label >= tumor), "the existing tumor stays labelled"
        assert outside(label - tumor, box).sum() == 0, "the generated tumor lies in its box"
        assert not tumor[box[0]:box[3], box[1]:box[4], box[2]:box[5]].any(), "box clear of the existing tumor"
        assert np.array_equal(outside(image, box), outside(suv, box))

    # resume: nothing is redone; a lost case is redone identically (its seed derives from its name)
    lost = dataset / "labelsTr" / f"{name}.nii.gz"
    before = read(dataset / "imagesTr" / f"{name}_0000.nii.gz")
    lost.unlink()
    assert main(_argv(trained_debug_run, autopet, out, "--per-case", "1")) == 0
    printed = capsys.readouterr().out
    assert "wrote 0 real and 1 synthetic cases" in printed and "resumed: 3 cases already written were skipped" in printed
    assert np.array_equal(read(dataset / "imagesTr" / f"{name}_0000.nii.gz"), before) and lost.exists()
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 4


@pytest.mark.slow
def test_healthy_only_synthesizes_into_healthy_cases_only(trained_debug_run, autopet, tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(_argv(trained_debug_run, autopet, out, "--per-case", "1", "--healthy-only")) == 0
    dataset = out / "Dataset501_TumorGenAug"
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 3
    (synthetic,) = json.loads((dataset / "tumorgen_augment.json").read_text())["synthetic"].values()
    source_seg = read(synthetic["source"].replace("SUV.nii.gz", "SEG.nii.gz"))
    assert not source_seg.any(), "only the healthy case got a synthetic tumor"


@pytest.mark.slow
def test_bad_case_is_skipped_with_on_error_skip_else_one_sentence(trained_debug_run, autopet, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(autopet, data)
    broken = sorted(data.glob("*/*/SUV.nii.gz"))[0]
    broken.write_bytes(b"\x1f\x8b not a gzip file")
    out = tmp_path / "raw"
    assert main(_argv(trained_debug_run, data, out, "--per-case", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(broken) in err[0] and "Traceback" not in err[0]

    assert main(_argv(trained_debug_run, data, out, "--per-case", "1", "--on-error", "skip", "--overwrite")) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 bad case(s)" in printed and str(broken) in printed
    assert json.loads((out / "Dataset501_TumorGenAug" / "dataset.json").read_text())["numTraining"] == 2


def test_a_model_folder_that_is_not_a_run_is_refused_before_anything_is_written(autopet, tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(_argv(tmp_path, autopet, out)) == 2
    err = capsys.readouterr().err
    assert "not a TumorGen run folder" in err and str(tmp_path) in err and not out.exists()
