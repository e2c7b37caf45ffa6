"""The real IBSI soft-tissue-sarcoma PET cases through `tumorgen prepare --layout pairs`.

Tight crops, anisotropic voxels and tumors up to 27 cm: the per-case spacing must hold every tumor
in the grid and the cached mask must map back onto the original voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tumorgen.cli import main
from tumorgen.data.prepared import load_prepared, map_to_original
from tumorgen.io.nifti import load_volume

IBSI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ibsi-sts-pet"
pytestmark = [pytest.mark.real_data, pytest.mark.slow,
              pytest.mark.skipif(not IBSI.is_dir(), reason="../shared/data/ibsi-sts-pet is absent")]


def test_ibsi_cases_prepare_and_map_back(tmp_path, capsys):
    # STS_001..004: the smallest of them is 29 x 30 x 51 voxels, STS_004 has 3.9 mm voxels.
    args = ["prepare", "--layout", "pairs", "--root", str(IBSI), "--out", str(tmp_path / "prep"),
            "--image-glob", "STS_00[1-4]/PET_image.nii.gz", "--mask-glob", "STS_00[1-4]/PET_mask.nii.gz",
            "--size", "48", "--seed", "0"]
    assert main(args) == 0
    assert "prepared 4 cases" in capsys.readouterr().out
    data = load_prepared(tmp_path / "prep")
    assert [c.name for c in data.cases] == ["STS_001", "STS_002", "STS_003", "STS_004"]
    for case in data.cases:
        image, mask, affine = case.load()
        assert image.shape == mask.shape == (48, 48, 48)
        assert 0.0 <= image.min() and image.max() <= 1.0 and image[mask > 0].mean() > image[mask == 0].mean()
        assert not case.meta["tumor_cut"] and case.meta["spacing"][0] >= 4.0
        original = load_volume(IBSI / case.meta["source_mask"], kind="mask")
        # The tumor lies inside the grid, away from its faces (the margin).
        index = np.argwhere(mask)
        assert index.min() >= 1 and index.max() <= 46
        back = map_to_original(mask, affine=affine, original_shape=case.original_shape,
                               original_affine=case.original_affine, order=0)
        dice = 2.0 * np.sum(back & original.array) / (back.sum() + original.array.sum())
        assert dice > 0.9, (case.name, dice)
