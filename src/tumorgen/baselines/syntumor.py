"""SynTumor: the rule-based tumor synthesis of Hu et al. 2023, adapted to PET.

"Label-Free Liver Tumor Segmentation" (Hu et al., CVPR 2023) pastes hand-crafted tumors into healthy
CT: an ellipsoid with random radii, elastically deformed; a smoothed random texture; a blurred
boundary; placed inside the organ. It needs no training, which is what makes it the baseline a
learned generator must beat. The PET adaptation here:

- location: a random point inside the given box (half-open voxel ranges, as in DESIGN.md), or inside
  the organ mask, or anywhere in the body (not in the air around it); the ellipsoid is kept inside the box when it can be;
- shape: an ellipsoid with radii uniform in `radius_range_vox`, deformed by a smooth random
  displacement field (Gaussian-filtered noise) of up to `elastic_strength` x radius, then clipped
  to the box and the organ; the largest connected piece is kept;
- uptake: tumors are hot. A tumor's mean and peak SUV are drawn from log-normal fits to real tumors'
  per-tumor mean and max/mean ratio (`SuvStats`, clipped to the observed range), and spread over the
  tumor as a center-hot profile plus a smoothed random texture, mapped so its mean and max hit the
  drawn values (the rim is floored at 0.4 x the mean, so the peak may fall slightly short);
- realism: PET noise at the scan's own level is added inside (so the tumor is not a clean blob in a
  noisy scan), and the boundary is blurred with a Gaussian PSF by alpha-blending the tumor into the
  scan with the blurred mask as alpha. Outside that blurred support the scan is returned unchanged.

All randomness comes from a seeded numpy Generator: the same seed gives the same tumors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

Box = Sequence[int]  # (x0, y0, z0, x1, y1, z1), half-open
RIM_FLOOR = 0.4  # lowest uptake inside the tumor, as a fraction of its mean SUV
TISSUE_FRACTION = 0.1  # without box or organ, centers go where SUV > this x the 99th percentile (not air)


@dataclass(frozen=True)
class SuvStats:
    """Log-normal fits of real tumors' mean SUV and max/mean ratio, with the observed ranges.

    Args:
        log_mean: (mu, sd) of log(mean SUV per tumor).
        mean_range: (lowest, highest) observed mean SUV.
        log_ratio: (mu, sd) of log(max SUV / mean SUV per tumor).
        ratio_range: (lowest, highest) observed max/mean ratio.
    """

    log_mean: tuple[float, float]
    mean_range: tuple[float, float]
    log_ratio: tuple[float, float]
    ratio_range: tuple[float, float]

    @classmethod
    def fit(cls, mean_suv: Sequence[float], max_suv: Sequence[float]) -> "SuvStats":
        """Fit from per-tumor mean and max SUV (one value each per real tumor)."""
        means, maxes = np.asarray(mean_suv, np.float64), np.asarray(max_suv, np.float64)
        if means.shape != maxes.shape or means.ndim != 1 or means.size == 0:
            raise ValueError(f"need equally many (>= 1) tumor means and maxima, got {means.shape} and {maxes.shape}")
        if np.any(means <= 0) or np.any(maxes < means):
            raise ValueError("tumor SUVs must satisfy 0 < mean <= max")
        ratios = maxes / means
        return cls(
            log_mean=(float(np.log(means).mean()), float(np.log(means).std())),
            mean_range=(float(means.min()), float(means.max())),
            log_ratio=(float(np.log(ratios).mean()), float(np.log(ratios).std())),
            ratio_range=(float(ratios.min()), float(ratios.max())),
        )

    @classmethod
    def from_tumors(cls, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> "SuvStats":
        """Fit from real SUV volumes and their tumor masks (cases with empty masks are skipped)."""
        means, maxes = [], []
        for image, mask in zip(images, masks, strict=True):
            values = np.asarray(image)[np.asarray(mask) > 0]
            if values.size and values.mean() > 0:
                means.append(values.mean())
                maxes.append(values.max())
        return cls.fit(means, maxes)

    def sample(self, rng: np.random.Generator) -> tuple[float, float]:
        """Draw one tumor's (mean SUV, max SUV)."""
        mean = float(np.clip(np.exp(rng.normal(*self.log_mean)), *self.mean_range))
        ratio = float(np.clip(np.exp(rng.normal(*self.log_ratio)), *self.ratio_range))
        return mean, mean * ratio


