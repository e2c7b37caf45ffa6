"""HA-GAN (Sun et al. 2022, "Hierarchical Amortized GAN for 3D High Resolution Medical Image Synthesis",
IEEE JBHI), as an inpainting baseline on the box window: the networks and the maths of one step.

What HA-GAN is, and what is kept here (the reference code is batmanlab/HA-GAN):
- a generator in three parts: a shared trunk G^A from a noise vector to a feature map at 1/r of the
  image resolution; G^L, which turns the whole feature map into a low-resolution image; G^H, which
  turns a slab of the feature map into the matching high-resolution sub-volume. In training one
  random slab (sub-volume) per step is generated at high resolution, so the high-resolution cost is
  a fraction of the volume's; at inference G^H runs on the whole feature map (all sub-volumes);
- two discriminators, D^H on the high-resolution sub-volume (told where the slab starts) and D^L on
  the whole low-resolution image, their logits averaged; spectral norm; the non-saturating BCE loss;
  Adam with betas (0, 0.999) at 1e-4 (G, encoders) and 4e-4 (D); one D then one G update a step;
- the amortized encoder: E^H maps a real high-resolution sub-volume to its slab of the feature map,
  trained with an L1 reconstruction through the frozen G^H; E^G maps the E^H features of all slabs to
  the noise vector, trained with L1 on both resolutions through the frozen generator. Neither loss
  reaches the generator (as in the paper), and synthesis draws from noise, not from the encoder.

What changed, and why:
- conditioned on the erased window: every part of the generator also sees the conditioning
  `[x (1 - B) ; B ; m]` (the window with its box zeroed, the box indicator, the placed tumor mask),
  encoded to each resolution it works at and concatenated to its features; both discriminators see
  the same box and mask beside the image, so they judge whether the tumor matches its mask; the
  generated window is pasted into the real one inside the box (`compose`) before anyone judges it.
  As in DiffTumor, the mask is a real training tumor's (from the run's mask bank at synthesis), the
  image is what is generated. The box, not the mask, is erased and regenerated: in image space PET
  blur spreads a tumor's rim a few voxels past its mask, and a model shown that rim in training would
  find none at synthesis, where the box is erased;
- scale: a 32^3 window instead of 256^3, r = 2 instead of 4 (`hagan.low_res_factor`), 4 slabs of 8
  voxels instead of 8 of 32 (`hagan.sub_volumes`), a 64-d noise vector instead of 1024, widths of
  16-64 channels instead of 64-512: 1.15 M parameters in all on the ibsi window (G 0.62 M), where the
  reference 256^3 model has 80 M (G 52 M), which a CPU trains in the budget the other baselines get. Convolutions with nearest upsampling and GroupNorm as in the paper;
  the low-resolution real image is the window average-pooled by r (the paper interpolates);
- the discriminators pool their last feature map instead of convolving it to 1^3, so one network fits
  any window; the slab position is the slab's start as a fraction of the possible starts.

Images are in [-1, 1] inside this module (tanh outputs, as in the paper); `to_model_range` maps back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from tumorgen.config import HAGANConfig

LEAK = 0.2  # LeakyReLU slope of the discriminators (the paper's)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)  # the paper's GroupNorm(8, .), any width


def _block(cin: int, cout: int, *, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1), _norm(cout), nn.ReLU())


def slab(x: torch.Tensor, start: int, depth: int, scale: int = 1) -> torch.Tensor:
    """Trunk voxels `[start, start + depth)` of the first spatial axis, at `scale` x the trunk resolution."""
    return x[:, :, start * scale:(start + depth) * scale]  # (B, C, depth * scale, Y, Z)


def condition(image: torch.Tensor, box: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The generator's input besides the noise: `[x (1 - B) ; B ; m]` `(B, 3, X, Y, Z)`, x in [-1, 1]."""
    return torch.cat([image * (1.0 - box), box, mask], dim=1)  # (B, 3, X, Y, Z)


