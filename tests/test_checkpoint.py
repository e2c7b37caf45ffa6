"""Checkpoints: exact round trip, unwrapped keys, pruning, and refusal of broken or malicious files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from tumorgen.errors import TumorGenError
from tumorgen.training.checkpoint import (
    load_checkpoint, prune_checkpoints, save_checkpoint, step_path, unwrap_state_dict,
)


def _tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.GroupNorm(1, 2), nn.Conv3d(2, 1, 1))


def _save(path, **overrides):
    model = _tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(1, 1, 4, 4, 4)).sum().backward()
    opt.step()
    kwargs = dict(kind="vae", step=3, config={"train": {"steps": 3}}, model=model, ema=model, optimizer=opt,
                  rng={"data": torch.Generator().manual_seed(5).get_state()}, extra={"scale_factor": 1.5})
    kwargs.update(overrides)
    save_checkpoint(path, **kwargs)
    return model, opt


def test_round_trip_is_exact(tmp_path):
    model, opt = _save(tmp_path / "c.pt")
    payload = load_checkpoint(tmp_path / "c.pt", expected_kind="vae")
    assert payload["format"] == "tumorgen-checkpoint" and payload["version"] == 1 and payload["step"] == 3
    assert payload["extra"]["scale_factor"] == 1.5 and payload["config"] == {"train": {"steps": 3}}
    for key, value in model.state_dict().items():
        assert torch.equal(payload["model"][key], value)
        assert torch.equal(payload["ema"][key], value)
    fresh = _tiny_model(seed=1)
    fresh.load_state_dict(payload["model"])
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    opt2.load_state_dict(payload["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    g = torch.Generator()
    g.set_state(payload["rng"]["data"])
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(5)))
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file may be left behind"


def test_wrapped_models_are_saved_unwrapped(tmp_path):
    model = _tiny_model()
    compiled_like = {f"_orig_mod.module.{k}": v for k, v in model.state_dict().items()}
    assert set(unwrap_state_dict(compiled_like)) == set(model.state_dict())
    assert unwrap_state_dict({"a._orig_mod.b": 1, "net.module.w": 2}) == {"a.b": 1, "net.module.w": 2}
    save_checkpoint(tmp_path / "c.pt", kind="vae", step=0, config={}, model={f"module.{k}": v for k, v in
                                                                            model.state_dict().items()})
    assert set(load_checkpoint(tmp_path / "c.pt")["model"]) == set(model.state_dict())


def test_wrong_kind_is_refused_naming_the_file(tmp_path):
    _save(tmp_path / "vae.pt")
    with pytest.raises(TumorGenError, match=r"vae\.pt.*'vae' checkpoint where a 'tumorgen'"):
        load_checkpoint(tmp_path / "vae.pt", expected_kind="tumorgen")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "tumorgen-checkpoint", "payload": _Exploit(marker)}, evil)
    with pytest.raises(TumorGenError, match=r"evil\.pt.*refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(TumorGenError, match=r"raw\.pkl"):
        load_checkpoint(raw)
    assert not marker.exists()


def test_broken_files_are_refused_with_one_sentence(tmp_path):
    _save(tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.save({"format": "tumorgen-checkpoint", "version": 99}, tmp_path / "future.pt")
    torch.save({"format": "tumorgen-checkpoint", "version": 1, "kind": "vae"}, tmp_path / "partial.pt")
    cases = {"truncated.pt": "not a readable", "random.pt": "not a readable", "empty.pt": "not a readable",
             "foreign.pt": "not a TumorGen checkpoint", "future.pt": "version 99", "partial.pt": "incomplete",
             "missing.pt": "not found"}
    for name, words in cases.items():
        with pytest.raises(TumorGenError) as err:
            load_checkpoint(tmp_path / name)
        assert name in str(err.value) and words in str(err.value), str(err.value)
    with pytest.raises(TumorGenError, match="not a training run"):
        load_checkpoint(tmp_path)


def test_prune_keeps_the_newest(tmp_path):
    for step in (2, 4, 6, 8):
        step_path(tmp_path, step).write_bytes(b"x")
    (tmp_path / "last.pt").write_bytes(b"x")
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_0000006.pt", "step_0000008.pt"]
