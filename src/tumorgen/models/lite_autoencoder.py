"""A pure-PyTorch twin of MONAI 1.6's `AutoencoderKL`, for inference without importing MONAI.

Why: `import monai` costs seconds that `tumorgen synthesize` would pay for a few convolutions.
Training keeps MONAI's network; this one mirrors its module tree and parameter names
(`encoder.blocks.N...`, `quant_conv_mu.conv.weight`, `...postconv.conv.weight`, `...attn.to_q.weight`),
so the same state_dict loads strictly into either, and its forward pass is MONAI's computation. Modules
are built in MONAI's order, so a seeded initialisation also gives MONAI's initial weights.

Reproduced: the options `build_vae(arch="kl")` uses plus MONAI's attention options at their defaults
(`attention_levels`, non-local attention in encoder and decoder, `include_fc=True`,
`use_combined_linear=False`, `use_flash_attention=False`). Not reproduced: `use_convtranspose`
and `use_checkpoint` (training-only memory saving).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tumorgen.models.lite_blocks import Convolution, SpatialAttentionBlock, Upsample, check_spatial_dims


class AEKLResBlock(nn.Module):
    """MONAI's `AEKLResBlock`: two GroupNorm-SiLU-conv layers and a (1-wide conv) shortcut."""

    def __init__(
        self, *, spatial_dims: int, in_channels: int, out_channels: int, norm_num_groups: int, norm_eps: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups=norm_num_groups, num_channels=in_channels, eps=norm_eps, affine=True)
        self.conv1 = Convolution(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, kernel_size=3, padding=1
        )
        self.norm2 = nn.GroupNorm(num_groups=norm_num_groups, num_channels=out_channels, eps=norm_eps, affine=True)
        self.conv2 = Convolution(
            spatial_dims=spatial_dims, in_channels=out_channels, out_channels=out_channels, kernel_size=3, padding=1
        )
        self.nin_shortcut: nn.Module = (
            Convolution(
                spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, kernel_size=1, padding=0
            )
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AEKLDownsample(nn.Module):
    """MONAI's `AEKLDownsample`: pad one voxel at the end of each axis, then a stride-2 3-wide conv.

    The class name must contain "Downsample": `vae.latent_factor` counts these blocks by name.
    """

    def __init__(self, *, spatial_dims: int, in_channels: int) -> None:
        super().__init__()
        self.pad = (0, 1) * spatial_dims
        self.conv = Convolution(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=in_channels, kernel_size=3, stride=2,
            padding=0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad, mode="constant", value=0.0))  # (B, C, *S/2)


def _nonlocal_attention(spatial_dims: int, channels: int, norm: dict) -> list[nn.Module]:
    """MONAI's non-local block at the latent resolution: res block, spatial attention, res block."""
    return [AEKLResBlock(spatial_dims=spatial_dims, in_channels=channels, out_channels=channels, **norm),
            SpatialAttentionBlock(spatial_dims=spatial_dims, num_channels=channels, **norm),
            AEKLResBlock(spatial_dims=spatial_dims, in_channels=channels, out_channels=channels, **norm)]


def _output_head(spatial_dims: int, channels: int, out_channels: int, norm: dict) -> list[nn.Module]:
    """The last two blocks of MONAI's encoder and decoder: GroupNorm, then a 3-wide convolution."""
    return [nn.GroupNorm(num_groups=norm["norm_num_groups"], num_channels=channels, eps=norm["norm_eps"], affine=True),
            Convolution(spatial_dims=spatial_dims, in_channels=channels, out_channels=out_channels, kernel_size=3,
                        padding=1)]


def _levels(spatial_dims: int, channels: Sequence[int], num_res_blocks: Sequence[int],
            attention_levels: Sequence[bool], norm: dict, *, resample) -> tuple[list[nn.Module], int]:
    """Res blocks (each followed by attention where asked) per level and `resample(ch)` between levels,
    in MONAI's order; returns the blocks and the last level's channels. The decoder passes reversed lists."""
    blocks: list[nn.Module] = []
    out_ch = in_ch = channels[0]
    for i, level_channels in enumerate(channels):
        in_ch, out_ch = out_ch, level_channels
        for _ in range(num_res_blocks[i]):
            blocks.append(AEKLResBlock(spatial_dims=spatial_dims, in_channels=in_ch, out_channels=out_ch, **norm))
            in_ch = out_ch
            if attention_levels[i]:
                blocks.append(SpatialAttentionBlock(spatial_dims=spatial_dims, num_channels=in_ch, **norm))
        if i != len(channels) - 1:
            blocks.append(resample(in_ch))
    return blocks, in_ch


