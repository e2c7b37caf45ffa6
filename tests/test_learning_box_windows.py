"""A short-budget learning test through the public synthesis path: tiny box-window models trained on a
few hot blobs place a tumor mask where the true one is, when `TumorGen.load(run).synthesize` is given
the tumor's box (the paired protocol's box: tight box + 2 voxels) in a scan whose box was erased."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_tiny_prep

OVERRIDES = [  # the ibsi preset's design, at toy size (16^3 windows, 8^3 latents)
    "data.box_fill=12", "data.window_size=16", "data.windows_per_case=32",
    "vae.channels=8,16", "flow.refiner_widths=8,8", "flow.channels=16,32,32", "flow.num_head_channels=8",
    "vae_train.steps=150", "vae_train.lr=2e-3", "vae_train.checkpoint_every=1000", "vae_train.log_every=50",
    "vae_train.ema_decay=0.9", "vae_train.max_minutes=none", "vae_train.device=cpu",
    "train.steps=300", "train.lr=2e-3", "train.checkpoint_every=1000", "train.log_every=50", "train.ema_decay=0.9",
    "train.max_minutes=none", "train.device=cpu",
]


def train_toy_box_run(root, prep, extra: tuple[str, ...] = ()):
    """Train the toy box-window VAE and TumorGen (OVERRIDES + `extra`) on PREP under ROOT; the run folder."""
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.training.tumorgen_stage import train_tumorgen
    from tumorgen.training.vae_stage import train_vae

    config = apply_overrides(load_config("ibsi"), OVERRIDES + list(extra))
    train_vae(data=prep, out=root / "vae", config=config, progress=False)
    train_tumorgen(data=prep, vae_run=root / "vae", out=root / "run", config=config, progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def box_run(tmp_path_factory, one_thread):
    """Toy box-window models trained for 150 + 300 steps (about 45 s of CPU): (PREP, run folder)."""
    root = tmp_path_factory.mktemp("box_run")
    prep = write_tiny_prep(root / "prep", size=32, n_cases=6, seed=3)
    return prep, train_toy_box_run(root, prep)


@pytest.mark.slow
def test_box_window_models_place_the_mask_in_a_training_tumor_through_the_api(box_run):
    from tumorgen.api import TumorGen
    from tumorgen.data.prepared import load_prepared
    from tumorgen.data.erase import erase_box

    prep, run = box_run
    dataset = load_prepared(prep)
    image, mask, affine = dataset.tumor_cases("train")[0].load()
    coords = np.nonzero(mask)
    box = tuple(max(int(c.min()) - 2, 0) for c in coords) + tuple(min(int(c.max()) + 3, 32) for c in coords)
    scan = erase_box(image * dataset.suv_max, box, rng=np.random.default_rng(0))
    model = TumorGen.load(run, device="cpu")
    dices = []
    for seed in range(3):
        result = model.synthesize(scan, affine=affine, box=box, steps=10, seed=seed)[0]
        outside = np.ones(mask.shape, dtype=bool)
        outside[tuple(slice(a, b) for a, b in zip(box[:3], box[3:]))] = False
        assert np.array_equal(result.image[outside], scan[outside].astype(np.float32))
        predicted, true = result.mask > 0, mask > 0
        dices.append(2 * (predicted & true).sum() / (predicted.sum() + true.sum()))
    assert np.mean(dices) > 0.4, dices


@pytest.mark.slow
def test_the_cli_synthesizes_a_box_larger_than_the_models_window_would_hold(box_run, tmp_path):
    """A box-window model takes a box of the whole scan (a fixed-grid model would refuse it)."""
    from tumorgen.cli import main
    from tumorgen.data.prepared import load_prepared
    from tumorgen.io.nifti import load_volume, save_volume

    prep, run = box_run
    image, _, affine = load_prepared(prep).tumor_cases("train")[1].load()
    suv = image * 10.0
    save_volume(suv, affine, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    box = ["1", "1", "1", "31", "31", "31"]  # 120 mm a side: 2.5x the 16-voxel window at the data's 4 mm
    assert main(["synthesize", "--model", str(run), "--input", str(tmp_path / "scan.nii.gz"), "--out", str(out),
                 "--box", *box, "--steps", "2", "--no-progress"]) == 0
    pet = load_volume(out / "scan_0_pet.nii.gz")
    mask = load_volume(out / "scan_0_mask.nii.gz", kind="mask")
    keep = np.ones(suv.shape, dtype=bool)
    keep[1:31, 1:31, 1:31] = False
    assert np.array_equal(pet.array[keep], suv.astype(np.float32)[keep]) and mask.array[keep].sum() == 0
