"""The tumor's uptake as a global input of the velocity U-Net, added to its time embedding.

Why: with the uptake only as an input channel (`B * u` inside the box), a told mean SUV was followed
in direction but compressed toward the middle (IBSI: asked 8.5 -> 5.6 SUV, every ask for 8 missed).
A channel enters at the first convolution and must survive the whole encoder; an embedding added to
the time embedding reaches every residual block as a per-channel shift, the way diffusion U-Nets take
class labels (MONAI's `DiffusionModelUNet` adds its `class_embedding(class_labels)` there; we give it
this continuous embedding in place of its lookup table).

"Not told" is a value of its own, `UNTOLD` (NaN): a learned null vector here and 0 in the channel.
Training drops the uptake to it at random (`flow.uptake_dropout`), so one network gives both the told
and the untold velocity, and synthesis can steer with classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import torch
from torch import nn

from tumorgen.models.lite_diffusion_unet import get_timestep_embedding

UNTOLD = float("nan")  # an uptake that was not given (dropped in training, the unconditional branch of CFG)
UPTAKE_SCALE = 1000.0  # model-range uptake in [0, 1] -> the sinusoid's range, as flow time is scaled


def is_told(uptake: torch.Tensor) -> torch.Tensor:
    """`(B,)` bool: which uptakes were given (not `UNTOLD`)."""
    return ~torch.isnan(uptake)


class UptakeEmbedding(nn.Module):
    """`uptake (B,)` in model range, `UNTOLD` where not given -> `(B, embed_dim)`.

    A sinusoidal embedding of the uptake and a two-layer MLP, like the time embedding. The MLP's last
    layer starts at zero, so a new model begins as the channel-only one and learns how far to lean on
    this input.

    Args:
        base_channels: width of the sinusoidal features (the U-Net's first level, as for time).
        embed_dim: the time embedding's width (4 x base_channels in MONAI's U-Net).
    """

    def __init__(self, *, base_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.base_channels = base_channels
        self.mlp = nn.Sequential(nn.Linear(base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.untold = nn.Parameter(torch.zeros(embed_dim))  # learned through the dropped samples

    def forward(self, uptake: torch.Tensor) -> torch.Tensor:
        uptake = torch.as_tensor(uptake, dtype=torch.float32, device=self.untold.device).reshape(-1)
        told = is_told(uptake)  # (B,)
        features = get_timestep_embedding(torch.where(told, uptake, 0.0) * UPTAKE_SCALE, self.base_channels)
        embedded = self.mlp(features.to(self.untold.dtype))  # (B, embed_dim)
        return torch.where(told[:, None], embedded, self.untold.expand_as(embedded))


def attach_uptake_embedding(unet: nn.Module) -> nn.Module:
    """Give a MONAI `DiffusionModelUNet` (or its lite twin) the uptake embedding as its class embedding.

    Built after the network so that its other weights are initialised exactly as without it. The
    network's forward then needs `class_labels=uptake`.
    """
    base = unet.block_out_channels[0]
    unet.class_embedding = UptakeEmbedding(base_channels=base, embed_dim=4 * base)
    unet.num_class_embeds = 1  # MONAI adds `class_embedding(class_labels)` to the time embedding when set
    return unet
