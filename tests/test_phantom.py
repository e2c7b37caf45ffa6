"""Tests of the procedural PET phantoms and the `tumorgen phantom` command (tiny grids, seeded)."""

from __future__ import annotations

import argparse
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from tumorgen.commands import phantom as phantom_command
from tumorgen.data.phantom import PhantomCase, make_phantom
from tumorgen.data.phantom_layouts import write_phantom_dataset
from tumorgen.data.phantom_layouts import case_name
from tumorgen.errors import TumorGenError

SIZE = 32  # small grids keep every test well under a second


# The organ-level fixtures use 48 voxels (5-6.7 mm): at 32 (7.5-10 mm voxels) the heart or the brain
# lie within three voxels of many tumors, and "a shell around the tumor" would measure them instead.
@pytest.fixture(scope="module")
def torso_cases() -> list[PhantomCase]:
    return [make_phantom(region="torso", size=48, with_tumor=True, rng=np.random.default_rng(s)) for s in range(4)]


@pytest.fixture(scope="module")
def head_neck_cases() -> list[PhantomCase]:
    return [make_phantom(region="head-neck", size=48, with_tumor=True, rng=np.random.default_rng(s)) for s in range(4)]


def _digests(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- in-memory phantoms --------------------------------------------------------------------------

def test_dtypes_shapes_and_ranges(torso_cases, head_neck_cases):
    for case in torso_cases + head_neck_cases:
        assert case.suv.dtype == np.float32 and case.ct.dtype == np.int16 and case.mask.dtype == np.uint8
        assert case.suv.shape == case.ct.shape == case.mask.shape == case.activity.shape
        assert case.suv.min() >= 0.0 and np.isfinite(case.suv).all()
        assert set(np.unique(case.mask)) == {0, 1}
        assert case.ct.min() >= -1024 and case.ct.max() > 300  # air and bone both present


def test_spacing_follows_the_field_of_view_and_is_in_the_affine():
    small = make_phantom(region="torso", size=32, with_tumor=False, rng=np.random.default_rng(0))
    large = make_phantom(region="torso", size=48, with_tumor=False, rng=np.random.default_rng(0))
    assert small.spacing == pytest.approx((10.0, 10.0, 8.0))  # 320 x 320 x 256 mm over 32 voxels
    assert large.spacing == pytest.approx((320 / 48, 320 / 48, 256 / 48))
    # The grid centre is the world origin, so the body keeps its size in mm whatever the grid.
    centre = small.affine @ np.array([(SIZE - 1) / 2] * 3 + [1.0])
    assert centre[:3] == pytest.approx(0.0)
    hn = make_phantom(region="head-neck", size=64, spacing=3.0, with_tumor=False, rng=np.random.default_rng(0))
    assert hn.spacing == pytest.approx((3.0, 3.0, 3.0))


def test_torso_uptake_and_ct_values_are_pet_like():
    case = make_phantom(region="torso", size=48, with_tumor=False, rng=np.random.default_rng(5))
    organs, act = case.organs, case.activity
    lungs = organs["lungs"]
    assert 0.3 <= act[lungs].mean() <= 0.6
    assert 2.0 <= np.median(act[organs["liver"] & ~lungs]) <= 2.6
    assert act.max() <= 7.0 and act[~organs["body"]].max() == 0.0  # no activity in the air outside
    assert np.median(case.ct[lungs]) < -700 and np.median(case.ct[~organs["body"]]) < -950
    assert np.median(case.ct[organs["spine"]]) > 300
    # The heart is on the patient's left (RAS: negative x), the liver on the right.
    x = case.affine[0, 0] * np.arange(48) + case.affine[0, 3]
    assert x[np.argwhere(organs["heart"])[:, 0]].mean() < 0 < x[np.argwhere(organs["liver"])[:, 0]].mean()


def test_head_neck_brain_is_the_hottest_organ():
    case = make_phantom(region="head-neck", size=48, with_tumor=False, rng=np.random.default_rng(5))
    brain, airway = case.organs["brain"], case.organs["airway"]
    assert case.activity[brain].max() >= 6.0
    assert case.activity[airway].max() == 0.0 and np.median(case.ct[airway]) < -800
    assert np.median(case.activity[case.organs["parotids"]]) < np.median(case.activity[brain])


def test_lungs_are_below_minus_500_hu_on_ct(torso_cases):
    for case in torso_cases:
        lungs = case.organs["lungs"] & (case.mask == 0)
        assert np.mean(case.ct[lungs] < -500) > 0.95


def test_tumors_lie_inside_their_organ(torso_cases, head_neck_cases):
    for case in torso_cases:
        assert case.mask.any() and not (case.mask.astype(bool) & ~case.organs["lungs"]).any()
    for case in head_neck_cases:
        assert case.mask.any() and not (case.mask.astype(bool) & ~case.organs["oropharynx"]).any()
        assert not (case.mask.astype(bool) & case.organs["airway"]).any()


def test_tumors_are_hotter_than_a_shell_around_them(torso_cases, head_neck_cases):
    for case in torso_cases + head_neck_cases:
        mask = case.mask.astype(bool)
        shell = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask, iterations=2)
        assert case.suv[mask].mean() > 2.0 * case.suv[shell].mean()


