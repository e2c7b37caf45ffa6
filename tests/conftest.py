"""Shared fixtures: a tiny PREP cache written exactly as docs/DESIGN.md specifies.

`tiny_prep` builds a few 16^3 PET-like volumes (smooth background, noise, a hot ellipsoid tumor in
most cases, one healthy case) so training and synthesis tests do not depend on `tumorgen prepare`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tumorgen.io.nifti import save_volume


def write_tiny_prep(root: Path, *, size: int = 16, n_cases: int = 5, seed: int = 0,
                    uptakes: tuple[float, ...] = (0.6,), n_test: int = 1) -> Path:
    """Write a PREP folder of `n_cases` cubes of side `size`; the last case is healthy.

    Args:
        root: the PREP folder to create.
        size: volume side in voxels (a multiple of 4).
        n_cases: number of cases; the first n-1 carry one tumor each.
        seed: numpy seed for the blobs and the noise.
        uptakes: what tumor i adds to the image (SUV / suv_max), cycled over the tumors.
        n_test: the first `n_test` cases are the test split, the others the train split.
    """
    rng = np.random.default_rng(seed)
    cases_dir = root / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    spacing = 4.0
    affine = np.diag([spacing, spacing, spacing, 1.0])
    grid = np.stack(np.meshgrid(*(np.arange(size),) * 3, indexing="ij"), axis=0).astype(np.float32)  # (3, X, Y, Z)
    entries, names = [], []
    for i in range(n_cases):
        name = f"case{i:02d}"
        healthy = i == n_cases - 1
        body = np.exp(-(((grid - size / 2) ** 2).sum(0)) / (2 * (size / 3) ** 2))
        image = 0.15 * body + 0.02 * rng.standard_normal((size,) * 3)
        mask = np.zeros((size,) * 3, dtype=np.uint8)
        if not healthy:
            center = rng.uniform(size * 0.3, size * 0.7, size=3)
            radii = rng.uniform(size * 0.1, size * 0.2, size=3)
            inside = (((grid - center[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0
            mask[inside] = 1
            image = image + uptakes[i % len(uptakes)] * inside
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        save_volume(image, affine, cases_dir / f"{name}_image.nii.gz")
        save_volume(mask, affine, cases_dir / f"{name}_mask.nii.gz", dtype=np.uint8)
        names.append(name)
        entries.append({
            "name": name, "image": f"cases/{name}_image.nii.gz", "mask": f"cases/{name}_mask.nii.gz",
            "healthy": healthy, "source_image": f"raw/{name}_pet.nii.gz", "source_mask": f"raw/{name}_seg.nii.gz",
            "source_ct": None, "original_shape": [size] * 3, "original_affine": affine.tolist(),
            "spacing": [spacing] * 3, "tumor_voxels": int(mask.sum()),
        })
    info = {
        "format": "tumorgen-prep", "version": 1, "layout": "phantom", "root": "raw", "size": [size] * 3,
        "spacing": [spacing] * 3, "suv_max": 10.0, "seed": seed, "test_fraction": 0.2,
        "split": {"train": names[n_test:], "test": names[:n_test]}, "cases": entries, "skipped": [],
    }
    (root / "dataset.json").write_text(json.dumps(info, indent=2))
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Train in-process on one thread for a test module: two OpenMP threads per process on a shared
    2-core machine made the same small 3D step many times slower; restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_prep(tmp_path: Path) -> Path:
    """A PREP folder with 5 cases of 16^3 (train: 3 tumor + 1 healthy; test: 1 tumor)."""
    return write_tiny_prep(tmp_path / "prep")


@pytest.fixture(scope="session")
def trained_debug_run(tmp_path_factory) -> Path:
    """A TumorGen run folder trained for one step of each stage on the debug preset (16^3, 4 mm).

    The weights are meaningless; the folder is complete (config.json, data.json, vae.pt,
    checkpoints/last.pt) and loads with `load_run`, so synthesis, augment and the CLI can run on it.
    Built once per session through the API functions; other test files reuse it.
    """
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.training.tumorgen_stage import train_tumorgen
    from tumorgen.training.vae_stage import train_vae

    root = tmp_path_factory.mktemp("trained_debug_run")
    prep = write_tiny_prep(root / "prep")
    config = apply_overrides(load_config("debug"), ["vae_train.steps=1", "train.steps=1"])
    train_vae(data=prep, out=root / "vae", config=config, progress=False)
    train_tumorgen(data=prep, vae_run=root / "vae", out=root / "run", config=config, progress=False)
    return root / "run"


# ---------------------------------------------------------------------------------------------
# subprocess training runs killed with SIGKILL (test_crash_safe_training.py, test_recipe_by_steps.py)

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # same float reduction order in every process


def cli_argv(*args: str) -> list[str]:
    """`python -m tumorgen ARGS --no-progress` with this interpreter."""
    import sys

    return [sys.executable, "-m", "tumorgen", *args, "--no-progress"]


def cli_env() -> dict[str, str]:
    """The environment for a training subprocess: one thread, so its floats match an in-process `one_thread` run."""
    import os

    return {**os.environ, **ONE_THREAD}


def checkpoint_temporaries(ckpt_dir: Path) -> list[str]:
    """The temporary files (io.atomic's `.<name>.*.tmp*`) in a checkpoints/ folder."""
    import os

    return [n for n in os.listdir(ckpt_dir) if ".tmp" in n] if ckpt_dir.exists() else []


def assert_same_tensors(a: dict, b: dict, *, what: str) -> None:
    """Two state dicts hold the same keys and bit-identical tensors (`torch.equal`)."""
    import torch

    assert a.keys() == b.keys(), f"{what}: different keys"
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}.{key} differs"


