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

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tumorgen.config import apply_overrides, load_config
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import read_metrics

STEPS = 8  # enough that every kill leaves steps to run, even on a fast machine
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # same float reduction order in every process


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tumorgen", *args, "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, **ONE_THREAD}


def _temporaries(ckpt_dir: Path) -> list[str]:
    return [n for n in os.listdir(ckpt_dir) if ".tmp" in n] if ckpt_dir.exists() else []


def _run_with_kills(argv_fresh: list[str], argv_resume: list[str], run: Path, *, kills: int,
                    rng: random.Random) -> list[str]:
    """Start, SIGKILL at a random moment, resume, ... `kills` times, then let the last resume finish.

    Returns what each kill hit ("mid-write" or "mid-step") and the step of the checkpoint it left.
    """
    ckpt_dir = run / "checkpoints"
    hits = []
    for attempt in range(kills + 1):
        argv = argv_fresh if attempt == 0 else argv_resume
        proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt == kills:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()
            break
        deadline = time.monotonic() + 240
        while not (ckpt_dir / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        mode = rng.choice(["mid-write", "mid-step"])
        if mode == "mid-write":  # fire as soon as a checkpoint's temporary file shows up
            while not _temporaries(ckpt_dir) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
        else:  # fire early in a step: just after this process wrote its next checkpoint (a random
            # wall-clock delay instead let a fast machine finish the run before the kill)
            seen = (ckpt_dir / "last.pt").stat().st_mtime_ns
            while (ckpt_dir / "last.pt").stat().st_mtime_ns == seen and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode != 0, f"attempt {attempt} finished before its kill; make the run longer"
        payload = load_checkpoint(ckpt_dir / "last.pt")  # the newest checkpoint always loads
        read_metrics(run / "metrics.jsonl")
        hits.append(f"{mode}@{payload['step']}")
    return hits


def _assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_checkpoint(a), load_checkpoint(b)
    assert left["step"] == right["step"] == STEPS
    for part in ("model", "ema"):
        assert left[part].keys() == right[part].keys()
        for key in left[part]:
            assert torch.equal(left[part][key], right[part][key]), f"{part}.{key} differs after kills and resumes"


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
    fresh = _cli("train-vae", *common, "--config", "debug", "--set", "vae_train.checkpoint_every=1")
    hits = _run_with_kills(fresh, _cli("train-vae", *common, "--resume"), run, kills=1, rng=random.Random(6))  # one kill: train below takes three
    print("train-vae kills:", hits)
    _assert_same_weights(run / "checkpoints" / "last.pt", reference / "vae" / "checkpoints" / "last.pt")
    _assert_metrics_once_per_step(run)


@pytest.mark.slow
def test_train_killed_and_resumed_ends_with_the_uninterrupted_weights(reference, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(reference / "prep"), "--out", str(run), "--steps", str(STEPS)]
    fresh = _cli("train", *common, "--vae", str(reference / "vae"), "--config", "debug",
                 "--set", "train.checkpoint_every=1")
    hits = _run_with_kills(fresh, _cli("train", *common, "--resume"), run, kills=3, rng=random.Random(7))
    print("train kills:", hits)
    assert any(h.startswith("mid-write") for h in hits) and any(h.startswith("mid-step") for h in hits), hits
    _assert_same_weights(run / "checkpoints" / "last.pt", reference / "run" / "checkpoints" / "last.pt")
    _assert_metrics_once_per_step(run)
    assert _temporaries(run / "checkpoints") == [], "a resume clears the temporary files that kills left"
