"""TumorGen's training objective (eq. 7) and its sampler, on top of the pure pieces.

One function computes every loss term of ../shared/METHOD.md sections 1-4 for a batch, with each term
switchable for the paper's ablations; `sample_latents` runs synthesis steps 1-2 of section 5 and
`sample_tumor` adds step 3 (decode and refine). The training loop only calls `training_losses`; the
synthesis API (`synthesis.model_generator`) calls `sample_latents` and decodes per sample itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tumorgen.bbox import bapmg, box_indicator, downsample_mask, latent_box_from_image_box
from tumorgen.flow import interpolate, joint_target, one_step_estimate, sample_t, split_joint
from tumorgen.losses import coarse_loss, fine_loss, refiner_loss
from tumorgen.models.refiner import MaskRefiner
from tumorgen.models.vae import decode, decode_with_features, encode_mean, latent_factor
from tumorgen.models.velocity_unet import VelocityUNet
from tumorgen.sampling import euler_sample

ABLATIONS = frozenset({"no_bapmg", "no_coarse", "no_fine", "no_vmr"})
DEFAULT_WEIGHTS = {"coarse": 1.0, "fine": 0.5, "rec": 1.0}  # lambda_1..3 of eq. 7 (METHOD.md choice)
LOSS_KEYS = ("loss", "rfm", "coarse", "fine", "rec")


@dataclass(kw_only=True)
class TumorGenModels:
    """The three networks of TumorGen. The VAE is frozen (no gradients, eval mode) on construction.

    Args:
        vae: the trained KL-VAE (AutoencoderKL or AutoencoderKlMaisi).
        unet: the velocity network v_theta.
        refiner: the VAE-guided mask refiner, or None (the "no VMR" ablation).
    """

    vae: nn.Module
    unet: VelocityUNet
    refiner: MaskRefiner | None = None
    factor: int = field(init=False)

    def __post_init__(self) -> None:
        self.vae.requires_grad_(False)
        self.vae.eval()
        self.factor = latent_factor(self.vae)

    def _bare_unet(self) -> VelocityUNet:
        unet = self.unet
        for wrapper_attr in ("module", "_orig_mod"):  # see through DDP and torch.compile wrappers
            unet = getattr(unet, wrapper_attr, unet)
        return unet

    @property
    def latent_channels(self) -> int:
        return self._bare_unet().out_channels - 1

    @property
    def uptake_condition(self) -> bool:
        """Whether the U-Net takes the tumor's uptake as an extra input channel (`flow.uptake_condition`)."""
        return self._bare_unet().in_channels == 2 * self.latent_channels + 3

    def trainable(self) -> nn.ModuleDict:
        """The trained networks as one module: for optimizers, EMA and checkpoints (no VAE weights)."""
        modules = {"unet": self.unet}
        if self.refiner is not None:
            modules["refiner"] = self.refiner
        return nn.ModuleDict(modules)


def flow_condition(z_box: torch.Tensor, box: torch.Tensor, uptake: torch.Tensor | None,
                   models: TumorGenModels) -> torch.Tensor:
    """The U-Net's condition channels: `[z_B ; B]`, plus `B * u` when the model is uptake-conditioned.

    The uptake `u` (B,) is the tumor's mean SUV in model range (`intensity.tumor_uptake`); it is
    written inside the box only, like the box itself, so the condition stays local to the tumor.
    """
    parts = [z_box, box]
    if models.uptake_condition:
        if uptake is None:
            raise ValueError("this model is conditioned on the tumor's uptake (flow.uptake_condition): give one per sample")
        u = torch.as_tensor(uptake, dtype=box.dtype, device=box.device).reshape(-1, 1, 1, 1, 1)
        if u.shape[0] != box.shape[0]:
            raise ValueError(f"{u.shape[0]} uptake values for {box.shape[0]} samples: one each")
        parts.append(box * u)
    elif uptake is not None:
        raise ValueError("this model was trained without flow.uptake_condition: it cannot take an uptake")
    return torch.cat(parts, dim=1)


def _check_ablate(ablate: frozenset[str] | set[str] | tuple) -> frozenset[str]:
    ablate = frozenset(ablate)
    unknown = ablate - ABLATIONS
    if unknown:
        raise ValueError(f"unknown ablation(s) {sorted(unknown)}; choose from {sorted(ABLATIONS)}")
    return ablate


