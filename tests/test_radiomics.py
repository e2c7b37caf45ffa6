"""Radiomic fidelity: the panel (MIRP, where installed), the rim/core ratio, and the comparison's values."""

from __future__ import annotations

import numpy as np
import pytest

from tumorgen.evaluation import radiomics
from tumorgen.evaluation.radiomics import PANEL, radiomic_panel, rim_core_ratio
from tumorgen.evaluation.radiomics_compare import compare_panels, distribution_distance, render, standardized_difference


def _ball(shape=(24, 24, 24), radius=6.0, center=None):
    center = np.array(shape) / 2 - 0.5 if center is None else np.asarray(center)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return np.linalg.norm(grid - center, axis=-1)


def test_standardized_difference_and_distance_have_their_expected_values():
    real, other = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.0, 4.0, 5.0])
    sd = np.std(real, ddof=1)  # 1.29099
    assert standardized_difference(real, other) == pytest.approx(1.0 / sd)
    assert distribution_distance(real, other) == pytest.approx(1.0 / sd)  # a shift by 1: W1 = 1
    assert standardized_difference(real, real) == 0.0 and distribution_distance(real, real) == 0.0
    assert np.isnan(standardized_difference(real[:1], other)) and np.isnan(distribution_distance(real, other[:0]))


def test_compare_panels_floor_within_and_rim_share():
    def panels(values, rims):
        return [{**{k: np.nan for k in PANEL}, "cov": v, "rim_core_ratio": r} for v, r in zip(values, rims)]

    real = panels([0.4, 0.5, 0.6, 0.7], [1.3, 1.0, 0.9, 1.25])
    reference = panels([0.45, 0.55, 0.65, 0.5, 0.6, 0.7], [1.0] * 6)
    close = panels([0.42, 0.52, 0.62, 0.72], [1.0, 1.0, 1.3, 0.9])
    smooth = panels([0.2, 0.25, 0.3, 0.2], [0.8] * 4)
    result = compare_panels(real, {"close": close, "smooth": smooth}, reference, repeats=3, seed=0)
    cov = result["features"]["cov"]
    assert cov["real_median"] == pytest.approx(0.55)
    assert cov["methods"]["close"]["d"] == pytest.approx(0.02 / np.std([0.4, 0.5, 0.6, 0.7], ddof=1))
    assert cov["methods"]["close"]["within_floor"] and not cov["methods"]["smooth"]["within_floor"]
    assert cov["methods"]["smooth"]["d"] < -2 and cov["floor_abs_d_max"] < 1
    assert result["rim_share"]["real"] == 0.5 and result["rim_share"]["close"] == 0.25
    assert result["rim_share"]["smooth"] == 0.0 and result["rim_share"]["floor"] == 0.0
    assert result["within_floor"]["close"] >= 1 and result["within_floor"]["smooth"] == 0
    text = render(result)
    assert "| CoV | 0.55 |" in text and "+0.15" in text and "hot rim share" in text


def test_the_rim_core_ratio_reads_a_hot_rim_above_one_and_a_solid_mass_below():
    depth = _ball()
    mask = depth <= 6.0
    ring = np.where(depth > 4.5, 3.0, 1.0).astype(np.float32)  # hot outer shell, cold core
    solid = np.clip(8.0 - depth, 0, None).astype(np.float32)  # hottest in the middle
    uniform = np.full(mask.shape, 2.0, np.float32)
    assert rim_core_ratio(ring, mask, (2.0, 2.0, 2.0)) > 1.5
    assert rim_core_ratio(solid, mask, (2.0, 2.0, 2.0)) < 0.8
    assert rim_core_ratio(uniform, mask, (2.0, 2.0, 2.0)) == pytest.approx(1.0)
    assert np.isnan(rim_core_ratio(uniform, np.zeros_like(mask), (1.0, 1.0, 1.0)))


def test_an_empty_mask_gives_an_all_nan_panel_without_mirp():
    panel = radiomic_panel(np.ones((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8), (1.0, 1.0, 1.0))
    assert list(panel) == list(PANEL) and all(np.isnan(v) for v in panel.values())


def test_without_mirp_the_panel_is_refused_in_one_sentence(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mirp(name, *args, **kwargs):
        if name == "mirp" or name.startswith("mirp."):
            raise ImportError("No module named 'mirp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mirp)
    assert not radiomics.mirp_available()
    from tumorgen.errors import TumorGenError

    with pytest.raises(TumorGenError, match=r"pip install 'tumorgen\[radiomics\]'"):
        radiomic_panel(np.ones((8, 8, 8), np.float32), np.ones((8, 8, 8), np.uint8), (1.0, 1.0, 1.0))


@pytest.mark.slow
def test_mirp_panel_agrees_with_numpy_and_respects_the_spacing():
    pytest.importorskip("mirp")
    rng = np.random.default_rng(0)
    depth = _ball(radius=5.0)
    mask = (depth <= 5.0).astype(np.uint8)
    suv = (2.0 + 6.0 * (depth <= 5.0) * rng.random(depth.shape)).astype(np.float32)
    spacing = (4.0, 4.0, 3.0)
    panel = radiomic_panel(suv, mask, spacing)
    inside = suv[mask > 0].astype(np.float64)
    assert panel["suv_mean"] == pytest.approx(inside.mean(), rel=1e-5)
    assert panel["suv_max"] == pytest.approx(inside.max(), rel=1e-5)
    assert panel["cov"] == pytest.approx(inside.std() / inside.mean(), rel=1e-4)
    voxel_ml = np.prod(spacing) / 1000.0
    assert 0.85 * mask.sum() * voxel_ml < panel["volume_ml"] < 1.05 * mask.sum() * voxel_ml  # the mesh is a bit smaller
    assert 0.8 < panel["sphericity"] <= 1.0 and 0.8 < panel["elongation"] <= 1.0
    assert panel["suv_peak"] <= panel["suv_max"]
    assert all(np.isfinite(panel[k]) for k in PANEL), panel
    # the same tumor on a grid twice as fine along z holds ~the same volume in ml
    fine = radiomic_panel(np.repeat(suv, 2, axis=2), np.repeat(mask, 2, axis=2), (4.0, 4.0, 1.5))
    assert fine["volume_ml"] == pytest.approx(panel["volume_ml"], rel=0.1)


@pytest.mark.slow
def test_trimming_the_morphology_family_keeps_the_three_features_it_reports(monkeypatch):
    pytest.importorskip("mirp")
    from mirp._features import morph_3d_features

    depth = _ball(radius=4.0)
    mask = (depth <= 4.0).astype(np.uint8)
    suv = np.where(mask > 0, 5.0, 1.0).astype(np.float32)
    trimmed = radiomic_panel(suv, mask, (3.0, 3.0, 3.0))
    full_table = getattr(morph_3d_features.get_morphology_3d_class_dict, "_tumorgen_original")
    monkeypatch.setattr(morph_3d_features, "get_morphology_3d_class_dict", full_table)
    monkeypatch.setattr(radiomics, "_extract_features", lambda: __import__("mirp").extract_features)
    full = radiomic_panel(suv, mask, (3.0, 3.0, 3.0))
    for key in ("volume_ml", "sphericity", "elongation"):
        assert trimmed[key] == pytest.approx(full[key], rel=1e-9)
