"""Train a learned baseline: DiffTumor inpainting or BLD here, on the frozen VAE with the shared fit loop.

`train_baseline` is the one entry for the four learned baselines (`tumorgen train-baseline`): it
trains DiffTumor and BLD itself and hands HA-GAN to `hagan_stage` and MedFusion (which trains its own
VAE) to `medfusion_stage`. All four train on the same windows (`training_data`) with the `train`
section's steps, batch and seed.

DiffTumor and BLD use the same data, the same VAE and the same U-Net size as TumorGen, so a comparison
measures the generative method: the denoiser is `build_velocity_unet` with the `flow` section's channels
(2c + 1 -> c for DiffTumor, c -> c for BLD), the optimisation is the `train` section, the schedule the
`diffusion` section.

Because the VAE is frozen, each training window is encoded once (posterior mean times the VAE's scale
factor) and its latents and latent mask are kept in memory; a step only runs the U-Net. The run folder
is laid out as `tumorgen train`'s (config.json, data.json, metrics.jsonl, loss_curve.png, checkpoints/
of kind "difftumor" or "bld", vae.pt) plus `mask_bank.npz`, the training tumors' masks that synthesis
places into boxes.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from torch import nn

from tumorgen.baselines.bld import bld_loss
from tumorgen.baselines.difftumor import difftumor_loss, latent_mask
from tumorgen.baselines.hagan_stage import train_hagan
from tumorgen.baselines.latent_diffusion import DiffusionSchedule
from tumorgen.baselines.medfusion_stage import train_medfusion
from tumorgen.baselines.training_data import MASK_BANK_NAME, load_baseline_data, without_uptake, write_baseline_files
from tumorgen.config import Config, DiffusionConfig, to_dict
from tumorgen.errors import fail_on
from tumorgen.io.atomic import atomic_path
from tumorgen.io.files import sha256_file
from tumorgen.models import vae as vae_lib
from tumorgen.models.velocity_unet import VelocityUNet, build_velocity_unet
from tumorgen.training import distributed
from tumorgen.training.loop import FitResult, Stage, fit
from tumorgen.training.run_folder import load_vae
from tumorgen.training.run_setup import claim_run_dir, seeded_generator, seeded_init, write_run_config
from tumorgen.training.tumorgen_stage import encode_latents

METHODS = ("difftumor", "bld")  # trained here, on TumorGen's frozen VAE
ALL_METHODS = ("difftumor", "bld", "hagan", "medfusion")  # what `train_baseline` trains
OWN_VAE_METHODS = ("hagan", "medfusion")  # need no --vae: HA-GAN works on the image, MedFusion trains its own
__all__ = ["ALL_METHODS", "MASK_BANK_NAME", "METHODS", "OWN_VAE_METHODS", "build_baseline_unet",
           "schedule_from_config", "train_baseline"]


def schedule_from_config(d: DiffusionConfig) -> DiffusionSchedule:
    """The run's noise schedule (the `diffusion` config section)."""
    build = DiffusionSchedule.linear if d.schedule == "linear" else DiffusionSchedule.scaled_linear
    return build(num_train_timesteps=d.num_train_timesteps, beta_start=d.beta_start, beta_end=d.beta_end)


