"""Data-parallel training across processes launched by `torchrun` (one process per GPU, or CPUs).

`torchrun --nproc_per_node=N -m tumorgen train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; we then join
a process group (NCCL on CUDA, gloo on the CPU). Every rank builds the same model from the same seed
(and rank 0's weights are broadcast anyway), draws the same global batch of case indices and patch
positions from the shared data generator and keeps its own slice of it, and averages gradients with
one all-reduce after backward. That is the maths of PyTorch's DistributedDataParallel; we call the
collective ourselves instead of wrapping the module because a TumorGen step reaches its networks
through `objective.training_losses(models, ...)` rather than through one `forward`, and because the
refiner is trained only every `flow.refiner_every` steps (DDP would need `find_unused_parameters`).
Only rank 0 writes files and shows a progress bar; checkpoints hold unwrapped weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among `world_size` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, *, local_rank: int = 0) -> torch.device:
    """"auto" -> CUDA when available else CPU; "cuda" without a GPU is a user error."""
    from tumorgen.errors import TumorGenError

    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TumorGenError("--device cuda: no CUDA GPU is available to this process")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; a plain launch is a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank=local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_distributed(device: str, train_fn, **kwargs):
    """`train_fn(info=..., **kwargs)` inside the process group (torchrun's, or a single process), which is
    shut down however it ends: the one wrapper of every training stage's entry point."""
    info = init_distributed(device)
    try:
        return train_fn(info=info, **kwargs)
    finally:
        shutdown_distributed(info)


def rank_slice(items: list | torch.Tensor, info: DistInfo):
    """This rank's share of a global batch drawn identically on every rank (round-robin)."""
    return items[info.rank :: info.world_size]


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Make every rank start from rank 0's weights and buffers."""
    if not info.distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """All-reduce the gradients of `params` as one flat buffer and divide by the world size.

    A parameter without a gradient this step (e.g. the refiner on a step that skips it) counts as a
    zero gradient on every rank; all ranks skip the same steps, so its `.grad` stays None everywhere.
    """
    if not info.distributed:
        return
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in with_grad])  # (total,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for p in with_grad:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def gather_states(state: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's copy of a same-sized uint8 tensor (a generator state), in rank order."""
    if not info.distributed:
        return [state]
    device = info.device if dist.get_backend() == "nccl" else torch.device("cpu")
    local = state.to(device)
    out = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
