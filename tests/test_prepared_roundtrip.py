"""The reading side of the PREP cache and the geometry of mapping results back (prepared.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tumorgen.data.prepared import (
    from_suv,
    load_prepared,
    map_from_original,
    map_to_original,
    resample_to_grid,
    to_suv,
)
from tumorgen.errors import TumorGenError
from tumorgen.io.nifti import save_volume


def _blob(shape, center, radius):
    grid = np.indices(shape).astype(float)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, center)))
    return (dist <= radius).astype(np.uint8)


def test_suv_scaling_round_trip_and_clip():
    suv = np.array([-1.0, 0.0, 5.0, 20.0, 30.0])
    x = from_suv(suv, 20.0)
    assert np.allclose(x, [0.0, 0.0, 0.25, 1.0, 1.0])
    assert np.allclose(to_suv(x, 20.0), [0.0, 0.0, 5.0, 20.0, 20.0])


def test_flip_and_shift_is_exact_for_masks():
    mask = _blob((20, 22, 24), (8, 10, 12), 5)
    original_affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    original_affine[:3, 3] = (40.0, -10.0, 5.0)
    # A cached grid: x flipped (RAS), cropped by 3 voxels in x and 2 in z, padded by 4 in y.
    ijk_to_orig = np.eye(4)
    ijk_to_orig[0, 0], ijk_to_orig[0, 3] = -1.0, 16.0  # cached i -> original x = 16 - i
    ijk_to_orig[1, 3], ijk_to_orig[2, 3] = -4.0, 2.0
    cached_affine = original_affine @ ijk_to_orig
    cached = map_from_original(mask, original_affine=original_affine, shape=(14, 30, 20),
                               affine=cached_affine, order=0)
    assert cached.dtype == np.uint8
    assert cached[16 - 8, 10 + 4, 12 - 2] == 1  # the blob's centre moved by the known index map
    back = map_to_original(cached, affine=cached_affine, original_shape=mask.shape,
                           original_affine=original_affine, order=0)
    # Inside the cached field of view (x 3..16, z 2..21) every voxel is back exactly; outside, 0.
    assert np.array_equal(back[3:17, :, 2:22], mask[3:17, :, 2:22])
    assert back[:3].sum() == 0 and back[17:].sum() == 0 and back[:, :, :2].sum() == 0


def test_resampled_mask_round_trip_has_high_dice():
    mask = _blob((40, 40, 30), (20, 18, 15), 8)
    original_affine = np.diag([1.5, 1.5, 3.0, 1.0])
    cached_affine = np.diag([2.7, 2.7, 2.7, 1.0])
    cached_affine[:3, 3] = (3.0, 2.0, 1.0)
    cached = map_from_original(mask, original_affine=original_affine, shape=(24, 24, 32),
                               affine=cached_affine, order=0)
    back = map_to_original(cached, affine=cached_affine, original_shape=mask.shape,
                           original_affine=original_affine, order=0)
    dice = 2 * np.sum(back & mask) / (back.sum() + mask.sum())
    assert dice > 0.9


def test_linear_image_and_fill_outside():
    image = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)  # linear in each index
    affine = np.eye(4)
    half = np.diag([0.5, 0.5, 0.5, 1.0])
    fine = resample_to_grid(image, src_affine=affine, dst_shape=(8, 10, 12), dst_affine=half, order=1, fill=-1)
    # A voxel at half-index (2, 4, 6) -> source (1, 2, 3): linear interpolation is exact on a ramp.
    assert fine[2, 4, 6] == pytest.approx(image[1, 2, 3])
    assert fine[3, 4, 6] == pytest.approx((image[1, 2, 3] + image[2, 2, 3]) / 2)
    shifted = np.eye(4)
    shifted[0, 3] = 100.0  # entirely outside the source
    far = resample_to_grid(image, src_affine=affine, dst_shape=(3, 3, 3), dst_affine=shifted, order=1, fill=-1)
    assert np.all(far == -1)


def _write_cache(root, *, fmt="tumorgen-prep"):
    cases_dir = root / "cases"
    cases_dir.mkdir(parents=True)
    entries = []
    for name, healthy in (("a", False), ("b", True), ("c", False)):
        mask = np.zeros((4, 4, 4), np.uint8) if healthy else _blob((4, 4, 4), (2, 2, 2), 1)
        save_volume(np.full((4, 4, 4), 0.5), np.eye(4), cases_dir / f"{name}_image.nii.gz")
        save_volume(mask, np.eye(4), cases_dir / f"{name}_mask.nii.gz", dtype=np.uint8)
        entries.append({"name": name, "image": f"cases/{name}_image.nii.gz", "mask": f"cases/{name}_mask.nii.gz",
                        "healthy": healthy, "original_shape": [4, 4, 4], "original_affine": np.eye(4).tolist(),
                        "spacing": [1, 1, 1], "tumor_voxels": int(mask.sum())})
    info = {"format": fmt, "version": 1, "layout": "pairs", "root": "x", "size": [4, 4, 4], "spacing": None,
            "suv_max": 20.0, "seed": 0, "test_fraction": 0.3,
            "split": {"train": ["a", "b"], "test": ["c"]}, "cases": entries, "skipped": []}
    (root / "dataset.json").write_text(json.dumps(info))


def test_load_prepared_reads_cases_and_splits(tmp_path):
    _write_cache(tmp_path / "prep")
    data = load_prepared(tmp_path / "prep")
    assert data.suv_max == 20.0 and data.size == (4, 4, 4)
    assert [c.name for c in data.split("train")] == ["a", "b"]
    assert [c.name for c in data.tumor_cases()] == ["a", "c"]
    assert [c.name for c in data.tumor_cases("test")] == ["c"]
    image, mask, affine = data.case("a").load()
    assert image.dtype == np.float32 and mask.dtype == np.uint8 and affine.shape == (4, 4)
    assert mask.sum() == 7


def test_load_prepared_refuses_bad_caches(tmp_path):
    with pytest.raises(TumorGenError, match="not a prepared dataset"):
        load_prepared(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TumorGenError, match="dataset.json: not found"):
        load_prepared(tmp_path / "empty")
    _write_cache(tmp_path / "wrong", fmt="something-else")
    with pytest.raises(TumorGenError, match="format"):
        load_prepared(tmp_path / "wrong")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "dataset.json").write_text("{not json")
    with pytest.raises(TumorGenError, match="not valid JSON"):
        load_prepared(tmp_path / "garbled")