def build_baseline_unet(cfg: Config, method: str) -> VelocityUNet:
    """The denoiser: TumorGen's U-Net at the `flow` section's size, with the method's channel counts."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    c, f = cfg.vae.latent_channels, cfg.flow
    in_channels = 2 * c + 1 if method == "difftumor" else c  # [z_t ; z (1 - m) ; m] or z_t
    with seeded_init(cfg.train.seed):
        return build_velocity_unet(latent_channels=c, channels=f.channels, attention_levels=f.attention_levels,
                                   num_res_blocks=f.num_res_blocks, num_head_channels=f.num_head_channels,
                                   norm_num_groups=f.norm_num_groups, in_channels=in_channels, out_channels=c)


def train_baseline(*, method: str, data: str | Path, vae_run: str | Path | None, out: str | Path, config: Config,
                   resume: bool = False, progress: bool = True) -> FitResult:
    """Train a learned baseline; write the run folder.

    Args:
        method: "difftumor" or "bld" (on the frozen VAE), "hagan" or "medfusion" (no VAE given).
        data: the PREP folder.
        vae_run: difftumor, bld: a `train-vae` run folder or VAE checkpoint (ignored on resume:
            RUN/vae.pt is used). hagan, medfusion: None.
        out: the run folder to create (or continue with `resume`).
        config: the resolved config; difftumor and bld replace its `vae` section by the VAE run's own.
        resume: continue from the run's last checkpoint.
        progress: show a progress bar.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}")
    if method == "hagan":
        return train_hagan(data=data, out=out, config=config, resume=resume, progress=progress)
    if method == "medfusion":
        return train_medfusion(data=data, out=out, config=config, resume=resume, progress=progress)
    if vae_run is None:
        raise ValueError(f"{method} needs the VAE run it is built on")
    return distributed.run_distributed(config.train.device, _train, method=method, data=Path(data),
                                       vae_run=Path(vae_run), out=Path(out), config=config, resume=resume,
                                       progress=progress)


def _train(*, method: str, data: Path, vae_run: Path, out: Path, config: Config, resume: bool, progress: bool,
           info: distributed.DistInfo) -> FitResult:
    train = config.train
    vae, scale_factor, vae_cfg, vae_path = load_vae(out / "vae.pt" if resume else vae_run, device=info.device)
    # the run records the VAE it uses; a baseline has no uptake input, so its run does not claim one
    config = dataclasses.replace(without_uptake(config), vae=vae_cfg.vae, vae_train=vae_cfg.vae_train)

    factor = vae_lib.latent_factor(vae)
    windows = load_baseline_data(config, data, method=method)
    levels = 2 ** (len(config.flow.channels) - 1)
    if config.data.window != "box" and any(s % (factor * levels) for s in windows.dataset.size):
        raise fail_on(data / "dataset.json", f"size {windows.dataset.size} is not divisible by the VAE factor "
                                             f"{factor} times the U-Net's {levels} levels")
    latents = encode_latents(vae, windows.images, scale_factor=scale_factor, device=info.device)  # (N, c, h, w, d)
    latent_masks = latent_mask(windows.masks, factor)  # (N, 1, h, w, d)

    claim_run_dir(out, resume=resume, is_main=info.is_main)
    distributed.barrier(info)
    if info.is_main and not resume:
        with atomic_path(out / "vae.pt") as tmp:
            shutil.copyfile(vae_path, tmp)
        write_baseline_files(out, windows, config, method=method, latent_factor=factor,
                             vae_sha256=sha256_file(out / "vae.pt"))
    if info.is_main:
        write_run_config(config, out)
    distributed.barrier(info)
    vae_sha = sha256_file(out / "vae.pt")
    dataset = windows.dataset

    model = build_baseline_unet(config, method)
    schedule = schedule_from_config(config.diffusion)
    data_gen = seeded_generator(train.seed)
    noise_gen = seeded_generator(train.seed * 1_000_003 + 1 + info.rank)  # ddpm_loss draws on the CPU

    def step_fn(runner: nn.Module, step: int) -> dict[str, torch.Tensor]:
        chosen = distributed.rank_slice(torch.randint(len(latents), (train.batch_size * info.world_size,),
                                                      generator=data_gen), info)
        z = latents[chosen].to(info.device)  # (B, c, h, w, d)
        if method == "difftumor":
            loss = difftumor_loss(runner, z, latent_masks[chosen].to(info.device), schedule=schedule,
                                  generator=noise_gen)
        else:
            loss = bld_loss(runner, z, schedule=schedule, generator=noise_gen)
        return {"loss": loss}

    def extra_fn(ema: nn.Module) -> dict:
        return {"scale_factor": scale_factor, "vae_sha256": vae_sha, "suv_max": dataset.suv_max,
                "size": list(dataset.size), "method": method, "latent_factor": factor}

    stage = Stage(kind=method, model=model, step_fn=step_fn, generators={"data": data_gen},
                  rank_generators={"noise": noise_gen}, config=to_dict(config), extra_fn=extra_fn)
    return fit(stage=stage, run_dir=out, train=train, info=info, resume=resume, progress=progress)
