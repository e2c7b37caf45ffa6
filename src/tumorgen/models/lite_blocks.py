"""Pure-PyTorch twins of the MONAI 1.6 layers that `lite_autoencoder` and `lite_diffusion_unet` share.

Why: `import monai` costs seconds (its `__init__` imports every submodule, scipy.signal, matplotlib),
which inference pays for two networks that are a few convolutions, GroupNorms and attentions. These
layers import only torch and keep MONAI's attribute names, so a state_dict saved from the MONAI
networks loads strictly into the twins and the forward passes agree to float rounding.

Only the options our builders use are reproduced (MONAI's defaults otherwise): `conv_only`
convolutions with a bias, nearest x2 upsampling followed by a convolution, and spatial self-attention
with separate q/k/v projections (`use_combined_linear=False`), an output projection (`include_fc=True`),
no dropout and MONAI's explicit softmax attention (`use_flash_attention=False`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")


def zero_parameters(module: nn.Module) -> nn.Module:
    """Zero a module's parameters, as MONAI's `zero_module` does (a fresh network then matches MONAI's)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


class Convolution(nn.Module):
    """MONAI's `Convolution(..., conv_only=True)`: one biased convolution stored under `.conv`.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels, out_channels: channels in and out.
        kernel_size: cubic kernel size.
        stride: stride.
        padding: zero padding on every side.
    """

    def __init__(
        self, *, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        self.conv = _CONV[spatial_dims](in_channels, out_channels, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """MONAI's `Upsample(mode="nontrainable", interp_mode="nearest", scale_factor=2, post_conv=...)`.

    Nearest-neighbour x2 (no parameters, as MONAI's `upsample_non_trainable`) then a 3-wide
    convolution under MONAI's name `postconv`.

    Args:
        spatial_dims: 1, 2 or 3.
        channels: channels in and out.
    """

    def __init__(self, *, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.postconv = Convolution(
            spatial_dims=spatial_dims, in_channels=channels, out_channels=channels, kernel_size=3, padding=1
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """`x` `(B, C, *S)` -> `(B, C, *2S)`; `emb` is accepted (and ignored) like MONAI's `WrappedUpsample`."""
        del emb
        return self.postconv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SABlock(nn.Module):
    """MONAI's `SABlock` as `SpatialAttentionBlock` builds it: multi-head self-attention on `(B, N, C)`.

    Args:
        hidden_size: channels C; each head gets C / num_heads of them.
        num_heads: attention heads.
    """

    def __init__(self, *, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (hidden_size // num_heads) ** -0.5
        # registered in MONAI's order, so the state_dicts list their keys identically
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.to_q = nn.Linear(hidden_size, hidden_size)
        self.to_k = nn.Linear(hidden_size, hidden_size)
        self.to_v = nn.Linear(hidden_size, hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, -1).transpose(1, 2)  # (B, heads, N, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(x)), self._heads(self.to_v(x))
        # the explicit softmax attention MONAI computes (not scaled_dot_product_attention): same rounding
        att = (torch.einsum("blxd,blyd->blxy", q, k) * self.scale).softmax(dim=-1)  # (B, heads, N, N)
        x = torch.einsum("bhxy,bhyd->bhxd", att, v)  # (B, heads, N, d)
        x = x.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.out_proj(x)


class SpatialAttentionBlock(nn.Module):
    """MONAI's `SpatialAttentionBlock`: x + attention(GroupNorm(x)) over all voxels.

    Args:
        spatial_dims: 1, 2 or 3 (kept for symmetry with MONAI; the reshape works for any).
        num_channels: channels C.
        num_head_channels: channels per head; None gives a single head (MONAI's default).
        norm_num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        num_channels: int,
        num_head_channels: int | None = None,
        norm_num_groups: int,
        norm_eps: float,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if num_head_channels is not None and num_channels % num_head_channels != 0:
            raise ValueError(f"num_channels {num_channels} must be divisible by num_head_channels {num_head_channels}")
        num_heads = num_channels // num_head_channels if num_head_channels is not None else 1
        self.norm = nn.GroupNorm(num_groups=norm_num_groups, num_channels=num_channels, eps=norm_eps, affine=True)
        self.attn = SABlock(hidden_size=num_channels, num_heads=num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = self.norm(x).reshape(*shape[:2], -1).transpose(1, 2)  # (B, N, C)
        h = self.attn(h).transpose(1, 2).reshape(shape)  # (B, C, *S)
        return h + x
