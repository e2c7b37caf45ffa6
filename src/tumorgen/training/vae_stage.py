"""Stage 1: train the 3D KL-VAE on random patches of the PREP training volumes, or on box windows.

With `data.window = "box"` the VAE trains on exactly what it will encode: box windows around the
training tumors (`data.box_windows`), whole, on the model's intensity scale, drawn fresh every step,
with the L1 weighted `vae.tumor_weight` times inside the tumor. (A VAE trained on 32^3 patches and run
on 64^3 volumes sees other GroupNorm statistics: tumors came back 1.5-2.4x too hot.)

Loss: L1 reconstruction + kl_weight * KL(q(z|x) || N(0, I)), the KL summed over latent voxels and
averaged over the batch (MONAI's generative tutorials' convention). Perceptual and adversarial terms
are not used: MONAI's PerceptualLoss needs pretrained networks downloaded at run time, and the
adversarial term needs a second optimiser; the L1 + KL VAE reconstructs PET well at f = 4.

Every case of the training split is used, healthy ones included (the VAE must encode any scan). At
each checkpoint the latent scale factor (1 / std of `encode_mean` of the whole training volumes,
through the EMA weights) is computed and stored in `extra["scale_factor"]`. With `vae.weights` set
(e.g. MAISI's pretrained VAE) the run may have 0 steps: it then only computes the scale factor and
writes the run folder, so stage 2 can use that VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tumorgen.config import Config, to_dict
from tumorgen.data.box_windows import BoxWindowSpec, box_window_spec, random_windows
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import fail_on
from tumorgen.losses import kl_divergence
from tumorgen.models import vae as vae_lib
from tumorgen.training import distributed
from tumorgen.training.loop import FitResult, Stage, fit
from tumorgen.training.run_setup import (
    claim_run_dir, load_training_cases, seeded_generator, seeded_init, stack_volumes, write_run_config,
)


@dataclass(frozen=True)
class BoxWindowSource:
    """Box windows drawn fresh at every step (`data.window = "box"`), and a fixed set for the scale factor.

    The draws come from a seed taken from the loop's torch generator, so `--resume` replays them.
    """

    suvs: list
    masks: list
    affines: list
    spec: BoxWindowSpec
    calibration: torch.Tensor  # (M, 1, S, S, S): fixed windows, one latent scale for every checkpoint

    def draw(self, generator: torch.Generator, batch_size: int, info: distributed.DistInfo):
        seed = int(torch.randint(2**62, (1,), generator=generator))
        total = batch_size * info.world_size
        images, masks, _ = random_windows(self.suvs, self.masks, self.affines, self.spec,
                                          np.random.default_rng(seed), total)
        keep = slice(info.rank, total, info.world_size)
        return torch.from_numpy(images[keep]), torch.from_numpy(masks[keep])  # (B, 1, S, S, S) each


def box_window_source(config: Config, dataset, loaded, *, source: Path, calibration: int = 64) -> BoxWindowSource:
    """Tumor cases of a PREP cache (loaded as (image, mask, affine)) as a source of box windows."""
    if not loaded:
        raise fail_on(source / "dataset.json", "has no tumor-bearing training cases to cut box windows around")
    spec = box_window_spec(config, dataset.suv_max)
    suvs = [image * dataset.suv_max for image, _, _ in loaded]
    masks = [mask for _, mask, _ in loaded]
    affines = [affine for _, _, affine in loaded]
    fixed, _, _ = random_windows(suvs, masks, affines, spec, np.random.default_rng(config.vae_train.seed + 7),
                                 max(calibration, len(loaded)))
    return BoxWindowSource(suvs=suvs, masks=masks, affines=affines, spec=spec, calibration=torch.from_numpy(fixed))


@dataclass(frozen=True)
class PatchSampler:
    """Random patches of the cached volumes, drawn from one shared generator; each rank keeps its slice.

    Args:
        volumes: (N, 1, X, Y, Z) cached training volumes.
        patch_size: patch side per axis (clipped to the volume size).
        batch_size: patches per rank and step.
    """

    volumes: torch.Tensor
    patch_size: tuple[int, int, int]
    batch_size: int

    def sample(self, generator: torch.Generator, info: distributed.DistInfo) -> torch.Tensor:
        n, _, *shape = self.volumes.shape
        size = [min(p, s) for p, s in zip(self.patch_size, shape)]
        total = self.batch_size * info.world_size
        cases = torch.randint(n, (total,), generator=generator)
        starts = [torch.randint(s - p + 1, (total,), generator=generator) for p, s in zip(size, shape)]
        patches = []
        for i in range(info.rank, total, info.world_size):
            x0, y0, z0 = (int(st[i]) for st in starts)
            patches.append(self.volumes[cases[i], :, x0 : x0 + size[0], y0 : y0 + size[1], z0 : z0 + size[2]])
        return torch.stack(patches)  # (B, 1, px, py, pz)


def build_vae_from_config(cfg: Config, *, with_weights: bool = True) -> nn.Module:
    v = cfg.vae
    with seeded_init(cfg.vae_train.seed):
        return vae_lib.build_vae(arch=v.arch, channels=v.channels, latent_channels=v.latent_channels,
                                 num_res_blocks=v.num_res_blocks, norm_num_groups=v.norm_num_groups,
                                 attention=v.attention, weights=(v.weights or None) if with_weights else None)


@torch.no_grad()
def latent_scale_factor(vae: nn.Module, volumes: torch.Tensor, *, device: torch.device) -> float:
    """1 / std of the posterior means of whole volumes (encoded one at a time to bound memory)."""
    was_training = vae.training
    vae.eval()
    latents = [vae_lib.encode_mean(vae, volumes[i : i + 1].to(device)).cpu() for i in range(len(volumes))]
    vae.train(was_training)
    return vae_lib.compute_scale_factor(torch.cat(latents))


def train_vae(*, data: str | Path, out: str | Path, config: Config, resume: bool = False,
              progress: bool = True) -> FitResult:
    """Train (or, with pretrained weights and 0 steps, just calibrate) the VAE; write the run folder.

    Args:
        data: the PREP folder written by `tumorgen prepare`.
        out: the run folder to create (or to continue with `resume`).
        config: the resolved run config (its `vae`, `data` and `vae_train` sections are used).
        resume: continue from `out/checkpoints/last.pt`.
        progress: show a progress bar.
    """
    return distributed.run_distributed(config.vae_train.device, _train_vae, data=Path(data), out=Path(out),
                                       config=config, resume=resume, progress=progress)


def _train_vae(*, data: Path, out: Path, config: Config, resume: bool, progress: bool,
               info: distributed.DistInfo) -> FitResult:
    train = config.vae_train
    if train.steps == 0 and not config.vae.weights and not resume:
        raise fail_on(out, "vae_train.steps is 0 but no vae.weights were given: there would be nothing to save")
    dataset = load_prepared(data)
    loaded = load_training_cases(dataset)
    volumes = stack_volumes([image for image, _, _ in loaded])  # (N, 1, X, Y, Z)
    windows = None
    if config.data.window == "box":
        windows = box_window_source(config, dataset, [(im, m, a) for im, m, a in loaded if m.any()], source=data)
        volumes = windows.calibration  # the scale factor comes from box windows: what the VAE will encode
    claim_run_dir(out, resume=resume, is_main=info.is_main)
    distributed.barrier(info)
    if info.is_main:
        write_run_config(config, out)

    model = build_vae_from_config(config, with_weights=not resume)
    sampler = PatchSampler(volumes=volumes, patch_size=config.data.patch_size, batch_size=train.batch_size)
    data_gen = seeded_generator(train.seed)
    noise_gen = seeded_generator(train.seed * 1_000_003 + 1 + info.rank, device=info.device)
    kl_weight = config.vae.kl_weight

    def step_fn(vae: nn.Module, step: int) -> dict[str, torch.Tensor]:
        weight = None
        if windows is not None:
            x, mask = windows.draw(data_gen, train.batch_size, info)
            x = x.to(info.device)  # (B, 1, S, S, S)
            weight = 1.0 + (config.vae.tumor_weight - 1.0) * mask.to(info.device)  # (B, 1, S, S, S)
        else:
            x = sampler.sample(data_gen, info).to(info.device)  # (B, 1, px, py, pz)
        z, mu, sigma = vae_lib.encode_sample(vae, x, generator=noise_gen)
        recon = vae_lib.decode(vae, z)
        error = (recon.float() - x).abs()
        l1 = error.mean() if weight is None else (weight * error).sum() / weight.sum()
        kl = kl_divergence(mu, sigma)
        return {"loss": l1 + kl_weight * kl, "l1": l1, "kl": kl}

    def extra_fn(ema: nn.Module) -> dict:
        return {"scale_factor": latent_scale_factor(ema, volumes, device=info.device),
                "latent_factor": vae_lib.latent_factor(ema), "suv_max": dataset.suv_max,
                "size": list(dataset.size), "data": str(data)}

    stage = Stage(kind="vae", model=model, step_fn=step_fn, generators={"data": data_gen},
                  rank_generators={"noise": noise_gen}, config=to_dict(config), extra_fn=extra_fn)
    return fit(stage=stage, run_dir=out, train=train, info=info, resume=resume, progress=progress)
