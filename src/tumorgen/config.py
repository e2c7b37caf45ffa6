"""One typed config tree for both training stages, its presets, and `--set key=value` overrides.

A run is described completely by a `Config`: it is saved as `config.json` beside every checkpoint and
inside it, so a checkpoint rebuilds its models alone. Presets are TOML files in
`tumorgen/configs/` (debug, phantom, hecktor, autopet); a preset only lists what differs from the
defaults below. Every default carries a comment saying why it is what it is.

Overrides are typed: `vae.channels=16,32,32` becomes a tuple of ints, `train.amp=off` a string,
`ablate=no_bapmg,no_fine` a tuple of ablation names. An unknown key is refused with the list of
valid ones, never silently ignored (the typed dict <-> dataclass codec: `config_codec`).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tumorgen.config_codec import merge, parse_text, to_dict
from tumorgen.errors import TumorGenError, fail_on

ABLATIONS = ("no_bapmg", "no_coarse", "no_fine", "no_vmr")
PRESETS = ("debug", "phantom", "hecktor", "autopet", "ibsi")


@dataclass(frozen=True)
class DataConfig:
    """What the trainers take from the PREP cache.

    The training volumes are read once and kept in memory (64^3 float32 is 1 MiB a case; reading
    gzip NIfTI every step would cost more than a CPU step), so there are no loader workers to set.
    """

    patch_size: tuple[int, int, int] = (32, 32, 32)  # VAE patches: the VAE is convolutional, and a 32^3
    # patch trains ~8x faster than a 64^3 volume on a CPU while seeing the same textures
    window: str = "volume"  # "volume": both stages and synthesis use the PREP grid (the paper's whole
    # crop); "box": box-normalised windows (data/box_windows.py): every tumor box, 8 mm or 30 cm,
    # spans `box_fill` voxels of a `window_size`^3 window, in training (VAE and flow) and synthesis alike
    window_size: int = 32  # the box window's side in voxels
    box_fill: int = 24  # window voxels a box spans per axis (aspect capped at 3): (32 - 24) / 2 = 4 voxels of context a side
    windows_per_case: int = 16  # stage 2 encodes this many box windows per training case once (frozen VAE)
    transpose_windows: bool = False  # stage 2's windows also in a random axis order (48 orientations, not
    # the flips' 8): more views of few tumors (validation r16 in benchmarks/results/ibsi_validation)
    box_pad: float = 2.0  # training boxes: tight box + ~U(0.5, 1.5) x this many PREP voxels a face (plus
    # BA-PMG's alpha share of the tumor's extent), so a user's "tumor + a couple of voxels" box is in range
    intensity: str = "linear"  # "linear": clip(SUV)/suv_max; "log": log1p(SUV)/log1p(suv_max), room for
    # both background and hot uptake (tumorgen/data/intensity.py); applied to box windows only


@dataclass(frozen=True)
class VAEConfig:
    """Stage 1: the 3D KL-VAE (MONAI AutoencoderKL) or MAISI's VAE architecture."""

    arch: str = "kl"  # "kl": MONAI AutoencoderKL trained here; "maisi": AutoencoderKlMaisi, for its weights
    channels: tuple[int, ...] = (32, 64, 64)  # three levels = downsampling factor 4 (docs/METHOD.md: f = 4)
    latent_channels: int = 4  # c = 4 in the paper, as in MAISI and Stable Diffusion
    num_res_blocks: int = 1  # one block per level measured 2.8 s/step at 64^3 on a CPU; two doubles it
    norm_num_groups: int = 16  # must divide every channel count; 16 suits 32/64
    attention: bool = False  # latent non-local attention doubles encode time at 96^3 for little gain
    weights: str = ""  # a local weights file (e.g. MAISI's autoencoder); "" trains from scratch
    tumor_weight: float = 1.0  # L1 weight inside the tumor mask (box windows): tumors are a small share of
    # the voxels, and the point of the model; >1 spends the VAE's capacity on them
    kl_weight: float = 1e-6  # the KL is summed over latent voxels; MONAI's 3D LDM tutorial uses 1e-6,
    # which keeps reconstructions sharp while pulling latents towards N(0, 1) (the scale factor does the rest)


