"""DiffTumor-style latent diffusion inpainting (Chen et al. 2024), on TumorGen's VAE and U-Net backbone.

DiffTumor generates a tumor inside a *given* mask: its denoiser sees the noisy latents, the scan's
latents with the mask region removed, and the mask, `eps_theta([z_t ; z (1 - m) ; m], t)` (2c + 1
channels in, c out), trained with the DDPM objective on real tumor cases whose mask is their own
tumor. At sampling the latents outside the mask are pasted back from the scan, the image is decoded,
and the output mask is the given one (DiffTumor does not generate masks).

The latent mask is the image mask max-pooled over each f^3 cell (avg-pool > 0): a latent cell that
holds any tumor voxel is generated, so the whole real-shaped mask lies inside the generated region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tumorgen.baselines.latent_diffusion import DiffusionSchedule, EpsFn, ddpm_loss, sample


def latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Image-grid mask `(B, 1, X, Y, Z)` -> binary latent mask `(B, 1, X/f, Y/f, Z/f)`: 1 where any voxel is set."""
    dtype = mask.dtype if mask.is_floating_point() else torch.float32
    return (F.max_pool3d((mask > 0).to(dtype), kernel_size=factor) > 0).to(dtype)


def inpainting_condition(z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The conditioning channels `[z (1 - m) ; m]`: `(B, c + 1, h, w, d)`."""
    return torch.cat([z * (1.0 - m), m], dim=1)  # (B, c + 1, h, w, d)


def difftumor_loss(eps_fn: EpsFn, z: torch.Tensor, m: torch.Tensor, *, schedule: DiffusionSchedule,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM loss of the inpainting denoiser on scaled latents `z` `(B, c, h, w, d)`, latent masks `m` `(B, 1, ...)`."""
    return ddpm_loss(eps_fn, z, schedule=schedule, cond=inpainting_condition(z, m), generator=generator)


def sample_difftumor(eps_fn: EpsFn, z: torch.Tensor, m: torch.Tensor, noise: torch.Tensor, *,
                     schedule: DiffusionSchedule, steps: int = 50, method: str = "ddim",
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Inpaint the latents inside `m`; outside it the result is exactly `z` (pasted back).

    Args:
        eps_fn: the denoiser `(net_input (B, 2c + 1, ...), t in [0, 1]) -> eps (B, c, ...)`.
        z: the scan's scaled latents `(B, c, h, w, d)`.
        m: binary latent mask `(B, 1, h, w, d)`, 1 where the tumor is generated.
        noise: `x_T` `(B, c, h, w, d)`.
        steps, method: DDPM-N ("ddpm") or DDIM-N ("ddim").
        generator: the source of DDPM's per-step noise.
    """
    x0 = sample(eps_fn, noise, schedule=schedule, steps=steps, method=method, cond=inpainting_condition(z, m),
                generator=generator)
    return m * x0 + (1.0 - m) * z
