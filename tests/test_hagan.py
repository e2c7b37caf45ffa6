"""HA-GAN (baselines/hagan.py, hagan_stage.py): the networks' shapes and size, one iteration updating every
network, training on the shared loop (run folder, exact resume), the generate contract (seeded, pasted
inside the box only), the synthesis pipeline and `build_generator`, the CLI, and run refusals."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tumorgen.baselines.generators import LoadedHAGAN, load_baseline, load_baseline_generator
from tumorgen.baselines.hagan import build_hagan, check_window_shape, condition
from tumorgen.baselines.hagan_stage import hagan_optimizer, hagan_step
from tumorgen.baselines.stage import train_baseline
from tumorgen.cli import main
from tumorgen.config import HAGANConfig, apply_overrides, load_config
from tumorgen.errors import TumorGenError
from tumorgen.generators import build_generator
from tumorgen.training.checkpoint import load_checkpoint
from tumorgen.training.loop import read_metrics

# one intra-op thread for the whole module: tiny 3D tensors on a loaded 2-core machine run many times
# slower with two threads waiting on each other (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 3
BOXES = torch.tensor([[4, 4, 4, 12, 12, 12], [0, 4, 8, 8, 16, 16]], dtype=torch.int64)


def _debug(*overrides):
    return apply_overrides(load_config("debug"), [f"train.steps={STEPS}", "train.checkpoint_every=1", *overrides])


@pytest.fixture(scope="module")
def runs(one_thread, tmp_path_factory):
    """A one-tumor PREP of 16^3 and a HA-GAN trained on it for a few steps (debug preset)."""
    from conftest import write_tiny_prep

    root = tmp_path_factory.mktemp("hagan")
    prep = write_tiny_prep(root / "prep", n_cases=3)  # train: case01 (tumor) + case02 (healthy)
    train_baseline(method="hagan", data=prep, vae_run=None, out=root / "hagan", config=_debug(), progress=False)
    return {"prep": prep, "hagan": root / "hagan"}


def _window(prep):
    from tumorgen.data.prepared import load_prepared

    image, _, _ = load_prepared(prep).tumor_cases("train")[0].load()
    return torch.from_numpy(np.stack([image, image[::-1].copy()])[:, None])  # (2, 1, 16, 16, 16)


# ------------------------------------------------------------------------------------------ networks


def test_the_networks_on_an_ibsi_window_have_the_papers_shapes_and_a_cpu_size():
    cfg = HAGANConfig()
    model = build_hagan((32, 32, 32), cfg)
    count = sum(p.numel() for p in model.parameters())
    assert 3e5 < count < 3e6, count  # the reference 256^3 model: 80 M (G 52 M); here a CPU budget
    g = model.generator
    cond = condition(torch.zeros(2, 1, 32, 32, 32), torch.zeros(2, 1, 32, 32, 32), torch.zeros(2, 1, 32, 32, 32))
    z = torch.randn(2, cfg.latent_dim)
    high, low = g(z, cond, start=3)
    assert high.shape == (2, 1, 8, 32, 32), "one of 4 sub-volumes at full resolution"
    assert low.shape == (2, 1, 16, 16, 16), "the whole window at r = 2"
    assert g(z, cond).shape == (2, 1, 32, 32, 32), "inference: every sub-volume at once"
    assert high.abs().max() <= 1 and low.abs().max() <= 1  # tanh
    assert g.possible_starts == 13
    assert model.encoder_high(high).shape == (2, 2 * cfg.channels, 4, 16, 16), "E^H: a slab of the feature map"
    feats = torch.zeros(2, 2 * cfg.channels, 16, 16, 16)
    assert model.encoder_global(feats).shape == (2, cfg.latent_dim), "E^G: back to the noise vector"
    logit = model.discriminate(torch.zeros(2, 3, 8, 32, 32), torch.zeros(2, 3, 16, 16, 16), torch.zeros(2, 1))
    assert logit.shape == (2, 1)


def test_the_critics_learn_to_tell_a_box_that_differs_from_the_real_one():
    """A fake differs from its real window only inside the box; mean-pooled critics never saw it (the D loss
    stayed at 2 ln 2 for a whole IBSI run). Flattened, they separate such pairs within a few dozen steps."""
    torch.manual_seed(0)
    model = build_hagan((32, 32, 32), HAGANConfig())
    critics = [*model.disc_high.parameters(), *model.disc_low.parameters()]
    optimizer = torch.optim.Adam(critics, lr=HAGANConfig().lr_d, betas=(0.0, 0.999))
    box = torch.zeros(4, 1, 32, 32, 32)
    box[:, :, 12:20, 12:20, 12:20] = 1.0  # an eighth of the window's side: 1/64 of its voxels
    position = torch.full((4, 1), 0.5)
    losses = []
    for _ in range(40):
        real = torch.rand(4, 1, 32, 32, 32) * 0.2 - 0.8
        fake = real + 0.4 * box  # hotter inside the box only
        logits = [model.discriminate(torch.cat([x[:, :, 8:16], box[:, :, 8:16], box[:, :, 8:16]], dim=1),
                                     torch.cat([F.avg_pool3d(t, 2) for t in (x, box, box)], dim=1), position)
                  for x in (real, fake)]
        loss = (F.binary_cross_entropy_with_logits(logits[0], torch.ones_like(logits[0]))
                + F.binary_cross_entropy_with_logits(logits[1], torch.zeros_like(logits[1])))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(2 * math.log(2), abs=0.05) and max(losses[-5:]) < 1.0, losses


def test_windows_the_generator_cannot_tile_are_refused():
    assert check_window_shape((32, 32, 32), HAGANConfig()) is None
    assert "divisible by 4 x hagan.low_res_factor" in check_window_shape((20, 32, 32), HAGANConfig())
    assert "hagan.sub_volumes" in check_window_shape((16, 16, 16), HAGANConfig(sub_volumes=3))
    with pytest.raises(ValueError, match="divisible"):
        build_hagan((24, 24, 24), HAGANConfig(low_res_factor=4))


def test_one_iteration_updates_all_five_networks_and_leaves_them_trainable():
    torch.manual_seed(0)
    cfg = load_config("debug")
    model = build_hagan((16, 16, 16), cfg.hagan)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    box = torch.zeros(2, 1, 16, 16, 16)
    box[:, :, 4:12, 4:12, 4:12] = 1
    batch = {"image": x, "box": box, "mask": box.clone()}
    noise = (torch.randn(2, cfg.hagan.latent_dim), torch.randn(2, cfg.hagan.latent_dim))
    losses = hagan_step(model, hagan_optimizer(model, cfg), batch, start=2, noise=noise)
    assert set(losses) == {"loss", "d", "g", "e_high", "e_global"} and all(torch.isfinite(v) for v in losses.values())
    for name in ("generator.", "disc_high.", "disc_low.", "encoder_high.", "encoder_global."):
        changed = [k for k, v in model.state_dict().items() if k.startswith(name) and not torch.equal(v, before[k])]
        assert changed, f"{name} was not updated"
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ training


def test_training_writes_a_baseline_run_folder(runs):
    run = runs["hagan"]
    for name in ("config.json", "data.json", "metrics.jsonl", "loss_curve.png", "mask_bank.npz", "checkpoints/last.pt"):
        assert (run / name).exists(), name
    assert not (run / "vae.pt").exists(), "HA-GAN works on the image"
    payload = load_checkpoint(run, expected_kind="hagan")
    assert payload["step"] == STEPS and payload["extra"]["method"] == "hagan"
    assert any(k.startswith("encoder_global.") for k in payload["model"]), "the amortized encoder is trained too"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert all({"d", "g", "e_high", "e_global"} <= set(r) and np.isfinite(r["loss"]) for r in rows)
    info = json.loads((run / "data.json").read_text())
    assert info["method"] == "hagan" and info["size"] == [16, 16, 16]


def test_resume_continues_exactly(runs, tmp_path):
    cfg = _debug("train.steps=4", "train.checkpoint_every=2")
    train_baseline(method="hagan", data=runs["prep"], vae_run=None, out=tmp_path / "full", config=cfg, progress=False)
    train_baseline(method="hagan", data=runs["prep"], vae_run=None, out=tmp_path / "cut",
                   config=_debug("train.steps=2"), progress=False)
    resumed = train_baseline(method="hagan", data=runs["prep"], vae_run=None, out=tmp_path / "cut", config=cfg,
                             resume=True, progress=False)
    assert resumed.step == 4
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


# ------------------------------------------------------------------------------------------ generate


def test_generate_contract_seeds_masks_and_the_box(runs):
    generate = load_baseline_generator(runs["hagan"], method=None, steps=None)
    assert isinstance(generate.baseline, LoadedHAGAN) and (generate.method, generate.steps) == (None, None)
    window = _window(runs["prep"])
    image_hat, mask = generate(window, BOXES, [7, 8])
    assert image_hat.shape == mask.shape == window.shape
    assert image_hat.min() >= 0 and image_hat.max() <= 1 and set(mask.unique().tolist()) <= {0.0, 1.0}
    for b, box in enumerate(BOXES.tolist()):
        inside = torch.zeros(16, 16, 16, dtype=torch.bool)
        inside[box[0]:box[3], box[1]:box[4], box[2]:box[5]] = True
        assert mask[b, 0][inside].sum() > 0 and mask[b, 0][~inside].sum() == 0, "a bank mask, inside its box"
        assert torch.allclose(image_hat[b, 0][~inside], window[b, 0][~inside], atol=1e-6), "the window outside the box"
        assert not torch.allclose(image_hat[b, 0][inside], window[b, 0][inside], atol=1e-3), "generated inside"
    again, again_mask = generate(window, BOXES, [7, 8])
    assert torch.equal(again, image_hat) and torch.equal(again_mask, mask), "same seed, same sample"
    other, _ = generate(window, BOXES, [7, 9])
    assert torch.allclose(other[0], image_hat[0], atol=1e-5) and not torch.allclose(other[1], image_hat[1])
    alone, _ = generate(window[1:], BOXES[1:], [8])
    assert torch.allclose(alone[0], image_hat[1], atol=1e-5), "a sample does not depend on its batch"


def test_build_generator_runs_it_through_the_synthesis_pipeline(runs):
    from tumorgen.data.prepared import load_prepared

    image, _, affine = load_prepared(runs["prep"]).tumor_cases("train")[0].load()
    suv = image * 10.0
    generator = build_generator("hagan", runs["hagan"], device="cpu")
    assert (generator.name, generator.kind, generator.sampler, generator.steps) == ("hagan", "hagan", None, None)
    assert generator.record["step"] == STEPS
    box = (3, 4, 5, 13, 12, 11)
    out, mask = generator(suv, affine, box, seed=4)
    again, _ = generator(suv, affine, box, seed=4)
    keep = np.ones(suv.shape, bool)
    keep[3:13, 4:12, 5:11] = False
    assert np.array_equal(out[keep], suv[keep]) and mask.sum() > 0 and mask[keep].sum() == 0
    assert np.allclose(out, again, atol=1e-4)
    with pytest.raises(TumorGenError, match="one pass"):
        build_generator("hagan", runs["hagan"], steps=10)


# ------------------------------------------------------------------------------------------ CLI and refusals


def test_cli_trains_resumes_and_refuses_a_vae(runs, tmp_path, capsys):
    out = tmp_path / "cli_run"
    args = ["train-baseline", "--method", "hagan", "--data", str(runs["prep"]), "--out", str(out),
            "--config", "debug", "--steps", "1", "--no-progress"]
    assert main(args) == 0
    assert load_checkpoint(out, expected_kind="hagan")["step"] == 1
    assert main(["train-baseline", "--method", "hagan", "--data", str(runs["prep"]), "--out", str(out), "--resume",
                 "--steps", "2", "--no-progress"]) == 0
    assert load_checkpoint(out)["step"] == 2
    capsys.readouterr()
    assert main([*args[:-3], "--vae", str(out), "--no-progress"]) == 2
    assert "--vae does not apply to hagan" in capsys.readouterr().err
    assert main(["train-baseline", "--method", "difftumor", "--data", str(runs["prep"]), "--out", str(out),
                 "--resume", "--steps", "3", "--no-progress"]) == 2
    assert "'hagan' checkpoint where a 'difftumor' checkpoint is needed" in capsys.readouterr().err


def test_a_wrong_run_folder_is_one_clear_error(runs, tmp_path, capsys):
    with pytest.raises(TumorGenError, match="missing: is not a training run folder"):
        build_generator("hagan", tmp_path / "missing")
    with pytest.raises(TumorGenError, match="is not a folder"):
        load_baseline(tmp_path / "missing")
    incomplete = Path(shutil.copytree(runs["hagan"], tmp_path / "incomplete"))
    (incomplete / "mask_bank.npz").unlink()
    with pytest.raises(TumorGenError, match="missing mask_bank.npz"):
        load_baseline(incomplete)
    broken = Path(shutil.copytree(runs["hagan"], tmp_path / "broken"))
    (broken / "data.json").write_text(json.dumps({"size": [16, 16]}))
    with pytest.raises(TumorGenError, match="has no window size"):
        load_baseline(broken)
    out = tmp_path / "set"
    code = main(["generate-set", "--method", "hagan", "--model", str(tmp_path), "--data", str(runs["prep"]),
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "has no data.json" in err or "no checkpoints/last.pt" in err
