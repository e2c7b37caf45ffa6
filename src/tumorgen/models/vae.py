"""The 3D KL-VAE that maps PET volumes to the latent grid the flow model works on (f = 4, c = 4).

Two architectures behind one builder: MONAI's `AutoencoderKL` (trained by `tumorgen train-vae`, small
enough for a CPU) and MAISI's `AutoencoderKlMaisi` in NVIDIA's published configuration, the VAE the
paper uses, loadable from a local weights file. Both keep their decoder as a flat `decoder.blocks`
list, which `decode_with_features` walks to collect the refiner's features F1, F2, F3. For inference,
`lite=True` builds `LiteAutoencoderKL` instead of "kl": the same network and weights without importing MONAI.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tumorgen.errors import TumorGenError, fail_on
from tumorgen.io.files import read_torch_file
from tumorgen.models.lite_autoencoder import LiteAutoencoderKL

VAE_ARCHS = ("kl", "maisi")

# NVIDIA's MAISI VAE (MONAI model zoo `maisi_ct_generative`, configs/config_maisi.json
# "autoencoder_def"). `norm_float16`, `num_splits` and `dim_split` only change how the forward pass is
# computed (half-precision norms, convolutions split to save GPU memory), not the weights: they are
# left to `build_vae`'s keywords, off by default because float16 norms fail on the CPU.
MAISI_VAE_CONFIG = dict(
    spatial_dims=3,
    in_channels=1,
    out_channels=1,
    latent_channels=4,
    num_channels=(64, 128, 256),
    num_res_blocks=(2, 2, 2),
    norm_num_groups=32,
    norm_eps=1e-6,
    attention_levels=(False, False, False),
    with_encoder_nonlocal_attn=False,
    with_decoder_nonlocal_attn=False,
    use_checkpointing=False,
    use_convtranspose=False,
)

# Keys under which published checkpoints nest their state_dict (MAISI uses "unet_state_dict").
_NESTED_KEYS = ("unet_state_dict", "autoencoder_state_dict", "state_dict", "model", "vae")


def build_vae(
    *,
    arch: str = "kl",
    in_channels: int = 1,
    channels: tuple[int, ...] = (32, 64, 64),
    latent_channels: int = 4,
    num_res_blocks: int = 1,
    norm_num_groups: int = 16,
    attention: bool = False,
    weights: str | Path | None = None,
    norm_float16: bool = False,
    num_splits: int = 1,
    dim_split: int = 1,
    lite: bool = False,
) -> nn.Module:
    """Build the VAE, optionally loading local weights.

    Args:
        arch: "kl" (MONAI AutoencoderKL) or "maisi" (AutoencoderKlMaisi, published configuration;
            `channels`, `latent_channels`, `num_res_blocks`, `norm_num_groups`, `attention` and
            `in_channels` are then fixed by that configuration and ignored).
        in_channels: image channels (1 for PET).
        channels: channels per level; len(channels) - 1 downsamplings, so 3 levels give f = 4.
        latent_channels: latent channels c.
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups (must divide every entry of `channels`).
        attention: non-local attention at the latent resolution in encoder and decoder (off: at 96^3
            input it is a 13824^2 attention matrix and doubles the encode time).
        weights: a local weights file (.safetensors, or a torch file loaded with weights_only=True);
            a raw state_dict or one nested under "unet_state_dict", "state_dict", "model", ...
        norm_float16, num_splits, dim_split: MAISI's memory-saving forward options (GPU only).
        lite: build `LiteAutoencoderKL`, the pure-PyTorch twin of "kl" (same weights, same outputs),
            without importing MONAI: for inference ("maisi" has no twin).
    """
    if arch not in VAE_ARCHS:
        raise ValueError(f"VAE arch must be one of {VAE_ARCHS}, got {arch!r}")
    if lite and arch != "kl":
        raise ValueError(f"lite=True needs VAE arch 'kl' (the only one with a MONAI-free twin), got {arch!r}")
    if arch == "kl":
        levels = len(channels)
        kl_args = dict(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=in_channels,
            channels=tuple(channels),
            latent_channels=latent_channels,
            num_res_blocks=(num_res_blocks,) * levels,
            norm_num_groups=norm_num_groups,
            attention_levels=(False,) * levels,
            with_encoder_nonlocal_attn=attention,
            with_decoder_nonlocal_attn=attention,
        )
        if lite:
            vae = LiteAutoencoderKL(**kl_args)
        else:
            from monai.networks.nets import AutoencoderKL  # seconds to import: training only

            vae = AutoencoderKL(**kl_args)
    else:
        from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

        vae = AutoencoderKlMaisi(
            **MAISI_VAE_CONFIG,
            norm_float16=norm_float16,
            num_splits=num_splits,
            dim_split=dim_split,
            print_info=False,
            save_mem=False,
        )
    if weights is not None:
        load_vae_weights(vae, weights)
    return vae


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise fail_on(path, "VAE weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = read_torch_file(path, what="VAE weights file")  # refuses code, one sentence
    except TumorGenError:
        raise
    except Exception as err:  # any parse failure is the file's fault, not ours
        detail = " ".join(str(err).split())[:200]  # one line: the CLI prints one sentence
        raise fail_on(path, f"cannot read VAE weights ({type(err).__name__}: {detail})") from None
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise fail_on(path, "does not hold a state_dict of tensors")
    return obj


def load_vae_weights(vae: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into `vae` (strict); a missing, unreadable or mismatched file is refused."""
    path = Path(path)
    state = _read_state_dict(path)
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    try:
        vae.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise fail_on(path, f"VAE weights do not match the {type(vae).__name__} architecture ({detail})") from err
    return vae


