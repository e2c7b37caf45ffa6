"""Stage 2: train TumorGen (BA-PMG + SC-VFE rectified flow + spatial constraints + VMR) on a frozen VAE.

The VAE comes from a finished `train-vae` run; its checkpoint is copied into `RUN/vae.pt` (and its
SHA-256 pinned in `data.json` and every checkpoint) so the TumorGen run folder alone is enough to
synthesize. The trained module is `{"unet": SC-VFE, "refiner": VMR}`; each step draws a batch of
tumor-bearing training volumes (whole volumes, the model's grid) and calls
`objective.training_losses`. The VAE is frozen and encodes to its posterior mean, so every training
volume is encoded once, before the first step, not at every step (a third of a CPU step otherwise).
The refiner needs a VAE decode of the one-step estimate, the dominant cost on a CPU, so it runs every
`flow.refiner_every` steps (never under the `no_vmr` ablation), on a crop around the boxes when
`flow.refiner_margin` is set.

With `data.window = "box"` stage 2 trains on box windows (`data.box_windows`): `data.windows_per_case`
windows per training tumor, each around its own BA-PMG box, cut and encoded once; the box indicator
comes with each window, and the flow loss outside it is weighted `flow.outside_weight`. With
`flow.uptake_condition` each window also carries its tumor's mean SUV (`intensity.tumor_uptake`), and
`data.json` lists the training tumors' mean SUVs, from which synthesis draws when a user gives none.

`data.json` records what synthesis needs from the data: grid size, spacing, `suv_max`, orientation
and the sizes of the training tumors' tight boxes (in voxels and mm), from which boxes are sampled.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch import nn

from tumorgen.bbox import box_indicator
from tumorgen.config import Config, to_dict
from tumorgen.data.box_geometry import tight_box
from tumorgen.data.box_windows import box_window_spec, random_windows
from tumorgen.data.intensity import tumor_uptake
from tumorgen.data.prepared import PreparedDataset, load_prepared
from tumorgen.errors import fail_on
from tumorgen.io.atomic import atomic_path, write_json
from tumorgen.io.files import sha256_file
from tumorgen.io.spacing import voxel_spacing
from tumorgen.models.block_dropout import attach_block_dropout
from tumorgen.models.vae import encode_mean, latent_factor
from tumorgen.training import distributed
from tumorgen.training.loop import FitResult, Stage, fit
from tumorgen.training.run_folder import build_flow_models, load_vae
from tumorgen.training.run_setup import (
    claim_run_dir, seeded_generator, stack_volumes, write_run_config,
)
from tumorgen.training.tumor_swap import swap_donors, swapped_batch


def tight_box_sizes(mask: np.ndarray) -> list[int]:
    """Extent (voxels) of the tight box around a binary (X, Y, Z) mask's nonzero voxels."""
    box = tight_box(mask)
    return [b - a for a, b in zip(box[:3], box[3:])]


def describe_data(dataset: PreparedDataset, cases, masks: list[np.ndarray], affines: list[np.ndarray], *,
                  vae_sha256: str | None, latent_factor: int, config: Config | None = None,
                  images: list[np.ndarray] | None = None) -> dict:
    """The run's data.json: what synthesis needs to know about the training data and the model's window.

    `images` (the prepared volumes, SUV / suv_max) are needed when the model is uptake-conditioned.
    """
    spacings = np.array([voxel_spacing(a) for a in affines])  # (N, 3) mm
    boxes_vox = [tight_box_sizes(m) for m in masks]
    boxes_mm = [[float(v * s) for v, s in zip(b, sp)] for b, sp in zip(boxes_vox, spacings)]
    info = {
        "format": "tumorgen-data-info", "version": 1,
        "source": str(dataset.root), "suv_max": dataset.suv_max, "size": list(dataset.size),
        "spacing": [float(s) for s in np.median(spacings, axis=0)],
        "spacing_per_case": dataset.info.get("spacing") is None,
        "axcodes": "".join(nib.aff2axcodes(affines[0])),
        "train_cases": [c.name for c in cases],
        "box_sizes_voxels": boxes_vox, "box_sizes_mm": boxes_mm,
        "vae_sha256": vae_sha256, "latent_factor": int(latent_factor),
    }
    if config is not None and config.data.window == "box":
        # sampled boxes are drawn like the training boxes: the tight box plus the pad on each face
        padded = [[float((v + 2 * config.data.box_pad) * s) for v, s in zip(b, sp)] for b, sp in zip(boxes_vox, spacings)]
        info.update(window="box", size=[config.data.window_size] * 3, box_fill=config.data.box_fill,
                    intensity=config.data.intensity, box_sizes_mm=padded)
    if config is not None and config.flow.uptake_condition:
        if images is None:
            raise ValueError("an uptake-conditioned model's data.json needs the training images")
        # what synthesis draws a tumor's uptake from when the user gives none: one training tumor's mean SUV
        info["tumor_uptake_suv"] = [round(float(im[m > 0].mean()) * float(dataset.suv_max), 4)
                                    for im, m in zip(images, masks)]
    return info


