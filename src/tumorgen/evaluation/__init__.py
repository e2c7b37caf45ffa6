"""Metrics in the paper's shape: FID/KID per plane on 2D slices, DSC/NSD, and the tables.

Everything here works on numpy arrays, so the `evaluate` command, the benchmarks and the tests share
one implementation. The Inception network is only loaded when `InceptionFeatures` is built.
"""

from tumorgen.evaluation.fid import fid_per_plane, frechet_distance, kid, plane_features, real_floor
from tumorgen.evaluation.inception import InceptionFeatures, default_inception_path
from tumorgen.evaluation.segmentation_metrics import dice, nsd, segmentation_table
from tumorgen.evaluation.slices import middle_slices, to_unit_range, tumor_center_slices

__all__ = [
    "InceptionFeatures",
    "default_inception_path",
    "dice",
    "fid_per_plane",
    "frechet_distance",
    "kid",
    "middle_slices",
    "nsd",
    "plane_features",
    "real_floor",
    "segmentation_table",
    "to_unit_range",
    "tumor_center_slices",
]
