"""Decode only the latents around the box: the synthesis output uses nothing else of the decoded image.

Outside its box the synthesized scan is the input scan (docs/METHOD.md section 5, step 4), so the decoded
image and the refined mask are only read inside the box. On a CPU the VAE decode (and the refiner at
full resolution) costs more than a 10-step Euler loop, and both scale with the decoded volume, so
decoding a crop of the latents (box + a margin) instead of the whole latent grid saves most of it.

Why a margin, and why the result is close but not bit-equal to the full decode:
- the decoder's and the refiner's convolutions see a few latent voxels beyond the box (their
  receptive field); a crop replaces those neighbours by zero padding at its faces, so the crop needs
  a margin of latent voxels around the box for the box's interior to see the same neighbourhood
  (measured: 7 latent voxels for the 3-level AutoencoderKL decoder and the refiner);
- both networks use GroupNorm, whose mean and variance are taken over the whole decoded volume, which
  is not a local operation. On a bare crop they are the crop's, and the box's decode is off by about
  0.1 of the image range even with the full margin. `reference_statistics` records, once per window,
  the sums per latent cell of a full pass over the scan's own latents; the crop decode then takes the
  volume's statistics as its own sums over its exact part (the box, or up to the volume's faces)
  plus the reference's everywhere else. What is left
  is the box's influence on its surroundings within the receptive field (measured ~6e-3 of the image
  range with tiny untrained networks, benchmarks/README.md): close, not exact, so `model_generator`
  keeps the full decode as its default.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tumorgen.models.refine import upsample_coarse_mask
from tumorgen.models.vae import decode_with_features, latent_factor

# Latent voxels decoded around the box on every side: the receptive field of the 3-level AutoencoderKL
# decoder plus the refiner. Measured (tests/test_region_decode.py, benchmarks/README.md): with the
# whole volume's GroupNorm statistics the box's image differs from the full decode by 0.27 of the
# image range at margin 1, 0.026 at 4 and 5e-7 at 7.
DEFAULT_MARGIN = 7


GroupNormStats = dict  # {GroupNorm module: (sum, sum of squares) per group and latent cell}, see below


def _group_norm_modules(*networks: nn.Module | None) -> list[nn.GroupNorm]:
    return [m for net in networks if net is not None for m in net.modules() if isinstance(m, nn.GroupNorm)]


def _normalize(module: nn.GroupNorm, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """GroupNorm of `x` `(B, C, ...)` with the given per-(sample, group) mean and variance `(B, G)`."""
    b, c = x.shape[:2]
    g = module.num_groups
    grouped = x.reshape(b, g, -1)  # (B, G, C/G * X * Y * Z)
    out = (grouped - mean[..., None].to(x.dtype)) * torch.rsqrt(var[..., None].to(x.dtype) + module.eps)
    out = out.reshape(x.shape)  # (B, C, X, Y, Z)
    if module.affine:
        shape = (1, c) + (1,) * (x.dim() - 2)
        out = out * module.weight.reshape(shape) + module.bias.reshape(shape)
    return out


def _cell_sums(module: nn.GroupNorm, x: torch.Tensor, cells: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and sum of squares of `x` `(B, C, X, Y, Z)` per group and per latent cell: `(B, G, h, w, d)` each,
    in float64 (the variance is taken as E[x^2] - E[x]^2)."""
    b, c = x.shape[:2]
    k = x.shape[2] // cells[0]  # this layer's voxels per latent voxel along an axis
    grouped = x.double().reshape(b, module.num_groups, c // module.num_groups, *x.shape[2:])  # (B, G, C/G, X, Y, Z)
    pooled = []
    for values in (grouped.sum(dim=2), (grouped**2).sum(dim=2)):  # (B, G, X, Y, Z)
        pooled.append(F.avg_pool3d(values, kernel_size=k) * k**3 if k > 1 else values)  # (B, G, h, w, d)
    return pooled[0], pooled[1]


@contextlib.contextmanager
def _group_norm_statistics(
    modules: list[nn.GroupNorm], stats: GroupNormStats, *, cells: Sequence[int], crop: tuple | None = None,
    own: tuple | None = None,
) -> Iterator[None]:
    """Within the block every GroupNorm in `modules` either records its input's sums per latent cell
    into `stats` (`crop` None: a pass over the whole grid of `cells` latent voxels), or normalizes a
    crop (`crop`: three latent slices of the grid) with the whole volume's statistics estimated as the
    crop's own sums over `own` (three latent slices of the crop: its exact part, away from its faces
    inside the volume) plus the recorded reference's sums everywhere else. The crop's faces are not
    counted from the crop: their activations are wrong (zero padding) up to the receptive field."""

    def patched(module: nn.GroupNorm):
        def forward(x: torch.Tensor) -> torch.Tensor:
            if crop is None:
                stats[module] = _cell_sums(module, x, cells)
            ref_sum, ref_sq = stats[module]  # (B or 1, G, h, w, d)
            if crop is None:
                total, total_sq = ref_sum.sum(dim=(2, 3, 4)), ref_sq.sum(dim=(2, 3, 4))  # (B, G)
            else:
                crop_cells = [s.stop - s.start for s in crop]
                in_crop = (slice(None), slice(None), *own)
                in_grid = (slice(None), slice(None), *(slice(c.start + o.start, c.start + o.stop)
                                                       for c, o in zip(crop, own)))
                own_sum, own_sq = (v[in_crop].sum(dim=(2, 3, 4)) for v in _cell_sums(module, x, crop_cells))  # (B, G)
                total = own_sum + ref_sum.sum(dim=(2, 3, 4)) - ref_sum[in_grid].sum(dim=(2, 3, 4))
                total_sq = own_sq + ref_sq.sum(dim=(2, 3, 4)) - ref_sq[in_grid].sum(dim=(2, 3, 4))
            k = x.shape[2] // (cells[0] if crop is None else crop[0].stop - crop[0].start)
            count = (x.shape[1] // module.num_groups) * k**3 * cells[0] * cells[1] * cells[2]
            mean = total / count
            var = (total_sq / count - mean**2).clamp(min=0.0)
            return _normalize(module, x, mean, var)

        return forward

    for module in modules:
        module.forward = patched(module)  # an instance attribute: nn.Module.__call__ finds it first
    try:
        yield
    finally:
        for module in modules:
            del module.forward


@torch.no_grad()
def reference_statistics(
    vae: nn.Module, refiner: nn.Module | None, z_ref: torch.Tensor, m_ref: torch.Tensor
) -> GroupNormStats:
    """The GroupNorm sums of a full decode (and refiner pass) of reference latents, per latent cell.

    The reference is the scan's own latents with an empty mask: outside the decoded region they are
    what the sample decodes, so `decode_region` takes the whole volume's statistics as the crop's own
    sums plus the reference's sums outside the crop. The error left is second order: how much the
    activations outside the crop would move with the changed statistics. One reference serves every
    sample synthesized into the same window.

    Args:
        vae, refiner: the networks `decode_region` will run.
        z_ref: `(1 or B, c, h, w, d)` latents in the decoder's units; m_ref: `(1 or B, 1, h, w, d)`.
    """
    stats: GroupNormStats = {}
    with _group_norm_statistics(_group_norm_modules(vae, refiner), stats, cells=tuple(z_ref.shape[2:])):
        _, feats = decode_with_features(vae, z_ref)
        if refiner is not None:
            refiner(m_ref, feats)
    return stats


def region_bounds(
    latent_box: Sequence[int], latent_shape: Sequence[int], *, margin: int
) -> tuple[tuple[int, int], ...]:
    """The latent region `[lo, hi)` per axis: the box grown by `margin` on every side, clipped to the grid.

    Args:
        latent_box: a half-open box `(x0, y0, z0, x1, y1, z1)` on the latent grid.
        latent_shape: `(h, w, d)` of the latent grid.
        margin: latent voxels added on each side (>= 0).
    """
    box = [int(v) for v in latent_box]
    if len(box) != 6:
        raise ValueError(f"a box has 6 values (x0, y0, z0, x1, y1, z1), got {latent_box}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    bounds = []
    for axis, size in enumerate(latent_shape):
        lo, hi = box[axis], box[axis + 3]
        if not 0 <= lo < hi <= size:
            raise ValueError(f"latent box {tuple(box)} is empty or outside the latent grid {tuple(latent_shape)}")
        bounds.append((max(0, lo - margin), min(int(size), hi + margin)))
    return tuple(bounds)


def decode_region(
    vae: nn.Module,
    refiner: nn.Module | None,
    z_hat: torch.Tensor,
    m_hat: torch.Tensor,
    latent_box: Sequence[int],
    *,
    margin: int = DEFAULT_MARGIN,
    stats: GroupNormStats | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[slice, slice, slice]]:
    """Decode the latents in the box plus `margin`, and refine the mask on the same crop.

    Args:
        vae: the frozen VAE.
        refiner: the mask refiner (VMR), or None for the "no VMR" ablation (the coarse mask upsampled).
        z_hat: latents in the decoder's units (already divided by the scale factor), `(B, c, h, w, d)`.
        m_hat: the coarse mask in [0, 1], `(B, 1, h, w, d)`.
        latent_box: one half-open latent box `(x0, y0, z0, x1, y1, z1)` shared by the batch.
        margin: latent voxels decoded around the box on each side.
        stats: `reference_statistics` of the same window: GroupNorm then uses the whole volume's
            statistics (the crop's sums plus the reference's outside it) instead of the crop's own;
            None: the crop's own (exact only when the crop is the whole grid).

    Returns:
        `(image_region, mask_logits_region, region_slices)`: the decoded image and the refined mask's
        logits over the region, `(B, 1, f rx, f ry, f rz)` each, and the three image-grid slices
        where the region lies in the full decoded volume `(B, 1, f h, f w, f d)`. Inside the box they
        match the full decode to within the error stated in benchmarks/README.md. Without a refiner
        the logits are those of the upsampled coarse mask (clamped away from 0 and 1).
    """
    if z_hat.dim() != 5 or m_hat.dim() != 5 or z_hat.shape[2:] != m_hat.shape[2:] or m_hat.shape[1] != 1:
        raise ValueError(f"z_hat {tuple(z_hat.shape)} and m_hat {tuple(m_hat.shape)} must be (B, c, h, w, d) "
                         f"and (B, 1, h, w, d) on the same grid")
    f = latent_factor(vae)
    bounds = region_bounds(latent_box, z_hat.shape[2:], margin=margin)
    latent = tuple(slice(lo, hi) for lo, hi in bounds)
    # the crop's exact part: `margin` in from every face that lies inside the volume (the box, where
    # the crop is not clipped), up to the volume's own faces where it is
    own = tuple(slice(0 if lo == 0 else margin, (hi - lo) if hi == size else (hi - lo) - margin)
                for (lo, hi), size in zip(bounds, z_hat.shape[2:]))
    z_crop = z_hat[(slice(None), slice(None), *latent)]  # (B, c, rx, ry, rz)
    m_crop = m_hat[(slice(None), slice(None), *latent)]  # (B, 1, rx, ry, rz)
    frozen = (_group_norm_statistics(_group_norm_modules(vae, refiner), stats, cells=tuple(z_hat.shape[2:]),
                                     crop=latent, own=own) if stats is not None else contextlib.nullcontext())
    with frozen:
        image, feats = decode_with_features(vae, z_crop)  # (B, 1, f rx, f ry, f rz)
        logits = refiner(m_crop, feats) if refiner is not None else None  # (B, 1, f rx, f ry, f rz)
    if logits is None:
        logits = torch.logit(upsample_coarse_mask(m_crop, f).clamp(1e-6, 1.0 - 1e-6))
    region_slices = tuple(slice(lo * f, hi * f) for lo, hi in bounds)
    return image, logits, region_slices


def paste_region(
    full: torch.Tensor, region: torch.Tensor, region_slices: tuple[slice, slice, slice]
) -> torch.Tensor:
    """A copy of `full` `(B, C, X, Y, Z)` with `region` written at `region_slices`."""
    out = full.clone()
    out[(slice(None), slice(None), *region_slices)] = region.to(out.dtype)
    return out
