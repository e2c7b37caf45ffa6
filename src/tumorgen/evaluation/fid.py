"""FID and KID per plane, and the real-vs-real floor that makes them readable at small n.

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to Inception features. It is
biased upward when few images are compared (the paper's test sets have 24 and 15 volumes), so every
result also carries KID (Binkowski et al. 2018: the unbiased MMD^2 with the kernel (x.y / d + 1)^3,
averaged over random subsets) and the floor: the same metric between two disjoint sets of *real*
volumes of the same sizes. A generated set is as good as real once it reaches that floor.

Result dictionaries use the paper's column names: "A", "S", "C" (axial, sagittal, coronal FID),
"Avg" (their mean), the same with a "KID_" prefix (and "KID_std_" for the spread over subsets), and
"n_real" / "n_generated" (volumes compared).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.linalg

from tumorgen.evaluation.slices import PLANES, middle_slices, tumor_center_slices

PLANE_KEYS = {"axial": "A", "sagittal": "S", "coronal": "C"}


def feature_statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, N >= 2 (unbiased covariance, like np.cov)."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need (N, D) features with N >= 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.
        eps: added to both diagonals when the product is too singular for a finite square root.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        # Few samples make the covariances rank-deficient; a tiny ridge keeps the root finite.
        offset = np.eye(mu1.size) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary part {np.max(np.abs(covmean.imag)):.3g} of the matrix square root is too large")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_from_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """FID between two (N, D) feature sets.

    With fewer samples than feature dimensions (the usual case here: tens of slices, 2048-d), the
    covariances are low-rank and a D x D matrix square root is slow and needs an eps ridge. Then the
    trace term is computed exactly in sample space: with centered features A (N1, D) and B (N2, D)
    scaled by 1 / sqrt(N - 1), sigma1 = A^T A and sigma2 = B^T B; the nonzero eigenvalues of
    sigma1 sigma2 are the squared singular values of A B^T, so tr((sigma1 sigma2)^(1/2)) is the sum
    of the singular values of A B^T (an N1 x N2 matrix).
    """
    feats1, feats2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    for feats in (feats1, feats2):
        if feats.ndim != 2 or feats.shape[0] < 2 or feats.shape[1] != feats1.shape[1]:
            raise ValueError(f"need (N, D) features with N >= 2 and one D, got {feats1.shape} and {feats2.shape}")
    (n1, d), n2 = feats1.shape, len(feats2)
    if max(n1, n2) >= d:
        return frechet_distance(*feature_statistics(feats1), *feature_statistics(feats2))
    mu1, mu2 = feats1.mean(axis=0), feats2.mean(axis=0)
    a = (feats1 - mu1) / np.sqrt(n1 - 1)  # (N1, D)
    b = (feats2 - mu2) / np.sqrt(n2 - 1)  # (N2, D)
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * tr_covmean)


def kid(
    feats1: np.ndarray, feats2: np.ndarray, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over random subsets of the unbiased MMD^2.

    Kernel k(x, y) = (x.y / d + 1)^3. In each subset, m = min(subset_size, N1, N2) features are drawn
    without replacement from each set; MMD^2_u = mean off-diagonal k(X, X) + mean off-diagonal
    k(Y, Y) - 2 mean k(X, Y). Unbiased, so it can be slightly negative for equal distributions.

    Args:
        feats1, feats2: (N1, D) and (N2, D) features, N >= 2.
        subsets: how many random subsets to average.
        subset_size: subset size before capping at the smaller set.
        seed: seeds the subset draws.
    """
    x, y = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need (N, D) feature sets of one D, got {x.shape} and {y.shape}")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {len(x)} and {len(y)}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    values = np.empty(subsets)
    for i in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx = (a @ a.T / d + 1.0) ** 3  # (m, m)
        kyy = (b @ b.T / d + 1.0) ** 3
        kxy = (a @ b.T / d + 1.0) ** 3
        off = m * (m - 1)
        values[i] = (kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2.0 * kxy.mean()
    return float(values.mean()), float(values.std())


def plane_slices(
    volumes: Sequence[np.ndarray],
    *,
    where: str = "middle",
    masks: Sequence[np.ndarray] | None = None,
    n_per_plane: int = 1,
    suv_max: float | None = None,
) -> dict[str, list[np.ndarray]]:
    """The slices FID compares, per plane: a list with `n_per_plane` 2D slices per volume, in order.

    Args:
        volumes: (X, Y, Z) arrays (shapes may differ), in [0, 1] or SUV with `suv_max`.
        where: "middle" (the volume's middle slice; one per plane) or "tumor" (through the mask).
        masks: one mask per volume, required for "tumor".
        n_per_plane: slices per plane for "tumor".
        suv_max: None for model-range volumes, else the SUV that maps to 1.
    """
    if where not in ("middle", "tumor"):
        raise ValueError(f"where must be 'middle' or 'tumor', got {where!r}")
    if where == "middle" and n_per_plane != 1:
        raise ValueError("middle slices are one per plane; use where='tumor' for several")
    if where == "tumor" and (masks is None or len(masks) != len(volumes)):
        raise ValueError("tumor-center slices need one mask per volume")
    out: dict[str, list[np.ndarray]] = {plane: [] for plane in PLANES}
    for i, volume in enumerate(volumes):
        if where == "middle":
            per_plane = {p: s[None] for p, s in middle_slices(volume, suv_max=suv_max).items()}
        else:
            per_plane = tumor_center_slices(volume, masks[i], n_per_plane=n_per_plane, suv_max=suv_max)
        for plane in PLANES:
            out[plane].extend(per_plane[plane])
    return out


def plane_features(
    volumes: Sequence[np.ndarray],
    *,
    features: Callable[[list[np.ndarray]], np.ndarray],
    where: str = "middle",
    masks: Sequence[np.ndarray] | None = None,
    n_per_plane: int = 1,
    suv_max: float | None = None,
) -> dict[str, np.ndarray]:
    """Features per plane, grouped by volume: {plane: (V, n_per_plane, D)}.

    Keeping the volume axis lets the real-vs-real floor split by case rather than by slice.

    Args:
        volumes, where, masks, n_per_plane, suv_max: as for `plane_slices`.
        features: a callable slices -> (N, D) features, e.g. an `InceptionFeatures`.
    """
    slices = plane_slices(volumes, where=where, masks=masks, n_per_plane=n_per_plane, suv_max=suv_max)
    out = {}
    for plane in PLANES:
        feats = np.asarray(features(slices[plane]), dtype=np.float64)  # (V * n, D)
        out[plane] = feats.reshape(len(volumes), n_per_plane, -1)  # (V, n, D)
    return out


def scores_from_features(real: dict, generated: dict, *, kid_subsets: int = 100, seed: int = 0) -> dict:
    """FID and KID per plane and averaged, from `plane_features` outputs of two sets of volumes."""
    result: dict[str, float | int] = {}
    for plane in PLANES:
        a = real[plane].reshape(-1, real[plane].shape[-1])  # (V * n, D)
        b = generated[plane].reshape(-1, generated[plane].shape[-1])
        key = PLANE_KEYS[plane]
        result[key] = fid_from_features(a, b)
        result[f"KID_{key}"], result[f"KID_std_{key}"] = kid(a, b, subsets=kid_subsets, seed=seed)
    keys = [PLANE_KEYS[p] for p in PLANES]
    result["Avg"] = float(np.mean([result[k] for k in keys]))
    result["KID_Avg"] = float(np.mean([result[f"KID_{k}"] for k in keys]))
    result["n_real"] = int(real[PLANES[0]].shape[0])
    result["n_generated"] = int(generated[PLANES[0]].shape[0])
    return result


def fid_per_plane(
    real_volumes: Sequence[np.ndarray],
    generated_volumes: Sequence[np.ndarray],
    *,
    features,
    where: str = "middle",
    real_masks: Sequence[np.ndarray] | None = None,
    generated_masks: Sequence[np.ndarray] | None = None,
    n_per_plane: int = 1,
    suv_max: float | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict:
    """FID(A), FID(S), FID(C), FID(Avg) and KID of generated volumes against real ones.

    Args:
        real_volumes, generated_volumes: lists of (X, Y, Z) arrays, in [0, 1] or SUV with `suv_max`.
        features: slices -> (N, D) features, e.g. `InceptionFeatures()`.
        where: "middle" (the paper's slices) or "tumor" (through each volume's own mask).
        real_masks, generated_masks: needed for "tumor".
        n_per_plane: slices per plane and volume for "tumor".
        suv_max: None for model-range volumes, else the SUV that maps to 1.
        kid_subsets: random subsets KID averages over.
        seed: seeds KID's subsets.
    """
    real = plane_features(real_volumes, features=features, where=where, masks=real_masks,
                          n_per_plane=n_per_plane, suv_max=suv_max)
    generated = plane_features(generated_volumes, features=features, where=where, masks=generated_masks,
                               n_per_plane=n_per_plane, suv_max=suv_max)
    return scores_from_features(real, generated, kid_subsets=kid_subsets, seed=seed)


def real_floor_from_features(
    per_volume: dict, *, n_a: int, n_b: int, seed: int = 0, repeats: int = 5, kid_subsets: int = 100
) -> dict:
    """The floor from precomputed `plane_features`: metrics between two disjoint random sets of cases.

    Returns the mean over `repeats` random splits of every score, plus "<key>_spread" (std over
    splits), "repeats", and "n_real" = n_a, "n_generated" = n_b.
    """
    n_volumes = per_volume[PLANES[0]].shape[0]
    if n_a < 2 or n_b < 2 or n_a + n_b > n_volumes:
        raise ValueError(f"need two disjoint sets of >= 2 cases: n_a={n_a}, n_b={n_b}, {n_volumes} cases given")
    rng = np.random.default_rng(seed)
    runs = []
    for r in range(repeats):
        order = rng.permutation(n_volumes)
        a, b = order[:n_a], order[n_a : n_a + n_b]
        runs.append(scores_from_features({p: f[a] for p, f in per_volume.items()},
                                         {p: f[b] for p, f in per_volume.items()},
                                         kid_subsets=kid_subsets, seed=seed + r))
    return _mean_and_spread(runs, n_real=n_a, n_generated=n_b)


def real_floor_against_pool(real: dict, pool: dict, *, seed: int = 0, repeats: int = 5,
                            kid_subsets: int = 100) -> dict:
    """The floor of a fixed real set: its metrics against equally many cases drawn from another real pool.

    Args:
        real: `plane_features` of the real cases a generated set is compared with (e.g. the test cases).
        pool: `plane_features` of other real cases (e.g. the train cases); all of them when fewer.
        seed: seeds the draws and KID.
        repeats: draws averaged.

    Returns the mean over draws of every score, "<key>_spread" (std over draws), "repeats", "n_real" and
    "n_generated" (the drawn set's size).
    """
    n_real, n_pool = real[PLANES[0]].shape[0], pool[PLANES[0]].shape[0]
    n_b = min(n_real, n_pool)
    rng = np.random.default_rng(seed)
    runs = []
    for r in range(repeats):
        pick = np.sort(rng.choice(n_pool, n_b, replace=False))
        runs.append(scores_from_features(real, {p: f[pick] for p, f in pool.items()}, kid_subsets=kid_subsets,
                                         seed=seed + r))
    return _mean_and_spread(runs, n_real=int(n_real), n_generated=int(n_b))


def _mean_and_spread(runs: list[dict], *, n_real: int, n_generated: int) -> dict:
    """Every score of `scores_from_features` runs as its mean and "<key>_spread" (std over the runs)."""
    result: dict[str, float | int] = {}
    for key in runs[0]:
        if key.startswith("n_"):
            continue
        values = np.array([run[key] for run in runs])
        result[key] = float(values.mean())
        result[f"{key}_spread"] = float(values.std())
    result.update(n_real=n_real, n_generated=n_generated, repeats=len(runs))
    return result


def real_floor(
    real_volumes: Sequence[np.ndarray],
    real_masks: Sequence[np.ndarray] | None,
    *,
    features,
    n_a: int,
    n_b: int,
    seed: int = 0,
    repeats: int = 5,
    where: str = "tumor",
    n_per_plane: int = 1,
    suv_max: float | None = None,
    kid_subsets: int = 100,
) -> dict:
    """The real-vs-real floor: `fid_per_plane` between two disjoint random subsets of real volumes.

    Args:
        real_volumes, real_masks: the real cases (masks needed for "tumor").
        features: slices -> (N, D) features.
        n_a, n_b: sizes of the two sets (e.g. the test set size and the generated set size).
        seed: seeds the splits and KID.
        repeats: random splits averaged.
        where, n_per_plane, suv_max, kid_subsets: as for `fid_per_plane`.
    """
    per_volume = plane_features(real_volumes, features=features, where=where, masks=real_masks,
                                n_per_plane=n_per_plane, suv_max=suv_max)
    return real_floor_from_features(per_volume, n_a=n_a, n_b=n_b, seed=seed, repeats=repeats,
                                    kid_subsets=kid_subsets)
