"""The dataset `tumorgen augment` writes passes nnU-Net's own `verify_dataset_integrity` (what
`nnUNetv2_plan_and_preprocess --verify_dataset_integrity` runs first). Skipped when nnunetv2 is not
installed: the test installs nothing."""

from __future__ import annotations

import pytest

from tumorgen.cli import main
from tumorgen.data.phantom_layouts import write_phantom_dataset

verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity",
                             reason="nnunetv2 is not installed (pip install nnunetv2 to run this check)")


@pytest.mark.slow
def test_augmented_dataset_passes_nnunet_verify_dataset_integrity(trained_debug_run, tmp_path, capfd):
    data = tmp_path / "autopet"
    write_phantom_dataset(layout="autopet", out=data, cases=1, healthy=1, size=32, seed=0)
    out = tmp_path / "nnUNet_raw"
    assert main(["augment", "--model", str(trained_debug_run), "--data", str(data), "--layout", "autopet",
                 "--out", str(out), "--dataset-id", "502", "--name", "Verify", "--per-case", "1", "--steps", "2",
                 "--no-progress"]) == 0
    capfd.readouterr()
    verify.verify_dataset_integrity(str(out / "Dataset502_Verify"), num_processes=1)  # raises on an error
    printed = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in printed
    # nnU-Net only warns about an image and label whose origin, direction or affine differ: refuse that too
    assert "Warning" not in printed and "Error" not in printed, printed
