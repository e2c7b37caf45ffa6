"""Scan + box + a fake generator -> outputs on the scan's grid: the contract the model plugs into."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tumorgen.errors import TumorGenError
from tumorgen.io.nifti import Volume, load_volume, save_volume
from tumorgen.synthesis.manifest import case_name_from_path, safe_case_name
from tumorgen.synthesis.pipeline import synthesize_into_scan, write_outputs

FLIPPED = np.array([[-2.0, 0, 0, 40.0], [0, 1.5, 0, -20.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])
INFO = {"size": [32, 32, 32], "spacing": [2.0, 2.0, 2.0], "suv_max": 10.0, "latent_factor": 4,
        "box_sizes_mm": [[16.0, 16.0, 15.0], [24.0, 21.0, 18.0]]}
BOX = (12, 14, 8, 24, 28, 16)


def noisy_scan(shape=(40, 44, 26), affine=FLIPPED, path="scan_01.nii.gz", seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    suv = np.zeros(shape, dtype=np.float32)
    suv[3:-3, 3:-3, 2:-2] = 1.5
    suv = np.clip(suv + 0.15 * np.sqrt(suv) * rng.standard_normal(shape), 0, None).astype(np.float32)
    return Volume(array=suv, affine=affine, path=Path(path))


def hot_sphere_generator(window_image, boxes, seeds):
    """Paint a hot sphere in each box: radius a third of the box's smallest edge, jittered by seed."""
    image_hat = window_image.clone()
    prob = torch.zeros_like(window_image)
    index = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in window_image.shape[2:]],
                                       indexing="ij"))  # (3, Sx, Sy, Sz)
    for b, (box, seed) in enumerate(zip(boxes.tolist(), seeds)):
        jitter = torch.rand(1, generator=torch.Generator().manual_seed(seed)).item()
        lo, hi = torch.tensor(box[:3], dtype=torch.float32), torch.tensor(box[3:], dtype=torch.float32)
        center = (lo + hi - 1) / 2
        radius = (hi - lo).min() / 3 * (0.8 + 0.4 * jitter)
        inside = ((index - center[:, None, None, None]) ** 2).sum(0).sqrt() <= radius
        image_hat[b, 0][inside] = 0.6
        prob[b, 0][inside] = 1.0
    return image_hat, prob


def box_slices(box):
    return tuple(slice(a, b) for a, b in zip(box[:3], box[3:]))


def outside(array, box):
    keep = np.ones(array.shape, dtype=bool)
    keep[box_slices(box)] = False
    return array[keep]


@pytest.mark.parametrize("affine", [FLIPPED, np.diag([1.5, 2.5, 3.0, 1.0])])
def test_output_keeps_the_scan_outside_the_box_and_its_grid(affine):
    scan = noisy_scan(affine=affine)
    before = scan.array.copy()
    (result,) = synthesize_into_scan(scan=scan, boxes=[BOX], generate=hot_sphere_generator, model_info=INFO, seed=1)
    np.testing.assert_array_equal(scan.array, before)  # the scan is never modified
    assert result.image.shape == scan.array.shape and result.image.dtype == np.float32
    assert result.mask.dtype == np.uint8 and np.array_equal(result.affine, affine)
    assert np.array_equal(outside(result.image, BOX), outside(scan.array, BOX))
    assert result.mask.sum() > 0 and outside(result.mask, BOX).sum() == 0
    # The tumor lands in the middle of the box, at the painted uptake (0.6 * suv_max) where w = 1.
    centroid = np.argwhere(result.mask).mean(axis=0)
    np.testing.assert_allclose(centroid, [(a + b - 1) / 2 for a, b in zip(BOX[:3], BOX[3:])], atol=1.0)
    assert result.image[18, 21, 12] == pytest.approx(6.0, rel=0.25)
    assert result.image[18, 21, 12] > 2.5 * np.median(outside(result.image, BOX)[outside(scan.array, BOX) > 0.5])


