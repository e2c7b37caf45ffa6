"""HA-GAN (baselines/hagan.py, hagan_stage.py): the networks' shapes and size, and one iteration updating every
network."""

from __future__ import annotations

import pytest
import torch

from tumorgen.baselines.hagan import build_hagan, check_window_shape, condition
from tumorgen.baselines.hagan_stage import hagan_optimizer, hagan_step
from tumorgen.config import HAGANConfig, load_config


# ------------------------------------------------------------------------------------------ networks


def test_the_networks_on_an_ibsi_window_have_the_papers_shapes_and_a_cpu_size():
    cfg = HAGANConfig()
    model = build_hagan((32, 32, 32), cfg)
    count = sum(p.numel() for p in model.parameters())
    assert 3e5 < count < 3e6, count  # paper: ~ 10^8; here a CPU budget
    g = model.generator
    cond = condition(torch.zeros(2, 1, 32, 32, 32), torch.zeros(2, 1, 32, 32, 32), torch.zeros(2, 1, 32, 32, 32))
    z = torch.randn(2, cfg.latent_dim)
    high, low = g(z, cond, start=3)
    assert high.shape == (2, 1, 8, 32, 32), "one of 4 sub-volumes at full resolution"
    assert low.shape == (2, 1, 16, 16, 16), "the whole window at r = 2"
    assert g(z, cond).shape == (2, 1, 32, 32, 32), "inference: every sub-volume at once"
    assert high.abs().max() <= 1 and low.abs().max() <= 1  # tanh
    assert g.possible_starts == 13
    assert model.encoder_high(high).shape == (2, 2 * cfg.channels, 4, 16, 16), "E^H: a slab of the feature map"
    feats = torch.zeros(2, 2 * cfg.channels, 16, 16, 16)
    assert model.encoder_global(feats).shape == (2, cfg.latent_dim), "E^G: back to the noise vector"
    logit = model.discriminate(torch.zeros(2, 3, 8, 32, 32), torch.zeros(2, 3, 16, 16, 16), torch.zeros(2, 1))
    assert logit.shape == (2, 1)


def test_windows_the_generator_cannot_tile_are_refused():
    assert check_window_shape((32, 32, 32), HAGANConfig()) is None
    assert "divisible by 4 x hagan.low_res_factor" in check_window_shape((20, 32, 32), HAGANConfig())
    assert "hagan.sub_volumes" in check_window_shape((16, 16, 16), HAGANConfig(sub_volumes=3))
    with pytest.raises(ValueError, match="divisible"):
        build_hagan((24, 24, 24), HAGANConfig(low_res_factor=4))


def test_one_iteration_updates_all_five_networks_and_leaves_them_trainable():
    torch.manual_seed(0)
    cfg = load_config("debug")
    model = build_hagan((16, 16, 16), cfg.hagan)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    box = torch.zeros(2, 1, 16, 16, 16)
    box[:, :, 4:12, 4:12, 4:12] = 1
    batch = {"image": x, "box": box, "mask": box.clone()}
    noise = (torch.randn(2, cfg.hagan.latent_dim), torch.randn(2, cfg.hagan.latent_dim))
    losses = hagan_step(model, hagan_optimizer(model, cfg), batch, start=2, noise=noise)
    assert set(losses) == {"loss", "d", "g", "e_high", "e_global"} and all(torch.isfinite(v) for v in losses.values())
    for name in ("generator.", "disc_high.", "disc_low.", "encoder_high.", "encoder_global."):
        changed = [k for k, v in model.state_dict().items() if k.startswith(name) and not torch.equal(v, before[k])]
        assert changed, f"{name} was not updated"
    assert all(p.requires_grad for p in model.parameters())
