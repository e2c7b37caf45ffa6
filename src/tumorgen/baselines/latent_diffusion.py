"""Latent diffusion (DDPM objective) for the baselines: DiffTumor-style inpainting and blended latent diffusion.

The baselines share TumorGen's VAE and U-Net backbone, so that a comparison measures the generative
method and nothing else. The maths is written here as pure functions over a `DiffusionSchedule`,
rather than with MONAI's stateful schedulers, for two reasons: a sampler is then a plain function of
its inputs (no `set_timesteps()` before `step()`), and MONAI 1.6's `DDPMScheduler.step` takes the
previous timestep to be `t - 1` even when fewer inference steps are set (and its DDIM steps to
`t - T // steps` while spacing its timesteps by `(T - 1) / (steps - 1)`), which makes DDPM-50 wrong
and DDIM-50 slightly off; here both step from `t` to the next timestep actually in the list. At full
length (every timestep) the results equal MONAI's (tested); strided, exact noise predictions
recover the data exactly (tested).

Conventions (DDPM, Ho et al. 2020): `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`, the network
predicts `eps`, timesteps are integers `0 .. T-1`, the network sees `t / T` as its time input
(the shared U-Net takes a time in `[0, 1]`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (net_input, t in [0, 1]) -> eps


@dataclass(frozen=True)
class DiffusionSchedule:
    """Noise levels of a discrete diffusion: `alphas_cumprod[t]` for t = 0 .. T-1."""

    alphas_cumprod: torch.Tensor  # (T,) float64

    @classmethod
    def linear(cls, *, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2):
        """The linear beta schedule of DDPM (MONAI's default `linear_beta`)."""
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        return cls(alphas_cumprod=torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def scaled_linear(cls, *, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2):
        """Linear in sqrt(beta), the latent-diffusion choice (MONAI's `scaled_linear_beta`)."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        return cls(alphas_cumprod=torch.cumprod(1.0 - betas, dim=0))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    def abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`abar_t` broadcast to `like`'s shape; t < 0 means the clean data (abar = 1)."""
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long().reshape(-1)
        values = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], torch.ones_like(t, dtype=torch.float64))
        return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def inference_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps from T-1 (pure noise) down to 0, evenly spaced as MONAI 1.6 spaces them."""
        if not 1 <= steps <= self.num_train_timesteps:
            raise ValueError(f"steps must be in [1, {self.num_train_timesteps}], got {steps}")
        top = self.num_train_timesteps - 1
        return [int(t) for t in torch.linspace(top, 0, steps, dtype=torch.float64).round().long()]


def add_noise(schedule: DiffusionSchedule, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    abar = schedule.abar(t, x0)
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise


def ddpm_loss(
    eps_fn: EpsFn,
    x0: torch.Tensor,
    *,
    schedule: DiffusionSchedule,
    cond: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    distance: str = "mse",
) -> torch.Tensor:
    """The DDPM objective `|| eps_theta([x_t ; cond], t) - eps ||^2` with uniformly drawn integer t.

    `distance="l1"` takes the mean absolute error instead (MedFusion's objective).
    """
    if distance not in ("mse", "l1"):
        raise ValueError(f"distance must be 'mse' or 'l1', got {distance!r}")
    n = x0.shape[0]
    t = torch.randint(0, schedule.num_train_timesteps, (n,), generator=generator, device="cpu").to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device, x0.dtype)
    x_t = add_noise(schedule, x0, noise, t)
    net_in = x_t if cond is None else torch.cat([x_t, cond], dim=1)  # (B, c [+ cond], h, w, d)
    eps_hat = eps_fn(net_in, t.to(x0.dtype) / schedule.num_train_timesteps)
    return F.mse_loss(eps_hat, noise) if distance == "mse" else F.l1_loss(eps_hat, noise)


def sample(
    eps_fn: EpsFn,
    noise: torch.Tensor,
    *,
    schedule: DiffusionSchedule,
    steps: int = 50,
    method: str = "ddim",
    cond: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw `x_0` from `noise` (= x_T) in `steps` strided steps; a pure function.

    Args:
        method: "ddim" (deterministic, eta = 0) or "ddpm" (ancestral, posterior variance between the
            strided timesteps).
        cond: extra input channels concatenated after `x_t` at every call (DiffTumor's conditioning).
        known, keep: blended latent diffusion: after every step, where `keep` is 1 the sample is reset
            to `known` noised to the new level (with the same initial noise, so the known region
            follows one consistent path).
    """
    if method not in ("ddim", "ddpm"):
        raise ValueError(f"method must be 'ddim' or 'ddpm', got {method!r}")
    if (known is None) != (keep is None):
        raise ValueError("known and keep go together")
    timesteps = schedule.inference_timesteps(steps)
    x = noise
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        net_in = x if cond is None else torch.cat([x, cond], dim=1)
        eps = eps_fn(net_in, t_batch.to(x.dtype) / schedule.num_train_timesteps)
        abar_t = schedule.abar(t_batch, x)
        abar_prev = schedule.abar(torch.full_like(t_batch, t_prev), x)
        x0_hat = (x - (1.0 - abar_t).sqrt() * eps) / abar_t.sqrt()
        if method == "ddim":
            x = abar_prev.sqrt() * x0_hat + (1.0 - abar_prev).sqrt() * eps
        else:
            beta_eff = 1.0 - abar_t / abar_prev  # the one-step beta between the strided timesteps
            mean = (abar_prev.sqrt() * beta_eff / (1.0 - abar_t)) * x0_hat + (
                (1.0 - beta_eff).sqrt() * (1.0 - abar_prev) / (1.0 - abar_t)
            ) * x
            if t_prev >= 0:
                var = (1.0 - abar_prev) / (1.0 - abar_t) * beta_eff
                z = torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
                x = mean + var.clamp(min=1e-20).sqrt() * z
            else:
                x = mean
        if known is not None:
            x_known = abar_prev.sqrt() * known + (1.0 - abar_prev).sqrt() * noise
            x = keep * x_known + (1.0 - keep) * x
    return x
