"""Rectified-flow maths for TumorGen, written once so the loss and the sampler cannot disagree.

The one convention (docs/METHOD.md section 2):

    t = 0 is noise, t = 1 is data
    x_t = (1 - t) * eps + t * y          (straight path from noise eps to data y)
    v   = y - eps                        (its constant velocity: the regression target)
    y   = x_t + (1 - t) * v              (one-step estimate of the data from any t)

Euler integration from t = 0 to t = 1 with `x <- x + dt * v` therefore moves noise towards data.
`y` is the joint target `[z ; s (2m - 1)]`: image latents and the latent mask mapped to `[-s, s]`.
Every `t` here is a float tensor of shape `(B,)` and is broadcast over `(B, C, ...)`.
"""

from __future__ import annotations

import torch

TIME_SAMPLINGS = ("logit-normal", "uniform")


def _broadcast_t(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample time `(B,)` to `(B, 1, 1, ...)` so it multiplies `like`."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"t must have shape (B,) with B={like.shape[0]}, got {tuple(t.shape)}")
    return t.reshape(-1, *([1] * (like.ndim - 1)))  # (B, 1, 1, 1, 1)


def sample_t(
    n: int,
    *,
    kind: str = "logit-normal",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw `n` training times in (0, 1).

    Args:
        n: how many times to draw.
        kind: "logit-normal" (sigmoid of N(0, 1), Esser et al. 2024: more weight on the middle of the
            path, where the velocity is hardest to predict) or "uniform".
        generator: the seeded source of randomness; without it torch's default generator is used.
        device: where the result lives (the generator must live on the same device).
    """
    if kind not in TIME_SAMPLINGS:
        raise ValueError(f"time sampling must be one of {TIME_SAMPLINGS}, got {kind!r}")
    if kind == "uniform":
        return torch.rand(n, generator=generator, device=device)
    return torch.sigmoid(torch.randn(n, generator=generator, device=device))


def interpolate(noise: torch.Tensor, data: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point x_t = (1 - t) * noise + t * data on the straight path."""
    tb = _broadcast_t(t, data)
    return (1.0 - tb) * noise + tb * data


def velocity_target(noise: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """The constant velocity of the straight path, data - noise."""
    return data - noise


def one_step_estimate(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The data predicted from x_t and a velocity by one Euler step of length 1 - t (paper eq. 1)."""
    return x_t + (1.0 - _broadcast_t(t, x_t)) * v


def joint_target(z: torch.Tensor, m: torch.Tensor, *, s: float = 1.0) -> torch.Tensor:
    """Stack latents `(B, c, ...)` and a latent mask `(B, 1, ...)` in [0, 1] into `(B, c + 1, ...)`.

    Args:
        z: scaled image latents.
        m: mask on the latent grid, values in [0, 1].
        s: the mask channel's half range: the mask is mapped to [-s, s], comparable to the latents.
    """
    if m.shape[1] != 1 or m.shape[0] != z.shape[0] or m.shape[2:] != z.shape[2:]:
        raise ValueError(f"mask {tuple(m.shape)} does not match latents {tuple(z.shape)} with one channel")
    return torch.cat([z, s * (2.0 * m - 1.0)], dim=1)  # (B, c + 1, h, w, d)


def split_joint(y: torch.Tensor, *, latent_channels: int, s: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Undo `joint_target`: `(B, c + 1, ...)` -> latents `(B, c, ...)`, mask `(B, 1, ...)` clamped to [0, 1]."""
    if y.shape[1] != latent_channels + 1:
        raise ValueError(f"expected {latent_channels + 1} channels, got {y.shape[1]}")
    z = y[:, :latent_channels]
    m = ((y[:, latent_channels:] / s + 1.0) / 2.0).clamp(0.0, 1.0)
    return z, m
