"""A told uptake made exact (`synthesis.uptake_match`): expected values on a hand-built tumor."""

import numpy as np
import pytest

from tumorgen.synthesis.uptake_match import match_uptake

BOX = (4, 4, 4, 16, 16, 16)


def scan_with_tumor(seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.8, 1.2, size=(20, 20, 20)).astype(np.float32)  # background ~1 SUV
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[7:13, 7:13, 7:13] = 1
    image[mask > 0] = rng.uniform(1.0, 3.0, size=int(mask.sum()))  # a textured tumor, mean ~2 SUV
    return image, mask


@pytest.mark.parametrize("asked", [0.5, 6.0, 12.0])
def test_the_mean_inside_the_mask_becomes_the_asked_one_and_the_texture_stays(asked):
    image, mask = scan_with_tumor()
    before = image.copy()
    out = match_uptake(image, mask, BOX, asked)
    inside = mask > 0
    assert out[inside].mean() == pytest.approx(asked, rel=1e-5)
    cov = lambda v: v.std() / v.mean()  # noqa: E731
    assert cov(out[inside]) == pytest.approx(cov(image[inside]), rel=1e-4)  # scaled, not flattened
    outside_box = np.ones(image.shape, dtype=bool)
    outside_box[4:16, 4:16, 4:16] = False
    assert np.array_equal(out[outside_box], image[outside_box])
    assert np.array_equal(image, before)  # the input is not modified
    k = asked / image[inside].mean()
    near, far = out[6, 10, 10] / image[6, 10, 10], out[4, 10, 10] / image[4, 10, 10]  # 1 and 3 voxels out
    assert abs(near - 1) < abs(k - 1) and abs(far - 1) < abs(near - 1)  # the halo fades outward
    assert abs(far - 1) < 0.01 * abs(k - 1)  # at the box face almost the scan's value: no seam


def test_an_empty_or_cold_mask_is_left_as_it_is_and_a_bad_ask_refused():
    image, mask = scan_with_tumor()
    assert np.array_equal(match_uptake(image, np.zeros_like(mask), BOX, 5.0), image)
    cold = np.where(mask > 0, 0.0, image).astype(np.float32)
    assert np.array_equal(match_uptake(cold, mask, BOX, 5.0), cold)
    with pytest.raises(ValueError, match="positive SUV"):
        match_uptake(image, mask, BOX, 0.0)


def test_a_tumor_touching_the_box_face_is_matched_without_a_step_at_the_face():
    image, _ = scan_with_tumor()
    mask = np.zeros(image.shape, dtype=np.uint8)
    mask[4:9, 7:13, 7:13] = 1  # reaches the box's x0 face
    image[mask > 0] = 2.0
    out = match_uptake(image, mask, BOX, 6.0)
    assert out[mask > 0].mean() == pytest.approx(6.0, rel=1e-5)
    face, deep = out[4, 10, 10] / image[4, 10, 10], out[8, 10, 10] / image[8, 10, 10]
    assert face - 1 < 0.3 * (deep - 1)  # the face voxel stays near the scan's value; the tumor's core takes the gain
    assert out.min() >= 0
