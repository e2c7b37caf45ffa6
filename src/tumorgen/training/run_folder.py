"""Load finished runs: a VAE run (for stage 2) and a TumorGen run (for synthesis).

A TumorGen run folder is self-contained: `config.json`, `checkpoints/last.pt` (SC-VFE + VMR),
`vae.pt` (the VAE it was trained with, whose SHA-256 is pinned in `data.json`) and `data.json`.
`load_run(RUN)` rebuilds every model from those files alone, with the EMA weights by default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tumorgen.config import Config, from_dict
from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.files import sha256_file
from tumorgen.models.refiner import MaskRefiner
from tumorgen.models.tumorgen import TumorGenModels
from tumorgen.models.vae import build_vae, decoder_feature_channels
from tumorgen.models.velocity_unet import build_velocity_unet
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.run_setup import seeded_init


@dataclass(frozen=True)
class LoadedRun:
    """Everything synthesis needs from a TumorGen run folder.

    Args:
        config: the run's resolved config.
        models: `models.tumorgen.TumorGenModels(vae, unet, refiner)`, in eval mode, gradients off.
        scale_factor: the VAE's latent scale factor (latents are multiplied by it before the flow).
        data_info: data.json (suv_max, size, spacing, axcodes, box_sizes_mm, ...).
        version: the TumorGen version that wrote the checkpoint.
        step: training steps of the loaded weights.
        run_dir: the folder it came from.
    """

    config: Config
    models: object
    scale_factor: float
    data_info: dict
    version: str
    step: int
    run_dir: Path


def _config_of(payload: dict, source: Path) -> Config:
    try:
        return from_dict(payload["config"], source=str(source))
    except TumorGenError as err:
        raise fail_on(source, f"holds a config this TumorGen cannot read ({err})") from None


def load_weights(module: nn.Module, state: dict, source: Path, what: str) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0][:200]
        raise fail_on(source, f"{what} weights do not match the model its config describes ({first})") from None


def load_vae(path: str | Path, *, device: torch.device | str = "cpu", use_ema: bool = True, lite: bool = False
             ) -> tuple[nn.Module, float, Config, Path]:
    """A frozen VAE from a `train-vae` run folder, its checkpoint, or a TumorGen run's `vae.pt`.

    Returns `(vae, scale_factor, config, checkpoint_path)`; the VAE is in eval mode without gradients.
    `lite` builds MONAI's AutoencoderKL as its torch-only twin (same weights and outputs, no MONAI import).
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "checkpoints" / "last.pt", path / "vae.pt"]
        found = [c for c in candidates if c.exists()]
        if not found:
            raise fail_on(path, "is not a train-vae run folder (it has no checkpoints/last.pt)")
        path = found[0]
    payload = load_checkpoint(path, expected_kind="vae")
    cfg = _config_of(payload, path)
    scale = payload["extra"].get("scale_factor")
    if not isinstance(scale, (int, float)) or not scale > 0:
        raise fail_on(path, "has no latent scale factor (extra.scale_factor); finish its train-vae run first")
    v = cfg.vae
    vae = build_vae(arch=v.arch, channels=v.channels, latent_channels=v.latent_channels,
                    num_res_blocks=v.num_res_blocks, norm_num_groups=v.norm_num_groups, attention=v.attention,
                    lite=lite and v.arch == "kl")  # MAISI's VAE has no MONAI-free twin
    load_weights(vae, payload["ema" if use_ema else "model"], path, "VAE")
    vae = vae.to(device).eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    # the VAE's weights now live in the checkpoint: do not point at the original weights file again
    cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, weights=""))
    return vae, float(scale), cfg, path


def build_flow_models(cfg: Config, vae: nn.Module, *, lite: bool = False) -> nn.ModuleDict:
    """The trained part of TumorGen, `{"unet": SC-VFE, "refiner": VMR}`, initialised from `train.seed`.

    `lite` builds the U-Net as the torch-only twin of MONAI's (for inference: no MONAI import).
    """
    f = cfg.flow
    with seeded_init(cfg.train.seed):
        c = cfg.vae.latent_channels  # in: x_t (c + 1), z_B (c), B (1), and B * uptake when conditioned
        unet = build_velocity_unet(latent_channels=c, channels=f.channels,
                                   attention_levels=f.attention_levels, num_res_blocks=f.num_res_blocks,
                                   num_head_channels=f.num_head_channels, norm_num_groups=f.norm_num_groups,
                                   in_channels=2 * c + 2 + int(f.uptake_condition), lite=lite,
                                   uptake_embedding=f.uptake_embedding)
        refiner = MaskRefiner(feature_channels=decoder_feature_channels(vae), widths=f.refiner_widths)
    return nn.ModuleDict({"unet": unet, "refiner": refiner})


def load_run(run_dir: str | Path, *, device: torch.device | str = "cpu", use_ema: bool = True,
             lite: bool = False) -> LoadedRun:
    """Rebuild a trained TumorGen model from its run folder alone.

    Args:
        run_dir: a folder written by `tumorgen train`.
        device: where to put the models.
        use_ema: load the EMA weights (what synthesis should use) rather than the raw ones.
        lite: build the networks as torch-only twins of MONAI's (inference without MONAI's import).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise fail_on(run_dir, "is not a folder; --model needs a TumorGen run folder written by `tumorgen train`")
    needed = ["config.json", "data.json", "vae.pt", "checkpoints/last.pt"]
    missing = [n for n in needed if not (run_dir / n).exists()]
    if missing:
        raise fail_on(run_dir, f"is not a TumorGen run folder (missing {', '.join(missing)})")
    payload = load_checkpoint(run_dir / "checkpoints" / "last.pt", expected_kind="tumorgen")
    cfg = _config_of(payload, run_dir / "checkpoints" / "last.pt")
    try:
        data_info = json.loads((run_dir / "data.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail_on(run_dir / "data.json", f"is not valid JSON ({err})") from None
    pinned = data_info.get("vae_sha256")
    if pinned:
        if sha256_file(run_dir / "vae.pt") != pinned:
            raise fail_on(run_dir / "vae.pt", "differs from the VAE this model was trained with (SHA-256 mismatch)")
    vae, scale, _, _ = load_vae(run_dir / "vae.pt", device=device, use_ema=use_ema, lite=lite)
    flow = build_flow_models(cfg, vae, lite=lite)
    load_weights(flow, payload["ema" if use_ema else "model"], run_dir / "checkpoints" / "last.pt", "TumorGen")
    flow = flow.to(device).eval()
    for p in flow.parameters():
        p.requires_grad_(False)
    # a "no_vmr" run never trained its refiner: synthesis must use the coarse mask, not random weights
    refiner = None if "no_vmr" in cfg.ablate else flow["refiner"]
    models = TumorGenModels(vae=vae, unet=flow["unet"], refiner=refiner)
    return LoadedRun(config=cfg, models=models, scale_factor=scale, data_info=data_info,
                     version=str(payload["extra"].get("tumorgen_version", "unknown")), step=int(payload["step"]),
                     run_dir=run_dir)
