"""User boxes checked against the scan and the model; sampled boxes inside the right region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tumorgen.errors import TumorGenError
from tumorgen.io.nifti import Volume, save_volume
from tumorgen.synthesis.boxes import (body_mask, box_from_world, check_box, parse_box, parse_mm, sample_box,
                                      sampling_region)

AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, 1.5, 0, -20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
MODEL = dict(size=(32, 32, 32), spacing=(2.0, 2.0, 2.0), latent_factor=4)  # latent voxel 8 mm, window 64 mm


def scan(shape=(40, 48, 30), affine=AFFINE, path="case_007.nii.gz") -> Volume:
    suv = np.zeros(shape, dtype=np.float32)
    suv[4:-4, 4:-4, 2:-2] = 1.0
    return Volume(array=suv, affine=affine, path=Path(path))


def test_a_valid_box_passes_unchanged():
    assert check_box((10, 10, 10, 20, 20, 14), scan=scan(), **MODEL) == (10, 10, 10, 20, 20, 14)
    assert check_box(["10", "10", "10", "20", "20", "14"], scan=scan(), **MODEL) == (10, 10, 10, 20, 20, 14)


@pytest.mark.parametrize(
    "box, words",
    [
        ((30, 10, 10, 42, 20, 14), "outside"),
        ((-1, 10, 10, 8, 20, 14), "outside"),
        ((20, 10, 10, 10, 20, 14), "inverted"),
        ((10, 10, 10, 10, 20, 14), "empty"),
        ((10, 10, 10, 20, 15, 14), "smaller than one latent voxel"),  # 5 x 1.5 mm = 7.5 mm < 8 mm
        ((2, 2, 2, 38, 46, 24), "larger than the model's window"),  # 36 x 2 mm = 72 mm > 64 mm
        ((10, 10, 10, 20, 20), "6 numbers"),
        ((10, 10, 10, 20, 20, 14.5), "integers"),
        (("a", 10, 10, 20, 20, 14), "integers"),
    ],
)
def test_bad_boxes_are_refused_naming_the_scan(box, words):
    with pytest.raises(TumorGenError) as err:
        check_box(box, scan=scan(), **MODEL)
    assert "case_007.nii.gz" in str(err.value) and words in str(err.value)


def test_parse_box_accepts_integer_strings():
    assert parse_box(["1", "2", "3", "4", "5", "6"], path="x.nii.gz") == (1, 2, 3, 4, 5, 6)


def test_sampled_box_centers_fall_inside_the_organ_mask():
    volume = scan()
    organ = np.zeros(volume.array.shape, dtype=np.uint8)
    organ[26:31, 30:36, 18:22] = 1
    organ_volume = Volume(array=organ, affine=AFFINE, path=Path("organ.nii.gz"))
    region, name = sampling_region(volume, organ_mask=organ_volume)
    assert name == "organ"
    for seed in range(12):
        box = sample_box(rng=np.random.default_rng(seed), region=region, scan=volume,
                         box_sizes_mm=[[16.0, 12.0, 9.0], [24.0, 24.0, 18.0]], **MODEL)
        center = [(a + b) // 2 for a, b in zip(box[:3], box[3:])]  # start + extent // 2
        assert organ[tuple(center)] == 1  # the organ is far from the edges: no shift
        assert check_box(box, scan=volume, **MODEL) == box


def test_sampled_box_has_the_training_size_in_mm_and_is_deterministic():
    volume = scan()
    region = np.zeros(volume.array.shape, dtype=bool)
    region[20, 24, 15] = True  # one possible center: the box must be centered on it
    kwargs = dict(region=region, scan=volume, box_sizes_mm=[[16.0, 12.0, 9.0]], **MODEL)
    box = sample_box(rng=np.random.default_rng(3), **kwargs)
    extent = [b - a for a, b in zip(box[:3], box[3:])]
    assert extent == [8, 8, 3]  # 16/2, 12/1.5, 9/3 voxels
    assert box[:3] == (16, 20, 14)
    assert sample_box(rng=np.random.default_rng(3), **kwargs) == box


def test_sampled_box_is_shifted_into_the_scan_at_an_edge():
    volume = scan()
    region = np.zeros(volume.array.shape, dtype=bool)
    region[0, 0, 29] = True
    box = sample_box(rng=np.random.default_rng(0), region=region, scan=volume,
                     box_sizes_mm=[[20.0, 15.0, 12.0]], **MODEL)
    assert box == (0, 0, 26, 10, 10, 30)


def test_organ_mask_on_another_grid_or_empty_is_refused():
    volume = scan()
    other = Volume(array=np.ones((40, 48, 31), dtype=np.uint8), affine=AFFINE, path=Path("organ.nii.gz"))
    with pytest.raises(TumorGenError, match="organ.nii.gz"):
        sampling_region(volume, organ_mask=other)
    empty = Volume(array=np.zeros((40, 48, 30), dtype=np.uint8), affine=AFFINE, path=Path("organ.nii.gz"))
    with pytest.raises(TumorGenError, match="empty"):
        sampling_region(volume, organ_mask=empty)


def test_lungs_are_found_on_the_ct_beside_an_autopet_suv(tmp_path):
    folder = tmp_path / "PETCT_0001" / "study"
    suv = scan(path=str(folder / "SUV.nii.gz"))
    ct = np.full(suv.array.shape, 40.0, dtype=np.float32)
    ct[10:20, 10:20, 10:20] = -800.0
    save_volume(ct, AFFINE, folder / "CTres.nii.gz")
    seen = {}

    def fake_lungs(ct_hu, spacing):
        seen["spacing"] = spacing
        return (ct_hu < -500).astype(np.uint8)

    region, name = sampling_region(suv, find_lungs=fake_lungs)
    assert name == "lungs" and region.sum() == 1000 and region[15, 15, 15]
    np.testing.assert_allclose(seen["spacing"], (2.0, 1.5, 3.0))
    # No CT beside a scan of another name: the body.
    region, name = sampling_region(scan(path=str(folder / "other.nii.gz")), find_lungs=fake_lungs)
    assert name == "body" and region.sum() == np.count_nonzero(suv.array)


def test_body_mask_keeps_the_largest_component():
    suv = np.zeros((20, 20, 20), dtype=np.float32)
    suv[2:12, 2:12, 2:12] = 1.0
    suv[16:18, 16:18, 16:18] = 5.0  # a hot speck apart from the body
    body = body_mask(suv)
    assert body.sum() == 1000 and not body[17, 17, 17]


# ------------------------------------------------------------------------------ boxes in world mm

SHIFTED = np.array([[2.0, 0, 0, -50.0], [0, 2.0, 0, -60.0], [0, 0, 2.0, -70.0], [0, 0, 0, 1]])  # 2 mm, offset
# LPS-derived NIfTI: i runs to the patient's left and j to the back, so x and y fall as i and j grow.
FLIPPED = np.array([[-2.0, 0, 0, 100.0], [0, -2.0, 0, 50.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])


def test_world_box_on_a_shifted_2mm_grid_is_the_exact_covering_voxel_box():
    # center (-30, -40, -50) mm is voxel (10, 10, 10); half-sizes 2.25, 0.5, 5 voxels
    box = box_from_world((-30.0, -40.0, -50.0), (9.0, 2.0, 20.0), affine=SHIFTED, shape=(40, 40, 40), path="s.nii")
    # x: 7.75..12.25 touches voxels 8..12; y: 9.5..10.5 is exactly voxel 10; z: 5..15 touches 5..15
    assert box == (8, 10, 5, 13, 11, 16)


def test_world_box_on_a_flipped_axis_grid():
    # (80, 30, 0) mm is voxel (10, 10, 10): x = 100 - 2 i, y = 50 - 2 j, z = -30 + 3 k
    assert box_from_world((80.0, 30.0, 0.0), (8.0, 4.0, 6.0), affine=FLIPPED, shape=(30, 30, 30),
                          path="s.nii") == (8, 9, 9, 13, 12, 12)
    # centered on a voxel border (i = 9.5, j = 10.5, k = 10.5) the box has exactly the size: 4, 2, 2 voxels
    assert box_from_world((81.0, 29.0, 1.5), (8.0, 4.0, 6.0), affine=FLIPPED, shape=(30, 30, 30),
                          path="s.nii") == (8, 10, 10, 12, 12, 12)


def test_world_box_covers_every_point_of_the_mm_box_on_an_oblique_grid():
    rng = np.random.default_rng(0)
    angle = 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.5, -2.0, 2.5])
    affine[:3, 3] = (12.0, -7.0, 30.0)
    center_vox, size = np.array([20.3, 17.6, 11.1]), np.array([11.0, 9.0, 13.0])
    center = affine[:3, :3] @ center_vox + affine[:3, 3]
    box = box_from_world(center, size, affine=affine, shape=(50, 50, 40), path="s.nii")
    lo, hi = np.array(box[:3]), np.array(box[3:])
    axes = affine[:3, :3] / np.array([1.5, 2.0, 2.5])  # unit vectors of the voxel axes in world space
    points = center + (rng.uniform(-0.5, 0.5, (500, 3)) * size) @ axes.T  # inside the mm box
    index = np.rint(np.linalg.solve(affine[:3, :3], (points - affine[:3, 3]).T).T)  # (500, 3) voxel of each
    assert np.all(index >= lo) and np.all(index < hi)
    assert np.all(hi - lo <= np.ceil(size / np.array([1.5, 2.0, 2.5])) + 1)  # and not more than one voxel extra


def test_world_box_is_cut_to_the_scan_and_a_center_outside_is_refused():
    # center on voxel 1 with 20 mm (10 voxels): 0..6 along x inside the scan
    assert box_from_world((-48.0, -40.0, -50.0), (20.0, 4.0, 4.0), affine=SHIFTED, shape=(40, 40, 40),
                          path="s.nii")[::3] == (0, 7)
    with pytest.raises(TumorGenError) as err:
        box_from_world((-52.0, -40.0, -50.0), (4.0, 4.0, 4.0), affine=SHIFTED, shape=(40, 40, 40), path="case.nii.gz")
    assert str(err.value).startswith("case.nii.gz: ") and "lies outside the scan" in str(err.value)


@pytest.mark.parametrize("values, positive, words", [
    (["1", "2"], False, "not three finite numbers"),
    (["1", "x", "3"], False, "not three numbers"),
    (["1", "nan", "3"], False, "not three finite numbers"),
    (["4", "0", "4"], True, "above 0"),
    (["4", "-2", "4"], True, "above 0"),
])
def test_bad_mm_triples_are_refused_naming_the_flag(values, positive, words):
    with pytest.raises(TumorGenError) as err:
        parse_mm(values, flag="--size-mm", positive=positive)
    assert str(err.value).startswith("--size-mm ") and words in str(err.value)
