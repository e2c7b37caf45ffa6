"""The trained TumorGen model as the `generate` callable the synthesis pipeline injects.

`synthesis.pipeline` knows nothing about networks: it hands windows, boxes and one seed per sample to
`generate(window_image, boxes_in_window, seeds)`. This module turns a loaded run folder into that
callable (docs/METHOD.md section 5, steps 1-3: `sample_latents`, then the decode and the refiner), and
`sample_tumor` does the same steps for a batch of whole volumes.

Why each sample draws its own noise: the pipeline's contract is that sample b draws all of its noise
from seeds[b], so a sample never depends on the batch it ran in (`--batch 2` gives the same tumors as
`--batch 1`). Each sample's noise comes from its own `torch.Generator`; the noises are stacked.
The Euler loop then runs once for the whole batch (`batch_unet=True`, the default on CUDA) or once
per sample (the default on the CPU). On the CPU a batched 3D convolution differs from the one-sample
result in the last bits (measured: ~1e-7 on the U-Net's output), so only the per-sample loop keeps
samples bit-identical across batch sizes, although batching makes a U-Net step ~3x cheaper per sample
there (benchmarks/README.md); the VAE's encode and decode always
run one sample at a time for the same reason (there the batched difference is ~1e-5).

`decode="region"` decodes only the box plus a margin (`synthesis.region_decode`), the part the pipeline
reads, with GroupNorm statistics taken from one full pass over the window's own latents (shared by
the samples synthesized into the same window). It is not the default: the result is close to the
full decode inside the box but not equal (~6e-3 of the image range, measured in
benchmarks/README.md), and it only saves time when many samples share a window larger than the box
plus twice the margin (7 latent voxels).

Inference runs under `torch.inference_mode`; on CUDA the networks run in bfloat16 autocast (the
outputs come back as float32), on the CPU in float32.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from tumorgen.bbox import box_indicator, latent_box_from_image_box
from tumorgen.data.erase import erase_box
from tumorgen.data.intensity import suv_to_model
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.flow import split_joint
from tumorgen.models.refine import refine_mask
from tumorgen.models.tumorgen import TumorGenModels, flow_condition
from tumorgen.models.uptake_embedding import UNTOLD
from tumorgen.models.vae import decode as decode_vae
from tumorgen.models.vae import encode_mean
from tumorgen.sampling import euler_sample
from tumorgen.training.run_folder import LoadedRun

DECODE_MODES = ("full", "region")


def resolve_inference_device(preference: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else the CPU; "cuda" without a GPU is a user error."""
    from tumorgen.training.distributed import resolve_device

    if isinstance(preference, torch.device):
        return preference
    if preference not in ("auto", "cpu", "cuda") and not str(preference).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {preference!r}")
    if str(preference).startswith("cuda:"):
        return torch.device(preference)
    return resolve_device(preference)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def erase_in_windows(windows: torch.Tensor, boxes: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Each window with its box erased (`data.erase`), the grain drawn from the sample's seed."""
    out = [torch.from_numpy(erase_box(w[0].float().cpu().numpy(), [int(v) for v in b],
                                      rng=np.random.default_rng([int(s), 3])))
           for w, b, s in zip(windows, boxes.tolist(), seeds)]
    return torch.stack(out)[:, None].to(windows.device, windows.dtype)


def uptake_for_samples(run: LoadedRun, seeds: list[int], suv_mean: float | None) -> torch.Tensor | None:
    """Each sample's uptake condition `(B,)` in model range, or None for a model without one.

    A model trained with `flow.uptake_condition` is told how hot to make the tumor: the user's mean
    SUV, or else one training tumor's mean SUV (`data.json`'s `tumor_uptake_suv`) drawn from the
    sample's own seed, so the generated uptakes follow the training tumors' and a sample still
    depends on its seed alone.
    """
    if not run.models.uptake_condition:
        if suv_mean is not None:
            raise TumorGenError(f"the model in {run.run_dir} was trained without flow.uptake_condition: "
                                "it cannot be given a mean SUV (drop --suv-mean)")
        return None
    info = run.data_info
    suv_max = float(info["suv_max"])
    if suv_mean is not None:
        if not 0.0 < float(suv_mean) <= suv_max:
            raise TumorGenError(f"mean SUV {suv_mean} is outside the model's range (0, {suv_max:g}]")
        suvs = [float(suv_mean)] * len(seeds)
    else:
        pool = info.get("tumor_uptake_suv")
        if not pool:
            raise fail_on(run.run_dir / "data.json", "has no tumor_uptake_suv for its uptake-conditioned model")
        suvs = [float(np.random.default_rng([int(s), 5]).choice(pool)) for s in seeds]
    return torch.from_numpy(suv_to_model(suvs, suv_max=suv_max, kind=info.get("intensity", "linear")))


def roundtrip_generator(run: LoadedRun, *, device: torch.device | None = None) -> Callable:
    """The window through the run's VAE and back, no flow: the pipeline's `generate` contract, returning
    the decoded window and an empty mask.

    What the latent space can hold at all: a real tumor encoded and decoded, then pasted back through the
    same window and seam as a generated one (the paired protocol's `vae-roundtrip` row, given the real
    scan instead of the erased one). Deterministic: the posterior mean, no sampling.
    """
    if device is None:
        device = next(run.models.vae.parameters()).device

    def generate(window_image: torch.Tensor, boxes_in_window: torch.Tensor, seeds: list[int]):
        with torch.inference_mode(), _autocast(device):
            windows = window_image.to(device)
            images = torch.cat([decode_vae(run.models.vae, encode_mean(run.models.vae, windows[b : b + 1]))
                                for b in range(windows.shape[0])])
        images = images.float().cpu()
        return images, torch.zeros_like(images)

    return generate


def model_generator(
    run: LoadedRun,
    *,
    steps: int | None = None,
    device: torch.device | None = None,
    decode: str = "full",
    margin: int | None = None,
    batch_unet: bool | None = None,
    suv_mean: float | None = None,
    guidance: float | None = None,
) -> Callable:
    """Wrap a loaded run as `generate(window_image, boxes_in_window, seeds) -> (image_hat, mask_prob)`.

    Args:
        run: from `training.run_folder.load_run` (its models already on `device`).
        steps: Euler steps N of the flow sampler; None: the run's `flow.sample_steps`.
        device: where the models are; default: the device of the U-Net's parameters.
        decode: "full" (decode the whole window, exact) or "region" (decode the box plus `margin`
            latent voxels; outside that region the image is the input window and the mask 0; close
            to "full" inside the box, see the module docstring).
        margin: latent voxels around the box for "region" (default `region_decode.DEFAULT_MARGIN`).
        batch_unet: one batched Euler loop (True) or one per sample (False, bit-identical across
            batch sizes); default: batched on CUDA only.
        suv_mean: the tumors' mean SUV, for a model trained with `flow.uptake_condition`; default: each
            sample draws one training tumor's (`uptake_for_samples`).
        guidance: classifier-free guidance scale toward a told `suv_mean` (`guided_velocity`); None: the
            run's `flow.guidance`. A drawn uptake is sampled with guidance 1: pushed toward a training
            tumor's uptake that may not suit the box, the tumors got worse (validation split, r4).

    Returns:
        The callable of `synthesis.pipeline`'s contract; its outputs are float32 on the CPU.
    """
    from tumorgen.synthesis.region_decode import DEFAULT_MARGIN, decode_region, paste_region, reference_statistics

    steps = run.config.flow.sample_steps if steps is None else steps
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    steps = int(steps)
    uptake_for_samples(run, [0], suv_mean)  # refuse a bad suv_mean now, not at the first sample
    told_guidance = check_guidance(run, guidance)  # a bad scale is refused even where the uptake is drawn
    guidance = told_guidance if suv_mean is not None else 1.0
    margin = DEFAULT_MARGIN if margin is None else int(margin)
    if device is None:
        device = next(run.models.unet.parameters()).device
    models, scale = run.models, run.scale_factor
    if batch_unet is None:
        batch_unet = torch.device(device).type == "cuda"

    cache: dict = {}  # the last window's reference statistics: samples into one window share them

    def window_statistics(window: torch.Tensor, z: torch.Tensor):
        if "window" not in cache or not torch.equal(cache["window"], window):
            m_ref = torch.zeros((1, 1, *z.shape[2:]), device=z.device, dtype=z.dtype)
            cache.update(window=window.clone(), stats=reference_statistics(models.vae, models.refiner, z, m_ref))
        return cache["stats"]

    refiner_margin = run.config.flow.refiner_margin
    erase_context = run.config.flow.erase_context
    def decode_one(z_hat: torch.Tensor, m_hat: torch.Tensor, window: torch.Tensor, z: torch.Tensor,
                   latent_box: list[int]):
        if decode == "full":  # the training path's refiner (refine.refine_mask): same crop, same statistics
            box = box_indicator(torch.as_tensor([latent_box]), tuple(m_hat.shape[2:])).to(m_hat)
            return decode_vae(models.vae, z_hat / scale), refine_mask(models, z_hat, m_hat, box, scale_factor=scale,
                                                                      margin=refiner_margin)
        image_region, logits_region, slices = decode_region(models.vae, models.refiner, z_hat / scale, m_hat,
                                                            latent_box, margin=margin,
                                                            stats=window_statistics(window, z))
        image_hat = paste_region(window.to(image_region.dtype), image_region, slices)  # (1, 1, Sx, Sy, Sz)
        mask_prob = paste_region(torch.zeros_like(image_hat), torch.sigmoid(logits_region), slices)
        return image_hat, mask_prob

    def generate(window_image: torch.Tensor, boxes_in_window: torch.Tensor, seeds: list[int]):
        if window_image.shape[0] != len(seeds) or boxes_in_window.shape[0] != len(seeds):
            raise ValueError(f"{window_image.shape[0]} windows, {boxes_in_window.shape[0]} boxes and "
                             f"{len(seeds)} seeds: one each per sample")
        images, masks = [], []
        with torch.inference_mode(), _autocast(device):
            windows = window_image.to(device)
            if erase_context:  # condition on the scan with the box erased, as in training
                windows = erase_in_windows(windows, boxes_in_window, seeds)
            z = torch.cat([encode_mean(models.vae, windows[b : b + 1]) for b in range(len(seeds))])  # (B, c, h, w, d)
            joint_shape = (1, models.latent_channels + 1, *z.shape[2:])
            noise = torch.cat([torch.randn(joint_shape, generator=torch.Generator(device=device).manual_seed(int(s)),
                                           device=device) for s in seeds])  # (B, c + 1, h, w, d)
            uptake = uptake_for_samples(run, seeds, suv_mean)  # (B,) or None
            groups = [slice(0, len(seeds))] if batch_unet else [slice(b, b + 1) for b in range(len(seeds))]
            sampled = [sample_latents(models, windows[g], boxes_in_window[g].to(device), scale_factor=scale,
                                      steps=steps, noise=noise[g], latents=z[g], s=run.config.flow.s,
                                      uptake=None if uptake is None else uptake[g].to(device), guidance=guidance)
                       for g in groups]
            z_hat, m_hat, latent_boxes = (torch.cat(parts) for parts in zip(*sampled))  # (B, ...) each
            for b in range(len(seeds)):
                image_hat, mask_prob = decode_one(z_hat[b : b + 1], m_hat[b : b + 1], windows[b : b + 1],
                                                  z[b : b + 1], latent_boxes[b].tolist())
                images.append(image_hat.float().clamp(0.0, 1.0).cpu())  # (1, 1, Sx, Sy, Sz)
                masks.append(mask_prob.float().clamp(0.0, 1.0).cpu())  # (1, 1, Sx, Sy, Sz)
        return torch.cat(images), torch.cat(masks)  # (B, 1, Sx, Sy, Sz) each

    return generate


def check_guidance(run: LoadedRun, guidance: float | None) -> float:
    """The guidance scale to sample with: the user's, or the run's `flow.guidance`; refused where the
    model never learnt the untold velocity that guidance steers from."""
    guidance = float(run.config.flow.guidance if guidance is None else guidance)
    if guidance < 0:
        raise TumorGenError(f"guidance must be >= 0, got {guidance:g}")
    if guidance != 1.0 and not (run.models.uptake_condition and run.config.flow.uptake_dropout > 0):
        raise TumorGenError(f"the model in {run.run_dir} was trained without flow.uptake_dropout: it cannot be "
                            "guided toward an uptake (use guidance 1)")
    return guidance


def guided_velocity(models: TumorGenModels, uptake: torch.Tensor | None, *, guidance: float = 1.0,
                    cond_untold: torch.Tensor | None = None) -> Callable:
    """The velocity the sampler integrates: `(x_in (B, C + C_cond, ...), t (B,)) -> v (B, C, ...)`.

    With `guidance` w != 1, classifier-free guidance (Ho & Salimans 2022): v_untold + w (v_told -
    v_untold), both from one U-Net call on the doubled batch; `cond_untold` is the condition with the
    uptake `UNTOLD` (the sampler hands over the told one inside `x_in`).
    """
    if guidance == 1.0:
        return lambda x_in, t: models.velocity(x_in, t, uptake)
    if uptake is None or cond_untold is None:
        raise ValueError("guidance needs the uptake and the untold condition")
    state_channels = models.latent_channels + 1
    untold = torch.full_like(uptake, UNTOLD)

    def velocity(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_untold = torch.cat([x_in[:, :state_channels], cond_untold], dim=1)  # (B, C + C_cond, ...)
        v_told, v_untold = models.velocity(torch.cat([x_in, x_untold]), torch.cat([t, t]),
                                           torch.cat([uptake, untold])).chunk(2)  # (B, C, ...) each
        return v_untold + guidance * (v_told - v_untold)

    return velocity


@torch.no_grad()
def sample_latents(
    models: TumorGenModels,
    image: torch.Tensor,
    boxes_image_grid: torch.Tensor,
    *,
    scale_factor: float,
    steps: int,
    generator: torch.Generator | None = None,
    s: float = 1.0,
    noise: torch.Tensor | None = None,
    latents: torch.Tensor | None = None,
    uptake: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthesis steps 1-2 (docs/METHOD.md section 5): sampled latents and latent mask inside each box.

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
        guidance: classifier-free guidance scale w toward the uptake (`guided_velocity`); 1: none.

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
    cond_untold = None
    if guidance != 1.0:
        if uptake is None:
            raise ValueError("guidance steers toward an uptake: give one per sample")
        cond_untold = flow_condition(z * (1.0 - box), box, torch.full_like(uptake, UNTOLD), models)
    velocity = guided_velocity(models, uptake, guidance=guidance, cond_untold=cond_untold)
    x1 = euler_sample(velocity, noise, cond=cond, steps=steps, known=known, keep=1.0 - box)
    z_hat, m_hat = split_joint(x1.float(), latent_channels=c, s=s)
    return z_hat, m_hat, boxes


@torch.no_grad()
def sample_tumor(
    models: TumorGenModels,
    image: torch.Tensor,
    boxes_image_grid: torch.Tensor,
    *,
    scale_factor: float,
    refiner_margin: int | None = None,
    **sampling,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthesis steps 1-3 (docs/METHOD.md section 5): `sample_latents`, then decode and refine the mask.

    Args: as `sample_latents` (`sampling`: its `steps`, `generator`, `s`, `noise`, `latents`, `uptake`);
    `refiner_margin` as the model was trained with (`flow.refiner_margin`).

    Returns:
        (image_hat (B, 1, X, Y, Z) decoded in model range, mask_prob (B, 1, X, Y, Z) in [0, 1],
        mask_latent (B, 1, h, w, d) = m_hat in [0, 1]).
    """
    z_hat, m_hat, latent_boxes = sample_latents(models, image, boxes_image_grid, scale_factor=scale_factor, **sampling)
    image_hat = decode_vae(models.vae, z_hat / scale_factor)
    box = box_indicator(latent_boxes, tuple(m_hat.shape[2:]))
    mask_prob = refine_mask(models, z_hat, m_hat, box, scale_factor=scale_factor, margin=refiner_margin)
    return image_hat, mask_prob, m_hat
