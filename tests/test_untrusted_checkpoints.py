"""A checkpoint is untrusted input: a file crafted to run code when unpickled is refused and runs nothing.

The crafted file is a real torch.save archive whose pickle holds an object with a `__reduce__` that
calls `os.system("touch MARKER")`: plain `torch.load`/`pickle.load` would create MARKER. It is put
everywhere TumorGen reads weights (a run's last.pt and vae.pt, `--vae`, `vae.weights`, `--resume`, a
baseline run, a segmenter run); each is refused with one sentence and MARKER never appears. A grep of
src/ proves no loader uses plain pickle, `torch.load` without `weights_only=True`, or `allow_pickle=True`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from tumorgen.cli import main
from tumorgen.errors import TumorGenError

SRC = Path(__file__).resolve().parents[1] / "src" / "tumorgen"


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def write_malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A torch file shaped like a TumorGen checkpoint whose "model" entry runs a shell command on load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "tumorgen-checkpoint", "version": 1, "kind": "vae", "step": 1, "config": {},
                "model": _RunsCode(marker), "ema": {}, "optimizer": {}, "rng": {}, "extra": {}}, path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def test_the_crafted_file_really_runs_code_under_plain_unpickling(tmp_path, marker):
    """Guards the other tests: if this file were harmless, their refusals would prove nothing."""
    path = write_malicious_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)  # what TumorGen must never do
    assert marker.exists()


def _refused_by_cli(argv, capsys, named: Path, marker: Path) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(named) in lines[0], err
    assert "Traceback" not in err
    assert not marker.exists(), "the checkpoint ran code"
    return lines[0]


def test_synthesize_refuses_a_malicious_last_pt(trained_debug_run, tmp_path, marker, capsys):
    run = Path(shutil.copytree(trained_debug_run, tmp_path / "run"))
    evil = write_malicious_checkpoint(run / "checkpoints" / "last.pt", marker)
    scan = tmp_path / "scan.nii.gz"
    from bad_inputs import AFFINE, valid_scan
    from tumorgen.io.nifti import save_volume
    save_volume(valid_scan(), AFFINE, scan)
    line = _refused_by_cli(["synthesize", "--model", str(run), "--input", str(scan), "--out", str(tmp_path / "out"),
                            "--box", "16", "16", "12", "22", "22", "18", "--steps", "1", "--no-progress"],
                           capsys, evil, marker)
    assert "would run code" in line
    assert not (tmp_path / "out").exists()


def test_a_malicious_vae_pt_in_a_run_is_refused(trained_debug_run, tmp_path, marker):
    """RUN/vae.pt: refused by its pinned SHA-256 in load_run, and by the safe loader when read directly."""
    from tumorgen.training.run_folder import load_run, load_vae

    run = Path(shutil.copytree(trained_debug_run, tmp_path / "run"))
    evil = write_malicious_checkpoint(run / "vae.pt", marker)
    with pytest.raises(TumorGenError, match="SHA-256|would run code"):
        load_run(run)
    with pytest.raises(TumorGenError, match="would run code") as caught:
        load_vae(evil)
    assert str(evil) in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()


def test_train_refuses_a_malicious_vae_argument(tiny_prep, tmp_path, marker, capsys):
    evil = write_malicious_checkpoint(tmp_path / "downloaded_vae.pt", marker)
    _refused_by_cli(["train", "--data", str(tiny_prep), "--vae", str(evil), "--out", str(tmp_path / "run"),
                     "--config", "debug", "--steps", "1", "--no-progress"], capsys, evil, marker)
    assert not (tmp_path / "run").exists()


def test_train_vae_refuses_malicious_pretrained_weights(tiny_prep, tmp_path, marker, capsys):
    """`vae.weights` (e.g. MAISI's pretrained autoencoder) is read with the same safe loader."""
    evil = write_malicious_checkpoint(tmp_path / "autoencoder_epoch273.pt", marker)
    _refused_by_cli(["train-vae", "--data", str(tiny_prep), "--out", str(tmp_path / "vae"), "--config", "debug",
                     "--set", f"vae.weights={evil}", "--steps", "1", "--no-progress"], capsys, evil, marker)


def test_resume_refuses_a_malicious_last_pt(trained_debug_run, tiny_prep, tmp_path, marker, capsys):
    run = Path(shutil.copytree(trained_debug_run, tmp_path / "run"))
    evil = write_malicious_checkpoint(run / "checkpoints" / "last.pt", marker)
    _refused_by_cli(["train", "--data", str(tiny_prep), "--out", str(run), "--resume", "--steps", "2",
                     "--no-progress"], capsys, evil, marker)


def test_baseline_and_segmenter_runs_refuse_a_malicious_last_pt(tmp_path, marker):
    from tumorgen.baselines.generators import load_baseline

    run = tmp_path / "baseline"
    evil = write_malicious_checkpoint(run / "checkpoints" / "last.pt", marker)
    with pytest.raises(TumorGenError, match="would run code"):
        load_baseline(run)
    segmenter = pytest.importorskip("tumorgen.evaluation.segmenter")
    with pytest.raises(TumorGenError, match="would run code"):
        segmenter.load_segmenter(evil)
    assert not marker.exists()


# Loading untrusted bytes must go through weights_only torch.load, safetensors or allow_pickle=False numpy.
_FORBIDDEN = [
    (re.compile(r"\bpickle\.loads?\("), "plain pickle"),
    (re.compile(r"\b(dill|joblib|cloudpickle)\b"), "a pickle-based loader"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy with allow_pickle=True"),
    (re.compile(r"weights_only\s*=\s*False"), "torch.load with weights_only=False"),
    (re.compile(r"\.load_from_checkpoint\(|\bload_pretrained\(|\bmonai\.bundle\.load\("), "an unchecked hub loader"),
]
# TorchScript archives hold TorchScript, not pickled Python; the FID Inception net is one, from a local path.
_ALLOWED = {("evaluation/inception.py", "torch.jit.load")}


def test_no_loader_in_src_can_unpickle_code():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in _FORBIDDEN:
                if pattern.search(code):
                    problems.append(f"{rel}:{number}: {what}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                problems.append(f"{rel}:{number}: torch.load without weights_only=True: {line.strip()}")
            if "torch.jit.load(" in code and (rel, "torch.jit.load") not in _ALLOWED:
                problems.append(f"{rel}:{number}: torch.jit.load of an unvetted file: {line.strip()}")
    assert not problems, "\n".join(problems)
