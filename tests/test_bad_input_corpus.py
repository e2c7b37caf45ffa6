"""Every defect of the bad-input corpus (tests/bad_inputs.py) through every command it applies to.

For each (command, defect): a non-zero exit, exactly one line on stderr that names the broken file and
says what is wrong, no traceback, nothing written (the output folder does not appear, or an existing
one is unchanged, and no staging folder is left beside it), and the inputs byte-for-byte unchanged.
A header claiming a huge volume is refused before any allocation (measured in a fresh process).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import (AFFINE, EMPTY_MASK, IMAGE_DEFECTS, MASK_DEFECTS, NOT_SUV, SHAPE, tree_digest,
                        valid_mask, valid_scan, write_negative_suv)
from tumorgen.cli import main
from tumorgen.io.nifti import load_volume, save_volume

BOX = ["16", "16", "12", "22", "22", "18"]
PAIRS = ["--layout", "pairs", "--image-glob", "*/PET_image.nii.gz", "--mask-glob", "*/PET_mask.nii.gz"]


def write_pairs_dataset(root: Path, *, bad_case: str = "a_bad") -> Path:
    """Two valid cases in the pairs layout, `bad_case` (sorted first) and `good`."""
    for name in (bad_case, "good"):
        save_volume(valid_scan(seed=len(name)), AFFINE, root / name / "PET_image.nii.gz")
        save_volume(valid_mask(), AFFINE, root / name / "PET_mask.nii.gz", dtype=np.uint8)
    return root


def break_file(defects: dict, defect: str, path: Path) -> tuple[Path, str]:
    writer, why = defects[defect]
    path.unlink(missing_ok=True)
    writer(path, shape=SHAPE, affine=AFFINE)
    return path, why


class Scene:
    """One bad-input run: inputs under `inputs`, outputs to `out`, and the snapshot to compare after."""

    def __init__(self, tmp: Path, *, out_exists: bool = False):
        self.inputs = tmp / "inputs"
        self.inputs.mkdir()
        self.out = tmp / "out"
        if out_exists:  # an output folder holding another case's results must come out unchanged
            self.out.mkdir()
            (self.out / "other_case.nii.gz").write_bytes(b"another case's output")
        self.argv: list[str] = []

    def snapshot(self) -> None:
        self.before_inputs = tree_digest(self.inputs)
        self.before_out = tree_digest(self.out) if self.out.exists() else None
        self.before_siblings = sorted(p.name for p in self.out.parent.iterdir())

    def check_refused(self, capsys, command: str, named: Path | str, why: str) -> str:
        code = main(self.argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code != 0, f"{command} accepted {named}"
        assert len(lines) == 1, err
        assert lines[0].startswith(f"tumorgen {command}: error: ") and str(named) in lines[0], err
        assert re.search(why, lines[0]), err
        assert "Traceback" not in err
        assert tree_digest(self.inputs) == self.before_inputs, "an input file was changed"
        if self.before_out is None:
            assert not self.out.exists(), f"{command} wrote {self.out}"
        else:
            assert tree_digest(self.out) == self.before_out, f"{command} changed {self.out}"
        assert sorted(p.name for p in self.out.parent.iterdir()) == self.before_siblings, "litter beside --out"
        return lines[0]


# ---------------------------------------------------------------------------------------------- prepare

PAIR_FILES = {"PET_image": IMAGE_DEFECTS, "PET_mask": MASK_DEFECTS}  # a pairs case's two files and their defects


@pytest.mark.parametrize("stem,defect", [(stem, d) for stem, defects in PAIR_FILES.items() for d in sorted(defects)])
def test_prepare_refuses_a_broken_scan_or_mask(stem, defect, tmp_path, capsys):
    scene = Scene(tmp_path)
    write_pairs_dataset(scene.inputs)
    bad, why = break_file(PAIR_FILES[stem], defect, scene.inputs / "a_bad" / f"{stem}.nii.gz")
    scene.argv = ["prepare", *PAIRS, "--root", str(scene.inputs), "--out", str(scene.out), "--size", "16"]
    scene.snapshot()
    scene.check_refused(capsys, "prepare", bad, why)


def test_prepare_refuses_an_empty_folder(tmp_path, capsys):
    scene = Scene(tmp_path)
    scene.argv = ["prepare", *PAIRS, "--root", str(scene.inputs), "--out", str(scene.out), "--size", "16"]
    scene.snapshot()
    scene.check_refused(capsys, "prepare", scene.inputs, r"empty")


def test_prepare_clips_negative_suv_and_keeps_an_empty_mask_as_a_healthy_case(tmp_path, capsys):
    """Small negative SUV is reconstruction noise: clipped to 0. An all-zero mask is a healthy case."""
    root = write_pairs_dataset(tmp_path / "data")
    write_negative_suv(root / "a_bad" / "PET_image.nii.gz", low=-0.3)
    _, _ = break_file(EMPTY_MASK, "mask_empty", root / "a_bad" / "PET_mask.nii.gz")
    before = tree_digest(root)
    out = tmp_path / "prep"
    assert main(["prepare", *PAIRS, "--root", str(root), "--out", str(out), "--size", "16", "--test-fraction", "0"]) == 0
    capsys.readouterr()
    info = json.loads((out / "dataset.json").read_text())
    case = next(c for c in info["cases"] if c["name"] == "a_bad")
    assert case["healthy"] is True and case["tumor_voxels"] == 0
    cached = load_volume(out / case["image"]).array
    assert cached.min() >= 0.0 and cached.max() <= 1.0
    assert tree_digest(root) == before


# ------------------------------------------------------------------------------------------- synthesize

def synthesize_scene(tmp_path: Path, run: Path) -> tuple[Scene, Path]:
    scene = Scene(tmp_path, out_exists=True)
    scan = save_volume(valid_scan(), AFFINE, scene.inputs / "patient_1.nii.gz")
    scene.argv = ["synthesize", "--model", str(run), "--input", str(scan), "--out", str(scene.out),
                  "--steps", "1", "--no-progress"]
    return scene, scan


@pytest.mark.parametrize("defect", sorted(IMAGE_DEFECTS) + sorted(NOT_SUV))
def test_synthesize_refuses_a_broken_scan(defect, trained_debug_run, tmp_path, capsys):
    scene, scan = synthesize_scene(tmp_path, trained_debug_run)
    bad, why = break_file({**IMAGE_DEFECTS, **NOT_SUV}, defect, scan)
    scene.argv += ["--box", *BOX]
    scene.snapshot()
    scene.check_refused(capsys, "synthesize", bad, why)


@pytest.mark.parametrize("defect", sorted(MASK_DEFECTS) + sorted(EMPTY_MASK))
def test_synthesize_refuses_a_broken_organ_mask(defect, trained_debug_run, tmp_path, capsys):
    scene, _ = synthesize_scene(tmp_path, trained_debug_run)
    bad, why = break_file({**MASK_DEFECTS, **EMPTY_MASK}, defect, scene.inputs / "lungs.nii.gz")
    scene.argv += ["--organ-mask", str(bad)]
    scene.snapshot()
    scene.check_refused(capsys, "synthesize", bad, why)


def test_synthesize_refuses_a_ct_of_another_grid(trained_debug_run, tmp_path, capsys):
    scene, _ = synthesize_scene(tmp_path, trained_debug_run)
    ct = save_volume(np.zeros(tuple(s - 4 for s in SHAPE), np.float32), AFFINE, scene.inputs / "ct.nii.gz")
    scene.argv += ["--ct", str(ct)]
    scene.snapshot()
    scene.check_refused(capsys, "synthesize", ct, r"has shape")


def test_synthesize_refuses_a_box_outside_the_scan(trained_debug_run, tmp_path, capsys):
    scene, scan = synthesize_scene(tmp_path, trained_debug_run)
    scene.argv += ["--box", "36", "10", "10", "46", "20", "20"]  # x runs past the scan's 40 voxels
    scene.snapshot()
    scene.check_refused(capsys, "synthesize", "box", r"outside|past|beyond|inside")


def test_synthesize_refuses_an_empty_model_folder(tmp_path, capsys):
    scene, _ = synthesize_scene(tmp_path, tmp_path / "inputs" / "empty_run")
    (scene.inputs / "empty_run").mkdir()
    scene.argv += ["--box", *BOX]
    scene.snapshot()
    scene.check_refused(capsys, "synthesize", scene.inputs / "empty_run", r"not a TumorGen run")


# ---------------------------------------------------------------------------------------------- augment

def augment_scene(tmp_path: Path, run: Path) -> Scene:
    scene = Scene(tmp_path)
    write_pairs_dataset(scene.inputs)
    scene.argv = ["augment", "--model", str(run), "--data", str(scene.inputs), *PAIRS, "--out", str(scene.out),
                  "--steps", "1", "--no-progress"]
    return scene


@pytest.mark.parametrize("defect", sorted(IMAGE_DEFECTS) + sorted(NOT_SUV))
def test_augment_refuses_a_broken_scan(defect, trained_debug_run, tmp_path, capsys):
    scene = augment_scene(tmp_path, trained_debug_run)
    bad, why = break_file({**IMAGE_DEFECTS, **NOT_SUV}, defect, scene.inputs / "a_bad" / "PET_image.nii.gz")
    scene.snapshot()
    scene.check_refused(capsys, "augment", bad, why)


@pytest.mark.parametrize("defect", sorted(MASK_DEFECTS))
def test_augment_refuses_a_broken_mask(defect, trained_debug_run, tmp_path, capsys):
    scene = augment_scene(tmp_path, trained_debug_run)
    bad, why = break_file(MASK_DEFECTS, defect, scene.inputs / "a_bad" / "PET_mask.nii.gz")
    scene.snapshot()
    scene.check_refused(capsys, "augment", bad, why)


def test_augment_refuses_an_empty_folder(trained_debug_run, tmp_path, capsys):
    scene = augment_scene(tmp_path, trained_debug_run)
    for path in sorted(scene.inputs.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    scene.snapshot()
    scene.check_refused(capsys, "augment", scene.inputs, r"empty")


# --------------------------------------------------------------------------------------- evaluate

@pytest.fixture(scope="module")
def generated_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny PREP and a SynTumor set generated into its test split (no model needed), made once."""
    from conftest import write_tiny_prep

    root = tmp_path_factory.mktemp("evaluate_corpus")
    prep = write_tiny_prep(root / "prep", size=16, n_cases=6)
    assert main(["generate-set", "--method", "syntumor", "--data", str(prep), "--split", "train",
                 "--latent-factor", "4", "--out", str(root / "generated"), "--no-progress"]) == 0
    return prep, root / "generated"


