"""The uptake-on-request measure (`evaluation.uptake_request`): expected values on made-up asks, the grid
parser's refusals, and the paired protocol's section on a toy uptake-conditioned model."""

from __future__ import annotations

import numpy as np
import pytest


def test_a_followed_ask_scores_slope_one_and_a_compressed_one_does_not():
    from tumorgen.evaluation.uptake_request import summarize_requests

    asked = [1.5, 3.0, 6.0, 12.0]
    followed = [{"case": "a", "asked": a, "achieved": a * 1.1} for a in asked]
    s = summarize_requests(followed)
    assert s["overall"]["within"] == 1.0 and s["overall"]["empty"] == 0
    assert s["overall"]["slope"] == pytest.approx(1.1) and s["overall"]["intercept"] == pytest.approx(0.0, abs=1e-9)
    # compressed toward 4 SUV: achieved = 4 + 0.5 (asked - 4); the asks at 3 and 6 land within 20% (3.5, 5)
    compressed = [{"case": "a", "asked": a, "achieved": 4 + 0.5 * (a - 4)} for a in asked]
    compressed.append({"case": "b", "asked": 12.0, "achieved": float("nan")})  # an empty mask
    s = summarize_requests(compressed)
    assert s["overall"]["slope"] == pytest.approx(0.5)
    assert s["overall"]["within"] == pytest.approx(2 / 5) and s["overall"]["empty"] == 1
    assert s["by_asked"][12.0]["n"] == 2 and s["by_asked"][12.0]["empty"] == 1
    assert s["by_asked"][12.0]["achieved_median"] == pytest.approx(8.0)
    assert s["by_asked"][1.5]["ratio_median"] == pytest.approx(2.75 / 1.5)


def test_achieved_is_the_mean_inside_the_mask_and_nan_when_empty():
    from tumorgen.evaluation.uptake_request import achieved_mean

    suv = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    mask = np.zeros((2, 2, 2), np.uint8)
    assert np.isnan(achieved_mean(suv, mask))
    mask[0, 0, :] = 1
    assert achieved_mean(suv, mask) == pytest.approx(0.5)


@pytest.mark.parametrize("text", ["", "3,x", "3,-1", "0", "nan"])
def test_the_grid_takes_positive_numbers_only(text):
    from tumorgen.errors import TumorGenError
    from tumorgen.evaluation.uptake_request import parse_asked

    with pytest.raises(TumorGenError, match="--uptake-grid"):
        parse_asked(text)


def test_the_grid_parses():
    from tumorgen.evaluation.uptake_request import parse_asked

    assert parse_asked("1.5, 3,12") == [1.5, 3.0, 12.0]