def box_window_bank(config: Config, dataset: PreparedDataset, loaded: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stage-2 bank of box windows: `data.windows_per_case` per training tumor, from `train.seed`.

    One function, so TumorGen and the baselines (`baselines.stage`) train on the very same windows.
    `loaded` holds each case's (image in [0, 1], mask, affine); returns `random_windows`' images, masks
    and boxes.
    """
    return random_windows([im * dataset.suv_max for im, _, _ in loaded], [m for _, m, _ in loaded],
                          [a for _, _, a in loaded], box_window_spec(config, dataset.suv_max),
                          np.random.default_rng(config.train.seed), config.data.windows_per_case * len(loaded),
                          transposes=config.data.transpose_windows)


def erase_windows(images: np.ndarray, boxes: np.ndarray, *, seed: int) -> torch.Tensor:
    """Box windows (N, 1, S, S, S) with each box erased as synthesis erases it (`data.erase`)."""
    from tumorgen.data.erase import erase_box

    rngs = np.random.SeedSequence(seed).spawn(len(images))
    erased = [erase_box(image[0], box, rng=np.random.default_rng(r)) for image, box, r in zip(images, boxes, rngs)]
    return torch.from_numpy(np.stack(erased)[:, None].astype(np.float32))


@torch.no_grad()
def encode_latents(vae: nn.Module, images: torch.Tensor, *, scale_factor: float, device, chunk: int = 4) -> torch.Tensor:
    """Scaled posterior-mean latents of every volume, computed once (the VAE is frozen): (N, c, h, w, d)."""
    parts = [encode_mean(vae, images[i:i + chunk].to(device)).float().cpu() * scale_factor
             for i in range(0, len(images), chunk)]
    return torch.cat(parts)


def train_tumorgen(*, data: str | Path, vae_run: str | Path, out: str | Path, config: Config,
                   resume: bool = False, progress: bool = True) -> FitResult:
    """Train the flow model and refiner on top of a frozen VAE; write the run folder.

    Args:
        data: the PREP folder.
        vae_run: a `train-vae` run folder or VAE checkpoint file (ignored on resume: RUN/vae.pt is used).
        out: the TumorGen run folder to create (or continue with `resume`).
        config: the resolved config; its `vae` section is replaced by the VAE run's own.
        resume: continue from `out/checkpoints/last.pt`.
        progress: show a progress bar.
    """
    return distributed.run_distributed(config.train.device, _train, data=Path(data), vae_run=Path(vae_run),
                                       out=Path(out), config=config, resume=resume, progress=progress)


def _train(*, data: Path, vae_run: Path, out: Path, config: Config, resume: bool, progress: bool,
           info: distributed.DistInfo) -> FitResult:
    train = config.train
    vae_source = out / "vae.pt" if resume else vae_run
    vae, scale_factor, vae_cfg, vae_path = load_vae(vae_source, device=info.device)
    # the run records the VAE it really uses (its own config), whatever the preset said
    config = dataclasses.replace(config, vae=vae_cfg.vae, vae_train=vae_cfg.vae_train)

    dataset = load_prepared(data)
    cases = dataset.tumor_cases(split="train")
    if not cases:
        raise fail_on(data / "dataset.json", "has no tumor-bearing training cases to train TumorGen on")
    loaded = [case.load() for case in cases]
    images = stack_volumes([im for im, _, _ in loaded])  # (N, 1, X, Y, Z)
    masks = stack_volumes([m.astype(np.float32) for _, m, _ in loaded])  # (N, 1, X, Y, Z)
    factor = latent_factor(vae)
    if config.data.window != "box" and any(s % (factor * 2 ** (len(config.flow.channels) - 1)) for s in dataset.size):
        raise fail_on(data / "dataset.json", f"size {dataset.size} is not divisible by the VAE factor {factor} "
                                             f"times the U-Net's {2 ** (len(config.flow.channels) - 1)} levels")

    claim_run_dir(out, resume=resume, is_main=info.is_main)
    distributed.barrier(info)
    if info.is_main and not resume:
        with atomic_path(out / "vae.pt") as tmp:
            shutil.copyfile(vae_path, tmp)
        write_json(out / "data.json", describe_data(dataset, cases, [m for _, m, _ in loaded],
                                                     [a for _, _, a in loaded], vae_sha256=sha256_file(out / "vae.pt"),
                                                     config=config, latent_factor=factor,
                                                     images=[im for im, _, _ in loaded]))
    if info.is_main:
        write_run_config(config, out)
    distributed.barrier(info)
    vae_sha = sha256_file(out / "vae.pt")

    boxes = uptake = None
    if config.data.window == "box":  # a bank of box windows, encoded once (the VAE is frozen)
        bank_images, bank_masks, bank_boxes = box_window_bank(config, dataset, loaded)
        images, masks = torch.from_numpy(bank_images), torch.from_numpy(bank_masks)  # (N*K, 1, S, S, S)
        latent_shape = tuple(s // factor for s in images.shape[2:])
        boxes = box_indicator(torch.from_numpy(bank_boxes) // factor, latent_shape)  # (N*K, 1, h, w, d)
        if config.flow.uptake_condition:  # each window's tumor mean SUV, in model range
            uptake = torch.from_numpy(tumor_uptake(bank_images, bank_masks, suv_max=dataset.suv_max,
                                                   kind=config.data.intensity))  # (N*K,)
    latents = encode_latents(vae, images, scale_factor=scale_factor, device=info.device)  # (N, c, h, w, d)
    context = None
    if boxes is not None and config.flow.erase_context:  # the same windows with their box erased
        erased = erase_windows(bank_images, bank_boxes, seed=train.seed)
        context = encode_latents(vae, erased, scale_factor=scale_factor, device=info.device)
    bank = {"image": images, "mask": masks, "latent": latents, "box": boxes, "context": context, "uptake": uptake}
    bank = {key: value for key, value in bank.items() if value is not None}
    model = build_flow_models(config, vae)
    data_gen = seeded_generator(train.seed)
    noise_gen = seeded_generator(train.seed * 1_000_003 + 1 + info.rank, device=info.device)
    rank_generators = {"noise": noise_gen}
    if config.flow.dropout:  # its own stream, so runs without dropout keep theirs
        dropout_gen = seeded_generator(train.seed * 1_000_003 + 7_919 + info.rank, device=info.device)
        attach_block_dropout(model["unet"], config.flow.dropout, generator=dropout_gen)
        rank_generators["dropout"] = dropout_gen
    weights = {"coarse": config.flow.coarse_weight, "fine": config.flow.fine_weight, "rec": config.flow.rec_weight}
    ablate = frozenset(config.ablate)
    from tumorgen.models.tumorgen import TumorGenModels
    from tumorgen.training import objective

    def step_fn(runner: nn.Module, step: int) -> dict[str, torch.Tensor]:
        chosen = torch.randint(len(images), (train.batch_size * info.world_size,), generator=data_gen)
        tumor = swap_donors(chosen, count=len(images), share=config.flow.tumor_swap, generator=data_gen)
        # (B, 1, X, Y, Z) images and masks, (B, c, h, w, d) latents and context, (B, 1, h, w, d) boxes, (B,) uptakes
        batch = swapped_batch(bank, distributed.rank_slice(chosen, info), distributed.rank_slice(tumor, info),
                              device=info.device)
        models = TumorGenModels(vae=vae, unet=runner["unet"], refiner=runner["refiner"])
        # (step + 1): the logged steps (multiples of log_every) are refiner steps, so "rec" shows in metrics
        run_refiner = (step + 1) % config.flow.refiner_every == 0 and "no_vmr" not in ablate
        return objective.training_losses(models, batch, scale_factor=scale_factor, alpha=config.flow.alpha,
                                         s=config.flow.s, time_sampling=config.flow.time_sampling, weights=weights,
                                         ablate=ablate, run_refiner=run_refiner,
                                         refiner_margin=config.flow.refiner_margin,
                                         outside_weight=config.flow.outside_weight,
                                         uptake_dropout=config.flow.uptake_dropout, generator=noise_gen)

    def compile_fn(module: nn.ModuleDict) -> nn.ModuleDict:
        return nn.ModuleDict({"unet": torch.compile(module["unet"]), "refiner": module["refiner"]})

    def extra_fn(ema: nn.Module) -> dict:
        return {"scale_factor": scale_factor, "vae_sha256": vae_sha, "suv_max": dataset.suv_max,
                "size": list(dataset.size)}

    stage = Stage(kind="tumorgen", model=model, step_fn=step_fn, generators={"data": data_gen},
                  rank_generators=rank_generators, config=to_dict(config), extra_fn=extra_fn,
                  compile_fn=compile_fn)
    return fit(stage=stage, run_dir=out, train=train, info=info, resume=resume, progress=progress)
