"""Dataset readers (layouts.py): each layout found from tiny folders written here, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from tumorgen.data.layouts import find_cases, sanitize_name
from tumorgen.errors import TumorGenError
from tumorgen.io.nifti import save_volume


def _touch(path):
    """A tiny valid NIfTI: readers list files without reading voxels, but keep them real."""
    save_volume(np.zeros((2, 2, 2)), np.eye(4), path)


def test_sanitize_name_keeps_names_safe():
    assert sanitize_name("PETCT_0af3/01-09-2002-NA-PET-CT Ganzkoerper  KM-10445") == \
        "PETCT_0af3_01-09-2002-NA-PET-CT_Ganzkoerper_KM-10445"
    assert sanitize_name("../../etc/passwd") == "etc_passwd"
    assert sanitize_name("..") == "case"
    assert ".." not in sanitize_name("a..b")


def test_autopet_layout(tmp_path):
    study = tmp_path / "PETCT_0af3" / "01-09-2002-NA-PET-CT Ganzkoerper-10445"
    for name in ("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"):
        _touch(study / name)
    _touch(tmp_path / "PETCT_1b2c" / "03-03-2003-NA-PET-CT-2" / "SUV.nii.gz")  # SEG and CT missing
    cases = find_cases(tmp_path, "autopet")
    assert [c.name for c in cases] == ["PETCT_0af3_01-09-2002-NA-PET-CT_Ganzkoerper-10445",
                                       "PETCT_1b2c_03-03-2003-NA-PET-CT-2"]
    assert cases[0].ct.name == "CTres.nii.gz" and cases[0].mask.name == "SEG.nii.gz"
    # A missing SEG is still listed at its expected path, so reading it names that file.
    assert cases[1].mask == tmp_path / "PETCT_1b2c" / "03-03-2003-NA-PET-CT-2" / "SEG.nii.gz"
    assert not cases[1].mask.exists()


def test_hecktor_layout_with_bbox_and_unlabelled_case(tmp_path):
    for stem in ("CHGJ007", "CHUM013"):
        _touch(tmp_path / f"{stem}_pt.nii.gz")
        _touch(tmp_path / f"{stem}_ct.nii.gz")
    _touch(tmp_path / "CHGJ007_gtvt.nii.gz")
    (tmp_path / "bbox.csv").write_text("PatientID,x1,x2,y1,y2,z1,z2\nCHGJ007,-72,72,-100,44,-50,94\n")
    cases = find_cases(tmp_path, "hecktor")
    assert [c.name for c in cases] == ["CHGJ007", "CHUM013"]
    assert cases[0].extra["bbox_mm"] == (-72.0, 72.0, -100.0, 44.0, -50.0, 94.0)
    assert cases[0].ct.name == "CHGJ007_ct.nii.gz"
    assert cases[1].mask is None and "unlabelled" in cases[1].extra


def test_hecktor_bad_bbox_table(tmp_path):
    _touch(tmp_path / "A_pt.nii.gz")
    (tmp_path / "bbox.csv").write_text("PatientID,x1\nA,notanumber\n")
    with pytest.raises(TumorGenError, match=r"bbox.csv: needs the columns"):
        find_cases(tmp_path, "hecktor")


def test_nnunet_layout(tmp_path):
    for case in ("TG_001", "TG_002"):
        _touch(tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
    _touch(tmp_path / "labelsTr" / "TG_001.nii.gz")
    cases = find_cases(tmp_path, "nnunet")
    assert [c.name for c in cases] == ["TG_001", "TG_002"]
    assert cases[1].mask == tmp_path / "labelsTr" / "TG_002.nii.gz"


def test_pairs_layout_pairs_by_wildcard(tmp_path):
    for case in ("STS_001", "STS_002", "STS_003"):
        _touch(tmp_path / case / "PET_image.nii.gz")
        if case != "STS_003":
            _touch(tmp_path / case / "PET_mask.nii.gz")
    cases = find_cases(tmp_path, "pairs", image_glob="*/PET_image.nii.gz", mask_glob="*/PET_mask.nii.gz")
    assert [c.name for c in cases] == ["STS_001", "STS_002", "STS_003"]
    assert cases[0].mask == tmp_path / "STS_001" / "PET_mask.nii.gz"
    assert cases[2].mask is None and "missing_mask" in cases[2].extra


def test_pairs_layout_names_by_the_matched_folder(tmp_path):
    for case in ("STS_001", "STS_002", "STS_010"):
        _touch(tmp_path / case / "PET_image.nii.gz")
        _touch(tmp_path / case / "PET_mask.nii.gz")
    cases = find_cases(tmp_path, "pairs", image_glob="STS_00[1-4]/PET_image.nii.gz",
                       mask_glob="STS_00[1-4]/PET_mask.nii.gz")
    assert [c.name for c in cases] == ["STS_001", "STS_002"]


def test_pairs_layout_by_file_stem(tmp_path):
    for case in ("a", "b"):
        _touch(tmp_path / "img" / f"{case}.nii.gz")
        _touch(tmp_path / "seg" / f"{case}_seg.nii.gz")
    cases = find_cases(tmp_path, "pairs", image_glob="img/*.nii.gz", mask_glob="seg/*_seg.nii.gz")
    assert [(c.name, c.mask.name) for c in cases] == [("a", "a_seg.nii.gz"), ("b", "b_seg.nii.gz")]


@pytest.mark.parametrize("layout", ["autopet", "hecktor", "nnunet"])
def test_empty_missing_and_unmatched_folders(tmp_path, layout):
    with pytest.raises(TumorGenError, match="dataset folder not found"):
        find_cases(tmp_path / "absent", layout)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TumorGenError, match="dataset folder is empty"):
        find_cases(tmp_path / "empty", layout)
    _touch(tmp_path / "other" / "unrelated.nii.gz")
    with pytest.raises(TumorGenError, match=f"no {layout} cases found"):
        find_cases(tmp_path / "other", layout)


def test_pairs_needs_both_globs_and_unknown_layout(tmp_path):
    _touch(tmp_path / "x.nii.gz")
    with pytest.raises(TumorGenError, match="--image-glob and --mask-glob"):
        find_cases(tmp_path, "pairs", image_glob="*.nii.gz")
    with pytest.raises(TumorGenError, match="unknown layout"):
        find_cases(tmp_path, "brats")
