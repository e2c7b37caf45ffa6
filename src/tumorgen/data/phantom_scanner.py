"""The simulated PET scanner: what turns a phantom's true activity into a PET-looking image.

The paper's point is that real tumor boundaries in PET are soft: the scanner's point-spread function
blurs the true activity, and the limited number of counted coincidences adds noise whose variance grows
with the activity. A phantom whose image were its true activity would teach a model sharp, noise-free
edges that no real scan has. Both effects are modelled here, and nothing else (no attenuation, no
reconstruction algorithm): a Gaussian PSF and Gaussian noise with variance proportional to the blurred
activity, spatially correlated over about a voxel as reconstructed PET noise is.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # sigma = FWHM / 2.3548

# Noise variance per unit SUV at a 4 x 4 x 4 mm voxel (0.064 mL): 0.03 gives a liver (SUV ~2.2)
# coefficient of variation of about 12 %, typical of clinical FDG PET.
NOISE_VARIANCE_PER_SUV = 0.03
REFERENCE_VOXEL_ML = 0.064


def smooth_noise(shape: tuple[int, ...], sigma_vox, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise smoothed by a Gaussian of `sigma_vox` voxels, rescaled to unit std.

    Args:
        shape: the array shape.
        sigma_vox: smoothing width in voxels, a number or one per axis.
        rng: the random generator; the only source of randomness.
    """
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma_vox, mode="reflect")
    std = float(field.std())
    return (field - field.mean()) / (std if std > 0 else 1.0)


def psf_blur(activity: np.ndarray, *, spacing: tuple[float, float, float], fwhm_mm: float) -> np.ndarray:
    """Blur the true activity by an isotropic Gaussian PSF of `fwhm_mm` (in mm, voxel spacing aware).

    Args:
        activity: true activity (SUV), (X, Y, Z).
        spacing: voxel size in mm per axis.
        fwhm_mm: full width at half maximum of the PSF in mm.
    """
    if fwhm_mm <= 0:
        raise ValueError(f"fwhm_mm must be positive, got {fwhm_mm}")
    sigma = [fwhm_mm * FWHM_TO_SIGMA / s for s in spacing]
    return ndimage.gaussian_filter(activity.astype(np.float64), sigma=sigma, mode="constant")


def add_counting_noise(
    blurred: np.ndarray,
    *,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    noise_scale: float = 1.0,
) -> np.ndarray:
    """Add count-dependent noise: variance proportional to the activity and to 1 / voxel volume.

    Smaller voxels collect fewer counts each, so they are noisier; `noise_scale` models a patient's
    injected dose and scan time (1 = typical). The result is clipped at 0, as reconstructed SUV is.

    Args:
        blurred: PSF-blurred activity (SUV), (X, Y, Z).
        spacing: voxel size in mm per axis.
        rng: the random generator.
        noise_scale: multiplies the noise variance.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    variance = NOISE_VARIANCE_PER_SUV * noise_scale * (REFERENCE_VOXEL_ML / voxel_ml) * np.clip(blurred, 0, None)
    correlated = smooth_noise(blurred.shape, 0.6, rng)
    return np.clip(blurred + np.sqrt(variance) * correlated, 0.0, None)


def scan_ct(hounsfield: np.ndarray, *, rng: np.random.Generator, noise_hu: float = 12.0) -> np.ndarray:
    """A CT resampled to the PET grid (as AutoPET's CTres): mild blur, small noise, int16 HU.

    Args:
        hounsfield: noise-free HU map, (X, Y, Z).
        rng: the random generator.
        noise_hu: standard deviation of the noise in HU.
    """
    blurred = ndimage.gaussian_filter(hounsfield.astype(np.float64), sigma=0.5, mode="nearest")
    noisy = blurred + noise_hu * rng.standard_normal(hounsfield.shape)
    return np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)
