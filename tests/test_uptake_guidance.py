"""Uptake on request: the uptake embedding (`flow.uptake_embedding`), the untold uptake learnt by
dropping it in training (`flow.uptake_dropout`) and classifier-free guidance at synthesis
(`flow.guidance`). Unit checks of each piece with expected values, then a toy model trained with all
three that makes the hotter tumor when asked, guided."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_tiny_prep
from test_learning_box_windows import train_toy_box_run
from test_uptake_condition import COLD, HOT, hot_and_cold_means


def _unet(*, embedding: bool = True, lite: bool = False):
    from tumorgen.models.velocity_unet import build_velocity_unet

    return build_velocity_unet(latent_channels=2, channels=(8, 8), attention_levels=(False, False),
                               num_head_channels=8, norm_num_groups=4, in_channels=7, uptake_embedding=embedding,
                               lite=lite)


def _randomized(unet):
    """Every weight drawn at random: a new U-Net outputs zeros (its last convolution starts at zero)."""
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in unet.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return unet


def _models(unet):
    from tumorgen.models.tumorgen import TumorGenModels
    from tumorgen.models.vae import build_vae

    return TumorGenModels(vae=build_vae(channels=(8, 16), latent_channels=2, norm_num_groups=4), unet=unet)


def test_the_embedding_starts_at_the_untold_vector_and_keeps_untold_apart():
    from tumorgen.models.uptake_embedding import UNTOLD, UptakeEmbedding

    emb = UptakeEmbedding(base_channels=8, embed_dim=32)
    uptake = torch.tensor([0.2, 0.8, UNTOLD])
    assert torch.equal(emb(uptake), torch.zeros(3, 32))  # zero-initialised: a new model starts channel-only
    with torch.no_grad():
        emb.untold.fill_(5.0)
        torch.nn.init.normal_(emb.mlp[-1].weight, generator=torch.Generator().manual_seed(0))
    out = emb(uptake)
    assert out.shape == (3, 32) and torch.equal(out[2], torch.full((32,), 5.0))
    assert not torch.allclose(out[0], out[1])  # different uptakes, different embeddings
    assert torch.isfinite(out).all()  # NaN never leaks into the network


def test_monai_and_lite_networks_agree_with_the_embedding():
    from tumorgen.models.uptake_embedding import UNTOLD

    monai_net, lite_net = _randomized(_unet()), _unet(lite=True)
    lite_net.load_state_dict(monai_net.state_dict())
    x, t = torch.randn(2, 7, 8, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0.1, 0.9])
    uptake = torch.tensor([0.4, UNTOLD])
    torch.testing.assert_close(lite_net(x, t, uptake), monai_net(x, t, uptake), rtol=1e-5, atol=1e-6)
    told = monai_net(x, t, torch.tensor([0.4, 0.4]))
    assert not torch.allclose(told[1], monai_net(x, t, uptake)[1])  # the untold sample differs


def test_the_network_asks_for_an_uptake_exactly_when_it_embeds_one():
    x, t = torch.randn(2, 7, 8, 8, 8), torch.zeros(2)
    with pytest.raises(ValueError, match="give one per sample"):
        _unet()(x, t)
    with pytest.raises(ValueError, match="shape"):
        _unet()(x, t, torch.tensor([0.3]))
    with pytest.raises(ValueError, match="no uptake embedding"):
        _unet(embedding=False)(x, t, torch.tensor([0.3, 0.3]))
    assert _unet(embedding=False)(x, t).shape == (2, 3, 8, 8, 8)


def test_an_untold_uptake_writes_zero_in_the_channel():
    from tumorgen.models.tumorgen import flow_condition
    from tumorgen.models.uptake_embedding import UNTOLD

    box = torch.zeros((2, 1, 4, 4, 4))
    box[:, :, 1:3, 1:3, 1:3] = 1
    cond = flow_condition(torch.zeros((2, 2, 4, 4, 4)), box, torch.tensor([0.5, UNTOLD]), _models(_unet()))
    assert cond[0, 3].max() == 0.5 and cond[1, 3].eq(0).all() and torch.isfinite(cond).all()


def test_guidance_is_the_untold_velocity_plus_w_times_the_difference():
    from tumorgen.models.tumorgen import flow_condition
    from tumorgen.models.uptake_embedding import UNTOLD
    from tumorgen.synthesis.generate import guided_velocity

    models = _models(_randomized(_unet()))
    box = torch.zeros((1, 1, 8, 8, 8))
    box[..., 2:6, 2:6, 2:6] = 1
    z_box = torch.randn((1, 2, 8, 8, 8), generator=torch.Generator().manual_seed(4)) * (1 - box)
    uptake = torch.tensor([0.6])
    told, untold = flow_condition(z_box, box, uptake, models), flow_condition(z_box, box, torch.tensor([UNTOLD]), models)
    x = torch.randn((1, 3, 8, 8, 8), generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.3])
    v_told = models.velocity(torch.cat([x, told], 1), t, uptake)
    v_untold = models.velocity(torch.cat([x, untold], 1), t, torch.tensor([UNTOLD]))
    for w in (0.0, 1.0, 2.5):
        v = guided_velocity(models, uptake, guidance=w, cond_untold=untold)(torch.cat([x, told], 1), t)
        torch.testing.assert_close(v, v_untold + w * (v_told - v_untold), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="untold condition"):
        guided_velocity(models, uptake, guidance=2.0)


def test_dropout_teaches_the_untold_vector_and_no_dropout_leaves_it_alone():
    from tumorgen.training.objective import training_losses

    gen = torch.Generator().manual_seed(0)
    image = torch.rand((2, 1, 16, 16, 16), generator=gen)
    mask = torch.zeros_like(image)
    mask[..., 4:12, 4:12, 4:12] = 1
    for dropout, learns in ((0.0, False), (0.99, True)):
        unet = _randomized(_unet())
        models = _models(unet)
        losses = training_losses(models, {"image": image, "mask": mask, "uptake": torch.tensor([0.3, 0.7])},
                                 scale_factor=1.0, alpha=0.1, run_refiner=False, uptake_dropout=dropout,
                                 generator=torch.Generator().manual_seed(7))
        losses["loss"].backward()
        grad = unet.unet.class_embedding.untold.grad
        assert (grad is not None and grad.abs().sum() > 0) == learns, dropout


@pytest.mark.parametrize("overrides, problem", [
    (["flow.uptake_condition=false", "flow.uptake_embedding=true"], "need flow.uptake_condition"),
    (["flow.uptake_condition=false", "flow.uptake_dropout=0.1"], "need flow.uptake_condition"),
    (["flow.uptake_dropout=1.0"], "uptake_dropout must be in"),
    (["flow.guidance=-1"], "guidance must be >= 0"),
])
def test_the_config_refuses_what_cannot_be_trained(overrides, problem):
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.errors import TumorGenError

    with pytest.raises(TumorGenError, match=problem):
        apply_overrides(load_config("ibsi"), overrides)




@pytest.fixture(scope="module")
def guided_run(tmp_path_factory, one_thread):
    """Toy box-window models with the embedding and 20% dropout, trained on alternately hot and cold tumors."""
    root = tmp_path_factory.mktemp("guided_run")
    prep = write_tiny_prep(root / "prep", size=32, n_cases=7, seed=5, uptakes=(HOT, COLD))
    return prep, train_toy_box_run(root, prep, extra=("flow.uptake_condition=true", "flow.uptake_embedding=true",
                                                     "flow.uptake_dropout=0.2"))


@pytest.mark.slow
def test_a_guided_model_makes_the_hotter_tumor_and_guidance_is_refused_without_dropout(guided_run, tmp_path):
    from tumorgen.api import TumorGen
    from tumorgen.errors import TumorGenError

    prep, run = guided_run
    model = TumorGen.load(run, device="cpu")
    means, (scan, affine, box) = hot_and_cold_means(model, prep, guidance=2.0)
    assert len(means[HOT]) == len(means[COLD]) == 3, means
    assert np.mean(means[HOT]) > 1.2 * np.mean(means[COLD]), means
    def images(**kw):
        return [r.image for r in model.synthesize(scan, affine=affine, box=box, num=2, steps=2, seed=4, **kw)]

    first, again = images(suv_mean=6.0, guidance=2.0), images(suv_mean=6.0, guidance=2.0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, images(suv_mean=6.0, guidance=1.0)))
    # a drawn uptake samples at guidance 1 whatever scale is given
    assert all(np.array_equal(a, b) for a, b in zip(images(guidance=2.0), images(guidance=1.0)))
    # a told uptake is made exact by default (uptake_match), on the network's own mask
    exact = model.synthesize(scan, affine=affine, box=box, num=2, steps=2, seed=4, suv_mean=6.0)
    own = model.synthesize(scan, affine=affine, box=box, num=2, steps=2, seed=4, suv_mean=6.0, match_uptake=False)
    for a, b in zip(exact, own):
        assert np.array_equal(a.mask, b.mask) and a.mask.any()
        assert a.image[a.mask > 0].mean() == pytest.approx(6.0, rel=1e-4)
        assert b.image[b.mask > 0].mean() != pytest.approx(6.0, rel=1e-2)
    with pytest.raises(TumorGenError, match="guidance must be >= 0"):
        model.synthesize(scan, affine=affine, box=box, steps=1, guidance=-1.0)


@pytest.mark.slow
def test_guidance_is_refused_by_a_model_trained_without_dropout(trained_debug_run):
    from tumorgen.api import TumorGen
    from tumorgen.errors import TumorGenError

    scan = np.full((16, 16, 16), 2.0, dtype=np.float32)
    with pytest.raises(TumorGenError, match="without flow.uptake_dropout"):
        TumorGen.load(trained_debug_run, device="cpu").synthesize(scan, affine=np.diag([4.0, 4.0, 4.0, 1.0]),
                                                                  box=(4, 4, 4, 12, 12, 12), steps=1, guidance=2.0)


@pytest.mark.slow
def test_evaluate_paired_asks_the_guided_model_for_a_grid_of_uptakes(guided_run, tmp_path, capsys):
    import json

    from tumorgen.cli import main

    prep, run = guided_run
    out = tmp_path / "paired"
    assert main(["evaluate-paired", "--data", str(prep), "--out", str(out), "--methods", f"tumorgen={run},blob",
                 "--features", "none", "--steps", "2", "--told-steps", "", "--uptake-grid", "3,8",
                 "--guidance", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "uptake on request (uptake_request.md), tumorgen-2:" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    result = metrics["uptake_request"]["tumorgen-2"]
    assert metrics["guidance"] == 2.0 and list(metrics["uptake_request"]) == ["tumorgen-2"]  # blob is not asked
    assert len(result["records"]) == 2 * len(metrics["cases"]) and result["asked"] == [3.0, 8.0]
    assert "| 8 |" in (out / "uptake_request.md").read_text()
    assert main(["evaluate-paired", "--data", str(prep), "--out", str(tmp_path / "bad"), "--methods", "tumorgen=" + str(run),
                 "--features", "none", "--uptake-grid", "3,-1"]) == 2
    assert "--uptake-grid takes positive SUV values" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_a_fixed_mean_suv_reaches_the_model_and_is_refused_where_none_is_taken():
    from tumorgen.errors import TumorGenError
    from tumorgen.generators import TumorGenerator, with_suv_mean

    asked = []
    record = TumorGenerator(name="toy", kind="tumorgen", uptake_conditioned=True,
                            make=lambda suv, affine, box, seed, suv_mean: asked.append(suv_mean) or (suv, suv))
    assert with_suv_mean(record, None) is record
    with_suv_mean(record, 6.5)(np.zeros((4, 4, 4)), np.eye(4), (0, 0, 0, 2, 2, 2), 1)
    assert asked == [6.5]
    with pytest.raises(TumorGenError, match="positive SUV"):
        with_suv_mean(record, 0.0)
    blind = TumorGenerator(name="blob", kind="blob", make=record.make)
    with pytest.raises(TumorGenError, match="cannot be given a mean SUV"):
        with_suv_mean(blind, 6.5)


@pytest.mark.slow
def test_synthesize_takes_the_uptake_controls(guided_run, tmp_path, capsys):
    import json

    from tumorgen.cli import main
    from tumorgen.data.prepared import load_prepared
    from tumorgen.io.nifti import save_volume

    prep, run = guided_run
    image, mask, affine = load_prepared(prep).tumor_cases("train")[0].load()
    save_volume(image * 10.0, affine, tmp_path / "scan.nii.gz")
    args = ["synthesize", "--model", str(run), "--input", str(tmp_path / "scan.nii.gz"), "--out", str(tmp_path / "out"),
            "--box", "8", "8", "8", "20", "20", "20", "--steps", "2", "--suv-mean", "6", "--guidance", "2", "--no-progress"]
    assert main(args) == 0
    text = json.dumps(json.loads((tmp_path / "out" / "manifest.json").read_text()))
    assert '"guidance": 2.0' in text and '"suv_mean": 6.0' in text and '"match_uptake": true' in text
    assert main(args[:-3] + ["--guidance", "-1", "--no-progress", "--overwrite"]) == 2
    assert "guidance must be >= 0" in capsys.readouterr().err
    without_suv = [a for a in args if a not in ("--suv-mean", "6")] + ["--overwrite"]
    assert main(without_suv) == 2
    assert "give --suv-mean with it" in capsys.readouterr().err
