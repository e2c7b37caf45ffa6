"""Coarse, fine (SSIM) and refiner losses by expected values."""

from __future__ import annotations

import pytest
import torch

from tumorgen.losses import coarse_loss, dice_loss, fine_loss, kl_divergence, refiner_loss, ssim3d


def _vol(seed=0, shape=(2, 4, 8, 8, 8)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_coarse_loss_is_the_mean_absolute_error_inside_the_box():
    z = torch.zeros(1, 4, 6, 6, 6)
    z_hat = z.clone()
    box = torch.zeros(1, 1, 6, 6, 6)
    box[..., 1:3, 1:3, 1:3] = 1.0  # 8 voxels
    z_hat[:, 0, 1:3, 1:3, 1:3] = 2.0  # error 2 in 1 of 4 channels inside
    z_hat[:, :, 5, 5, 5] = 100.0  # outside the box: ignored
    assert coarse_loss(z_hat, z, box).item() == pytest.approx(2.0 / 4)


def test_ssim_of_a_volume_with_itself_is_one_and_falls_with_noise():
    x = _vol()
    assert ssim3d(x, x).item() == pytest.approx(1.0, abs=1e-5)
    values = [ssim3d(x, x + sigma * _vol(1)).item() for sigma in (0.1, 0.5, 2.0)]
    assert values[0] > values[1] > values[2]
    assert values[0] < 1.0
    per_item = ssim3d(x, x + _vol(1), reduction="none")
    assert per_item.shape == (2,)


def test_ssim_works_on_grids_smaller_than_the_window():
    x = _vol(shape=(1, 4, 3, 2, 4))
    assert ssim3d(x, x).item() == pytest.approx(1.0, abs=1e-5)


def test_ssim_of_constant_shifts_matches_the_luminance_term():
    # constant volumes: sigma terms vanish, SSIM = (2 a b + C1) / (a^2 + b^2 + C1)
    a, b = torch.full((1, 1, 5, 5, 5), 1.0), torch.full((1, 1, 5, 5, 5), 2.0)
    c1 = (0.01 * 4.0) ** 2
    expected = (2 * 1 * 2 + c1) / (1 + 4 + c1)
    assert ssim3d(a, b, data_range=4.0).item() == pytest.approx(expected, rel=1e-5)


def test_fine_loss_is_zero_for_exact_latents_and_positive_otherwise():
    z = _vol()
    m_hat = torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    assert fine_loss(z, z, m_hat).item() == pytest.approx(0.0, abs=1e-5)
    z_hat = (z + 0.5 * _vol(3)).requires_grad_()
    loss = fine_loss(z_hat, z, m_hat.requires_grad_())
    assert loss.item() > 0.05
    loss.backward()
    assert z_hat.grad.abs().sum() > 0 and m_hat.grad is None  # the mask only weights


def test_refiner_loss_expected_values():
    M = torch.zeros(1, 1, 4, 4, 4)
    M[..., :2, :, :] = 1.0
    confident = 20.0 * (2 * M - 1)
    assert refiner_loss(confident, M).item() == pytest.approx(0.0, abs=1e-3)
    # logits 0: BCE = log 2; Dice = 1 - (2 * 16 + 1) / (32 + 32 + 1)
    expected = torch.log(torch.tensor(2.0)).item() + 1 - 33 / 65
    assert refiner_loss(torch.zeros_like(M), M).item() == pytest.approx(expected, rel=1e-5)
    assert dice_loss(M, M).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim3d_is_monais_map_kept_at_full_size_with_one_range_per_item():
    """Ours gives MONAI's values (on replicate-padded input, one call per item's range), and keeps the
    border MONAI's valid convolution drops (see `ssim3d`'s docstring for why ours is kept)."""
    from monai.metrics.regression import compute_ssim_and_cs

    torch.manual_seed(0)
    a = torch.randn(2, 3, 12, 12, 12)
    b = a + 0.4 * torch.randn_like(a)
    monai_map, _ = compute_ssim_and_cs(a[:1], b[:1], spatial_dims=3, kernel_size=(5, 5, 5),
                                       kernel_sigma=(1.5, 1.5, 1.5), data_range=3.0)
    assert monai_map.shape == (1, 3, 8, 8, 8)  # 2 voxels lost on every face of a 12^3 grid
    full = ssim3d(a, b, data_range=3.0, reduction="none")
    assert full.shape == (2,)
    interior_only = compute_ssim_and_cs(a, b, spatial_dims=3, kernel_size=(5, 5, 5), kernel_sigma=(1.5, 1.5, 1.5),
                                        data_range=3.0)[0].reshape(2, -1).mean(1)
    assert not torch.allclose(full, interior_only, atol=1e-4)  # the border counts in ours
    padded = torch.nn.functional.pad(a, (2,) * 6, mode="replicate"), torch.nn.functional.pad(b, (2,) * 6, mode="replicate")
    per_item = [compute_ssim_and_cs(padded[0][i : i + 1], padded[1][i : i + 1], spatial_dims=3, kernel_size=(5, 5, 5),
                                    kernel_sigma=(1.5, 1.5, 1.5), data_range=r)[0].mean() for i, r in enumerate((3.0, 7.0))]
    torch.testing.assert_close(ssim3d(a, b, data_range=torch.tensor([3.0, 7.0]), reduction="none"),
                               torch.stack(per_item), rtol=1e-5, atol=1e-6)


def test_kl_divergence_expected_values():
    """KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - log s^2 - 1) / 2 per element, summed per item, batch mean."""
    zero = kl_divergence(torch.zeros(2, 3, 2, 2, 2), torch.ones(2, 3, 2, 2, 2))
    assert zero.item() == pytest.approx(0.0, abs=1e-7)  # the prior itself
    mu = torch.full((1, 1, 2, 2, 2), 2.0)  # 8 elements, each (4 + 1 - 0 - 1) / 2 = 2
    assert kl_divergence(mu, torch.ones_like(mu)).item() == pytest.approx(16.0)
    sigma = torch.full((1, 1, 2, 2, 2), 0.5)  # each (0 + 0.25 - log 0.25 - 1) / 2
    assert kl_divergence(torch.zeros_like(sigma), sigma).item() == pytest.approx(8 * 0.5 * (0.25 + 1.3862944 - 1))
    batch = torch.stack([torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), 2.0)])  # items: 0 and 16
    assert kl_divergence(batch, torch.ones_like(batch)).item() == pytest.approx(8.0)  # the batch mean


def test_fine_loss_weights_by_the_mask_only():
    """Errors outside the predicted mask cost nothing, inside they do; the mask gets no gradient."""
    torch.manual_seed(0)
    z = torch.randn(1, 2, 8, 8, 8)
    m_hat = torch.zeros(1, 1, 8, 8, 8)
    m_hat[..., 2:6, 2:6, 2:6] = 1.0
    wrong_outside = z.clone()
    wrong_outside[..., :2, :, :] += 3.0  # outside the mask
    assert fine_loss(wrong_outside, z, m_hat).item() == pytest.approx(0.0, abs=1e-6)
    wrong_inside = z.clone()
    wrong_inside[..., 3:5, 3:5, 3:5] += 3.0
    assert fine_loss(wrong_inside, z, m_hat).item() > 0.01
    soft = m_hat.clone().requires_grad_(True)
    z_hat = wrong_inside.clone().requires_grad_(True)
    fine_loss(z_hat, z, soft).backward()
    assert soft.grad is None and z_hat.grad[..., :2, :, :].abs().max() == 0.0  # no gradient outside the mask
