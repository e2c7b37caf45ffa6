"""One interface for every tumor generator (`tumorgen.generators`): the record's fields, the anchors'
expected values, and every kind built by the one factory."""

from __future__ import annotations

import numpy as np
import pytest

from tumorgen.errors import TumorGenError
from tumorgen.generators import KINDS, TumorGenerator, as_generator, build_generator, reference_uptake


def _scan(side: int = 16, tumor_suv: float = 6.0):
    suv = np.full((side,) * 3, 1.0, np.float32)
    mask = np.zeros((side,) * 3, np.uint8)
    mask[6:10, 6:10, 6:10] = 1
    suv[mask > 0] = tumor_suv
    return suv, mask


def test_blob_is_as_hot_as_the_reference_median_and_lies_in_its_box():
    refs = [_scan(tumor_suv=v) for v in (4.0, 6.0, 20.0)]
    generator = build_generator("blob", reference=([s for s, _ in refs], [m for _, m in refs]))
    assert (generator.kind, generator.steps, generator.window) == ("blob", None, None)
    assert generator.record["uptake_suv"] == pytest.approx(6.0) == reference_uptake(*zip(*refs))
    scan = np.ones((16, 16, 16), np.float32)
    box = (2, 3, 4, 12, 11, 14)
    out, mask = generator(scan, np.eye(4), box, seed=0)
    inside = np.zeros(scan.shape, bool)
    inside[2:12, 3:11, 4:14] = True
    assert mask.any() and not mask[~inside].any()
    assert out[mask > 0].mean() == pytest.approx(6.0, rel=1e-5)  # background 1 + blob: the median mean SUV
    assert np.array_equal(out[~inside], scan[~inside]) and scan.max() == 1.0  # the input is not modified


def test_empty_returns_the_scan_and_no_mask():
    scan, _ = _scan()
    out, mask = build_generator("empty")(scan, np.eye(4), (0, 0, 0, 4, 4, 4), seed=3)
    assert np.array_equal(out, scan) and out is not scan and not mask.any()


def test_syntumor_is_seeded_by_the_call_and_needs_reference_tumors():
    refs = [_scan(tumor_suv=v) for v in (4.0, 8.0)]
    generator = build_generator("syntumor", reference=([s for s, _ in refs], [m for _, m in refs]), seed=1)
    scan = np.ones((24, 24, 24), np.float32)
    box = (6, 6, 6, 18, 18, 18)
    a, b, c = (generator(scan, np.eye(4), box, seed=s) for s in (5, 5, 6))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and not np.array_equal(a[0], c[0])
    assert a[1].any() and a[0][a[1] > 0].mean() > 2.0
    with pytest.raises(TumorGenError, match="reference tumors"):
        build_generator("syntumor")


def test_bad_kinds_steps_and_samplers_are_refused_with_a_sentence(tmp_path):
    with pytest.raises(TumorGenError, match="unknown generator 'gan'"):
        build_generator("gan")
    with pytest.raises(TumorGenError, match="steps must be >= 1"):
        build_generator("tumorgen", tmp_path, steps=0)
    with pytest.raises(TumorGenError, match="needs its run folder"):
        build_generator("difftumor")
    with pytest.raises(TumorGenError, match="not a training run folder"):
        build_generator("bld", tmp_path)
    with pytest.raises(TumorGenError, match="sampler euler does not apply"):
        build_generator("difftumor", tmp_path, sampler="euler")
    assert set(KINDS) == {"tumorgen", "difftumor", "bld", "medfusion", "hagan", "syntumor", "blob", "empty",
                          "vae-roundtrip"}


@pytest.mark.slow
def test_a_trained_run_as_a_generator_records_what_a_manifest_needs(trained_debug_run):
    from tumorgen.api import TumorGen
    from tumorgen.data.prepared import load_prepared

    generator = build_generator("tumorgen", trained_debug_run, steps=2, device="cpu")
    assert (generator.name, generator.kind, generator.steps, generator.sampler) == (
        "tumorgen-2", "tumorgen", 2, "euler")
    assert generator.source == str(trained_debug_run) and generator.uptake_conditioned is False
    assert len(generator.record["checkpoint_sha256"]) == 64 and generator.window is not None
    assert generator.info.size == (16, 16, 16)
    case = load_prepared(trained_debug_run.parent / "prep").split("train")[0]
    image, _, affine = case.load()
    box = (4, 4, 4, 12, 12, 12)
    suv, mask = generator(image * 10.0, affine, box, seed=7)
    direct = TumorGen.load(trained_debug_run, device="cpu").synthesize(image * 10.0, affine=affine, box=box,
                                                                        steps=2, seed=7)[0]
    assert np.array_equal(suv, direct.image) and np.array_equal(mask, direct.mask), "the API's path, unchanged"
    default = build_generator("tumorgen", trained_debug_run, device="cpu")
    assert default.steps == TumorGen.load(trained_debug_run, device="cpu").sample_steps
    with pytest.raises(TumorGenError, match="model window"):
        build_generator("tumorgen", trained_debug_run, device="cpu", grid=(32, 32, 32))


@pytest.mark.slow
def test_as_generator_takes_a_tumorgen_a_syntumor_a_record_or_a_callable(trained_debug_run):
    from tumorgen.api import TumorGen
    from tumorgen.baselines.syntumor import SuvStats, SynTumor

    tg = TumorGen.load(trained_debug_run, device="cpu")
    assert isinstance(as_generator(tg, steps=3), TumorGenerator) and as_generator(tg, steps=3).steps == 3
    syn = SynTumor(suv_stats=SuvStats.fit([4.0, 6.0], [8.0, 12.0]), seed=0)
    assert as_generator(syn).kind == "syntumor"
    empty = build_generator("empty")
    assert as_generator(empty) is empty

    def maker(suv, affine, box, seed):
        return suv, np.zeros(suv.shape, np.uint8)

    assert as_generator(maker) is maker
    with pytest.raises(TypeError):
        as_generator(42)
