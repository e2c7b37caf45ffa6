"""The one refiner path (VMR, docs/METHOD.md section 3): training, `sample_tumor` and the synthesis API
all refine a sampled mask here, on the same crop, so the refiner's GroupNorm meets at synthesis the
statistics it was trained on. Without a refiner (the "no VMR" ablation) the coarse latent mask is
upsampled (`upsample_coarse_mask`, also the fallback of `region_decode`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tumorgen.models.tumorgen import TumorGenModels
from tumorgen.models.vae import decode_with_features


def upsample_coarse_mask(m_hat: torch.Tensor, factor: int) -> torch.Tensor:
    """The "no VMR" mask: the latent mask `(B, 1, h, w, d)` in [0, 1] trilinearly upsampled by `factor`."""
    size = tuple(n * factor for n in m_hat.shape[2:])
    return F.interpolate(m_hat, size=size, mode="trilinear", align_corners=False)  # (B, 1, f h, f w, f d)


def refiner_crop_slices(box: torch.Tensor, margin: int) -> list[tuple[slice, slice, slice]]:
    """Per sample, the latent-grid slices of the crop around its own box plus `margin` latent voxels.

    Every sample's crop has the same size (the largest box of the batch plus the margins, clipped to
    the volume) so the crops stack into one batch; each is centered on its own box and shifted to stay
    inside the volume. Per-sample crops keep the decode small even when the batch's tumors lie far
    apart. Training and synthesis both cut the refiner's input with this function, so the refiner
    (whose GroupNorm sees the crop's statistics) meets at synthesis the crops it was trained on.
    """
    if margin < 0:
        raise ValueError(f"refiner_margin must be >= 0, got {margin}")
    shape = box.shape[2:]  # (h, w, d)
    starts, lengths = [], []
    for axis, size in enumerate(shape):
        other = tuple(a for a in range(3) if a != axis)
        occupied = box[:, 0].sum(dim=tuple(o + 1 for o in other)) > 0  # (B, size)
        lo = torch.stack([torch.nonzero(row).min() for row in occupied])  # (B,)
        hi = torch.stack([torch.nonzero(row).max() + 1 for row in occupied])  # (B,)
        length = min(int((hi - lo).max()) + 2 * margin, size)
        start = ((lo + hi - length) // 2).clamp(0, size - length)  # centered on each box, kept inside
        starts.append([int(v) for v in start])
        lengths.append(length)
    return [tuple(slice(starts[a][b], starts[a][b] + lengths[a]) for a in range(3)) for b in range(box.shape[0])]


def scale_slices(crop: tuple[slice, slice, slice], factor: int) -> tuple[slice, slice, slice]:
    """Latent-grid slices -> the same region on the image grid."""
    return tuple(slice(c.start * factor, c.stop * factor) for c in crop)


def _refiner_crops(box: torch.Tensor, margin: int | None, factor: int):
    """Two functions cutting each sample's refiner crop (`refiner_crop_slices`) from a latent-grid and
    from an image-grid tensor, and the crops; identity and None when `margin` is None (the whole
    volume, docs/METHOD.md)."""
    if margin is None:
        return (lambda x: x), (lambda x: x), None
    crops = refiner_crop_slices(box, margin)

    def cut(x: torch.Tensor, scale: int) -> torch.Tensor:
        return torch.stack([x[(b, slice(None), *scale_slices(crop, scale))]  # (C, X', Y', Z')
                            for b, crop in enumerate(crops)])  # (B, C, X', Y', Z')

    return (lambda x: cut(x, 1)), (lambda x: cut(x, factor)), crops


def refiner_logits(models: TumorGenModels, z_hat: torch.Tensor, m_hat: torch.Tensor, box: torch.Tensor, *,
                   scale_factor: float, margin: int | None):
    """The one refiner path: training, `sample_tumor` and the synthesis API all refine through here.

    Decodes `z_hat` (scaled latents) with features on the refiner's crop (`margin` latent voxels around
    each sample's box, or the whole volume when None) and runs the VMR on that crop, so the refiner's
    GroupNorm meets at synthesis exactly the statistics it was trained on.

    Args:
        models: the networks (a refiner is needed).
        z_hat, m_hat: (B, c, h, w, d) scaled latents and (B, 1, h, w, d) mask in [0, 1].
        box: (B, 1, h, w, d) latent box indicator.
        scale_factor: the VAE's latent scale.
        margin: `flow.refiner_margin`.

    Returns:
        (logits (B, 1, X', Y', Z') on the crop, a function cutting the same crop from an image-grid
        tensor, the per-sample latent crops or None for the whole volume).
    """
    crop_latent, crop_image, crops = _refiner_crops(box, margin, models.factor)
    with torch.no_grad():
        _, feats = decode_with_features(models.vae, crop_latent(z_hat) / scale_factor)
    return models.refiner(crop_latent(m_hat), feats), crop_image, crops


def refine_mask(models: TumorGenModels, z_hat: torch.Tensor, m_hat: torch.Tensor, box: torch.Tensor, *,
                scale_factor: float, margin: int | None) -> torch.Tensor:
    """Full-resolution mask probabilities (B, 1, X, Y, Z) from sampled latents: `refiner_logits`
    pasted into the volume (0 outside the refiner's crop), or, without a refiner ("no VMR"), the
    coarse mask upsampled."""
    size = tuple(n * models.factor for n in m_hat.shape[2:])
    if models.refiner is None:
        return upsample_coarse_mask(m_hat, models.factor)
    logits, _, crops = refiner_logits(models, z_hat, m_hat, box, scale_factor=scale_factor, margin=margin)
    if crops is None:
        return torch.sigmoid(logits)
    prob = torch.zeros((m_hat.shape[0], 1, *size), device=logits.device, dtype=logits.dtype)
    for b, crop in enumerate(crops):
        prob[(b, slice(None), *scale_slices(crop, models.factor))] = torch.sigmoid(logits[b])
    return prob
