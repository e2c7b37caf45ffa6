"""MedFusion (Mueller-Franzes et al. 2023, "A multimodal comparison of latent denoising diffusion
probabilistic models and generative adversarial networks for medical image synthesis", Sci. Rep.):
its VAE, its loss, its noise schedule and its denoising objective, in 3D, as an inpainting baseline.

What makes it MedFusion and not DiffTumor (the reference code is mueller-franzes/medfusion:
`latent_embedders.VAE`, `DiffusionPipeline`, `GaussianNoiseScheduler`, `scripts/`):
- its own VAE, trained in the same run (`medfusion_stage`), not TumorGen's frozen KL-VAE: 8 latent
  channels (TumorGen's 4); residual blocks of two conv-GroupNorm-Swish units with a 1x1 skip, the
  second unit's convolution zero-initialised; strided convolutions down, transposed convolutions up,
  a zero-initialised 1x1 output convolution; images in [-1, 1]; a deep-supervision head at the next
  coarser decoder scale. Loss: pixel MSE + (1 - SSIM), per sample summed over voxels, at every
  output (the deep-supervised one against the nearest-downsampled image) + 1e-6 x the KL summed
  over latent voxels; no tumor weighting;
- latents as the reference's diffusion sees them: a posterior *sample* at every step (its encoder
  samples), unscaled (no latent scale factor: its pipeline does not centre or scale latents);
- its schedule: scaled-linear betas from 0.002 to 0.02 over T = 1000 (the LDM values DiffTumor uses
  here are 0.0015 -> 0.0195);
- its objective: the network predicts the noise (`estimator_objective="x_T"`) under an **L1** loss
  (`DiffusionPipeline`'s default), where DiffTumor's DDPM uses MSE;
- its sampler: DDIM with eta = 1 over 150 steps (`scripts/sample.py`); DDIM with eta = 1 is DDPM's
  ancestral step between the strided timesteps, our "ddpm" method (`medfusion.sample_method`).

What changed, and why:
- 3D, and the VAE's levels and widths are TumorGen's VAE's (`vae.channels`): the same compression
  (f = 2 on the ibsi preset) and about the same size, so only MedFusion's design differs. Its 2D
  setting compresses 8x, which would leave a 32^3 window 4^3 latents;
- no LPIPS term: it is a 2D ImageNet network, with no 3D counterpart that needs no download;
- no GAN fine-tuning of the VAE: the released VAE script trains a plain VAE (the VAEGAN is optional);
- conditioned on the erased window as DiffTumor is: the denoiser sees `[z_t ; z (1 - m) ; m]` instead
  of a class-label embedding, and its latents outside the mask are pasted back from the scan at the
  end (`difftumor.sample_difftumor`); so no classifier-free guidance, which serves the label (no
  sample should be drawn without the scan around it);
- self-conditioning is left out: the reference implements it but its training scripts switch it off;
- the denoiser is TumorGen's U-Net at the `flow` section's size, as for DiffTumor and BLD (MedFusion's
  own U-Net is a plain residual U-Net of the same kind), so the backbone is the same for every method.
As DiffTumor does, MedFusion places a real training tumor's mask from the run's mask bank into the box
and generates the image inside it; the mask is not generated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tumorgen.baselines.difftumor import inpainting_condition
from tumorgen.baselines.latent_diffusion import DiffusionSchedule, EpsFn, ddpm_loss
from tumorgen.config import Config, MedFusionConfig
from tumorgen.losses import kl_divergence, ssim3d

SSIM_WINDOW = 11  # pytorch_msssim's default Gaussian window (sigma 1.5), which the reference uses
LOGVAR_RANGE = (-30.0, 20.0)  # the reference clamps the posterior's log-variance to this


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResUnit(nn.Module):
    """MedFusion's BasicResBlock: conv-GroupNorm-Swish plus a 1x1 (or identity) skip."""

    def __init__(self, cin: int, cout: int, *, groups: int, zero: bool = False):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        if zero:  # the reference zero-initialises the last unit of a block: it starts as its skip
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)
        self.norm = _norm(cout, groups)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.conv(x))) + self.skip(x)


def res_block(cin: int, cout: int, *, groups: int) -> nn.Sequential:
    """MedFusion's UnetResBlock: two residual units, the second zero-initialised."""
    return nn.Sequential(ResUnit(cin, cout, groups=groups), ResUnit(cout, cout, groups=groups, zero=True))


