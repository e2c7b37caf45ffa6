"""Networks of TumorGen: the 3D KL-VAE, the velocity U-Net (SC-VFE) and the VAE-guided mask refiner.

Modules and builders only: no optimizers, I/O of data, or training loops live here.
"""

from tumorgen.models.refiner import MaskRefiner
from tumorgen.models.vae import (
    build_vae,
    compute_scale_factor,
    decode,
    decode_with_features,
    decoder_feature_channels,
    encode_mean,
    encode_sample,
    latent_factor,
)
from tumorgen.models.velocity_unet import VelocityUNet, build_velocity_unet

__all__ = [
    "MaskRefiner",
    "VelocityUNet",
    "build_vae",
    "build_velocity_unet",
    "compute_scale_factor",
    "decode",
    "decode_with_features",
    "decoder_feature_channels",
    "encode_mean",
    "encode_sample",
    "latent_factor",
]
