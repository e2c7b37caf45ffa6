"""The segmentation network behind DSC/NSD: trained on real tumors, asked to find generated ones.

docs/METHOD.md section 6: a segmenter trained on the real training split predicts a mask on each
synthetic image; agreement with the generated mask says the generated tumor looks like a tumor where
the generator claims it is. The paper used nnU-Net; here a MONAI `UNet` (residual units, one output
channel, sigmoid) trained with Dice + BCE on whole PREP volumes (random patches when the grid is
larger than `roi`), random flips on all three axes, on the shared fit loop (EMA, checkpoints,
resume, metrics.jsonl, loss curve). Prediction uses MONAI's sliding window when the volume exceeds
`roi`. An nnU-Net's own predictions can replace this network in `evaluate` (`--predictions`).

The architecture is stored in each checkpoint's `extra["segmenter"]`, so `load_segmenter` rebuilds
the network from the checkpoint alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tumorgen.config import Config, to_dict
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import fail_on
from tumorgen.io.atomic import write_json
from tumorgen.training import distributed
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import FitResult, Stage, fit
from tumorgen.training.run_setup import (
    claim_run_dir, load_training_cases, seeded_generator, seeded_init, stack_volumes, write_run_config,
)

KIND = "segmenter"
THRESHOLD = 0.5  # sigmoid probability above which a voxel is tumor


@dataclass(frozen=True)
class SegmenterSpec:
    """The network's shape.

    Args:
        channels: features per level; four levels see a 64^3 volume down to 8^3, enough context
            for tumors of a few cm, at ~1 M parameters (trainable on a CPU in minutes).
        strides: downsampling between levels (one fewer than channels).
        num_res_units: residual units per block (MONAI's default 2 doubles the cost for little gain here).
        roi: the largest patch trained on and the sliding-window size at prediction.
        foreground: when `roi` is smaller than the volume, the share of training crops centered on a
            random tumor voxel (nnU-Net oversamples a third of its patches this way); the rest are
            uniform. Without it a tumor of a few hundred voxels is in a 32^3 crop of a 64^3 volume
            only now and then.
        batch_dice: Dice over the whole batch instead of per sample (nnU-Net's batch dice). Per sample,
            a crop without tumor scores Dice 0 for any positive voxel, a push toward predicting nothing.
            On 64^3 phantoms (tumors under 0.3% of the volume) the downstream study's segmenter learned
            them with both, lr 3e-3 and 1000-2000 steps, and nothing at lr 1e-3 and 400 steps, with
            or without them (benchmarks/results/downstream_phantom/reading.md).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    roi: tuple[int, int, int] = (64, 64, 64)
    foreground: float = 1 / 3
    batch_dice: bool = False


LATER_FIELDS = ("foreground", "batch_dice")  # training choices newer than the first segmenter runs


def build_segmenter(spec: SegmenterSpec) -> nn.Module:
    """A 3D MONAI UNet, 1 input channel (PET in model range), 1 output channel (tumor logit)."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=tuple(spec.channels),
                strides=tuple(spec.strides), num_res_units=spec.num_res_units, norm="instance")


def random_crops_and_flips(volumes: torch.Tensor, masks: torch.Tensor, *, roi, batch_size: int,
                           generator: torch.Generator, foreground: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch: random cases, random crops of `roi` (whole volumes when smaller), random flips.

    Args:
        volumes, masks: (N, 1, X, Y, Z) images and binary masks.
        roi: crop size per axis (clipped to the volume).
        batch_size: cases per batch.
        generator: the only source of randomness.
        foreground: share of crops centered on a random tumor voxel of the case (cases with a tumor;
            only drawn when a crop is smaller than the volume, so whole-volume batches are unchanged).
    """
    n, _, *shape = volumes.shape
    size = [min(int(r), s // 8 * 8 if s >= 8 else s) for r, s in zip(roi, shape)]  # UNet: sides divisible by 8
    cropped = any(p < s for p, s in zip(size, shape))
    picks = torch.randint(n, (batch_size,), generator=generator)
    images, labels = [], []
    for i in picks.tolist():
        start = [int(torch.randint(s - p + 1, (1,), generator=generator)) for p, s in zip(size, shape)]
        if cropped and foreground > 0 and bool(torch.rand((), generator=generator) < foreground):
            tumor = masks[i, 0].nonzero()
            if len(tumor):
                center = tumor[int(torch.randint(len(tumor), (1,), generator=generator))].tolist()
                start = [min(max(c - p // 2, 0), s - p) for c, p, s in zip(center, size, shape)]
        window = (slice(None), *(slice(a, a + p) for a, p in zip(start, size)))
        x, y = volumes[i][window], masks[i][window]  # (1, px, py, pz)
        flips = [axis + 1 for axis in range(3) if bool(torch.rand((), generator=generator) < 0.5)]
        if flips:
            x, y = x.flip(flips), y.flip(flips)
        images.append(x)
        labels.append(y)
    return torch.stack(images), torch.stack(labels)  # (B, 1, px, py, pz) each


def train_segmenter(*, data: str | Path, out: str | Path, config: Config, spec: SegmenterSpec = SegmenterSpec(),
                    resume: bool = False, progress: bool = True) -> FitResult:
    """Train the segmenter on the real training split (the `train` config section) and write the run.

    Args:
        data: the PREP folder.
        out: the run folder to create (or continue with `resume`).
        config: the resolved config; its `train` section sets steps, lr, batch, EMA, cadence, device.
        spec: the architecture (ignored on resume: the run's own is used).
        resume: continue from `out/checkpoints/last.pt`.
        progress: show a progress bar.
    """
    info = distributed.init_distributed(config.train.device)
    try:
        data, out = Path(data), Path(out)
        if resume:
            spec = spec_from_checkpoint(load_checkpoint(out / "checkpoints" / "last.pt", expected_kind=KIND),
                                        out / "checkpoints" / "last.pt")
        dataset = load_prepared(data)
        loaded = load_training_cases(dataset, purpose=" to train the segmenter on")
        volumes = stack_volumes([image for image, _, _ in loaded])  # (N, 1, X, Y, Z)
        masks = stack_volumes([mask.astype(np.float32) for _, mask, _ in loaded])  # (N, 1, X, Y, Z)
        claim_run_dir(out, resume=resume, is_main=info.is_main)
        if info.is_main and not resume:
            write_run_config(config, out)
            write_json(out / "segmenter.json", {"spec": to_dict(spec), "data": str(data.resolve())})
        from monai.losses import DiceCELoss

        with seeded_init(config.train.seed):
            model = build_segmenter(spec)
        loss_fn = DiceCELoss(sigmoid=True, batch=spec.batch_dice)
        data_gen = seeded_generator(config.train.seed)
        batch = config.train.batch_size

        def step_fn(net: nn.Module, step: int) -> dict[str, torch.Tensor]:
            x, y = random_crops_and_flips(volumes, masks, roi=spec.roi, batch_size=batch, generator=data_gen,
                                          foreground=spec.foreground)
            logits = net(x.to(info.device))
            return {"loss": loss_fn(logits.float(), y.to(info.device))}

        stage = Stage(kind=KIND, model=model, step_fn=step_fn, generators={"data": data_gen}, rank_generators={},
                      config=to_dict(config), extra_fn=lambda ema: {"segmenter": to_dict(spec),
                                                                    "suv_max": dataset.suv_max})
        return fit(stage=stage, run_dir=out, train=config.train, info=info, resume=resume, progress=progress)
    finally:
        distributed.shutdown_distributed(info)


def spec_from_checkpoint(payload: dict, source: Path) -> SegmenterSpec:
    raw = payload["extra"].get("segmenter")
    if not isinstance(raw, dict):
        raise fail_on(source, "has no segmenter architecture (extra.segmenter); it was not written by train-seg")
    try:
        # fields added later take their default in runs written before them; the architecture's are required
        fields = {f.name: raw[f.name] if f.name in raw or f.name not in LATER_FIELDS else f.default
                  for f in dataclasses.fields(SegmenterSpec)}
        return SegmenterSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (KeyError, TypeError) as err:
        raise fail_on(source, f"has an unreadable segmenter architecture ({err})") from None


def load_segmenter(path: str | Path, *, device: torch.device | str = "cpu") -> tuple[nn.Module, SegmenterSpec]:
    """The trained segmenter (EMA weights, eval mode) from a train-seg run folder or its checkpoint."""
    path = Path(path)
    if path.is_dir() and not (path / "checkpoints" / "last.pt").exists():
        raise fail_on(path, "is not a train-seg run folder (it has no checkpoints/last.pt)")
    source = path / "checkpoints" / "last.pt" if path.is_dir() else path
    payload = load_checkpoint(source, expected_kind=KIND)
    spec = spec_from_checkpoint(payload, source)
    model = build_segmenter(spec)
    try:
        model.load_state_dict(payload["ema"])
    except (RuntimeError, KeyError) as err:
        raise fail_on(source, f"weights do not match its segmenter architecture ({str(err).splitlines()[0][:160]})") from None
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, spec


@torch.no_grad()
def predict_mask(model: nn.Module, image: np.ndarray, *, roi, device: torch.device | str = "cpu") -> np.ndarray:
    """Binary tumor mask (X, Y, Z) uint8 of one volume in model range, by sliding window when larger than roi.

    Args:
        model: from `load_segmenter`.
        image: (X, Y, Z) float volume in [0, 1].
        roi: the window size (the spec's roi).
        device: where the model is.
    """
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(np.asarray(image, np.float32))[None, None].to(device)  # (1, 1, X, Y, Z)
    multiple = 2 ** len(getattr(model, "strides", (2, 2, 2)))  # the UNet needs sides divisible by this
    window = tuple(min(int(r), -(-s // multiple) * multiple) for r, s in zip(roi, x.shape[2:]))
    if window == tuple(x.shape[2:]):
        logits = model(x)
    else:  # pads a smaller volume up to the window, tiles a larger one
        logits = sliding_window_inference(x, roi_size=window, sw_batch_size=1, predictor=model, overlap=0.25)
    return (torch.sigmoid(logits.float())[0, 0] > THRESHOLD).cpu().numpy().astype(np.uint8)


def dice_on_test_split(model: nn.Module, spec: SegmenterSpec, data: str | Path, *, device="cpu") -> dict:
    """Mean DSC of the segmenter on the real test split (healthy cases included, empty = empty is 1)."""
    from tumorgen.evaluation.segmentation_metrics import dice

    dataset = load_prepared(data)
    scores = {}
    for case in dataset.split("test"):
        image, mask, _ = case.load()
        scores[case.name] = dice(predict_mask(model, image, roi=spec.roi, device=device), mask)
    mean = float(np.mean(list(scores.values()))) if scores else float("nan")
    return {"DSC": mean, "n": len(scores), "per_case": scores}


def write_test_dice(run_dir: str | Path, result: dict) -> Path:
    """Keep the test-split DSC beside the run (run_dir/test_dice.json)."""
    return write_json(Path(run_dir) / "test_dice.json", json.loads(json.dumps(result)))
