"""Paste a generated box back into the scan with a feathered seam (docs/METHOD.md section 5, step 4).

The seam lies wholly inside the box: a weight `w` is 1 deep inside the box and falls smoothly to 0 at
its faces over `feather` voxels, and `out = (1 - w) I + w I_hat`. Outside the box nothing is
touched, so the output equals the input there to the voxel; the mask is `prob > 0.5` inside the box
and zero outside.

Noise matching (`match_noise`, **choice**): a decoded image is smooth where a PET scan is noisy, so a
clean blob sits in a grainy scan (docs/METHOD.md, "What to look at"). The scan's noise is measured in a
shell around the box, in its uniform neighbourhoods, as the residual of a Gaussian smoothing, with a
Poisson-like model `sd = c * sqrt(local mean SUV)` (PET noise grows with uptake). The generated
image's own noise is measured the same way, locally; only the missing part is added,
`sqrt(max(0, target^2 - own^2))`, scaled by `w`. Where the generated image merely repeats the noisy
scan, nothing is added; where it is smooth, the scan's graininess is restored. Seeded, so the same seed gives the same output.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tumorgen.data.box_geometry import box_slices

# Smoothing width (voxels) that separates noise from anatomy: PET resolution is ~2 voxels FWHM, so a
# residual from sigma = 1 holds mostly noise.
NOISE_SIGMA = 1.0
# Width (voxels) of the shell around the box where the scan's noise is measured.
NOISE_SHELL = 6
# Fewer shell voxels than this give no trustworthy estimate: then no noise is added.
MIN_NOISE_VOXELS = 64
BODY_SUV = 0.1
# A neighbourhood (5 voxels across) whose smoothed SUV varies by less than this fraction of its value
# counts as uniform tissue, where the residual is noise.
HOMOGENEOUS_SPREAD = 0.5


def feather_weight(shape, feather: int = 3) -> np.ndarray:
    """(X, Y, Z) weights for a box: 1 deeper than `feather` voxels from every face, smoothly to 0 at them.

    The face voxel itself gets a small positive weight (the 0 lies on the face, half a voxel out),
    so even a thin box takes some of the generated image.
    """
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    weight = np.ones(tuple(int(s) for s in shape), dtype=np.float32)
    if feather == 0:
        return weight
    for axis, n in enumerate(weight.shape):
        index = np.arange(n)
        depth = np.minimum(index + 1, n - index)  # 1 at a face voxel
        ramp = np.clip(depth / (feather + 1.0), 0.0, 1.0)
        ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no kink where the ramp meets 1
        view = [1, 1, 1]
        view[axis] = n
        weight *= ramp.reshape(view).astype(np.float32)  # (n,) -> broadcast along `axis`
    return weight


def _residual_gain(sigma: float) -> float:
    """The sd of `n - G_sigma * n` for unit white noise `n`, so residual sd / gain = noise sd."""
    delta = np.zeros((15, 15, 15))
    delta[7, 7, 7] = 1.0
    return float(np.sqrt(((delta - ndimage.gaussian_filter(delta, sigma)) ** 2).sum()))


def scan_noise_coefficient(suv: np.ndarray, box, *, shell: int = NOISE_SHELL) -> float:
    """`c` in `sd = c * sqrt(mean SUV)`, measured in a shell around the box (0 if it cannot be)."""
    shape = np.array(suv.shape)
    outer_lo = np.maximum(np.array(box[:3]) - shell, 0)
    outer_hi = np.minimum(np.array(box[3:]) + shell, shape)
    outer = (*outer_lo, *outer_hi)
    region = suv[box_slices(outer)].astype(np.float64)
    smooth = ndimage.gaussian_filter(region, NOISE_SIGMA, mode="nearest")
    in_shell = np.ones(region.shape, dtype=bool)
    inner = np.array(box[:3]) - outer_lo
    in_shell[box_slices((*inner, *(inner + np.array(box[3:]) - np.array(box[:3]))))] = False
    # Only smooth neighbourhoods: at an organ or body edge the residual is anatomy, not noise.
    spread = ndimage.maximum_filter(smooth, size=5) - ndimage.minimum_filter(smooth, size=5)
    use = in_shell & (smooth > BODY_SUV) & (spread < HOMOGENEOUS_SPREAD * smooth)
    if use.sum() < MIN_NOISE_VOXELS:
        return 0.0
    scaled = (region - smooth)[use] / np.sqrt(smooth[use])
    mad = np.median(np.abs(scaled - np.median(scaled)))
    return float(1.4826 * mad / _residual_gain(NOISE_SIGMA))


def local_noise_sd(image: np.ndarray) -> np.ndarray:
    """Voxel-wise noise sd of an image: the smoothed squared residual of a Gaussian smoothing."""
    image = image.astype(np.float64)
    residual = image - ndimage.gaussian_filter(image, NOISE_SIGMA, mode="nearest")
    variance = ndimage.gaussian_filter(residual**2, 2.0 * NOISE_SIGMA, mode="nearest")
    return np.sqrt(variance) / _residual_gain(NOISE_SIGMA)


def blend_into_scan(
    suv: np.ndarray,
    generated_box: np.ndarray,
    prob_box: np.ndarray,
    box,
    *,
    feather: int = 3,
    match_noise: bool = True,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Put a generated box into a copy of the scan; the scan itself is never modified.

    Args:
        suv: the scan, (X, Y, Z) SUV.
        generated_box: the generated image inside the box, SUV, shape of the box.
        prob_box: the mask probability inside the box, same shape.
        box: half-open box in scan voxels.
        feather: seam width in voxels, inside the box (0: hard paste).
        match_noise: add scan-like noise where the generated image is smoother than the scan.
        rng: seeded generator for the noise (required when `match_noise`).

    Returns:
        (image float32 (X, Y, Z), mask uint8 (X, Y, Z)).
    """
    window = box_slices(box)
    box_shape = tuple(int(b - a) for a, b in zip(box[:3], box[3:]))
    if generated_box.shape != box_shape or prob_box.shape != box_shape:
        raise ValueError(f"generated arrays {generated_box.shape}, {prob_box.shape} do not match the box {box_shape}")
    original = suv[window].astype(np.float64)
    generated = generated_box.astype(np.float64)
    weight = feather_weight(box_shape, feather).astype(np.float64)
    if match_noise:
        if rng is None:
            raise ValueError("match_noise needs a seeded rng")
        coefficient = scan_noise_coefficient(suv, box)
        if coefficient > 0:
            smooth = ndimage.gaussian_filter(generated, NOISE_SIGMA, mode="nearest")
            target = coefficient * np.sqrt(np.clip(smooth, 0.0, None))
            missing = np.sqrt(np.clip(target**2 - local_noise_sd(generated) ** 2, 0.0, None))
            generated = generated + missing * rng.standard_normal(box_shape)
            generated = np.clip(generated, 0.0, None)  # SUV is never negative
    image = np.array(suv, dtype=np.float32, copy=True)
    image[window] = ((1.0 - weight) * original + weight * generated).astype(np.float32)
    mask = np.zeros(suv.shape, dtype=np.uint8)
    mask[window] = (prob_box > 0.5).astype(np.uint8)
    return image, mask