def evaluate_scene(tmp_path: Path, pair: tuple[Path, Path]) -> tuple[Scene, Path, list[dict]]:
    import shutil

    scene = Scene(tmp_path)
    prep, generated = (shutil.copytree(p, scene.inputs / p.name) for p in pair)
    samples = json.loads((generated / "generated.json").read_text())["samples"]
    scene.argv = ["evaluate", "--real", str(prep), "--generated", str(generated), "--out", str(scene.out),
                  "--features", "pixels"]
    return scene, generated, samples


def break_on_its_grid(defects: dict, defect: str, path: Path) -> tuple[Path, str]:
    """Like break_file, on the grid of the file it replaces (the generated sets' grid is the PREP's)."""
    grid = load_volume(path.parent / path.name.replace("_mask.", "_image."))
    writer, why = defects[defect]
    path.unlink()
    writer(path, shape=grid.array.shape, affine=grid.affine)
    return path, why


GENERATED_FILES = {"image": IMAGE_DEFECTS, "mask": MASK_DEFECTS}  # a generated sample's two files


@pytest.mark.parametrize("kind,defect", [(k, d) for k, defects in GENERATED_FILES.items() for d in sorted(defects)])
def test_evaluate_refuses_a_broken_generated_image_or_mask(kind, defect, generated_pair, tmp_path, capsys):
    scene, generated, samples = evaluate_scene(tmp_path, generated_pair)
    bad, why = break_on_its_grid(GENERATED_FILES[kind], defect, generated / samples[0][kind])
    scene.snapshot()
    scene.check_refused(capsys, "evaluate", bad, why)


