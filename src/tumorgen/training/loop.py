"""The one training loop both stages use: `fit(stage, ...)`.

A stage supplies a model and a step function `step_fn(model, step) -> {"loss": tensor, ...}`; `fit`
does everything around it that a user relies on: AdamW, gradient clipping, an EMA of the weights,
bf16 autocast on CUDA, optional torch.compile, gradient averaging across torchrun processes, a tqdm
progress bar with the loss, `metrics.jsonl` (one JSON object per logged step), `loss_curve.png`,
atomic checkpoints every N steps and at the end, and `--resume`.

`train.max_minutes` bounds the wall time of one call: the loop stops at the first step boundary
after it and ends as a finished run does (final checkpoint, metrics line, loss curve), recording
`stopped_by_time` in the checkpoint's "extra" and the last metrics line, so that `--resume` with more
time continues exactly. "extra" also keeps `train_seconds`, the step time summed over all calls.

Resume is exact: all randomness of a stage comes from `torch.Generator`s whose states are stored in
the checkpoint (shared ones once, per-rank ones for every rank), so an interrupted and resumed run
computes the same next-step losses and ends with the same weights as an uninterrupted one on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tumorgen.config import TrainConfig
from tumorgen.errors import fail_on
from tumorgen.io.atomic import atomic_path, write_text
from tumorgen.training import distributed
from tumorgen.training.checkpoint import load_checkpoint, prune_checkpoints, save_checkpoint, step_path
from tumorgen.training.distributed import DistInfo
from tumorgen.training.lr_schedule import apply_lr

StepFn = Callable[[nn.Module, int], dict[str, torch.Tensor]]


@dataclass
class Stage:
    """What one training stage hands to `fit`.

    Args:
        kind: checkpoint kind ("vae" or "tumorgen").
        model: the trainable module (only parameters with requires_grad are optimised).
        step_fn: `(model, step) -> dict of scalar losses`, with the total under "loss"; it receives the
            (possibly compiled) model to run and must draw randomness only from the generators below.
        generators: generators every rank shares (same seed, same draws), e.g. data sampling.
        rank_generators: generators that differ per rank (seeded with the rank), e.g. noise and boxes.
        extra_fn: `(ema_model) -> dict` of plain values stored in each checkpoint's "extra"
            (called on rank 0 only, when a checkpoint is written).
        config: the whole run config as a dict, stored in every checkpoint.
        compile_fn: how to torch.compile the model when `train.compile` is on (default: the whole
            module); the result is what `step_fn` receives, the weights stay shared.
        optimizer: the optimizer to use and checkpoint (default: AdamW over the trainable parameters
            at `train.lr`), e.g. one with a parameter group per network at its own rate.
        manual_update: `step_fn` runs its own backward passes and `optimizer.step()`s (a GAN's
            alternating updates); `fit` then only logs, averages the weights and checkpoints.
    """

    kind: str
    model: nn.Module
    step_fn: StepFn
    generators: dict[str, torch.Generator]
    rank_generators: dict[str, torch.Generator]
    config: dict
    extra_fn: Callable[[nn.Module], dict] | None = None
    compile_fn: Callable[[nn.Module], nn.Module] | None = None
    optimizer: torch.optim.Optimizer | None = None
    manual_update: bool = False


@dataclass
class FitResult:
    model: nn.Module
    ema: nn.Module
    step: int
    last_losses: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    stopped_by_time: bool = False  # train.max_minutes ran out before train.steps
    train_seconds: float = 0.0  # wall time of the training loop, summed over resumed calls


class EMA:
    """An exponential moving average of a module's weights, warmed up so short runs are meaningful.

    The effective decay at update n is min(decay, (1 + n) / (10 + n)): the average follows the
    weights closely at first instead of staying near the random initialisation for ~1/(1-decay) steps.
    """

    def __init__(self, *, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, *, num_updates: int) -> None:
        decay = min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))
        for avg, new in zip(self.module.parameters(), model.parameters()):
            avg.lerp_(new.detach(), 1.0 - decay)
        for avg, new in zip(self.module.buffers(), model.buffers()):
            avg.copy_(new)


def autocast_context(train: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA when amp is "auto" or "bf16"; nothing on the CPU (bf16 conv3d is slow there)."""
    if device.type == "cuda" and train.amp in ("auto", "bf16"):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocations on a GPU, the process's max RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def fit(*, stage: Stage, run_dir: str | Path, train: TrainConfig, info: DistInfo, resume: bool = False,
        progress: bool = True) -> FitResult:
    """Train `stage.model` for `train.steps` steps, writing the run folder on rank 0.

    Args:
        stage: the model, step function, generators and checkpoint contents of one stage.
        run_dir: the run folder (checkpoints/, metrics.jsonl, loss_curve.png go there).
        train: steps, learning rate, EMA, clipping, logging and checkpoint cadence, amp, compile.
        info: this process's rank and device (`distributed.init_distributed`).
        resume: continue from `run_dir/checkpoints/last.pt` exactly where it stopped.
        progress: show the tqdm bar (rank 0 only in any case).
    """
    from tqdm import tqdm

    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    model = stage.model.to(info.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = stage.optimizer or torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    distributed.broadcast_parameters(model, info)
    ema = EMA(model=model, decay=train.ema_decay)

    start, train_seconds = 0, 0.0
    if resume:
        payload = load_checkpoint(ckpt_dir / "last.pt", expected_kind=stage.kind)
        model.load_state_dict(payload["model"])
        ema.module.load_state_dict(payload["ema"])
        optimizer.load_state_dict(payload["optimizer"])
        _restore_generators(stage, payload["rng"], info, source=ckpt_dir / "last.pt")
        start = int(payload["step"])
        train_seconds = float(payload["extra"].get("train_seconds", 0.0))
        if info.is_main:
            _truncate_metrics(metrics_path, after_step=start)

    runner = (stage.compile_fn or torch.compile)(model) if train.compile else model
    bar = tqdm(total=train.steps, initial=min(start, train.steps), desc=stage.kind, unit="step", file=sys.stderr,
               disable=not (progress and info.is_main), dynamic_ncols=True)
    last_losses: dict[str, float] = {}
    checkpoint, wrote, stopped_by_time, done = None, False, False, start
    interval_seconds, interval_steps = 0.0, 0  # step time only, checkpoint writing excluded
    loop_start = time.perf_counter()
    model.train()
    for step in range(start, train.steps):
        step_start = time.perf_counter()
        if train.lr_schedule != "constant":
            apply_lr(optimizer, train.lr_schedule, step, train.steps)
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(train, info.device):
            losses = stage.step_fn(runner, step)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{stage.kind} loss became {loss.item()} at step {step}")
        if not stage.manual_update:
            loss.backward()
            distributed.average_gradients(params, info)
            if train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
            optimizer.step()
        done = step + 1
        ema.update(model, num_updates=done)
        interval_seconds += time.perf_counter() - step_start
        interval_steps += 1
        stopped_by_time = done < train.steps and _out_of_time(loop_start, train.max_minutes, info)
        final = done == train.steps or stopped_by_time

        if done % train.log_every == 0 or final:
            last_losses = _mean_over_ranks(losses, info)
            seconds = interval_seconds / interval_steps
            interval_seconds, interval_steps = 0.0, 0
            if info.is_main:
                record = {"step": done, **last_losses, "lr": optimizer.param_groups[0]["lr"],
                          "sec_per_step": round(seconds, 4), "peak_mem_mb": round(peak_memory_mb(info.device), 1)}
                if stopped_by_time:
                    record["stopped_by_time"] = True
                with open(metrics_path, "a") as fh:  # one short line per write: appends stay whole
                    fh.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{last_losses['loss']:.4f}")
        bar.update(1)
        if done % train.checkpoint_every == 0 or final:
            timing = {"train_seconds": train_seconds + time.perf_counter() - loop_start,
                      "stopped_by_time": stopped_by_time}
            checkpoint = _write_checkpoint(stage, model, ema, optimizer, done, ckpt_dir, train, info, timing)
            wrote = True
        if stopped_by_time:
            break
    bar.close()
    train_seconds += time.perf_counter() - loop_start
    if not wrote and not resume:
        # zero steps asked (e.g. a pretrained VAE): still write the run's checkpoint
        timing = {"train_seconds": train_seconds, "stopped_by_time": False}
        checkpoint = _write_checkpoint(stage, model, ema, optimizer, start, ckpt_dir, train, info, timing)
    distributed.barrier(info)
    return FitResult(model=model, ema=ema.module, step=max(start, done), last_losses=last_losses,
                     checkpoint=checkpoint, stopped_by_time=stopped_by_time, train_seconds=train_seconds)


def _out_of_time(loop_start: float, max_minutes: float | None, info: DistInfo) -> bool:
    """Whether this call's wall-time budget is spent; rank 0 decides for all, so every rank stops together."""
    if max_minutes is None:
        return False
    expired = time.perf_counter() - loop_start >= max_minutes * 60.0
    if not info.distributed:
        return expired
    import torch.distributed as dist

    flag = torch.tensor([1.0 if expired else 0.0])
    flag = flag.to(info.device if dist.get_backend() == "nccl" else "cpu")
    dist.broadcast(flag, src=0)
    return bool(flag.item() > 0.5)


def _write_checkpoint(stage: Stage, model: nn.Module, ema: EMA, optimizer, step: int, ckpt_dir: Path,
                      train: TrainConfig, info: DistInfo, timing: dict) -> Path | None:
    """Every rank contributes its generator states; rank 0 writes step_N.pt, last.pt and the curve."""
    rng = {name: g.get_state() for name, g in stage.generators.items()}
    for name, g in stage.rank_generators.items():
        for rank, state in enumerate(distributed.gather_states(g.get_state(), info)):
            rng[f"{name}.rank{rank}"] = state
    if not info.is_main:
        return None
    extra = stage.extra_fn(ema.module) if stage.extra_fn is not None else {}
    extra = {**extra, "world_size": info.world_size, **timing}
    path = save_checkpoint(step_path(ckpt_dir, step), kind=stage.kind, step=step, config=stage.config,
                           model=model, ema=ema.module, optimizer=optimizer, rng=rng, extra=extra)
    with atomic_path(ckpt_dir / "last.pt") as tmp:
        tmp.write_bytes(path.read_bytes())
    prune_checkpoints(ckpt_dir, keep=train.keep_checkpoints)
    plot_loss_curve(ckpt_dir.parent / "metrics.jsonl", ckpt_dir.parent / "loss_curve.png")
    return ckpt_dir / "last.pt"


def _restore_generators(stage: Stage, rng: dict, info: DistInfo, *, source: Path) -> None:
    for name, g in stage.generators.items():
        if name not in rng:
            raise fail_on(source, f"has no state for the '{name}' generator; it was written by another stage")
        g.set_state(rng[name])
    for name, g in stage.rank_generators.items():
        key = f"{name}.rank{info.rank}"
        if key not in rng:
            raise fail_on(source, f"has no '{key}' generator state: resume with the world size it was trained "
                                 "with, and without switching on an option that draws from its own generator "
                                 "(flow.dropout) since")
        g.set_state(rng[key])


def _mean_over_ranks(losses: dict[str, torch.Tensor], info: DistInfo) -> dict[str, float]:
    names = list(losses)
    values = torch.stack([losses[n].detach().float().reshape(()) for n in names]).cpu()  # (n_terms,)
    if info.distributed:
        import torch.distributed as dist

        values = values.to(info.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(values)
        values = values.cpu() / info.world_size
    return {n: float(v) for n, v in zip(names, values.tolist())}


def _truncate_metrics(path: Path, *, after_step: int) -> None:
    """Drop metrics lines written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= after_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    write_text(path, "".join(f"{line}\n" for line in kept))


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def plot_loss_curve(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plot every loss term of metrics.jsonl against the step (log scale where all values are positive)."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"step", "lr", "sec_per_step", "peak_mem_mb", "stopped_by_time"}
    names = [k for k in rows[-1] if k not in skip]
    fig, ax = plt.subplots(figsize=(7, 4))
    positive = True
    for name in names:
        pts = [(r["step"], r[name]) for r in rows if name in r and math.isfinite(r[name])]
        if not pts:
            continue
        positive &= all(v > 0 for _, v in pts)
        ax.plot(*zip(*pts), label=name, linewidth=2.0 if name == "loss" else 1.0)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(Path(metrics_path).parent.name)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return png_path