@dataclass(frozen=True)
class FlowConfig:
    """Stage 2: BA-PMG, the SC-VFE velocity U-Net, the spatial constraints and the VMR refiner."""

    channels: tuple[int, ...] = (32, 64, 128)  # 7.0 M parameters: ~0.18 s per batch-4 step at 16^3 on a CPU
    attention_levels: tuple[bool, ...] = (False, False, False)  # 16^3 latents: convolutions see enough
    num_res_blocks: int = 1  # matches the CPU timing above; the paper's GPU scale can use 2
    num_head_channels: int = 32  # only used where attention is on
    norm_num_groups: int = 16  # divides 32/64/128
    alpha: float = 0.1  # BA-PMG box expansion alpha (docs/METHOD.md section 1 choice)
    s: float = 1.0  # mask channel scaled to [-s, s] (docs/METHOD.md section 2 choice)
    time_sampling: str = "logit-normal"  # Esser et al. 2024; "uniform" as the alternative
    refiner_widths: tuple[int, ...] = (32, 16, 8)  # VMR widths at latent, x2, x4 resolution (one per
    # decoder scale: log2(f) + 1 entries)
    erase_context: bool = False  # condition on the window with its box erased (data/erase.py), in
    # training and at synthesis: encoded latents next to the box "see" into it, so a model trained on
    # windows that still hold the tumor learns to copy that rim and makes small, cold tumors in a
    # healthy scan (measured on IBSI validation: volume 0.50x, mean SUV 0.57x of real)
    uptake_condition: bool = False  # condition the flow on the tumor's mean SUV (one extra input channel,
    # the value inside the box): with the box erased nothing in the window says how hot the tumor was,
    # and an unconditioned model averages hot and cold tumors into a cold one (IBSI test: mean SUV
    # 0.48x of real). Synthesis takes the user's SUV or draws one of the training tumors' (data.json)
    uptake_embedding: bool = False  # also add the uptake to the U-Net's time embedding (every residual
    # block sees it, as class labels): a channel alone was followed compressed toward the middle
    uptake_dropout: float = 0.0  # share of training samples told no uptake (UNTOLD), so the one network
    # also learns the untold velocity that classifier-free guidance steers from (Ho & Salimans: 0.1-0.2)
    guidance: float = 1.0  # classifier-free guidance scale w toward a told uptake: v_untold + w (v_told -
    # v_untold); 1 is the told velocity alone (one U-Net call a step), > 1 follows the asked SUV more closely
    # (two calls). A drawn uptake always samples at 1: guided toward a training tumor's uptake that may not
    # suit the box, tumors got worse (IBSI validation, r4)
    dropout: float = 0.0  # share of activations dropped in each U-Net residual block in training
    # (models/block_dropout.py): the usual diffusion regulariser on small datasets; 0 draws nothing
    tumor_swap: float = 0.0  # share of training windows whose tumor comes from another window, in the
    # first one's erased context (training/tumor_swap.py): the context then cannot name its tumor
    outside_weight: float = 1.0  # flow-loss weight of latent voxels outside the box (inside: 1); the
    # sampler overwrites them with the known path, so <1 spends the model on the tumor
    refiner_every: int = 1  # run the VAE decode + refiner every N steps: decoding is the CPU cost
    refiner_margin: int | None = None  # None: the VMR decodes and refines the whole volume (docs/METHOD.md);
    # k: only the latent crop around the batch's boxes plus k latent voxels (3-4x cheaper on a CPU)
    coarse_weight: float = 1.0  # lambda1 in eq. (7)
    fine_weight: float = 0.5  # lambda2 in eq. (7)
    rec_weight: float = 1.0  # lambda3 in eq. (7)
    sample_steps: int = 10  # Euler steps at synthesis (paper: RFM-10 is its fast setting)