def test_evaluate_refuses_a_folder_that_is_not_a_generated_set(generated_pair, tmp_path, capsys):
    scene, generated, _ = evaluate_scene(tmp_path, generated_pair)
    (generated / "generated.json").unlink()
    scene.snapshot()
    scene.check_refused(capsys, "evaluate", generated, r"generated")


# ------------------------------------------------------------- a huge header, in a fresh process

_MEASURE = """
import json, resource, sys, time
import monai, nibabel, torch  # the imports every command makes, before the baseline is taken
from tumorgen.cli import main
for argv in json.loads(sys.argv[1]):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    code = main(argv)
    print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                      "peak_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


@pytest.mark.slow
def test_a_header_claiming_a_huge_volume_is_refused_before_any_allocation(tmp_path):
    """4096^3 float32 claims 256 GiB, 600^3 claims 824 MiB in a 1 KB file: refused fast, peak memory flat.

    One fresh process runs `prepare` on both, measuring its peak RSS before and after each call.
    """
    argvs, bad_files = [], []
    for defect in ("huge_header", "lying_header"):
        root = write_pairs_dataset(tmp_path / defect)
        bad_files.append(break_file(IMAGE_DEFECTS, defect, root / "a_bad" / "PET_image.nii.gz")[0])
        argvs.append(["prepare", *PAIRS, "--root", str(root), "--out", str(tmp_path / f"{defect}_prep"), "--size", "16"])
    done = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(argvs)], capture_output=True, text=True,
                          timeout=120)
    results = [json.loads(line) for line in done.stdout.strip().splitlines()[-2:]]
    errors = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(errors) == 2, done.stderr
    for result, error, bad in zip(results, errors, bad_files):
        assert result["code"] == 2 and str(bad) in error and "header claims" in error
        assert result["peak_growth_mb"] < 64, result  # the claims are 256 GiB and 824 MiB
        assert result["seconds"] < 5, result
    assert not any(p.name.endswith("_prep") for p in tmp_path.iterdir())
