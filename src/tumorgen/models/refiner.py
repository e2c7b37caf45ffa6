"""The VAE-guided Mask Refiner (VMR, docs/METHOD.md section 3).

The flow model's mask lives on the coarse latent grid (f = 4). The refiner upsamples it stage by
stage to the image grid and, at each stage, adds the frozen VAE decoder's features at that resolution
(projected to the refiner's width: G_k), so the full-resolution outline follows the decoded image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _groups(width: int) -> int:
    """GroupNorm groups for a narrow layer: 4 when it divides, else 1."""
    return 4 if width % 4 == 0 else 1


class _ConvBlock(nn.Sequential):
    """GroupNorm -> SiLU -> 3x3x3 convolution."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.GroupNorm(_groups(in_channels), in_channels),
            nn.SiLU(),
            nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1),
        )


class MaskRefiner(nn.Module):
    """Coarse mask + decoder features -> full-resolution mask logits (apply a sigmoid outside).

    Args:
        feature_channels: channels of the decoder features F1, F2, F3 (coarse to fine), e.g. from
            `tumorgen.models.vae.decoder_feature_channels`.
        widths: the refiner's channels at each stage (one per feature map).
    """

    def __init__(self, *, feature_channels: tuple[int, ...], widths: tuple[int, ...] = (32, 16, 8)) -> None:
        super().__init__()
        if len(feature_channels) != len(widths):
            raise ValueError(f"need one width per feature map: {feature_channels} vs {widths}")
        self.feature_channels = tuple(feature_channels)
        self.widths = tuple(widths)
        self.stem = nn.Conv3d(1, widths[0], kernel_size=3, padding=1)
        # G_k: a 1x1x1 projection of decoder feature k to the refiner's width at stage k
        self.guides = nn.ModuleList(nn.Conv3d(c, w, kernel_size=1) for c, w in zip(feature_channels, widths))
        # entering stage k > 0: trilinear x2 upsampling, then a conv from the previous width
        self.ups = nn.ModuleList(
            _ConvBlock(in_channels=widths[k - 1], out_channels=widths[k]) for k in range(1, len(widths))
        )
        # after adding G_k: one conv block to fuse mask and image features
        self.fuse = nn.ModuleList(_ConvBlock(in_channels=w, out_channels=w) for w in widths)
        last = widths[-1]
        self.head = nn.Sequential(nn.GroupNorm(_groups(last), last), nn.SiLU(), nn.Conv3d(last, 1, kernel_size=1))

    def forward(self, m_hat: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """`m_hat` `(B, 1, h, w, d)` in [0, 1], features at x1, x2, x4 -> logits `(B, 1, 4h, 4w, 4d)`."""
        if len(features) != len(self.widths):
            raise ValueError(f"expected {len(self.widths)} feature maps, got {len(features)}")
        h = None
        for k, (feat, guide, fuse) in enumerate(zip(features, self.guides, self.fuse)):
            scale = 2**k
            expected = tuple(s * scale for s in m_hat.shape[2:])
            if tuple(feat.shape[2:]) != expected or feat.shape[1] != self.feature_channels[k]:
                raise ValueError(
                    f"feature {k + 1} has shape {tuple(feat.shape)}, expected "
                    f"(B, {self.feature_channels[k]}, {expected[0]}, {expected[1]}, {expected[2]})"
                )
            if k == 0:
                h = self.stem(m_hat)  # (B, w0, h, w, d)
            else:
                h = F.interpolate(h, scale_factor=2.0, mode="trilinear", align_corners=False)
                h = self.ups[k - 1](h)  # (B, w_k, 2^k h, 2^k w, 2^k d)
            h = h + guide(feat)
            h = h + fuse(h)
        return self.head(h)  # (B, 1, 4h, 4w, 4d)