def latent_factor(vae: nn.Module) -> int:
    """The spatial downsampling factor of the encoder, counted from its downsampling blocks (4 here)."""
    downs = sum(1 for block in vae.encoder.blocks if "Downsample" in type(block).__name__)
    return 2**downs


def encode_mean(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Posterior mean: `(B, 1, X, Y, Z)` -> `(B, c, X/f, Y/f, Z/f)`."""
    z_mu, _ = vae.encode(x)
    return z_mu


def encode_sample(
    vae: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A posterior sample z = mu + sigma * eps with seeded eps; returns `(z, mu, sigma)`."""
    z_mu, z_sigma = vae.encode(x)
    eps = torch.randn(z_mu.shape, generator=generator, device=z_mu.device, dtype=z_mu.dtype)
    return z_mu + z_sigma * eps, z_mu, z_sigma


def decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Latents `(B, c, h, w, d)` -> image `(B, 1, f h, f w, f d)`."""
    return vae.decode(z)


def decode_with_features(vae: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Decode and return the decoder's last features at each resolution, coarse to fine.

    F_k is the input of the block that changes resolution (the richest features at that scale) and,
    for the finest scale, the input of the output head (GroupNorm + conv). For f = 4: F1 at the latent
    resolution, F2 at x2, F3 at x4. Same result as `decode`.
    """
    x = vae.post_quant_conv(z)
    blocks = list(vae.decoder.blocks)
    features: list[torch.Tensor] = []
    head_start = len(blocks) - 2  # the final norm and output convolution
    for i, block in enumerate(blocks):
        if i == head_start:
            features.append(x)
        out = block(x)
        if out.shape[2:] != x.shape[2:]:
            features.append(x)
        x = out
    expected = latent_factor(vae).bit_length()  # log2(f) + 1 scales
    if len(features) != expected:
        raise ValueError(f"found {len(features)} decoder scales, expected {expected}")
    return x, features


def decoder_feature_channels(vae: nn.Module) -> tuple[int, ...]:
    """Channels of F1, F2, F3, found by decoding a tiny dummy latent once (cached on the module)."""
    cached = getattr(vae, "_tumorgen_feature_channels", None)
    if cached is not None:
        return cached
    param = next(vae.parameters())
    latent_channels = vae.post_quant_conv.conv.in_channels
    dummy = torch.zeros(1, latent_channels, 2, 2, 2, device=param.device, dtype=param.dtype)
    with torch.no_grad():
        _, feats = decode_with_features(vae, dummy)
    channels = tuple(int(f.shape[1]) for f in feats)
    vae._tumorgen_feature_channels = channels
    return channels


def compute_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of the latents, so the scaled latents have unit variance (as in latent diffusion)."""
    std = latents.float().std().item()
    if not std > 1e-8:
        raise ValueError(f"latents have standard deviation {std}; cannot compute a scale factor")
    return 1.0 / std
