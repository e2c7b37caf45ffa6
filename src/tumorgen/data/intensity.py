"""The model's intensity scale: SUV <-> values in [0, 1], linear or logarithmic.

PET is long-tailed: background SUV is 0.1-2, tumors 5-50. The linear map `SUV / suv_max` squeezes
the background into the bottom few percent of the range, so a VAE trained with an L1 loss spends its
effort on the tumor's hot core and leaves the background, and the tumor's faint rim, as noise; errors
in a hot core come back as large absolute SUV errors. `log` maps `log1p(SUV) / log1p(suv_max)`: SUV
1 -> 0.18, 5 -> 0.46, 20 -> 0.78 at suv_max 50, so a fixed model error is a fixed *relative* error in
SUV, and both background and uptake get room. `linear` is kept for caches and runs made before.

Both maps clip SUV to `[0, suv_max]`; they are exact inverses of each other on that range.
"""

from __future__ import annotations

import numpy as np

KINDS = ("linear", "log")


def _check(kind: str, suv_max: float) -> None:
    if kind not in KINDS:
        raise ValueError(f"intensity must be one of {KINDS}, got {kind!r}")
    if not suv_max > 0:
        raise ValueError(f"suv_max must be positive, got {suv_max}")


def suv_to_model(suv, *, suv_max: float, kind: str = "linear") -> np.ndarray:
    """SUV -> model range [0, 1] (float32 numpy)."""
    _check(kind, suv_max)
    clipped = np.clip(np.asarray(suv, dtype=np.float64), 0.0, suv_max)
    if kind == "log":
        return (np.log1p(clipped) / np.log1p(suv_max)).astype(np.float32)
    return (clipped / suv_max).astype(np.float32)


def model_to_suv(x, *, suv_max: float, kind: str = "linear") -> np.ndarray:
    """Model range -> SUV (float32 numpy); values outside [0, 1] are clipped first."""
    _check(kind, suv_max)
    clipped = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    if kind == "log":
        return np.expm1(clipped * np.log1p(suv_max)).astype(np.float32)
    return (clipped * suv_max).astype(np.float32)


def tumor_uptake(images, masks, *, suv_max: float, kind: str = "linear") -> np.ndarray:
    """Each tumor's mean SUV, mapped to model range: the flow's uptake condition `(N,)` float32.

    Args:
        images: `(N, ...)` volumes in model range (of `kind`).
        masks: `(N, ...)` tumor masks; every one must hold a tumor voxel.
    """
    images, masks = np.asarray(images), np.asarray(masks) > 0
    if images.shape != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
    means = []
    for image, mask in zip(images, masks):
        if not mask.any():
            raise ValueError("a mask holds no tumor: its uptake is undefined")
        means.append(float(model_to_suv(image[mask], suv_max=suv_max, kind=kind).mean()))
    return suv_to_model(np.array(means), suv_max=suv_max, kind=kind).reshape(-1)
