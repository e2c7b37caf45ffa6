"""Training: exact resume for both stages, the 0-step pretrained-VAE path, and one end-to-end CLI run."""

from __future__ import annotations

import json

import pytest
import torch

from tumorgen.cli import main
from tumorgen.config import apply_overrides, load_config
from tumorgen.errors import TumorGenError
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import read_metrics
from tumorgen.training.run_folder import load_run, load_vae
from tumorgen.training.tumorgen_stage import train_tumorgen
from tumorgen.training.vae_stage import train_vae


def _debug(*overrides):
    return apply_overrides(load_config("debug"), list(overrides))


def _losses_by_step(run):
    return {row["step"]: {k: v for k, v in row.items() if k not in ("sec_per_step", "peak_mem_mb")}
            for row in read_metrics(run / "metrics.jsonl")}


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    from conftest import write_tiny_prep

    root = tmp_path_factory.mktemp("vae")
    prep = write_tiny_prep(root / "prep")
    train_vae(data=prep, out=root / "vae", config=_debug("vae_train.steps=2"), progress=False)
    return prep, root / "vae"


def test_vae_resume_matches_an_uninterrupted_run(tiny_prep, tmp_path):
    cfg = _debug("vae_train.steps=4", "vae_train.checkpoint_every=2")
    full = train_vae(data=tiny_prep, out=tmp_path / "full", config=cfg, progress=False)
    train_vae(data=tiny_prep, out=tmp_path / "cut", config=_debug("vae_train.steps=2"), progress=False)
    resumed = train_vae(data=tiny_prep, out=tmp_path / "cut", config=cfg, resume=True, progress=False)
    assert resumed.step == full.step == 4
    full_losses, cut_losses = _losses_by_step(tmp_path / "full"), _losses_by_step(tmp_path / "cut")
    assert sorted(cut_losses) == [1, 2, 3, 4], "metrics of the resumed run continue without gaps"
    for step in (1, 2):  # same seed, same draws
        assert cut_losses[step] == full_losses[step]
    for step in (3, 4):  # the resumed steps
        assert cut_losses[step] == full_losses[step]
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    _assert_same_weights(a["model"], b["model"])
    _assert_same_weights(a["ema"], b["ema"])
    assert a["extra"]["scale_factor"] == b["extra"]["scale_factor"] > 0
    # the loss moved: an untrained VAE would give the same L1 at every step
    assert full_losses[4]["l1"] < full_losses[1]["l1"]
    kept = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert kept == ["last.pt", "step_0000002.pt", "step_0000004.pt"]


def test_pretrained_vae_with_zero_steps_only_calibrates(vae_run, tmp_path):
    prep, vae_dir = vae_run
    weights = tmp_path / "weights.pt"
    torch.save(load_checkpoint(vae_dir)["ema"], weights)
    out = tmp_path / "calibrated"
    train_vae(data=prep, out=out, config=_debug("vae_train.steps=0", f"vae.weights={weights}"), progress=False)
    payload = load_checkpoint(out, expected_kind="vae")
    assert payload["step"] == 0 and payload["extra"]["scale_factor"] > 0
    _assert_same_weights(payload["model"], torch.load(weights, weights_only=True))
    with pytest.raises(TumorGenError, match="no vae.weights"):
        train_vae(data=prep, out=tmp_path / "nothing", config=_debug("vae_train.steps=0"), progress=False)


def test_existing_run_folder_is_refused_without_resume(vae_run):
    prep, vae_dir = vae_run
    with pytest.raises(TumorGenError, match="already holds files"):
        train_vae(data=prep, out=vae_dir, config=_debug(), progress=False)


