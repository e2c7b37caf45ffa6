"""The nnU-Net v2 raw dataset writer: layout, dataset.json, resumable cases, safe names."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tumorgen.errors import TumorGenError
from tumorgen.export.nnunet import NnunetDatasetWriter, dataset_folder_name

AFFINE = np.array([[-2.0, 0, 0, 10.0], [0, 2.0, 0, 0.0], [0, 0, 3.0, -5.0], [0, 0, 0, 1]])


def case_arrays(seed=0, shape=(8, 9, 5)):
    rng = np.random.default_rng(seed)
    image = rng.random(shape, dtype=np.float32) * 4
    mask = np.zeros(shape, dtype=np.uint8)
    mask[2:5, 3:6, 1:3] = 1
    return image, mask


def test_folder_name_convention_and_validation():
    assert dataset_folder_name(7, "TumorGenPET") == "Dataset007_TumorGenPET"
    assert dataset_folder_name(501, "a-b_c") == "Dataset501_a-b_c"
    for bad_id in (0, 1000):
        with pytest.raises(TumorGenError, match="between 1 and 999"):
            dataset_folder_name(bad_id, "x")
    for bad_name in ("", "a b", "../x", "a/b"):
        with pytest.raises(TumorGenError, match="letters, digits"):
            dataset_folder_name(5, bad_name)


def test_layout_files_and_dataset_json(tmp_path):
    writer = NnunetDatasetWriter(tmp_path / "nnUNet_raw", dataset_id=502, name="PETSynth")
    assert writer.dataset_dir == tmp_path / "nnUNet_raw" / "Dataset502_PETSynth"
    image, mask = case_arrays()
    writer.add_case("real_001", image, mask, AFFINE)
    writer.add_case("real_001_syn0", *case_arrays(1), AFFINE)
    path = writer.finalize()
    root = writer.dataset_dir
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["real_001_0000.nii.gz", "real_001_syn0_0000.nii.gz"]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == ["real_001.nii.gz", "real_001_syn0.nii.gz"]
    dataset = json.loads(path.read_text())
    assert dataset["channel_names"] == {"0": "PET"}
    assert dataset["labels"] == {"background": 0, "tumor": 1}
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"
    assert "overwrite_image_reader_writer" not in dataset
    stored_image = nib.load(str(root / "imagesTr" / "real_001_0000.nii.gz"))
    stored_label = nib.load(str(root / "labelsTr" / "real_001.nii.gz"))
    np.testing.assert_allclose(stored_image.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(stored_label.affine, AFFINE, atol=1e-5)
    assert stored_label.get_data_dtype() == np.uint8 and stored_image.get_data_dtype() == np.float32
    assert np.array_equal(np.asarray(stored_label.dataobj), mask)
    np.testing.assert_array_equal(np.asarray(stored_image.dataobj), image)


def test_resume_skips_complete_cases_and_counts_them(tmp_path):
    dataset_dir = tmp_path / "Dataset503_Resume"
    writer = NnunetDatasetWriter(dataset_dir, dataset_id=503, name="Resume",
                                 overwrite_image_reader_writer="NibabelIOWithReorient")
    assert writer.dataset_dir == dataset_dir
    assert not writer.has_case("a")
    writer.add_case("a", *case_arrays(), AFFINE)
    assert writer.has_case("a")
    # An interrupted case (image written, label not yet) does not count and will be rewritten.
    image, _ = case_arrays(2)
    nib.save(nib.Nifti1Image(image, AFFINE), str(dataset_dir / "imagesTr" / "b_0000.nii.gz"))
    assert not writer.has_case("b")
    again = NnunetDatasetWriter(dataset_dir, dataset_id=503, name="Resume")
    assert again.has_case("a") and again.case_ids() == ["a"]
    dataset = json.loads(writer.finalize().read_text())
    assert dataset["numTraining"] == 1 and dataset["overwrite_image_reader_writer"] == "NibabelIOWithReorient"
    with pytest.raises(TumorGenError, match="Dataset504_Resume"):
        NnunetDatasetWriter(dataset_dir, dataset_id=504, name="Resume")


def test_case_ids_are_made_path_safe(tmp_path):
    writer = NnunetDatasetWriter(tmp_path, dataset_id=9, name="Safe")
    writer.add_case("../../evil case", *case_arrays(), AFFINE)
    assert writer.has_case("../../evil case")
    assert (writer.dataset_dir / "labelsTr" / "evil_case.nii.gz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset009_Safe"]
    with pytest.raises(TumorGenError):
        writer.add_case("..", *case_arrays(), AFFINE)


def test_bad_cases_and_labels_are_refused(tmp_path):
    writer = NnunetDatasetWriter(tmp_path, dataset_id=10, name="Bad")
    image, mask = case_arrays()
    with pytest.raises(ValueError, match="differ in shape"):
        writer.add_case("x", image[:-1], mask, AFFINE)
    with pytest.raises(ValueError, match="not among the labels"):
        writer.add_case("x", image, mask * 2, AFFINE)
    with pytest.raises(TumorGenError, match="consecutive"):
        NnunetDatasetWriter(tmp_path, dataset_id=10, name="Bad", labels={"background": 0, "tumor": 2})
    two = NnunetDatasetWriter(tmp_path, dataset_id=11, name="Two", channel_names={"0": "PET", "1": "CT"})
    two.add_case("y", np.stack([image, image]), mask, AFFINE)  # (C, X, Y, Z)
    assert (two.dataset_dir / "imagesTr" / "y_0001.nii.gz").is_file() and two.has_case("y")
