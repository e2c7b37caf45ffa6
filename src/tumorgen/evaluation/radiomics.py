"""What a tumor looks like in numbers: an IBSI-compliant radiomic panel per tumor, computed by MIRP.

Why: FID and KID on a few test cases cannot see whether a tumor is heterogeneous (a hot rim around a
colder, necrotic core) or a smooth solid mass. Radiomics, standardised by the Image Biomarker
Standardisation Initiative (IBSI, whose sarcoma PET cases the bundled model learned from), can. The
features are computed by a maintained IBSI-compliant library, MIRP (`pip install 'tumorgen[radiomics]'`),
never by hand; only the rim/core ratio (`rim_core_ratio`), which is not a standard feature, is ours.

Settings (one for real and synthetic tumors alike): PET modality, 3D, no interpolation (voxels as
scanned, as the generated tumors are on the scan's own grid), intensities re-segmented from 0 SUV and
discretised with a fixed bin size of 0.5 SUV (IBSI's advice for PET: a fixed bin size from a fixed
minimum), GLCM at distance 1 merged over the 13 3D directions, GLSZM in 3D.

MIRP gives numpy input a 1 mm spacing whatever it is, so each tumor is cropped (its tight box plus
the SUVpeak sphere's radius) and written as a NIfTI pair with its true spacing for MIRP to read.
"""

from __future__ import annotations

import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from tumorgen.data.box_geometry import box_slices, tight_box
from tumorgen.errors import TumorGenError

MIRP_VERSION = "2.7.0"  # the version the column names below were read from
BIN_WIDTH = 0.5  # SUV per grey level (fixed bin size from 0 SUV)
PEAK_RADIUS_MM = 6.2035  # SUVpeak: the mean in a 1 cm^3 sphere, radius (3 / 4 pi)^(1/3) cm
RIM_THRESHOLD = 1.2  # a "hot rim": the outer half's mean SUV above 1.2x the inner half's
_TEXTURE = f"_fbs_w{BIN_WIDTH}"

# panel key -> (label, MIRP column)
FEATURES: dict[str, tuple[str, str]] = {
    "suv_mean": ("SUVmean", "stat_mean"),
    "suv_max": ("SUVmax", "stat_max"),
    "suv_peak": ("SUVpeak", "loc_peak_loc"),
    "cov": ("CoV", "stat_cov"),
    "skewness": ("skewness", "stat_skew"),
    "kurtosis": ("kurtosis", "stat_kurt"),
    "glcm_joint_entropy": ("GLCM joint entropy", f"cm_joint_entr_d1_3d_v_mrg{_TEXTURE}"),
    "glcm_contrast": ("GLCM contrast", f"cm_contrast_d1_3d_v_mrg{_TEXTURE}"),
    "glcm_inverse_difference": ("GLCM inverse difference", f"cm_inv_diff_d1_3d_v_mrg{_TEXTURE}"),
    "glszm_zone_size_nonuniformity": ("GLSZM zone size non-uniformity (norm.)", f"szm_zsnu_norm_3d{_TEXTURE}"),
    "volume_ml": ("volume (ml)", "morph_volume"),
    "sphericity": ("sphericity", "morph_sphericity"),
    "elongation": ("elongation", "morph_pca_elongation"),
}
PANEL = (*FEATURES, "rim_core_ratio")  # every key a panel has, in table order
MIRP_SETTINGS = dict(
    image_modality="PT",
    sample_name="tumor",
    by_slice=False,
    ibsi_compliant=True,
    base_feature_families=["morphology", "local_intensity", "statistics", "glcm", "glszm"],
    base_discretisation_method="fixed_bin_size",
    base_discretisation_bin_width=float(BIN_WIDTH),
    resegmentation_intensity_range=[0.0, float("nan")],
    glcm_distance=1.0,
    glcm_spatial_method="3d_volume_merge",
    glszm_spatial_method="3d",
)
_MORPHOLOGY_KEPT = ("morph_volume", "morph_sphericity", "morph_pca_elongation")


def mirp_available() -> bool:
    """Whether MIRP can be imported (the `radiomics` extra)."""
    try:
        import mirp  # noqa: F401
    except ImportError:
        return False
    return True


