"""TumorGen's training objective (eq. 7) on top of the pure pieces.

One function computes every loss term of docs/METHOD.md sections 1-4 for a batch, with each term
switchable for the paper's ablations. The training loop only calls `training_losses`; the refiner
runs through `models.refine.refiner_logits`, the same crop and path synthesis uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tumorgen.bbox import bapmg, downsample_mask
from tumorgen.config import ABLATIONS, FlowConfig
from tumorgen.flow import interpolate, joint_target, one_step_estimate, sample_t, split_joint
from tumorgen.losses import coarse_loss, fine_loss, refiner_loss
from tumorgen.models import refine
from tumorgen.models.tumorgen import TumorGenModels, flow_condition
from tumorgen.models.uptake_embedding import UNTOLD
from tumorgen.models.vae import encode_mean

# lambda_1..3 of eq. 7: the config's defaults (FlowConfig, with their "why"), the one table of them
DEFAULT_WEIGHTS = {"coarse": FlowConfig.coarse_weight, "fine": FlowConfig.fine_weight, "rec": FlowConfig.rec_weight}
LOSS_KEYS = ("loss", "rfm", "coarse", "fine", "rec")


def _check_ablate(ablate: frozenset[str] | set[str] | tuple) -> frozenset[str]:
    ablate = frozenset(ablate)
    unknown = ablate - frozenset(ABLATIONS)
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
    uptake_dropout: float = 0.0,
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
        refiner_margin: None decodes and refines the whole volume (docs/METHOD.md). An int runs the VMR
            only on the latent crop holding every box of the batch plus this many latent voxels on
            each side, and compares with the mask there: far cheaper on a CPU (the decode dominates);
            2-3 latent voxels keep the decoder's border effects away from the tumor.
        outside_weight: weight of the flow loss outside the box (1 inside). The sampler replaces the
            state outside the box by the known path, so what the model predicts there is never used.
        uptake_dropout: share of the batch told no uptake (`UNTOLD`), drawn per sample: the untold
            velocity that classifier-free guidance needs at synthesis.
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
    uptake = batch.get("uptake")
    if uptake is not None and uptake_dropout > 0.0:
        dropped = torch.rand(uptake.shape, generator=generator, device=gen_device).to(device) < uptake_dropout
        uptake = torch.where(dropped, torch.full_like(uptake, UNTOLD), uptake)  # (B,)
    cond = flow_condition(z_box, box, uptake, models)  # (B, c + 1 [+ 1], h, w, d)
    v_hat = models.velocity(torch.cat([x_t, cond], dim=1), t, uptake)  # (B, c + 1, h, w, d)
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
        logits, crop_image, _ = refine.refiner_logits(models, z_hat.detach(), m_hat.detach(), box,
                                                      scale_factor=scale_factor, margin=refiner_margin)
        rec = refiner_loss(logits, crop_image(mask))
    loss = rfm + lam["coarse"] * coarse + lam["fine"] * fine + lam["rec"] * rec
    return {"loss": loss, "rfm": rfm, "coarse": coarse, "fine": fine, "rec": rec}
