"""Tumor swap: train some windows on another window's tumor, in the first window's erased context.

The hypothesis it tests: on 25-31 FDG-PET tumors the flow's samples decline after ~500 steps
(validation r3, r5, r9), perhaps because the erased context around a box names its case, so the flow
learns "this scan -> this tumor" and blends its tumors in a scan it never saw. With a share of the
batch swapped, the context no longer tells which tumor is inside. Measured (r10,
`benchmarks/results/ibsi_validation/r10_tumor_swap/`): it does not stop the decline, so it is an
option, off by default.

Box windows make the swap cheap: every window holds its box at the same fill (`data.box_fill`), so a
tumor fits any other window's box. The donor keeps its own box, mask and uptake; only the context
comes from the recipient, its own box erased. The two boxes agree up to the window's aspect cap and
the snapping of boxes to the latent grid; where they differ, a band of the recipient's erased fill lies
outside the donor's box (or its scan inside it), a seam synthesis never shows. A donor is any other
window, so about one swap in as many as there are training tumors lands on another window of the same
tumor, and the true swap rate is a little below `share`.
"""

from __future__ import annotations

import torch


def swap_donors(chosen: torch.Tensor, *, count: int, share: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """For each chosen window (B,) the window whose tumor it trains on: itself, or with probability
    `share` another window of the bank of `count` windows, uniformly.

    Nothing is drawn when `share` is 0, so a run without swaps keeps its random stream.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the swap share must be in [0, 1), got {share}")
    if count < 1:
        raise ValueError(f"the window bank must hold at least one window, got {count}")
    if share == 0.0 or count == 1:
        return chosen
    swapped = torch.rand(chosen.shape, generator=generator) < share  # (B,)
    offset = torch.randint(1, count, chosen.shape, generator=generator)  # never the window itself
    return torch.where(swapped, (chosen + offset) % count, chosen)


TUMOR_KEYS = ("image", "mask", "latent", "box", "uptake")  # what travels with the tumor
SCENE_KEYS = ("context",)  # what stays with the window it is pasted into


def swapped_batch(bank: dict[str, torch.Tensor], chosen: torch.Tensor, tumor: torch.Tensor,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """One training batch from the window bank: the tumor side (image, mask, latent, box, uptake) of
    windows `tumor` (B,), the erased context of windows `chosen` (B,); keys absent from the bank stay absent."""
    if chosen.shape != tumor.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and tumor {tuple(tumor.shape)} windows must pair up")
    unknown = set(bank) - set(TUMOR_KEYS) - set(SCENE_KEYS)
    if unknown:
        raise ValueError(f"unknown window-bank field(s) {sorted(unknown)}")
    return {key: value[tumor if key in TUMOR_KEYS else chosen].to(device) for key, value in bank.items()}
