"""Blended latent diffusion (Avrahami et al. 2023) on TumorGen's VAE and U-Net backbone.

An unconditional latent denoiser `eps_theta(z_t, t)` (c channels in, c out) is trained with the DDPM
objective on the latents of real tumor cases. To put a tumor into a scan, sampling starts from noise
and after every step the latents outside the mask are reset to the scan's latents noised to the new
level (`latent_diffusion.sample`'s `known` / `keep`), so only the inside of the mask is generated and
the final latents equal the scan's outside it. The output mask is the given (placed) one.
"""

from __future__ import annotations

import torch

from tumorgen.baselines.latent_diffusion import DiffusionSchedule, EpsFn, ddpm_loss, sample


def bld_loss(eps_fn: EpsFn, z: torch.Tensor, *, schedule: DiffusionSchedule,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The unconditional DDPM loss on scaled latents `z` `(B, c, h, w, d)`."""
    return ddpm_loss(eps_fn, z, schedule=schedule, generator=generator)


def sample_bld(eps_fn: EpsFn, z: torch.Tensor, m: torch.Tensor, noise: torch.Tensor, *,
               schedule: DiffusionSchedule, steps: int = 50, method: str = "ddim",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Generate inside the latent mask `m` `(B, 1, h, w, d)`, blending the known `z` `(B, c, h, w, d)` outside.

    Args:
        eps_fn: the unconditional denoiser `(x_t (B, c, ...), t in [0, 1]) -> eps`.
        z: the scan's scaled latents.
        m: binary latent mask, 1 where the tumor is generated.
        noise: `x_T` `(B, c, h, w, d)`; the known region is noised with it too.
        steps, method: DDPM-N ("ddpm") or DDIM-N ("ddim").
        generator: the source of DDPM's per-step noise.
    """
    keep = (1.0 - m).expand_as(z)  # (B, c, h, w, d)
    return sample(eps_fn, noise, schedule=schedule, steps=steps, method=method, known=z, keep=keep,
                  generator=generator)