def training_losses(
    models: TumorGenModels,
    batch: dict[str, torch.Tensor],
    *,
    scale_factor: float,
    alpha: float,
    s: float = 1.0,
    time_sampling: str = "logit-normal",
    weights: dict[str, float] | None = None,
    ablate: frozenset[str] = frozenset(),
    run_refiner: bool = True,
    refiner_margin: int | None = None,
    outside_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """All loss terms of eq. 7 for one batch; gradients flow to the U-Net and the refiner only.

    Args:
        models: the networks (VAE frozen).
        batch: {"image": (B, 1, X, Y, Z) in [0, 1], "mask": (B, 1, X, Y, Z) in {0, 1}}; every mask must
            hold a tumor (BA-PMG needs its box). An optional "latent" (B, c, h, w, d), the already
            scaled `encode_mean(vae, image) * scale_factor`, skips the encode: the VAE is frozen, so a
            trainer can encode each volume once instead of every step. An optional "box"
            (B, 1, h, w, d), a latent box indicator already drawn by BA-PMG (box windows draw their
            box before cutting the window around it), replaces the BA-PMG draw here. An optional
            "context" (B, c, h, w, d), the scaled latents of the same windows with the box erased
            (`flow.erase_context`), is what the model is conditioned on and what the target holds
            outside the box: synthesis erases the box before encoding the same way. "uptake" (B,), the
            tumors' mean SUV in model range (`intensity.tumor_uptake`), is required by a model with
            `flow.uptake_condition` and refused by one without.
        scale_factor: the VAE's latent scale (1 / std of the training latents).
        alpha: BA-PMG expansion factor.
        s: half range of the mask channel in the joint target.
        time_sampling: "logit-normal" or "uniform".
        weights: lambda_1..3 as {"coarse", "fine", "rec"}; missing keys take DEFAULT_WEIGHTS.
        ablate: terms switched off, a subset of {"no_bapmg", "no_coarse", "no_fine", "no_vmr"}.
        run_refiner: decode and train the refiner on this step (decoding is the expensive part on a
            CPU, so the loop may run it every k-th step); "rec" is 0 when False.
        refiner_margin: None decodes and refines the whole volume (METHOD.md). An int runs the VMR
            only on the latent crop holding every box of the batch plus this many latent voxels on
            each side, and compares with the mask there: far cheaper on a CPU (the decode dominates);
            2-3 latent voxels keep the decoder's border effects away from the tumor.
        outside_weight: weight of the flow loss outside the box (1 inside). The sampler replaces the
            state outside the box by the known path, so what the model predicts there is never used.
        generator: the seeded source of boxes, noise and times (on the batch's device or the CPU).

    Returns:
        {"loss", "rfm", "coarse", "fine", "rec"}: scalar tensors; switched-off terms are 0.
    """
    ablate = _check_ablate(ablate)
    lam = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = set(lam) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; expected {sorted(DEFAULT_WEIGHTS)}")
    image, mask = batch["image"], batch["mask"].to(batch["image"].dtype)
    device = image.device
    gen_device = generator.device if generator is not None else torch.device("cpu")
    c = models.latent_channels

    if "latent" in batch:
        z = batch["latent"].float()  # (B, c, h, w, d)
    else:
        with torch.no_grad():  # float32 flow state even under a bf16 autocast
            z = encode_mean(models.vae, image).float() * scale_factor  # (B, c, h, w, d)
    m = downsample_mask(mask, models.factor)  # (B, 1, h, w, d)
    if "box" in batch:
        box = (m > 0).to(m.dtype) if "no_bapmg" in ablate else batch["box"].to(m.dtype)
    else:
        box = bapmg(m, alpha=alpha, generator=generator, ablate="no_bapmg" in ablate)
    if "context" in batch:  # the tumor inside the box, the erased scan around it
        context = batch["context"].float()
        z = box * z + (1.0 - box) * context
        z_box = context * (1.0 - box)
    else:
        z_box = z * (1.0 - box)
    y = joint_target(z, m, s=s)  # (B, c + 1, h, w, d)
    eps = torch.randn(y.shape, generator=generator, device=gen_device).to(device, y.dtype)
    t = sample_t(y.shape[0], kind=time_sampling, generator=generator, device=gen_device).to(device)
    x_t = interpolate(eps, y, t)
    cond = flow_condition(z_box, box, batch.get("uptake"), models)  # (B, c + 1 [+ 1], h, w, d)
    v_hat = models.unet(torch.cat([x_t, cond], dim=1), t)  # (B, c + 1, h, w, d)
    if outside_weight == 1.0:
        rfm = F.mse_loss(v_hat, y - eps)
    else:  # a weighted mean: inside the box 1, outside `outside_weight`
        w = outside_weight + (1.0 - outside_weight) * box  # (B, 1, h, w, d)
        rfm = (w * (v_hat - (y - eps)).pow(2)).sum() / (w.sum() * v_hat.shape[1])

    y_hat = one_step_estimate(x_t, v_hat, t)
    z_hat, m_hat = split_joint(y_hat, latent_channels=c, s=s)
    zero = torch.zeros((), device=device)
    coarse = coarse_loss(z_hat, z, box) if "no_coarse" not in ablate else zero
    fine = fine_loss(z_hat, z, m_hat) if "no_fine" not in ablate else zero
    rec = zero
    if run_refiner and "no_vmr" not in ablate and models.refiner is not None:
        logits, crop_image, _ = refiner_logits(models, z_hat.detach(), m_hat.detach(), box,
                                               scale_factor=scale_factor, margin=refiner_margin)
        rec = refiner_loss(logits, crop_image(mask))
    loss = rfm + lam["coarse"] * coarse + lam["fine"] * fine + lam["rec"] * rec
    return {"loss": loss, "rfm": rfm, "coarse": coarse, "fine": fine, "rec": rec}


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
    volume, METHOD.md)."""
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
        return F.interpolate(m_hat, size=size, mode="trilinear", align_corners=False)
    logits, _, crops = refiner_logits(models, z_hat, m_hat, box, scale_factor=scale_factor, margin=margin)
    if crops is None:
        return torch.sigmoid(logits)
    prob = torch.zeros((m_hat.shape[0], 1, *size), device=logits.device, dtype=logits.dtype)
    for b, crop in enumerate(crops):
        prob[(b, slice(None), *scale_slices(crop, models.factor))] = torch.sigmoid(logits[b])
    return prob


@torch.no_grad()
def sample_latents(
    models: TumorGenModels,
    image: torch.Tensor,
    boxes_image_grid: torch.Tensor,
    *,
    scale_factor: float,
    steps: int = 10,
    generator: torch.Generator | None = None,
    s: float = 1.0,
    noise: torch.Tensor | None = None,
    latents: torch.Tensor | None = None,
    uptake: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthesis steps 1-2 (METHOD.md section 5): sampled latents and latent mask inside each box.

    Choice: outside the box both the latents and the mask channel follow the known path (latents of
    the scan, mask "no tumor" = -s), so the decoded scan and the mask stay unchanged there.

    Args:
        models: the trained networks.
        image: scans `(B, 1, X, Y, Z)` in model range, sizes divisible by the latent factor.
        boxes_image_grid: half-open boxes `(B, 6)` in image voxels; each is covered on the latent grid.
        scale_factor: the VAE's latent scale.
        steps: Euler steps N.
        generator: seeded source of the noise (on the image's device or the CPU).
        s: half range of the mask channel (as in training).
        noise: x_0 `(B, c + 1, h, w, d)` drawn by the caller (e.g. one generator per sample, so that a
            sample does not depend on its batch); default: drawn here from `generator`.
        latents: `encode_mean(vae, image)` (unscaled) when the caller already has it (e.g. encoded
            one sample at a time); default: encoded here.
        uptake: `(B,)` each tumor's mean SUV in model range, for a model with `flow.uptake_condition`.

    Returns:
        (z_hat (B, c, h, w, d) scaled latents (divide by `scale_factor` to decode), m_hat (B, 1, h, w, d)
        in [0, 1], latent_boxes (B, 6) int64: the boxes on the latent grid, clipped).
    """
    c, f = models.latent_channels, models.factor
    device = image.device
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if latents is None:
        latents = encode_mean(models.vae, image)
    z = latents.float() * scale_factor  # (B, c, h, w, d), float32 flow state
    latent_shape = tuple(z.shape[2:])
    boxes = latent_box_from_image_box(boxes_image_grid.to(device), f)
    upper = torch.tensor(latent_shape, device=device)
    boxes = torch.cat([boxes[:, :3].clamp(min=0), torch.minimum(boxes[:, 3:], upper)], dim=1)
    if ((boxes[:, 3:] - boxes[:, :3]) <= 0).any():
        raise ValueError(f"a box is empty or outside the volume: {boxes_image_grid.tolist()}")
    box = box_indicator(boxes, latent_shape)  # (B, 1, h, w, d)
    cond = flow_condition(z * (1.0 - box), box, uptake, models)  # (B, c + 1 [+ 1], h, w, d)
    known = torch.cat([z, torch.full_like(box, -s)], dim=1)  # (B, c + 1, h, w, d)
    if noise is None:
        noise = torch.randn(known.shape, generator=generator, device=gen_device)
    elif tuple(noise.shape) != tuple(known.shape):
        raise ValueError(f"noise {tuple(noise.shape)} must have the joint state's shape {tuple(known.shape)}")
    noise = noise.to(device, z.dtype)
    x1 = euler_sample(models.unet, noise, cond=cond, steps=steps, known=known, keep=1.0 - box)
    z_hat, m_hat = split_joint(x1.float(), latent_channels=c, s=s)
    return z_hat, m_hat, boxes


