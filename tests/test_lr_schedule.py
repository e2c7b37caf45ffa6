"""`train.lr_schedule`: the cosine decay's values, every parameter group following its own base rate,
the config's refusal, and a toy run whose logged rate falls to zero and resumes on the same curve."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tumorgen.training.lr_schedule import apply_lr, lr_factor


def test_cosine_starts_at_the_base_rate_halves_midway_and_ends_at_zero():
    assert lr_factor("cosine", 0, 100) == 1.0
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0)
    assert lr_factor("cosine", 150, 100) == pytest.approx(0.0)  # past the end: stays at zero
    assert all(lr_factor("constant", s, 100) == 1.0 for s in (0, 50, 100))
    with pytest.raises(ValueError, match="lr schedule must be one of"):
        lr_factor("linear", 0, 10)


def test_each_group_follows_its_own_base_rate():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam([{"params": a.parameters(), "lr": 1e-3}, {"params": b.parameters(), "lr": 4e-3}])
    apply_lr(optimizer, "cosine", 50, 100)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-4, 2e-3])
    apply_lr(optimizer, "cosine", 0, 100)  # from the remembered base, not from the last decayed rate
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-3, 4e-3])


def test_the_config_refuses_an_unknown_schedule():
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.errors import TumorGenError

    with pytest.raises(TumorGenError, match="train.lr_schedule must be"):
        apply_overrides(load_config("debug"), ["train.lr_schedule=step"])


@pytest.mark.slow
def test_a_cosine_run_logs_its_decay_and_a_resumed_one_follows_the_same_curve(tmp_path, one_thread):
    from conftest import assert_same_tensors
    from toy_flow import toy_flow

    toy = toy_flow(tmp_path, ("train.steps=8", "train.batch_size=2", "train.lr_schedule=cosine",
                              "train.log_every=2", "train.checkpoint_every=4"))
    whole = toy.train(tmp_path / "whole")
    logged = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    # the rate logged after update k (1-based) is the one update k used: base * factor(k - 1)
    assert [r["lr"] for r in logged] == pytest.approx([toy.config.train.lr * lr_factor("cosine", r["step"] - 1, 8)
                                                       for r in logged])
    assert logged[-1]["lr"] < 0.05 * toy.config.train.lr
    # a crash right after step 4: the run folder as it was then, resumed with the same command
    assert_same_tensors(whole, toy.resume_after_crash(tmp_path / "whole", 4),
                        what="a cosine run resumed after step 4")
