"""The model's window: placement, resampling both ways, the box on the latent grid, the seam weight."""

from __future__ import annotations

import numpy as np
import pytest

from tumorgen.synthesis.blend import feather_weight
from tumorgen.data.window import (
    box_in_window,
    cut_window,
    place_window,
    scan_to_window_values,
    window_axes,
    window_to_scan_values,
)

# Anisotropic, x flipped (L instead of R): the window must come out RAS and still hit the box.
FLIPPED = np.array([[-2.0, 0, 0, 40.0], [0, 1.5, 0, -20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
# Axes permuted (voxel axis 0 runs along world z) and one flipped.
PERMUTED = np.array([[0, 1.5, 0, 0.0], [0, 0, -2.0, 30.0], [2.5, 0, 0, -10.0], [0, 0, 0, 1]])


def test_window_axes_follow_ras():
    perm, flip = window_axes(FLIPPED)
    assert perm.tolist() == [0, 1, 2] and flip.tolist() == [-1, 1, 1]
    perm, flip = window_axes(PERMUTED)
    assert perm.tolist() == [1, 2, 0] and flip.tolist() == [1, -1, 1]
    perm, flip = window_axes(PERMUTED, None)
    assert perm.tolist() == [0, 1, 2] and flip.tolist() == [1, 1, 1]


@pytest.mark.parametrize("affine", [FLIPPED, PERMUTED])
def test_window_is_centered_on_the_box_at_the_model_spacing(affine):
    grid = place_window(scan_shape=(60, 60, 60), scan_affine=affine, box=(24, 26, 28, 34, 34, 36),
                        size=(16, 16, 16), spacing=(2.0, 2.5, 3.0))
    window_spacing = np.sqrt((grid.affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(window_spacing, [2.0, 2.5, 3.0])
    # RAS: each window axis points along +x, +y, +z of the world.
    assert np.all(np.diag(grid.affine[:3, :3]) > 0)
    box_center_world = affine @ np.array([(24 + 33) / 2, (26 + 33) / 2, (28 + 35) / 2, 1.0])
    window_center_world = grid.affine @ np.array([7.5, 7.5, 7.5, 1.0])
    np.testing.assert_allclose(window_center_world, box_center_world, atol=1e-9)


def test_window_shifts_to_stay_inside_the_scan():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    grid = place_window(scan_shape=(40, 40, 10), scan_affine=affine, box=(0, 30, 2, 6, 40, 8),
                        size=(8, 8, 8), spacing=(4.0, 4.0, 4.0))
    corners = grid.window_to_scan @ np.array([[0, 0, 0, 1.0], [7, 7, 7, 1.0]]).T  # (4, 2)
    assert corners[0].min() == pytest.approx(0.0) and corners[1].max() == pytest.approx(39.0)
    # Along z the window (32 mm) is larger than the scan (20 mm): it is centered on the scan.
    assert corners[2].mean() == pytest.approx(4.5)


def test_scan_to_window_is_exact_for_a_linear_ramp():
    shape = (30, 28, 20)
    index = np.indices(shape).reshape(3, -1)  # (3, N)
    world = (FLIPPED @ np.vstack([index, np.ones(index.shape[1])]))[:3]  # (3, N)
    ramp = (0.5 * world[0] + 0.2 * world[1] - 0.1 * world[2]).reshape(shape)
    grid = place_window(scan_shape=shape, scan_affine=FLIPPED, box=(10, 10, 8, 20, 18, 12),
                        size=(8, 8, 4), spacing=(3.0, 2.0, 4.0))
    values = scan_to_window_values(ramp, grid)
    w_index = np.indices(grid.shape).reshape(3, -1)
    w_world = (grid.affine @ np.vstack([w_index, np.ones(w_index.shape[1])]))[:3]
    expected = (0.5 * w_world[0] + 0.2 * w_world[1] - 0.1 * w_world[2]).reshape(grid.shape)
    np.testing.assert_allclose(values, expected, atol=1e-3)


@pytest.mark.parametrize("affine", [FLIPPED, PERMUTED])
def test_box_in_window_covers_the_box_on_the_latent_grid(affine):
    box = (13, 11, 9, 22, 19, 17)
    grid = place_window(scan_shape=(40, 36, 30), scan_affine=affine, box=box, size=(24, 24, 24),
                        spacing=(2.0, 2.0, 2.0))
    wbox = box_in_window(box, grid, latent_factor=4)
    assert all(v % 4 == 0 for v in wbox)
    voxels = np.indices([b - a for a, b in zip(box[:3], box[3:])]).reshape(3, -1) + np.array(box[:3])[:, None]
    in_window = (grid.scan_to_window @ np.vstack([voxels, np.ones(voxels.shape[1])]))[:3]  # (3, N)
    assert np.all(in_window.min(axis=1) >= np.array(wbox[:3]) - 0.5)
    assert np.all(in_window.max(axis=1) <= np.array(wbox[3:]) - 0.5)


@pytest.mark.parametrize("affine", [FLIPPED, PERMUTED])
def test_round_trip_puts_a_sphere_back_where_the_box_is(affine):
    shape = (40, 36, 30)
    box = (14, 12, 10, 24, 22, 18)
    suv = np.ones(shape, dtype=np.float32)
    window, grid, wbox = cut_window(suv, affine, box, size=(24, 24, 24), spacing=(2.0, 2.0, 2.0), suv_max=10.0,
                                    latent_factor=4)
    np.testing.assert_allclose(window[wbox[0]:wbox[3], wbox[1]:wbox[4], wbox[2]:wbox[5]], 0.1, atol=1e-6)
    # A sphere (radius 4 mm) at the box center, drawn in window coordinates.
    center_scan = np.array([(a + b - 1) / 2 for a, b in zip(box[:3], box[3:])] + [1.0])
    center_window = (grid.scan_to_window @ center_scan)[:3]
    index = np.indices(grid.shape).astype(np.float64)
    distance_mm = np.sqrt(sum(((index[j] - center_window[j]) * 2.0) ** 2 for j in range(3)))
    sphere = (distance_mm <= 4.0).astype(np.float32)
    back = window_to_scan_values(sphere, grid, region=box, order=1) > 0.5
    assert back.any()
    centroid = np.argwhere(back).mean(axis=0) + np.array(box[:3])
    assert np.all(np.abs(centroid - center_scan[:3]) <= 1.0)
    full = window_to_scan_values(sphere, grid, order=0)
    assert full.shape == shape and full.sum() > 0


def test_feather_weight_is_one_inside_and_falls_at_the_faces():
    weight = feather_weight((12, 12, 12), feather=3)
    assert np.all(weight[4:8, 4:8, 4:8] == 1.0)
    assert 0.0 < weight[0, 6, 6] < weight[1, 6, 6] < weight[2, 6, 6] < weight[3, 6, 6] == 1.0
    np.testing.assert_array_equal(weight, weight[::-1, ::-1, ::-1])
    assert np.all(feather_weight((5, 6, 7), feather=0) == 1.0)
    with pytest.raises(ValueError):
        feather_weight((4, 4, 4), feather=-1)
