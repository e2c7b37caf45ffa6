"""The rectified-flow convention (t=0 noise, t=1 data) and the Euler sampler, by expected values."""

from __future__ import annotations

import pytest
import torch

from tumorgen.flow import (
    interpolate,
    joint_target,
    one_step_estimate,
    sample_t,
    split_joint,
    velocity_target,
)


def _pair(seed=0, shape=(3, 5, 4, 4, 4)):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


def test_interpolate_endpoints():
    noise, data = _pair()
    assert torch.equal(interpolate(noise, data, torch.zeros(3)), noise)
    assert torch.equal(interpolate(noise, data, torch.ones(3)), data)
    half = interpolate(noise, data, torch.full((3,), 0.5))
    assert torch.allclose(half, (noise + data) / 2)


def test_exact_velocity_one_step_lands_on_data_from_any_t():
    noise, data = _pair()
    v = velocity_target(noise, data)
    assert torch.allclose(v, data - noise)  # sign: towards the data
    for t in (torch.tensor([0.0, 0.3, 0.99]), torch.rand(3, generator=torch.Generator().manual_seed(1))):
        x_t = interpolate(noise, data, t)
        assert torch.allclose(one_step_estimate(x_t, v, t), data, atol=1e-5)


def test_sample_t_kinds_ranges_and_determinism():
    for kind in ("logit-normal", "uniform"):
        a = sample_t(2000, kind=kind, generator=torch.Generator().manual_seed(3))
        b = sample_t(2000, kind=kind, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b)
        assert a.shape == (2000,) and (a > 0).all() and (a < 1).all()
        assert a.mean().item() == pytest.approx(0.5, abs=0.03)
    ln = sample_t(2000, kind="logit-normal", generator=torch.Generator().manual_seed(3))
    un = sample_t(2000, kind="uniform", generator=torch.Generator().manual_seed(3))
    assert ln.std() < un.std()  # logit-normal concentrates on the middle
    with pytest.raises(ValueError):
        sample_t(3, kind="cosine")


def test_joint_target_round_trip_and_ranges():
    z = torch.randn(2, 4, 3, 3, 3)
    m = torch.rand(2, 1, 3, 3, 3)
    y = joint_target(z, m, s=2.0)
    assert y.shape == (2, 5, 3, 3, 3)
    assert torch.allclose(y[:, 4], 2.0 * (2 * m[:, 0] - 1))
    z2, m2 = split_joint(y, latent_channels=4, s=2.0)
    assert torch.equal(z2, z) and torch.allclose(m2, m, atol=1e-6)
    _, clamped = split_joint(torch.full((1, 5, 2, 2, 2), 9.0), latent_channels=4)
    assert (clamped == 1).all()
