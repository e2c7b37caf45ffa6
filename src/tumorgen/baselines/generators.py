"""A trained baseline run (DiffTumor, BLD, MedFusion or HA-GAN) -> the `generate` callable the pipeline takes.

Every method runs through one pipeline (`synthesis.pipeline`), so a baseline offers the same callable
as TumorGen: `generate(window_image (B, 1, S, S, S) in [0, 1], boxes_in_window int64 (B, 6),
seeds) -> (image_hat, mask_prob)`. For each sample a real tumor mask from the run's mask bank is
placed in its box (numpy Generator seeded with `seeds[b]`), and the image is generated inside it;
the placed mask is returned as `mask_prob` (a given mask, so it is binary).

The latent diffusion baselines (DiffTumor, BLD, MedFusion) encode the window, generate the latents
inside the mask (torch Generator seeded with `seeds[b]`: initial noise, then DDPM's per-step noise)
and decode. DDIM-N only draws the initial noise, so a batch runs in one sampler call; DDPM-N draws
noise at every step from one generator per call, so each sample runs alone to keep its result
independent of the batch it is in. MedFusion runs on its own VAE, unscaled (scale factor 1).

HA-GAN draws its noise vector from `seeds[b]` and generates the whole window in one pass from it and
the window with its box erased; the result replaces the window inside the box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from tumorgen.baselines.bld import sample_bld
from tumorgen.baselines.difftumor import latent_mask, sample_difftumor
from tumorgen.baselines.hagan import Generator, build_hagan, compose, condition, to_model_range
from tumorgen.baselines.latent_diffusion import DiffusionSchedule
from tumorgen.baselines.mask_bank import MaskBank
from tumorgen.baselines.medfusion import medfusion_schedule
from tumorgen.baselines.medfusion_stage import build_medfusion_unet, load_medfusion_vae
from tumorgen.baselines.stage import ALL_METHODS, MASK_BANK_NAME, build_baseline_unet, schedule_from_config
from tumorgen.bbox import box_indicator
from tumorgen.config import Config, from_dict
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.files import sha256_file
from tumorgen.models import vae as vae_lib
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.run_folder import load_vae

SAMPLERS = ("ddim", "ddpm")
Generate = Callable[[torch.Tensor, torch.Tensor, Sequence[int]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LoadedBaseline:
    """Everything a latent diffusion baseline needs to generate, rebuilt from its run folder.

    Args:
        kind: "difftumor", "bld" or "medfusion".
        config: the run's resolved config.
        vae: the frozen VAE (eval, no gradients): TumorGen's, or MedFusion's own.
        unet: the denoiser with its EMA weights (eval, no gradients).
        schedule: the noise schedule it was trained with.
        scale_factor: the VAE's latent scale (1 for MedFusion, which does not scale).
        factor: the VAE's downsampling factor f.
        bank: the training tumors' masks.
        data_info: the run's data.json.
        step: training steps of the loaded weights.
    """

    kind: str
    config: Config
    vae: nn.Module
    unet: nn.Module
    schedule: DiffusionSchedule
    scale_factor: float
    factor: int
    bank: MaskBank
    data_info: dict
    step: int


@dataclass(frozen=True)
class LoadedHAGAN:
    """A trained HA-GAN's generator (the run's last weights, eval, no gradients), mask bank and data.json."""

    kind: str
    config: Config
    generator: Generator
    bank: MaskBank
    data_info: dict
    step: int


def _read_run(run_dir: Path) -> tuple[dict, Config, dict, Path]:
    """(checkpoint payload, config, data.json, checkpoint path) of a baseline run, every defect one sentence."""
    if not run_dir.is_dir():
        raise fail_on(run_dir, "is not a folder; a baseline needs the run folder written by `tumorgen train-baseline`")
    ckpt = run_dir / "checkpoints" / "last.pt"
    if not ckpt.exists():
        raise fail_on(run_dir, "is not a training run (it has no checkpoints/last.pt)")
    payload = load_checkpoint(ckpt)
    if payload["kind"] not in ALL_METHODS:
        raise fail_on(ckpt, f"is a '{payload['kind']}' checkpoint where a baseline ({', '.join(ALL_METHODS)}) "
                            "checkpoint is needed")
    needs = () if payload["kind"] == "hagan" else ("vae.pt",)  # HA-GAN has no VAE; MedFusion's is its own
    missing = [n for n in ("data.json", *needs, MASK_BANK_NAME) if not (run_dir / n).exists()]
    if missing:
        raise fail_on(run_dir, f"is not a complete baseline run folder (missing {', '.join(missing)})")
    try:
        cfg = from_dict(payload["config"], source=str(ckpt))
        data_info = json.loads((run_dir / "data.json").read_text())
    except TumorGenError as err:
        raise fail_on(ckpt, f"holds a config this TumorGen cannot read ({err})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail_on(run_dir / "data.json", f"is not valid JSON ({err})") from None
    return payload, cfg, data_info, ckpt


def _load_weights(net: nn.Module, state: dict, ckpt: Path, what: str) -> nn.Module:
    """`state` into `net`, which is returned frozen in eval mode; a mismatch is one sentence."""
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:200]
        raise fail_on(ckpt, f"weights do not match the {what} its config describes ({first})") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_baseline(run_dir: str | Path, *, device: torch.device | str = "cpu",
                  use_ema: bool = True) -> LoadedBaseline | LoadedHAGAN:
    """Rebuild a DiffTumor, BLD, MedFusion or HA-GAN model from its `tumorgen train-baseline` run folder alone.

    HA-GAN loads its generator's last weights, as the paper samples (no weight average); the diffusion
    baselines load the EMA weights unless `use_ema` is False.
    """
    run_dir = Path(run_dir)
    payload, cfg, data_info, ckpt = _read_run(run_dir)
    kind = payload["kind"]
    bank = MaskBank.load(run_dir / MASK_BANK_NAME)
    if kind == "hagan":
        size = data_info.get("size") if isinstance(data_info, dict) else None
        if not (isinstance(size, list) and len(size) == 3 and all(isinstance(v, int) for v in size)):
            raise fail_on(run_dir / "data.json", f"has no window size (\"size\": [X, Y, Z]), got {size!r}")
        try:
            model = build_hagan(tuple(size), cfg.hagan)
        except ValueError as err:
            raise fail_on(run_dir / "data.json", f"describes a window HA-GAN cannot have ({err})") from None
        _load_weights(model, payload["model"], ckpt, "HA-GAN")
        return LoadedHAGAN(kind=kind, config=cfg, generator=model.generator.to(device), bank=bank,
                           data_info=data_info, step=int(payload["step"]))
    vae_file = run_dir / "vae.pt"
    pinned = data_info.get("vae_sha256")
    if pinned and sha256_file(vae_file) != pinned:
        raise fail_on(vae_file, "differs from the VAE this baseline was trained with (SHA-256 mismatch)")
    if kind == "medfusion":
        vae = load_medfusion_vae(vae_file, cfg, device=device)
        scale, factor, schedule = 1.0, vae.factor, medfusion_schedule(cfg.medfusion)
        unet = build_medfusion_unet(cfg)
    else:
        vae, scale, _, _ = load_vae(vae_file, device=device)
        factor, schedule = vae_lib.latent_factor(vae), schedule_from_config(cfg.diffusion)
        unet = build_baseline_unet(cfg, kind)
    unet = _load_weights(unet, payload["ema" if use_ema else "model"], ckpt, "denoiser").to(device)
    return LoadedBaseline(kind=kind, config=cfg, vae=vae, unet=unet, schedule=schedule, scale_factor=scale,
                          factor=factor, bank=bank, data_info=data_info, step=int(payload["step"]))


@torch.no_grad()
def sample_latents(baseline: LoadedBaseline, z: torch.Tensor, m: torch.Tensor, seeds: Sequence[int], *,
                   method: str = "ddim", steps: int = 50) -> torch.Tensor:
    """New latents inside the latent masks `m` `(B, 1, h, w, d)`; exactly `z` `(B, c, h, w, d)` outside.

    Args:
        baseline: the loaded run.
        z: the scans' scaled latents.
        m: binary latent masks.
        seeds: one per sample; sample b draws all its noise from `seeds[b]`.
        method, steps: "ddim" or "ddpm", and the number of sampling steps.
    """
    if method not in SAMPLERS:
        raise ValueError(f"method must be one of {SAMPLERS}, got {method!r}")
    if len(seeds) != z.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for a batch of {z.shape[0]}")
    sampler = sample_bld if baseline.kind == "bld" else sample_difftumor  # MedFusion is conditioned as DiffTumor
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in generators]).to(z)  # (B, c, h, w, d)
    common = dict(schedule=baseline.schedule, steps=steps, method=method)
    if method == "ddim":
        return sampler(baseline.unet, z, m, noise, **common)
    return torch.cat([sampler(baseline.unet, z[b:b + 1], m[b:b + 1], noise[b:b + 1], generator=generators[b], **common)
                      for b in range(z.shape[0])])  # (B, c, h, w, d)


def place_masks(bank: MaskBank, boxes: torch.Tensor, shape: tuple[int, int, int], seeds: Sequence[int]) -> torch.Tensor:
    """One bank mask per box, seeded per sample: `(B, 1, X, Y, Z)` float {0, 1}."""
    placed = [bank.place(tuple(int(v) for v in box), shape, rng=np.random.default_rng(int(seed)))
              for box, seed in zip(boxes.tolist(), seeds)]
    return torch.from_numpy(np.stack(placed)[:, None].astype(np.float32))  # (B, 1, X, Y, Z)


@torch.no_grad()
def generate_tumors(baseline: LoadedBaseline, window_image: torch.Tensor, boxes_in_window: torch.Tensor,
                    seeds: Sequence[int], *, method: str = "ddim",
                    steps: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's `generate` contract for a loaded baseline (see the module docstring)."""
    if window_image.ndim != 5 or window_image.shape[1] != 1:
        raise ValueError(f"window_image must be (B, 1, X, Y, Z), got {tuple(window_image.shape)}")
    n = window_image.shape[0]
    if tuple(boxes_in_window.shape) != (n, 6) or len(seeds) != n:
        raise ValueError(f"need {n} boxes (B, 6) and {n} seeds, got {tuple(boxes_in_window.shape)} and {len(seeds)}")
    device = next(baseline.unet.parameters()).device
    shape = tuple(int(s) for s in window_image.shape[2:])
    mask = place_masks(baseline.bank, boxes_in_window.cpu(), shape, seeds).to(device)  # (B, 1, X, Y, Z)
    z = vae_lib.encode_mean(baseline.vae, window_image.to(device, torch.float32)) * baseline.scale_factor
    m = latent_mask(mask, baseline.factor)  # (B, 1, h, w, d)
    z_hat = sample_latents(baseline, z, m, seeds, method=method, steps=steps)
    image_hat = vae_lib.decode(baseline.vae, z_hat / baseline.scale_factor).clamp(0.0, 1.0)
    return image_hat, mask


