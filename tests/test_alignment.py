"""The alignment segmenter's DSC/NSD on a paired-protocol folder (`tumorgen.evaluation.alignment`): the
prediction counts inside each case's box only, and a folder without its volumes is one clear error."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import write_tiny_prep
from tumorgen.data.box_geometry import box_slices
from tumorgen.errors import TumorGenError
from tumorgen.evaluation import alignment
from tumorgen.evaluation.paired import run_paired
from tumorgen.io.nifti import load_volume


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return write_tiny_prep(tmp_path_factory.mktemp("alignment") / "prep", n_cases=7, seed=3, n_test=2)


def test_a_segmenter_that_finds_tumor_everywhere_scores_the_box_against_the_mask(prep, tmp_path, monkeypatch):
    paired = tmp_path / "pp"
    run_paired(data=prep, out=paired, methods=[("blob", None), ("empty", None)], features="none", save_volumes=True,
               device="cpu", log=lambda _: None)
    monkeypatch.setattr(alignment, "load_segmenter", lambda path, device: (None, SimpleNamespace(roi=(16, 16, 16))))
    monkeypatch.setattr(alignment, "predict_mask", lambda model, image, roi, device: np.ones(image.shape, np.uint8))
    scores = alignment.segmenter_agreement(paired, tmp_path / "seg", device="cpu")
    metrics = json.loads((paired / "metrics.json").read_text())
    for record, case in zip(metrics["per_case"]["blob"], scores["rows"]["blob"]["per_case"]):
        mask = load_volume(paired / "volumes" / f"{record['case']}_blob_mask.nii.gz", kind="mask").array > 0
        box_voxels = mask[box_slices(record["box"])].size
        assert case["DSC"] == pytest.approx(2 * mask.sum() / (box_voxels + mask.sum()), rel=1e-5)
        assert 0 <= case["NSD"] <= 1  # the blob keeps a voxel (4 mm) from the box faces: NSD at 2 mm is near 0
    assert scores["rows"]["empty"]["DSC"] == 0.0 and scores["rows"]["blob"]["n"] == 2
    assert scores["tolerance_mm"] == alignment.NSD_TOLERANCE_MM


def test_a_folder_without_volumes_or_the_row_is_one_sentence(prep, tmp_path):
    paired = tmp_path / "pp"
    run_paired(data=prep, out=paired, methods=[("blob", None)], features="none", device="cpu", log=lambda _: None)
    with pytest.raises(TumorGenError, match="has no row 'tumorgen-10'"):
        alignment.segmenter_agreement(paired, tmp_path / "seg", rows=["tumorgen-10"])
    with pytest.raises(TumorGenError, match="has no volumes/.*run evaluate-paired with --save-volumes"):
        alignment.segmenter_agreement(paired, tmp_path / "seg")
    with pytest.raises(TumorGenError, match="no metrics.json"):
        alignment.segmenter_agreement(tmp_path, tmp_path / "seg")
