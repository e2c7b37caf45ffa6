"""Euler integration of the learned velocity field from noise (t = 0) to data (t = 1): a pure function.

No scheduler object and no hidden state: the caller passes the velocity function, the noise and the
conditioning, and gets the sample back. The convention is `tumorgen.flow`'s.
"""

from __future__ import annotations

from typing import Callable

import torch

from tumorgen.flow import interpolate, one_step_estimate

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    *,
    cond: torch.Tensor,
    steps: int,
    known: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate x' = v([x ; cond], t) from x_0 = noise with `steps` equal Euler steps; returns x_1.

    Args:
        velocity_fn: `(x_in (B, C + C_cond, ...), t (B,)) -> v (B, C, ...)`.
        noise: x_0, `(B, C, h, w, d)`.
        cond: conditioning stacked after x on the channel axis at every step (e.g. `[z_B ; B]`).
        steps: number of Euler steps N (dt = 1 / N).
        known: clean data whose path must be kept where `keep` is 1 (blended sampling, docs/METHOD.md
            section 5): `(B, K, ...)`, K <= C, replacing the first K channels. After each step those
            channels are reset to the exact path `(1 - t) noise + t known` on `keep`.
        keep: `(B, 1, ...)` weights, 1 where the known path is kept (outside the box); needs `known`.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if (known is None) != (keep is None):
        raise ValueError("known and keep must be given together")
    if cond.shape[0] != noise.shape[0] or cond.shape[2:] != noise.shape[2:]:
        raise ValueError(f"cond {tuple(cond.shape)} does not match noise {tuple(noise.shape)}")
    batch = noise.shape[0]
    k = known.shape[1] if known is not None else 0
    x = noise
    for i in range(steps):
        t = torch.full((batch,), i / steps, device=noise.device, dtype=noise.dtype)
        v = velocity_fn(torch.cat([x, cond], dim=1), t)  # (B, C, h, w, d)
        x = x + v / steps
        if known is not None:
            t_next = torch.full((batch,), (i + 1) / steps, device=noise.device, dtype=noise.dtype)
            path = interpolate(noise[:, :k], known, t_next)  # (B, K, h, w, d)
            x = torch.cat([keep * path + (1 - keep) * x[:, :k], x[:, k:]], dim=1)
    return x


def one_step_estimate_at(
    velocity_fn: VelocityFn,
    y: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
) -> torch.Tensor:
    """The model's one-step estimate of the data y from the point x_t on the path from `noise` to `y`."""
    x_t = interpolate(noise, y, t)
    v = velocity_fn(torch.cat([x_t, cond], dim=1), t)
    return one_step_estimate(x_t, v, t)
