"""MedFusion (baselines/medfusion.py, medfusion_stage.py): its VAE's shapes and loss, its schedule and L1
objective, the two-phase run (its own VAE, then the denoiser) with exact resume across both phases, the
generate contract, and HA-GAN and MedFusion side by side in `tumorgen evaluate-paired`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tumorgen.baselines.difftumor import latent_mask
from tumorgen.baselines.generators import load_baseline, load_baseline_generator, sample_latents
from tumorgen.baselines.latent_diffusion import DiffusionSchedule
from tumorgen.baselines.medfusion import (
    build_medfusion_vae, medfusion_loss, medfusion_schedule, medfusion_vae_loss,
)
from tumorgen.baselines.stage import train_baseline
from tumorgen.cli import main
from tumorgen.config import MedFusionConfig, apply_overrides, load_config
from tumorgen.errors import TumorGenError
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import read_metrics

# one intra-op thread for the whole module: tiny 3D tensors on a loaded 2-core machine run many times
# slower with two threads waiting on each other (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 3
BOXES = torch.tensor([[4, 4, 4, 12, 12, 12], [0, 4, 8, 8, 16, 16]], dtype=torch.int64)


def _debug(*overrides):
    return apply_overrides(load_config("debug"), [f"train.steps={STEPS}", f"vae_train.steps={STEPS}",
                                                  "train.checkpoint_every=1", "vae_train.checkpoint_every=1",
                                                  *overrides])


@pytest.fixture(scope="module")
def runs(one_thread, tmp_path_factory):
    """A PREP of 16^3 (one test tumor, two training tumors) and a MedFusion run on it (debug preset)."""
    from conftest import write_tiny_prep

    root = tmp_path_factory.mktemp("medfusion")
    prep = write_tiny_prep(root / "prep", n_cases=4)  # test: case00; train: case01, case02 (tumors), case03
    train_baseline(method="medfusion", data=prep, vae_run=None, out=root / "medfusion", config=_debug(),
                   progress=False)
    return {"prep": prep, "medfusion": root / "medfusion", "root": root}


# ------------------------------------------------------------------------------------------ maths


def test_the_vae_has_medfusions_latent_and_outputs_and_starts_at_mid_grey():
    cfg = load_config("ibsi")  # vae.channels (16, 32): f = 2
    vae = build_medfusion_vae(cfg)
    assert vae.factor == 2
    x = torch.rand(2, 1, 32, 32, 32)
    mu, sigma = vae.encode(x)
    assert mu.shape == sigma.shape == (2, 8, 16, 16, 16) and (sigma > 0).all()
    recon, deep, _, _ = vae(2 * x - 1, torch.zeros_like(mu))
    assert recon.shape == x.shape and [d.shape for d in deep] == [(2, 1, 16, 16, 16)], "one deep-supervised scale"
    assert torch.equal(vae.decode(mu), torch.full_like(x, 0.5)), "zero-initialised outputs: [-1, 1]'s 0 is 0.5"
    losses = medfusion_vae_loss(vae, x, torch.zeros_like(mu), cfg.medfusion)
    assert set(losses) == {"loss", "rec", "kl", "l1"} and torch.isfinite(losses["loss"])
    expected = losses["rec"] + cfg.medfusion.kl_weight * losses["kl"] / x[0].numel()
    assert torch.isclose(losses["loss"], expected)


def test_the_schedule_and_the_l1_noise_objective():
    schedule = medfusion_schedule(MedFusionConfig())
    assert schedule.num_train_timesteps == 1000
    assert torch.isclose(schedule.alphas_cumprod[0], torch.tensor(1 - 0.002, dtype=torch.float64))
    ldm = DiffusionSchedule.scaled_linear(beta_start=0.0015, beta_end=0.0195)
    assert schedule.alphas_cumprod[-1] < ldm.alphas_cumprod[-1], "noisier than DiffTumor's LDM schedule"
    z = torch.randn(3, 8, 4, 4, 4)
    m = (torch.rand(3, 1, 4, 4, 4) > 0.5).float()
    seen = {}

    def exact_plus(offset):
        def eps_fn(x, t):  # recovers the noise from x_t and the clean latents, then adds `offset`
            seen["channels"] = x.shape[1]
            steps = (t * schedule.num_train_timesteps).round().long()
            abar = schedule.abar(steps, z)
            return (x[:, :8] - abar.sqrt() * z) / (1 - abar).sqrt() + offset
        return eps_fn

    g = torch.Generator().manual_seed(0)
    assert medfusion_loss(exact_plus(0.0), z, m, schedule=schedule, generator=g) < 1e-6
    assert seen["channels"] == 17, "[z_t ; z (1 - m) ; m], as DiffTumor's denoiser"
    error = medfusion_loss(exact_plus(0.3), z, m, schedule=schedule, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(error, torch.tensor(0.3), atol=1e-5), "L1: the mean absolute error, not its square"


# ------------------------------------------------------------------------------------------ training


def test_one_run_trains_its_own_vae_then_the_denoiser(runs):
    run = runs["medfusion"]
    for name in ("config.json", "data.json", "metrics.jsonl", "loss_curve.png", "mask_bank.npz", "vae.pt",
                 "checkpoints/last.pt", "vae/checkpoints/last.pt", "vae/metrics.jsonl", "vae/loss_curve.png"):
        assert (run / name).exists(), name
    vae = load_checkpoint(run / "vae.pt", expected_kind="medfusion-vae")
    denoiser = load_checkpoint(run, expected_kind="medfusion")
    assert vae["step"] == denoiser["step"] == STEPS
    assert "latent_std" in denoiser["extra"], "its latents are unscaled: the run says how far from unit variance"
    assert {"rec", "kl"} <= set(read_metrics(run / "vae" / "metrics.jsonl")[-1])
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(1, STEPS + 1))
    info = json.loads((run / "data.json").read_text())
    assert info["method"] == "medfusion" and info["vae_sha256"] and info["latent_factor"] == 4
    loaded = load_baseline(run)
    assert loaded.kind == "medfusion" and loaded.scale_factor == 1.0 and loaded.factor == 4


def test_resume_continues_exactly_across_both_phases(runs, tmp_path):
    prep = runs["prep"]
    full = _debug("train.steps=2", "vae_train.steps=2")
    train_baseline(method="medfusion", data=prep, vae_run=None, out=tmp_path / "full", config=full, progress=False)
    cut = tmp_path / "cut"
    # stop after the VAE's first step, then after the denoiser's first, then finish
    first = train_baseline(method="medfusion", data=prep, vae_run=None, out=cut, progress=False,
                           config=apply_overrides(full, ["vae_train.max_minutes=1e-9"]))
    assert first.stopped_by_time and not (cut / "checkpoints" / "last.pt").exists()
    second = train_baseline(method="medfusion", data=prep, vae_run=None, out=cut, resume=True, progress=False,
                            config=apply_overrides(full, ["train.max_minutes=1e-9"]))
    assert second.stopped_by_time and load_checkpoint(cut)["step"] == 1
    train_baseline(method="medfusion", data=prep, vae_run=None, out=cut, resume=True, progress=False, config=full)
    for name in ("vae.pt", "checkpoints/last.pt"):
        a, b = load_checkpoint(tmp_path / "full" / name), load_checkpoint(cut / name)
        assert a["step"] == b["step"] == 2
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (name, key)
    with pytest.raises(TumorGenError, match="cannot change once the denoiser has started"):
        train_baseline(method="medfusion", data=prep, vae_run=None, out=cut, resume=True, progress=False,
                       config=apply_overrides(full, ["vae_train.steps=5"]))


# ------------------------------------------------------------------------------------------ generate


def test_generate_contract_seeds_masks_and_its_own_sampler(runs):
    from tumorgen.data.prepared import load_prepared

    generate = load_baseline_generator(runs["medfusion"], method=None, steps=4)
    assert (generate.baseline.kind, generate.method, generate.steps) == ("medfusion", "ddpm", 4)
    assert load_baseline_generator(runs["medfusion"], method=None, steps=None).steps == 150
    image, _, _ = load_prepared(runs["prep"]).tumor_cases("train")[0].load()
    window = torch.from_numpy(np.stack([image, image[::-1].copy()])[:, None])  # (2, 1, 16, 16, 16)
    image_hat, mask = generate(window, BOXES, [7, 8])
    assert image_hat.shape == mask.shape == window.shape and image_hat.min() >= 0 and image_hat.max() <= 1
    for b, box in enumerate(BOXES.tolist()):
        inside = torch.zeros(16, 16, 16, dtype=torch.bool)
        inside[box[0]:box[3], box[1]:box[4], box[2]:box[5]] = True
        assert mask[b, 0][inside].sum() > 0 and mask[b, 0][~inside].sum() == 0
    again, again_mask = generate(window, BOXES, [7, 8])
    assert torch.equal(again, image_hat) and torch.equal(again_mask, mask), "same seed, same sample"
    other, _ = generate(window, BOXES, [7, 9])
    assert torch.allclose(other[0], image_hat[0], atol=1e-5) and not torch.allclose(other[1], image_hat[1])

    baseline = generate.baseline
    z = torch.randn(2, 8, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    m = latent_mask(mask, baseline.factor)
    for sampler in ("ddim", "ddpm"):
        z_hat = sample_latents(baseline, z, m, [1, 2], method=sampler, steps=3)
        outside = (m == 0).expand_as(z)
        assert torch.equal(z_hat[outside], z[outside]) and not torch.allclose(z_hat[~outside], z[~outside])


def test_hagan_and_medfusion_in_the_paired_protocol(runs, capsys):
    hagan = runs["root"] / "hagan"
    train_baseline(method="hagan", data=runs["prep"], vae_run=None, out=hagan, progress=False,
                   config=apply_overrides(load_config("debug"), ["train.steps=1"]))
    out = runs["root"] / "paired"
    assert main(["evaluate-paired", "--device", "cpu", "--data", str(runs["prep"]), "--out", str(out),
                 "--methods", f"hagan={hagan},medfusion={runs['medfusion']},empty", "--features", "none",
                 "--baseline-steps", "3", "--slices-per-plane", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["method"] for row in metrics["table"]][1:] == ["hagan", "medfusion-ddim-3", "empty"]
    assert metrics["baselines"]["hagan"] == str(hagan) and metrics["baselines"]["medfusion"] == str(runs["medfusion"])
    assert all(r["volume_ratio"] > 0 for r in metrics["per_case"]["hagan"]), "a bank mask in every box"
    capsys.readouterr()  # a wrong run folder: the protocol skips that method with one line, as for any method
    assert main(["evaluate-paired", "--device", "cpu", "--data", str(runs["prep"]), "--out", str(out) + "2",
                 "--methods", f"medfusion={hagan},empty", "--features", "none"]) == 0
    err = capsys.readouterr().err
    assert f"medfusion skipped: {hagan}: holds a hagan model, not medfusion" in err and "Traceback" not in err
