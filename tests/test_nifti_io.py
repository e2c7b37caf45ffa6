"""The defensive NIfTI reader: every bad file becomes one TumorGenError sentence naming the file."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from tumorgen.errors import TumorGenError
from tumorgen.io.atomic import staged_dir
from tumorgen.io.nifti import check_same_grid, load_volume, save_volume


def _write(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def test_round_trip_keeps_values_affine_and_spacing(tmp_path):
    affine = np.diag([4.0, 4.0, 3.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.5)
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    save_volume(data, affine, tmp_path / "a.nii.gz")
    vol = load_volume(tmp_path / "a.nii.gz")
    assert np.array_equal(vol.array, data)
    assert np.allclose(vol.affine, affine)
    assert vol.spacing == (4.0, 4.0, 3.0)
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]  # no temporary file left


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_text("hello, not a nifti"), "not a readable NIfTI"),
        (lambda p: _write(p, np.zeros((4, 4), np.float32)), "2D"),
        (lambda p: _write(p, np.zeros((4, 4, 4, 2), np.float32)), "4D"),
        (lambda p: _write(p, np.full((4, 4, 4), np.nan, np.float32)), "NaN"),
    ],
)
def test_bad_images_are_refused_with_the_file_name(tmp_path, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(TumorGenError, match=message) as info:
        load_volume(path)
    assert str(path) in str(info.value)


def test_truncated_file_is_refused(tmp_path):
    path = _write(tmp_path / "t.nii.gz", np.ones((32, 32, 32), np.float32))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(TumorGenError, match="truncated or corrupt"):
        load_volume(path)


def test_huge_header_is_refused_before_reading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 4096))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)  # the voxels are not there
    with pytest.raises(TumorGenError, match="header claims"):
        load_volume(path)


def test_non_binary_mask_and_grid_mismatch(tmp_path):
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1, 1, 1] = 2
    with pytest.raises(TumorGenError, match="not a binary mask"):
        load_volume(_write(tmp_path / "m.nii.gz", labels), kind="mask")
    a = load_volume(_write(tmp_path / "a.nii.gz", np.zeros((4, 4, 4), np.float32)))
    b = load_volume(_write(tmp_path / "b.nii.gz", np.zeros((4, 4, 5), np.float32)))
    c = load_volume(_write(tmp_path / "c.nii.gz", np.zeros((4, 4, 4), np.float32), np.diag([2.0, 1, 1, 1])))
    with pytest.raises(TumorGenError, match="shape"):
        check_same_grid(a, b)
    with pytest.raises(TumorGenError, match="affine"):
        check_same_grid(a, c)


def test_staged_dir_leaves_nothing_on_failure_and_refuses_existing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_dir(out) as stage:
            (stage / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_dir(out) as stage:
        (stage / "done.txt").write_text("x")
    assert (out / "done.txt").exists()
    with pytest.raises(TumorGenError, match="already exists"):
        with staged_dir(out):
            pass
    with staged_dir(out, overwrite=True) as stage:
        (stage / "new.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
