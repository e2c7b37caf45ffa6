"""The training objective and sampler end to end on tiny configs: finite terms, ablations, gradients,
determinism, and overfitting one case."""

from __future__ import annotations

import itertools

import pytest
import torch

from tumorgen.models import MaskRefiner, build_vae, build_velocity_unet, decoder_feature_channels
from tumorgen.models.tumorgen import TumorGenModels
from tumorgen.models.vae import compute_scale_factor, encode_mean
from tumorgen.synthesis.generate import sample_latents, sample_tumor
from tumorgen.training.objective import ABLATIONS, training_losses


@pytest.fixture(autouse=True)
def _one_thread():
    """Run these small 3D networks on one thread: on a shared 2-core machine, two threads per process
    made the same step 10-30x slower (oversubscribed OpenMP); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _case(size: int, center, radius: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    grid = torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij")
    dist2 = sum((g - c) ** 2 for g, c in zip(grid, center))
    mask = (dist2 <= radius**2).float()[None, None]  # (1, 1, S, S, S)
    image = 0.2 + 0.1 * torch.rand(1, 1, size, size, size, generator=gen) + 0.6 * mask
    return image, mask


def _tiny_models(seed: int = 0, unet_channels=(8, 16), widths=(8, 8, 4)) -> TumorGenModels:
    torch.manual_seed(seed)
    vae = build_vae(channels=(8, 16, 16), norm_num_groups=8)
    unet = build_velocity_unet(channels=unet_channels, attention_levels=(False,) * len(unet_channels),
                               norm_num_groups=8, num_head_channels=8)
    refiner = MaskRefiner(feature_channels=decoder_feature_channels(vae), widths=widths)
    return TumorGenModels(vae=vae, unet=unet, refiner=refiner)


def _tiny_setup(*, radius: float, alpha: float, time_sampling: str):
    """Tiny models, one 16^3 case with a tumor of `radius`, and the loss's keyword arguments."""
    image, mask = _case(16, (6, 8, 9), radius)
    return (_tiny_models(), {"image": image, "mask": mask},
            dict(scale_factor=1.0, alpha=alpha, time_sampling=time_sampling))


def test_velocity_unet_shapes_float_time_and_overrides():
    torch.manual_seed(0)
    unet = build_velocity_unet(channels=(8, 16), attention_levels=(False, False), norm_num_groups=8,
                               num_head_channels=8)
    with torch.no_grad():  # MONAI zero-initialises the output conv; give it weights to see t
        for param in unet.parameters():
            param.normal_(0.0, 0.2)
    x = torch.randn(2, 10, 4, 4, 4)
    out = unet(x, torch.tensor([0.5, 0.5]))
    assert out.shape == (2, 5, 4, 4, 4)
    # float time keeps its precision: a 1e-3 change in t changes the output
    assert not torch.allclose(out, unet(x, torch.tensor([0.501, 0.501])))
    with pytest.raises(ValueError, match="input channels"):
        unet(torch.randn(2, 9, 4, 4, 4), torch.tensor([0.5, 0.5]))
    ddpm = build_velocity_unet(channels=(8, 16), attention_levels=(False, False), norm_num_groups=8,
                               in_channels=4, out_channels=4, num_head_channels=8)
    assert ddpm(torch.randn(1, 4, 4, 4, 4), torch.tensor([0.1])).shape == (1, 4, 4, 4, 4)


def test_every_ablation_combination_gives_finite_losses_with_the_right_terms():
    models = _tiny_models()
    image, mask = _case(16, (6, 8, 9), 3)
    batch = {"image": image.repeat(2, 1, 1, 1, 1), "mask": mask.repeat(2, 1, 1, 1, 1)}
    for n in range(len(ABLATIONS) + 1):
        for combo in itertools.combinations(sorted(ABLATIONS), n):
            out = training_losses(models, batch, scale_factor=1.0, alpha=0.2, s=1.0,
                                  time_sampling="uniform", ablate=frozenset(combo),
                                  generator=torch.Generator().manual_seed(0))
            assert set(out) == {"loss", "rfm", "coarse", "fine", "rec"}
            assert all(torch.isfinite(v) for v in out.values()), combo
            for term, switch in (("coarse", "no_coarse"), ("fine", "no_fine"), ("rec", "no_vmr")):
                assert (out[term].item() == 0.0) == (switch in combo), (term, combo)
            expected = out["rfm"] + out["coarse"] + 0.5 * out["fine"] + out["rec"]
            assert torch.allclose(out["loss"], expected)
    with pytest.raises(ValueError, match="unknown ablation"):
        training_losses(models, batch, scale_factor=1.0, alpha=0.2, ablate=frozenset({"no_rfm"}))


