"""The paired protocol's image scores: FID/KID per plane against the real cases and the real-vs-real
floor, and the radiomic panels against the real tumors (`evaluation.paired` runs them).

Kept apart from the protocol's loop so that each reads on its own: what is compared with what, on which
slices, and where the real cases' features are cached between runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from tumorgen.data.box_geometry import box_mask
from tumorgen.evaluation.evaluate import PixelFeatures, cached_features
from tumorgen.evaluation.fid import plane_features, real_floor_against_pool, scores_from_features
from tumorgen.evaluation.radiomics import radiomic_panel
from tumorgen.evaluation.radiomics_compare import compare_panels
from tumorgen.io.spacing import voxel_spacing

FLOOR_REPEATS = 5  # random draws of train cases averaged for the real-vs-real floor


def feature_extractor(kind: str, inception, device: str):
    if kind == "none":
        return None
    if kind == "pixels":
        return PixelFeatures()
    from tumorgen.evaluation.inception import InceptionFeatures
    from tumorgen.synthesis.generate import resolve_inference_device

    return InceptionFeatures(path=inception, device=str(resolve_inference_device(device)))


def real_features(cache, key: dict, compute: Callable[[], dict]) -> dict:
    """Real cases' `plane_features`, kept in `cache` (when given) under a hash of what determines them."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cached_features(None if cache is None else Path(cache), f"paired-{digest}", compute)


def fid_scores(cases, train_cases, train_suv, train_masks, outputs, *, key, features, cache, n, suv_max, seed):
    """FID/KID on tumor-centred slices (model range [0, 1], as the PREP cache and `tumorgen evaluate`)."""

    def to_unit(suv):
        return np.clip(suv / np.float32(suv_max), 0.0, 1.0)

    real_feats = real_features(cache, {**key, "cases": [c.name for c in cases]}, lambda: plane_features(
        [to_unit(c.suv) for c in cases], features=features, where="tumor", masks=[c.mask for c in cases],
        n_per_plane=n))
    floor = None
    if len(train_suv) >= 2:
        pool_feats = real_features(cache, {**key, "cases": [c.name for c in train_cases]}, lambda: plane_features(
            [to_unit(s) for s in train_suv], features=features, where="tumor", masks=train_masks, n_per_plane=n))
        floor = real_floor_against_pool(real_feats, pool_feats, seed=seed, repeats=FLOOR_REPEATS)
    fid = {}
    for name, outs in outputs.items():
        centres = [m if m.any() else box_mask(m.shape, c.box) for c, (_, m) in zip(cases, outs)]
        gen_feats = plane_features([to_unit(s) for s, _ in outs], features=features, where="tumor",
                                   masks=centres, n_per_plane=n)
        fid[name] = scores_from_features(real_feats, gen_feats, seed=seed)
    return fid, floor


def radiomic_scores(cases, train_loaded, outputs, *, suv_max: float, seed: int) -> dict:
    """The radiomic panel of every real test tumor, real training tumor (the floor's pool) and output."""
    panels = {"real": [radiomic_panel(c.suv, c.mask, voxel_spacing(c.affine)) for c in cases],
              "reference": [radiomic_panel(image * np.float32(suv_max), mask, voxel_spacing(affine))
                            for image, mask, affine in train_loaded if np.asarray(mask).any()]}
    for name, outs in outputs.items():
        panels[name] = [radiomic_panel(suv, mask, voxel_spacing(c.affine)) for c, (suv, mask) in zip(cases, outs)]
    methods = {name: panels[name] for name in outputs}
    comparison = compare_panels(panels["real"], methods, panels["reference"], repeats=FLOOR_REPEATS, seed=seed)
    return {"panels": panels, "comparison": comparison}