@dataclass(frozen=True)
class DiffusionConfig:
    """The DDPM baselines (DiffTumor-style inpainting, blended latent diffusion) on the flow's U-Net size."""

    schedule: str = "scaled_linear"  # latent diffusion's beta schedule (Rombach et al.; MONAI's 3D LDM tutorial)
    num_train_timesteps: int = 1000  # DDPM's T
    beta_start: float = 0.0015  # the LDM values, used by MONAI's 3D latent diffusion tutorial
    beta_end: float = 0.0195
    sample_steps: int = 50  # the paper times DDPM-50 and DDIM-50
    sample_method: str = "ddim"  # "ddim" (deterministic) or "ddpm" (ancestral)


@dataclass(frozen=True)
class HAGANConfig:
    """HA-GAN (Sun et al. 2022), scaled from 256^3 volumes on a GPU to box windows on a CPU (baselines/hagan.py)."""

    latent_dim: int = 64  # the noise vector (paper: 1024 for a 256^3 volume; a 32^3 window holds 1/512 of its voxels)
    channels: int = 16  # width unit: the shared trunk runs at 4x, 2x this (paper: 32, trunk up to 16x)
    low_res_factor: int = 2  # the whole low-resolution window is window / this (paper: 4, 256 -> 64); 4 would
    # leave 8^3 for a 32^3 window, 6 voxels across a box
    sub_volumes: int = 4  # the window's first axis in this many high-resolution slabs (paper: 8 of 256 voxels;
    # here 8 of 32, so a slab is still 4 trunk voxels deep)
    lr_g: float = 1e-4  # the paper's three Adam rates, betas (0, 0.999)
    lr_d: float = 4e-4
    lr_e: float = 1e-4


@dataclass(frozen=True)
class MedFusionConfig:
    """MedFusion (Mueller-Franzes et al. 2023): its own VAE and its latent DDPM's settings (baselines/medfusion.py).

    The VAE's levels and widths are the `vae` section's (the same compression and size as TumorGen's VAE);
    what differs is MedFusion's: 8 latent channels, its blocks and its loss.
    """

    latent_channels: int = 8  # MedFusion's `emb_channels` (Stable Diffusion's VAE: 4)
    kl_weight: float = 1e-6  # its `embedding_loss_weight`, on the KL summed over latent voxels
    ssim_weight: float = 1.0  # its reconstruction loss: pixel MSE + (1 - SSIM), summed over voxels
    deep_supervision: int = 1  # extra decoder outputs at the next-coarser scales, each with the same loss
    beta_start: float = 0.002  # its GaussianNoiseScheduler: scaled-linear betas 0.002 -> 0.02, T = 1000
    beta_end: float = 0.02
    num_train_timesteps: int = 1000
    sample_steps: int = 150  # its scripts/sample.py
    sample_method: str = "ddpm"  # its DDIM with eta = 1, which is DDPM's ancestral step between strided timesteps


