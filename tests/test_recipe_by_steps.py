"""The training recipe is bounded by steps, not wall time, so it is reproducible: the same seed gives the
same checkpoints on any machine, and a run killed with SIGKILL and resumed ends with the same weights.

- No shipped preset sets `max_minutes` (a wall-time budget trains a different model on every machine);
  `--set train.max_minutes=5` still works for whoever wants one; `--config` help names every preset.
- The debug recipe (train-vae, then train) run twice, once in this process and once in a fresh one,
  gives bit-identical model, EMA and optimizer tensors for both stages.
- `tumorgen train` (3 kills) and `tumorgen train-vae` (1 kill) with a checkpoint every 3 steps,
  killed at seeded random moments anywhere between checkpoints and resumed with --resume, end with
  the model and EMA tensors of an uninterrupted run, and metrics.jsonl holds every step once. The two
  narrowest windows (between step_N.pt and last.pt; half a metrics line) are also rebuilt on purpose.
test_crash_safe_training.py kills at checkpoint boundaries with a checkpoint every step; here most
kills fall between checkpoints, so a resume redoes steps that were already logged.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from conftest import assert_same_tensors, checkpoint_temporaries, cli_argv, cli_env, run_with_kills, write_tiny_prep
from tumorgen.cli import build_parser, main
from tumorgen.config import PRESETS, apply_overrides, load_config
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import read_metrics
from tumorgen.training.run_setup import resolve_config

# A checkpoint every 3 steps; an "anywhere" kill fires within a process's first 4 checkpoint intervals
# (12 steps), so 1 kill in 24 VAE steps and 3 kills in 40 steps always leave steps to run.
VAE_STEPS, STEPS = 24, 40
OVERRIDES = (f"vae_train.steps={VAE_STEPS}", "vae_train.checkpoint_every=3",
             f"train.steps={STEPS}", "train.checkpoint_every=3")


def test_every_shipped_preset_is_bounded_by_steps_alone():
    shipped = sorted(f.name.removesuffix(".toml") for f in resources.files("tumorgen").joinpath("configs").iterdir()
                     if f.name.endswith(".toml"))
    assert shipped == sorted(PRESETS), "every preset file is listed in tumorgen.config.PRESETS"
    for name in PRESETS:
        cfg = load_config(name)
        assert cfg.vae_train.max_minutes is None and cfg.train.max_minutes is None, f"preset {name} sets max_minutes"


def test_max_minutes_is_still_a_command_line_override(tmp_path):
    args = build_parser().parse_args(["train", "--data", "prep", "--out", str(tmp_path / "run"), "--config", "ibsi",
                                      "--set", "train.max_minutes=5"])
    cfg = resolve_config(out=Path(args.out), config=args.config, overrides=args.overrides, steps=args.steps,
                         device=args.device, resume=args.resume, stage_field="train")
    assert cfg.train.max_minutes == 5.0 and cfg.vae_train.max_minutes is None
    assert cfg.train.steps == load_config("ibsi").train.steps, "the step budget stays"


def test_training_commands_list_every_preset_in_their_config_help(capsys):
    for command in ("train-vae", "train", "train-baseline", "train-seg"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
        assert f"preset ({', '.join(PRESETS)})" in text, command


def _assert_same_optimizer(a: dict, b: dict, *, what: str) -> None:
    assert a["param_groups"] == b["param_groups"], f"{what}: optimizer hyperparameters differ"
    assert a["state"].keys() == b["state"].keys(), f"{what}: optimizer state of different parameters"
    for index in a["state"]:
        assert_same_tensors(a["state"][index], b["state"][index], what=f"{what}.optimizer.state[{index}]")


@pytest.mark.slow
def test_debug_recipe_twice_gives_identical_checkpoints(tmp_path, one_thread):
    """Once through `main` in this process, once through `python -m tumorgen` in a fresh one: a second
    process also catches randomness that is not seeded (global RNG, hash order), not only its reuse."""
    prep = write_tiny_prep(tmp_path / "prep")
    for root, in_process in ((tmp_path / "a", True), (tmp_path / "b", False)):
        for argv in (["train-vae", "--data", str(prep), "--out", str(root / "vae"), "--config", "debug"],
                     ["train", "--data", str(prep), "--vae", str(root / "vae"), "--out", str(root / "run"),
                      "--config", "debug"]):
            if in_process:
                assert main([*argv, "--no-progress"]) == 0
            else:
                done = subprocess.run(cli_argv(*argv), env=cli_env(), capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, done.stderr
    for stage in ("vae", "run"):
        a, b = load_checkpoint(tmp_path / "a" / stage), load_checkpoint(tmp_path / "b" / stage)
        assert a["step"] == b["step"] > 0
        for part in ("model", "ema"):
            assert_same_tensors(a[part], b[part], what=f"{stage}.{part}")
        _assert_same_optimizer(a["optimizer"], b["optimizer"], what=stage)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """Uninterrupted VAE and TumorGen runs of OVERRIDES on the debug preset, trained in-process on one thread."""
    from tumorgen.training.tumorgen_stage import train_tumorgen
    from tumorgen.training.vae_stage import train_vae

    root = tmp_path_factory.mktemp("recipe")
    prep = write_tiny_prep(root / "prep")
    config = apply_overrides(load_config("debug"), list(OVERRIDES))
    train_vae(data=prep, out=root / "vae", config=config, progress=False)
    train_tumorgen(data=prep, vae_run=root / "vae", out=root / "run", config=config, progress=False)
    return root


def _assert_ends_like(run: Path, reference_run: Path, *, steps: int) -> None:
    a, b = load_checkpoint(run), load_checkpoint(reference_run)
    assert a["step"] == b["step"] == steps
    for part in ("model", "ema"):
        assert_same_tensors(a[part], b[part], what=f"{part} after kills and resumes")
    assert [row["step"] for row in read_metrics(run / "metrics.jsonl")] == list(range(1, steps + 1))
    assert checkpoint_temporaries(run / "checkpoints") == []


@pytest.mark.slow
def test_train_vae_killed_between_checkpoints_ends_with_the_uninterrupted_weights(reference, tmp_path):
    run = tmp_path / "vae"
    common = ["--data", str(reference / "prep"), "--out", str(run)]
    fresh = cli_argv("train-vae", *common, "--config", "debug", "--set", *OVERRIDES)
    hits = run_with_kills(fresh, cli_argv("train-vae", *common, "--resume"), run, kills=1, rng=random.Random(11),
                          modes=("anywhere",))
    print("train-vae kills:", hits)
    _assert_ends_like(run, reference / "vae", steps=VAE_STEPS)


@pytest.mark.slow
def test_train_killed_between_checkpoints_ends_with_the_uninterrupted_weights(reference, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(reference / "prep"), "--out", str(run)]
    fresh = cli_argv("train", *common, "--vae", str(reference / "vae"), "--config", "debug", "--set", *OVERRIDES)
    hits = run_with_kills(fresh, cli_argv("train", *common, "--resume"), run, kills=3, rng=random.Random(12),
                          modes=("anywhere",))
    print("train kills:", hits)
    _assert_ends_like(run, reference / "run", steps=STEPS)


def test_resume_from_the_narrowest_kill_windows(tiny_prep, tmp_path, one_thread):
    """States a SIGKILL leaves only rarely, rebuilt from a finished 6-step run (a checkpoint every 3):
    killed after step_0000006.pt was renamed into place but before last.pt was, and killed while
    step 5's metrics line was being written. Both resume from step 3 and end as the finished run."""
    from tumorgen.training.vae_stage import train_vae

    cfg = apply_overrides(load_config("debug"), ["vae_train.steps=6", "vae_train.checkpoint_every=3"])
    full = tmp_path / "full"
    train_vae(data=tiny_prep, out=full, config=cfg, progress=False)
    for window in ("step_file_ahead_of_last", "metrics_line_cut"):
        run = tmp_path / window
        shutil.copytree(full, run)
        ckpt = run / "checkpoints"
        shutil.copyfile(ckpt / "step_0000003.pt", ckpt / "last.pt")  # last.pt still holds step 3
        if window == "metrics_line_cut":  # steps 1-4 logged, then half of step 5's line
            (ckpt / "step_0000006.pt").unlink()
            lines = (run / "metrics.jsonl").read_text().splitlines()[:5]
            lines[-1] = lines[-1][: len(lines[-1]) // 2]
            (run / "metrics.jsonl").write_text("\n".join(lines))
        train_vae(data=tiny_prep, out=run, config=cfg, resume=True, progress=False)
        _assert_ends_like(run, full, steps=6)
