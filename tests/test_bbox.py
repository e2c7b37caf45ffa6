"""BA-PMG boxes: containment, clipping, offset bounds, determinism, the ablation, grid conversions."""

from __future__ import annotations

import pytest
import torch

from tumorgen.bbox import (
    bapmg,
    box_indicator,
    downsample_mask,
    expand_box,
    latent_box_from_image_box,
    scale_box,
    tight_box,
)


def _mask_with_blob(shape=(16, 16, 16), lo=(3, 5, 7), hi=(9, 8, 12)) -> torch.Tensor:
    m = torch.zeros(1, 1, *shape)
    m[0, 0, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1.0
    return m


def test_downsample_mask_is_the_tumor_fraction():
    M = torch.zeros(1, 1, 8, 8, 8)
    M[0, 0, 0:2, 0:4, 0:4] = 1.0  # half of latent voxel (0,0,0) at factor 4
    m = downsample_mask(M, 4)
    assert m.shape == (1, 1, 2, 2, 2)
    assert m[0, 0, 0, 0, 0].item() == pytest.approx(0.5)
    assert m.sum().item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="divisible"):
        downsample_mask(torch.zeros(1, 1, 6, 8, 8), 4)


def test_tight_box_is_half_open_and_refuses_empty():
    m = _mask_with_blob()
    assert tight_box(m).tolist() == [[3, 5, 7, 9, 8, 12]]
    with pytest.raises(ValueError, match="empty"):
        tight_box(torch.zeros(2, 1, 4, 4, 4))


def test_expanded_box_contains_tight_stays_inside_and_offsets_bounded():
    shape = (16, 12, 20)
    alpha = 0.3
    gen = torch.Generator().manual_seed(0)
    tight = torch.tensor([[0, 5, 7, 9, 12, 19], [4, 4, 4, 5, 5, 5]] * 50)
    for _ in range(20):
        box = expand_box(tight, shape=shape, alpha=alpha, generator=gen)
        assert (box[:, :3] <= tight[:, :3]).all() and (box[:, 3:] >= tight[:, 3:]).all()
        assert (box[:, :3] >= 0).all()
        assert (box[:, 3:] <= torch.tensor(shape)).all()
        limit = torch.tensor([alpha * s for s in shape] * 2)
        assert ((tight - box).abs() <= limit).all()
    # the margins are used: some faces grow by more than one voxel
    assert (tight[:, :3] - box[:, :3]).max() >= 2


def test_expand_box_same_seed_same_box_and_alpha_zero_is_tight():
    tight = torch.tensor([[3, 5, 7, 9, 8, 12]])
    a = expand_box(tight, shape=(16, 16, 16), alpha=0.5, generator=torch.Generator().manual_seed(7))
    b = expand_box(tight, shape=(16, 16, 16), alpha=0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    zero = expand_box(tight, shape=(16, 16, 16), alpha=0.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(zero, tight)


def test_box_indicator_sums_equal_box_volumes():
    boxes = torch.tensor([[1, 2, 3, 4, 6, 8], [0, 0, 0, 10, 10, 10], [5, 5, 5, 5, 9, 9]])
    ind = box_indicator(boxes, (10, 10, 10))
    assert ind.shape == (3, 1, 10, 10, 10)
    assert ind.sum(dim=(1, 2, 3, 4)).tolist() == [3 * 4 * 5, 1000, 0]
    assert ind[0, 0, 1, 2, 3] == 1 and ind[0, 0, 4, 2, 3] == 0 and ind[0, 0, 0, 2, 3] == 0


def test_bapmg_ablation_is_exactly_the_binary_mask():
    m = downsample_mask(_mask_with_blob((32, 32, 32), (5, 9, 13), (17, 14, 22)), 4)
    B = bapmg(m, alpha=0.5, generator=torch.Generator().manual_seed(0), ablate=True)
    assert torch.equal(B, (m > 0).float())
    full, boxes = bapmg(m, alpha=0.5, generator=torch.Generator().manual_seed(0), return_boxes=True)
    assert (full >= (m > 0).float()).all()
    assert full.sum().item() == float((boxes[0, 3:] - boxes[0, :3]).prod())


def test_grid_conversions():
    latent = torch.tensor([[1, 2, 3, 4, 5, 6]])
    assert scale_box(latent, 4).tolist() == [[4, 8, 12, 16, 20, 24]]
    image = torch.tensor([[5, 8, 0, 9, 12, 1]])
    assert latent_box_from_image_box(image, 4).tolist() == [[1, 2, 0, 3, 3, 1]]
    assert torch.equal(latent_box_from_image_box(scale_box(latent, 4), 4), latent)