@pytest.mark.slow
def test_tumorgen_resume_matches_an_uninterrupted_run(vae_run, tmp_path):
    prep, vae_dir = vae_run
    cfg = _debug("train.steps=4", "train.checkpoint_every=2")
    train_tumorgen(data=prep, vae_run=vae_dir, out=tmp_path / "full", config=cfg, progress=False)
    train_tumorgen(data=prep, vae_run=vae_dir, out=tmp_path / "cut", config=_debug("train.steps=2"), progress=False)
    train_tumorgen(data=prep, vae_run=vae_dir, out=tmp_path / "cut", config=cfg, resume=True, progress=False)
    full_losses, cut_losses = _losses_by_step(tmp_path / "full"), _losses_by_step(tmp_path / "cut")
    assert cut_losses[3] == full_losses[3] and cut_losses[4] == full_losses[4]
    # the refiner runs on every flow.refiner_every=2-th step, counted from 1: steps 2 and 4, so logged
    # steps (multiples of log_every) show its loss
    assert full_losses[4]["rec"] > 0 and full_losses[3]["rec"] == 0, "refiner runs every flow.refiner_every=2 steps"
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    _assert_same_weights(a["model"], b["model"])
    _assert_same_weights(a["ema"], b["ema"])
    assert any(k.startswith("refiner.") for k in a["model"]) and not any(k.startswith("vae") for k in a["model"])


@pytest.mark.slow
def test_cli_end_to_end_train_vae_then_train_then_load_run(tiny_prep, tmp_path, capsys):
    vae_dir, run_dir = tmp_path / "vae", tmp_path / "run"
    assert main(["train-vae", "--data", str(tiny_prep), "--out", str(vae_dir), "--config", "debug",
                 "--steps", "2", "--no-progress"]) == 0
    assert "tumorgen train --data" in capsys.readouterr().out
    assert main(["train", "--data", str(tiny_prep), "--vae", str(vae_dir), "--out", str(run_dir), "--config",
                 "debug", "--steps", "3", "--set", "ablate=no_bapmg", "--no-progress"]) == 0
    assert f"--model {run_dir}" in capsys.readouterr().out
    for run, kind in ((vae_dir, "vae"), (run_dir, "tumorgen")):
        rows = read_metrics(run / "metrics.jsonl")
        assert rows and all("step" in r and "loss" in r and "peak_mem_mb" in r for r in rows)
        assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (run / "checkpoints" / "last.pt").exists() and list((run / "checkpoints").glob("step_*.pt"))
        assert load_checkpoint(run, expected_kind=kind)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["steps"] == 3 and config["ablate"] == ["no_bapmg"]
    data = json.loads((run_dir / "data.json").read_text())
    assert data["suv_max"] == 10.0 and data["size"] == [16, 16, 16] and len(data["box_sizes_mm"]) == 3
    assert all(0 < v <= 16 for box in data["box_sizes_voxels"] for v in box)

    loaded = load_run(run_dir)
    assert loaded.step == 3 and loaded.config.ablate == ("no_bapmg",)
    _, scale, _, _ = load_vae(vae_dir)
    assert loaded.scale_factor == scale
    assert not any(p.requires_grad for p in loaded.models.unet.parameters())
    with torch.no_grad():
        v = loaded.models.unet(torch.zeros(1, 10, 4, 4, 4), torch.full((1,), 0.5))
    assert v.shape == (1, 5, 4, 4, 4)

    # resuming from the CLI continues the same run
    assert main(["train", "--data", str(tiny_prep), "--out", str(run_dir), "--resume", "--steps", "4",
                 "--no-progress"]) == 0
    assert load_checkpoint(run_dir)["step"] == 4
    # errors a user can cause: one sentence, exit code 2
    assert main(["train", "--data", str(tiny_prep), "--vae", str(run_dir), "--out", str(tmp_path / "x"),
                 "--config", "debug"]) == 2
    assert "'tumorgen' checkpoint where a 'vae'" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_prep), "--vae", str(tiny_prep), "--out", str(tmp_path / "y"),
                 "--config", "debug"]) == 2
    assert "not a train-vae run folder" in capsys.readouterr().err
    with pytest.raises(TumorGenError, match="not a TumorGen run folder"):
        load_run(vae_dir)
