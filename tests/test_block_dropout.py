"""Dropout in the U-Net's residual blocks (`flow.dropout`): where it acts, how much it drops, that eval
mode and synthesis never see it, that its masks repeat with their generator, and a toy run that trains
with it repeatably."""

from __future__ import annotations

import pytest
import torch

from tumorgen.models.block_dropout import attach_block_dropout


def _unet(lite: bool):
    from tumorgen.models.velocity_unet import build_velocity_unet

    torch.manual_seed(0)
    unet = build_velocity_unet(latent_channels=2, channels=(8, 8), attention_levels=(False, False),
                               num_head_channels=8, norm_num_groups=4, in_channels=6, lite=lite)
    with torch.no_grad():  # a new U-Net's last convolutions start at zero: give every weight a value
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape) * 0.2)
    return unet


@pytest.mark.parametrize("lite", [True, False])
def test_dropout_reaches_every_residual_block_and_drops_its_share(lite):
    unet = _unet(lite)
    blocks = [m for m in unet.modules() if type(m).__name__ == "DiffusionUNetResnetBlock"]
    assert attach_block_dropout(unet, 0.0, generator=torch.Generator()) == 0
    assert attach_block_dropout(unet, 0.25, generator=torch.Generator().manual_seed(1)) == len(blocks) > 0
    seen = []
    for block in blocks:  # registered after the dropout hook, so it sees what the convolution gets
        block.conv2.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    unet.train()
    unet(torch.randn(2, 6, 8, 8, 8), torch.full((2,), 0.5))
    assert len(seen) == len(blocks)
    zeros = torch.cat([(h == 0).flatten() for h in seen]).float().mean().item()
    assert zeros == pytest.approx(0.25, abs=0.02)


def test_eval_mode_is_untouched_and_training_masks_repeat_with_their_seed():
    plain, dropped = _unet(True), _unet(True)
    gen = torch.Generator().manual_seed(5)
    attach_block_dropout(dropped, 0.3, generator=gen)
    x, t = torch.randn(2, 6, 8, 8, 8), torch.full((2,), 0.3)
    plain.eval(), dropped.eval()
    assert torch.equal(plain(x, t), dropped(x, t))
    dropped.train()
    gen.manual_seed(5)
    first = dropped(x, t)
    second = dropped(x, t)
    gen.manual_seed(5)
    assert torch.equal(dropped(x, t), first)
    assert not torch.equal(first, second)
    plain.train()
    assert not torch.equal(first, plain(x, t))


def test_bad_dropout_is_refused():
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.errors import TumorGenError

    with pytest.raises(ValueError, match="dropout must be in"):
        attach_block_dropout(_unet(True), 1.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="no DiffusionUNetResnetBlock"):
        attach_block_dropout(torch.nn.Linear(2, 2), 0.1, generator=torch.Generator())
    with pytest.raises(TumorGenError, match="flow.dropout must be in"):
        apply_overrides(load_config("ibsi"), ["flow.dropout=1.5"])


@pytest.mark.slow
def test_a_toy_run_with_dropout_trains_repeatably_and_differs_from_one_without(tmp_path, one_thread):
    from conftest import assert_same_tensors
    from toy_flow import toy_flow

    toy = toy_flow(tmp_path, ("train.steps=6", "train.batch_size=4", "train.checkpoint_every=3"))
    dropped = toy.train(tmp_path / "a", ("flow.dropout=0.2",))
    again, plain = toy.train(tmp_path / "b", ("flow.dropout=0.2",)), toy.train(tmp_path / "c", ("flow.dropout=0",))
    assert_same_tensors(dropped, again, what="two runs with dropout")
    assert any(not torch.equal(dropped[k], plain[k]) for k in dropped)
    # a crash right after step 3: the run folder as it was then, resumed, ends on the same weights
    assert_same_tensors(dropped, toy.resume_after_crash(tmp_path / "a", 3, ("flow.dropout=0.2",)),
                        what="a run with dropout resumed after step 3")
