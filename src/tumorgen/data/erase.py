"""Erase what lies in a box of a PET scan: a smooth background from the shell around it, plus grain.

Why: the paired evaluation protocol (`evaluation.paired`, `tumorgen evaluate-paired`) puts every method into the box
of a *real* tumor. If the real tumor were still in the box, a method that keeps its input (a weak
generator, an identity, a paste with a soft alpha) would score as if it had made a perfect tumor. So
the box is erased first, the same way for every method, and each method regenerates it from the
erased scan; none can reuse the real tumor.

How (choices):
- the shell is the `shell` voxels around the box (clipped to the volume); its values are clipped to
  median +- 3 robust sd, so the rim of a hot tumor that spills past the box (PET blur) or a hot
  neighbour does not leak into the fill;
- the clipped shell is smoothed with a normalized Gaussian (sigma 1 voxel, over shell voxels only)
  and the box is filled with the harmonic interpolant of it: the solution of Laplace's equation
  with the smoothed shell as Dirichlet values on the box faces that have a shell, and zero flux on
  faces at the volume edge. That is the smoothest fill that meets the surroundings (a gradient
  across the box stays a gradient; a flat background stays flat);
- the scan's grain is put back: Gaussian noise with the shell's robust sd (1.4826 x median absolute
  deviation) and its voxel-to-voxel correlation (white noise through a Gaussian filter), both read
  from differences between shell voxels 1 and 3 apart, which cancel a smooth trend (see `_grain`),
  so the erased region is not a clean patch in a noisy scan;
- SUV is never negative: the result is clipped at 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import cg

TREND_SIGMA = 1.0  # voxels: smoothing of the shell before it becomes the fill's boundary values
CLIP_SD = 3.0  # shell values beyond median +- this many robust sds are clipped (tumor spill, hot organs)
MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation for Gaussian data
GRAIN_LAG = 3  # voxels: the longer lag of the two the grain's sd and correlation are read from
WHITE_SIGMA = 0.3  # voxels: a correlation sigma below this is white noise (no filtering)
MIN_PAIRS = 16  # fewer voxel pairs than this along an axis give no estimate


def erase_box(suv: np.ndarray, box: Sequence[int], *, rng: np.random.Generator, shell: int = 3) -> np.ndarray:
    """A new scan equal to `suv` outside the box, with the box refilled from the shell around it.

    Args:
        suv: (X, Y, Z) PET volume in SUV; not modified.
        box: half-open voxel box `(x0, y0, z0, x1, y1, z1)`.
        rng: seeded generator for the grain; the same seed gives the same output.
        shell: width in voxels of the shell around the box that the fill is taken from (>= 1).

    Returns:
        (X, Y, Z) array of `suv`'s floating dtype (float32 for other dtypes): identical to `suv`
        outside the box, background plus grain inside it, never negative.
    """
    suv = np.asarray(suv)
    if suv.ndim != 3:
        raise ValueError(f"suv must be a 3D (X, Y, Z) array, got shape {suv.shape}")
    if shell < 1:
        raise ValueError(f"shell must be >= 1 voxel, got {shell}")
    if len(box) != 6:
        raise ValueError(f"box must be (x0, y0, z0, x1, y1, z1), got {box}")
    shape = np.array(suv.shape)
    lo, hi = np.array(box[:3], dtype=int), np.array(box[3:], dtype=int)
    if np.any(lo < 0) or np.any(hi > shape) or np.any(hi <= lo):
        raise ValueError(f"box {tuple(int(v) for v in box)} is empty or outside the volume of shape {tuple(shape)}")
    outer_lo, outer_hi = np.maximum(lo - shell, 0), np.minimum(hi + shell, shape)
    region = suv[tuple(slice(a, b) for a, b in zip(outer_lo, outer_hi))].astype(np.float64)
    inner = tuple(slice(a, b) for a, b in zip(lo - outer_lo, hi - outer_lo))  # the box inside `region`
    known = np.ones(region.shape, dtype=bool)
    known[inner] = False
    if not known.any():
        raise ValueError(f"box {tuple(int(v) for v in box)} covers the whole volume: there is no shell to fill from")

    values = region[known]
    median = float(np.median(values))
    spread = MAD_TO_SD * float(np.median(np.abs(values - median)))
    clipped = np.where(known, np.clip(region, median - CLIP_SD * spread, median + CLIP_SD * spread), 0.0)
    trend = _normalized_smooth(clipped, known, TREND_SIGMA)  # smooth shell values (defined on the shell)
    fill = _harmonic_fill(trend, known, inner)  # (bx, by, bz)

    sd, corr_sigma = _grain(clipped, known)
    noise = rng.standard_normal(fill.shape)
    if corr_sigma > 0:
        noise = ndimage.gaussian_filter(noise, corr_sigma, mode="wrap") / _smoothed_noise_sd(corr_sigma)
    out_dtype = suv.dtype if np.issubdtype(suv.dtype, np.floating) else np.float32
    out = np.array(suv, dtype=out_dtype, copy=True)
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = np.clip(fill + sd * noise, 0.0, None).astype(out_dtype)
    return out


def _smoothed_noise_sd(sigma: float) -> float:
    """The sd of unit white noise after a Gaussian filter of `sigma` voxels: sqrt(sum of squared weights)."""
    half = int(np.ceil(4 * sigma))
    delta = np.zeros((2 * half + 1,) * 3)
    delta[half, half, half] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(delta, sigma, mode="constant") ** 2).sum()))


def _normalized_smooth(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian average of `values` over the voxels where `weight` is set (normalized convolution)."""
    w = weight.astype(np.float64)
    num = ndimage.gaussian_filter(values * w, sigma, mode="constant")
    den = ndimage.gaussian_filter(w, sigma, mode="constant")
    return np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0)