def test_same_seed_same_boxes_and_outputs_and_batching_does_not_matter():
    scan = noisy_scan()
    organ = np.zeros(scan.array.shape, dtype=np.uint8)
    organ[15:25, 15:30, 8:18] = 1
    organ_volume = Volume(array=organ, affine=FLIPPED, path=Path("organ.nii.gz"))
    kwargs = dict(scan=scan, boxes=None, generate=hot_sphere_generator, model_info=INFO, num=3,
                  organ_mask=organ_volume)
    first = synthesize_into_scan(seed=7, batch=1, **kwargs)
    again = synthesize_into_scan(seed=7, batch=2, **kwargs)
    other = synthesize_into_scan(seed=8, batch=3, **kwargs)
    for a, b in zip(first, again):
        assert a.box == b.box and a.seed == b.seed and a.region == "organ"
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
        center = [(lo + hi) // 2 for lo, hi in zip(a.box[:3], a.box[3:])]
        assert organ[tuple(center)] == 1
    assert [r.box for r in first] != [r.box for r in other]
    assert len({r.seed for r in first}) == 3


def test_noise_matching_restores_the_scans_grain_inside_the_box():
    scan = noisy_scan(seed=3)
    box = (8, 8, 6, 32, 36, 20)

    def smooth_generator(window_image, boxes, seeds):  # a noise-free flat box at the same mean uptake
        image_hat = window_image.clone()
        for b, wb in enumerate(boxes.tolist()):
            image_hat[b, 0, wb[0]:wb[3], wb[1]:wb[4], wb[2]:wb[5]] = 0.15
        return image_hat, torch.zeros_like(window_image)

    plain, = synthesize_into_scan(scan=scan, boxes=[box], generate=smooth_generator, model_info=INFO,
                                  match_noise=False)
    matched, = synthesize_into_scan(scan=scan, boxes=[box], generate=smooth_generator, model_info=INFO,
                                    match_noise=True, seed=4)
    core = (slice(14, 26), slice(14, 30), slice(10, 16))
    scan_sd = scan.array[core].std()
    assert plain.image[core].std() < 0.2 * scan_sd
    assert 0.6 * scan_sd < matched.image[core].std() < 1.5 * scan_sd
    assert np.array_equal(outside(matched.image, box), outside(scan.array, box))
    assert matched.mask.sum() == 0


def test_a_ct_or_activity_scan_is_refused():
    ct = noisy_scan()
    ct = Volume(array=ct.array * 1000 - 1000, affine=FLIPPED, path=Path("ct.nii.gz"))
    with pytest.raises(TumorGenError, match="ct.nii.gz"):
        synthesize_into_scan(scan=ct, boxes=[BOX], generate=hot_sphere_generator, model_info=INFO)
    bq = Volume(array=noisy_scan().array * 5000, affine=FLIPPED, path=Path("bq.nii.gz"))
    with pytest.raises(TumorGenError, match="SUV"):
        synthesize_into_scan(scan=bq, boxes=[BOX], generate=hot_sphere_generator, model_info=INFO)


def test_write_outputs_files_manifest_and_refusal(tmp_path):
    scan_path = tmp_path / "in" / "scan_01.nii.gz"
    scan = noisy_scan()
    save_volume(scan.array, scan.affine, scan_path)
    scan = load_volume(scan_path)
    results = synthesize_into_scan(scan=scan, boxes=[BOX], generate=hot_sphere_generator, model_info=INFO,
                                   num=2, seed=5)
    out = tmp_path / "out"
    model = {"run": "runs/x", "version": "0.1.0", "checkpoint_sha256": "ab" * 32}
    manifest = write_outputs(results, scan_path=scan_path, out_dir=out, case_name="../scan 01",
                             manifest_extra={"model": model, "steps": 10})
    names = sorted(p.name for p in out.iterdir())
    assert names == ["manifest.json", "scan_01_0.png", "scan_01_0_mask.nii.gz", "scan_01_0_pet.nii.gz",
                     "scan_01_1.png", "scan_01_1_mask.nii.gz", "scan_01_1_pet.nii.gz"]
    pet = nib.load(str(out / "scan_01_1_pet.nii.gz"))
    np.testing.assert_allclose(pet.affine, scan.affine, atol=1e-5)
    assert pet.get_data_dtype() == np.float32
    assert np.array_equal(np.asarray(pet.dataobj), results[1].image)
    mask = nib.load(str(out / "scan_01_1_mask.nii.gz"))
    assert mask.get_data_dtype() == np.uint8
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    (case,) = on_disk["cases"]
    assert case["case"] == "scan_01" and case["model"] == model and case["steps"] == 10
    assert case["input"] == str(scan_path)
    sample = case["samples"][1]
    assert sample["box"] == list(BOX) and sample["seed"] == results[1].seed
    assert sample["files"]["pet"] == "scan_01_1_pet.nii.gz"
    voxel_ml = 2.0 * 1.5 * 3.0 / 1000
    assert sample["tumor_volume_ml"] == pytest.approx(results[1].mask.sum() * voxel_ml)
    assert sample["suv_max"] == pytest.approx(float(results[1].image[results[1].mask > 0].max()))
    with pytest.raises(TumorGenError, match="already exists"):
        write_outputs(results, scan_path=scan_path, out_dir=out, case_name="scan_01")
    write_outputs(results[:1], scan_path=scan_path, out_dir=out, case_name="other")
    cases = json.loads((out / "manifest.json").read_text())["cases"]
    assert [c["case"] for c in cases] == ["scan_01", "other"]
    assert not list(out.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize(
    "raw, safe",
    [("../../etc/passwd", "etc_passwd"), ("a/b\\c", "a_b_c"), ("..", None), ("ok-name.v2", "ok-name.v2"),
     ("x..y", "x_y"), (".hidden", "hidden"), ("", None), ("a b\nc", "a_b_c")],
)
def test_case_names_are_made_path_safe(raw, safe):
    if safe is None:
        with pytest.raises(TumorGenError):
            safe_case_name(raw)
    else:
        assert safe_case_name(raw) == safe


def test_case_name_from_autopet_and_plain_paths():
    assert case_name_from_path("data/PETCT_0a1/03-2002-NA-PET/SUV.nii.gz") == "PETCT_0a1_03-2002-NA-PET"
    assert case_name_from_path("x/STS_001_pet.nii.gz") == "STS_001_pet"


def test_on_a_healthy_phantom_in_autopet_layout_the_box_goes_into_the_lungs(tmp_path):
    phantom_module = pytest.importorskip("tumorgen.data.phantom")
    case = phantom_module.make_phantom(region="torso", size=(48, 48, 32), with_tumor=False,
                                       rng=np.random.default_rng(0))
    folder = tmp_path / "PETCT_x" / "study"
    save_volume(case.suv, case.affine, folder / "SUV.nii.gz")
    save_volume(case.ct, case.affine, folder / "CTres.nii.gz")
    scan = load_volume(folder / "SUV.nii.gz")
    spacing = np.array(case.spacing)
    info = {"size": [32, 32, 32], "spacing": list(spacing * 1.5), "suv_max": 15.0, "latent_factor": 4,
            "box_sizes_mm": [list(spacing * 8)]}
    results = synthesize_into_scan(scan=scan, boxes=None, generate=hot_sphere_generator, model_info=info,
                                   num=2, seed=11)
    lungs = case.organs["lungs"]
    for result in results:
        assert result.region == "lungs"
        center = tuple((a + b) // 2 for a, b in zip(result.box[:3], result.box[3:]))
        assert lungs[center]
        assert np.array_equal(outside(result.image, result.box), outside(scan.array, result.box))
        assert result.mask.sum() > 0 and outside(result.mask, result.box).sum() == 0
