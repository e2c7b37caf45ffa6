"""The model that ships in the package: it loads by default, verifies its files, and makes a tumor in a
shipped example scan with no --model, without importing MONAI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tumorgen.cli import main
from tumorgen.data.examples import example_cases, tumor_box
from tumorgen.demo.quality import tumor_check
from tumorgen.io.nifti import load_volume
from tumorgen.training.model_bundle import DEFAULT_MODEL, bundled_models, read_model_record


def test_the_default_model_ships_with_its_card_and_pinned_safetensors():
    models = bundled_models()
    assert DEFAULT_MODEL in models
    folder = models[DEFAULT_MODEL]
    record = read_model_record(folder)
    assert record["name"] == DEFAULT_MODEL and record["config"]["data"]["window"] == "box"
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "flow.safetensors", "model.json",
                                                        "vae.safetensors"]
    card = (folder / "MODEL_CARD.md").read_text()
    for words in ("CC BY 3.0", "Vallières", "steps", "real vs real", "Intended use", "Limits"):
        assert words in card, words
    assert sum(p.stat().st_size for p in folder.iterdir()) < 25 * 2**20  # the wheel stays small


def test_three_example_scans_ship_with_licence_and_citation():
    cases = example_cases()
    assert [c.name for c in cases] == ["STS_003", "STS_023", "STS_034"]
    root = cases[0].image.parent.parent
    assert "Attribution 3.0" in (root / "LICENSE.md").read_text()
    assert "10.7937/K9/TCIA.2015.7GO2GSKS" in (root / "README.md").read_text()


def _example():
    case = example_cases()[1]
    mask = load_volume(case.mask, kind="mask").array > 0
    return case, tumor_box(mask)


@pytest.mark.slow
def test_synthesize_without_a_model_makes_a_tumor_that_passes_the_demo_checks(tmp_path, capsys):
    case, box = _example()
    out = tmp_path / "out"
    code = main(["synthesize", "--input", str(case.image), "--box", *map(str, box), "--out", str(out),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["cases"][0]
    assert entry["case"] == case.name and entry["model"]["run"].endswith(DEFAULT_MODEL)
    image = load_volume(out / f"{case.name}_0_pet.nii.gz").array
    mask = load_volume(out / f"{case.name}_0_mask.nii.gz", kind="mask").array
    check = tumor_check(image, mask, box)
    assert check["passes"], check
    scan = load_volume(case.image).array
    outside = np.ones(scan.shape, dtype=bool)
    outside[tuple(slice(a, b) for a, b in zip(box[:3], box[3:]))] = False
    assert np.array_equal(image[outside], scan[outside])  # the scan is unchanged outside the box


@pytest.mark.slow
def test_the_synthesize_path_never_imports_monai(tmp_path):
    case, box = _example()
    code = (
        "import sys\n"
        "from tumorgen.cli import main\n"
        f"assert main(['synthesize', '--input', {str(case.image)!r}, '--box', *{[str(v) for v in box]!r}, "
        f"'--out', {str(tmp_path / 'o')!r}, '--no-progress', '--steps', '2']) == 0\n"
        "heavy = sorted(m for m in ('monai', 'matplotlib.pyplot') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.slow
def test_rand_tumor_synthesisd_defaults_to_the_bundled_model():
    from tumorgen import RandTumorSynthesisd

    case, box = _example()
    scan = load_volume(case.image)
    label = (load_volume(case.mask, kind="mask").array > 0).astype(np.uint8)
    transform = RandTumorSynthesisd(("image", "label"), prob=1.0, mode="regenerate", affine=scan.affine)
    transform.set_random_state(0)
    out = transform({"image": scan.array[None], "label": label[None]})
    assert out["image"].shape == (1, *scan.array.shape) and out["label"].any()
    assert not np.array_equal(out["image"][0], scan.array)