def test_psf_makes_the_boundary_soft():
    def edge_ratio(image, mask):
        """How far the first ring outside the mask rises from the background towards the tumor."""
        ring_out = ndimage.binary_dilation(mask) & ~mask
        far = ndimage.binary_dilation(mask, iterations=5) & ~ndimage.binary_dilation(mask, iterations=3)
        inside, outside, background = image[mask].mean(), image[ring_out].mean(), image[far].mean()
        return (outside - background) / (inside - background)

    for seed in range(3):  # 64 voxels: 5 mm voxels against a 6-8 mm PSF, as in AutoPET
        case = make_phantom(region="torso", size=64, with_tumor=True, rng=np.random.default_rng(seed))
        mask = case.mask.astype(bool)
        assert abs(edge_ratio(case.activity, mask)) < 0.05  # the truth is a step at the mask edge
        assert edge_ratio(case.suv, mask) > 0.15  # the image spills over it


def test_tumors_are_irregular_and_sizes_vary():
    volumes, fills = [], []
    for seed in range(6):
        case = make_phantom(region="torso", size=48, with_tumor=True, rng=np.random.default_rng(100 + seed))
        voxels = np.argwhere(case.mask)
        volumes.append(case.tumor_volume_ml)
        # An ellipsoid fills pi/6 of its axis-aligned box after its principal axes are aligned;
        # irregular lobed shapes do not match any single ellipsoid, checked via the PCA ellipsoid.
        centred = (voxels - voxels.mean(0)) * np.array(case.spacing)
        eigvals = np.linalg.eigvalsh(np.cov(centred.T))
        ellipsoid_ml = 4 / 3 * np.pi * np.prod(np.sqrt(5 * eigvals)) / 1000
        fills.append(case.tumor_volume_ml / ellipsoid_ml)
    assert max(volumes) > 4 * min(volumes)
    assert any(abs(f - 1) > 0.1 for f in fills)


def test_large_tumors_have_a_cooler_core():
    from tumorgen.data.phantom_tumor import grow_tumor

    organ = np.zeros((48, 48, 48), bool)
    organ[4:44, 4:44, 4:44] = True
    for seed in range(20):
        tumor = grow_tumor(organ=organ, spacing=(2.0, 2.0, 2.0), rng=np.random.default_rng(seed))
        if tumor.diameter_mm >= 35:
            depth = ndimage.distance_transform_edt(tumor.mask)
            core = depth >= 0.8 * depth.max()
            rim = tumor.mask & (depth <= 2)
            assert tumor.activity[core].mean() < 0.7 * tumor.activity[rim].mean()
            return
    pytest.fail("no tumor of 35 mm or more in 20 seeds")


def test_healthy_case_has_an_empty_mask_and_no_hot_lesion():
    case = make_phantom(region="torso", size=SIZE, with_tumor=False, rng=np.random.default_rng(3))
    assert case.mask.sum() == 0 and case.tumor_volume_ml == 0.0 and case.suv_max == 0.0
    assert case.activity[case.organs["lungs"]].max() < 1.0


