"""The baselines' diffusion maths against closed forms and against MONAI's schedulers."""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from tumorgen.baselines.latent_diffusion import DiffusionSchedule, add_noise, ddpm_loss, sample


def test_linear_schedule_matches_monai():
    ours = DiffusionSchedule.linear()
    monai = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta")
    assert torch.allclose(ours.alphas_cumprod.float(), monai.alphas_cumprod.float(), atol=1e-6)


def test_exact_noise_prediction_recovers_the_data_with_ddim():
    """With the true eps (known x0), DDIM lands exactly on x0 in any number of steps."""
    schedule = DiffusionSchedule.linear()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, 4, generator=g)

    def exact_eps(x_t, t01):
        abar = schedule.abar((t01 * 1000).round().long(), x_t)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    noise = torch.randn(x0.shape, generator=g)
    x_T = add_noise(schedule, x0, noise, torch.full((2,), 999))
    for steps in (1, 10, 50, 1000):
        out = sample(exact_eps, x_T, schedule=schedule, steps=steps, method="ddim")
        assert torch.allclose(out, x0, atol=1e-4)


def test_full_length_ddim_equals_monai():
    schedule = DiffusionSchedule.linear(num_train_timesteps=10)
    monai = DDIMScheduler(num_train_timesteps=10, clip_sample=False)
    monai.set_timesteps(10)
    assert [int(t) for t in monai.timesteps] == schedule.inference_timesteps(10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 3, 3, 3, generator=g)
    fixed_eps = 0.1 * torch.randn(x.shape, generator=g)
    ours = sample(lambda inp, t: fixed_eps, x, schedule=schedule, steps=10, method="ddim")
    theirs = x
    for t in monai.timesteps:
        theirs, _ = monai.step(fixed_eps, int(t), theirs)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_timesteps_are_spaced_like_monai():
    monai = DDPMScheduler(num_train_timesteps=1000)
    monai.set_timesteps(50)
    assert [int(t) for t in monai.timesteps] == DiffusionSchedule.linear().inference_timesteps(50)


def test_full_length_ddpm_step_equals_monai():
    """At all 1000 steps the strided posterior is MONAI's one-step posterior (same noise draws)."""
    schedule = DiffusionSchedule.linear(num_train_timesteps=20)
    monai = DDPMScheduler(num_train_timesteps=20, clip_sample=False)
    monai.set_timesteps(20)
    x = torch.randn(1, 1, 2, 2, 2, generator=torch.Generator().manual_seed(2))
    eps = torch.full_like(x, 0.3)
    ours = sample(lambda inp, t: eps, x, schedule=schedule, steps=20, method="ddpm",
                  generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    theirs = x
    for t in monai.timesteps:
        theirs, _ = monai.step(eps, int(t), theirs, generator=g)
    assert torch.allclose(ours, theirs, atol=1e-3)  # MONAI computes in float32, we in float64


def test_blending_keeps_the_known_region_and_loss_is_zero_for_exact_eps():
    schedule = DiffusionSchedule.linear()
    known = torch.randn(1, 2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    keep = torch.zeros(1, 1, 4, 4, 4)
    keep[..., :2] = 1
    noise = torch.randn(known.shape, generator=torch.Generator().manual_seed(4))
    out = sample(lambda inp, t: torch.zeros_like(inp), noise, schedule=schedule, steps=5, method="ddpm",
                 known=known, keep=keep, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out[..., :2], known[..., :2], atol=1e-6)
    assert not torch.allclose(out[..., 2:], known[..., 2:], atol=1e-2)

    x0 = torch.randn(3, 1, 2, 2, 2)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    t = torch.randint(0, 1000, (3,), generator=g2)
    true_noise = torch.randn(x0.shape, generator=g2)

    def oracle(x_t, t01):
        return true_noise

    assert float(ddpm_loss(oracle, x0, schedule=schedule, generator=g1)) == 0.0
