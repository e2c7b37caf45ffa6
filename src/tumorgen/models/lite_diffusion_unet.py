"""A pure-PyTorch twin of MONAI 1.6's `DiffusionModelUNet`, for inference without importing MONAI.

Why: `import monai` costs seconds that `tumorgen synthesize` would pay for one U-Net. Training keeps
MONAI's network; this one mirrors its module tree and parameter names (`conv_in.conv.weight`,
`time_embed.0.weight`, `down_blocks.N.resnets.M...`, `middle_block.attention.attn.to_q.weight`,
`up_blocks.N.upsampler.postconv.conv.weight`, `out.2.conv.weight`), so the same state_dict loads
strictly into either, and its forward pass is MONAI's computation, timestep embedding included. Modules
are built in MONAI's order, so a seeded initialisation also gives MONAI's initial weights.

Reproduced: the unconditioned network `build_velocity_unet` builds, i.e. MONAI's defaults except the
arguments it passes: self-attention in the levels of `attention_levels` (`AttnDownBlock`/`AttnUpBlock`)
and, as MONAI always does without conditioning, in the middle block (`AttnMidBlock`, with the last
level's `num_head_channels`). Not reproduced: cross-attention conditioning (`with_conditioning`),
class embeddings, `resblock_updown` and ControlNet residuals, which our builders never use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from tumorgen.models.lite_blocks import (
    Convolution,
    SpatialAttentionBlock,
    Upsample,
    check_spatial_dims,
    zero_parameters,
)


def get_timestep_embedding(timesteps: torch.Tensor, embedding_dim: int, max_period: int = 10000) -> torch.Tensor:
    """MONAI's sinusoidal embedding, in float32: `(N,)` -> `(N, embedding_dim)`, [cos | sin]."""
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be a 1-d tensor, got shape {tuple(timesteps.shape)}")
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half_dim, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / half_dim)
    args = timesteps[:, None].float() * freqs[None, :]  # (N, half_dim)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if embedding_dim % 2 == 1:
        embedding = nn.functional.pad(embedding, (0, 1, 0, 0))
    return embedding


