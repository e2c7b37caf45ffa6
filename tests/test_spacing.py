"""`voxel_spacing`: mm per voxel along the array's own axes, whatever the orientation of the affine."""

from __future__ import annotations

import numpy as np
import pytest

from tumorgen.io.spacing import voxel_spacing


def test_spacing_is_the_column_norms_of_a_rotated_permuted_flipped_affine():
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    permute_flip = np.array([[0, 0, -1], [1, 0, 0], [0, 1, 0]])  # array axis i runs along +y, j along +z, k along -x
    affine = np.eye(4)
    affine[:3, :3] = rotation @ permute_flip @ np.diag([2.0, 3.0, 4.5])
    affine[:3, 3] = [10, -20, 5]  # the origin plays no part
    assert voxel_spacing(affine) == pytest.approx([2.0, 3.0, 4.5])
    assert voxel_spacing(affine.tolist()).dtype == np.float64