class SynTumor:
    """Rule-based hot tumors pasted into PET scans.

    Args:
        suv_stats: real tumors' uptake statistics (`SuvStats.fit` or `SuvStats.from_tumors`).
        radius_range_vox: (min, max) ellipsoid radius per axis, in voxels.
        seed: seeds the generator used when `generate` gets no `rng`.
        elastic_strength: largest displacement as a fraction of the radius (< 1 keeps the center inside).
        elastic_smoothness_vox: Gaussian sigma of the displacement field; larger = smoother lobes.
        texture_smoothness_vox: Gaussian sigma of the uptake texture.
        texture_weight: texture amplitude relative to the center-to-edge uptake profile.
        psf_sigma_vox: Gaussian sigma of the boundary blur; about the scanner PSF (FWHM / 2.355) in voxels.
        noise_level: relative noise (std / intensity) added inside; None estimates it from each scan.
    """

    def __init__(
        self,
        *,
        suv_stats: SuvStats,
        radius_range_vox: tuple[float, float] = (3.0, 8.0),
        seed: int = 0,
        elastic_strength: float = 0.3,
        elastic_smoothness_vox: float = 3.0,
        texture_smoothness_vox: float = 1.5,
        texture_weight: float = 0.5,
        psf_sigma_vox: float = 1.0,
        noise_level: float | None = None,
    ):
        lo, hi = radius_range_vox
        if not 0.5 <= lo <= hi:
            raise ValueError(f"radius_range_vox must satisfy 0.5 <= min <= max, got {radius_range_vox}")
        if not 0.0 <= elastic_strength < 1.0:
            raise ValueError(f"elastic_strength must be in [0, 1), got {elastic_strength}")
        if psf_sigma_vox < 0 or (noise_level is not None and noise_level < 0):
            raise ValueError("psf_sigma_vox and noise_level must be >= 0")
        self.suv_stats = suv_stats
        self.radius_range_vox = (float(lo), float(hi))
        self.elastic_strength = float(elastic_strength)
        self.elastic_smoothness_vox = float(elastic_smoothness_vox)
        self.texture_smoothness_vox = float(texture_smoothness_vox)
        self.texture_weight = float(texture_weight)
        self.psf_sigma_vox = float(psf_sigma_vox)
        self.noise_level = noise_level
        self._rng = np.random.default_rng(seed)

    def generate(
        self,
        image: np.ndarray,
        *,
        box: Box | None = None,
        organ_mask: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paste one tumor into a scan.

        Args:
            image: (X, Y, Z) PET volume in SUV.
            box: (x0, y0, z0, x1, y1, z1) half-open voxel box the tumor must lie in; None = anywhere.
            organ_mask: (X, Y, Z) mask the tumor must lie in; None = no organ constraint.
            rng: the random generator; None uses the instance's own, seeded at construction.

        Returns:
            (image, mask): the new float32 volume and the uint8 tumor mask, inside box and organ.
        """
        rng = self._rng if rng is None else rng
        image = np.asarray(image)
        if image.ndim != 3 or not np.all(np.isfinite(image)):
            raise ValueError(f"image must be a finite 3D (X, Y, Z) array, got shape {image.shape}")
        shape = np.array(image.shape)
        lo, hi = _box_bounds(box, shape)
        allowed = np.zeros(image.shape, bool)
        allowed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
        if organ_mask is not None:
            if np.shape(organ_mask) != image.shape:
                raise ValueError(f"organ_mask shape {np.shape(organ_mask)} differs from image shape {image.shape}")
            allowed &= np.asarray(organ_mask) > 0
            if not allowed.any():
                raise ValueError("the organ mask has no voxel inside the box")

        radii = rng.uniform(*self.radius_range_vox, size=3)
        radii = np.maximum(np.minimum(radii, (hi - lo) / 2.0), 0.5)  # fit inside the box when it can
        if organ_mask is not None:
            center_region = allowed
        elif box is None:  # anywhere in the body: keep the center out of the air around it
            center_region = image > TISSUE_FRACTION * np.percentile(image, 99)
            center_region = center_region if center_region.any() else None
        else:
            center_region = None
        center = _sample_center(rng, lo, hi, radii, center_region)

        # Work in a crop around the tumor: its deformed extent plus the PSF's reach.
        reach = np.ceil(radii * (1 + self.elastic_strength) + 4 * self.psf_sigma_vox + 2).astype(int)
        c0 = np.maximum(np.floor(center).astype(int) - reach, 0)
        c1 = np.minimum(np.floor(center).astype(int) + reach + 1, shape)
        crop = tuple(slice(a, b) for a, b in zip(c0, c1))
        local_shape = tuple(int(b - a) for a, b in zip(c0, c1))
        grid = np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float64) for a, b in zip(c0, c1)], indexing="ij"))  # (3, x, y, z)

        q = np.zeros(local_shape)
        for axis in range(3):
            field = ndimage.gaussian_filter(rng.standard_normal(local_shape), self.elastic_smoothness_vox)
            field *= self.elastic_strength * radii[axis] / max(np.abs(field).max(), 1e-12)
            q += ((grid[axis] + field - center[axis]) / radii[axis]) ** 2
        tumor = (q <= 1.0) & allowed[crop]
        tumor = _largest_component(tumor)
        if not tumor.any():  # a sliver of organ may cut the ellipsoid away entirely: keep the center
            tumor[tuple(np.round(center).astype(int) - c0)] = True

        values = self._uptake(rng, tumor, q)
        values = values + self._noise(rng, image, values, local_shape)
        # Outside the mask, continue the tumor's nearest values so the blurred rim blends toward them.
        nearest = ndimage.distance_transform_edt(~tumor, return_distances=False, return_indices=True)
        field = values[tuple(nearest)]
        alpha = ndimage.gaussian_filter(tumor.astype(np.float64), self.psf_sigma_vox, mode="constant", truncate=4.0) \
            if self.psf_sigma_vox > 0 else tumor.astype(np.float64)

        out = np.array(image, dtype=np.float32, copy=True)
        local = out[crop].astype(np.float64)
        out[crop] = np.where(alpha > 0, (1.0 - alpha) * local + alpha * field, local).astype(np.float32)
        mask = np.zeros(image.shape, np.uint8)
        mask[crop] = tumor
        return out, mask

    def _uptake(self, rng: np.random.Generator, tumor: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Noise-free SUV over the crop: center-hot profile + texture, scaled to the drawn mean and max."""
        mean_suv, max_suv = self.suv_stats.sample(rng)
        texture = ndimage.gaussian_filter(rng.standard_normal(tumor.shape), self.texture_smoothness_vox)
        texture /= max(texture.std(), 1e-12)
        raw = (1.0 - np.sqrt(np.clip(q, 0.0, 1.0))) + self.texture_weight * texture
        inside = raw[tumor]
        spread = inside.max() - inside.mean()
        scale = (max_suv - mean_suv) / spread if spread > 1e-12 else 0.0
        values = mean_suv + (raw - inside.mean()) * scale
        # A wide max/mean ratio would push the rim below zero (a cold ring inside a hot tumor): floor
        # it at a fraction of the mean and restore the mean (the peak then falls slightly short).
        values = np.maximum(values, RIM_FLOOR * mean_suv)
        return values * (mean_suv / values[tumor].mean())

    def _noise(self, rng: np.random.Generator, image: np.ndarray, values: np.ndarray, local_shape) -> np.ndarray:
        """Noise at the scan's relative level, correlated over the PSF like reconstructed PET noise."""
        level = self.noise_level if self.noise_level is not None else estimate_relative_noise(image)
        noise = rng.standard_normal(local_shape)
        if self.psf_sigma_vox > 0:
            noise = ndimage.gaussian_filter(noise, self.psf_sigma_vox)
            noise /= max(noise.std(), 1e-12)
        return level * values * noise


def estimate_relative_noise(image: np.ndarray) -> float:
    """The scan's noise as a fraction of intensity: robust std of the high-pass residual / median level.

    Uses voxels above 10% of the 99th percentile (tissue, not air); the residual against a 1-voxel
    Gaussian smoothing holds most of the voxel-scale noise. Returns 0 for a constant scan.
    """
    image = np.asarray(image, np.float64)
    residual = image - ndimage.gaussian_filter(image, 1.0)
    tissue = image > 0.1 * np.percentile(image, 99)
    if not tissue.any():
        return 0.0
    level = np.median(image[tissue])
    if level <= 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(residual[tissue] - np.median(residual[tissue]))) / level)


