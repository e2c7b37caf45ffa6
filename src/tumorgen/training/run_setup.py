"""What both trainers do before the first step: resolve the config, claim the run folder, seed things.

The config of a run is, in order: the preset or file given with `--config` (or, with `--resume`, the
run's own `config.json`), then `--set key=value` overrides, then `--steps` / `--device`. A fresh run
refuses a folder that already holds a run; a resumed one requires it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from tumorgen.config import Config, apply_overrides, load_config, save_config
from tumorgen.errors import TumorGenError, fail_on


def resolve_config(*, out: Path, config: str | None, overrides: list[str], steps: int | None,
                   device: str | None, resume: bool, stage_field: str) -> Config:
    """Build the run's config from its sources.

    Args:
        out: the run folder (its config.json is the base when resuming).
        config: preset name or file (ignored when resuming, where the run's own config is used).
        overrides: `key=value` strings.
        steps: `--steps`, written into `<stage_field>.steps`.
        device: `--device`, written into `<stage_field>.device`.
        resume: continue the run in `out`.
        stage_field: "vae_train" or "train".
    """
    if resume:
        saved = Path(out) / "config.json"
        if not saved.exists():
            raise fail_on(out, "has no config.json; there is no run here to resume")
        cfg = load_config(saved)
    else:
        cfg = load_config(config or "phantom")
    cfg = apply_overrides(cfg, list(overrides or []))
    stage_changes = {}
    if steps is not None:
        stage_changes["steps"] = int(steps)
    if device is not None:
        stage_changes["device"] = device
    if stage_changes:
        cfg = apply_overrides(cfg, [f"{stage_field}.{k}={v}" for k, v in stage_changes.items()])
    return cfg


def claim_run_dir(out: Path, *, resume: bool, is_main: bool) -> Path:
    """Create the run folder (rank 0) or check that a resumable run is there."""
    out = Path(out)
    last = out / "checkpoints" / "last.pt"
    if resume:
        if not last.exists():
            raise fail_on(out, "has no checkpoints/last.pt to resume from")
        if is_main:  # a kill during a checkpoint write leaves its temporary file (io.atomic names them .<name>.*.tmp*)
            for stale in (out / "checkpoints").glob(".*.tmp*"):
                stale.unlink(missing_ok=True)
        return out
    if not is_main:  # rank 0 checks and creates the folder; the others wait at a barrier
        return out
    if out.exists() and any(out.iterdir()):
        raise fail_on(out, "already holds files; choose a new --out folder or pass --resume to continue it")
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return out


def write_run_config(cfg: Config, out: Path) -> None:
    save_config(cfg, Path(out) / "config.json")


def seeded_generator(seed: int, *, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


@contextlib.contextmanager
def seeded_init(seed: int):
    """Build modules with weights drawn from `seed`, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def load_training_cases(dataset, *, purpose: str = "") -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The PREP cache's train split loaded, `[(image, mask, affine)]`; an empty split is the user's error.

    Args:
        dataset: a `data.prepared.PreparedDataset`.
        purpose: what the cases are for, ending the message (" to train the segmenter on").
    """
    cases = dataset.split("train")
    if not cases:
        raise fail_on(dataset.root / "dataset.json", f"has no training cases{purpose}")
    return [case.load() for case in cases]


def stack_volumes(arrays: list[np.ndarray]) -> torch.Tensor:
    """Cached volumes (X, Y, Z) -> one tensor (N, 1, X, Y, Z)."""
    if not arrays:
        raise TumorGenError("no volumes to train on")
    return torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32))  # (N, 1, X, Y, Z)
