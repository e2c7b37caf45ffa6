"""VAE-guided mask refiner: output grid, validation, and gradients reaching every stage."""

from __future__ import annotations

import pytest
import torch

from tumorgen.models.refiner import MaskRefiner


def _features(batch=2, size=(3, 4, 2), channels=(16, 12, 8)):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, c, *(s * 2**k for s in size), generator=gen) for k, c in enumerate(channels)]


def test_output_shape_is_four_times_the_latent_grid():
    torch.manual_seed(0)
    refiner = MaskRefiner(feature_channels=(16, 12, 8), widths=(8, 8, 4))
    logits = refiner(torch.rand(2, 1, 3, 4, 2), _features())
    assert logits.shape == (2, 1, 12, 16, 8)


def test_gradients_reach_every_guide_and_the_stem():
    torch.manual_seed(0)
    refiner = MaskRefiner(feature_channels=(16, 12, 8), widths=(8, 8, 4))
    logits = refiner(torch.rand(2, 1, 3, 4, 2), _features())
    target = torch.zeros_like(logits)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    for name in ("stem.weight", "guides.0.weight", "guides.1.weight", "guides.2.weight", "head.2.weight"):
        grad = dict(refiner.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_the_decoder_features_change_the_output():
    torch.manual_seed(0)
    refiner = MaskRefiner(feature_channels=(16, 12, 8), widths=(8, 8, 4))
    m = torch.rand(1, 1, 3, 4, 2)
    a = refiner(m, _features(batch=1))
    b = refiner(m, [f * 0 for f in _features(batch=1)])
    assert not torch.allclose(a, b)


def test_mismatched_features_are_refused():
    refiner = MaskRefiner(feature_channels=(16, 12, 8), widths=(8, 8, 4))
    feats = _features()
    with pytest.raises(ValueError, match="feature 2"):
        refiner(torch.rand(2, 1, 3, 4, 2), [feats[0], feats[0], feats[2]])
    with pytest.raises(ValueError, match="one width per feature"):
        MaskRefiner(feature_channels=(16, 12), widths=(8, 8, 4))
