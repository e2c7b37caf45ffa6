"""Train HA-GAN (baselines/hagan.py) on the baselines' windows, with the shared fit loop.

Same windows, same masks, same `train` section (steps, batch, seed, checkpoints) as DiffTumor and
BLD; no VAE (HA-GAN works on the image). One step is the paper's iteration, four updates in order,
each with only its own network trainable (one Adam, a parameter group per network at the paper's
rates, betas (0, 0.999); a network without gradients is skipped by Adam):
1. D^H and D^L: real windows against generated ones (one random sub-volume at high resolution and
   the whole window at low resolution, each pasted into the real window inside the box), BCE;
2. G (trunk, G^L, G^H): a fresh noise draw, judged as real by the updated discriminators, BCE;
3. E^H: a real sub-volume through E^H and the frozen G^H, L1 against itself;
4. E^G: all of E^H's slabs through E^G and the frozen generator, L1 at both resolutions.
The sub-volume's position is drawn once a step (as in the paper), from the data generator; noise from
the noise generator; so `--resume` replays the run exactly. Every reconstruction is judged inside the
box only (the real window is pasted outside), where the generator is trained. As in the paper there is
no gradient clipping and the paper's fixed rates (`train.grad_clip`, `train.lr` and `train.lr_schedule` do
not apply), and synthesis uses the last weights; the loop's weight average (EMA) is kept in the checkpoint but not used.

The run folder is `tumorgen train-baseline`'s: config.json, data.json (window, boxes, `method`),
mask_bank.npz, metrics.jsonl (loss = the four terms' sum; d, g, e_high, e_global), loss_curve.png,
checkpoints/ of kind "hagan" holding all five networks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tumorgen.baselines.hagan import HAGAN, build_hagan, check_window_shape, compose, condition, slab
from tumorgen.baselines.training_data import load_baseline_data, without_uptake, write_baseline_files
from tumorgen.bbox import box_indicator
from tumorgen.config import Config, to_dict
from tumorgen.data.box_windows import box_window_spec
from tumorgen.errors import fail_on
from tumorgen.training import distributed
from tumorgen.training.loop import FitResult, Stage, fit
from tumorgen.training.run_setup import claim_run_dir, seeded_generator, seeded_init, write_run_config

BETAS = (0.0, 0.999)  # the paper's Adam betas for every network


def hagan_optimizer(model: HAGAN, cfg: Config) -> torch.optim.Adam:
    """One Adam with the paper's rate per network: G lr_g, D^H and D^L lr_d, E^H and E^G lr_e."""
    h = cfg.hagan
    groups = [{"params": list(model.generator.parameters()), "lr": h.lr_g},
              {"params": list(model.disc_high.parameters()) + list(model.disc_low.parameters()), "lr": h.lr_d},
              {"params": list(model.encoder_high.parameters()) + list(model.encoder_global.parameters()),
               "lr": h.lr_e}]
    return torch.optim.Adam(groups, betas=BETAS, eps=1e-8)


