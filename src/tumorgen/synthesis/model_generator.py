"""The trained TumorGen model as the `generate` callable the synthesis pipeline injects.

`synthesis.pipeline` knows nothing about networks: it hands windows, boxes and one seed per sample to
`generate(window_image, boxes_in_window, seeds)`. This module turns a loaded run folder into that
callable (METHOD.md section 5, steps 1-3, via `objective.sample_tumor`).

Why one sample at a time: the pipeline's contract is that sample b draws all of its noise from
seeds[b], so a sample never depends on the batch it ran in (`--batch 2` gives the same tumors as
`--batch 1`). `sample_tumor` draws a batch's noise from a single generator, so each sample gets its own
`torch.Generator` and its own call. The networks are tiny next to the scan I/O on a CPU; on a GPU the
loss of batching is the price of reproducible samples across batch sizes.

Inference runs under `torch.inference_mode`; on CUDA the networks run in bfloat16 autocast (the
outputs come back as float32), on the CPU in float32.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from tumorgen.training.run_folder import LoadedRun


def resolve_inference_device(preference: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else the CPU; "cuda" without a GPU is a user error."""
    from tumorgen.training.distributed import resolve_device

    if isinstance(preference, torch.device):
        return preference
    if preference not in ("auto", "cpu", "cuda") and not str(preference).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {preference!r}")
    if str(preference).startswith("cuda:"):
        return torch.device(preference)
    return resolve_device(preference)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_generator(run: LoadedRun, *, steps: int = 10, device: torch.device | None = None) -> Callable:
    """Wrap a loaded run as `generate(window_image, boxes_in_window, seeds) -> (image_hat, mask_prob)`.

    Args:
        run: from `training.run_folder.load_run` (its models already on `device`).
        steps: Euler steps N of the flow sampler (METHOD.md: 10).
        device: where the models are; default: the device of the U-Net's parameters.

    Returns:
        The callable of `synthesis.pipeline`'s contract; its outputs are float32 on the CPU.
    """
    from tumorgen.objective import sample_tumor

    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    steps = int(steps)
    if device is None:
        device = next(run.models.unet.parameters()).device

    def generate(window_image: torch.Tensor, boxes_in_window: torch.Tensor, seeds: list[int]):
        if window_image.shape[0] != len(seeds) or boxes_in_window.shape[0] != len(seeds):
            raise ValueError(f"{window_image.shape[0]} windows, {boxes_in_window.shape[0]} boxes and "
                             f"{len(seeds)} seeds: one each per sample")
        images, masks = [], []
        with torch.inference_mode(), _autocast(device):
            for b, seed in enumerate(seeds):
                generator = torch.Generator(device=device).manual_seed(int(seed))
                image_hat, mask_prob, _ = sample_tumor(
                    run.models, window_image[b : b + 1].to(device), boxes_in_window[b : b + 1].to(device),
                    scale_factor=run.scale_factor, steps=steps, generator=generator, s=run.config.flow.s,
                )
                images.append(image_hat.float().clamp(0.0, 1.0).cpu())  # (1, 1, Sx, Sy, Sz)
                masks.append(mask_prob.float().clamp(0.0, 1.0).cpu())  # (1, 1, Sx, Sy, Sz)
        return torch.cat(images), torch.cat(masks)  # (B, 1, Sx, Sy, Sz) each

    return generate
