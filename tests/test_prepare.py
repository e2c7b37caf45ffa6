"""`tumorgen prepare`: the transform chain's geometry, the lung finder, the split, and every bad input."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from tumorgen.cli import main
from tumorgen.data.lungs import find_lungs
from tumorgen.data.prepare import prepare_dataset, split_cases
from tumorgen.data.prepared import load_prepared, map_to_original
from tumorgen.data.transforms import choose_spacing, roi_extent_mm
from tumorgen.io.nifti import load_volume, save_volume

LPS_2MM = np.diag([-2.0, -2.0, 2.0, 1.0])
LPS_2MM[:3, 3] = (30.0, 50.0, -100.0)


def _ellipsoid(shape, center, radii):
    grid = np.indices(shape).astype(float)
    return (sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1.0).astype(np.uint8)


def _pet(mask, seed=0):
    rng = np.random.default_rng(seed)
    return (1.0 + rng.random(mask.shape) + 8.0 * mask).astype(np.float32)  # SUV: background ~1.5, tumor ~9.5


def _write_pair(folder, image, mask, affine):
    save_volume(image, affine, folder / "PET_image.nii.gz")
    save_volume(mask, affine, folder / "PET_mask.nii.gz", dtype=np.uint8)


def _pairs_args(root, out, *extra):
    return ["prepare", "--layout", "pairs", "--root", str(root), "--out", str(out),
            "--image-glob", "*/PET_image.nii.gz", "--mask-glob", "*/PET_mask.nii.gz", *extra]


def _dice(a, b):
    return 2.0 * np.sum((a > 0) & (b > 0)) / (np.sum(a > 0) + np.sum(b > 0))


def test_choose_spacing_expected_values():
    assert choose_spacing((100, 50, 50), (64, 64, 64), margin_mm=20, floor_mm=4.0) == 4.0  # fits at the floor
    assert choose_spacing((270, 120, 90), (64, 64, 64), margin_mm=20, floor_mm=4.0) == 4.85  # 310 / 64 = 4.84
    assert choose_spacing((100, 100, 200), (64, 64, 32), margin_mm=0, floor_mm=1.0) == 6.25  # z decides


def test_round_trip_is_exact_at_native_spacing(tmp_path):
    shape = (30, 36, 28)
    mask = _ellipsoid(shape, (12, 20, 14), (5, 7, 4))
    image = _pet(mask)
    _write_pair(tmp_path / "data" / "case1", image, mask, LPS_2MM)
    info = prepare_dataset(layout="pairs", root=tmp_path / "data", out=tmp_path / "prep", size=(24, 24, 24),
                           spacing=2.0, suv_max=20.0, image_glob="*/PET_image.nii.gz",
                           mask_glob="*/PET_mask.nii.gz", progress=False)
    assert info["spacing"] == [2.0, 2.0, 2.0]
    case = load_prepared(tmp_path / "prep").case("case1")
    cached_image, cached_mask, affine = case.load()
    assert cached_mask.shape == (24, 24, 24)
    assert np.allclose(np.abs(np.diag(affine)[:3]), 2.0) and np.all(np.diag(affine)[:3] > 0)  # RAS
    assert cached_mask.sum() == mask.sum()  # the tumor is entirely inside the window
    back = map_to_original(cached_mask, affine=affine, original_shape=shape, original_affine=LPS_2MM, order=0)
    assert np.array_equal(back, mask)
    seen = map_to_original(np.ones_like(cached_mask), affine=affine, original_shape=shape,
                           original_affine=LPS_2MM, order=0).astype(bool)
    suv_back = map_to_original(cached_image, affine=affine, original_shape=shape, original_affine=LPS_2MM,
                               order=1) * 20.0
    assert np.allclose(suv_back[seen], image[seen], atol=1e-4)


def test_round_trip_dice_when_resampling_anisotropic_voxels(tmp_path):
    shape = (26, 28, 40)
    affine = np.diag([-3.9, -3.9, 3.27, 1.0])
    mask = _ellipsoid(shape, (13, 14, 20), (6, 5, 9))
    _write_pair(tmp_path / "data" / "sts", _pet(mask), mask, affine)
    assert main(_pairs_args(tmp_path / "data", tmp_path / "prep", "--size", "24", "--min-spacing", "2")) == 0
    case = load_prepared(tmp_path / "prep").case("sts")
    _, cached_mask, cached_affine = case.load()
    assert case.meta["spacing"][0] > 2.0 and not case.meta["tumor_cut"]
    back = map_to_original(cached_mask, affine=cached_affine, original_shape=shape, original_affine=affine, order=0)
    assert _dice(back, mask) > 0.9


def _torso_ct(shape=(48, 36, 32)):
    x, y, z = np.indices(shape).astype(float)
    ct = np.full(shape, -1000.0, np.float32)
    ct[((x - 24) / 22) ** 2 + ((y - 18) / 15) ** 2 <= 1] = 40.0
    lungs = np.zeros(shape, bool)
    for cx in (14, 34):
        lungs |= ((x - cx) / 7) ** 2 + ((y - 18) / 8) ** 2 + ((z - 16) / 11) ** 2 <= 1
    ct[lungs] = -850.0
    ct[(x - 14) ** 2 + (y - 18) ** 2 <= 1.5] = 30.0  # a vessel through a lung leaves a hole to close
    ct[(x - 24) ** 2 + (y - 24) ** 2 + (z - 3) ** 2 <= 4] = -900.0  # bowel gas: air, but not a lung
    return ct, lungs


def test_find_lungs_on_a_synthetic_torso():
    ct, truth = _torso_ct()
    lungs = find_lungs(ct, (4.0, 4.0, 4.0))
    assert lungs.dtype == np.uint8
    assert _dice(lungs, truth) > 0.97
    assert lungs[24, 24, 3] == 0 and lungs[0, 0, 0] == 0  # no bowel gas, no outside air
    assert find_lungs(np.full((8, 8, 8), 40.0), (4, 4, 4)).sum() == 0


def test_autopet_layout_crops_to_the_lungs_and_lung_masks_override(tmp_path):
    ct, lungs = _torso_ct()
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    tumor = _ellipsoid(ct.shape, (14, 18, 16), (2, 2, 2))
    for case, seg in (("PETCT_01", tumor), ("PETCT_02", np.zeros_like(tumor))):
        study = tmp_path / "data" / case / "01-01-2001-NA-PET-CT-1"
        save_volume(_pet(seg), affine, study / "SUV.nii.gz")
        save_volume(ct, affine, study / "CTres.nii.gz")
        save_volume(seg, affine, study / "SEG.nii.gz", dtype=np.uint8)
    info = prepare_dataset(layout="autopet", root=tmp_path / "data", out=tmp_path / "prep", size=16,
                           margin_mm=0, min_spacing_mm=1.0, progress=False)
    tumor_case, healthy_case = info["cases"]
    assert tumor_case["roi"] == "lungs found on CT" and not tumor_case["healthy"] and healthy_case["healthy"]
    # The window's spacing is set by the lungs' extent (35 voxels of 4 mm in x): 140 mm / 16 voxels.
    assert tumor_case["spacing"][0] == pytest.approx(8.75, abs=0.3)
    assert tumor_case["spacing"][0] == pytest.approx(
        choose_spacing(roi_extent_mm(lungs, affine), (16,) * 3, margin_mm=0, floor_mm=1.0), abs=0.3)
    assert info["split"]["test"] == []  # a single tumor case stays in train
    lung_dir = tmp_path / "lungs"
    for name in ("PETCT_01_01-01-2001-NA-PET-CT-1", "PETCT_02_01-01-2001-NA-PET-CT-1"):
        save_volume(lungs.astype(np.uint8), affine, lung_dir / f"{name}.nii.gz", dtype=np.uint8)
    info = prepare_dataset(layout="autopet", root=tmp_path / "data", out=tmp_path / "prep2", size=16,
                           lung_masks=lung_dir, progress=False)
    assert info["cases"][0]["roi"] == "lung mask file"


def test_hecktor_layout_uses_bbox_csv(tmp_path):
    shape = (40, 40, 40)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    tumor = _ellipsoid(shape, (20, 22, 24), (3, 3, 3))
    save_volume(_pet(tumor), affine, tmp_path / "data" / "CHGJ007_pt.nii.gz")
    # As in HECKTOR 2021, the GTVt is on a finer (CT) grid than the PET: 1.5 mm, same field of view.
    fine_affine = np.diag([1.5, 1.5, 1.5, 1.0])
    fine_affine[:3, 3] = -0.75
    fine_tumor = _ellipsoid((80, 80, 80), (40.5, 44.5, 48.5), (6, 6, 6))
    save_volume(fine_tumor, fine_affine, tmp_path / "data" / "CHGJ007_gtvt.nii.gz", dtype=np.uint8)
    (tmp_path / "data" / "bbox.csv").write_text("PatientID,x1,x2,y1,y2,z1,z2\nCHGJ007,15,87,21,93,27,99\n")
    info = prepare_dataset(layout="hecktor", root=tmp_path / "data", out=tmp_path / "prep", size=16,
                           margin_mm=0, min_spacing_mm=1.0, progress=False)
    entry = info["cases"][0]
    assert entry["roi"] == "bbox.csv" and entry["source_ct"] is None
    assert entry["spacing"][0] == pytest.approx(4.5, abs=0.2)  # a 72 mm box (+ voxel edges) in 16 voxels
    assert abs(entry["original_tumor_voxels"] - int(tumor.sum())) <= 0.1 * tumor.sum()


def test_split_is_seeded_and_stratified():
    entries = [{"name": f"t{i:02d}", "healthy": False} for i in range(20)]
    entries += [{"name": f"h{i:02d}", "healthy": True} for i in range(10)]
    a = split_cases(entries, test_fraction=0.2, seed=3)
    assert a == split_cases(list(reversed(entries)), test_fraction=0.2, seed=3)
    assert a != split_cases(entries, test_fraction=0.2, seed=4)
    assert sum(n.startswith("t") for n in a["test"]) == 4 and sum(n.startswith("h") for n in a["test"]) == 2
    assert not set(a["train"]) & set(a["test"]) and len(a["train"]) + len(a["test"]) == 30
    few = split_cases(entries[:3], test_fraction=0.1, seed=0)
    assert len(few["test"]) == 1  # a test set always holds a tumor case when there are two or more


def _valid_case(folder):
    mask = _ellipsoid((12, 12, 12), (6, 6, 6), (3, 3, 3))
    _write_pair(folder, _pet(mask), mask, np.diag([4.0, 4.0, 4.0, 1.0]))


def _break(kind, folder):
    image, mask = folder / "PET_image.nii.gz", folder / "PET_mask.nii.gz"
    if kind == "missing mask":
        mask.unlink()
        return image
    if kind == "truncated":
        data = gzip.decompress(image.read_bytes())
        image.write_bytes(gzip.compress(data[: len(data) // 2]))
        return image
    if kind == "not nifti":
        image.write_bytes(b"this is not a NIfTI file")
        return image
    if kind == "other grid":
        save_volume(np.zeros((12, 12, 10)), np.diag([4.0, 4.0, 4.0, 1.0]), mask, dtype=np.uint8)
        return mask
    if kind == "nan":
        array = _pet(np.zeros((12, 12, 12)))
        array[3, 3, 3] = np.nan
        save_volume(array, np.eye(4), image)
        return image
    if kind == "2d":
        nib.save(nib.Nifti1Image(np.zeros((12, 12), np.float32), np.eye(4)), str(image))
        return image
    if kind == "4d":
        nib.save(nib.Nifti1Image(np.zeros((12, 12, 12, 2), np.float32), np.eye(4)), str(image))
        return image
    if kind == "non-binary":
        save_volume(np.full((12, 12, 12), 2.0), np.diag([4.0, 4.0, 4.0, 1.0]), mask, dtype=np.uint8)
        return mask
    raise ValueError(kind)


BAD_INPUTS = ["missing mask", "truncated", "not nifti", "other grid", "nan", "2d", "4d", "non-binary"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_fails_with_one_sentence_and_writes_nothing(tmp_path, capsys, kind):
    _valid_case(tmp_path / "data" / "good")
    _valid_case(tmp_path / "data" / "zbad")
    bad_file = _break(kind, tmp_path / "data" / "zbad")
    assert main(_pairs_args(tmp_path / "data", tmp_path / "prep", "--size", "16")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad_file) in err[0], err
    assert not (tmp_path / "prep").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no staging folder left behind


def test_autopet_seg_missing_beside_suv_names_it(tmp_path, capsys):
    ct, _ = _torso_ct()
    study = tmp_path / "data" / "PETCT_01" / "01-01-2001-NA-PET-CT-1"
    save_volume(_pet(np.zeros(ct.shape)), np.eye(4), study / "SUV.nii.gz")
    save_volume(ct, np.eye(4), study / "CTres.nii.gz")
    args = ["prepare", "--layout", "autopet", "--root", str(tmp_path / "data"), "--out", str(tmp_path / "prep")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"tumorgen prepare: error: {study / 'SEG.nii.gz'}: file not found"
    assert not (tmp_path / "prep").exists()


def test_on_error_skip_lists_what_it_skipped(tmp_path, capsys):
    _valid_case(tmp_path / "data" / "good")
    _valid_case(tmp_path / "data" / "zbad")
    bad_file = _break("non-binary", tmp_path / "data" / "zbad")
    assert main(_pairs_args(tmp_path / "data", tmp_path / "prep", "--size", "16", "--on-error", "skip")) == 0
    out = capsys.readouterr().out
    assert "prepared 1 cases" in out and "skipped 1" in out and str(bad_file) in out
    info = json.loads((tmp_path / "prep" / "dataset.json").read_text())
    assert [c["name"] for c in info["cases"]] == ["good"]
    assert info["skipped"][0]["reason"].startswith(str(bad_file))


def test_empty_folder_existing_output_and_bad_flags(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(_pairs_args(tmp_path / "empty", tmp_path / "prep")) == 2
    assert "empty: dataset folder is empty" in capsys.readouterr().err
    _valid_case(tmp_path / "data" / "good")
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "notes.txt").write_text("mine")
    assert main(_pairs_args(tmp_path / "data", tmp_path / "prep", "--size", "16")) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(_pairs_args(tmp_path / "data", tmp_path / "prep", "--size", "16", "--overwrite")) == 2
    assert "is not a PREP cache" in capsys.readouterr().err and (tmp_path / "prep" / "notes.txt").exists()
    assert main(_pairs_args(tmp_path / "data", tmp_path / "data", "--overwrite")) == 2
    assert "would replace the dataset folder" in capsys.readouterr().err
    assert main(_pairs_args(tmp_path / "data", tmp_path / "p2", "--spacing", "fine")) == 2
    assert main(_pairs_args(tmp_path / "data", tmp_path / "p2", "--size", "16", "16")) == 2
    assert not (tmp_path / "p2").exists()


def test_phantom_autopet_prepares_end_to_end(tmp_path, capsys):
    from tumorgen.data.phantom_layouts import write_phantom_dataset

    write_phantom_dataset(layout="autopet", out=tmp_path / "ph", cases=2, healthy=1, size=32, seed=1)
    args = ["prepare", "--layout", "autopet", "--root", str(tmp_path / "ph"), "--out", str(tmp_path / "prep"),
            "--size", "16"]
    assert main(args) == 0
    data = load_prepared(tmp_path / "prep")
    assert len(data.cases) == 3 and len(data.tumor_cases()) == 2
    assert all(c.meta["roi"] == "lungs found on CT" for c in data.cases)
    first = (tmp_path / "prep" / "dataset.json").read_text()
    assert main(args + ["--overwrite"]) == 0
    assert (tmp_path / "prep" / "dataset.json").read_text() == first  # same input, same cache