class _BlockStack(nn.Module):
    """A flat `blocks` list run in order, as MONAI's Encoder and Decoder are (their state-dict layout)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


@dataclass(frozen=True)
class _StackShape:
    """What the encoder and decoder share: the levels, their blocks and the GroupNorm settings."""

    spatial_dims: int
    channels: Sequence[int]
    num_res_blocks: Sequence[int]
    attention_levels: Sequence[bool]
    norm: dict


class Encoder(_BlockStack):
    """MONAI's AutoencoderKL `Encoder`: a flat `blocks` list, image -> pre-quantisation latent."""

    def __init__(self, shape: _StackShape, *, in_channels: int, out_channels: int, with_nonlocal_attn: bool) -> None:
        super().__init__()
        dims, channels = shape.spatial_dims, shape.channels
        blocks: list[nn.Module] = [
            Convolution(spatial_dims=dims, in_channels=in_channels, out_channels=channels[0], kernel_size=3, padding=1)
        ]
        blocks += _levels(dims, channels, shape.num_res_blocks, shape.attention_levels, shape.norm,
                          resample=lambda ch: AEKLDownsample(spatial_dims=dims, in_channels=ch))[0]
        if with_nonlocal_attn:
            blocks += _nonlocal_attention(dims, channels[-1], shape.norm)
        blocks += _output_head(dims, channels[-1], out_channels, shape.norm)
        self.blocks = nn.ModuleList(blocks)


class Decoder(_BlockStack):
    """MONAI's AutoencoderKL `Decoder`: a flat `blocks` list, latent -> image (walked by `decode_with_features`)."""

    def __init__(self, shape: _StackShape, *, in_channels: int, out_channels: int, with_nonlocal_attn: bool) -> None:
        super().__init__()
        dims, norm = shape.spatial_dims, shape.norm
        reversed_channels = list(reversed(shape.channels))
        top = reversed_channels[0]
        blocks: list[nn.Module] = [
            Convolution(spatial_dims=dims, in_channels=in_channels, out_channels=top, kernel_size=3, padding=1)
        ]
        if with_nonlocal_attn:
            blocks += _nonlocal_attention(dims, top, norm)
        levels, last = _levels(dims, reversed_channels, list(reversed(shape.num_res_blocks)),
                               list(reversed(shape.attention_levels)), norm,
                               resample=lambda ch: Upsample(spatial_dims=dims, channels=ch))
        blocks += levels
        blocks += _output_head(dims, last, out_channels, norm)
        self.blocks = nn.ModuleList(blocks)


class LiteAutoencoderKL(nn.Module):
    """MONAI's `AutoencoderKL` (same arguments, defaults and state_dict keys), forward pass in plain torch.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels, out_channels: image channels.
        num_res_blocks: residual blocks per level (an int is used for every level).
        channels: channels per level; len(channels) - 1 downsamplings by 2.
        attention_levels: single-head self-attention after each residual block of a level.
        latent_channels: latent channels.
        norm_num_groups: GroupNorm groups (must divide every entry of `channels`).
        norm_eps: GroupNorm epsilon.
        with_encoder_nonlocal_attn, with_decoder_nonlocal_attn: res-attention-res at the latent resolution.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int = 1,
        out_channels: int = 1,
        num_res_blocks: Sequence[int] | int = (2, 2, 2, 2),
        channels: Sequence[int] = (32, 64, 64, 64),
        attention_levels: Sequence[bool] = (False, False, True, True),
        latent_channels: int = 3,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-6,
        with_encoder_nonlocal_attn: bool = True,
        with_decoder_nonlocal_attn: bool = True,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if any(c % norm_num_groups != 0 for c in channels):
            raise ValueError(f"every entry of channels {tuple(channels)} must be a multiple of "
                             f"norm_num_groups {norm_num_groups}")
        if len(attention_levels) != len(channels):
            raise ValueError(f"attention_levels {tuple(attention_levels)} must have one entry per level of "
                             f"{tuple(channels)}")
        if isinstance(num_res_blocks, int):
            num_res_blocks = (num_res_blocks,) * len(channels)
        if len(num_res_blocks) != len(channels):
            raise ValueError(f"num_res_blocks {tuple(num_res_blocks)} must have one entry per level of "
                             f"{tuple(channels)}")
        shape = _StackShape(spatial_dims, tuple(channels), tuple(num_res_blocks), tuple(attention_levels),
                            dict(norm_num_groups=norm_num_groups, norm_eps=norm_eps))
        self.encoder = Encoder(shape, in_channels=in_channels, out_channels=latent_channels,
                               with_nonlocal_attn=with_encoder_nonlocal_attn)
        self.decoder = Decoder(shape, in_channels=latent_channels, out_channels=out_channels,
                               with_nonlocal_attn=with_decoder_nonlocal_attn)
        conv1 = dict(spatial_dims=spatial_dims, in_channels=latent_channels, out_channels=latent_channels,
                     kernel_size=1, padding=0)
        self.quant_conv_mu = Convolution(**conv1)
        self.quant_conv_log_sigma = Convolution(**conv1)
        self.post_quant_conv = Convolution(**conv1)
        self.latent_channels = latent_channels

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image `(B, C, *S)` -> posterior mean and standard deviation, each `(B, latent, *S/f)`."""
        h = self.encoder(x)
        z_mu = self.quant_conv_mu(h)
        z_log_var = torch.clamp(self.quant_conv_log_sigma(h), -30.0, 20.0)
        return z_mu, torch.exp(z_log_var / 2)

    def sampling(self, z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
        return z_mu + torch.randn_like(z_sigma) * z_sigma

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents `(B, latent, *s)` -> image `(B, C, *f s)`."""
        return self.decoder(self.post_quant_conv(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_mu, z_sigma = self.encode(x)
        return self.decode(self.sampling(z_mu, z_sigma)), z_mu, z_sigma
