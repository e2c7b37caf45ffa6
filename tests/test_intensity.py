"""The model's intensity scale: exact round trips to SUV, the values the docs promise, clipping."""

from __future__ import annotations

import numpy as np
import pytest

from tumorgen.data.intensity import model_to_suv, suv_to_model


@pytest.mark.parametrize("kind", ["linear", "log"])
def test_round_trip_to_suv_is_exact_on_the_range(kind):
    suv = np.array([0.0, 0.05, 0.3, 1.0, 2.5, 7.0, 19.9, 50.0], dtype=np.float32)
    back = model_to_suv(suv_to_model(suv, suv_max=50.0, kind=kind), suv_max=50.0, kind=kind)
    np.testing.assert_allclose(back, suv, rtol=1e-5, atol=1e-6)


def test_log_scale_gives_background_and_uptake_room():
    x = suv_to_model(np.array([0.0, 1.0, 5.0, 20.0, 50.0]), suv_max=50.0, kind="log")
    np.testing.assert_allclose(x, np.log1p([0.0, 1.0, 5.0, 20.0, 50.0]) / np.log1p(50.0), rtol=1e-6)
    assert x[1] > 0.15 and x[2] > 0.45  # linear would give 0.02 and 0.1
    linear = suv_to_model(np.array([1.0, 5.0]), suv_max=50.0, kind="linear")
    np.testing.assert_allclose(linear, [0.02, 0.1], rtol=1e-6)


def test_a_model_error_is_a_relative_suv_error_on_the_log_scale():
    """The same model-range error costs ~the same share of SUV at 4 and at 20 (not the same SUV)."""
    step = 0.02
    ratios = [model_to_suv(suv_to_model(v, suv_max=50.0, kind="log") + step, suv_max=50.0, kind="log") / v
              for v in (4.0, 20.0)]
    assert abs(ratios[0] - ratios[1]) < 0.02 and ratios[0] > 1.05


@pytest.mark.parametrize("kind", ["linear", "log"])
def test_out_of_range_values_are_clipped_and_bad_arguments_refused(kind):
    assert suv_to_model(np.array([-3.0, 80.0]), suv_max=50.0, kind=kind).tolist() == [0.0, 1.0]
    assert model_to_suv(np.array([-0.5, 1.5]), suv_max=50.0, kind=kind).tolist() == pytest.approx([0.0, 50.0])
    with pytest.raises(ValueError):
        suv_to_model(np.ones(2), suv_max=50.0, kind="sqrt")
    with pytest.raises(ValueError):
        model_to_suv(np.ones(2), suv_max=0.0, kind=kind)
