"""Box-normalised windows: any box maps into the model's window and back, the scan is unchanged
outside the box, the window depends only on the box (not on how much scan surrounds it), and the
training windows are cut exactly as synthesis cuts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tumorgen.data.box_windows import (BoxWindowSpec, cut_box_window, flip_window, random_windows, training_box,
                                       transpose_window)
from tumorgen.data.window import box_window_spacing, cut_window
from tumorgen.io.nifti import Volume
from tumorgen.synthesis.pipeline import ModelInfo, synthesize_into_scan

INFO = ModelInfo(size=(32, 32, 32), spacing=(4.0, 4.0, 4.0), suv_max=50.0, window="box", box_fill=24,
                 intensity="log", latent_factor=2)


def scan(shape=(60, 70, 90), spacing=(4.0, 4.0, 3.27), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    suv = (1.0 + 0.2 * rng.standard_normal(shape)).clip(0).astype(np.float32)
    return Volume(array=suv, affine=np.diag([*spacing, 1.0]), path=Path("scan.nii.gz"))


def hot_box_generator(window_image, boxes, seeds):
    """Fill each box with a hot value; the mask is the box."""
    image_hat, prob = window_image.clone(), torch.zeros_like(window_image)
    for b, box in enumerate(boxes.tolist()):
        region = (b, 0, *(slice(lo, hi) for lo, hi in zip(box[:3], box[3:])))
        image_hat[region] = 0.8
        prob[region] = 1.0
    return image_hat, prob


def outside(array, box):
    keep = np.ones(array.shape, dtype=bool)
    keep[tuple(slice(a, b) for a, b in zip(box[:3], box[3:]))] = False
    return array[keep]


@pytest.mark.parametrize("box", [(20, 30, 40, 28, 36, 48),          # 3 cm: a small lesion
                                 (2, 3, 1, 58, 68, 89),              # 22 x 26 x 29 cm: a large sarcoma
                                 (0, 0, 0, 60, 70, 90)])             # the whole scan
def test_any_box_is_synthesized_and_the_scan_is_unchanged_outside_it(box):
    volume = scan()
    result = synthesize_into_scan(scan=volume, boxes=[box], generate=hot_box_generator, model_info=INFO,
                                  match_noise=False)[0]
    assert np.array_equal(outside(result.image, box), outside(volume.array, box))
    assert outside(result.mask, box).sum() == 0
    inside = result.image[tuple(slice(a, b) for a, b in zip(box[:3], box[3:]))]
    assert result.mask.sum() > 0 and inside.max() > 5.0  # the hot generated value came back as SUV


def test_the_box_spans_the_fill_share_of_the_window_on_every_axis():
    volume = scan()
    box = (10, 12, 20, 30, 28, 70)  # 80 x 64 x 163.5 mm
    spacing = box_window_spacing(box, volume.affine, fill=24)
    _, _, in_window = cut_window(volume.array, volume.affine, box, size=(32,) * 3, spacing=spacing, suv_max=50.0,
                                 intensity="log", latent_factor=2)
    extent = np.subtract(in_window[3:], in_window[:3])
    assert np.all(extent >= 24) and np.all(extent <= 26), in_window
    assert np.allclose(spacing, [80 / 24, 64 / 24, 163.5 / 24])


def test_a_flat_box_is_not_stretched_more_than_the_aspect_cap():
    volume = scan()
    spacing = box_window_spacing((10, 10, 10, 40, 40, 12), volume.affine, fill=24, max_aspect=3.0)
    assert spacing[2] == pytest.approx(spacing[0] / 3.0)


def test_the_window_depends_on_the_box_only_not_on_the_scan_around_it():
    """The VAE sees the same window whether the scan is a tight crop or a whole body: its GroupNorm
    statistics (and so the tumor's round trip) cannot depend on the extent of the scan."""
    volume = scan()
    box = (20, 25, 30, 36, 41, 50)
    padded = np.pad(volume.array, 40, mode="constant", constant_values=0.3)
    shifted = tuple(v + 40 for v in box)
    spacing = box_window_spacing(box, volume.affine, fill=24)
    a, _, box_a = cut_window(volume.array, volume.affine, box, size=(32,) * 3, spacing=spacing, suv_max=50.0,
                             intensity="log", latent_factor=2, edge="nearest")
    b, _, box_b = cut_window(padded, volume.affine, shifted, size=(32,) * 3, spacing=spacing, suv_max=50.0,
                             intensity="log", latent_factor=2, edge="nearest")
    assert box_a == box_b
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_training_windows_hold_the_tumor_inside_the_box_and_flips_move_the_box_with_it():
    volume = scan(shape=(48, 48, 48), spacing=(4.0, 4.0, 4.0))
    mask = np.zeros(volume.array.shape, dtype=np.uint8)
    mask[20:28, 18:30, 22:26] = 1
    suv = volume.array + 6.0 * mask
    spec = BoxWindowSpec(size=32, fill=24, suv_max=50.0, intensity="log", factor=2, alpha=0.1, pad=2.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        box = training_box(mask, spec, rng)
        assert all(box[i] <= (20, 18, 22)[i] - 1 and box[i + 3] >= (28, 30, 26)[i] + 1 for i in range(3))
    image, window_mask, in_window = cut_box_window(suv, mask, volume.affine, box, spec)
    inside = np.zeros(window_mask.shape, dtype=bool)
    inside[tuple(slice(a, b) for a, b in zip(in_window[:3], in_window[3:]))] = True
    assert window_mask.sum() > 0 and window_mask[~inside].sum() == 0
    assert image[window_mask > 0].mean() > image[~inside].mean() + 0.2  # the tumor is hot on the log scale
    flipped, flipped_mask, flipped_box = flip_window(image, window_mask, in_window, axes=[0, 2])
    inside_f = np.zeros(window_mask.shape, dtype=bool)
    inside_f[tuple(slice(a, b) for a, b in zip(flipped_box[:3], flipped_box[3:]))] = True
    assert flipped_mask[~inside_f].sum() == 0 and np.array_equal(flipped_mask[::-1, :, ::-1], window_mask)
    images, masks, boxes = random_windows([suv], [mask], [volume.affine], spec, np.random.default_rng(1), 3)
    assert images.shape == masks.shape == (3, 1, 32, 32, 32) and boxes.shape == (3, 6)
    assert np.all(boxes % 2 == 0)
    again = random_windows([suv], [mask], [volume.affine], spec, np.random.default_rng(1), 3)
    assert np.array_equal(images, again[0]) and np.array_equal(boxes, again[2])  # same seed, same windows


def test_a_transposed_window_moves_its_box_with_its_axes_and_is_off_unless_asked():
    rng = np.random.default_rng(3)
    image = rng.random((32, 32, 32)).astype(np.float32)
    mask = np.zeros_like(image)
    mask[4:10, 12:26, 20:22] = 1.0  # 6 x 14 x 2 voxels: every axis its own length
    box = (4, 12, 20, 10, 26, 22)
    moved, moved_mask, moved_box = transpose_window(image, mask, box, (2, 0, 1))
    assert moved_box == (20, 4, 12, 22, 10, 26)
    assert moved_mask[20:22, 4:10, 12:26].all() and moved_mask.sum() == mask.sum()
    assert moved[1, 2, 3] == image[2, 3, 1]  # window axis j is old axis order[j]
    with pytest.raises(ValueError, match="permutation"):
        transpose_window(image, mask, box, (0, 0, 1))

    volume = scan(shape=(48, 48, 48), spacing=(4.0, 4.0, 4.0))
    suv = volume.array.copy()
    tumor = np.zeros(suv.shape, dtype=np.uint8)
    tumor[20:24, 16:30, 22:26] = 1  # elongated along the second axis
    suv[tumor > 0] = 8.0
    spec = BoxWindowSpec(size=32, fill=24, suv_max=50.0, intensity="log", factor=2, alpha=0.1, pad=2.0)
    plain = random_windows([suv], [tumor], [volume.affine], spec, np.random.default_rng(5), 12)
    again = random_windows([suv], [tumor], [volume.affine], spec, np.random.default_rng(5), 12, transposes=False)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))  # off is the default, the same windows
    images, masks, boxes = random_windows([suv], [tumor], [volume.affine], spec, np.random.default_rng(5), 12,
                                          transposes=True)
    for m, b in zip(masks[:, 0], boxes):
        inside = np.zeros(m.shape, dtype=bool)
        inside[tuple(slice(lo, hi) for lo, hi in zip(b[:3], b[3:]))] = True
        assert m.sum() > 0 and m[~inside].sum() == 0  # the tumor stays in its (moved) box
    # the box-normalised window keeps the tumor longest along the axis it is longest in the scan (the
    # box's aspect, 18 x 8 x 8 voxels, is under the cap): flips keep that axis, transposes move it
    def longest_axes(window_masks):
        return {int(np.argmax([np.ptp(np.nonzero(m)[a]) for a in range(3)])) for m in window_masks[:, 0]}
    assert longest_axes(plain[1]) == {1}
    assert len(longest_axes(masks)) >= 2
