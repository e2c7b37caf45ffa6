"""Case names from input paths: the file stem, or the folder when the stem only names the modality;
and a user's --name accepted only when it is already a safe file-name stem."""

from __future__ import annotations

import pytest

from tumorgen.errors import TumorGenError
from tumorgen.synthesis.manifest import case_name_from_path, check_case_name, is_generic_name


@pytest.mark.parametrize("path, name", [
    ("data/case_007.nii.gz", "case_007"),                        # a specific stem is kept
    ("x/STS_001_pet.nii.gz", "STS_001_pet"),
    ("hecktor/CHUM-001_pt.nii.gz", "CHUM-001_pt"),
    ("sts/STS_001/PET_image.nii.gz", "STS_001"),                 # STS: one folder per patient
    ("sts/STS_002/PET_image.nii.gz", "STS_002"),
    ("/data/patient12/SUV.nii", "patient12"),
    ("study/case12/pet/image.nii.gz", "case12"),                 # generic folders are skipped too
    ("data/PETCT_0a1/03-2002-NA-PET/SUV.nii.gz", "PETCT_0a1_03-2002-NA-PET"),   # AutoPET: patient + study
    ("/d/PETCT_0a1/01-01-2001 NA PET CT/CTres.nii.gz", "PETCT_0a1_01-01-2001_NA_PET_CT"),
    ("/pet/SUV.nii.gz", "SUV"),                                  # no usable folder: the stem
])
def test_case_name_from_path(path, name):
    assert case_name_from_path(path) == name


def test_a_bare_generic_file_is_named_after_the_current_folder(tmp_path, monkeypatch):
    folder = tmp_path / "STS_042"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert case_name_from_path("PET_image.nii.gz") == "STS_042"


@pytest.mark.parametrize("stem, generic", [
    ("PET_image", True), ("PET", True), ("SUV", True), ("image", True), ("pet", True), ("CTres", True),
    ("pet-suv", True), ("CT image", True),
    ("scan", False), ("image0", False), ("STS_001", False), ("PETCT_0a1", False), ("", False),
])
def test_generic_names(stem, generic):
    assert is_generic_name(stem) is generic


@pytest.mark.parametrize("name", ["STS_001", "case.7", "a-b_c", "x"])
def test_a_safe_name_is_kept_as_given(name):
    assert check_case_name(name) == name


@pytest.mark.parametrize("name", ["../evil", "a/b", "a b", ".hidden", "case_", "a..b", "", "ünï", "x" * 201])
def test_an_unsafe_name_is_refused_naming_the_flag(name):
    with pytest.raises(TumorGenError) as err:
        check_case_name(name)
    assert str(err.value).startswith(f"--name {name!r} is not a safe file-name stem")
