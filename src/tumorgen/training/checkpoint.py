"""Checkpoints: written atomically, read as untrusted input.

A checkpoint is a plain dict of tensors and Python values (the format is in docs/DESIGN.md), so it
loads with `torch.load(weights_only=True)`: a file that would need to run code to unpickle is refused,
never executed. Weights are stored unwrapped (no DDP `module.`, no `torch.compile` `_orig_mod.`), so
any checkpoint loads into a bare model. Every failure to read one is a single `TumorGenError` naming
the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from tumorgen import __version__
from tumorgen.errors import fail_on
from tumorgen.io.atomic import atomic_path
from tumorgen.io.files import read_torch_file

FORMAT = "tumorgen-checkpoint"
VERSION = 1
# difftumor, bld, medfusion: the DDPM baselines (medfusion-vae: MedFusion's own VAE); hagan: the GAN; segmenter: train-seg
KINDS = ("vae", "tumorgen", "difftumor", "bld", "hagan", "medfusion", "medfusion-vae", "segmenter")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_STEP_FILE = re.compile(r"^step_(\d{7,})\.pt$")


def unwrap_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the key prefixes that DDP (`module.`) and torch.compile (`_orig_mod.`) add.

    Leading wrapper prefixes are stripped repeatedly; `_orig_mod.` is also removed inside keys (a
    compiled submodule). An inner `module.` is left alone: it may be a real submodule's name.
    """
    out = {}
    for key, value in state.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key.replace("._orig_mod.", ".")] = value
    return out


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(
    path: str | Path,
    *,
    kind: str,
    step: int,
    config: dict,
    model: torch.nn.Module | dict,
    ema: torch.nn.Module | dict | None = None,
    optimizer: torch.optim.Optimizer | dict | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (a temporary file in the same folder, then a rename).

    Args:
        path: destination file.
        kind: what the weights are ("vae" or "tumorgen").
        step: the number of optimisation steps done.
        config: the full config as a plain dict (`config.to_dict`).
        model: the trained module (wrappers are removed) or its state dict.
        ema: the EMA module or state dict; defaults to the model's weights.
        optimizer: the optimizer or its state dict; None stores an empty dict.
        rng: generator states by name (`torch.Generator.get_state()` uint8 tensors).
        extra: plain values such as the VAE's "scale_factor".
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    model_state = _state_of(model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "step": int(step),
        "config": config,
        "model": model_state,
        "ema": _state_of(ema) if ema is not None else model_state,
        "optimizer": (optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer) or {},
        "rng": {name: state.detach().cpu().clone() for name, state in (rng or {}).items()},
        "extra": {"tumorgen_version": __version__, **(extra or {})},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _state_of(obj: torch.nn.Module | dict) -> dict[str, torch.Tensor]:
    state = unwrap_model(obj).state_dict() if isinstance(obj, torch.nn.Module) else obj
    return {k: v.detach().cpu().clone() for k, v in unwrap_state_dict(state).items()}


def load_checkpoint(path: str | Path, *, expected_kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only, on the CPU) and check its format, version and kind.

    Args:
        path: the checkpoint file, or a run folder (its `checkpoints/last.pt` is read).
        expected_kind: refuse a checkpoint of another kind (e.g. a TumorGen checkpoint given as a VAE).
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        if not candidate.exists():
            raise fail_on(path, "is a folder without checkpoints/last.pt; it is not a training run")
        path = candidate
    if not path.exists():
        raise fail_on(path, "checkpoint file not found")
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise fail_on(path, f"is a torch file but not a TumorGen checkpoint (no format '{FORMAT}')")
    if payload.get("version") != VERSION:
        raise fail_on(path, f"has checkpoint version {payload.get('version')!r}; this TumorGen reads version {VERSION}")
    missing = [k for k in ("kind", "step", "config", "model", "ema", "optimizer", "rng", "extra") if k not in payload]
    if missing:
        raise fail_on(path, f"is an incomplete checkpoint (missing {', '.join(missing)})")
    if expected_kind is not None and payload["kind"] != expected_kind:
        raise fail_on(path, f"is a '{payload['kind']}' checkpoint where a '{expected_kind}' checkpoint is needed")
    return payload


def step_path(checkpoint_dir: str | Path, step: int) -> Path:
    return Path(checkpoint_dir) / f"step_{step:07d}.pt"


def prune_checkpoints(checkpoint_dir: str | Path, *, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step_*.pt files (last.pt is never touched); return the deleted."""
    found = []
    for p in Path(checkpoint_dir).glob("step_*.pt"):
        match = _STEP_FILE.match(p.name)
        if match:
            found.append((int(match.group(1)), p))
    found.sort()
    doomed = [p for _, p in found[: max(0, len(found) - keep)]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed
