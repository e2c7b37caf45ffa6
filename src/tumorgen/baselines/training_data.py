"""What every learned baseline trains on, and the files its run folder shares with the others.

One function cuts the data for DiffTumor, BLD, HA-GAN and MedFusion alike, so a comparison measures
the methods and not their data. With `data.window = "box"` (the ibsi and phantom presets) that is
TumorGen's own bank of box windows (`tumorgen_stage.box_window_bank`: same spec, same seed, so the same
windows), each with its tumor mask and its BA-PMG box; otherwise the PREP cache's whole tumor-bearing
training volumes, each with its tight tumor box grown by `data.box_pad` voxels a face. The run's mask
bank holds the masks at the scale synthesis places them (the windows' masks with box windows).

Every baseline run folder holds `config.json`, `data.json` (with `"method"`), `mask_bank.npz`,
`metrics.jsonl`, `loss_curve.png` and `checkpoints/`; the ones built on TumorGen's frozen VAE
(DiffTumor, BLD) also `vae.pt`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tumorgen.baselines.mask_bank import MaskBank
from tumorgen.config import Config
from tumorgen.data.box_geometry import tight_box
from tumorgen.data.prepared import PreparedDataset, load_prepared
from tumorgen.errors import fail_on
from tumorgen.io.atomic import write_json
from tumorgen.training.run_setup import stack_volumes
from tumorgen.training.tumorgen_stage import box_window_bank, describe_data

MASK_BANK_NAME = "mask_bank.npz"


@dataclass(frozen=True)
class BaselineData:
    """The training windows (or volumes) of a baseline run.

    Args:
        dataset: the PREP cache.
        cases: its tumor-bearing training cases.
        loaded: each case's (image in [0, 1], mask, affine).
        images: (N, 1, S, S, S) float32, the model's intensity scale.
        masks: (N, 1, S, S, S) float32 {0, 1}, each window's tumor.
        boxes: (N, 6) int64 half-open boxes in window voxels, each around its window's tumor.
        bank_masks: the masks synthesis places into boxes (one per window or volume).
    """

    dataset: PreparedDataset
    cases: list
    loaded: list
    images: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    bank_masks: list

    @property
    def window_size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[2:])


def load_baseline_data(config: Config, data: str | Path, *, method: str) -> BaselineData:
    """The training windows of `method` from the PREP cache `data` (see the module docstring)."""
    data = Path(data)
    dataset = load_prepared(data)
    cases = dataset.tumor_cases(split="train")
    if not cases:
        raise fail_on(data / "dataset.json", f"has no tumor-bearing training cases to train {method} on")
    loaded = [case.load() for case in cases]
    if config.data.window == "box":
        window_images, window_masks, window_boxes = box_window_bank(config, dataset, loaded)
        images, masks = torch.from_numpy(window_images), torch.from_numpy(window_masks)  # (N*K, 1, S, S, S)
        boxes = torch.from_numpy(window_boxes)  # (N*K, 6)
        bank_masks = [m[0] for m in window_masks]
    else:
        images = stack_volumes([im for im, _, _ in loaded])  # (N, 1, X, Y, Z)
        masks = stack_volumes([m.astype(np.float32) for _, m, _ in loaded])  # (N, 1, X, Y, Z)
        margin = int(round(config.data.box_pad))
        boxes = torch.tensor([tight_box(m, margin=margin) for _, m, _ in loaded], dtype=torch.int64)  # (N, 6)
        bank_masks = [m for _, m, _ in loaded]
    return BaselineData(dataset=dataset, cases=cases, loaded=loaded, images=images, masks=masks, boxes=boxes,
                        bank_masks=bank_masks)


def write_baseline_files(out: Path, data: BaselineData, config: Config, *, method: str, latent_factor: int,
                         vae_sha256: str | None = None) -> None:
    """`mask_bank.npz` and `data.json` of a fresh run (rank 0 only).

    Args:
        out: the run folder.
        data: its training data.
        config: the run's resolved config.
        method: the baseline's name, recorded in data.json.
        latent_factor: boxes given to the run's `generate` are multiples of it (the VAE's factor f; a
            model without a VAE takes the windows' f, so that it sees the same boxes as the others).
        vae_sha256: the frozen VAE's checksum (DiffTumor, BLD), pinned in data.json.
    """
    MaskBank.from_masks(data.bank_masks).save(out / MASK_BANK_NAME)
    described = describe_data(data.dataset, data.cases, [m for _, m, _ in data.loaded],
                              [a for _, _, a in data.loaded], vae_sha256=vae_sha256, config=config,
                              latent_factor=latent_factor)
    write_json(out / "data.json", {**described, "method": method})


def without_uptake(config: Config) -> Config:
    """The config a baseline run records: no uptake input, so none of TumorGen's uptake settings (its
    embedding, its dropout, guidance toward it) either; a preset that turns them on for TumorGen (ibsi)
    would otherwise leave the baseline's config claiming an input it does not have."""
    flow = dataclasses.replace(config.flow, uptake_condition=False, uptake_embedding=False, uptake_dropout=0.0,
                               guidance=1.0)
    return dataclasses.replace(config, flow=flow)