def _zero_conv(cin: int, cout: int) -> nn.Conv3d:
    conv = nn.Conv3d(cin, cout, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class MedFusionVAE(nn.Module):
    """MedFusion's VAE in 3D: `encode(x in [0, 1]) -> (mu, sigma)`, `decode(z) -> x in [0, 1]`.

    `encode` and `decode` take and give the model's intensity range, so the baselines' generic code
    (`models.vae.encode_mean`, `decode`) runs it like TumorGen's VAE; `forward` works in [-1, 1], the
    reference's range, and also returns the deep-supervision outputs and the posterior for the loss.

    Args:
        channels: widths per level; `len(channels) - 1` 2x downsamplings (f = 2^that).
        latent_channels: the latent's channels (MedFusion: 8).
        groups: GroupNorm groups (MedFusion: 8).
        deep_supervision: extra outputs at the next-coarser decoder scales.
    """

    def __init__(self, *, channels: tuple[int, ...], latent_channels: int, groups: int, deep_supervision: int):
        super().__init__()
        ch = list(channels)
        self.factor = 2 ** (len(ch) - 1)
        self.inc = res_block(1, ch[0], groups=groups)
        self.downs = nn.ModuleList(nn.Sequential(nn.Conv3d(ch[i - 1], ch[i], 3, stride=2, padding=1),
                                                 res_block(ch[i], ch[i], groups=groups)) for i in range(1, len(ch)))
        self.out_enc = nn.Sequential(nn.Conv3d(ch[-1], 2 * latent_channels, 3, padding=1),
                                     nn.Conv3d(2 * latent_channels, 2 * latent_channels, 1))
        self.inc_dec = res_block(latent_channels, ch[-1], groups=groups)
        # ups[i]: level i + 1 -> level i (applied from the coarsest level down)
        self.ups = nn.ModuleList(nn.Sequential(nn.ConvTranspose3d(ch[i + 1], ch[i], 2, stride=2),
                                               res_block(ch[i], ch[i], groups=groups)) for i in range(len(ch) - 1))
        self.outc = _zero_conv(ch[0], 1)
        self.outc_deep = nn.ModuleList(_zero_conv(ch[i], 1) for i in range(1, deep_supervision + 1))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [-1, 1] `(B, 1, X, Y, Z)` -> (mu, sigma) `(B, c, X/f, Y/f, Z/f)`."""
        h = self.inc(x)
        for down in self.downs:
            h = down(h)
        mu, logvar = self.out_enc(h).chunk(2, dim=1)
        return mu, torch.exp(0.5 * logvar.clamp(*LOGVAR_RANGE))

    def decode_pm(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Latents -> (image in [-1, 1], the deep-supervision outputs, finest first)."""
        h = self.inc_dec(z)
        deep = []
        for i in range(len(self.ups) - 1, -1, -1):
            if i < len(self.outc_deep):  # h is at level i + 1 here
                deep.append(self.outc_deep[i](h))
            h = self.ups[i](h)
        return self.outc(h), deep[::-1]

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        """x in [-1, 1], `noise` like the latents -> (reconstruction, deep outputs, mu, sigma)."""
        mu, sigma = self.posterior(x)
        recon, deep = self.decode_pm(mu + sigma * noise)
        return recon, deep, mu, sigma

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in [0, 1] -> (mu, sigma): the posterior of `2 x - 1`."""
        return self.posterior(2.0 * x - 1.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> image in [0, 1] (unclamped)."""
        return (self.decode_pm(z)[0] + 1.0) / 2.0


def build_medfusion_vae(cfg: Config) -> MedFusionVAE:
    """MedFusion's VAE with TumorGen's VAE's levels and widths (`vae` section) and MedFusion's latent."""
    m = cfg.medfusion
    return MedFusionVAE(channels=cfg.vae.channels, latent_channels=m.latent_channels,
                        groups=cfg.vae.norm_num_groups, deep_supervision=m.deep_supervision)


def _reconstruction(pred: torch.Tensor, target: torch.Tensor, *, ssim_weight: float, voxels: int) -> torch.Tensor:
    """The reference's per-sample sum over voxels of MSE + (1 - SSIM), divided by the window's voxels."""
    mse = F.mse_loss(pred, target, reduction="none").flatten(1).sum(1)  # (B,)
    ssim = ssim3d(((pred + 1) / 2).clamp(0, 1), (target + 1) / 2, window=SSIM_WINDOW, data_range=1.0,
                  reduction="none")  # (B,)
    return ((mse + ssim_weight * (1.0 - ssim) * pred[0].numel()) / voxels).mean()


def medfusion_vae_loss(vae: MedFusionVAE, x: torch.Tensor, noise: torch.Tensor, cfg: MedFusionConfig
                       ) -> dict[str, torch.Tensor]:
    """The VAE's loss on windows `x` in [0, 1], with the posterior's noise given.

    The reference sums its terms over voxels per sample; dividing the total by the window's voxel
    count keeps every relative weight (deep outputs count their fewer voxels, the KL is 1e-6 of a
    voxel sum) and puts the loss on the scale the shared loop's learning rate and clipping expect.
    """
    target = 2.0 * x - 1.0  # (B, 1, X, Y, Z) in [-1, 1]
    voxels = target[0].numel()
    recon, deep, mu, sigma = vae(target, noise)
    rec = _reconstruction(recon, target, ssim_weight=cfg.ssim_weight, voxels=voxels)
    for out in deep:
        small = F.interpolate(target, size=out.shape[2:], mode="nearest-exact")
        rec = rec + _reconstruction(out, small, ssim_weight=cfg.ssim_weight, voxels=voxels)
    kl = kl_divergence(mu, sigma)
    return {"loss": rec + cfg.kl_weight * kl / voxels, "rec": rec, "kl": kl,
            "l1": (recon - target).abs().mean() / 2.0}  # l1 in the model's [0, 1] range, for comparison


def medfusion_schedule(cfg: MedFusionConfig) -> DiffusionSchedule:
    """MedFusion's noise schedule: scaled-linear betas `beta_start` -> `beta_end` (0.002 -> 0.02)."""
    return DiffusionSchedule.scaled_linear(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                                           beta_end=cfg.beta_end)


def medfusion_loss(eps_fn: EpsFn, z: torch.Tensor, m: torch.Tensor, *, schedule: DiffusionSchedule,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """MedFusion's objective: L1 between the predicted and the true noise, on unscaled latents `z`
    `(B, c, h, w, d)`, conditioned as DiffTumor is (`[z_t ; z (1 - m) ; m]`, latent masks `m`)."""
    return ddpm_loss(eps_fn, z, schedule=schedule, cond=inpainting_condition(z, m), generator=generator,
                     distance="l1")