class DiffusionUNetResnetBlock(nn.Module):
    """MONAI's `DiffusionUNetResnetBlock` (no up/down): GroupNorm-SiLU-conv, + time projection, GroupNorm-SiLU-conv."""

    def __init__(
        self, *, spatial_dims: int, in_channels: int, out_channels: int, temb_channels: int, norm_num_groups: int,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.norm1 = nn.GroupNorm(num_groups=norm_num_groups, num_channels=in_channels, eps=norm_eps, affine=True)
        self.nonlinearity = nn.SiLU()
        self.conv1 = Convolution(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                                 kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(num_groups=norm_num_groups, num_channels=out_channels, eps=norm_eps, affine=True)
        self.conv2 = zero_parameters(Convolution(spatial_dims=spatial_dims, in_channels=out_channels,
                                                 out_channels=out_channels, kernel_size=3, padding=1))
        self.skip_connection: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else Convolution(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                             kernel_size=1, padding=0)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        temb = self.time_emb_proj(self.nonlinearity(emb))  # (B, C)
        h = h + temb.reshape(*temb.shape, *(1,) * self.spatial_dims)  # (B, C, 1, 1, 1)
        h = self.conv2(self.nonlinearity(self.norm2(h)))
        return self.skip_connection(x) + h


class DiffusionUnetDownsample(nn.Module):
    """MONAI's `DiffusionUnetDownsample(use_conv=True)`: a stride-2 3-wide conv under `op`."""

    def __init__(self, *, spatial_dims: int, num_channels: int) -> None:
        super().__init__()
        self.op = Convolution(spatial_dims=spatial_dims, in_channels=num_channels, out_channels=num_channels,
                              kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        del emb
        return self.op(x)  # (B, C, *S/2)


def _resnets_and_attentions(
    *, with_attn: bool, in_channels: Sequence[int], spatial_dims: int, out_channels: int, temb_channels: int,
    num_head_channels: int, norm_num_groups: int, norm_eps: float,
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """A level's residual blocks and, where it has attention, one attention after each (else an empty list).

    Built interleaved (resnet, attention, resnet, ...) as MONAI builds them, so a seeded initialisation
    draws the same random numbers in the same order and gives MONAI's initial weights.
    """
    norm = dict(norm_num_groups=norm_num_groups, norm_eps=norm_eps)
    resnets, attentions = nn.ModuleList(), nn.ModuleList()
    for channels in in_channels:
        resnets.append(DiffusionUNetResnetBlock(spatial_dims=spatial_dims, in_channels=channels,
                                                out_channels=out_channels, temb_channels=temb_channels, **norm))
        if with_attn:
            attentions.append(SpatialAttentionBlock(spatial_dims=spatial_dims, num_channels=out_channels,
                                                    num_head_channels=num_head_channels, **norm))
    return resnets, attentions


class DownBlock(nn.Module):
    """MONAI's `DownBlock` (`with_attn=False`) and `AttnDownBlock` (`with_attn=True`): same keys as each."""

    def __init__(
        self, *, spatial_dims: int, in_channels: int, out_channels: int, temb_channels: int, num_res_blocks: int,
        norm_num_groups: int, norm_eps: float, add_downsample: bool, with_attn: bool, num_head_channels: int,
    ) -> None:
        super().__init__()
        resnets, attentions = _resnets_and_attentions(
            with_attn=with_attn, in_channels=[in_channels] + [out_channels] * (num_res_blocks - 1),
            spatial_dims=spatial_dims, out_channels=out_channels, temb_channels=temb_channels,
            num_head_channels=num_head_channels, norm_num_groups=norm_num_groups, norm_eps=norm_eps,
        )
        # attentions before resnets: MONAI's `AttnDownBlock` registers them in this order (state_dict key order)
        self.attentions = attentions
        self.resnets = resnets
        self.downsampler = (
            DiffusionUnetDownsample(spatial_dims=spatial_dims, num_channels=out_channels) if add_downsample else None
        )

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the block's output and every intermediate state for the skip connections."""
        states = []
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if len(self.attentions):
                h = self.attentions[i](h)
            states.append(h)
        if self.downsampler is not None:
            h = self.downsampler(h, temb)
            states.append(h)
        return h, states


class AttnMidBlock(nn.Module):
    """MONAI's `AttnMidBlock`: resnet, self-attention, resnet at the coarsest resolution."""

    def __init__(
        self, *, spatial_dims: int, in_channels: int, temb_channels: int, norm_num_groups: int, norm_eps: float,
        num_head_channels: int,
    ) -> None:
        super().__init__()
        res = dict(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=in_channels,
                   temb_channels=temb_channels, norm_num_groups=norm_num_groups, norm_eps=norm_eps)
        self.resnet_1 = DiffusionUNetResnetBlock(**res)
        self.attention = SpatialAttentionBlock(spatial_dims=spatial_dims, num_channels=in_channels,
                                               num_head_channels=num_head_channels, norm_num_groups=norm_num_groups,
                                               norm_eps=norm_eps)
        self.resnet_2 = DiffusionUNetResnetBlock(**res)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.resnet_2(self.attention(self.resnet_1(h, temb)), temb)


class UpBlock(nn.Module):
    """MONAI's `UpBlock` (`with_attn=False`) and `AttnUpBlock` (`with_attn=True`): same keys as each."""

    def __init__(
        self, *, spatial_dims: int, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int,
        num_res_blocks: int, norm_num_groups: int, norm_eps: float, add_upsample: bool, with_attn: bool,
        num_head_channels: int,
    ) -> None:
        super().__init__()
        resnet_in_channels = [
            (prev_output_channel if i == 0 else out_channels)  # the path coming up
            + (in_channels if i == num_res_blocks - 1 else out_channels)  # the skip concatenated to it
            for i in range(num_res_blocks)
        ]
        self.resnets, self.attentions = _resnets_and_attentions(
            with_attn=with_attn, in_channels=resnet_in_channels, spatial_dims=spatial_dims,
            out_channels=out_channels, temb_channels=temb_channels, num_head_channels=num_head_channels,
            norm_num_groups=norm_num_groups, norm_eps=norm_eps,
        )
        self.upsampler = Upsample(spatial_dims=spatial_dims, channels=out_channels) if add_upsample else None

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        """`skips` holds this block's skip states in the order they were made; they are used last first."""
        for i, resnet in enumerate(self.resnets):
            h = torch.cat([h, skips[-1 - i]], dim=1)  # (B, C_h + C_skip, *S)
            h = resnet(h, temb)
            if len(self.attentions):
                h = self.attentions[i](h)
        if self.upsampler is not None:
            h = self.upsampler(h, temb)
        return h


class LiteDiffusionModelUNet(nn.Module):
    """MONAI's unconditioned `DiffusionModelUNet` (same arguments, defaults and state_dict keys) in plain torch.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels, out_channels: channels in and out.
        num_res_blocks: residual blocks per level (an int is used for every level); the up path has one more.
        channels: channels per level; each level after the first halves the grid.
        attention_levels: self-attention per level (the middle block always has it, as in MONAI).
        norm_num_groups: GroupNorm groups (must divide every entry of `channels`).
        norm_eps: GroupNorm epsilon.
        num_head_channels: channels per attention head, one value or one per level.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        num_res_blocks: Sequence[int] | int = (2, 2, 2, 2),
        channels: Sequence[int] = (32, 64, 64, 64),
        attention_levels: Sequence[bool] = (False, False, True, True),
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        num_head_channels: Sequence[int] | int = 8,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        levels = len(channels)
        if any(c % norm_num_groups != 0 for c in channels):
            raise ValueError(f"every entry of channels {tuple(channels)} must be a multiple of "
                             f"norm_num_groups {norm_num_groups}")
        if len(attention_levels) != levels:
            raise ValueError(f"attention_levels {tuple(attention_levels)} must have one entry per level of "
                             f"{tuple(channels)}")
        if isinstance(num_head_channels, int):
            num_head_channels = (num_head_channels,) * levels
        if len(num_head_channels) != levels:
            raise ValueError(f"num_head_channels {tuple(num_head_channels)} must have one entry per level of "
                             f"{tuple(channels)}")
        if isinstance(num_res_blocks, int):
            num_res_blocks = (num_res_blocks,) * levels
        if len(num_res_blocks) != levels:
            raise ValueError(f"num_res_blocks {tuple(num_res_blocks)} must have one entry per level of "
                             f"{tuple(channels)}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.block_out_channels = tuple(channels)
        self.num_res_blocks = tuple(num_res_blocks)
        self.attention_levels = tuple(attention_levels)
        self.num_head_channels = tuple(num_head_channels)
        norm = dict(norm_num_groups=norm_num_groups, norm_eps=norm_eps)

        self.conv_in = Convolution(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=channels[0],
                                   kernel_size=3, padding=1)
        time_embed_dim = channels[0] * 4
        self.time_embed = nn.Sequential(
            nn.Linear(channels[0], time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        # MONAI's class conditioning, without its lookup table: a module attached after construction
        # (models.uptake_embedding) whose output is added to the time embedding, as MONAI adds it
        self.num_class_embeds: int | None = None
        self.class_embedding: nn.Module | None = None

        self.down_blocks = nn.ModuleList()
        output_channel = channels[0]
        for i in range(levels):
            input_channel, output_channel = output_channel, channels[i]
            self.down_blocks.append(DownBlock(
                spatial_dims=spatial_dims, in_channels=input_channel, out_channels=output_channel,
                temb_channels=time_embed_dim, num_res_blocks=num_res_blocks[i], add_downsample=i != levels - 1,
                with_attn=attention_levels[i], num_head_channels=num_head_channels[i], **norm,
            ))

        self.middle_block = AttnMidBlock(spatial_dims=spatial_dims, in_channels=channels[-1],
                                         temb_channels=time_embed_dim, num_head_channels=num_head_channels[-1], **norm)

        self.up_blocks = nn.ModuleList()
        rev_channels = list(reversed(channels))
        output_channel = rev_channels[0]
        for i in range(levels):
            prev_output_channel, output_channel = output_channel, rev_channels[i]
            self.up_blocks.append(UpBlock(
                spatial_dims=spatial_dims, in_channels=rev_channels[min(i + 1, levels - 1)],
                prev_output_channel=prev_output_channel, out_channels=output_channel, temb_channels=time_embed_dim,
                num_res_blocks=num_res_blocks[levels - 1 - i] + 1, add_upsample=i != levels - 1,
                with_attn=attention_levels[levels - 1 - i], num_head_channels=num_head_channels[levels - 1 - i],
                **norm,
            ))

        self.out = nn.Sequential(
            nn.GroupNorm(num_groups=norm_num_groups, num_channels=channels[0], eps=norm_eps, affine=True),
            nn.SiLU(),
            zero_parameters(Convolution(spatial_dims=spatial_dims, in_channels=channels[0], out_channels=out_channels,
                                        kernel_size=3, padding=1)),
        )

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """`x` `(B, in, *S)`, `timesteps` `(B,)` on MONAI's scale [0, 1000] -> `(B, out, *S)`.

        `class_labels` `(B,)`: the attached class embedding's input, required when there is one.
        """
        t_emb = get_timestep_embedding(timesteps, self.block_out_channels[0]).to(dtype=x.dtype)  # (B, C0)
        emb = self.time_embed(t_emb)  # (B, 4 C0)
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels should be provided when the network has a class embedding")
            emb = emb + self.class_embedding(class_labels).to(dtype=x.dtype)  # (B, 4 C0)

        h = self.conv_in(x)
        skips = [h]
        for down in self.down_blocks:
            h, states = down(h, emb)
            skips += states

        h = self.middle_block(h, emb)

        for up in self.up_blocks:
            n = len(up.resnets)
            h = up(h, skips[-n:], emb)
            skips = skips[:-n]
        return self.out(h)
