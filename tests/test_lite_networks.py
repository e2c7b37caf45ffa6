"""The MONAI-free inference twins load MONAI's weights strictly and compute the same outputs.

Each case builds the MONAI network with a seed, perturbs every parameter (MONAI zero-initialises some
output convolutions, which would hide a wrong path behind zeros), loads the state_dict strictly into
the twin and compares outputs on random input.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tumorgen.models.lite_autoencoder import LiteAutoencoderKL
from tumorgen.models.lite_diffusion_unet import LiteDiffusionModelUNet, get_timestep_embedding
from tumorgen.models.vae import build_vae, decode_with_features, latent_factor
from tumorgen.models.velocity_unet import build_velocity_unet

ATOL = 1e-5


def _perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter so no branch is silenced by MONAI's zero initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return module.eval()


def _twin(reference: torch.nn.Module, lite: torch.nn.Module) -> torch.nn.Module:
    assert list(lite.state_dict()) == list(reference.state_dict())  # same keys, same order
    lite.load_state_dict(reference.state_dict(), strict=True)
    return lite.eval()


# (channels, norm_num_groups, attention): the debug preset, the ibsi preset, non-local attention
VAE_CASES = [((8, 16, 16), 8, False), ((16, 32), 8, False), ((8, 16), 8, True)]


@pytest.mark.parametrize("channels,groups,attention", VAE_CASES)
def test_lite_vae_matches_monai(channels, groups, attention):
    torch.manual_seed(0)
    args = dict(channels=channels, latent_channels=4, norm_num_groups=groups, attention=attention)
    monai_vae = _perturbed(build_vae(**args))
    lite_vae = _twin(monai_vae, build_vae(**args, lite=True))
    assert isinstance(lite_vae, LiteAutoencoderKL)
    assert latent_factor(lite_vae) == latent_factor(monai_vae)
    assert lite_vae.post_quant_conv.conv.in_channels == 4

    x = torch.randn(2, 1, 16, 16, 16)
    z = torch.randn(2, 4, *(16 // latent_factor(monai_vae),) * 3)
    with torch.no_grad():
        for ours, theirs in zip(lite_vae.encode(x), monai_vae.encode(x)):
            torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
        torch.testing.assert_close(lite_vae.decode(z), monai_vae.decode(z), atol=ATOL, rtol=0)
        out, feats = decode_with_features(lite_vae, z)
        ref_out, ref_feats = decode_with_features(monai_vae, z)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)
    assert len(feats) == len(ref_feats)
    for ours, theirs in zip(feats, ref_feats):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_lite_vae_with_attention_levels_matches_monai():
    """Attention inside the levels (not used by `build_vae`, but part of the twin) in 2D, a fast check."""
    from monai.networks.nets import AutoencoderKL

    args = dict(spatial_dims=2, channels=(8, 16), attention_levels=(False, True), latent_channels=3,
                num_res_blocks=(1, 2), norm_num_groups=4)
    torch.manual_seed(1)
    reference = _perturbed(AutoencoderKL(**args))
    lite = _twin(reference, LiteAutoencoderKL(**args))
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(lite.reconstruct(x), reference.reconstruct(x), atol=ATOL, rtol=0)


# (channels, groups, attention_levels, num_head_channels, in, out): ibsi preset, debug preset, attention in levels
UNET_CASES = [
    ((32, 64, 128), 16, (False, False, False), 32, 11, 5),
    ((16, 32, 32), 8, (False, False, False), 8, 10, 5),
    ((16, 32), 8, (False, True), 8, 10, 5),
]


@pytest.mark.parametrize("channels,groups,attention_levels,head_channels,in_ch,out_ch", UNET_CASES)
def test_lite_velocity_unet_matches_monai(channels, groups, attention_levels, head_channels, in_ch, out_ch):
    torch.manual_seed(0)
    args = dict(channels=channels, norm_num_groups=groups, attention_levels=attention_levels,
                num_head_channels=head_channels, in_channels=in_ch, out_channels=out_ch)
    monai_net = _perturbed(build_velocity_unet(**args))
    lite_net = _twin(monai_net, build_velocity_unet(**args, lite=True))
    assert isinstance(lite_net.unet, LiteDiffusionModelUNet)
    assert (lite_net.in_channels, lite_net.out_channels) == (in_ch, out_ch)

    x = torch.randn(2, in_ch, 8, 8, 8)
    t = torch.tensor([0.0123, 0.987])
    with torch.no_grad():
        ours, theirs = lite_net(x, t), monai_net(x, t)
    assert ours.abs().max() > 0.1  # the perturbed output head is not silent
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_lite_unet_two_res_blocks_and_per_level_heads_match_monai():
    from monai.networks.nets import DiffusionModelUNet

    args = dict(spatial_dims=2, in_channels=3, out_channels=2, num_res_blocks=(2, 1), channels=(8, 16),
                attention_levels=(True, True), norm_num_groups=4, num_head_channels=(4, 8))
    torch.manual_seed(2)
    reference = _perturbed(DiffusionModelUNet(**args))
    lite = _twin(reference, LiteDiffusionModelUNet(**args))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3.0, 999.0])
    with torch.no_grad():
        torch.testing.assert_close(lite(x, timesteps=t), reference(x, timesteps=t), atol=ATOL, rtol=0)


def test_seeded_lite_networks_start_from_monais_weights():
    """Modules are built in MONAI's order, so `seeded_init` gives the same initial weights either way."""
    for build, args in [
        (build_vae, dict(channels=(8, 16), norm_num_groups=8, attention=True)),
        (build_velocity_unet, dict(channels=(16, 32), attention_levels=(True, True), num_res_blocks=2,
                                   norm_num_groups=8, num_head_channels=8)),
    ]:
        torch.manual_seed(3)
        reference = build(**args).state_dict()
        torch.manual_seed(3)
        lite = build(**args, lite=True).state_dict()
        assert list(lite) == list(reference)
        assert all(torch.equal(lite[k], reference[k]) for k in reference)


