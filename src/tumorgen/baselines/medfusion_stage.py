"""Train MedFusion (baselines/medfusion.py) in one run: first its own VAE, then its latent denoiser.

Phase 1, the VAE (`RUN/vae/`, a run folder of its own with checkpoints of kind "medfusion-vae",
metrics.jsonl and loss_curve.png): the `vae_train` section's steps, rate and batch, on the data
TumorGen's VAE sees (box windows drawn fresh every step, or random `data.patch_size` patches of the
whole training volumes), with MedFusion's loss. Its last checkpoint is then copied to `RUN/vae.pt`
and its SHA-256 pinned in `data.json`.

Phase 2, the denoiser (`RUN/checkpoints/`, kind "medfusion"): the `train` section's steps on the
baselines' windows (`training_data`: the same as DiffTumor's and BLD's). The frozen VAE (its EMA
weights) encodes each window once to its posterior (mean and sigma); every step draws a fresh
posterior sample from the noise generator, as MedFusion's encoder samples, and takes MedFusion's L1
noise-prediction loss on it, unscaled.

`--resume` continues whichever phase was running. Once the denoiser has started, the VAE under it is
fixed: a resumed run whose `vae_train.steps` differs from its VAE's is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tumorgen.baselines.difftumor import latent_mask
from tumorgen.baselines.medfusion import (
    MedFusionVAE, build_medfusion_vae, medfusion_loss, medfusion_schedule, medfusion_vae_loss,
)
from tumorgen.baselines.training_data import load_baseline_data, without_uptake, write_baseline_files
from tumorgen.config import Config, to_dict
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import fail_on
from tumorgen.io.atomic import atomic_path
from tumorgen.io.files import sha256_file
from tumorgen.models.velocity_unet import VelocityUNet, build_velocity_unet
from tumorgen.training import distributed
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import FitResult, Stage, fit
from tumorgen.training.run_setup import (
    claim_run_dir, load_training_cases, seeded_generator, seeded_init, stack_volumes, write_run_config,
)
from tumorgen.training.vae_stage import PatchSampler, box_window_source

VAE_DIR = "vae"  # phase 1's run folder inside the MedFusion run
VAE_FILE = "vae.pt"  # phase 1's final checkpoint, what phase 2 and synthesis load


def build_medfusion_unet(cfg: Config) -> VelocityUNet:
    """The denoiser: TumorGen's U-Net at the `flow` section's size, `[z_t ; z (1 - m) ; m]` (2c + 1) -> eps (c)."""
    c, f = cfg.medfusion.latent_channels, cfg.flow
    with seeded_init(cfg.train.seed):
        return build_velocity_unet(latent_channels=c, channels=f.channels, attention_levels=f.attention_levels,
                                   num_res_blocks=f.num_res_blocks, num_head_channels=f.num_head_channels,
                                   norm_num_groups=f.norm_num_groups, in_channels=2 * c + 1, out_channels=c)


def load_medfusion_vae(path: str | Path, cfg: Config, *, device: torch.device | str = "cpu") -> MedFusionVAE:
    """The frozen VAE (EMA weights, eval, no gradients) from a "medfusion-vae" checkpoint."""
    payload = load_checkpoint(path, expected_kind="medfusion-vae")
    vae = build_medfusion_vae(cfg)
    try:
        vae.load_state_dict(payload["ema"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise fail_on(path, f"weights do not match the MedFusion VAE its run's config describes ({first})") from None
    vae = vae.to(device).eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def train_medfusion(*, data: str | Path, out: str | Path, config: Config, resume: bool = False,
                    progress: bool = True) -> FitResult:
    """Train MedFusion's VAE, then its denoiser, on the PREP folder `data`; write (or continue) `out`."""
    return distributed.run_distributed(config.train.device, _train, data=Path(data), out=Path(out), config=config,
                                       resume=resume, progress=progress)


