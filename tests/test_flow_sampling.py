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


from tumorgen.sampling import euler_sample, one_step_estimate_at  # noqa: E402


def _exact_velocity(noise, data, cond_channels):
    """The true velocity field of the straight path, ignoring the conditioning channels."""

    def velocity_fn(x_in, t):
        assert x_in.shape[1] == noise.shape[1] + cond_channels
        return data - noise

    return velocity_fn


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_euler_with_exact_velocity_reaches_the_data(steps):
    noise, data = _pair(shape=(2, 5, 4, 4, 4))
    cond = torch.zeros(2, 6, 4, 4, 4)
    out = euler_sample(_exact_velocity(noise, data, 6), noise, cond=cond, steps=steps)
    assert torch.allclose(out, data, atol=1e-5)


def test_euler_integrates_a_time_dependent_field_with_first_order_error():
    # v = 2t: exact x(1) = x0 + 1; Euler with N steps gives x0 + (N - 1) / N.
    noise = torch.zeros(1, 1, 2, 2, 2)
    out = euler_sample(lambda x, t: 2 * t.reshape(-1, 1, 1, 1, 1).expand_as(x[:, :1]), noise,
                       cond=torch.zeros(1, 0, 2, 2, 2), steps=4)
    assert torch.allclose(out, torch.full_like(noise, 0.75))


def test_euler_keeps_the_known_path_outside_the_box():
    noise, data = _pair(shape=(1, 5, 4, 4, 4))
    known = torch.randn(1, 5, 4, 4, 4, generator=torch.Generator().manual_seed(9))
    keep = torch.zeros(1, 1, 4, 4, 4)
    keep[..., :2] = 1.0
    out = euler_sample(_exact_velocity(noise, data, 0), noise, cond=torch.zeros(1, 0, 4, 4, 4),
                       steps=5, known=known, keep=keep)
    assert torch.allclose(out[..., :2], known[..., :2], atol=1e-5)
    assert torch.allclose(out[..., 2:], data[..., 2:], atol=1e-5)
    # only the first K channels are reset when known has fewer channels
    part = euler_sample(_exact_velocity(noise, data, 0), noise, cond=torch.zeros(1, 0, 4, 4, 4),
                        steps=5, known=known[:, :4], keep=keep)
    assert torch.allclose(part[:, 4], data[:, 4], atol=1e-5)
    with pytest.raises(ValueError):
        euler_sample(_exact_velocity(noise, data, 0), noise, cond=torch.zeros(1, 0, 4, 4, 4), steps=5, known=known)


def test_one_step_estimate_at_with_exact_velocity():
    noise, data = _pair(shape=(2, 5, 4, 4, 4))
    cond = torch.ones(2, 3, 4, 4, 4)
    y_hat = one_step_estimate_at(_exact_velocity(noise, data, 3), data, noise, torch.tensor([0.2, 0.7]), cond)
    assert torch.allclose(y_hat, data, atol=1e-5)
