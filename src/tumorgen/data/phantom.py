"""Procedural PET (+CT) phantoms: the project's default data, since no real dataset can be downloaded.

`make_phantom` builds one case in memory: anatomy (`phantom_anatomy`), optionally a tumor in the
region the paper's datasets put them (lungs for AutoPET-like torsos, the oropharynx for HECKTOR-like
heads and necks; `phantom_tumor`), then the scanner (`phantom_scanner`): the PET image is the true
activity blurred by a Gaussian PSF plus count-dependent noise, the mask the tumor's true extent.
`write_phantom_dataset` (in `phantom_layouts`) writes many cases in a real dataset's folder layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorgen.data.phantom_anatomy import FIELD_OF_VIEW_MM, TUMOR_REGION, build_anatomy
from tumorgen.data.phantom_scanner import add_counting_noise, psf_blur, scan_ct
from tumorgen.data.phantom_tumor import SUV_PEAK_RANGE, SUV_PEAK_RANGE_HEAD_NECK, grow_tumor
from tumorgen.io.spacing import voxel_spacing

REGIONS = tuple(TUMOR_REGION)  # ("torso", "head-neck")
PSF_FWHM_RANGE_MM = (6.0, 8.0)  # clinical PET/CT resolution after reconstruction and post-filtering
TUMOR_CT_HU = 35.0  # a solid tumor is soft tissue on CT, visible inside the air-filled lung
MIN_SIZE = 16  # below this the organs are a few voxels each
TUMOR_SUV_PEAK_RANGE = {"torso": SUV_PEAK_RANGE, "head-neck": SUV_PEAK_RANGE_HEAD_NECK}


@dataclass(frozen=True)
class PhantomCase:
    """One phantom on one grid. Arrays are (X, Y, Z) in NIfTI voxel order."""

    suv: np.ndarray  # float32 PET image in SUV: blurred, noisy, >= 0
    ct: np.ndarray  # int16 CT in HU on the same grid
    mask: np.ndarray  # uint8 {0, 1}, the tumor's true extent (all 0 for a healthy case)
    affine: np.ndarray  # (4, 4) voxel-to-world (RAS mm), centred on the grid
    organs: dict[str, np.ndarray]  # name -> bool mask; "lungs" for torsos, "oropharynx" for head-neck
    activity: np.ndarray  # float32 true SUV before the scanner (noise-free, unblurred)
    region: str
    tumor_region: str  # the key of `organs` the tumor lies in
    psf_fwhm_mm: float

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in voxel_spacing(self.affine))

    @property
    def tumor_volume_ml(self) -> float:
        return float(self.mask.sum()) * float(np.prod(self.spacing)) / 1000.0

    @property
    def suv_max(self) -> float:
        """SUVmax inside the tumor mask as a reader would measure it (0 for a healthy case)."""
        return float(self.suv[self.mask > 0].max()) if self.mask.any() else 0.0


def default_spacing(region: str, shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """The region's physical field of view divided by the grid: a larger grid means finer voxels."""
    _check_region(region)
    return tuple(float(f) / n for f, n in zip(FIELD_OF_VIEW_MM[region], shape))


def grid_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """A RAS voxel-to-world affine with the given spacing and the grid centre at the world origin."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
    return affine


def make_phantom(
    *,
    region: str,
    size: int | tuple[int, int, int] = 64,
    spacing: float | tuple[float, float, float] | None = None,
    with_tumor: bool = True,
    rng: np.random.Generator,
) -> PhantomCase:
    """Build one phantom case.

    Args:
        region: "torso" (AutoPET-like: lungs, heart, liver, spine) or "head-neck" (HECKTOR-like).
        size: grid edge in voxels, or (X, Y, Z).
        spacing: voxel size in mm (one number or per axis); None: the region's field of view / size.
        with_tumor: put one tumor in the region's tumor organ; False gives a healthy case.
        rng: the random generator; the only source of randomness (same state, same case).
    """
    _check_region(region)
    shape = (int(size),) * 3 if np.isscalar(size) else tuple(int(n) for n in size)
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise ValueError(f"size must be an int or 3 ints, each >= {MIN_SIZE}; got {size!r}")
    if spacing is None:
        spacing = default_spacing(region, shape)
    spacing = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be a positive number or 3 of them; got {spacing!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator, seeded by the caller")

    anatomy = build_anatomy(region=region, shape=shape, spacing=spacing, rng=rng)
    activity, hounsfield = anatomy.activity, anatomy.hounsfield
    mask = np.zeros(shape, np.uint8)
    host = TUMOR_REGION[region]
    if with_tumor:
        tumor = grow_tumor(
            organ=anatomy.organs[host], spacing=spacing, rng=rng, suv_peak_range=TUMOR_SUV_PEAK_RANGE[region]
        )
        activity = np.where(tumor.mask, tumor.activity, activity)
        hounsfield = np.where(tumor.mask, TUMOR_CT_HU, hounsfield)
        mask = tumor.mask.astype(np.uint8)

    fwhm = float(rng.uniform(*PSF_FWHM_RANGE_MM))
    blurred = psf_blur(activity, spacing=spacing, fwhm_mm=fwhm)
    suv = add_counting_noise(blurred, spacing=spacing, rng=rng, noise_scale=float(rng.uniform(0.7, 1.3)))
    ct = scan_ct(hounsfield, rng=rng)
    return PhantomCase(
        suv=suv.astype(np.float32),
        ct=ct,
        mask=mask,
        affine=grid_affine(shape, spacing),
        organs=anatomy.organs,
        activity=activity.astype(np.float32),
        region=region,
        tumor_region=host,
        psf_fwhm_mm=fwhm,
    )


def case_rng(seed: int, *, healthy: bool, index: int) -> np.random.Generator:
    """The generator of one case, from (seed, tumor/healthy stream, index): adding cases never
    changes the earlier ones."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(healthy), int(index)]))


def _check_region(region: str) -> None:
    if region not in TUMOR_REGION:
        raise ValueError(f"region must be one of {list(REGIONS)}, got {region!r}")
