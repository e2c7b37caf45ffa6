"""Boundary-Aware Pseudo Mask Generation (BA-PMG, docs/METHOD.md section 1) as pure tensor functions.

The flow model is conditioned on a box, not on the tumor's outline, so that at inference a user only
has to say *where*. During training the box is the tumor's tight box grown by a fresh random margin
on each face, so the model learns to place a tumor of its own shape anywhere inside a loose box.

Conventions: batch-first tensors `(B, 1, h, w, d)`; boxes are int64 `(B, 6)` rows
`(x0, y0, z0, x1, y1, z1)`, half-open (`x0 <= x < x1`), like numpy slices (docs/DESIGN.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_mask(m: torch.Tensor, name: str) -> None:
    if m.ndim != 5 or m.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, X, Y, Z), got {tuple(m.shape)}")


def _check_boxes(boxes: torch.Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 6:
        raise ValueError(f"boxes must have shape (B, 6), got {tuple(boxes.shape)}")


def downsample_mask(M: torch.Tensor, factor: int) -> torch.Tensor:
    """Image-grid mask `(B, 1, X, Y, Z)` -> latent-grid tumor fraction `(B, 1, X/f, Y/f, Z/f)` in [0, 1].

    Average pooling (docs/METHOD.md's choice) keeps every tumor voxel visible: a latent voxel is > 0 as soon
    as one of its f^3 image voxels is tumor.

    Args:
        M: binary (or soft) mask on the image grid.
        factor: the VAE's downsampling factor; every spatial size must be divisible by it.
    """
    _check_mask(M, "mask")
    if any(size % factor for size in M.shape[2:]):
        raise ValueError(f"mask size {tuple(M.shape[2:])} is not divisible by the latent factor {factor}")
    return F.avg_pool3d(M.float(), kernel_size=factor, stride=factor)


def tight_box(m: torch.Tensor) -> torch.Tensor:
    """The smallest half-open box holding every voxel where `m > 0`, per batch item: `(B, 6)` int64.

    Raises:
        ValueError: when a batch item has an empty mask (it has no box).
    """
    _check_mask(m, "mask")
    rows = []
    for b in range(m.shape[0]):
        idx = torch.nonzero(m[b, 0] > 0)  # (N, 3)
        if idx.numel() == 0:
            raise ValueError(f"batch item {b} has an empty mask, so it has no tumor box")
        rows.append(torch.cat([idx.min(dim=0).values, idx.max(dim=0).values + 1]))
    return torch.stack(rows).to(torch.int64)  # (B, 6)


def expand_box(
    tight: torch.Tensor,
    *,
    shape: tuple[int, int, int],
    alpha: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Grow each face of `tight` by its own offset delta ~ U(0, alpha * L), then clip to the volume.

    Offsets are floored to whole voxels, so each is an integer in [0, alpha * L] and the result always
    contains `tight`.

    Args:
        tight: `(B, 6)` boxes to grow.
        shape: the grid's spatial size `(h, w, d)`; L is the size along the face's axis.
        alpha: expansion factor (0 keeps the tight box).
        generator: seeded source of the offsets (same seed, same boxes).
    """
    _check_boxes(tight)
    if len(shape) != 3:
        raise ValueError(f"shape must be the three spatial sizes, got {tuple(shape)}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    sizes = torch.tensor(list(shape) * 2, dtype=torch.float64, device=gen_device)  # (6,)
    u = torch.rand(tight.shape[0], 6, generator=generator, dtype=torch.float64, device=gen_device)
    offsets = torch.floor(u * alpha * sizes).to(torch.int64).to(tight.device)  # (B, 6)
    signs = torch.tensor([-1, -1, -1, 1, 1, 1], dtype=torch.int64, device=tight.device)
    grown = tight.to(torch.int64) + signs * offsets
    upper = torch.tensor(list(shape), dtype=torch.int64, device=tight.device)
    lo = grown[:, :3].clamp(min=0)
    hi = torch.minimum(grown[:, 3:], upper)
    return torch.cat([lo, hi], dim=1)  # (B, 6)


def box_indicator(boxes: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Half-open boxes `(B, 6)` -> float indicator `(B, 1, *shape)`, 1 inside the box and 0 outside."""
    _check_boxes(boxes)
    axes = []
    for axis, size in enumerate(shape):
        coord = torch.arange(size, device=boxes.device)  # (L,)
        inside = (coord[None] >= boxes[:, axis, None]) & (coord[None] < boxes[:, axis + 3, None])  # (B, L)
        axes.append(inside.float())
    ind = axes[0][:, :, None, None] * axes[1][:, None, :, None] * axes[2][:, None, None, :]  # (B, h, w, d)
    return ind[:, None]  # (B, 1, h, w, d)


def scale_box(boxes: torch.Tensor, factor: int) -> torch.Tensor:
    """Latent-grid boxes -> the same boxes on the image grid (each latent voxel covers f image voxels)."""
    _check_boxes(boxes)
    return boxes.to(torch.int64) * factor


def latent_box_from_image_box(boxes: torch.Tensor, factor: int) -> torch.Tensor:
    """Image-grid boxes -> the smallest latent-grid boxes covering them (floor the start, ceil the end)."""
    _check_boxes(boxes)
    boxes = boxes.to(torch.int64)
    start = torch.div(boxes[:, :3], factor, rounding_mode="floor")
    end = -torch.div(-boxes[:, 3:], factor, rounding_mode="floor")  # ceil division
    return torch.cat([start, end], dim=1)


def bapmg(
    m: torch.Tensor,
    *,
    alpha: float,
    generator: torch.Generator | None = None,
    ablate: bool = False,
    return_boxes: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The training-time box indicator B for a latent mask `m` `(B, 1, h, w, d)`.

    Args:
        m: tumor fraction on the latent grid.
        alpha: expansion factor of the random margins.
        generator: seeded source of the margins.
        ablate: the "no BA-PMG" ablation: B is the binary mask `m > 0` itself, no box, no margins.
        return_boxes: also return the `(B, 6)` boxes (the tight boxes when ablated).
    """
    tight = tight_box(m)
    if ablate:
        indicator = (m > 0).float()
        boxes = tight
    else:
        boxes = expand_box(tight, shape=tuple(m.shape[2:]), alpha=alpha, generator=generator)
        indicator = box_indicator(boxes, tuple(m.shape[2:]))
    return (indicator, boxes) if return_boxes else indicator
