"""The Python API on phantoms with a (barely) trained debug run: the scan is kept outside the box to the
voxel, the mask stays in the box, the grid is the input's, and samples are reproducible per seed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tumorgen import __version__
from tumorgen.data.phantom import make_phantom
from tumorgen.errors import TumorGenError
from tumorgen.io.nifti import save_volume

BOX = (16, 16, 12, 22, 22, 18)  # 6 voxels of 8 mm: 48 mm, inside the debug model's 64 mm window
STEPS = 2


def outside(array: np.ndarray, box) -> np.ndarray:
    keep = np.ones(array.shape, dtype=bool)
    keep[box[0]:box[3], box[1]:box[4], box[2]:box[5]] = False
    return array[keep]


def inside(array: np.ndarray, box) -> np.ndarray:
    return array[box[0]:box[3], box[1]:box[4], box[2]:box[5]]


@pytest.fixture(scope="module")
def model(trained_debug_run):
    from tumorgen import TumorGen

    return TumorGen.load(trained_debug_run, device="cpu")


@pytest.fixture(scope="module")
def phantom():
    """A healthy torso phantom, 40 x 40 x 32 voxels of 8 mm."""
    return make_phantom(region="torso", size=(40, 40, 32), with_tumor=False, rng=np.random.default_rng(4))


@pytest.mark.slow
def test_output_equals_input_outside_the_box_mask_inside_and_same_grid(model, phantom):
    results = model.synthesize(phantom.suv, affine=phantom.affine, box=BOX, num=2, steps=STEPS, seed=3)
    assert len(results) == 2
    for result in results:
        assert result.image.shape == phantom.suv.shape and result.mask.shape == phantom.suv.shape
        assert np.array_equal(result.affine, phantom.affine)
        assert result.image.dtype == np.float32 and result.mask.dtype == np.uint8
        assert np.array_equal(outside(result.image, BOX), outside(phantom.suv, BOX))
        assert outside(result.mask, BOX).sum() == 0
        assert set(np.unique(result.mask).tolist()) <= {0, 1}
        assert not np.array_equal(inside(result.image, BOX), inside(phantom.suv, BOX)), "the box was synthesized"
        assert result.box == BOX and result.region == "given" and result.seconds > 0
    assert not np.array_equal(phantom.suv, results[0].image), "the input array is never modified in place"


@pytest.mark.slow
def test_same_seed_same_samples_other_seed_differs_and_batching_does_not_matter(model, phantom):
    kwargs = dict(affine=phantom.affine, box=BOX, num=2, steps=STEPS)
    one_by_one = model.synthesize(phantom.suv, seed=5, batch=1, **kwargs)
    batched = model.synthesize(phantom.suv, seed=5, batch=2, **kwargs)
    for a, b in zip(one_by_one, batched):
        assert a.seed == b.seed
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(one_by_one[0].image, one_by_one[1].image), "two samples of one call differ"
    other = model.synthesize(phantom.suv, seed=6, batch=1, **kwargs)
    assert not np.array_equal(other[0].image, one_by_one[0].image)


@pytest.mark.slow
def test_a_path_gives_the_same_result_as_the_array_and_sampled_boxes_go_into_the_organ(model, phantom, tmp_path):
    path = save_volume(phantom.suv, phantom.affine, tmp_path / "scan.nii.gz")
    from_path = model.synthesize(path, box=BOX, steps=STEPS, seed=1)[0]
    from_array = model.synthesize(phantom.suv, affine=phantom.affine, box=BOX, steps=STEPS, seed=1)[0]
    assert np.array_equal(from_path.image, from_array.image)

    liver = phantom.organs["liver"]
    sampled = model.synthesize(phantom.suv, affine=phantom.affine, organ_mask=liver, num=1, steps=STEPS, seed=2)
    for result in sampled:
        center = tuple((a + b) // 2 for a, b in zip(result.box[:3], result.box[3:]))
        assert result.region == "organ" and liver[center]
        assert np.array_equal(outside(result.image, result.box), outside(phantom.suv, result.box))


def test_info_version_and_model_record(model, trained_debug_run):
    assert model.info.size == (16, 16, 16) and model.info.spacing == (4.0, 4.0, 4.0)
    assert model.info.suv_max == 10.0 and len(model.info.box_sizes_mm) == 3
    assert model.version == __version__
    record = model.model_record()
    assert record["run"] == str(trained_debug_run) and record["step"] == 1
    assert len(record["checkpoint_sha256"]) == 64 and int(record["checkpoint_sha256"], 16) >= 0


def test_import_tumorgen_does_not_import_torch_but_exports_tumorgen():
    code = ("import sys, tumorgen; assert 'torch' not in sys.modules; "
            "from tumorgen import TumorGen; assert TumorGen.__name__ == 'TumorGen'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bad_calls_are_refused_with_one_sentence(model, phantom):
    with pytest.raises(TumorGenError, match="either one box"):
        model.synthesize(phantom.suv, affine=phantom.affine, box=BOX, boxes=[BOX])
    with pytest.raises(TumorGenError, match="needs its affine"):
        model.synthesize(phantom.suv, box=BOX)
    with pytest.raises(TumorGenError, match="smaller than one latent voxel"):
        model.synthesize(phantom.suv, affine=phantom.affine, box=(10, 10, 10, 11, 14, 14))
    with pytest.raises(TumorGenError, match="outside the scan"):
        model.synthesize(phantom.suv, affine=phantom.affine, box=(36, 10, 10, 42, 16, 16))
    with pytest.raises(TumorGenError, match="shape"):
        model.synthesize(phantom.suv, affine=phantom.affine, organ_mask=np.ones((8, 8, 8)))
    with pytest.raises(TumorGenError, match="is this a CT"):
        model.synthesize(np.full((40, 40, 32), -1000.0), affine=phantom.affine, box=BOX)
    crop_peaking_below_one = phantom.suv * (0.9 / phantom.suv.max())  # a patch may; a whole scan may not (CLI)
    assert len(model.synthesize(crop_peaking_below_one, affine=phantom.affine, box=BOX, steps=STEPS)) == 1
    with pytest.raises(TumorGenError, match="NaN or infinite"):
        model.synthesize(np.where(phantom.suv > 0, phantom.suv, np.nan), affine=phantom.affine, box=BOX)
    with pytest.raises(TumorGenError, match="not a TumorGen run folder"):
        type(model).load(model.run_dir.parent / "vae", device="cpu")