def _box_bounds(box: Box | None, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if box is None:
        return np.zeros(3, int), shape.copy()
    if len(box) != 6:
        raise ValueError(f"box must be (x0, y0, z0, x1, y1, z1), got {box}")
    lo, hi = np.array(box[:3], int), np.array(box[3:], int)
    if np.any(lo < 0) or np.any(hi > shape) or np.any(hi <= lo):
        raise ValueError(f"box {tuple(box)} is empty or outside the volume of shape {tuple(shape)}")
    return lo, hi


def _sample_center(rng, lo, hi, radii, allowed) -> np.ndarray:
    """A center at least one radius from the box faces where possible; inside `allowed` if given."""
    a = np.minimum(lo + radii - 0.5, (lo + hi - 1) / 2.0)  # voxel coordinates of the inner box
    b = np.maximum(hi - radii - 0.5, (lo + hi - 1) / 2.0)
    if allowed is None:
        return rng.uniform(a, b)
    inner = np.zeros_like(allowed)
    i0, i1 = np.ceil(a).astype(int), np.floor(b).astype(int) + 1
    inner[i0[0] : i1[0], i0[1] : i1[1], i0[2] : i1[2]] = True
    candidates = np.argwhere(allowed & inner)  # (K, 3)
    if len(candidates) == 0:
        candidates = np.argwhere(allowed)
    return candidates[rng.integers(len(candidates))].astype(np.float64)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))