def run_with_kills(argv_fresh: list[str], argv_resume: list[str], run: Path, *, kills: int, rng,
                   modes: tuple[str, ...] = ("mid-write", "mid-step")) -> list[str]:
    """Start, SIGKILL at a random moment, resume, ... `kills` times, then let the last resume finish.

    Each kill waits until the first checkpoint exists, then fires at a moment drawn from `rng`
    (a `random.Random`) by one of `modes`:
      mid-write: as soon as a checkpoint's temporary file shows up in checkpoints/;
      mid-step: 0-20 ms after this process wrote its next checkpoint;
      anywhere: after this process wrote a checkpoint, a uniform fraction of its measured checkpoint
        interval after the next one: mid-step, mid-metrics-line, between step_N.pt and last.pt, mid-plot.
    After every kill `last.pt` must load and metrics.jsonl must parse. Returns what each kill hit:
    mode @ step of last.pt, with "+ahead" when a newer step_N.pt was already written (the kill fell
    between step_N.pt and last.pt).
    """
    import signal
    import subprocess
    import time

    from tumorgen.training.checkpoint import load_checkpoint
    from tumorgen.training.loop import read_metrics

    ckpt_dir, last = run / "checkpoints", run / "checkpoints" / "last.pt"

    def signature() -> tuple[int, int]:  # last.pt is replaced by a rename: a new inode and mtime each time
        st = last.stat()
        return st.st_ino, st.st_mtime_ns

    hits = []
    for attempt in range(kills + 1):
        argv = argv_fresh if attempt == 0 else argv_resume
        proc = subprocess.Popen(argv, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt == kills:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()
            break
        deadline = time.monotonic() + 240

        def running() -> bool:
            return proc.poll() is None and time.monotonic() < deadline

        def wait_for_next_checkpoint() -> None:
            seen = signature()
            while signature() == seen and running():
                time.sleep(0.0005)

        while not last.exists() and running():
            time.sleep(0.005)
        mode = rng.choice(list(modes))
        if mode == "mid-write":
            while not checkpoint_temporaries(ckpt_dir) and running():
                time.sleep(0.0005)
        elif mode == "mid-step":  # a random wall-clock delay alone let a fast machine finish the run first
            wait_for_next_checkpoint()
            time.sleep(rng.uniform(0.0, 0.02))
        elif mode == "anywhere":
            wait_for_next_checkpoint()
            start = time.monotonic()
            wait_for_next_checkpoint()
            time.sleep(rng.uniform(0.0, 1.0) * (time.monotonic() - start))
        else:
            raise ValueError(f"unknown kill mode {mode!r}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode != 0, f"attempt {attempt} finished before its kill; make the run longer"
        step = load_checkpoint(last)["step"]  # the newest checkpoint always loads
        read_metrics(run / "metrics.jsonl")
        ahead = any(int(p.stem.split("_")[1]) > step for p in ckpt_dir.glob("step_*.pt"))
        hits.append(f"{mode}@{step}{'+ahead' if ahead else ''}")
    return hits