def test_same_rng_same_case_and_different_rng_differs():
    a = make_phantom(region="head-neck", size=SIZE, rng=np.random.default_rng(7))
    b = make_phantom(region="head-neck", size=SIZE, rng=np.random.default_rng(7))
    c = make_phantom(region="head-neck", size=SIZE, rng=np.random.default_rng(8))
    assert np.array_equal(a.suv, b.suv) and np.array_equal(a.ct, b.ct) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.suv, c.suv)


@pytest.mark.parametrize(
    "kwargs",
    [dict(region="belly"), dict(region="torso", size=8), dict(region="torso", spacing=-1.0), dict(region="torso", size=(32, 32))],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        make_phantom(rng=np.random.default_rng(0), **kwargs)


# ---- datasets on disk ----------------------------------------------------------------------------

def test_autopet_layout_files_and_dtypes(tmp_path):
    out = tmp_path / "autopet"
    files = write_phantom_dataset(layout="autopet", out=out, cases=2, healthy=1, size=SIZE, seed=1)
    assert len(files) == 9 and all(f.is_file() for f in files)
    case_dirs = sorted(out.iterdir())
    assert len(case_dirs) == 3 and all(d.name.startswith("PETCT_") and len(d.name) == 16 for d in case_dirs)
    for case_dir in case_dirs:
        (study,) = case_dir.iterdir()
        assert study.name[2] == "-" and study.name[5] == "-" and "PET-CT" in study.name
        assert sorted(p.name for p in study.iterdir()) == ["CTres.nii.gz", "SEG.nii.gz", "SUV.nii.gz"]
        suv, ct, seg = (nib.load(study / n) for n in ("SUV.nii.gz", "CTres.nii.gz", "SEG.nii.gz"))
        assert suv.get_data_dtype() == np.float32 and ct.get_data_dtype() == np.int16
        assert seg.get_data_dtype() == np.uint8
        assert suv.header.get_zooms() == pytest.approx((10.0, 10.0, 8.0))
        assert np.allclose(suv.affine, seg.affine) and np.allclose(suv.affine, ct.affine)
    healthy_name = case_name("autopet", seed=1, healthy=True, index=0)
    (healthy_study,) = (out / healthy_name).iterdir()
    assert np.asarray(nib.load(healthy_study / "SEG.nii.gz").dataobj).sum() == 0


def test_hecktor_layout_files_and_bbox(tmp_path):
    out = tmp_path / "hecktor"
    write_phantom_dataset(layout="hecktor", out=out, cases=5, healthy=1, size=SIZE, seed=2)
    names = ["CHGJ001", "CHMR001", "CHUM001", "CHUS001", "CHGJ002", "CHGJ501"]
    expected = sorted([f"{n}_{s}.nii.gz" for n in names for s in ("pt", "ct", "gtvt")] + ["bbox.csv"])
    assert sorted(p.name for p in out.iterdir()) == expected
    lines = (out / "bbox.csv").read_text().splitlines()
    assert lines[0] == "PatientID,x1,x2,y1,y2,z1,z2" and [l.split(",")[0] for l in lines[1:]] == names
    pt = nib.load(out / "CHGJ001_pt.nii.gz")
    gtvt = np.asarray(nib.load(out / "CHGJ001_gtvt.nii.gz").dataobj)
    x1, x2, y1, y2, z1, z2 = map(float, lines[1].split(",")[1:])
    assert x2 - x1 == pytest.approx(144.0) and z2 - z1 == pytest.approx(144.0)
    world = nib.affines.apply_affine(pt.affine, np.argwhere(gtvt))  # (K, 3) mm
    assert (world >= [x1, y1, z1]).all() and (world <= [x2, y2, z2]).all()  # the tumor is in the box
    assert pt.header.get_zooms() == pytest.approx((240 / SIZE,) * 3)  # 3.75 mm at the default 64


def test_nnunet_layout_files_and_dataset_json(tmp_path):
    out = tmp_path / "Dataset001_Phantom"
    write_phantom_dataset(layout="nnunet", out=out, cases=2, healthy=1, size=SIZE, seed=3)
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "healthy_000_0000.nii.gz", "tumor_000_0000.nii.gz", "tumor_001_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "healthy_000.nii.gz", "tumor_000.nii.gz", "tumor_001.nii.gz"]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "PET"} and meta["labels"] == {"background": 0, "tumor": 1}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"


def test_same_seed_same_bytes_and_growing_keeps_earlier_cases(tmp_path):
    write_phantom_dataset(layout="hecktor", out=tmp_path / "a", cases=2, healthy=1, size=SIZE, seed=4)
    write_phantom_dataset(layout="hecktor", out=tmp_path / "b", cases=2, healthy=1, size=SIZE, seed=4)
    write_phantom_dataset(layout="hecktor", out=tmp_path / "c", cases=3, healthy=1, size=SIZE, seed=4)
    write_phantom_dataset(layout="hecktor", out=tmp_path / "d", cases=2, healthy=1, size=SIZE, seed=5)
    a, b, c, d = (_digests(tmp_path / n) for n in "abcd")
    assert a == b
    assert all(c[k] == v for k, v in a.items() if k != "bbox.csv")
    assert a["CHGJ001_pt.nii.gz"] != d["CHGJ001_pt.nii.gz"]


def test_existing_output_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "data"
    write_phantom_dataset(layout="nnunet", out=out, cases=1, size=SIZE, seed=0)
    before = _digests(out)
    with pytest.raises(TumorGenError, match="already exists"):
        write_phantom_dataset(layout="nnunet", out=out, cases=2, size=SIZE, seed=9)
    assert _digests(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    write_phantom_dataset(layout="nnunet", out=out, cases=2, size=SIZE, seed=9, overwrite=True)
    assert len(list((out / "labelsTr").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging folder left behind


def test_a_failure_midway_leaves_no_partial_folder(tmp_path, monkeypatch):
    import tumorgen.data.phantom_layouts as layouts

    calls = {"n": 0}
    real = layouts.make_phantom

    def fail_on_second(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(layouts, "make_phantom", fail_on_second)
    with pytest.raises(RuntimeError):
        write_phantom_dataset(layout="autopet", out=tmp_path / "data", cases=3, size=SIZE, seed=0)
    assert list(tmp_path.iterdir()) == []


# ---- the command ---------------------------------------------------------------------------------

def _run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    phantom_command.add_arguments(parser)
    return phantom_command.run(parser.parse_args(argv))


def test_command_writes_the_dataset_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "ds"
    argv = ["--layout", "autopet", "--out", str(out), "--cases", "2", "--healthy", "1", "--size", str(SIZE), "--seed", "6"]
    assert _run_command(argv) == 0
    printed = capsys.readouterr().out
    assert "tumor mL" in printed and "SUVmax" in printed and "SUV.nii.gz" in printed
    assert len(list(out.glob("PETCT_*/*/SUV.nii.gz"))) == 3
    with pytest.raises(TumorGenError, match="already exists"):
        _run_command(argv)
    assert _run_command(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize("argv", [["--cases", "0", "--healthy", "0"], ["--size", "4"], ["--cases", "-1"]])
def test_command_refuses_bad_counts_and_sizes(tmp_path, argv):
    with pytest.raises(TumorGenError):
        _run_command(["--layout", "nnunet", "--out", str(tmp_path / "x")] + argv)
    assert not (tmp_path / "x").exists()


def test_tumorgen_cli_end_to_end(tmp_path, capsys):
    from tumorgen.cli import main

    out = tmp_path / "hn"
    argv = ["phantom", "--layout", "hecktor", "--out", str(out), "--cases", "1", "--size", str(SIZE), "--seed", "1"]
    assert main(argv) == 0 and (out / "CHGJ001_pt.nii.gz").is_file()
    assert main(argv) == 2  # refused without --overwrite: one sentence on stderr, no traceback
    assert "already exists" in capsys.readouterr().err