@torch.no_grad()
def sample_tumor(
    models: TumorGenModels,
    image: torch.Tensor,
    boxes_image_grid: torch.Tensor,
    *,
    scale_factor: float,
    steps: int = 10,
    generator: torch.Generator | None = None,
    s: float = 1.0,
    refiner_margin: int | None = None,
    uptake: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthesis steps 1-3 (METHOD.md section 5): `sample_latents`, then decode and refine the mask.

    Args: as `sample_latents`; `refiner_margin` as the model was trained with (`flow.refiner_margin`).

    Returns:
        (image_hat (B, 1, X, Y, Z) decoded in model range, mask_prob (B, 1, X, Y, Z) in [0, 1],
        mask_latent (B, 1, h, w, d) = m_hat in [0, 1]).
    """
    z_hat, m_hat, latent_boxes = sample_latents(models, image, boxes_image_grid, scale_factor=scale_factor,
                                                steps=steps, generator=generator, s=s, uptake=uptake)
    image_hat = decode(models.vae, z_hat / scale_factor)
    box = box_indicator(latent_boxes, tuple(m_hat.shape[2:]))
    mask_prob = refine_mask(models, z_hat, m_hat, box, scale_factor=scale_factor, margin=refiner_margin)
    return image_hat, mask_prob, m_hat
