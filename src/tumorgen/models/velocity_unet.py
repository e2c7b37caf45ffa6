"""The Spatial-Constraint Vector Field Estimator (SC-VFE): v_theta([x_t ; z_B ; B], t).

A 3D U-Net with a sinusoidal time embedding (MONAI's `DiffusionModelUNet`). Its input stacks the noisy
joint state x_t (c latent channels + 1 mask channel), the scan's latents with the box removed z_B
(c channels) and the box indicator B (1 channel): 2c + 2 channels in, c + 1 out (docs/METHOD.md
section 2). With `flow.uptake_embedding` the tumor's uptake also enters as a global input, added to
the time embedding (`models.uptake_embedding`). The baselines reuse it with other channel counts.
"""

from __future__ import annotations

import torch
from torch import nn

from tumorgen.models.lite_diffusion_unet import LiteDiffusionModelUNet
from tumorgen.models.uptake_embedding import attach_uptake_embedding

# Flow time t in [0, 1] is scaled to MONAI's timestep range [0, 1000] before the sinusoidal embedding,
# whose lowest frequencies were designed for integer steps up to about 1000.
TIME_SCALE = 1000.0


class VelocityUNet(nn.Module):
    """A `DiffusionModelUNet` taking flow time t in [0, 1] as a float tensor `(B,)`.

    Args:
        unet: the wrapped network, MONAI's `DiffusionModelUNet` or its MONAI-free twin `LiteDiffusionModelUNet`.
    """

    def __init__(self, *, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.in_channels = unet.in_channels
        self.out_channels = unet.out_channels

    @property
    def uptake_embedded(self) -> bool:
        """Whether the network takes the tumor's uptake through its time embedding (`uptake=` in forward)."""
        return getattr(self.unet, "class_embedding", None) is not None

    def forward(self, x: torch.Tensor, t: torch.Tensor, uptake: torch.Tensor | None = None) -> torch.Tensor:
        """`x` `(B, in, h, w, d)`, `t` `(B,)` in [0, 1] -> `(B, out, h, w, d)`.

        The timestep stays float32 (MONAI's embedding calls `.float()`): float16 would round
        t * 1000 to steps of up to 0.5 and lose the fine times near t = 1. `uptake` `(B,)` in model
        range (`UNTOLD` where not given) is required by a network with the uptake embedding and refused
        by one without.
        """
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        if not self.uptake_embedded:
            if uptake is not None:
                raise ValueError("this network has no uptake embedding: it takes no uptake")
            return self.unet(x, timesteps=t * TIME_SCALE)
        if uptake is None:
            raise ValueError("this network embeds the tumor's uptake: give one per sample (UNTOLD where not known)")
        uptake = torch.as_tensor(uptake, device=x.device, dtype=torch.float32).reshape(-1)
        if uptake.shape != (x.shape[0],):
            raise ValueError(f"uptake must have shape ({x.shape[0]},), got {tuple(uptake.shape)}")
        return self.unet(x, timesteps=t * TIME_SCALE, class_labels=uptake)


def build_velocity_unet(
    *,
    latent_channels: int = 4,
    channels: tuple[int, ...] = (32, 64, 128),
    attention_levels: tuple[bool, ...] = (False, False, False),
    num_res_blocks: int = 1,
    num_head_channels: int = 32,
    norm_num_groups: int = 16,
    in_channels: int | None = None,
    out_channels: int | None = None,
    lite: bool = False,
    uptake_embedding: bool = False,
) -> VelocityUNet:
    """Build the SC-VFE network.

    Args:
        latent_channels: c; the default input is 2c + 2 channels and the output c + 1.
        channels: channels per U-Net level; each level after the first halves the grid, so the latent
            size must be divisible by 2 ** (len(channels) - 1).
        attention_levels: self-attention per level (off by default: costly on a CPU in 3D).
        num_res_blocks: residual blocks per level.
        num_head_channels: channels per attention head, where attention is on.
        norm_num_groups: GroupNorm groups; must divide every entry of `channels`.
        in_channels, out_channels: overrides for other uses of the backbone (the DDPM baselines).
        lite: wrap `LiteDiffusionModelUNet`, the pure-PyTorch twin of MONAI's network (same weights, same
            outputs), without importing MONAI: for inference.
        uptake_embedding: add the tumor's uptake to the time embedding (`models.uptake_embedding`).
    """
    if len(attention_levels) != len(channels):
        raise ValueError(f"attention_levels {attention_levels} must have one entry per level of {channels}")
    if lite:
        network = LiteDiffusionModelUNet
    else:
        from monai.networks.nets import DiffusionModelUNet  # seconds to import: training only

        network = DiffusionModelUNet
    unet = network(
        spatial_dims=3,
        in_channels=in_channels if in_channels is not None else 2 * latent_channels + 2,
        out_channels=out_channels if out_channels is not None else latent_channels + 1,
        num_res_blocks=(num_res_blocks,) * len(channels),
        channels=tuple(channels),
        attention_levels=tuple(attention_levels),
        norm_num_groups=norm_num_groups,
        num_head_channels=num_head_channels,
    )
    if uptake_embedding:
        attach_uptake_embedding(unet)
    return VelocityUNet(unet=unet)