def test_timestep_embedding_is_monais():
    from monai.networks.nets.diffusion_model_unet import get_timestep_embedding as monai_embedding

    t = torch.tensor([0.0, 12.3456, 999.9])
    for dim in (32, 33):
        assert torch.equal(get_timestep_embedding(t, dim), monai_embedding(t, dim))


def test_lite_maisi_is_refused():
    with pytest.raises(ValueError, match="lite=True needs VAE arch 'kl'"):
        build_vae(arch="maisi", lite=True)


def test_lite_unet_refuses_indivisible_heads():
    with pytest.raises(ValueError, match="num_head_channels"):
        LiteDiffusionModelUNet(spatial_dims=3, in_channels=2, out_channels=2, channels=(16, 24),
                               num_res_blocks=1, attention_levels=(False, False), norm_num_groups=8,
                               num_head_channels=16)


def test_lite_networks_do_not_import_monai():
    code = (
        "import sys, torch\n"
        "from tumorgen.models.vae import build_vae, decode_with_features\n"
        "from tumorgen.models.velocity_unet import build_velocity_unet\n"
        "vae = build_vae(channels=(8, 16, 16), norm_num_groups=8, attention=True, lite=True).eval()\n"
        "unet = build_velocity_unet(channels=(16, 32), attention_levels=(False, True), norm_num_groups=8,"
        " num_head_channels=8, lite=True).eval()\n"
        "with torch.no_grad():\n"
        "    z_mu, _ = vae.encode(torch.randn(1, 1, 16, 16, 16))\n"
        "    decode_with_features(vae, z_mu)\n"
        "    unet(torch.randn(1, 10, 4, 4, 4), torch.tensor([0.5]))\n"
        "heavy = sorted(m for m in ('monai', 'scipy', 'matplotlib') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
