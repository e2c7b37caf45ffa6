"""MedFusion (baselines/medfusion.py): its VAE's shapes and loss, its schedule and its L1 objective."""

from __future__ import annotations

import torch

from tumorgen.baselines.latent_diffusion import DiffusionSchedule
from tumorgen.baselines.medfusion import (
    build_medfusion_vae, medfusion_loss, medfusion_schedule, medfusion_vae_loss,
)
from tumorgen.config import MedFusionConfig, load_config


# ------------------------------------------------------------------------------------------ maths


def test_the_vae_has_medfusions_latent_and_outputs_and_starts_at_mid_grey():
    cfg = load_config("ibsi")  # vae.channels (16, 32): f = 2
    vae = build_medfusion_vae(cfg)
    assert vae.factor == 2
    x = torch.rand(2, 1, 32, 32, 32)
    mu, sigma = vae.encode(x)
    assert mu.shape == sigma.shape == (2, 8, 16, 16, 16) and (sigma > 0).all()
    recon, deep, _, _ = vae(2 * x - 1, torch.zeros_like(mu))
    assert recon.shape == x.shape and [d.shape for d in deep] == [(2, 1, 16, 16, 16)], "one deep-supervised scale"
    assert torch.equal(vae.decode(mu), torch.full_like(x, 0.5)), "zero-initialised outputs: [-1, 1]'s 0 is 0.5"
    losses = medfusion_vae_loss(vae, x, torch.zeros_like(mu), cfg.medfusion)
    assert set(losses) == {"loss", "rec", "kl", "l1"} and torch.isfinite(losses["loss"])
    expected = losses["rec"] + cfg.medfusion.kl_weight * losses["kl"] / x[0].numel()
    assert torch.isclose(losses["loss"], expected)


def test_the_schedule_and_the_l1_noise_objective():
    schedule = medfusion_schedule(MedFusionConfig())
    assert schedule.num_train_timesteps == 1000
    assert torch.isclose(schedule.alphas_cumprod[0], torch.tensor(1 - 0.002, dtype=torch.float64))
    ldm = DiffusionSchedule.scaled_linear(beta_start=0.0015, beta_end=0.0195)
    assert schedule.alphas_cumprod[-1] < ldm.alphas_cumprod[-1], "noisier than DiffTumor's LDM schedule"
    z = torch.randn(3, 8, 4, 4, 4)
    m = (torch.rand(3, 1, 4, 4, 4) > 0.5).float()
    seen = {}

    def exact_plus(offset):
        def eps_fn(x, t):  # recovers the noise from x_t and the clean latents, then adds `offset`
            seen["channels"] = x.shape[1]
            steps = (t * schedule.num_train_timesteps).round().long()
            abar = schedule.abar(steps, z)
            return (x[:, :8] - abar.sqrt() * z) / (1 - abar).sqrt() + offset
        return eps_fn

    g = torch.Generator().manual_seed(0)
    assert medfusion_loss(exact_plus(0.0), z, m, schedule=schedule, generator=g) < 1e-6
    assert seen["channels"] == 17, "[z_t ; z (1 - m) ; m], as DiffTumor's denoiser"
    error = medfusion_loss(exact_plus(0.3), z, m, schedule=schedule, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(error, torch.tensor(0.3), atol=1e-5), "L1: the mean absolute error, not its square"
