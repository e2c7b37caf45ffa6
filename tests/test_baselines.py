"""Diffusion baselines (DiffTumor inpainting, BLD): mask bank, latent paste/blend exactness, training on the
shared loop (loss falls on one overfit case, exact resume), the generate contract, and run refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tumorgen.baselines.bld import bld_loss, sample_bld
from tumorgen.baselines.difftumor import difftumor_loss, inpainting_condition, latent_mask, sample_difftumor
from tumorgen.baselines.generators import load_baseline, load_baseline_generator, sample_latents
from tumorgen.baselines.latent_diffusion import DiffusionSchedule
from tumorgen.baselines.mask_bank import MaskBank, shrink_to_fit
from tumorgen.baselines.stage import build_baseline_unet, schedule_from_config, train_baseline
from tumorgen.cli import main
from tumorgen.config import apply_overrides, load_config, to_dict
from tumorgen.errors import TumorGenError
from tumorgen.training.checkpoint import load_checkpoint, save_checkpoint
from tumorgen.training.loop import read_metrics
from tumorgen.training.vae_stage import build_vae_from_config, latent_scale_factor

OVERFIT_STEPS = 16
# the fixed-noise loss after OVERFIT_STEPS steps must fall below 0.8x the initial one
# (measured: 1.016 -> 0.689 for DiffTumor, 1.016 -> 0.644 for BLD)
OVERFIT_FACTOR = 0.8


def _debug(*overrides):
    # lr 3e-3: a 16-step run on one case must move the loss visibly
    return apply_overrides(load_config("debug"), ["train.lr=3e-3", "train.ema_decay=0.5", *overrides])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tensors are tiny, and on a loaded 2-core machine a second OpenMP thread
    made a 4^3 U-Net forward ~40x slower (0.65 s vs 0.014 s, measured), waiting on the other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def runs(one_thread, tmp_path_factory):
    """A one-tumor PREP, an untrained (calibrated) VAE run, and a DiffTumor and a BLD run trained on it."""
    from conftest import write_tiny_prep

    root = tmp_path_factory.mktemp("baselines")
    prep = write_tiny_prep(root / "prep", n_cases=3)  # train: case01 (tumor) + case02 (healthy)
    cfg = _debug(f"train.steps={OVERFIT_STEPS}", f"train.checkpoint_every={OVERFIT_STEPS}")
    vae = build_vae_from_config(cfg, with_weights=False).eval()
    image = torch.from_numpy(np.stack([c.load()[0] for c in _cases(prep)])[:, None])  # (N, 1, X, Y, Z)
    scale = latent_scale_factor(vae, image, device=torch.device("cpu"))
    save_checkpoint(root / "vae" / "checkpoints" / "last.pt", kind="vae", step=0, config=to_dict(cfg), model=vae,
                    extra={"scale_factor": scale})
    for method in ("difftumor", "bld"):
        train_baseline(method=method, data=prep, vae_run=root / "vae", out=root / method, config=cfg, progress=False)
    return {"prep": prep, "vae": root / "vae", "difftumor": root / "difftumor", "bld": root / "bld", "cfg": cfg}


def _cases(prep):
    from tumorgen.data.prepared import load_prepared

    return load_prepared(prep).tumor_cases(split="train")


# ------------------------------------------------------------------------------------------ mask bank


def _ellipsoid(shape, center, radii):
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"))  # (3, X, Y, Z)
    return ((((grid - np.array(center)[:, None, None, None]) / np.array(radii)[:, None, None, None]) ** 2).sum(0)
            <= 1).astype(np.uint8)


def test_mask_bank_crops_round_trips_and_places_inside_the_box(tmp_path):
    masks = [_ellipsoid((24, 24, 24), (10, 12, 9), (3, 2, 4)), _ellipsoid((24, 24, 24), (12, 12, 12), (7, 6, 5)),
             np.zeros((24, 24, 24), np.uint8)]
    bank = MaskBank.from_masks(masks)
    assert len(bank.masks) == 2, "the empty (healthy) mask is left out"
    assert bank.masks[0].shape == (7, 5, 9) and bank.masks[0].sum() == masks[0].sum()
    loaded = MaskBank.load(bank.save(tmp_path / "bank.npz"))
    assert all(np.array_equal(a, b) for a, b in zip(bank.masks, loaded.masks))

    shape = (32, 32, 32)
    for seed in range(12):
        for box in [(4, 8, 0, 20, 20, 16), (8, 8, 8, 12, 12, 12), (0, 0, 28, 32, 32, 32)]:
            placed = bank.place(box, shape, rng=np.random.default_rng(seed))
            inside = np.zeros(shape, bool)
            inside[box[0]:box[3], box[1]:box[4], box[2]:box[5]] = True
            assert placed.any() and not placed[~inside].any(), (seed, box)
    a = bank.place((4, 8, 0, 20, 20, 16), shape, rng=np.random.default_rng(3))
    b = bank.place((4, 8, 0, 20, 20, 16), shape, rng=np.random.default_rng(3))
    assert np.array_equal(a, b), "same seed, same mask at the same place"
    # a 10 x 8 x 10 box holds only the small (7, 5, 9) tumor, which is never shrunk
    assert all(bank.place((4, 8, 0, 14, 16, 10), shape, rng=np.random.default_rng(s)).sum() == masks[0].sum()
               for s in range(5))


def test_shrink_keeps_the_shape_and_fits():
    big = _ellipsoid((20, 20, 20), (10, 10, 10), (9, 6, 3))[1:20, 4:17, 7:14]  # (19, 13, 7)
    small = shrink_to_fit(big, (8, 8, 8))
    assert all(s <= 8 for s in small.shape) and small.any()
    assert small.shape[0] > small.shape[1] > small.shape[2], "one factor on all axes keeps the aspect"
    assert shrink_to_fit(big, (1, 1, 1)).shape == (1, 1, 1)


def test_mask_bank_refuses_a_corrupt_file(tmp_path):
    np.savez(tmp_path / "bad.npz", voxels=np.ones(5, np.uint8), shapes=np.array([[2, 2, 2]]))
    with pytest.raises(TumorGenError, match="bad.npz"):
        MaskBank.load(tmp_path / "bad.npz")
    with pytest.raises(TumorGenError, match="not found"):
        MaskBank.load(tmp_path / "missing.npz")


# ------------------------------------------------------------------------------------------ maths


def test_latent_mask_marks_every_cell_holding_a_tumor_voxel():
    mask = torch.zeros(1, 1, 16, 16, 16)
    mask[0, 0, 5, 5, 5] = 1  # latent cell (1, 1, 1) at f = 4
    mask[0, 0, 12, 3, 15] = 1  # latent cell (3, 0, 3)
    m = latent_mask(mask, 4)
    assert m.shape == (1, 1, 4, 4, 4) and m.sum() == 2
    assert m[0, 0, 1, 1, 1] == 1 and m[0, 0, 3, 0, 3] == 1
    z = torch.randn(1, 4, 4, 4, 4)
    cond = inpainting_condition(z, m)
    assert cond.shape == (1, 5, 4, 4, 4) and cond[0, :4, 1, 1, 1].abs().sum() == 0 and torch.equal(cond[:, 4:], m)


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_samplers_keep_the_known_latents_outside_the_mask_exactly(method):
    schedule = DiffusionSchedule.scaled_linear(num_train_timesteps=100, beta_start=0.0015, beta_end=0.0195)
    g = torch.Generator().manual_seed(0)
    z, noise = torch.randn(2, 4, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, 4, generator=g)
    m = torch.zeros(2, 1, 4, 4, 4)
    m[:, :, 1:3, 1:3, 1:3] = 1
    seen = []

    def eps_fn(x, t):  # a fake denoiser that depends on its input, so the inside really changes
        seen.append(x.shape[1])
        return 0.3 * x[:, :4] + t.reshape(-1, 1, 1, 1, 1)

    for sampler, channels in ((sample_difftumor, 9), (sample_bld, 4)):
        out = sampler(eps_fn, z, m, noise, schedule=schedule, steps=7, method=method,
                      generator=torch.Generator().manual_seed(1))
        outside = (m == 0).expand_as(z)
        assert torch.equal(out[outside], z[outside])
        assert not torch.allclose(out[~outside], z[~outside])
        assert set(seen) == {channels}
        seen.clear()


def test_losses_are_ddpm_mse_with_the_right_inputs():
    schedule = DiffusionSchedule.linear(num_train_timesteps=50)
    z = torch.randn(3, 4, 4, 4, 4)
    m = (torch.rand(3, 1, 4, 4, 4) > 0.5).float()
    captured = {}

    def exact_eps(x, t):  # recovers eps exactly from x_t and the clean latents: the loss is then 0
        captured["x"] = x
        steps = (t * schedule.num_train_timesteps).round().long()
        abar = schedule.abar(steps, z)
        return (x[:, :4] - abar.sqrt() * z) / (1 - abar).sqrt()

    assert difftumor_loss(exact_eps, z, m, schedule=schedule, generator=torch.Generator().manual_seed(0)) < 1e-8
    assert torch.equal(captured["x"][:, 4:8], z * (1 - m)) and torch.equal(captured["x"][:, 8:], m)
    assert bld_loss(exact_eps, z, schedule=schedule, generator=torch.Generator().manual_seed(0)) < 1e-8
    assert captured["x"].shape[1] == 4


# ------------------------------------------------------------------------------------------ training


def _fixed_loss(net, method, z, m, schedule):
    """The loss with fixed t and noise (16 draws from seed 123), so two weights are compared fairly."""
    g = torch.Generator().manual_seed(123)
    zz, mm = z.expand(16, -1, -1, -1, -1), m.expand(16, -1, -1, -1, -1)  # (16, c, h, w, d)
    with torch.no_grad():
        if method == "difftumor":
            return difftumor_loss(net, zz, mm, schedule=schedule, generator=g).item()
        return bld_loss(net, zz, schedule=schedule, generator=g).item()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["difftumor", "bld"])
def test_training_on_one_case_lowers_the_loss_and_writes_a_run_folder(runs, method):
    run = runs[method]
    for name in ("config.json", "data.json", "metrics.jsonl", "loss_curve.png", "vae.pt", "mask_bank.npz",
                 "checkpoints/last.pt"):
        assert (run / name).exists(), name
    payload = load_checkpoint(run, expected_kind=method)
    assert payload["step"] == OVERFIT_STEPS and payload["extra"]["method"] == method
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, OVERFIT_STEPS + 1))
    assert all(np.isfinite(r["loss"]) for r in rows)

    baseline = load_baseline(run)
    cfg = baseline.config
    image, mask, _ = _cases(runs["prep"])[0].load()
    from tumorgen.models.vae import encode_mean

    with torch.no_grad():
        z = encode_mean(baseline.vae, torch.from_numpy(image)[None, None]) * baseline.scale_factor  # (1, c, h, w, d)
    m = latent_mask(torch.from_numpy(mask.astype(np.float32))[None, None], baseline.factor)
    untrained = build_baseline_unet(cfg, method).eval()
    trained = build_baseline_unet(cfg, method).eval()
    trained.load_state_dict(payload["model"])
    schedule = schedule_from_config(cfg.diffusion)
    before, after = _fixed_loss(untrained, method, z, m, schedule), _fixed_loss(trained, method, z, m, schedule)
    assert np.isfinite(after) and after < OVERFIT_FACTOR * before, (before, after)


def test_resume_continues_exactly(runs, tmp_path):
    cfg = _debug("train.steps=4", "train.checkpoint_every=2")
    full = train_baseline(method="bld", data=runs["prep"], vae_run=runs["vae"], out=tmp_path / "full", config=cfg,
                          progress=False)
    train_baseline(method="bld", data=runs["prep"], vae_run=runs["vae"], out=tmp_path / "cut",
                   config=_debug("train.steps=2"), progress=False)
    resumed = train_baseline(method="bld", data=runs["prep"], vae_run=runs["vae"], out=tmp_path / "cut", config=cfg,
                             resume=True, progress=False)
    assert full.step == resumed.step == 4
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


# ------------------------------------------------------------------------------------------ generate


def _window(runs):
    image, _, _ = _cases(runs["prep"])[0].load()
    return torch.from_numpy(np.stack([image, image[::-1].copy()])[:, None])  # (2, 1, 16, 16, 16)


BOXES = torch.tensor([[4, 4, 4, 12, 12, 12], [0, 4, 8, 8, 16, 16]], dtype=torch.int64)


@pytest.mark.parametrize("method,sampler", [("difftumor", "ddim"), ("bld", "ddpm")])
def test_generate_contract_shapes_ranges_masks_and_seeds(runs, method, sampler):
    generate = load_baseline_generator(runs[method], method=sampler, steps=4)
    window = _window(runs)
    image_hat, mask_prob = generate(window, BOXES, [7, 8])
    assert image_hat.shape == mask_prob.shape == window.shape
    assert image_hat.min() >= 0 and image_hat.max() <= 1 and torch.isfinite(image_hat).all()
    assert set(mask_prob.unique().tolist()) <= {0.0, 1.0}
    for b, box in enumerate(BOXES.tolist()):
        inside = torch.zeros(16, 16, 16, dtype=torch.bool)
        inside[box[0]:box[3], box[1]:box[4], box[2]:box[5]] = True
        assert mask_prob[b, 0][inside].sum() > 0 and mask_prob[b, 0][~inside].sum() == 0
    again, again_mask = generate(window, BOXES, [7, 8])
    assert torch.equal(again, image_hat) and torch.equal(again_mask, mask_prob)
    other, _ = generate(window, BOXES, [7, 9])
    assert torch.equal(other[0], image_hat[0]) or torch.allclose(other[0], image_hat[0], atol=1e-5)
    assert not torch.allclose(other[1], image_hat[1])
    alone, _ = generate(window[1:], BOXES[1:], [8])
    assert torch.allclose(alone[0], image_hat[1], atol=1e-5), "a sample does not depend on its batch"


@pytest.mark.parametrize("method", ["difftumor", "bld"])
def test_generated_latents_equal_the_scan_latents_outside_the_mask(runs, method):
    baseline = load_baseline(runs[method])
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 4, 4, 4, 4, generator=g)
    m = torch.zeros(2, 1, 4, 4, 4)
    m[0, :, 1:3, 1:3, 1:3] = 1
    m[1, :, 0:2, 1:4, 2:4] = 1
    for sampler in ("ddim", "ddpm"):
        z_hat = sample_latents(baseline, z, m, [1, 2], method=sampler, steps=3)
        outside = (m == 0).expand_as(z)
        assert torch.equal(z_hat[outside], z[outside])
        assert not torch.allclose(z_hat[~outside], z[~outside])


# ------------------------------------------------------------------------------------------ refusals


def test_a_tumorgen_checkpoint_is_refused_as_a_baseline_run(runs, tmp_path):
    fake = tmp_path / "tumorgen_run"
    shutil.copytree(runs["bld"], fake)
    payload = load_checkpoint(fake)
    save_checkpoint(fake / "checkpoints" / "last.pt", kind="tumorgen", step=1, config=payload["config"],
                    model=payload["model"])
    with pytest.raises(TumorGenError, match="'tumorgen' checkpoint where a baseline"):
        load_baseline_generator(fake)
    with pytest.raises(TumorGenError, match="no checkpoints/last.pt"):
        load_baseline_generator(tmp_path)
    incomplete = tmp_path / "incomplete"
    shutil.copytree(runs["bld"], incomplete)
    (incomplete / "mask_bank.npz").unlink()
    with pytest.raises(TumorGenError, match="missing mask_bank.npz"):
        load_baseline_generator(incomplete)
    with pytest.raises(TumorGenError, match="sampler"):
        load_baseline_generator(runs["bld"], method="euler")
    with pytest.raises(TumorGenError, match="steps must be in"):
        load_baseline_generator(runs["bld"], steps=0)
    generate = load_baseline_generator(runs["difftumor"], method="ddpm", steps=2)
    assert (generate.baseline.kind, generate.method, generate.steps) == ("difftumor", "ddpm", 2)
    from_config = load_baseline_generator(runs["bld"], method=None, steps=None)
    assert (from_config.method, from_config.steps) == ("ddim", 50)


def test_a_prep_without_training_tumors_is_refused(runs, tmp_path, capsys):
    from conftest import write_tiny_prep

    healthy = write_tiny_prep(tmp_path / "healthy", n_cases=2)  # train: case01, the healthy one
    with pytest.raises(TumorGenError, match="no tumor-bearing training cases"):
        train_baseline(method="bld", data=healthy, vae_run=runs["vae"], out=tmp_path / "run", config=runs["cfg"],
                       progress=False)
    assert main(["train-baseline", "--method", "bld", "--data", str(healthy), "--out", str(tmp_path / "r2")]) == 2
    assert "--vae is required" in capsys.readouterr().err


def test_cli_trains_refuses_an_existing_folder_and_a_resume_with_the_other_method(runs, tmp_path, capsys):
    out = tmp_path / "cli_run"
    args = ["train-baseline", "--method", "difftumor", "--data", str(runs["prep"]), "--vae", str(runs["vae"]),
            "--out", str(out), "--config", "debug", "--steps", "1", "--no-progress"]
    assert main(args) == 0
    assert load_checkpoint(out, expected_kind="difftumor")["step"] == 1
    assert main(args) == 2
    assert "already holds files" in capsys.readouterr().err
    assert main(["train-baseline", "--method", "bld", "--data", str(runs["prep"]), "--out", str(out), "--resume",
                 "--steps", "2", "--no-progress"]) == 2
    assert "'difftumor' checkpoint where a 'bld' checkpoint is needed" in capsys.readouterr().err
    assert main(["train-baseline", "--method", "difftumor", "--data", str(runs["prep"]), "--out", str(out),
                 "--resume", "--steps", "2", "--no-progress"]) == 0
    assert load_checkpoint(out)["step"] == 2


@pytest.mark.parametrize("method", ["difftumor", "bld"])
def test_a_baseline_runs_through_the_synthesis_pipeline(runs, method):
    import json
    from pathlib import Path

    from tumorgen.io.nifti import Volume
    from tumorgen.synthesis.pipeline import synthesize_into_scan

    image, _, affine = _cases(runs["prep"])[0].load()
    info = json.loads((runs[method] / "data.json").read_text())
    scan = Volume(array=(image * info["suv_max"]).astype(np.float32), affine=affine, path=Path("scan.nii.gz"))
    box = (4, 4, 4, 12, 12, 12)
    generate = load_baseline_generator(runs[method], method="ddim", steps=3)
    results = synthesize_into_scan(scan=scan, boxes=[box], generate=generate, model_info=info, num=2, seed=4,
                                   batch=2)
    again = synthesize_into_scan(scan=scan, boxes=[box], generate=generate, model_info=info, num=2, seed=4, batch=1)
    keep = np.ones(scan.array.shape, bool)
    keep[4:12, 4:12, 4:12] = False
    for result, other in zip(results, again):
        assert result.mask.sum() > 0 and result.mask[keep].sum() == 0
        assert np.array_equal(result.image[keep], scan.array[keep])
        assert np.array_equal(result.mask, other.mask) and np.allclose(result.image, other.image, atol=1e-4)


def test_diffusion_config_builds_the_schedule_and_refuses_bad_values():
    cfg = load_config("debug")
    scaled = schedule_from_config(cfg.diffusion)
    linear = schedule_from_config(apply_overrides(cfg, ["diffusion.schedule=linear"]).diffusion)
    assert scaled.num_train_timesteps == linear.num_train_timesteps == 1000
    assert torch.isclose(scaled.alphas_cumprod[0], torch.tensor(1 - 0.0015, dtype=torch.float64))
    assert torch.isclose(linear.alphas_cumprod[0], torch.tensor(1 - 0.0015, dtype=torch.float64))
    assert scaled.alphas_cumprod[500] > linear.alphas_cumprod[500], "sqrt-linear betas stay smaller mid-way"
    for bad in ("diffusion.schedule=cosine", "diffusion.sample_method=euler", "diffusion.beta_end=0.001",
                "diffusion.sample_steps=0"):
        with pytest.raises(TumorGenError, match="diffusion"):
            apply_overrides(cfg, [bad])


def test_a_box_window_baseline_trains_on_tumorgens_windows_and_synthesizes_any_box(tmp_path):
    """With `data.window = "box"` a baseline sees the windows TumorGen sees (the same bank), keeps masks at
    the window's scale, and its run goes through the pipeline for a box larger than the window."""
    import json
    from pathlib import Path

    from conftest import write_tiny_prep
    from test_learning_box_windows import OVERRIDES
    from tumorgen.io.nifti import Volume
    from tumorgen.synthesis.pipeline import synthesize_into_scan

    cfg = apply_overrides(load_config("ibsi"), OVERRIDES + ["train.steps=2", "train.checkpoint_every=2",
                                                            "data.windows_per_case=4"])
    prep = write_tiny_prep(tmp_path / "prep", size=32, n_cases=4, seed=3)
    vae = build_vae_from_config(cfg, with_weights=False).eval()
    image = torch.from_numpy(np.stack([c.load()[0] for c in _cases(prep)])[:, None, :16, :16, :16])
    save_checkpoint(tmp_path / "vae" / "checkpoints" / "last.pt", kind="vae", step=0, config=to_dict(cfg), model=vae,
                    extra={"scale_factor": latent_scale_factor(vae, image, device=torch.device("cpu"))})
    run = tmp_path / "difftumor"
    train_baseline(method="difftumor", data=prep, vae_run=tmp_path / "vae", out=run, config=cfg, progress=False)

    info = json.loads((run / "data.json").read_text())
    assert info["window"] == "box" and info["size"] == [16, 16, 16] and info["box_fill"] == 12
    flow = load_baseline(run).config.flow  # a baseline is never told the uptake, nor guided toward one
    assert (flow.uptake_condition, flow.uptake_embedding, flow.uptake_dropout, flow.guidance) == (False, False, 0.0, 1.0)
    bank = MaskBank.load(run / "mask_bank.npz")
    assert len(bank.masks) == 4 * len(_cases(prep))  # one mask per training window
    assert max(max(m.shape) for m in bank.masks) <= 12  # inside the box's 12 window voxels, whatever the tumor

    case_image, _, affine = _cases(prep)[0].load()
    scan = Volume(array=(case_image * info["suv_max"]).astype(np.float32), affine=affine, path=Path("scan.nii.gz"))
    box = (1, 1, 1, 31, 31, 31)  # 30 voxels a side: about 2x the 16-voxel window
    result = synthesize_into_scan(scan=scan, boxes=[box], generate=load_baseline_generator(run, steps=2),
                                  model_info=info, num=1, seed=0)[0]
    keep = np.ones(scan.array.shape, bool)
    keep[1:31, 1:31, 1:31] = False
    assert result.mask.sum() > 0 and result.mask[keep].sum() == 0
    assert np.array_equal(result.image[keep], scan.array[keep])
