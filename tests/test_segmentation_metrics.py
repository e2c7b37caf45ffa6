"""DSC and NSD on masks with known answers: identity, shifted boxes, spacing, empty masks."""

from __future__ import annotations

import numpy as np
import pytest

from tumorgen.evaluation.segmentation_metrics import dice, nsd, segmentation_table


def _box(shape=(24, 24, 24), lo=(6, 5, 7), size=(8, 7, 9)):
    mask = np.zeros(shape, np.uint8)
    mask[tuple(slice(l, l + s) for l, s in zip(lo, size))] = 1
    return mask


def test_a_mask_compared_with_itself_scores_one():
    mask = _box()
    assert dice(mask, mask) == 1.0
    assert nsd(mask, mask, tolerance_mm=0.0, spacing=(2.0, 1.0, 3.0)) == 1.0


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_shifted_box_dice_has_the_analytic_value(shift):
    # Box of length a along x shifted by k: overlap (a - k) b c, so DSC = 2 (a - k) / (2 a) = (a - k) / a.
    mask = _box()
    shifted = np.roll(mask, shift, axis=0)
    assert dice(shifted, mask) == pytest.approx((8 - shift) / 8, rel=1e-6)


def test_nsd_is_one_within_tolerance_and_drops_beyond_it_in_mm():
    mask = _box()
    shifted = np.roll(mask, 1, axis=0)  # one voxel along x = 2 mm with this spacing
    spacing = (2.0, 1.0, 1.0)
    assert nsd(shifted, mask, tolerance_mm=2.0, spacing=spacing) == pytest.approx(1.0)
    beyond = nsd(shifted, mask, tolerance_mm=1.5, spacing=spacing)
    assert 0.0 < beyond < 1.0
    # With 1 mm voxels the same shift is within 1.5 mm: spacing really is used.
    assert nsd(shifted, mask, tolerance_mm=1.5, spacing=(1.0, 1.0, 1.0)) == pytest.approx(1.0)
    # A larger shift loses more surface.
    assert nsd(np.roll(mask, 3, axis=0), mask, tolerance_mm=1.5, spacing=spacing) < beyond


def test_empty_mask_conventions():
    empty, mask = np.zeros((10, 10, 10), np.uint8), _box((10, 10, 10), (2, 2, 2), (4, 4, 4))
    assert dice(empty, empty) == 1.0 and nsd(empty, empty, tolerance_mm=1.0) == 1.0
    assert dice(empty, mask) == 0.0 and nsd(mask, empty, tolerance_mm=1.0) == 0.0


def test_segmentation_table_means_and_validation():
    mask = _box()
    preds = [mask, np.roll(mask, 2, axis=0)]
    table = segmentation_table(preds, [mask, mask], tolerance_mm=1.0, spacing=[(1, 1, 1), (1, 1, 1)])
    assert table["DSC"] == pytest.approx((1.0 + 6 / 8) / 2, rel=1e-6)
    assert table["DSC_std"] == pytest.approx(0.125, rel=1e-6)
    assert table["n"] == 2 and 0 < table["NSD"] < 1
    with pytest.raises(ValueError):
        segmentation_table(preds, [mask], tolerance_mm=1.0)
    with pytest.raises(ValueError, match="shape"):
        dice(mask, mask[:-1])
