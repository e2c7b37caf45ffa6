"""TumorGen's three networks as one object (`TumorGenModels`) and the U-Net's condition channels.

Modules and the shapes they exchange only: the losses are in `training.objective`, the sampler and
the refiner's crop in `synthesis.generate` / `models.refine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from tumorgen.models.refiner import MaskRefiner
from tumorgen.models.vae import latent_factor
from tumorgen.models.velocity_unet import VelocityUNet


@dataclass(kw_only=True)
class TumorGenModels:
    """The three networks of TumorGen. The VAE is frozen (no gradients, eval mode) on construction.

    Args:
        vae: the trained KL-VAE (AutoencoderKL or AutoencoderKlMaisi).
        unet: the velocity network v_theta.
        refiner: the VAE-guided mask refiner, or None (the "no VMR" ablation).
    """

    vae: nn.Module
    unet: VelocityUNet
    refiner: MaskRefiner | None = None
    factor: int = field(init=False)

    def __post_init__(self) -> None:
        self.vae.requires_grad_(False)
        self.vae.eval()
        self.factor = latent_factor(self.vae)

    def _bare_unet(self) -> VelocityUNet:
        unet = self.unet
        for wrapper_attr in ("module", "_orig_mod"):  # see through DDP and torch.compile wrappers
            unet = getattr(unet, wrapper_attr, unet)
        return unet

    @property
    def latent_channels(self) -> int:
        return self._bare_unet().out_channels - 1

    @property
    def uptake_condition(self) -> bool:
        """Whether the U-Net takes the tumor's uptake as an extra input channel (`flow.uptake_condition`)."""
        return self._bare_unet().in_channels == 2 * self.latent_channels + 3

    @property
    def uptake_embedded(self) -> bool:
        """Whether the U-Net also takes the uptake through its time embedding (`flow.uptake_embedding`)."""
        return self._bare_unet().uptake_embedded

    def velocity(self, x: torch.Tensor, t: torch.Tensor, uptake: torch.Tensor | None) -> torch.Tensor:
        """v_theta([x_t ; cond], t), handing the uptake to the U-Net when it embeds one."""
        return self.unet(x, t, uptake) if self.uptake_embedded else self.unet(x, t)

    def trainable(self) -> nn.ModuleDict:
        """The trained networks as one module: for optimizers, EMA and checkpoints (no VAE weights)."""
        modules = {"unet": self.unet}
        if self.refiner is not None:
            modules["refiner"] = self.refiner
        return nn.ModuleDict(modules)


def flow_condition(z_box: torch.Tensor, box: torch.Tensor, uptake: torch.Tensor | None,
                   models: TumorGenModels) -> torch.Tensor:
    """The U-Net's condition channels: `[z_B ; B]`, plus `B * u` when the model is uptake-conditioned.

    The uptake `u` (B,) is the tumor's mean SUV in model range (`intensity.tumor_uptake`); it is
    written inside the box only, like the box itself, so the condition stays local to the tumor. An
    `UNTOLD` (NaN) uptake writes 0: no tumor has a mean SUV of 0, so 0 means "not told".
    """
    parts = [z_box, box]
    if models.uptake_condition:
        if uptake is None:
            raise ValueError("this model is conditioned on the tumor's uptake (flow.uptake_condition): give one per sample")
        u = torch.as_tensor(uptake, dtype=box.dtype, device=box.device).reshape(-1, 1, 1, 1, 1)
        if u.shape[0] != box.shape[0]:
            raise ValueError(f"{u.shape[0]} uptake values for {box.shape[0]} samples: one each")
        parts.append(box * torch.nan_to_num(u, nan=0.0))
    elif uptake is not None:
        raise ValueError("this model was trained without flow.uptake_condition: it cannot take an uptake")
    return torch.cat(parts, dim=1)