LR_SCHEDULES = ("constant", "cosine")  # training/lr_schedule.py gives each its curve


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation of one stage (the same fields for the VAE and for TumorGen)."""

    steps: int = 2000  # enough for the phantom demo to make tumor-like masks; GPU presets raise it
    lr: float = 1e-4  # AdamW's usual rate for LDM-style U-Nets and VAEs
    lr_schedule: str = "constant"  # or "cosine": decay to zero over `steps` (training/lr_schedule.py);
    # constant, because the EMA already smooths the weights: cosine tied it on IBSI validation (r12)
    weight_decay: float = 0.0  # regularisation comes from data augmentation (fresh boxes, noise, t)
    batch_size: int = 2  # batch 2 ran faster than batch 1 on a CPU (batch-1 conv3d takes a slow path)
    ema_decay: float = 0.999  # standard EMA for flow/diffusion weights; warmed up over early steps
    grad_clip: float = 1.0  # clip the global gradient norm: early flow steps have spiky losses
    checkpoint_every: int = 500  # a crash loses at most a few minutes of CPU training
    keep_checkpoints: int = 3  # step_*.pt files kept besides last.pt: bounded disk use
    log_every: int = 10  # metrics.jsonl lines: often enough for a curve, rare enough to stay small
    seed: int = 0  # every random draw (init, data, noise, boxes, t) derives from it
    device: str = "auto"  # "auto": CUDA when available, else CPU; or "cpu" / "cuda"
    amp: str = "auto"  # "auto": bf16 autocast on CUDA only; "off"; "bf16"
    compile: bool = False  # torch.compile gained at most 13% on the CPU; opt-in
    max_minutes: float | None = None  # stop at the first step after this wall time (None: no limit), with
    # the usual final checkpoint: the CPU demo and the evaluation tables need bounded-time training,
    # and `--resume` with a larger budget (or more steps) continues where it stopped


@dataclass(frozen=True)
class Config:
    """The whole run: data, both models, both stages' optimisation and the ablations."""

    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    vae_train: TrainConfig = field(default_factory=TrainConfig)  # stage 1 (train-vae)
    train: TrainConfig = field(default_factory=TrainConfig)  # stage 2 (train)
    ablate: tuple[str, ...] = ()  # subset of ABLATIONS: how the paper's ablation table is trained
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # the baselines (train-baseline)
    hagan: HAGANConfig = field(default_factory=HAGANConfig)  # train-baseline --method hagan
    medfusion: MedFusionConfig = field(default_factory=MedFusionConfig)  # train-baseline --method medfusion