def _extract_features():
    """MIRP's `extract_features`, with its morphology family cut to the three features of the panel.

    MIRP computes every morphological feature or none; Moran's I and Geary's C among them pair every
    tumor voxel with every other in Python and take seconds a tumor. The panel reads volume,
    sphericity and elongation only, so the others are dropped from the family's feature table (a MIRP
    internal, hence the pinned version; `tests/test_radiomics.py` checks the kept values are unchanged).
    """
    try:
        import mirp
        from mirp._features import morph_3d_features
    except ImportError as error:
        raise TumorGenError("radiomics needs MIRP: pip install 'tumorgen[radiomics]' "
                            f"(mirp=={MIRP_VERSION})") from error
    table = getattr(morph_3d_features, "get_morphology_3d_class_dict", None)
    if table is not None and not getattr(table, "_tumorgen_cut", False):
        def cut():
            return {k: v for k, v in table().items() if k in _MORPHOLOGY_KEPT}

        cut._tumorgen_cut = True
        cut._tumorgen_original = table  # the untrimmed table, for the test that compares the two
        morph_3d_features.get_morphology_3d_class_dict = cut
    return mirp.extract_features


def rim_core_ratio(suv: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean SUV of the tumor's outer half over its inner half (NaN for tumors too small to have both).

    The halves split the mask's voxels at the median distance to the tumor's surface (in mm), so the
    ratio means the same for a 1 ml and a 500 ml tumor. A necrotic sarcoma, a hot rim around a colder
    core, reads above `RIM_THRESHOLD`; a solid mass, hottest in the middle, reads below 1.
    """
    mask = np.asarray(mask) > 0
    if mask.sum() < 8:
        return float("nan")
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1][mask]
    values = np.asarray(suv, dtype=np.float64)[mask]
    split = np.median(depth)
    outer, inner = values[depth <= split], values[depth > split]
    if not inner.size or not outer.size or inner.mean() <= 0:
        return float("nan")
    return float(outer.mean() / inner.mean())


def radiomic_panel(suv: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """The panel of one tumor: `PANEL`'s keys -> values (NaN where MIRP gives none, all NaN for an empty mask).

    Args:
        suv: (X, Y, Z) the scan (or a crop of it) in SUV.
        mask: (X, Y, Z) the tumor mask on the same grid.
        spacing: (3,) voxel size in mm along X, Y, Z.
    """
    nothing = {key: float("nan") for key in PANEL}
    mask = np.asarray(mask) > 0
    if not mask.any():
        return nothing
    spacing = np.asarray(spacing, dtype=np.float64)
    pad = int(np.max(np.ceil(PEAK_RADIUS_MM / spacing))) + 1  # SUVpeak's sphere reaches past the mask
    crop = box_slices(tight_box(mask, margin=pad))
    image = np.clip(np.nan_to_num(np.asarray(suv, dtype=np.float32)[crop]), 0.0, None)
    roi = mask[crop].astype(np.uint8)
    extract = _extract_features()
    affine = np.diag([*spacing, 1.0])
    with tempfile.TemporaryDirectory(prefix="tumorgen-radiomics-") as folder:
        image_path, mask_path = Path(folder) / "image.nii", Path(folder) / "mask.nii"
        nib.save(nib.Nifti1Image(image, affine), image_path)
        nib.save(nib.Nifti1Image(roi, affine), mask_path)
        before = logging.root.manager.disable
        logging.disable(logging.INFO)  # MIRP logs every job to stdout
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tables = extract(image=str(image_path), mask=str(mask_path), **MIRP_SETTINGS)
        finally:
            logging.disable(before)
    if not tables or tables[0] is None:
        return nothing
    row = tables[0].iloc[0]
    panel = {key: float(row[column]) if column in row.index else math.nan for key, (_, column) in FEATURES.items()}
    panel["volume_ml"] /= 1000.0  # MIRP gives mm^3
    panel["rim_core_ratio"] = rim_core_ratio(suv[crop], mask[crop], spacing)
    return panel