def _harmonic_fill(boundary: np.ndarray, known: np.ndarray, inner: tuple[slice, slice, slice]) -> np.ndarray:
    """Solve Laplace's equation in the box: Dirichlet `boundary` on known neighbours, zero flux elsewhere.

    The 7-point Laplacian over the box's voxels, where a neighbour in the shell contributes its value
    to the right-hand side and a neighbour beyond the volume is left out (Neumann). The matrix is
    symmetric positive definite when at least one box face has a shell, so conjugate gradients solve it.
    """
    box_shape = tuple(s.stop - s.start for s in inner)
    n = int(np.prod(box_shape))
    index = np.arange(n).reshape(box_shape)  # (bx, by, bz)
    degree = np.zeros(box_shape)
    rhs = np.zeros(box_shape)
    rows, cols = [], []
    for axis in range(3):
        # Neighbours inside the box: couple each voxel with the next along this axis.
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(0, -1), slice(1, None)
        a, b = index[tuple(first)].ravel(), index[tuple(second)].ravel()
        rows += [a, b]
        cols += [b, a]
        degree[tuple(first)] += 1
        degree[tuple(second)] += 1
        # Neighbours beyond the two faces: shell voxels (Dirichlet) if the region holds them.
        for face, step in ((inner[axis].start, -1), (inner[axis].stop - 1, 1)):
            outside = face + step
            if outside < 0 or outside >= known.shape[axis]:
                continue  # the box face is on the volume's edge: zero flux
            cut_box = [slice(None)] * 3
            cut_box[axis] = slice(face - inner[axis].start, face - inner[axis].start + 1)
            cut_shell = list(inner)
            cut_shell[axis] = slice(outside, outside + 1)
            degree[tuple(cut_box)] += 1
            rhs[tuple(cut_box)] += boundary[tuple(cut_shell)]
    rows_all, cols_all = np.concatenate(rows + [index.ravel()]), np.concatenate(cols + [index.ravel()])
    data = np.concatenate([-np.ones(sum(len(r) for r in rows)), degree.ravel()])
    matrix = sparse.csr_matrix((data, (rows_all, cols_all)), shape=(n, n))
    start = np.full(n, float(np.mean(rhs[rhs != 0])) if np.any(rhs != 0) else 0.0)
    solution, info = cg(matrix, rhs.ravel(), x0=start, rtol=1e-8, maxiter=20 * max(box_shape) + 200)
    if info < 0:
        raise RuntimeError("the Laplace fill did not converge (illegal input to conjugate gradients)")
    return solution.reshape(box_shape)


def _grain(values: np.ndarray, known: np.ndarray) -> tuple[float, float]:
    """(noise sd, Gaussian correlation sigma in voxels) of the grain in the shell.

    PET noise is correlated over a voxel or two, so a residual around a smoothed trend would miss part
    of it. Differences between shell voxels `k` apart cancel a smooth trend instead: for noise of sd
    `s_n` with Gaussian correlation rho_k = exp(-k^2 / (4 sigma^2)) (white noise through a Gaussian
    filter of sigma), var(x_i - x_(i+k)) = 2 s_n^2 (1 - rho_k). The robust variances at lags 1 and
    GRAIN_LAG give sigma (their ratio is monotone in it), then s_n.
    """
    d1, dk = _lag_sd(values, known, 1), _lag_sd(values, known, GRAIN_LAG)
    if not (np.isfinite(d1) and np.isfinite(dk)) or dk <= 0:
        return 0.0, 0.0
    sigmas = np.linspace(0.25, 4.0, 301)
    ratios = _one_minus_rho(1, sigmas) / _one_minus_rho(GRAIN_LAG, sigmas)  # decreasing in sigma
    sigma = float(sigmas[np.argmin(np.abs(ratios - (d1 / dk) ** 2))])
    sd = dk / np.sqrt(2.0 * _one_minus_rho(GRAIN_LAG, sigma))
    return float(sd), (sigma if sigma > WHITE_SIGMA else 0.0)


def _one_minus_rho(lag: int, sigma):
    return 1.0 - np.exp(-(lag**2) / (4.0 * np.asarray(sigma, dtype=np.float64) ** 2))


def _lag_sd(values: np.ndarray, known: np.ndarray, lag: int) -> float:
    """Robust sd of differences between shell voxels `lag` apart along an axis (median removed per axis)."""
    spreads, counts = [], []
    for axis in range(3):
        if values.shape[axis] <= lag:
            continue
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -lag), slice(lag, None)
        both = known[tuple(a)] & known[tuple(b)]
        diffs = (values[tuple(a)] - values[tuple(b)])[both]
        if diffs.size >= MIN_PAIRS:
            spreads.append(np.abs(diffs - np.median(diffs)))
    if not spreads:
        return float("nan")
    return MAD_TO_SD * float(np.median(np.concatenate(spreads)))