def validate(cfg: Config, *, source: str = "config") -> Config:
    """Refuse values that would fail later, deep inside training, with one sentence now."""

    def need(ok: bool, problem: str) -> None:
        if not ok:
            raise fail_on(source, problem)

    need(cfg.vae.arch in ("kl", "maisi"), f"vae.arch must be 'kl' or 'maisi', got {cfg.vae.arch!r}")
    need(len(cfg.vae.channels) >= 2, "vae.channels needs at least two levels")
    need(all(c % cfg.vae.norm_num_groups == 0 for c in cfg.vae.channels), "vae.norm_num_groups must divide vae.channels")
    need(all(c % cfg.flow.norm_num_groups == 0 for c in cfg.flow.channels), "flow.norm_num_groups must divide flow.channels")
    need(len(cfg.flow.attention_levels) == len(cfg.flow.channels), "flow.attention_levels needs one entry per flow.channels")
    need(cfg.flow.time_sampling in ("logit-normal", "uniform"), "flow.time_sampling must be 'logit-normal' or 'uniform'")
    need(0.0 <= cfg.flow.alpha <= 1.0, f"flow.alpha must be in [0, 1], got {cfg.flow.alpha}")
    need(cfg.flow.s > 0, "flow.s must be positive")
    need(cfg.flow.refiner_every >= 1, "flow.refiner_every must be at least 1")
    need(cfg.flow.refiner_margin is None or cfg.flow.refiner_margin >= 0, "flow.refiner_margin must be >= 0 (or none)")
    need(cfg.flow.sample_steps >= 1, "flow.sample_steps must be at least 1")
    need(0.0 <= cfg.flow.outside_weight <= 1.0, "flow.outside_weight must be in [0, 1]")
    need(cfg.flow.uptake_condition or not (cfg.flow.uptake_embedding or cfg.flow.uptake_dropout),
         "flow.uptake_embedding and flow.uptake_dropout need flow.uptake_condition = true")
    need(0.0 <= cfg.flow.uptake_dropout < 1.0, "flow.uptake_dropout must be in [0, 1)")
    need(cfg.flow.guidance >= 0.0, "flow.guidance must be >= 0")
    need(0.0 <= cfg.flow.dropout < 1.0, "flow.dropout must be in [0, 1)")
    need(0.0 <= cfg.flow.tumor_swap < 1.0, "flow.tumor_swap must be in [0, 1)")
    need(not cfg.flow.tumor_swap or (cfg.data.window == "box" and cfg.flow.erase_context),
         "flow.tumor_swap needs data.window = 'box' and flow.erase_context = true (the swapped tumor sits in an erased context)")
    need(not cfg.flow.uptake_condition or cfg.data.window == "box",
         "flow.uptake_condition needs data.window = 'box' (the uptake is measured on the box windows)")
    need(cfg.vae.tumor_weight >= 1.0, "vae.tumor_weight must be >= 1")
    need(cfg.data.window in ("volume", "box"), f"data.window must be 'volume' or 'box', got {cfg.data.window!r}")
    need(cfg.data.intensity in ("linear", "log"), f"data.intensity must be 'linear' or 'log', got {cfg.data.intensity!r}")
    need(0 < cfg.data.box_fill <= cfg.data.window_size, "data.box_fill must be in (0, data.window_size]")
    need(cfg.data.windows_per_case >= 1 and cfg.data.box_pad >= 0, "data.windows_per_case >= 1 and data.box_pad >= 0")
    factor = 2 ** (len(cfg.vae.channels) - 1) if cfg.vae.arch == "kl" else 4  # MAISI: f = 4
    need(cfg.vae.arch != "kl" or len(cfg.flow.refiner_widths) == len(cfg.vae.channels),
         "flow.refiner_widths needs one width per VAE level (decoder scale)")
    need(cfg.data.window != "box" or cfg.data.window_size % (factor * 2 ** (len(cfg.flow.channels) - 1)) == 0,
         "data.window_size must be divisible by the VAE factor times the U-Net's downsampling")
    need(all(p >= factor and p % factor == 0 for p in cfg.data.patch_size),
         f"data.patch_size entries must be multiples of the VAE's downsampling factor {factor}")
    d = cfg.diffusion
    need(d.schedule in ("linear", "scaled_linear"), "diffusion.schedule must be 'linear' or 'scaled_linear'")
    need(d.num_train_timesteps >= 2, "diffusion.num_train_timesteps must be at least 2")
    need(0.0 < d.beta_start < d.beta_end < 1.0, "diffusion needs 0 < beta_start < beta_end < 1")
    need(1 <= d.sample_steps <= d.num_train_timesteps, "diffusion.sample_steps must be in [1, num_train_timesteps]")
    need(d.sample_method in ("ddim", "ddpm"), "diffusion.sample_method must be 'ddim' or 'ddpm'")
    g = cfg.hagan
    need(g.latent_dim >= 1 and g.channels >= 1, "hagan.latent_dim and hagan.channels must be >= 1")
    need(g.low_res_factor in (2, 4, 8), "hagan.low_res_factor must be 2, 4 or 8")
    need(g.sub_volumes >= 1, "hagan.sub_volumes must be >= 1")
    need(min(g.lr_g, g.lr_d, g.lr_e) > 0, "hagan.lr_g, lr_d and lr_e must be positive")
    mf = cfg.medfusion
    need(mf.latent_channels >= 1, "medfusion.latent_channels must be >= 1")
    need(mf.kl_weight >= 0 and mf.ssim_weight >= 0, "medfusion.kl_weight and ssim_weight must be >= 0")
    need(0 <= mf.deep_supervision < len(cfg.vae.channels), "medfusion.deep_supervision must be below the VAE's levels")
    need(0.0 < mf.beta_start < mf.beta_end < 1.0, "medfusion needs 0 < beta_start < beta_end < 1")
    need(mf.num_train_timesteps >= 2, "medfusion.num_train_timesteps must be at least 2")
    need(1 <= mf.sample_steps <= mf.num_train_timesteps, "medfusion.sample_steps must be in [1, num_train_timesteps]")
    need(mf.sample_method in ("ddim", "ddpm"), "medfusion.sample_method must be 'ddim' or 'ddpm'")
    unknown = [a for a in cfg.ablate if a not in ABLATIONS]
    need(not unknown, f"unknown ablation {unknown}; valid: {', '.join(ABLATIONS)}")
    for name in ("vae_train", "train"):
        t: TrainConfig = getattr(cfg, name)
        need(t.steps >= 0, f"{name}.steps must be >= 0")
        need(t.batch_size >= 1, f"{name}.batch_size must be >= 1")
        need(t.lr > 0, f"{name}.lr must be positive")
        need(t.lr_schedule in LR_SCHEDULES, f"{name}.lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        need(0.0 <= t.ema_decay < 1.0, f"{name}.ema_decay must be in [0, 1)")
        need(t.checkpoint_every >= 1 and t.log_every >= 1, f"{name}.checkpoint_every and log_every must be >= 1")
        need(t.keep_checkpoints >= 1, f"{name}.keep_checkpoints must be >= 1")
        need(t.device in ("auto", "cpu", "cuda"), f"{name}.device must be auto, cpu or cuda")
        need(t.amp in ("auto", "off", "bf16"), f"{name}.amp must be auto, off or bf16")
        need(t.max_minutes is None or t.max_minutes > 0, f"{name}.max_minutes must be positive (or none)")
    return cfg


# ---------------------------------------------------------------------------------------------
# presets, files and overrides


def from_dict(data: dict, *, source: str = "config") -> Config:
    """A checked `Config` from a (possibly partial) nested dict; missing keys keep their defaults.

    Args:
        data: nested mapping, e.g. parsed TOML or JSON.
        source: where the dict came from, named in error messages.
    """
    return validate(merge(Config(), data, source=source), source=source)


def load_config(name_or_path: str | Path | None = None) -> Config:
    """A preset name (`debug`, `phantom`, `hecktor`, `autopet`), a .toml/.json file, or None for defaults."""
    if name_or_path is None:
        return Config()
    text = str(name_or_path)
    if text in PRESETS:
        source = f"preset {text}"
        raw = tomllib.loads(resources.files("tumorgen").joinpath("configs", f"{text}.toml").read_text())
        return from_dict(raw, source=source)
    path = Path(text)
    if not path.exists():
        raise TumorGenError(f"{path}: no such config file, and not a preset ({', '.join(PRESETS)})")
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            raw = json.loads(path.read_text())
        else:
            raise fail_on(path, "a config file must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise fail_on(path, f"is not valid {path.suffix[1:].upper()} ({err})") from None
    return from_dict(raw, source=str(path))


def save_config(cfg: Config, path: str | Path) -> Path:
    from tumorgen.io.atomic import write_json

    return write_json(path, to_dict(cfg))


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Apply `key=value` strings, e.g. `vae.arch=maisi`, `ablate=no_bapmg,no_fine`, `train.steps=100`."""
    for item in overrides:
        if "=" not in item:
            raise TumorGenError(f"--set {item}: expected key=value")
        key, text = (s.strip() for s in item.split("=", 1))
        parts = key.split(".")
        node: Any = cfg
        for depth, part in enumerate(parts):
            names = [f.name for f in dataclasses.fields(node)]
            if part not in names:
                prefix = ".".join(parts[:depth])
                valid = ", ".join(f"{prefix}.{n}" if prefix else n for n in names)
                raise TumorGenError(f"--set {item}: unknown key '{key}'; valid keys: {valid}")
            if depth < len(parts) - 1:
                node = getattr(node, part)
                if not dataclasses.is_dataclass(node):
                    raise TumorGenError(f"--set {item}: '{'.'.join(parts[: depth + 1])}' is not a section")
        if dataclasses.is_dataclass(getattr(node, parts[-1])):
            raise TumorGenError(f"--set {item}: '{key}' is a section; set one of its keys")
        hint = typing.get_type_hints(type(node))[parts[-1]]
        value = parse_text(text, hint, key=key)
        nested: dict = {parts[-1]: value}
        for part in reversed(parts[:-1]):
            nested = {part: nested}
        cfg = validate(merge(cfg, nested, source=f"--set {item}"), source=f"--set {item}")
    return cfg
