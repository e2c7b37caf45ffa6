"""RandTumorSynthesisd and the insert functions behind it: the image is unchanged outside the box, the new
label lies inside the box and is unioned with the real one, seeded, with a cheap maker, SynTumor and TumorGen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import write_tiny_prep
from tumorgen.baselines.syntumor import SuvStats, SynTumor
from tumorgen.data.box_geometry import box_slices
from tumorgen.augmentation.rand_tumor import (
    RandTumorSynthesisd,
    insert_tumor,
    placement_box,
    regeneration_box,
)

SIZE = 24
UNTOUCHED = [-1] * 6


def sample(*, tumor: bool = True, seed: int = 0) -> dict:
    """A (1, 24, 24, 24) SUV image with a hot 5^3 tumor (or none) and its label."""
    rng = np.random.default_rng(seed)
    image = (1.0 + 0.1 * rng.standard_normal((1, SIZE, SIZE, SIZE))).astype(np.float32)
    label = np.zeros((1, SIZE, SIZE, SIZE), np.uint8)
    if tumor:
        label[0, 4:9, 4:9, 4:9] = 1
        image[label > 0] += 5.0
    return {"image": image, "label": label}


def cube_maker(suv, affine, box, seed):
    """A cheap generator: a hot cube in the middle of the box, plus junk outside it that must be dropped."""
    out, mask = np.array(suv, copy=True), np.zeros(suv.shape, np.uint8)
    lo, hi = np.array(box[:3]), np.array(box[3:])
    a, b = lo + (hi - lo) // 4, hi - (hi - lo) // 4
    mask[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = 1
    out[mask > 0] += 4.0 + (seed % 7) / 10
    out[0, 0, 0] = 99.0  # outside every box used here: the transform must not keep it
    mask[0, 0, 0] = 1
    return out, mask


def outside(box, shape=(SIZE, SIZE, SIZE)) -> np.ndarray:
    keep = np.ones(shape, bool)
    keep[box_slices(box)] = False
    return keep


def syntumor() -> SynTumor:
    return SynTumor(suv_stats=SuvStats.fit([4.0, 6.0, 8.0], [7.0, 10.0, 14.0]), radius_range_vox=(2.0, 4.0))


@pytest.mark.parametrize("mode", ["regenerate", "place"])
def test_image_unchanged_outside_the_box_and_label_unioned(mode):
    data = sample()
    out = RandTumorSynthesisd(generator=cube_maker, prob=1.0, mode=mode, box_key="box").set_random_state(3)(data)
    box = tuple(int(v) for v in out["box"])
    assert box != tuple(UNTOUCHED)
    rest = outside(box)
    image, label, real = out["image"][0], out["label"][0], data["label"][0]
    assert np.array_equal(image[rest], data["image"][0][rest])  # bit-identical outside the box
    assert np.array_equal(label[rest], real[rest])  # the real label stays outside the box
    new = label.astype(bool) & ~rest
    assert new.any() and not np.any(image[rest] == 99.0)
    if mode == "place":
        assert not real[box_slices(box)].any(), "a placed box lies clear of the real tumor"
        assert np.array_equal(np.maximum(label, real), label), "the real label is kept (union)"
        assert label.sum() == real.sum() + new.sum()
    else:
        assert box == regeneration_box(real)  # the real tumor's box: tight + 2 voxels, at least 8 a side
        assert not np.array_equal(image[box_slices(box)], data["image"][0][box_slices(box)])
    assert out["image"].dtype == np.float32 and out["label"].dtype == np.uint8 and out["image"].shape == (1, *[SIZE] * 3)


def test_prob_zero_changes_nothing_and_the_input_is_not_modified():
    data = sample()
    before = {k: v.copy() for k, v in data.items()}
    out = RandTumorSynthesisd(generator=cube_maker, prob=0.0, box_key="box")(data)
    assert np.array_equal(out["image"], before["image"]) and np.array_equal(out["label"], before["label"])
    assert out["box"].tolist() == UNTOUCHED
    RandTumorSynthesisd(generator=cube_maker, prob=1.0)(data)
    assert np.array_equal(data["image"], before["image"]), "the caller's arrays are never written"


def test_same_random_state_same_sample():
    runs = []
    for seed in (5, 5, 6):
        t = RandTumorSynthesisd(generator=syntumor(), prob=1.0, box_key="box").set_random_state(seed)
        runs.append([t(sample()) for _ in range(3)])
    for a, b in zip(runs[0], runs[1]):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["box"], b["box"])
    assert any(not np.array_equal(a["image"], c["image"]) for a, c in zip(runs[0], runs[2]))


def test_healthy_sample_gets_a_placed_tumor_and_regenerate_leaves_it_alone():
    out = RandTumorSynthesisd(generator=cube_maker, prob=1.0, box_key="box", box_size_range=(6, 6)) \
        .set_random_state(0)(sample(tumor=False))
    box = out["box"].tolist()
    assert [b - a for a, b in zip(box[:3], box[3:])] == [6, 6, 6]
    assert out["label"][0].sum() > 0 and not out["label"][0][outside(box)].any()
    data = sample(tumor=False)
    out = RandTumorSynthesisd(generator=cube_maker, prob=1.0, mode="regenerate", box_key="box")(data)
    assert out["box"].tolist() == UNTOUCHED and np.array_equal(out["image"], data["image"])


def test_no_room_to_place_falls_back_to_regenerating():
    data = sample()
    data["label"][0, 4:20, 4:20, 4:20] = 1  # a large tumor: no box of its size clear of it
    out = RandTumorSynthesisd(generator=cube_maker, prob=1.0, mode="place", box_key="box").set_random_state(0)(data)
    assert tuple(out["box"].tolist()) == regeneration_box(data["label"][0])


def test_metatensor_in_metatensor_out_with_syntumor_and_its_affine():
    from monai.data import MetaTensor

    data = sample()
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    seen = {}

    def spy(suv, aff, box, seed):
        seen["affine"] = aff
        return syntumor().generate(suv, box=box, rng=np.random.default_rng(seed))

    image = MetaTensor(torch.from_numpy(data["image"]), affine=affine)
    label = MetaTensor(torch.from_numpy(data["label"].astype(np.float32)), affine=affine)
    out = RandTumorSynthesisd(generator=spy, prob=1.0, mode="place", box_key="box").set_random_state(1)(
        {"image": image, "label": label})
    assert isinstance(out["image"], MetaTensor) and isinstance(out["label"], MetaTensor)
    assert torch.equal(out["image"].affine, affine) and np.allclose(seen["affine"], affine.numpy())
    assert out["label"].dtype == torch.float32
    rest = outside(out["box"].tolist())
    assert torch.equal(out["image"][0][torch.from_numpy(rest)], image[0][torch.from_numpy(rest)])
    assert set(np.unique(out["label"].numpy())) <= {0.0, 1.0} and out["label"].sum() > label.sum()


def test_in_a_monai_compose_with_a_syntumor_generator():
    from monai.transforms import Compose, RandFlipd

    chain = Compose([RandTumorSynthesisd(generator=syntumor(), prob=1.0),
                     RandFlipd(keys=("image", "label"), prob=0.0)])
    chain.set_random_state(0)
    out = chain(sample())
    assert out["label"].sum() > 0 and tuple(out["image"].shape) == (1, SIZE, SIZE, SIZE)


def test_placement_box_keeps_clearance_and_region():
    label = np.zeros((SIZE,) * 3, np.uint8)
    label[10:14, 10:14, 10:14] = 1
    region = np.zeros((SIZE,) * 3, bool)
    region[:, :, :12] = True
    found = 0
    for seed in range(10):
        box = placement_box(label, size=(5, 5, 5), rng=np.random.default_rng(seed), region=region, clearance=2)
        if box is None:
            continue
        found += 1
        assert [b - a for a, b in zip(box[:3], box[3:])] == [5, 5, 5]
        grown = tuple(max(v - 2, 0) for v in box[:3]) + tuple(v + 2 for v in box[3:])
        assert not label[box_slices(grown)].any()
        assert region[box_slices(box)].mean() >= 0.5
    assert found >= 5, "a 5-voxel box fits in most of this volume: placement must find one for most seeds"
    # no room anywhere: the region is the label itself, so every centre is too close to it
    assert placement_box(label, size=(5, 5, 5), rng=np.random.default_rng(0), region=label > 0, clearance=2) is None


def test_insert_tumor_regenerate_erases_the_real_tumor_first():
    data = sample()
    suv, real = data["image"][0], data["label"][0]
    box = regeneration_box(real)
    seen = {}

    def keep(suv_in, affine, box_in, seed):  # returns its input: what the generator was given
        seen["max"] = float(suv_in[box_slices(box_in)].max())
        return suv_in, np.zeros(suv_in.shape, np.uint8)

    result = insert_tumor(suv, real, affine=np.eye(4), box=box, make=keep, seed=0, erase=True)
    assert seen["max"] < 3.0, "the generator never sees the real tumor (SUV ~6) in the box"
    assert not result.label.any() and result.mode == "regenerate"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="keys"):
        RandTumorSynthesisd(keys=("image",), generator=cube_maker)
    with pytest.raises(ValueError, match="mode"):
        RandTumorSynthesisd(generator=cube_maker, mode="sometimes")
    with pytest.raises(TypeError, match="generator"):
        RandTumorSynthesisd(generator=3)
    with pytest.raises(ValueError, match="channel first"):
        RandTumorSynthesisd(generator=cube_maker, prob=1.0)({"image": np.zeros((4, 4, 4)), "label": np.zeros((4, 4, 4))})


@pytest.mark.slow
def test_a_trained_tumorgen_run_through_the_public_api(trained_debug_run, tmp_path, one_thread):
    from tumorgen import TumorGen
    from tumorgen.data.prepared import load_prepared

    prep = load_prepared(write_tiny_prep(tmp_path / "prep"))
    image, mask, affine = prep.case("case01").load()
    suv = image * np.float32(prep.suv_max)
    model = TumorGen.load(trained_debug_run, device="cpu")
    from monai.data import MetaTensor

    data = {"image": MetaTensor(torch.from_numpy(suv[None]), affine=torch.from_numpy(affine)),
            "label": MetaTensor(torch.from_numpy(mask[None].astype(np.float32)), affine=torch.from_numpy(affine))}
    transform = RandTumorSynthesisd(generator=model, prob=1.0, mode="regenerate", steps=2, box_key="box")
    out = transform.set_random_state(0)(data)
    box = tuple(out["box"].tolist())
    assert box == regeneration_box(mask)
    rest = outside(box, suv.shape)
    assert np.array_equal(out["image"][0].numpy()[rest], suv[rest])
    assert np.array_equal(out["label"][0].numpy()[rest], mask[rest].astype(np.float32))
    again = RandTumorSynthesisd(generator=model, prob=1.0, mode="regenerate", steps=2).set_random_state(0)(data)
    assert torch.equal(again["image"], out["image"]) and torch.equal(again["label"], out["label"])


def test_regeneration_box_expected_values():
    label = np.zeros((24, 24, 24), np.uint8)
    label[10:14, 10:13, 10:15] = 1  # tight box (10, 10, 10, 14, 13, 15)
    label[0:2, 0:2, 20:22] = 1  # a smaller second lesion: not the one regenerated
    # + 2 voxels a face -> (8, 8, 8, 16, 15, 17): extents 8, 7, 9; the 7 grows to MIN_BOX = 8 upwards
    assert regeneration_box(label) == (8, 8, 8, 16, 16, 17)
    assert regeneration_box(label, margin=0, min_box=1) == (10, 10, 10, 14, 13, 15)
    edge = np.zeros((24, 24, 24), np.uint8)
    edge[0:2, 5:9, 22:24] = 1  # at the volume's faces: shifted inside, not cut
    assert regeneration_box(edge) == (0, 3, 16, 8, 11, 24)
    assert regeneration_box(np.zeros((24, 24, 24), np.uint8)) is None
