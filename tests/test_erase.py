"""erase_box: the box is refilled from its surroundings, nothing else changes, seeded, input untouched."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tumorgen.data.erase import _harmonic_fill, erase_box


def _scan_with_tumor(seed: int = 0, shape=(40, 40, 40)):
    """A noisy (correlated) background with a gentle gradient, and a hot ellipsoid tumor in (12..28)^3."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"))  # (3, X, Y, Z)
    background = 1.5 + 0.02 * grid[0]
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    noise *= 0.2 / noise.std()
    tumor = (((grid - 20.0) / np.array([6.0, 5.0, 4.0])[:, None, None, None]) ** 2).sum(0) <= 1.0
    suv = background + noise + ndimage.gaussian_filter(8.0 * tumor, 1.0)
    return np.clip(suv, 0, None).astype(np.float32), (12, 13, 14, 29, 28, 27)


def _inside(box):
    return tuple(slice(a, b) for a, b in zip(box[:3], box[3:]))


def _shell_values(suv, box, shell=3):
    lo = np.maximum(np.array(box[:3]) - shell, 0)
    hi = np.minimum(np.array(box[3:]) + shell, suv.shape)
    ring = np.zeros(suv.shape, bool)
    ring[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    ring[_inside(box)] = False
    return suv[ring]


def test_outside_the_box_is_unchanged_exactly():
    suv, box = _scan_with_tumor()
    out = erase_box(suv, box, rng=np.random.default_rng(0))
    outside = np.ones(suv.shape, bool)
    outside[_inside(box)] = False
    assert out.dtype == suv.dtype and out.shape == suv.shape
    assert np.array_equal(out[outside], suv[outside])


def test_the_hot_tumor_is_gone_and_the_grain_stays():
    suv, box = _scan_with_tumor()
    out = erase_box(suv, box, rng=np.random.default_rng(0))
    shell_median = float(np.median(_shell_values(suv, box)))
    inside = out[_inside(box)]
    assert suv[_inside(box)].mean() > 1.5 * shell_median  # the tumor was there
    assert inside.mean() == pytest.approx(shell_median, rel=0.2)
    assert inside.max() < 2.0 * shell_median  # no hot spot left
    assert 0.1 < inside.std() < 0.5  # the background's grain (sd 0.2 plus the gradient), not a flat patch
    assert inside.min() >= 0.0


def test_same_seed_same_output_and_input_untouched():
    suv, box = _scan_with_tumor()
    before = suv.copy()
    a = erase_box(suv, box, rng=np.random.default_rng(7))
    b = erase_box(suv, box, rng=np.random.default_rng(7))
    c = erase_box(suv, box, rng=np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(suv, before)
    assert a is not suv


def test_box_touching_the_volume_edge():
    suv, _ = _scan_with_tumor()
    box = (0, 25, 30, 10, 40, 40)  # on the x = 0, y = end and z = end faces
    out = erase_box(suv, box, rng=np.random.default_rng(0))
    outside = np.ones(suv.shape, bool)
    outside[_inside(box)] = False
    assert np.array_equal(out[outside], suv[outside])
    assert np.all(np.isfinite(out)) and out.min() >= 0.0
    assert out[_inside(box)].mean() == pytest.approx(float(np.median(_shell_values(suv, box))), rel=0.2)


def test_never_negative_on_a_cold_noisy_background():
    rng = np.random.default_rng(0)
    suv = np.abs(0.05 + 0.2 * rng.standard_normal((20, 20, 20))).astype(np.float32)
    out = erase_box(suv, (5, 5, 5, 15, 15, 15), rng=np.random.default_rng(0))
    assert out.min() >= 0.0


def test_the_fill_follows_a_linear_gradient_exactly():
    # Linear functions are harmonic: with a linear shell (and zero flux on a face at the edge), the
    # noise-free Laplace fill reproduces the line.
    shape = (30, 28, 26)
    inner = (slice(3, 27), slice(0, 20), slice(3, 23))
    line = 2.0 + 0.1 * np.arange(30)[:, None, None] * np.ones(shape)
    known = np.ones(shape, bool)
    known[inner] = False
    fill = _harmonic_fill(np.where(known, line, 0.0), known, inner)
    np.testing.assert_allclose(fill, line[inner], atol=1e-5)


def test_a_one_voxel_box_gets_a_background_value():
    suv, _ = _scan_with_tumor()
    out = erase_box(suv, (5, 5, 5, 6, 6, 6), rng=np.random.default_rng(0))
    assert 0.0 <= out[5, 5, 5] < 3.0


@pytest.mark.parametrize("box", [(0, 0, 0, 40, 40, 40), (5, 5, 5, 5, 9, 9), (0, 0, 0, 41, 4, 4)])
def test_refuses_boxes_without_shell_or_volume(box):
    suv, _ = _scan_with_tumor()
    with pytest.raises(ValueError):
        erase_box(suv, box, rng=np.random.default_rng(0))