def _train_only(model: HAGAN, *parts: nn.Module) -> list[nn.Parameter]:
    """Make `parts` the only trainable networks; return their parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for part in parts for p in part.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def hagan_step(model: HAGAN, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], *, start: int,
               noise: tuple[torch.Tensor, torch.Tensor], info: distributed.DistInfo | None = None
               ) -> dict[str, torch.Tensor]:
    """One HA-GAN iteration (D, G, E^H, E^G updates; see the module docstring); returns the four losses.

    Args:
        model: the five networks (or a compiled wrapper's module).
        optimizer: `hagan_optimizer(model, cfg)`.
        batch: "image" `(B, 1, X, Y, Z)` in [-1, 1], "box" and "mask" `(B, 1, X, Y, Z)` float {0, 1}.
        start: the sub-volume's first trunk voxel along X, in `[0, generator.possible_starts)`.
        noise: two `(B, latent_dim)` noise draws, for the D and the G update.
        info: for averaging gradients across torchrun processes (None: one process).
    """
    g = model.generator
    x, box, mask = batch["image"], batch["box"], batch["mask"]
    r, depth = g.r, g.slab_depth
    cond = condition(x, box, mask)
    x_high, box_high, mask_high = (slab(t, start, depth, r) for t in (x, box, mask))  # (B, 1, d r, Y, Z)
    x_low, box_low, mask_low = (F.avg_pool3d(t, r) for t in (x, box, mask))  # (B, 1, X/r, Y/r, Z/r)
    position = torch.full((x.shape[0], 1), start / max(g.possible_starts - 1, 1), device=x.device)

    def judge(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return model.discriminate(torch.cat([high, mask_high, box_high], dim=1),
                                  torch.cat([low, mask_low, box_low], dim=1), position)

    def fakes(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        high, low = g(z, cond, start)
        return compose(high, x_high, box_high), compose(low, x_low, box_low)

    def update(loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if info is not None:
            distributed.average_gradients(params, info)
        optimizer.step()

    params = _train_only(model, model.disc_high, model.disc_low)
    with torch.no_grad():
        fake_high, fake_low = fakes(noise[0])
    d_loss = _bce(judge(x_high, x_low), True) + _bce(judge(fake_high, fake_low), False)
    update(d_loss, params)

    params = _train_only(model, g)
    g_loss = _bce(judge(*fakes(noise[1])), True)
    update(g_loss, params)

    params = _train_only(model, model.encoder_high)
    with torch.no_grad():
        ctx = g.context(cond)
    rec_high = g.high_res(model.encoder_high(x_high), ctx, start)
    e_high = F.l1_loss(compose(rec_high, x_high, box_high), x_high)
    update(e_high, params)

    params = _train_only(model, model.encoder_global)
    with torch.no_grad():
        features = torch.cat([model.encoder_high(slab(x, s, depth, r))
                              for s in range(0, x.shape[2] // r, depth)], dim=2)  # (B, 2c, X/r, Y/r, Z/r)
    rec_high, rec_low = g(model.encoder_global(features), cond, start)
    e_global = (F.l1_loss(compose(rec_high, x_high, box_high), x_high)
                + F.l1_loss(compose(rec_low, x_low, box_low), x_low)) / 2.0
    update(e_global, params)
    _train_only(model, model)
    losses = {"d": d_loss, "g": g_loss, "e_high": e_high, "e_global": e_global}
    losses = {k: v.detach() for k, v in losses.items()}
    return {"loss": sum(losses.values()), **losses}


def train_hagan(*, data: str | Path, out: str | Path, config: Config, resume: bool = False,
                progress: bool = True) -> FitResult:
    """Train HA-GAN on the PREP folder `data`; write (or, with `resume`, continue) the run folder `out`."""
    return distributed.run_distributed(config.train.device, _train, data=Path(data), out=Path(out), config=config,
                                       resume=resume, progress=progress)


def _train(*, data: Path, out: Path, config: Config, resume: bool, progress: bool,
           info: distributed.DistInfo) -> FitResult:
    train = config.train
    config = without_uptake(config)
    windows = load_baseline_data(config, data, method="hagan")
    problem = check_window_shape(windows.window_size, config.hagan)
    if problem is not None:
        raise fail_on(data / "dataset.json", f"cannot train hagan on it: {problem}")
    # no VAE, but the boxes synthesis hands over are multiples of the windows' factor, as for the others
    factor = box_window_spec(config, windows.dataset.suv_max).factor

    claim_run_dir(out, resume=resume, is_main=info.is_main)
    distributed.barrier(info)
    if info.is_main and not resume:
        write_baseline_files(out, windows, config, method="hagan", latent_factor=factor)
    if info.is_main:
        write_run_config(config, out)
    distributed.barrier(info)

    with seeded_init(train.seed):
        model = build_hagan(windows.window_size, config.hagan).to(info.device)
    optimizer = hagan_optimizer(model, config)
    images = windows.images * 2.0 - 1.0  # (N, 1, X, Y, Z) in [-1, 1], HA-GAN's tanh range
    boxes = box_indicator(windows.boxes, windows.window_size)  # (N, 1, X, Y, Z)
    data_gen = seeded_generator(train.seed)
    noise_gen = seeded_generator(train.seed * 1_000_003 + 1 + info.rank)
    latent_dim = config.hagan.latent_dim

    def step_fn(runner: nn.Module, step: int) -> dict[str, torch.Tensor]:
        chosen = distributed.rank_slice(torch.randint(len(images), (train.batch_size * info.world_size,),
                                                      generator=data_gen), info)
        start = int(torch.randint(model.generator.possible_starts, (1,), generator=data_gen))
        batch = {"image": images[chosen].to(info.device), "box": boxes[chosen].to(info.device),
                 "mask": windows.masks[chosen].to(info.device)}
        noise = tuple(torch.randn((len(chosen), latent_dim), generator=noise_gen).to(info.device) for _ in range(2))
        return hagan_step(runner, optimizer, batch, start=start, noise=noise, info=info)

    def extra_fn(ema: nn.Module) -> dict:
        return {"suv_max": windows.dataset.suv_max, "size": list(windows.window_size), "method": "hagan",
                "latent_factor": factor}

    stage = Stage(kind="hagan", model=model, step_fn=step_fn, generators={"data": data_gen},
                  rank_generators={"noise": noise_gen}, config=to_dict(config), extra_fn=extra_fn,
                  optimizer=optimizer, manual_update=True)
    fixed_rates = dataclasses.replace(train, lr_schedule="constant")  # the paper's rates throughout
    return fit(stage=stage, run_dir=out, train=fixed_rates, info=info, resume=resume, progress=progress)
