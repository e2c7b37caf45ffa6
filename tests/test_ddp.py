"""Data-parallel training: two gloo processes on the CPU train identical weights; rank 0 alone writes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tumorgen.config import apply_overrides, load_config
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import read_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, prep: str, out: str, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from tumorgen.training.vae_stage import train_vae

    cfg = apply_overrides(load_config("debug"), ["vae_train.steps=3", "vae_train.checkpoint_every=2"])
    result = train_vae(data=prep, out=out, config=cfg, progress=False)
    torch.save({"model": result.model.state_dict(), "ema": result.ema.state_dict(),
                "wrote": result.checkpoint is not None}, os.path.join(result_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_weights(tiny_prep, tmp_path):
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    mp.start_processes(_worker, args=(2, _free_port(), str(tiny_prep), str(out), str(results)), nprocs=2,
                       join=True, start_method="spawn")
    r0 = torch.load(results / "rank0.pt", weights_only=True)
    r1 = torch.load(results / "rank1.pt", weights_only=True)
    assert r0["wrote"] and not r1["wrote"], "only rank 0 writes checkpoints"
    for part in ("model", "ema"):
        for key in r0[part]:
            assert torch.equal(r0[part][key], r1[part][key]), f"{part}.{key} differs between ranks"
    payload = load_checkpoint(out, expected_kind="vae")
    assert payload["step"] == 3 and payload["extra"]["world_size"] == 2
    assert set(payload["rng"]) == {"data", "noise.rank0", "noise.rank1"}
    assert not torch.equal(payload["rng"]["noise.rank0"], payload["rng"]["noise.rank1"])
    for key, value in r0["model"].items():
        assert torch.equal(payload["model"][key], value)
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3], "metrics written once, by rank 0"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json", "loss_curve.png", "metrics.jsonl"]
    # the two ranks saw different data: the averaged run differs from a single-process run
    from tumorgen.training.vae_stage import train_vae

    cfg = apply_overrides(load_config("debug"), ["vae_train.steps=3", "vae_train.checkpoint_every=2"])
    single = train_vae(data=tiny_prep, out=tmp_path / "single", config=cfg, progress=False)
    assert any(not torch.equal(single.model.state_dict()[k], r0["model"][k]) for k in r0["model"])
