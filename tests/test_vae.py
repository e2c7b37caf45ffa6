"""VAE builders: shapes at f = 4, decoder features per scale, MAISI configuration and weight loading."""

from __future__ import annotations

import pytest
import torch

from tumorgen.errors import TumorGenError
from tumorgen.models.vae import build_vae, compute_scale_factor, decode, decode_with_features, decoder_feature_channels
from tumorgen.models.vae import encode_mean, encode_sample, latent_factor


@pytest.fixture(scope="module")
def kl_vae():
    torch.manual_seed(0)
    return build_vae(arch="kl", channels=(8, 16, 16), norm_num_groups=8).eval()


def test_kl_shapes_and_factor(kl_vae):
    x = torch.rand(2, 1, 16, 12, 8)
    assert latent_factor(kl_vae) == 4
    with torch.no_grad():
        z = encode_mean(kl_vae, x)
        assert z.shape == (2, 4, 4, 3, 2)
        assert decode(kl_vae, z).shape == x.shape


def test_encode_sample_is_seeded_and_centred_on_the_mean(kl_vae):
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        z1, mu, sigma = encode_sample(kl_vae, x, generator=torch.Generator().manual_seed(5))
        z2, _, _ = encode_sample(kl_vae, x, generator=torch.Generator().manual_seed(5))
        assert torch.equal(z1, z2)
        assert torch.allclose(mu, encode_mean(kl_vae, x))
        assert (sigma > 0).all() and not torch.equal(z1, mu)


def test_decode_with_features_scales_and_channels(kl_vae):
    z = torch.randn(1, 4, 3, 2, 4)
    with torch.no_grad():
        image, feats = decode_with_features(kl_vae, z)
        assert torch.allclose(image, decode(kl_vae, z), atol=1e-6)
    assert [tuple(f.shape[2:]) for f in feats] == [(3, 2, 4), (6, 4, 8), (12, 8, 16)]
    assert decoder_feature_channels(kl_vae) == (16, 16, 8) == tuple(f.shape[1] for f in feats)


def test_compute_scale_factor_gives_unit_std():
    latents = 3.0 * torch.randn(10000, generator=torch.Generator().manual_seed(0)) + 1.0
    factor = compute_scale_factor(latents)
    assert factor == pytest.approx(1 / 3, rel=0.03)
    assert (latents * factor).std().item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError):
        compute_scale_factor(torch.ones(10))


def test_kl_weights_nested_round_trip_and_refusals(tmp_path, kl_vae):
    path = tmp_path / "vae.pt"
    torch.save({"step": 3, "model": {f"module.{k}": v for k, v in kl_vae.state_dict().items()}}, path)
    loaded = build_vae(arch="kl", channels=(8, 16, 16), norm_num_groups=8, weights=path)
    for key, value in kl_vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(TumorGenError, match="not found"):
        build_vae(arch="kl", weights=tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(TumorGenError, match="broken.pt"):
        build_vae(arch="kl", weights=broken)
    with pytest.raises(TumorGenError, match="do not match"):
        build_vae(arch="kl", channels=(8, 16, 32), norm_num_groups=8, weights=path)


def test_maisi_configuration_features_and_weights(tmp_path, kl_vae):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    maisi = build_vae(arch="maisi").eval()
    assert type(maisi).__name__ == "AutoencoderKlMaisi"
    assert latent_factor(maisi) == 4
    assert decoder_feature_channels(maisi) == (256, 128, 64)
    with torch.no_grad():
        x = torch.rand(1, 1, 8, 8, 8)
        z = encode_mean(maisi, x)
        assert z.shape == (1, 4, 2, 2, 2)
        image, feats = decode_with_features(maisi, z)
        assert image.shape == x.shape and image.dtype == torch.float32
        assert [f.shape[2] for f in feats] == [2, 4, 8]
    path = tmp_path / "maisi.safetensors"
    save_file({k: v.contiguous() for k, v in maisi.state_dict().items()}, str(path))
    torch.manual_seed(2)
    again = build_vae(arch="maisi", weights=path)
    for key, value in maisi.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)
    kl_path = tmp_path / "kl.pt"
    torch.save({"unet_state_dict": kl_vae.state_dict()}, kl_path)
    with pytest.raises(TumorGenError, match="kl.pt: VAE weights do not match"):
        build_vae(arch="maisi", weights=kl_path)
