"""A trained DiffTumor or BLD run -> the `generate` callable the synthesis pipeline takes.

Every method runs through one pipeline (`synthesis.pipeline`), so a baseline offers the same callable
as TumorGen: `generate(window_image (B, 1, S, S, S) in [0, 1], boxes_in_window int64 (B, 6),
seeds) -> (image_hat, mask_prob)`. For each sample a real tumor mask from the run's mask bank is
placed in its box (numpy Generator seeded with `seeds[b]`), the window is encoded, the latents inside
the mask are generated (torch Generator seeded with `seeds[b]`: initial noise, then DDPM's per-step
noise), decoded, and the placed mask is returned as `mask_prob` (a given mask, so it is binary).

DDIM-N only draws the initial noise, so a batch runs in one sampler call; DDPM-N draws noise at every
step from one generator per call, so each sample runs alone to keep its result independent of the
batch it is in.
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
from tumorgen.baselines.latent_diffusion import DiffusionSchedule
from tumorgen.baselines.mask_bank import MaskBank
from tumorgen.baselines.stage import MASK_BANK_NAME, METHODS, build_baseline_unet, schedule_from_config
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
    """Everything a baseline needs to generate, rebuilt from its run folder.

    Args:
        kind: "difftumor" or "bld".
        config: the run's resolved config.
        vae: the frozen VAE (eval, no gradients).
        unet: the denoiser with its EMA weights (eval, no gradients).
        schedule: the noise schedule it was trained with.
        scale_factor: the VAE's latent scale.
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


def load_baseline(run_dir: str | Path, *, device: torch.device | str = "cpu", use_ema: bool = True) -> LoadedBaseline:
    """Rebuild a DiffTumor or BLD model from a `tumorgen train-baseline` run folder alone."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise fail_on(run_dir, "is not a folder; a baseline needs the run folder written by `tumorgen train-baseline`")
    ckpt = run_dir / "checkpoints" / "last.pt"
    if not ckpt.exists():
        raise fail_on(run_dir, "is not a training run (it has no checkpoints/last.pt)")
    payload = load_checkpoint(ckpt)
    if payload["kind"] not in METHODS:
        raise fail_on(ckpt, f"is a '{payload['kind']}' checkpoint where a baseline ('difftumor' or 'bld') "
                            "checkpoint is needed")
    missing = [n for n in ("data.json", "vae.pt", MASK_BANK_NAME) if not (run_dir / n).exists()]
    if missing:
        raise fail_on(run_dir, f"is not a complete baseline run folder (missing {', '.join(missing)})")
    try:
        cfg = from_dict(payload["config"], source=str(ckpt))
        data_info = json.loads((run_dir / "data.json").read_text())
    except TumorGenError as err:
        raise fail_on(ckpt, f"holds a config this TumorGen cannot read ({err})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail_on(run_dir / "data.json", f"is not valid JSON ({err})") from None
    pinned = data_info.get("vae_sha256")
    if pinned and sha256_file(run_dir / "vae.pt") != pinned:
        raise fail_on(run_dir / "vae.pt", "differs from the VAE this baseline was trained with (SHA-256 mismatch)")
    vae, scale, _, _ = load_vae(run_dir / "vae.pt", device=device)
    unet = build_baseline_unet(cfg, payload["kind"])
    try:
        unet.load_state_dict(payload["ema" if use_ema else "model"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:200]
        raise fail_on(ckpt, f"weights do not match the denoiser its config describes ({first})") from None
    unet = unet.to(device).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    return LoadedBaseline(kind=payload["kind"], config=cfg, vae=vae, unet=unet,
                          schedule=schedule_from_config(cfg.diffusion), scale_factor=scale,
                          factor=vae_lib.latent_factor(vae), bank=MaskBank.load(run_dir / MASK_BANK_NAME),
                          data_info=data_info, step=int(payload["step"]))


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
    sampler = sample_difftumor if baseline.kind == "difftumor" else sample_bld
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


def load_baseline_generator(run_dir: str | Path, *, method: str | None = "ddim", steps: int | None = 50,
                            device: torch.device | str = "cpu") -> Generate:
    """Load a baseline run and return its `generate(window_image, boxes_in_window, seeds)` callable.

    Args:
        run_dir: a folder written by `tumorgen train-baseline`.
        method: "ddim" (DDIM-N) or "ddpm" (DDPM-N); None takes the run's `diffusion.sample_method`.
        steps: sampling steps N (50 in the paper's timing table); None takes `diffusion.sample_steps`.
        device: where to run.
    """
    if method is not None and method not in SAMPLERS:
        raise TumorGenError(f"sampler {method!r} is not one of {', '.join(SAMPLERS)}")
    baseline = load_baseline(run_dir, device=device)
    method = baseline.config.diffusion.sample_method if method is None else method
    steps = baseline.config.diffusion.sample_steps if steps is None else int(steps)
    if not 1 <= steps <= baseline.schedule.num_train_timesteps:
        raise TumorGenError(f"{run_dir}: steps must be in [1, {baseline.schedule.num_train_timesteps}], got {steps}")
    return BaselineGenerator(baseline=baseline, method=method, steps=steps)