def test_gradients_reach_unet_and_refiner_not_vae_and_seeds_repeat():
    models, batch, kwargs = _tiny_setup(radius=3, alpha=0.2, time_sampling="logit-normal")
    out = training_losses(models, batch, generator=torch.Generator().manual_seed(4), **kwargs)
    out["loss"].backward()
    assert all(p.grad is None for p in models.vae.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in models.unet.parameters())
    assert all(p.grad is not None for p in models.refiner.parameters())
    again = training_losses(models, batch, generator=torch.Generator().manual_seed(4), **kwargs)
    other = training_losses(models, batch, generator=torch.Generator().manual_seed(5), **kwargs)
    assert torch.equal(out["loss"].detach(), again["loss"].detach())
    assert not torch.equal(out["loss"].detach(), other["loss"].detach())
    # without the refiner pass, rec is 0 and the refiner gets no gradient
    models.refiner.zero_grad(set_to_none=True)
    off = training_losses(models, batch, run_refiner=False, generator=torch.Generator().manual_seed(4), **kwargs)
    off["loss"].backward()
    assert off["rec"].item() == 0.0 and all(p.grad is None for p in models.refiner.parameters())


@pytest.mark.slow
def test_overfitting_one_case_lowers_the_loss_and_samples_the_tumor_in_place():
    """80 Adam steps (lr 5e-3, refiner on every 2nd step, on the crop around the box) on one 32^3 case
    (8^3 latents): the loss on a fixed set of 4 seeded draws (boxes, noise, times) falls by at least
    1.3x (measured 1.42-1.5x), and the sampled mask overlaps the true one with Dice > 0.3 (measured
    0.66-0.76). About 20 s of CPU time on one thread (55 s wall on a 2-core machine at load 10)."""
    models = _tiny_models(unet_channels=(16, 32), widths=(8, 8, 4))
    image, mask = _case(32, (14, 17, 15), 6)
    batch = {"image": image, "mask": mask}
    with torch.no_grad():
        scale = compute_scale_factor(encode_mean(models.vae, image))
    kwargs = dict(scale_factor=scale, alpha=0.2, s=1.0, time_sampling="logit-normal")

    def fixed_loss() -> float:
        with torch.no_grad():
            draws = [training_losses(models, batch, generator=torch.Generator().manual_seed(100 + k), **kwargs)
                     for k in range(4)]
        return sum(d["loss"].item() for d in draws) / len(draws)

    before = fixed_loss()
    optimizer = torch.optim.Adam(models.trainable().parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(1)
    for step in range(80):
        out = training_losses(models, batch, run_refiner=step % 2 == 0, refiner_margin=2, generator=generator,
                              **kwargs)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    after = fixed_loss()
    assert after < before / 1.3, (before, after)

    box = torch.tensor([[6, 8, 6, 24, 26, 24]])  # image voxels, around the tumor (8..20, 11..23, 9..21)
    image_hat, mask_prob, mask_latent = sample_tumor(models, image, box, scale_factor=scale, steps=10,
                                                     generator=torch.Generator().manual_seed(0), refiner_margin=2)
    assert image_hat.shape == mask_prob.shape == image.shape and mask_latent.shape == (1, 1, 8, 8, 8)
    assert 0.0 <= mask_prob.min() and mask_prob.max() <= 1.0
    # outside the latent box the mask channel followed the known "no tumor" path exactly
    assert mask_latent[..., :1, :, :].max() == 0.0
    z_hat, m_hat, latent_boxes = sample_latents(models, image, box, scale_factor=scale, steps=10,
                                                generator=torch.Generator().manual_seed(0))
    assert torch.equal(m_hat, mask_latent) and latent_boxes.tolist() == [[1, 2, 1, 6, 7, 6]]
    # outside the box the latents are the scan's own
    z = encode_mean(models.vae, image) * scale
    assert torch.allclose(z_hat[..., :1, :, :], z[..., :1, :, :], atol=1e-5)
    predicted = (mask_prob > 0.5).float()
    dice = 2 * (predicted * mask).sum() / (predicted.sum() + mask.sum())
    assert dice > 0.3, dice.item()


def test_refiner_crop_with_a_covering_margin_equals_the_full_volume_and_crops_otherwise():
    models, batch, kwargs = _tiny_setup(radius=2, alpha=0.0, time_sampling="uniform")
    full = training_losses(models, batch, generator=torch.Generator().manual_seed(2), **kwargs)
    covering = training_losses(models, batch, refiner_margin=4, generator=torch.Generator().manual_seed(2),
                               **kwargs)
    assert torch.allclose(full["rec"], covering["rec"], atol=1e-6)
    cropped = training_losses(models, batch, refiner_margin=0, generator=torch.Generator().manual_seed(2),
                              **kwargs)
    assert torch.isfinite(cropped["rec"]) and cropped["rec"].item() != full["rec"].item()
    assert torch.equal(full["rfm"], cropped["rfm"])


def test_precomputed_latents_give_the_same_losses_as_encoding():
    """Trainers encode each volume once (the VAE is frozen): passing those latents changes nothing."""
    models = _tiny_models()
    image, mask = _case(16, (8, 8, 8), 3.0)
    scale = 1.7
    latent = encode_mean(models.vae, image).float() * scale
    common = dict(scale_factor=scale, alpha=0.1, run_refiner=True)
    encoded = training_losses(models, {"image": image, "mask": mask}, generator=torch.Generator().manual_seed(3),
                              **common)
    cached = training_losses(models, {"image": image, "mask": mask, "latent": latent},
                             generator=torch.Generator().manual_seed(3), **common)
    for key in ("loss", "rfm", "coarse", "fine", "rec"):
        assert torch.equal(encoded[key], cached[key]), key


def test_refiner_crops_follow_each_sample_and_hold_its_box():
    from tumorgen.models.refine import _refiner_crops

    box = torch.zeros(2, 1, 8, 8, 8)
    box[0, :, 0:2, 0:3, 1:3] = 1  # near one corner
    box[1, :, 5:8, 6:8, 4:6] = 1  # near the other
    crop_latent, crop_image, _ = _refiner_crops(box, 1, 4)
    cut = crop_latent(box)
    assert cut.shape == (2, 1, 5, 5, 4)  # the largest box extent + 2 x margin, per axis
    assert torch.equal(cut.sum(dim=(1, 2, 3, 4)), box.sum(dim=(1, 2, 3, 4)))  # every box voxel kept
    image = torch.arange(2 * 32**3, dtype=torch.float32).reshape(2, 1, 32, 32, 32)
    assert crop_image(image).shape == (2, 1, 20, 20, 16)
    assert crop_image(image)[1, 0, 0, 0, 0] == image[1, 0, 12, 12, 12]  # sample 1's crop starts at latent (3, 3, 3)


def test_training_sample_tumor_and_the_synthesis_api_refine_through_one_function(monkeypatch):
    """The refiner runs on the same crop with the same margin in training, in `sample_tumor` and in
    `model_generator` (the API's path): a run trained on crops and refined on the whole window at
    synthesis (the mismatch this catches) fed its GroupNorm other statistics."""
    import tumorgen.models.refine as refine
    from tumorgen.synthesis.generate import model_generator
    from tumorgen.training.run_folder import LoadedRun
    from tumorgen.config import apply_overrides, load_config

    models = _tiny_models(unet_channels=(16, 32), widths=(8, 8, 4))
    image, mask = _case(32, (14, 17, 15), 6)
    scale = 1.0
    seen = []
    real = refine.refiner_logits

    def spy(*args, **kwargs):
        seen.append(kwargs["margin"])
        return real(*args, **kwargs)

    monkeypatch.setattr(refine, "refiner_logits", spy)
    training_losses(models, {"image": image, "mask": mask}, scale_factor=scale, alpha=0.1,
                    refiner_margin=2, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[8, 8, 8, 24, 24, 24]])
    _, prob_direct, _ = sample_tumor(models, image, box, scale_factor=scale, steps=2,
                                     generator=torch.Generator().manual_seed(3), refiner_margin=2)
    config = apply_overrides(load_config("debug"), ["flow.refiner_margin=2"])
    run = LoadedRun(config=config, models=models, scale_factor=scale, data_info={}, version="test", step=0,
                    run_dir=None)
    generate = model_generator(run, steps=2, device=torch.device("cpu"))
    _, prob_api = generate(image, box, [3])
    assert seen == [2, 2, 2], seen  # training, sample_tumor, the API: one function, one margin
    # the refiner's crop (box + 2 latent voxels = image voxels 0..32 here) and nothing outside it
    assert prob_api.shape == prob_direct.shape == image.shape
    assert torch.allclose(prob_api, prob_direct, atol=1e-5)  # same noise (seed 3), same refiner path


def test_synthesis_takes_its_euler_steps_from_the_runs_config(monkeypatch):
    """`flow.sample_steps` is the one default: `model_generator` (and the API and CLI through it) samples
    with it when no steps are given, and with the given steps otherwise."""
    import tumorgen.synthesis.generate as generate_module
    from tumorgen.config import apply_overrides, load_config
    from tumorgen.training.run_folder import LoadedRun

    class Sampled(Exception):
        pass

    seen = []

    def spy(*args, steps, **kwargs):
        seen.append(steps)
        raise Sampled  # the steps are all this test needs

    monkeypatch.setattr(generate_module, "sample_latents", spy)
    config = apply_overrides(load_config("debug"), ["flow.sample_steps=3"])
    run = LoadedRun(config=config, models=_tiny_models(unet_channels=(16, 32), widths=(8, 8, 4)), scale_factor=1.0,
                    data_info={}, version="test", step=0, run_dir=None)
    image, _ = _case(32, (14, 17, 15), 6)
    box = torch.tensor([[8, 8, 8, 24, 24, 24]])
    for steps in (None, 5):
        with pytest.raises(Sampled):
            generate_module.model_generator(run, steps=steps, device=torch.device("cpu"))(image, box, [0])
    assert seen == [3, 5]