def compose(generated: torch.Tensor, real: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """The generated window inside the box, the real one outside it."""
    return box * generated + (1.0 - box) * real


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (the model's intensity range), clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class ContextEncoder(nn.Module):
    """The conditioning at full resolution and at every 2x coarser one down to the trunk's start."""

    def __init__(self, *, width: int, levels: int):
        super().__init__()
        self.stem = _block(3, width)
        self.downs = nn.ModuleList(_block(width, width, stride=2) for _ in range(levels))

    def forward(self, cond: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(cond)]  # (B, k, X, Y, Z)
        for down in self.downs:
            feats.append(down(feats[-1]))  # (B, k, X/2^i, Y/2^i, Z/2^i)
        return feats  # finest first


class Generator(nn.Module):
    """G^A (trunk), G^L (low resolution) and G^H (high resolution), all conditioned on the erased window.

    Args:
        shape: the window's (X, Y, Z), each divisible by 4r, X / r by `sub_volumes`.
        latent_dim, channels, low_res_factor, sub_volumes: the `hagan` config section.
    """

    def __init__(self, *, shape: tuple[int, int, int], latent_dim: int, channels: int, low_res_factor: int,
                 sub_volumes: int):
        super().__init__()
        r, c = low_res_factor, channels
        self.shape, self.r, self.latent_dim = tuple(shape), r, latent_dim
        self.start = tuple(s // (4 * r) for s in shape)  # the trunk's first grid (paper: 4^3)
        self.slab_depth = shape[0] // r // sub_volumes  # trunk voxels of one sub-volume along X
        self.up_levels = int(math.log2(r))  # G^H's 2x upsamplings
        k = max(c // 2, 4)  # context width at every scale
        self.context = ContextEncoder(width=k, levels=self.up_levels + 2)
        self.fc = nn.Linear(latent_dim, 4 * c * math.prod(self.start))
        self.trunk = nn.ModuleList([_block(4 * c + k, 4 * c), _block(4 * c + k, 4 * c), _block(4 * c + k, 2 * c)])
        self.low = nn.Sequential(_block(2 * c + k, c), nn.Conv3d(c, 1, 3, padding=1), nn.Tanh())
        self.high = nn.ModuleList(_block((2 * c if i == 0 else c) + k, c) for i in range(self.up_levels))
        self.high_out = nn.Sequential(nn.Conv3d(c, 1, 3, padding=1), nn.Tanh())

    @property
    def possible_starts(self) -> int:
        """How many slab positions there are (the training crop is drawn among them)."""
        return self.shape[0] // self.r - self.slab_depth + 1

    def features(self, z: torch.Tensor, ctx: list[torch.Tensor]) -> torch.Tensor:
        """G^A: noise `(B, latent_dim)` -> the shared feature map `(B, 2c, X/r, Y/r, Z/r)`."""
        h = self.fc(z).reshape(z.shape[0], -1, *self.start)  # (B, 4c, X/4r, Y/4r, Z/4r)
        for i, block in enumerate(self.trunk):
            if i > 0:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, ctx[-1 - i]], dim=1))  # context at the same resolution
        return h

    def low_res(self, h: torch.Tensor, ctx: list[torch.Tensor]) -> torch.Tensor:
        """G^L: the whole feature map -> the low-resolution image `(B, 1, X/r, Y/r, Z/r)`."""
        return self.low(torch.cat([h, ctx[self.up_levels]], dim=1))

    def high_res(self, h: torch.Tensor, ctx: list[torch.Tensor], start: int = 0) -> torch.Tensor:
        """G^H: a slab of the feature map starting at trunk voxel `start` -> that high-resolution sub-volume.

        Given the whole feature map (start 0) it makes the whole window, as the paper's inference does.
        """
        depth = h.shape[2]
        for i, block in enumerate(self.high):
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            scale = 2 ** (i + 1)
            h = block(torch.cat([h, slab(ctx[self.up_levels - 1 - i], start, depth, scale)], dim=1))
        return self.high_out(h)  # (B, 1, depth * r, Y, Z)

    def forward(self, z: torch.Tensor, cond: torch.Tensor, start: int | None = None):
        """Training (`start` given): (the sub-volume at `start`, the low-resolution window); inference
        (`start` None): the whole high-resolution window."""
        ctx = self.context(cond)
        h = self.features(z, ctx)
        if start is None:
            return self.high_res(h, ctx)
        return self.high_res(slab(h, start, self.slab_depth), ctx, start), self.low_res(h, ctx)


class Critic(nn.Module):
    """D^H or D^L: spectrally normalised strided convolutions, their whole last feature map flattened
    into two linear layers (the paper's last convolution spans the map, the same thing).

    Why not pooled: a mean over the window dilutes the box, the only place a fake differs from the
    real window, by the window's volume, and with every layer spectrally normalised the logits stay
    near 0: mean-pooled critics given 40 steps on windows whose box is 0.4 hotter kept their loss at
    1.384 (2 ln 2 = 1.386), flattened ones fell below 1.0 (`tests/test_hagan.py`). In the IBSI run with
    pooled critics the D loss sat at 2 ln 2 for all 625 steps (its generator still made hot masks,
    from a near-zero adversarial signal).

    Args:
        channels: width of the first convolution (doubling per level).
        levels: strided convolutions.
        size: the input's spatial size `(X, Y, Z)`.
        extra: scalars concatenated before the linear head (D^H: the slab position).
    """

    def __init__(self, *, channels: int, levels: int, size: tuple[int, int, int], extra: int = 0):
        super().__init__()
        widths = [3] + [channels * 2**i for i in range(levels)]
        self.convs = nn.ModuleList(spectral_norm(nn.Conv3d(a, b, 3, stride=2, padding=1))
                                   for a, b in zip(widths[:-1], widths[1:]))
        final = list(size)
        for _ in range(levels):
            final = [(s - 1) // 2 + 1 for s in final]  # a 3-kernel, stride-2, padding-1 convolution
        self.fc1 = spectral_norm(nn.Linear(widths[-1] * math.prod(final) + extra, widths[-1]))
        self.fc2 = spectral_norm(nn.Linear(widths[-1], 1))

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAK)
        h = x.flatten(1)  # (B, C * x * y * z)
        if extra is not None:
            h = torch.cat([h, extra], dim=1)  # (B, C + extra)
        return self.fc2(F.leaky_relu(self.fc1(h), LEAK))  # (B, 1)


class HighEncoder(nn.Module):
    """E^H: a real high-resolution sub-volume `(B, 1, d r, Y, Z)` -> its slab of the feature map `(B, 2c, d, ...)`."""

    def __init__(self, *, channels: int, low_res_factor: int):
        super().__init__()
        c = channels
        downs = [_block(c, c if i < int(math.log2(low_res_factor)) - 1 else 2 * c, stride=2)
                 for i in range(int(math.log2(low_res_factor)))]
        self.net = nn.Sequential(_block(1, c), *downs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GlobalEncoder(nn.Module):
    """E^G: the feature map assembled from E^H's slabs `(B, 2c, X/r, ...)` -> the noise vector `(B, latent_dim)`."""

    def __init__(self, *, channels: int, latent_dim: int, start: tuple[int, int, int]):
        super().__init__()
        self.net = nn.Sequential(_block(2 * channels, 4 * channels, stride=2),
                                 _block(4 * channels, 4 * channels, stride=2))
        self.fc = nn.Linear(4 * channels * math.prod(start), latent_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(h).flatten(1))  # (B, latent_dim)


class HAGAN(nn.Module):
    """The five networks of one HA-GAN run, in one module so one checkpoint holds them."""

    def __init__(self, *, shape: tuple[int, int, int], cfg: HAGANConfig):
        super().__init__()
        self.generator = Generator(shape=shape, latent_dim=cfg.latent_dim, channels=cfg.channels,
                                   low_res_factor=cfg.low_res_factor, sub_volumes=cfg.sub_volumes)
        g = self.generator
        high = (g.slab_depth * g.r, *shape[1:])  # a sub-volume at full resolution
        low = tuple(s // g.r for s in shape)  # the whole window at low resolution
        self.disc_high = Critic(channels=cfg.channels, levels=3, size=high, extra=1)
        self.disc_low = Critic(channels=cfg.channels, levels=2, size=low)
        self.encoder_high = HighEncoder(channels=cfg.channels, low_res_factor=cfg.low_res_factor)
        self.encoder_global = GlobalEncoder(channels=cfg.channels, latent_dim=cfg.latent_dim,
                                            start=self.generator.start)

    def discriminate(self, high: torch.Tensor, low: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """The averaged logit of D^H (sub-volume, its mask and box; told its position) and D^L (whole window)."""
        return (self.disc_high(high, position) + self.disc_low(low)) / 2.0


def check_window_shape(shape: tuple[int, ...], cfg: HAGANConfig) -> str | None:
    """Why a window of `shape` does not fit the generator, or None when it does."""
    r = cfg.low_res_factor
    if any(s % (4 * r) for s in shape):
        return f"every side of the {tuple(shape)} window must be divisible by 4 x hagan.low_res_factor = {4 * r}"
    if (shape[0] // r) % cfg.sub_volumes:
        return (f"the window's first side / hagan.low_res_factor ({shape[0] // r}) must be divisible by "
                f"hagan.sub_volumes ({cfg.sub_volumes})")
    return None


def build_hagan(shape: tuple[int, int, int], cfg: HAGANConfig) -> HAGAN:
    """The HA-GAN of the `hagan` config section for windows of `shape` (checked with `check_window_shape`)."""
    problem = check_window_shape(shape, cfg)
    if problem is not None:
        raise ValueError(problem)
    return HAGAN(shape=tuple(int(s) for s in shape), cfg=cfg)
