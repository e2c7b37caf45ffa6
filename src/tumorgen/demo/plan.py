"""What one demo run does (`DemoPlan`), where it writes (`DemoPaths`), and how its outputs read back.

The stages (`stages.py`), the quality numbers (`quality.py`), the montage and the report all take these
types; `run.py` calls them in order.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STATE_FILE = "demo.json"
LAYOUT = "autopet"  # a CT beside each PET, so sampled boxes go into the lungs found on it
# Minutes kept for phantoms, prepare, synthesis, quality numbers and the report (measured 0.5 min on 2
# idle cores, so 1 leaves room for a loaded machine); the rest of --minutes trains, 30% VAE and 70%
# TumorGen: the flow model's steps decide how many demo tumors pass (measured: 32^3 windows, 424 steps,
# 6 of 12; the phantom preset's 24^3 windows, 1085-1190 steps, 9-10 of 12), while the VAE's error inside
# tumors at ~1400 steps (0.24 SUV) is already below the tumors' grain.
OVERHEAD_MINUTES = 1.0
VAE_SHARE = 0.3


@dataclass(frozen=True)
class DemoPlan:
    """What one demo run does; stored in OUT/demo.json so a later run can tell what it may reuse.

    Args:
        preset: the config preset both stages train with ("phantom", or "debug" for --fast).
        tumor_cases, healthy_cases: phantoms written with and without a tumor.
        size: phantom and model grid edge in voxels.
        vae_minutes, train_minutes: wall-time budgets of the two training stages.
        train_steps: steps of each training stage, or None for the preset's (time usually stops first).
        samples_per_case: synthetic tumors per healthy phantom.
        sample_steps: Euler steps at synthesis.
        fid: compute FID/KID on tumor-center slices (an Inception pass, ~0.5 min on a CPU).
        seed: seeds phantoms, split, training and synthesis.
    """

    preset: str
    tumor_cases: int
    healthy_cases: int
    size: int
    vae_minutes: float
    train_minutes: float
    train_steps: int | None
    samples_per_case: int
    sample_steps: int
    fid: bool
    seed: int


def plan_demo(*, minutes: float = 11.0, fast: bool = False, seed: int = 0) -> DemoPlan:
    """The default demo (phantom preset, 64^3) or the --fast one (debug preset, 32^3, seconds).

    Args:
        minutes: the demo's whole budget; training gets what is left after OVERHEAD_MINUTES.
        fast: the CI-sized variant: tiny models that only prove the pipeline runs.
        seed: the demo's seed.
    """
    if fast:
        # steps, not time, end the fast demo's training (a time cut on a busy CI machine would vary)
        return DemoPlan(preset="debug", tumor_cases=5, healthy_cases=2, size=32, vae_minutes=5.0, train_minutes=5.0,
                        train_steps=2, samples_per_case=1, sample_steps=2, fid=False, seed=seed)
    training = minutes - OVERHEAD_MINUTES
    if training < 1.0:
        raise ValueError(f"--minutes {minutes:g} leaves no time to train; give at least {OVERHEAD_MINUTES + 1:g}")
    return DemoPlan(preset="phantom", tumor_cases=24, healthy_cases=6, size=64,
                    vae_minutes=round(VAE_SHARE * training, 2), train_minutes=round((1 - VAE_SHARE) * training, 2),
                    train_steps=None, samples_per_case=2, sample_steps=10, fid=True, seed=seed)


@dataclass
class DemoPaths:
    """The demo folder's layout."""

    out: Path

    @property
    def raw(self) -> Path:
        return self.out / "data" / f"phantom-{LAYOUT}"

    @property
    def prep(self) -> Path:
        return self.out / "prep"

    @property
    def vae(self) -> Path:
        return self.out / "runs" / "vae"

    @property
    def tumorgen(self) -> Path:
        return self.out / "runs" / "tumorgen"

    @property
    def synthetic(self) -> Path:
        return self.out / "synthetic"

    @property
    def montage(self) -> Path:
        return self.out / "montage.png"

    @property
    def report(self) -> Path:
        return self.out / "report.md"


@dataclass
class StageRecord:
    """One stage as the report shows it: name, seconds this run, whether it was reused, a note."""

    name: str
    seconds: float
    reused: bool
    note: str = ""
    command: str = ""


@dataclass
class DemoResult:
    plan: DemoPlan
    paths: DemoPaths
    stages: list[StageRecord] = field(default_factory=list)
    quality: dict = field(default_factory=dict)
    seconds: float = 0.0


def remove_incomplete_run(run_dir: Path) -> bool:
    """A run folder without checkpoints/last.pt was interrupted before its first checkpoint: start over."""
    if run_dir.exists() and not (run_dir / "checkpoints" / "last.pt").exists():
        shutil.rmtree(run_dir)
        return True
    return False


def load_synthetic(paths: DemoPaths) -> list[dict]:
    """Every synthetic sample: case, k, box, seed and its image/mask arrays with the affine."""
    from tumorgen.io.nifti import load_volume

    manifest = json.loads((paths.synthetic / "manifest.json").read_text())
    samples = []
    for entry in manifest["cases"]:
        for s in entry["samples"]:
            image = load_volume(paths.synthetic / s["files"]["pet"])
            mask = load_volume(paths.synthetic / s["files"]["mask"], kind="mask")
            samples.append({"case": entry["case"], "k": s["index"], "box": s["box"], "seed": s["seed"],
                            "image": image.array, "mask": mask.array, "affine": image.affine,
                            "spacing": image.spacing})
    return samples


def load_real_tumors(paths: DemoPaths, *, split: str | None = None) -> list[dict]:
    """The real tumor-bearing phantoms on their own grid (SUV and mask), optionally one split only."""
    from tumorgen.io.nifti import load_volume

    info = json.loads((paths.prep / "dataset.json").read_text())
    names = set(info["split"][split]) if split else None
    out = []
    for c in info["cases"]:
        if c["healthy"] or (names is not None and c["name"] not in names):
            continue
        image = load_volume(paths.raw / c["source_image"])
        mask = load_volume(paths.raw / c["source_mask"], kind="mask")
        out.append({"case": c["name"], "image": image.array, "mask": mask.array, "affine": image.affine,
                    "spacing": image.spacing, "box": None})
    return out


def mask_box(mask: np.ndarray) -> tuple[int, ...]:
    coords = np.argwhere(mask > 0)
    return (*coords.min(axis=0), *(coords.max(axis=0) + 1))
