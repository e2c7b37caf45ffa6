"""The segmenter behind DSC/NSD: batches, training on the fit loop, rebuild from the checkpoint, prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tumorgen.config import apply_overrides, load_config
from tumorgen.errors import TumorGenError
from tumorgen.evaluation.segmenter import (
    SegmenterSpec,
    dice_on_test_split,
    load_segmenter,
    predict_mask,
    random_crops_and_flips,
    train_segmenter,
)

TINY = SegmenterSpec(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, roi=(16, 16, 16))


def test_crops_and_flips_keep_image_and_mask_aligned():
    # the mask is a function of the image (image > 0.5), so any crop or flip must keep that relation
    gen = torch.Generator().manual_seed(0)
    volumes = torch.rand(3, 1, 24, 20, 16, generator=gen)
    masks = (volumes > 0.5).float()
    x, y = random_crops_and_flips(volumes, masks, roi=(16, 16, 16), batch_size=4, generator=gen)
    assert x.shape == y.shape == (4, 1, 16, 16, 16)
    assert torch.equal(y, (x > 0.5).float())
    gen.manual_seed(0)
    torch.rand(3, 1, 24, 20, 16, generator=gen)
    again, _ = random_crops_and_flips(volumes, masks, roi=(16, 16, 16), batch_size=4, generator=gen)
    assert torch.equal(again, x)  # seeded: the same draws give the same batch


def test_foreground_crops_are_centered_on_the_tumor():
    # one 3^3 tumor in a corner of a 48^3 volume: a uniform 16^3 crop holds it with probability ~0.6%
    volumes = torch.zeros(1, 1, 48, 48, 48)
    masks = torch.zeros_like(volumes)
    masks[0, 0, 40:43, 40:43, 40:43] = 1
    volumes[masks > 0] = 1.0
    hits = {}
    for share in (0.0, 1.0):
        gen = torch.Generator().manual_seed(3)
        _, y = random_crops_and_flips(volumes, masks, roi=(16, 16, 16), batch_size=24, generator=gen, foreground=share)
        hits[share] = int((y.flatten(1).sum(1) > 0).sum())
    assert hits[1.0] == 24, "every crop drawn around a tumor voxel holds the tumor"
    assert hits[0.0] <= 2


def test_whole_volume_batches_do_not_depend_on_the_foreground_share():
    # no crop, no extra draw: runs trained on whole volumes (the IBSI study) stay as they were
    gen = torch.Generator().manual_seed(0)
    volumes = torch.rand(3, 1, 16, 16, 16, generator=gen)
    masks = (volumes > 0.9).float()
    batches = []
    for share in (0.0, 0.5):
        gen.manual_seed(5)
        batches.append(random_crops_and_flips(volumes, masks, roi=(16, 16, 16), batch_size=4, generator=gen,
                                              foreground=share))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_a_checkpoint_written_before_newer_spec_fields_loads_with_their_defaults(tmp_path):
    from tumorgen.evaluation.segmenter import spec_from_checkpoint

    old = {"extra": {"segmenter": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1,
                                   "roi": [16, 16, 16]}}}
    spec = spec_from_checkpoint(old, tmp_path / "last.pt")
    assert spec == SegmenterSpec(channels=(4, 8, 16), strides=(2, 2), num_res_units=1, roi=(16, 16, 16))
    assert spec.foreground == pytest.approx(1 / 3) and spec.batch_dice is False
    with pytest.raises(TumorGenError, match="unreadable segmenter architecture"):
        spec_from_checkpoint({"extra": {"segmenter": {"roi": [16, 16, 16]}}}, tmp_path / "last.pt")


@pytest.mark.slow
def test_train_load_predict(tiny_prep, tmp_path):
    config = apply_overrides(load_config("debug"), ["train.steps=2", "train.lr=1e-3"])
    result = train_segmenter(data=tiny_prep, out=tmp_path / "seg", config=config, spec=TINY, progress=False)
    assert result.step == 2
    for name in ("config.json", "segmenter.json", "metrics.jsonl", "loss_curve.png", "checkpoints/last.pt"):
        assert (tmp_path / "seg" / name).exists(), name
    model, spec = load_segmenter(tmp_path / "seg")
    assert spec == TINY  # the architecture comes back from the checkpoint alone
    image = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    mask = predict_mask(model, image, roi=spec.roi)
    assert mask.shape == (16, 16, 16) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    big = np.random.default_rng(1).random((20, 24, 16)).astype(np.float32)  # larger than roi: sliding window
    assert predict_mask(model, big, roi=spec.roi).shape == (20, 24, 16)
    scores = dice_on_test_split(model, spec, tiny_prep)
    assert scores["n"] == 1 and 0.0 <= scores["DSC"] <= 1.0


def test_load_refuses_another_kind_of_run(trained_debug_run):
    with pytest.raises(TumorGenError, match="'tumorgen' checkpoint where a 'segmenter'"):
        load_segmenter(trained_debug_run)


def test_load_refuses_a_folder_without_checkpoint(tmp_path):
    with pytest.raises(TumorGenError, match="not a train-seg run folder"):
        load_segmenter(tmp_path)