def _train(*, data: Path, out: Path, config: Config, resume: bool, progress: bool,
           info: distributed.DistInfo) -> FitResult:
    config = without_uptake(config)
    denoiser_started = (out / "checkpoints" / "last.pt").exists()
    if resume and not (out / "config.json").exists():
        raise fail_on(out, "has no config.json; there is no run here to resume")
    if not resume:
        claim_run_dir(out, resume=False, is_main=info.is_main)
    distributed.barrier(info)
    if info.is_main:
        write_run_config(config, out)

    if denoiser_started:
        vae_steps = int(load_checkpoint(out / VAE_FILE, expected_kind="medfusion-vae")["step"])
        if vae_steps != config.vae_train.steps:
            raise fail_on(out, f"its denoiser was trained on a VAE of {vae_steps} steps; vae_train.steps "
                               f"({config.vae_train.steps}) cannot change once the denoiser has started")
    else:
        vae_dir = out / VAE_DIR
        vae_resumable = (vae_dir / "checkpoints" / "last.pt").exists()
        if info.is_main:  # a phase killed before its first checkpoint left nothing to continue: start it again
            if not vae_resumable:
                shutil.rmtree(vae_dir, ignore_errors=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
        distributed.barrier(info)
        vae_result = _train_vae(data=data, out=vae_dir, config=config, progress=progress, info=info,
                                resume=vae_resumable)
        if vae_result.stopped_by_time:  # vae_train.max_minutes: the VAE goes on with the next --resume
            return vae_result
        if info.is_main:
            with atomic_path(out / VAE_FILE) as tmp:
                shutil.copyfile(vae_dir / "checkpoints" / "last.pt", tmp)
        distributed.barrier(info)
    return _train_denoiser(data=data, out=out, config=config, progress=progress, info=info,
                           resume=denoiser_started)


def _train_vae(*, data: Path, out: Path, config: Config, resume: bool, progress: bool,
               info: distributed.DistInfo) -> FitResult:
    """Phase 1: MedFusion's VAE on the data TumorGen's VAE trains on (`vae_stage`), with MedFusion's loss."""
    train = config.vae_train
    dataset = load_prepared(data)
    loaded = load_training_cases(dataset, purpose=" to train MedFusion's VAE on")
    if config.data.window == "box":
        windows = box_window_source(config, dataset, [(im, m, a) for im, m, a in loaded if m.any()], source=data)

        def draw(generator: torch.Generator) -> torch.Tensor:
            return windows.draw(generator, train.batch_size, info)[0]  # (B, 1, S, S, S)
    else:
        sampler = PatchSampler(volumes=stack_volumes([im for im, _, _ in loaded]), patch_size=config.data.patch_size,
                               batch_size=train.batch_size)

        def draw(generator: torch.Generator) -> torch.Tensor:
            return sampler.sample(generator, info)  # (B, 1, px, py, pz)
    claim_run_dir(out, resume=resume, is_main=info.is_main)
    if info.is_main:
        write_run_config(config, out)
    distributed.barrier(info)
    with seeded_init(train.seed):
        model = build_medfusion_vae(config)
    data_gen = seeded_generator(train.seed)
    noise_gen = seeded_generator(train.seed * 1_000_003 + 1 + info.rank)
    factor = model.factor

    def step_fn(vae: nn.Module, step: int) -> dict[str, torch.Tensor]:
        x = draw(data_gen).to(info.device)
        latent = (x.shape[0], config.medfusion.latent_channels, *(s // factor for s in x.shape[2:]))
        noise = torch.randn(latent, generator=noise_gen).to(info.device)
        return medfusion_vae_loss(vae, x, noise, config.medfusion)

    def extra_fn(ema: nn.Module) -> dict:
        return {"latent_factor": factor, "suv_max": dataset.suv_max, "method": "medfusion"}

    stage = Stage(kind="medfusion-vae", model=model, step_fn=step_fn, generators={"data": data_gen},
                  rank_generators={"noise": noise_gen}, config=to_dict(config), extra_fn=extra_fn)
    return fit(stage=stage, run_dir=out, train=train, info=info, resume=resume, progress=progress)


@torch.no_grad()
def _encode_posteriors(vae: MedFusionVAE, images: torch.Tensor, device, chunk: int = 4):
    """(mu, sigma) `(N, c, h, w, d)` of every window, computed once (the VAE is frozen)."""
    parts = [vae.encode(images[i:i + chunk].to(device)) for i in range(0, len(images), chunk)]
    return torch.cat([mu.float().cpu() for mu, _ in parts]), torch.cat([s.float().cpu() for _, s in parts])


def _train_denoiser(*, data: Path, out: Path, config: Config, resume: bool, progress: bool,
                    info: distributed.DistInfo) -> FitResult:
    """Phase 2: the latent denoiser on the frozen VAE, MedFusion's schedule and L1 objective."""
    train = config.train
    vae = load_medfusion_vae(out / VAE_FILE, config, device=info.device)
    windows = load_baseline_data(config, data, method="medfusion")
    if any(s % (vae.factor * 2 ** (len(config.flow.channels) - 1)) for s in windows.window_size):
        raise fail_on(data / "dataset.json", f"windows of {windows.window_size} are not divisible by MedFusion's "
                                             f"VAE factor {vae.factor} times the U-Net's levels")
    mu, sigma = _encode_posteriors(vae, windows.images, info.device)  # (N, c, h, w, d) each
    latent_masks = latent_mask(windows.masks, vae.factor)  # (N, 1, h, w, d)
    vae_sha = sha256_file(out / VAE_FILE)
    if info.is_main and not resume:
        write_baseline_files(out, windows, config, method="medfusion", latent_factor=vae.factor, vae_sha256=vae_sha)
    distributed.barrier(info)

    model = build_medfusion_unet(config)
    schedule = medfusion_schedule(config.medfusion)
    data_gen = seeded_generator(train.seed)
    noise_gen = seeded_generator(train.seed * 1_000_003 + 1 + info.rank)  # ddpm_loss draws on the CPU

    def step_fn(runner: nn.Module, step: int) -> dict[str, torch.Tensor]:
        chosen = distributed.rank_slice(torch.randint(len(mu), (train.batch_size * info.world_size,),
                                                      generator=data_gen), info)
        eps = torch.randn(mu[chosen].shape, generator=noise_gen)
        z = (mu[chosen] + sigma[chosen] * eps).to(info.device)  # (B, c, h, w, d): a posterior sample, unscaled
        loss = medfusion_loss(runner, z, latent_masks[chosen].to(info.device), schedule=schedule,
                              generator=noise_gen)
        return {"loss": loss}

    latent_std = float(np.std(mu.numpy()))  # MedFusion leaves its latents unscaled: this says how far from 1

    def extra_fn(ema: nn.Module) -> dict:
        return {"vae_sha256": vae_sha, "suv_max": windows.dataset.suv_max, "size": list(windows.window_size),
                "method": "medfusion", "latent_factor": vae.factor, "latent_std": latent_std}

    stage = Stage(kind="medfusion", model=model, step_fn=step_fn, generators={"data": data_gen},
                  rank_generators={"noise": noise_gen}, config=to_dict(config), extra_fn=extra_fn)
    return fit(stage=stage, run_dir=out, train=train, info=info, resume=resume, progress=progress)