@dataclass(frozen=True)
class BaselineGenerator:
    """The pipeline's `generate(window_image, boxes_in_window, seeds)` for a loaded baseline.

    Args:
        baseline: the loaded run (its kind and step are what a manifest reports).
        method: "ddim" (DDIM-N) or "ddpm" (DDPM-N).
        steps: sampling steps N.
    """

    baseline: LoadedBaseline
    method: str = "ddim"
    steps: int = 50

    def __call__(self, window_image: torch.Tensor, boxes_in_window: torch.Tensor,
                 seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return generate_tumors(self.baseline, window_image, boxes_in_window, seeds, method=self.method,
                               steps=self.steps)


@torch.no_grad()
def generate_hagan(baseline: LoadedHAGAN, window_image: torch.Tensor, boxes_in_window: torch.Tensor,
                   seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's `generate` contract for HA-GAN: a bank mask per box, the window made from the erased
    window, that mask and a noise vector drawn from the sample's seed, pasted in inside the box."""
    g = baseline.generator
    shape = tuple(int(s) for s in window_image.shape[2:])
    if window_image.ndim != 5 or window_image.shape[1] != 1 or shape != g.shape:
        raise ValueError(f"window_image must be (B, 1, *{g.shape}) for this HA-GAN, got {tuple(window_image.shape)}")
    n = window_image.shape[0]
    if tuple(boxes_in_window.shape) != (n, 6) or len(seeds) != n:
        raise ValueError(f"need {n} boxes (B, 6) and {n} seeds, got {tuple(boxes_in_window.shape)} and {len(seeds)}")
    device = next(g.parameters()).device
    mask = place_masks(baseline.bank, boxes_in_window.cpu(), shape, seeds).to(device)  # (B, 1, X, Y, Z)
    x = 2.0 * window_image.to(device, torch.float32) - 1.0  # HA-GAN's [-1, 1]
    box = box_indicator(boxes_in_window.to(device), shape)  # (B, 1, X, Y, Z)
    z = torch.cat([torch.randn((1, g.latent_dim), generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    made = g(z.to(device), condition(x, box, mask))  # (B, 1, X, Y, Z): all sub-volumes at once
    return to_model_range(compose(made, x, box)), mask


@dataclass(frozen=True)
class HAGANGenerator:
    """The pipeline's `generate(window_image, boxes_in_window, seeds)` for a loaded HA-GAN (one pass, no sampler)."""

    baseline: LoadedHAGAN
    method: None = None  # no sampler and no steps: the generator draws in one pass
    steps: None = None

    def __call__(self, window_image: torch.Tensor, boxes_in_window: torch.Tensor,
                 seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return generate_hagan(self.baseline, window_image, boxes_in_window, seeds)


def load_baseline_generator(run_dir: str | Path, *, method: str | None = "ddim", steps: int | None = 50,
                            device: torch.device | str = "cpu") -> Generate:
    """Load a baseline run and return its `generate(window_image, boxes_in_window, seeds)` callable.

    Args:
        run_dir: a folder written by `tumorgen train-baseline`.
        method: "ddim" (DDIM-N) or "ddpm" (DDPM-N); None takes the run's own (`diffusion.sample_method`,
            MedFusion's `medfusion.sample_method`). HA-GAN has no sampler: ignored.
        steps: sampling steps N (50 in the paper's timing table); None takes the run's own
            (`diffusion.sample_steps`, `medfusion.sample_steps`). Ignored by HA-GAN.
        device: where to run.
    """
    if method is not None and method not in SAMPLERS:
        raise TumorGenError(f"sampler {method!r} is not one of {', '.join(SAMPLERS)}")
    baseline = load_baseline(run_dir, device=device)
    if isinstance(baseline, LoadedHAGAN):
        return HAGANGenerator(baseline=baseline)
    own = baseline.config.medfusion if baseline.kind == "medfusion" else baseline.config.diffusion
    method = own.sample_method if method is None else method
    steps = own.sample_steps if steps is None else int(steps)
    if not 1 <= steps <= baseline.schedule.num_train_timesteps:
        raise TumorGenError(f"{run_dir}: steps must be in [1, {baseline.schedule.num_train_timesteps}], got {steps}")
    return BaselineGenerator(baseline=baseline, method=method, steps=steps)
