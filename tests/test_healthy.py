"""Tumors placed in tumor-free tissue of real-like scans (`tumorgen.evaluation.healthy`): the zone keeps its
distance from the real tumor and from hot spots, boxes are seeded, a hot-blob generator passes the demo's
four checks end to end, and a trained toy TumorGen run goes through the same path to a montage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_tiny_prep
from tumorgen.api import as_volume
from tumorgen.data.box_geometry import box_slices
from tumorgen.data.prepared import load_prepared
from tumorgen.errors import TumorGenError
from tumorgen.evaluation.healthy import hot_spots, place_box, placement_zone, run_healthy, summary_lines
from tumorgen.generators import build_generator
from tumorgen.synthesis.pipeline import ModelInfo

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])  # 4 mm voxels


def _scan():
    """A 40^3 body of SUV 1 in air, a real tumor in one corner and a 'bladder' (SUV 20) in the other."""
    suv = np.zeros((40, 40, 40), np.float32)
    suv[2:38, 2:38, 2:38] = 1.0
    tumor = np.zeros(suv.shape, np.uint8)
    tumor[5:10, 5:10, 5:10] = 1
    suv[tumor > 0] = 6.0
    suv[30:35, 30:35, 30:35] = 20.0  # 125 voxels of 64 uL: 8 mL
    suv[20, 3, 20] = 9.0  # one hot voxel: noise, not a hot spot
    return suv, tumor


def test_the_zone_keeps_the_clearance_from_the_tumor_and_the_hot_spot_but_not_from_one_hot_voxel():
    suv, tumor = _scan()
    hot = hot_spots(suv, tumor, np.array([4.0, 4.0, 4.0]))
    assert hot.sum() == 125 and not hot[20, 3, 20] and not (hot & (tumor > 0)).any()
    zone = placement_zone(suv, tumor, AFFINE, clearance_mm=20.0)
    assert zone.near[10, 10, 10] and zone.near[26, 32, 32]  # 4 mm and 16 mm away
    assert not zone.near[20, 20, 20] and not zone.near[20, 3, 20]
    assert zone.centres[20, 20, 20] and not zone.centres[0, 0, 0] and not zone.body[0, 0, 0]  # air is not body
    assert zone.to_tumor[12, 7, 7] == pytest.approx(12.0)


def test_placed_boxes_keep_the_clearance_and_depend_on_the_seed_alone():
    suv, tumor = _scan()
    zone = placement_zone(suv, tumor, AFFINE, clearance_mm=20.0)
    info = ModelInfo(size=(40, 40, 40), spacing=(4.0, 4.0, 4.0), suv_max=50.0, latent_factor=1,
                     box_sizes_mm=((24.0, 24.0, 24.0), (32.0, 28.0, 20.0)))
    scan = as_volume(suv, affine=AFFINE)

    def place(seed, zone=zone):
        return place_box(rng=np.random.default_rng(seed), zone=zone, scan=scan, info=info)

    for seed in range(5):
        where = place(seed)
        inside = box_slices(where.box)
        assert not zone.near[inside].any() and zone.body[inside].mean() >= 0.8
        assert where.clearance_mm >= 20.0
        assert where == place(seed)
    assert place(0, placement_zone(suv, np.ones_like(tumor), AFFINE, clearance_mm=20.0)).box is None


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    """7 cases of 32^3 at 4 mm: 2 test, 4 train with tumors, 1 healthy (train)."""
    return write_tiny_prep(tmp_path_factory.mktemp("healthy") / "prep", size=32, n_cases=7, seed=5, n_test=2)


def test_a_hot_blob_placed_in_tumor_free_tissue_passes_the_four_checks(prep, tmp_path):
    dataset = load_prepared(prep)
    train = [c.load() for c in dataset.tumor_cases("train")]
    blob = build_generator("blob", reference=([im * dataset.suv_max for im, _, _ in train], [m for _, m, _ in train]))
    out = tmp_path / "healthy"
    metrics = run_healthy(data=prep, out=out, generator=blob, per_case=2, clearance_mm=8.0, seed=0)
    assert metrics["summary"] == {"cases": 2, "asked": 4, "placed": 4, "passing": 4, "no_room": 0, "failed": 0}
    for case in metrics["cases"]:
        real = dataset.case(case["case"]).load()[1]
        for sample in case["samples"]:
            assert sample["clearance_mm"] >= 8.0 and not real[box_slices(sample["box"])].any()
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "montage.png", "table.csv", "table.md"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    again = run_healthy(data=prep, out=tmp_path / "again", generator=blob, per_case=2, clearance_mm=8.0, seed=0)
    assert [s["box"] for c in again["cases"] for s in c["samples"]] == \
        [s["box"] for c in metrics["cases"] for s in c["samples"]]
    assert summary_lines(metrics)[0].startswith("healthy tissue: 4 of 4 tumors placed")


def test_a_trained_tumorgen_run_goes_the_same_way_and_no_room_is_reported_not_fatal(trained_debug_run, tmp_path):
    prep = trained_debug_run.parent / "prep"
    generator = build_generator("tumorgen", trained_debug_run, steps=2, device="cpu")
    metrics = run_healthy(data=prep, out=tmp_path / "tg", generator=generator, per_case=1, clearance_mm=4.0)
    assert metrics["generator"]["kind"] == "tumorgen" and metrics["summary"]["asked"] == 1
    assert (tmp_path / "tg" / "montage.png").stat().st_size > 0
    crowded = run_healthy(data=prep, out=tmp_path / "crowded", generator=generator, per_case=1, clearance_mm=500.0)
    assert crowded["summary"]["no_room"] == 1 and "no room" in (tmp_path / "crowded" / "table.md").read_text()


def test_bad_settings_are_one_sentence(prep, tmp_path):
    blob = build_generator("blob", reference=([np.ones((4, 4, 4))], [np.ones((4, 4, 4))]))
    with pytest.raises(TumorGenError, match="per_case"):
        run_healthy(data=prep, out=tmp_path / "x", generator=blob, per_case=0)
    with pytest.raises(TumorGenError, match="body fraction"):
        run_healthy(data=prep, out=tmp_path / "x", generator=blob, body_fraction=0.0)
