"""Training survives SIGKILL: kill `tumorgen train-vae` / `tumorgen train` at seeded random moments,
resume with --resume each time, reach the final step, and end with exactly the weights of a run that was
never interrupted (CPU, same seed).

Checkpoints are written every step so kills land both mid-step and mid-checkpoint-write: some kills
wait for a checkpoint's temporary file to appear in checkpoints/ and fire at once. After every kill the
newest checkpoint must load and metrics.jsonl must parse; after the final resume metrics.jsonl holds
each step exactly once. Kills start once the first checkpoint exists (see docs/RELIABILITY.md for the
startup window).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import assert_same_tensors, checkpoint_temporaries, cli_argv, run_with_kills
from tumorgen.config import apply_overrides, load_config
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import read_metrics

STEPS = 8  # enough that every kill leaves steps to run, even on a fast machine


def _assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_checkpoint(a), load_checkpoint(b)
    assert left["step"] == right["step"] == STEPS
    for part in ("model", "ema"):
        assert_same_tensors(left[part], right[part], what=f"{part} after kills and resumes")


def _assert_metrics_once_per_step(run: Path) -> None:
    assert [row["step"] for row in read_metrics(run / "metrics.jsonl")] == list(range(1, STEPS + 1))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """Uninterrupted VAE and TumorGen runs with the same config, trained in-process on one thread."""
    from conftest import write_tiny_prep
    from tumorgen.training.tumorgen_stage import train_tumorgen
    from tumorgen.training.vae_stage import train_vae

    root = tmp_path_factory.mktemp("crash_safe")
    prep = write_tiny_prep(root / "prep")
    config = apply_overrides(load_config("debug"), [f"vae_train.steps={STEPS}", f"train.steps={STEPS}",
                                                    "vae_train.checkpoint_every=1", "train.checkpoint_every=1"])
    train_vae(data=prep, out=root / "vae", config=config, progress=False)
    train_tumorgen(data=prep, vae_run=root / "vae", out=root / "run", config=config, progress=False)
    return root


@pytest.mark.slow
def test_train_vae_killed_and_resumed_ends_with_the_uninterrupted_weights(reference, tmp_path):
    run = tmp_path / "vae"
    common = ["--data", str(reference / "prep"), "--out", str(run), "--steps", str(STEPS)]
    fresh = cli_argv("train-vae", *common, "--config", "debug", "--set", "vae_train.checkpoint_every=1")
    resume = cli_argv("train-vae", *common, "--resume")
    hits = run_with_kills(fresh, resume, run, kills=1, rng=random.Random(6))  # one kill: train below takes three
    print("train-vae kills:", hits)
    _assert_same_weights(run / "checkpoints" / "last.pt", reference / "vae" / "checkpoints" / "last.pt")
    _assert_metrics_once_per_step(run)


@pytest.mark.slow
def test_train_killed_and_resumed_ends_with_the_uninterrupted_weights(reference, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(reference / "prep"), "--out", str(run), "--steps", str(STEPS)]
    fresh = cli_argv("train", *common, "--vae", str(reference / "vae"), "--config", "debug",
                     "--set", "train.checkpoint_every=1")
    hits = run_with_kills(fresh, cli_argv("train", *common, "--resume"), run, kills=3, rng=random.Random(7))
    print("train kills:", hits)
    assert any(h.startswith("mid-write") for h in hits) and any(h.startswith("mid-step") for h in hits), hits
    _assert_same_weights(run / "checkpoints" / "last.pt", reference / "run" / "checkpoints" / "last.pt")
    _assert_metrics_once_per_step(run)
    assert checkpoint_temporaries(run / "checkpoints") == [], "a resume clears the temporary files that kills left"
