"""Exported model folders (safetensors + model.json): export, load, integrity checks, `tumorgen models`,
and the bundled-model demo, on a toy box-window run trained for a few steps."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from conftest import write_tiny_prep
from test_learning_box_windows import train_toy_box_run
from tumorgen.cli import main
from tumorgen.errors import TumorGenError


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory):
    """(run folder, exported model folder) of a toy box-window run (3 + 3 steps)."""
    from tumorgen.training.model_bundle import export_model

    root = tmp_path_factory.mktemp("bundle")
    prep = write_tiny_prep(root / "prep", size=32, n_cases=6, seed=3)
    run = train_toy_box_run(root, prep, extra=("vae_train.steps=3", "train.steps=3"))
    return run, export_model(run, root / "exported", name="toy")


def _scan(seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.gamma(4.0, 0.25, size=(32, 32, 32)).astype(np.float32)  # (X, Y, Z) SUV around 1
    return image, np.diag([4.0, 4.0, 4.0, 1.0])


def test_export_holds_safetensors_and_pins_their_sha256(toy_export):
    from tumorgen.io.files import sha256_file

    _, folder = toy_export
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["flow.safetensors", "model.json", "vae.safetensors"]
    record = json.loads((folder / "model.json").read_text())
    assert record["format"] == "tumorgen-model" and record["name"] == "toy"
    assert record["steps"] == {"vae": 3, "tumorgen": 3}
    for name in ("vae.safetensors", "flow.safetensors"):
        assert record["sha256"][name] == sha256_file(folder / name)
        assert (folder / name).read_bytes()[8:9] == b"{"  # a safetensors header, not a zip/pickle


def test_exported_model_synthesizes_exactly_what_the_run_does(toy_export):
    """Same seed, same box: the export (lite networks) and the run folder (MONAI's) give the same tumor."""
    from tumorgen.api import TumorGen

    run, folder = toy_export
    image, affine = _scan()
    box = (10, 11, 9, 20, 21, 19)
    a = TumorGen.load(folder, device="cpu").synthesize(image, affine=affine, box=box, steps=3, seed=5)[0]
    b = TumorGen.load(run, device="cpu", lite=False).synthesize(image, affine=affine, box=box, steps=3, seed=5)[0]
    np.testing.assert_allclose(a.image, b.image, atol=1e-4)
    assert np.array_equal(a.mask, b.mask)


def _copy(folder, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


def test_a_corrupted_weights_file_is_refused_with_one_sentence(toy_export, tmp_path):
    from tumorgen.api import TumorGen

    folder = _copy(toy_export[1], tmp_path)
    data = bytearray((folder / "flow.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (folder / "flow.safetensors").write_bytes(bytes(data))
    with pytest.raises(TumorGenError, match=r"flow\.safetensors.*SHA-256"):
        TumorGen.load(folder, device="cpu")


def test_swapped_weights_files_are_refused(toy_export, tmp_path):
    from tumorgen.api import TumorGen

    folder = _copy(toy_export[1], tmp_path)
    vae, flow = (folder / "vae.safetensors").read_bytes(), (folder / "flow.safetensors").read_bytes()
    (folder / "vae.safetensors").write_bytes(flow)
    (folder / "flow.safetensors").write_bytes(vae)
    with pytest.raises(TumorGenError, match=r"vae\.safetensors.*SHA-256"):
        TumorGen.load(folder, device="cpu")


def test_a_pickle_is_never_unpickled_even_when_its_sha256_is_pinned(toy_export, tmp_path):
    """An attacker who rewrites model.json too still cannot get a pickle executed: only safetensors is read."""
    from tumorgen.io.files import sha256_file
    from tumorgen.training.model_bundle import load_model_folder

    folder = _copy(toy_export[1], tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "vae.safetensors").write_bytes(pickle.dumps(Exploit()))
    record = json.loads((folder / "model.json").read_text())
    record["sha256"]["vae.safetensors"] = sha256_file(folder / "vae.safetensors")
    (folder / "model.json").write_text(json.dumps(record))
    with pytest.raises(TumorGenError, match=r"vae\.safetensors.*not a readable safetensors file"):
        load_model_folder(folder)
    assert not marker.exists()


def test_bad_model_records_are_refused(toy_export, tmp_path):
    from tumorgen.training.model_bundle import read_model_record

    folder = _copy(toy_export[1], tmp_path)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(TumorGenError, match="model.json: is not valid JSON"):
        read_model_record(folder)
    (folder / "model.json").write_text(json.dumps({"format": "tumorgen-model", "version": 99}))
    with pytest.raises(TumorGenError, match="version 99"):
        read_model_record(folder)


def test_an_unknown_model_name_names_the_bundled_ones():
    from tumorgen.training.model_bundle import bundled_models, resolve_model

    with pytest.raises(TumorGenError, match="neither a folder nor a bundled model") as err:
        resolve_model("no-such-model")
    for name in bundled_models():
        assert name in str(err.value)


def test_cli_refuses_a_corrupted_model_in_one_line_and_writes_nothing(toy_export, tmp_path, capsys):
    import nibabel as nib

    folder = _copy(toy_export[1], tmp_path)
    (folder / "vae.safetensors").write_bytes(b"\x00" * 64)
    image, affine = _scan()
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "scan.nii.gz"))
    code = main(["synthesize", "--model", str(folder), "--input", str(tmp_path / "scan.nii.gz"),
                 "--box", "10", "11", "9", "20", "21", "19", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "vae.safetensors" in err and "SHA-256" in err
    assert not (tmp_path / "out").exists()


def test_export_model_cli_and_models_card(toy_export, tmp_path, capsys):
    run, _ = toy_export
    out = tmp_path / "mine"
    assert main(["export-model", "--model", str(run), "--out", str(out)]) == 0
    assert json.loads((out / "model.json").read_text())["name"] == "mine"
    assert main(["export-model", "--model", str(run), "--out", str(out)]) == 2  # exists: refused
    (out / "MODEL_CARD.md").write_text("# Mine\n\nTrained on toys.\n")
    capsys.readouterr()
    assert main(["models", "--card", str(out)]) == 0
    assert "Trained on toys." in capsys.readouterr().out


def test_models_lists_the_bundled_models(capsys):
    from tumorgen.training.model_bundle import DEFAULT_MODEL, bundled_models

    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name in bundled_models():
        assert name in text
    if bundled_models():
        assert f"{DEFAULT_MODEL}  (default)" in text


@pytest.mark.slow
def test_bundled_demo_writes_report_montages_and_checks_every_sample(toy_export, tmp_path):
    from tumorgen.data.examples import example_cases
    from tumorgen.demo.bundled import run_bundled_demo

    out = tmp_path / "demo"
    result = run_bundled_demo(out=out, model=str(toy_export[1]), samples_per_case=1, phantoms=1, progress=False,
                              say=lambda text: None)
    assert len(result.samples) == len(example_cases()) + 1
    assert {s.source for s in result.samples} == {"example", "phantom"}
    for s in result.samples:
        assert set(s.check) >= {"nonempty", "largest_share", "box_share", "contrast", "passes"}
    report = (out / "report.md").read_text()
    assert f"**{result.passed} of {len(result.samples)}**" in report and "tumorgen synthesize --input" in report
    for png in ("montage_examples.png", "montage_phantoms.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "synthetic" / "manifest.json").read_text())
    assert {c["case"] for c in manifest["cases"]} >= {c.name for c in example_cases()}
    again = run_bundled_demo(out=out, model=str(toy_export[1]), samples_per_case=1, phantoms=1, progress=False,
                             say=lambda text: None)  # same seed, same tumors
    assert [s.stats for s in again.samples] == [s.stats for s in result.samples]


def test_a_float16_export_is_half_the_size_and_synthesizes_nearly_the_same(toy_export, tmp_path):
    from tumorgen.api import TumorGen
    from tumorgen.training.model_bundle import export_model, read_model_record

    run, full = toy_export
    half = export_model(run, tmp_path / "half", half=True)
    assert read_model_record(half)["weights_dtype"] == "float16"
    ratio = (half / "flow.safetensors").stat().st_size / (full / "flow.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    image, affine = _scan()
    box = (10, 11, 9, 20, 21, 19)
    a = TumorGen.load(full, device="cpu").synthesize(image, affine=affine, box=box, steps=3, seed=5)[0]
    b = TumorGen.load(half, device="cpu").synthesize(image, affine=affine, box=box, steps=3, seed=5)[0]
    assert np.abs(a.image - b.image).max() < 0.1  # SUV; toy weights, float16 rounding only
    assert np.mean(a.mask != b.mask) < 0.01
