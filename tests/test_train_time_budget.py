"""`train.max_minutes`: the fit loop stops by wall time like a finished run, and `--resume` continues it exactly."""

from __future__ import annotations

import pytest
import torch

from tumorgen.config import apply_overrides, load_config
from tumorgen.errors import TumorGenError
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import read_metrics
from tumorgen.training.vae_stage import train_vae


def _debug(*overrides):
    return apply_overrides(load_config("debug"), list(overrides))


def test_time_budget_stops_after_one_step_and_resume_continues_exactly(tiny_prep, tmp_path):
    # a budget of ~0 s: the loop must stop at the first step boundary, not before the first step
    tiny = _debug("vae_train.steps=1000", "vae_train.max_minutes=1e-9", "vae_train.checkpoint_every=500")
    cut = train_vae(data=tiny_prep, out=tmp_path / "cut", config=tiny, progress=False)
    assert cut.step == 1 and cut.stopped_by_time and cut.train_seconds > 0
    payload = load_checkpoint(tmp_path / "cut")
    assert payload["step"] == 1 and payload["extra"]["stopped_by_time"] is True
    assert payload["extra"]["train_seconds"] > 0 and payload["extra"]["scale_factor"] > 0
    rows = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert rows[-1]["step"] == 1 and rows[-1]["stopped_by_time"] is True
    assert (tmp_path / "cut" / "loss_curve.png").exists()

    # resumed without a limit (and fewer total steps) it ends like an uninterrupted 3-step run
    full = train_vae(data=tiny_prep, out=tmp_path / "full", config=_debug("vae_train.steps=3"), progress=False)
    more = _debug("vae_train.steps=3", "vae_train.max_minutes=none")
    resumed = train_vae(data=tiny_prep, out=tmp_path / "cut", config=more, resume=True, progress=False)
    assert resumed.step == full.step == 3 and not resumed.stopped_by_time and not full.stopped_by_time
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert b["extra"]["stopped_by_time"] is False
    assert b["extra"]["train_seconds"] > payload["extra"]["train_seconds"], "time adds up over resumed calls"
    steps = [r["step"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")]
    assert steps == [1, 2, 3]


def test_max_minutes_must_be_positive():
    with pytest.raises(TumorGenError, match="max_minutes must be positive"):
        _debug("train.max_minutes=0")
    assert _debug("train.max_minutes=2.5").train.max_minutes == 2.5
    assert _debug("train.max_minutes=none").train.max_minutes is None
