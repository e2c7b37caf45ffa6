"""Case names come from file and folder names, which TumorGen does not control: they must never steer a
write outside the output folder ("..", absolute paths, separators, odd characters, spaces as in AutoPET
study folders, unicode). And an existing output is never replaced without --overwrite.
"""

from __future__ import annotations

import numpy as np
import pytest

from bad_inputs import AFFINE, tree_digest, valid_mask, valid_scan
from tumorgen.cli import main
from tumorgen.data.layouts import sanitize_name
from tumorgen.errors import TumorGenError
from tumorgen.io.nifti import save_volume
from tumorgen.synthesis.manifest import case_name_from_path, safe_case_name

HOSTILE = ["../../etc/passwd", "/abs/path", "..", "a/../../b", "name with spaces", "01-01-2001-NA-PET CT Ganzkoerper",
           "ünïcødé-病例", "semi;colon|pipe&amp$(rm -rf ~)", ".hidden", "C:\\Windows\\x", "a\x00b", "\n\t"]


@pytest.mark.parametrize("name", HOSTILE)
def test_sanitized_names_are_plain_file_names(name):
    for clean in (sanitize_name(name), _safe_or_none(name)):
        if clean is None:
            continue
        assert clean and clean not in (".", "..") and "/" not in clean and "\\" not in clean
        assert ".." not in clean and not clean.startswith(".")
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in clean), clean


def _safe_or_none(name):
    try:
        return safe_case_name(name)
    except TumorGenError:
        return None  # nothing usable is refused, which is also safe


def test_case_name_from_a_hostile_path_stays_a_file_name(tmp_path):
    assert case_name_from_path(tmp_path / "x" / ".." / ".." / "evil.nii.gz") == "evil"
    assert case_name_from_path("/data/PETCT_0a1/01-01-2001 NA PET CT/SUV.nii.gz") == "PETCT_0a1_01-01-2001_NA_PET_CT"


def test_prepare_keeps_hostile_folder_names_inside_the_output(tmp_path, capsys):
    root = tmp_path / "data"
    names = ["study with spaces", "ünïcødé 病例", "..dots..", "-dash"]
    for i, name in enumerate(names):
        save_volume(valid_scan(seed=i), AFFINE, root / name / "PET_image.nii.gz")
        save_volume(valid_mask(), AFFINE, root / name / "PET_mask.nii.gz", dtype=np.uint8)
    out = tmp_path / "nested" / "prep"
    assert main(["prepare", "--layout", "pairs", "--root", str(root), "--out", str(out), "--size", "16",
                 "--image-glob", "*/PET_image.nii.gz", "--mask-glob", "*/PET_mask.nii.gz"]) == 0
    capsys.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and root not in p.parents]
    assert written and all(out in p.parents for p in written), written
    assert len(list((out / "cases").glob("*_image.nii.gz"))) == len(names)  # no two names collapsed onto one


def test_synthesize_output_for_a_hostile_scan_name_stays_in_out(trained_debug_run, tmp_path, capsys):
    scan = save_volume(valid_scan(), AFFINE, tmp_path / "in" / "..evil name ünï.nii.gz")
    out = tmp_path / "out"
    argv = ["synthesize", "--model", str(trained_debug_run), "--input", str(scan), "--out", str(out),
            "--box", "16", "16", "12", "22", "22", "18", "--steps", "1", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    assert {p.parent for p in tmp_path.rglob("*") if p.is_file()} == {scan.parent, out}
    before = tree_digest(out)
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert tree_digest(out) == before


def _refuses_existing(argv, out, capsys):
    before = tree_digest(out)
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # progress bars aside
    assert len(err) == 1 and str(out) in err[0] and ("--overwrite" in err[0] or "--resume" in err[0]), err
    assert tree_digest(out) == before


def test_existing_outputs_are_not_replaced_without_overwrite(trained_debug_run, tiny_prep, tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "precious.txt").write_text("a week of work")
    _refuses_existing(["phantom", "--layout", "nnunet", "--out", str(out), "--cases", "1", "--size", "16"], out, capsys)
    root = tmp_path / "data"
    save_volume(valid_scan(), AFFINE, root / "c1" / "PET_image.nii.gz")
    save_volume(valid_mask(), AFFINE, root / "c1" / "PET_mask.nii.gz", dtype=np.uint8)
    _refuses_existing(["prepare", "--layout", "pairs", "--root", str(root), "--out", str(out), "--size", "16",
                       "--image-glob", "*/PET_image.nii.gz", "--mask-glob", "*/PET_mask.nii.gz"], out, capsys)
    _refuses_existing(["train", "--data", str(tiny_prep), "--vae", str(trained_debug_run / "vae.pt"),
                       "--out", str(out), "--config", "debug", "--steps", "1", "--no-progress"], out, capsys)
    _refuses_existing(["train", "--data", str(tiny_prep), "--vae", str(trained_debug_run / "vae.pt"),
                       "--out", str(trained_debug_run), "--config", "debug", "--steps", "1", "--no-progress"],
                      trained_debug_run, capsys)
