"""`tumorgen demo --train --fast` end to end through the CLI, its reuse on a second run, and the demo's small pieces."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tumorgen.cli import main
from tumorgen.demo.plan import plan_demo
from tumorgen.demo.quality import summarize
from tumorgen.evaluation.tumor_measures import connected_components, noise_inside_vs_outside
from tumorgen.io.files import sha256_file


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    """Run the fast demo twice in one folder; return the folder, both outputs and both wall times."""
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    runs = []
    for _ in range(2):
        started = time.perf_counter()
        code = main(["demo", "--train", "--fast", "--out", str(out), "--no-progress", "--seed", "3"])
        runs.append((code, time.perf_counter() - started))
        if _ == 0:
            first_checkpoints = {name: sha256_file(out / "runs" / name / "checkpoints" / "last.pt")
                                 for name in ("vae", "tumorgen")}
    return out, runs, first_checkpoints


@pytest.mark.slow
def test_fast_demo_writes_report_montage_and_niftis(fast_demo, capsys):
    out, runs, _ = fast_demo
    assert [code for code, _ in runs] == [0, 0]
    report = (out / "report.md").read_text()
    for heading in ("## What ran", "## Training", "## Tumors: real phantoms vs synthetic", "tumorgen train-vae"):
        assert heading in report
    png = (out / "montage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    pets = sorted((out / "synthetic").glob("*_pet.nii.gz"))
    masks = sorted((out / "synthetic").glob("*_mask.nii.gz"))
    assert len(pets) == len(masks) == 2  # 2 healthy phantoms x 1 sample
    state = json.loads((out / "demo.json").read_text())
    assert state["plan"]["preset"] == "debug" and state["plan"]["seed"] == 3
    synthetic = state["quality"]["synthetic"]["samples"]
    assert all(s["mask_outside_box"] == 0 for s in synthetic), "the mask must lie inside its box"
    assert state["quality"]["vae_run"]["step"] == 2 and state["quality"]["tumorgen_run"]["step"] == 2


@pytest.mark.slow
def test_second_run_reuses_everything_and_is_much_faster(fast_demo):
    out, runs, first_checkpoints = fast_demo
    (_, first), (_, second) = runs
    assert second < 0.6 * first, f"second run took {second:.1f}s after {first:.1f}s"
    stages = {s["name"]: s for s in json.loads((out / "demo.json").read_text())["stages"]}
    for name in ("phantoms", "prepare", "train VAE", "train TumorGen", "synthesize"):
        assert stages[name]["reused"], name
    for name, sha in first_checkpoints.items():  # nothing was trained again
        assert sha256_file(out / "runs" / name / "checkpoints" / "last.pt") == sha


def test_demo_refuses_a_folder_of_another_kind(tmp_path, capsys):
    (tmp_path / "stranger.txt").write_text("not a demo")
    assert main(["demo", "--train", "--fast", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a demo folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stranger.txt"]


def test_demo_refuses_to_mix_fast_and_full_demos(tmp_path, capsys):
    (tmp_path / "demo.json").write_text(json.dumps({"plan": {"preset": "debug", "tumor_cases": 5, "healthy_cases": 2,
                                                             "size": 32, "seed": 0}}))
    assert main(["demo", "--train", "--out", str(tmp_path)]) == 2
    assert "preset='debug', not 'phantom'" in capsys.readouterr().err


def test_demo_refuses_a_budget_too_small_to_train(tmp_path, capsys):
    assert main(["demo", "--train", "--out", str(tmp_path / "d"), "--minutes", "1.5"]) == 2
    assert "leaves no time to train" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_training_flags_without_train_are_refused(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--minutes", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--minutes" in err and "--train" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_budget_split_gives_training_all_but_the_overhead():
    plan = plan_demo(minutes=12.0)
    assert plan.preset == "phantom" and plan.size == 64
    assert plan.vae_minutes + plan.train_minutes == pytest.approx(11.0)
    assert plan.train_minutes > plan.vae_minutes > 0
    assert plan_demo(fast=True).preset == "debug"


def test_connected_components_uses_26_connectivity():
    mask = np.zeros((8, 8, 8), dtype=np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1  # corner-touching: one tumor
    mask[6, 6, 6] = 1
    assert connected_components(mask) == 2
    assert connected_components(np.zeros((4, 4, 4))) == 0


def test_noise_ratio_is_one_for_continuous_grain_and_low_for_a_smooth_box():
    rng = np.random.default_rng(0)
    image = 2.0 + 0.2 * rng.standard_normal((40, 40, 40))
    mask = np.zeros(image.shape, dtype=np.uint8)
    box = (12, 12, 12, 28, 28, 28)
    same = noise_inside_vs_outside(image, mask, box)
    assert same["noise_ratio"] == pytest.approx(1.0, abs=0.1)
    smooth = image.copy()
    smooth[12:28, 12:28, 12:28] = 2.0  # a pasted noiseless region
    assert noise_inside_vs_outside(smooth, mask, box)["noise_ratio"] < 0.2


def test_summarize_skips_missing_values():
    rows = [{"v": 1.0}, {"v": None}, {"v": 3.0}]
    assert summarize(rows, ["v"]) == {"v": {"mean": 2.0, "sd": 1.0, "n": 2}}


def _fake_run(run_dir, *, step: int, seconds: float):
    import torch

    from tumorgen.training.checkpoint import save_checkpoint

    (run_dir / "checkpoints").mkdir(parents=True)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", kind="vae", step=step, config={},
                    model=torch.nn.Linear(1, 1), extra={"train_seconds": seconds, "stopped_by_time": True})


@pytest.mark.parametrize("spent_seconds, expect", [(60.0, "resume"), (200.0, "reuse")])
def test_training_stage_resumes_with_the_time_left_or_is_reused(tmp_path, spent_seconds, expect):
    from types import SimpleNamespace

    from tumorgen.demo.stages import _train

    plan = plan_demo(minutes=12.0)
    run_dir = tmp_path / "vae"
    _fake_run(run_dir, step=10, seconds=spent_seconds)
    calls = []

    def train_fn(*, config, resume):
        calls.append((config.vae_train.max_minutes, resume))
        return SimpleNamespace(step=20, stopped_by_time=True, last_losses={"loss": 0.5})

    record = _train(kind="train VAE", field="vae_train", run_dir=run_dir, budget=3.0, plan=plan, say=lambda _: None,
                    train_fn=train_fn, command="")
    if expect == "reuse":  # 200 s spent of a 180 s budget
        assert record.reused and calls == []
    else:  # 60 s spent: 2 of the 3 minutes are left
        assert not record.reused and calls == [(pytest.approx(2.0, abs=1e-3), True)]


def test_training_stage_restarts_a_run_interrupted_before_its_first_checkpoint(tmp_path):
    from types import SimpleNamespace

    from tumorgen.demo.stages import _train

    run_dir = tmp_path / "vae"
    (run_dir / "checkpoints").mkdir(parents=True)  # claimed, then killed: no last.pt
    calls = []

    def train_fn(*, config, resume):
        calls.append(resume)
        assert not run_dir.exists(), "the half-made folder must be gone before a fresh start"
        return SimpleNamespace(step=5, stopped_by_time=False, last_losses={"loss": 0.5})

    _train(kind="train VAE", field="vae_train", run_dir=run_dir, budget=3.0, plan=plan_demo(minutes=12.0),
           say=lambda _: None, train_fn=train_fn, command="")
    assert calls == [False]
