"""Config tree: presets load, overrides are typed, unknown keys and bad values are refused."""

from __future__ import annotations

import json

import pytest

from tumorgen.config import (
    ABLATIONS, PRESETS, Config, apply_overrides, from_dict, load_config, save_config, to_dict,
)
from tumorgen.errors import TumorGenError


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_debug_preset_is_tiny_and_phantom_is_the_cpu_demo():
    debug, phantom = load_config("debug"), load_config("phantom")
    assert debug.vae.channels == (8, 16, 16) and debug.flow.channels == (16, 32, 32)
    assert debug.train.steps <= 10 and debug.vae_train.steps <= 10
    assert phantom.vae.channels == (16, 32) and phantom.flow.channels == (32, 64, 128)
    assert phantom.data.window == "box" and phantom.data.intensity == "log"
    assert len(phantom.flow.refiner_widths) == len(phantom.vae.channels)  # one per decoder scale


def test_overrides_are_parsed_to_the_field_types():
    cfg = apply_overrides(load_config("debug"), [
        "vae.arch=maisi", "vae.weights=/x/maisi.pt", "ablate=no_bapmg,no_fine", "train.steps=100",
        "train.lr=3e-4", "train.compile=true", "flow.attention_levels=false,true,false", "data.patch_size=8,8,8",
    ])
    assert cfg.vae.arch == "maisi" and cfg.vae.weights == "/x/maisi.pt"
    assert cfg.ablate == ("no_bapmg", "no_fine")
    assert cfg.train.steps == 100 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.compile is True
    assert cfg.flow.attention_levels == (False, True, False)
    assert cfg.data.patch_size == (8, 8, 8)
    assert cfg.vae_train.steps == load_config("debug").vae_train.steps  # other stage untouched
    assert apply_overrides(cfg, ["ablate="]).ablate == ()


@pytest.mark.parametrize("item, words", [
    ("train.stepz=3", ["train.stepz", "train.steps"]),
    ("nosuch=1", ["nosuch", "vae_train"]),
    ("train=3", ["section"]),
    ("train.steps=many", ["integer"]),
    ("train.compile=maybe", ["true or false"]),
    ("ablate=no_everything", ["no_everything", "no_bapmg"]),
    ("vae.arch=vqgan", ["vae.arch"]),
    ("data.patch_size=8,8", ["data.patch_size"]),
    ("data.patch_size=6,8,8", ["multiples"]),
    ("train.steps", ["key=value"]),
])
def test_bad_overrides_are_refused_with_a_sentence(item, words):
    with pytest.raises(TumorGenError) as err:
        apply_overrides(load_config("debug"), [item])
    for word in words:
        assert word in str(err.value)


def test_config_files_toml_and_json(tmp_path):
    toml = tmp_path / "mine.toml"
    toml.write_text('ablate = ["no_vmr"]\n[train]\nsteps = 7\n')
    cfg = load_config(toml)
    assert cfg.train.steps == 7 and cfg.ablate == ("no_vmr",) and cfg.vae == Config().vae
    saved = save_config(cfg, tmp_path / "config.json")
    assert load_config(saved) == cfg
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nstepz = 7\n")
    with pytest.raises(TumorGenError, match="bad.toml.*train.stepz"):
        load_config(bad)
    typed = tmp_path / "typed.json"
    typed.write_text('{"train": {"steps": "seven"}}')
    with pytest.raises(TumorGenError, match="typed.json.*train.steps"):
        load_config(typed)
    with pytest.raises(TumorGenError, match="not a preset"):
        load_config(tmp_path / "missing.toml")


def test_ablation_names_match_the_objective_contract():
    assert set(ABLATIONS) == {"no_bapmg", "no_coarse", "no_fine", "no_vmr"}
