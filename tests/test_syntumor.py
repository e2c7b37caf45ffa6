"""SynTumor: deterministic, mask inside the box/organ, scan unchanged far away, hot within the drawn range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from tumorgen.baselines.syntumor import SuvStats, SynTumor, estimate_relative_noise

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ibsi-sts-pet"
STATS = SuvStats.fit([4.0, 6.0, 8.0], [8.0, 15.0, 20.0])


def _scan(shape=(40, 40, 40), seed=0):
    rng = np.random.default_rng(seed)
    return (0.5 * (1 + 0.1 * rng.standard_normal(shape))).astype(np.float32)  # SUV 0.5, 10% noise


def test_suv_stats_fit_and_sample_inside_the_observed_range():
    assert STATS.mean_range == (4.0, 8.0) and STATS.ratio_range == pytest.approx((2.0, 2.5))
    rng = np.random.default_rng(0)
    for _ in range(50):
        mean, peak = STATS.sample(rng)
        assert 4.0 <= mean <= 8.0 and 2.0 * mean - 1e-9 <= peak <= 2.5 * mean + 1e-9
    with pytest.raises(ValueError):
        SuvStats.fit([2.0], [1.0])


def test_same_seed_same_tumor_and_different_seed_different_tumor():
    scan = _scan()
    a = SynTumor(suv_stats=STATS, seed=3).generate(scan, box=(10, 10, 10, 30, 30, 30))
    b = SynTumor(suv_stats=STATS, seed=3).generate(scan, box=(10, 10, 10, 30, 30, 30))
    c = SynTumor(suv_stats=STATS, seed=4).generate(scan, box=(10, 10, 10, 30, 30, 30))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("seed", range(4))
def test_mask_inside_box_hot_and_scan_unchanged_far_away(seed):
    scan = _scan(seed=seed)
    box = (8, 12, 10, 24, 26, 22)
    image, mask = SynTumor(suv_stats=STATS, radius_range_vox=(3, 6), seed=seed, psf_sigma_vox=1.0).generate(scan, box=box)
    assert mask.dtype == np.uint8 and image.dtype == np.float32 and mask.sum() > 10
    inside_box = np.zeros(scan.shape, bool)
    inside_box[8:24, 12:26, 10:22] = True
    assert not np.any(mask.astype(bool) & ~inside_box)
    # Changed voxels lie within the PSF's reach of the mask: the separable Gaussian kernel is
    # truncated at 4 sigma = 4 voxels per axis, a 9 x 9 x 9 cube.
    near = ndimage.binary_dilation(mask > 0, structure=np.ones((3, 3, 3), bool), iterations=4)
    assert not np.array_equal(image[near], scan[near])
    np.testing.assert_array_equal(image[~near], scan[~near])
    tumor = image[mask > 0]
    assert tumor.mean() > 4 * scan.mean()  # hot: the drawn mean SUV is >= 4, the scan is 0.5
    assert 4.0 * 0.6 <= tumor.mean() <= 8.0 * 1.1  # near the drawn mean (blur lowers the rim)
    assert tumor.max() <= 20.0 * 1.6  # the drawn peak plus noise
    assert tumor.std() > 0.05 * tumor.mean()  # textured and noisy, not a flat blob


def test_mask_stays_inside_the_organ():
    scan = _scan()
    organ = np.zeros(scan.shape, np.uint8)
    organ[20:34, 5:30, 5:35] = 1
    for seed in range(3):
        _, mask = SynTumor(suv_stats=STATS, radius_range_vox=(4, 9), seed=seed).generate(scan, organ_mask=organ)
        assert mask.sum() > 0 and not np.any((mask > 0) & (organ == 0))


def test_noise_estimate_recovers_the_scan_level():
    level = estimate_relative_noise(_scan())
    assert 0.05 < level < 0.15  # 10% white noise; the 1-voxel smoothing residual keeps most of it


def test_validation():
    scan = _scan()
    tumors = SynTumor(suv_stats=STATS, seed=0)
    with pytest.raises(ValueError, match="box"):
        tumors.generate(scan, box=(0, 0, 0, 50, 10, 10))
    with pytest.raises(ValueError, match="organ"):
        tumors.generate(scan, box=(0, 0, 0, 5, 5, 5), organ_mask=np.pad(np.ones((5, 5, 5)), ((35, 0), (35, 0), (35, 0))))
    with pytest.raises(ValueError):
        SynTumor(suv_stats=STATS, elastic_strength=1.0)


@pytest.mark.real_data
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="../shared/data/ibsi-sts-pet is absent")
def test_stats_from_real_tumors_and_a_tumor_in_a_real_scan():
    from tumorgen.io.nifti import load_volume

    cases = sorted(p for p in REAL_DATA.iterdir() if p.is_dir())[:3]
    images = [load_volume(c / "PET_image.nii.gz").array for c in cases]
    masks = [load_volume(c / "PET_mask.nii.gz", kind="mask").array for c in cases]
    stats = SuvStats.from_tumors(images, masks)
    assert 0 < stats.mean_range[0] <= stats.mean_range[1] and stats.ratio_range[0] >= 1.0
    image, mask = SynTumor(suv_stats=stats, seed=0).generate(images[0])
    assert mask.sum() > 0 and image[mask > 0].mean() > np.median(images[0])
