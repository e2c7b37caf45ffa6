"""The spatial constraints and the refiner's loss (docs/METHOD.md sections 2-3), and the VAE's KL term.

coarse: L1 between the one-step latents and the true latents, inside the box (where the tumor goes);
fine:   1 - 3D SSIM inside the generated mask (structure of the tumor itself);
refiner: BCE + soft Dice of the full-resolution mask;
kl:     KL(N(mu, sigma^2) || N(0, 1)) of the VAE's posterior (stage 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def coarse_loss(z_hat: torch.Tensor, z: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Mean absolute latent error over the voxels of `box` `(B, 1, ...)` and all c channels (eq. 4)."""
    channels = z.shape[1]
    inside = box.sum() * channels
    return (box * (z_hat - z)).abs().sum() / inside.clamp(min=1.0)


def _gaussian_kernel(window: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(window, device=device, dtype=dtype) - (window - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of every channel, same size (replicate padding)."""
    channels = x.shape[1]
    pad = kernel.numel() // 2
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        weight = kernel.reshape(shape).expand(channels, 1, *shape[2:])  # (C, 1, k|1, k|1, k|1)
        padding = [0, 0, 0, 0, 0, 0]
        padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = pad  # F.pad lists the last axis first
        x = F.conv3d(F.pad(x, padding, mode="replicate"), weight, groups=channels)
    return x


def ssim3d(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    window: int = 5,
    sigma: float = 1.5,
    data_range: float | torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity of `(B, C, X, Y, Z)` volumes with a Gaussian window, per channel.

    The output keeps the input's size (replicate padding), because latent grids are small and their
    border is a large share of them.

    Why not MONAI's `compute_ssim_and_cs`: its map is this one without the border (it convolves
    without padding: a 16^3 latent grid keeps only 12^3, and a tumor at the box edge drops out of the
    fine term), it takes one data range for the whole batch where the fine term needs one per item,
    and it convolves with the full 5^3 kernel: padded and called once per item, it gives the same
    values (`tests/test_losses.py` checks ours against it) but took 77 ms against this separable
    blur's 27 ms for a batch of 8 4x16^3 latents with the backward pass (one CPU thread), ~6% of a
    CPU training step.

    Args:
        a, b: volumes to compare.
        window: Gaussian window size (odd).
        sigma: Gaussian standard deviation in voxels.
        data_range: L in C1 = (0.01 L)^2, C2 = (0.03 L)^2: a float, a `(B,)` tensor, or None for the
            per-item range of both inputs (detached, at least 1e-3).
        reduction: "mean" -> scalar over the batch, "none" -> `(B,)`.
    """
    if a.shape != b.shape or a.ndim != 5:
        raise ValueError(
            f"ssim3d needs two (B, C, X, Y, Z) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if window % 2 == 0:
        raise ValueError(f"window must be odd, got {window}")
    batch = a.shape[0]
    if data_range is None:
        both = torch.cat([a, b], dim=1).detach().reshape(batch, -1)  # (B, N)
        data_range = (both.max(dim=1).values - both.min(dim=1).values).clamp(min=1e-3)
    L = torch.as_tensor(data_range, dtype=a.dtype, device=a.device)
    L = L.reshape(-1, 1, 1, 1, 1) if L.ndim == 1 else L  # (B, 1, 1, 1, 1)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    kernel = _gaussian_kernel(window, sigma, a.device, a.dtype)
    mu_a, mu_b = _blur(a, kernel), _blur(b, kernel)
    var_a = _blur(a * a, kernel) - mu_a**2
    var_b = _blur(b * b, kernel) - mu_b**2
    cov = _blur(a * b, kernel) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    per_item = ssim_map.reshape(batch, -1).mean(dim=1)  # (B,)
    if reduction == "none":
        return per_item
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_item.mean()


def fine_loss(z_hat: torch.Tensor, z: torch.Tensor, m_hat: torch.Tensor, *, window: int = 5) -> torch.Tensor:
    """1 - SSIM(m_hat * z_hat, m_hat * z) (eq. 5).

    Choices: `m_hat` is detached here, so the term shapes the latents inside the generated tumor and
    cannot be lowered by shrinking the mask (an empty mask would make both sides zero and SSIM 1); the
    SSIM constants use the range of the true latents `z`, not of the masked ones, which are near zero
    wherever the mask is.
    """
    weight = m_hat.detach()
    flat = z.detach().reshape(z.shape[0], -1)  # (B, N)
    data_range = (flat.amax(dim=1) - flat.amin(dim=1)).clamp(min=1e-3)
    return 1.0 - ssim3d(weight * z_hat, weight * z, window=window, data_range=data_range)


def dice_loss(probs: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per item, averaged over the batch."""
    dims = tuple(range(1, probs.ndim))
    inter = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


def refiner_loss(logits: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits + soft Dice of the refined mask against the true mask (eq. 6)."""
    target = M.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target) + dice_loss(torch.sigmoid(logits), target)


def kl_divergence(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over (C, X, Y, Z), averaged over the batch."""
    var = sigma.float().pow(2)
    kl = 0.5 * (mu.float().pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1.0)
    return kl.flatten(1).sum(1).mean()
