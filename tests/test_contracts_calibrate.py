"""audioscore.calibrate against values worked out by hand: the knots a fit makes, the
piecewise-linear map and its logarithmic tails, the degenerate fits, cross-fitting, and what a
stored calibration section may hold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audioscore.calibrate import (
    Calibration,
    CalibrationError,
    IsotonicCalibration,
    TanhCalibration,
    cross_fitted_mae,
    fit_calibration,
    labelled,
)

ISO = {"kind": "isotonic", "x": [0.0, 1.0], "y": [10.0, 20.0], "tail": 2.0}


def test_isotonic_map_interpolates_between_knots_and_bends_logarithmically_past_them():
    cal = IsotonicCalibration(x=(0.0, 1.0), y=(10.0, 20.0), tail=2.0)
    assert cal.slope == 10.0
    got = cal(np.array([0.0, 0.5, 1.0, 3.0, -1.0]))
    want = [10.0, 15.0, 20.0, 20.0 + 2.0 * math.log(11.0), 10.0 - 2.0 * math.log(6.0)]
    np.testing.assert_allclose(got, want)
    assert got.dtype == np.float64 and cal(np.zeros((2, 3))).shape == (2, 3)


def test_slope_is_overall_from_first_to_last_knot():
    cal = IsotonicCalibration(x=(1.0, 2.0, 5.0), y=(0.0, 9.0, 12.0), tail=1.0)
    assert cal.slope == pytest.approx(3.0)


def test_fit_reduces_isotonic_blocks_to_knots_at_block_means():
    cal = fit_calibration([3.0, 0.0, 2.0, 1.0], [4.0, 1.0, 2.0, 3.0], source="val")
    assert cal is not None and (cal.x, cal.y) == ((0.0, 1.5, 3.0), (1.0, 2.5, 4.0))
    assert (cal.tail, cal.n, cal.source) == (pytest.approx(0.3), 4, "val")


def test_fit_tail_is_tail_frac_of_the_label_range():
    cal = fit_calibration([0.0, 1.0], [50.0, 90.0], tail_frac=0.25)
    assert cal is not None and cal.tail == pytest.approx(10.0)


def test_fit_with_no_rise_is_the_level_plus_a_tiny_ramp_over_the_raw_range():
    cal = fit_calibration([8.0, 4.0, 0.0], [60.0, 70.0, 80.0])
    assert cal is not None and cal.x == (0.0, 8.0) and cal.tail == pytest.approx(2.0)
    np.testing.assert_allclose(cal.y, [70.0 - 2e-6, 70.0 + 2e-6], rtol=0, atol=1e-12)


def test_fit_of_one_clip_spans_at_least_one_raw_unit_each_side_with_unit_tail():
    cal = fit_calibration([0.5], [77.0])
    assert cal is not None and cal.x == (-0.5, 1.5) and cal.tail == 1.0 and cal.n == 1
    np.testing.assert_allclose(cal.y, [77.0 - 1e-6, 77.0 + 1e-6], rtol=0, atol=1e-12)


def test_labelled_keeps_pairs_where_both_are_finite_and_refuses_other_lengths():
    r, t = labelled([[1.0, np.nan], [3.0, 4.0]], [5.0, 6.0, np.inf, 8.0])
    np.testing.assert_array_equal(r, [1.0, 4.0])
    np.testing.assert_array_equal(t, [5.0, 8.0])
    with pytest.raises(ValueError, match=r"raw scores \(2,\) and labels \(3,\) differ"):
        labelled([1.0, 2.0], [1.0, 2.0, 3.0])


def test_cross_fitted_mae_of_few_clips_is_leave_one_out():
    raw = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    labels = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    want = np.mean(
        [
            abs(fit_calibration(np.delete(raw, i), np.delete(labels, i))(raw[[i]])[0] - labels[i])
            for i in range(5)
        ]
    )
    assert cross_fitted_mae(raw, labels, folds=9) == pytest.approx(want)
    assert cross_fitted_mae(raw, labels, folds=5) == pytest.approx(want)
    assert cross_fitted_mae(raw, labels, folds=2) != pytest.approx(want)
    assert not math.isnan(cross_fitted_mae(raw[:4], labels[:4]))


def test_tanh_map_and_dict():
    cal = TanhCalibration(scale=2.0, offset=1.0)
    np.testing.assert_allclose(cal(np.array([0.0, 1.0])), [1.0, 1.0 + 2.0 * math.tanh(1.0)])
    assert cal.to_dict() == {"kind": "tanh", "scale": 2.0, "offset": 1.0}
    with pytest.raises(CalibrationError, match="scale must be > 0, got 0"):
        TanhCalibration(scale=0.0, offset=0.0)


def test_isotonic_dict_has_plain_numbers_and_defaults_n_and_source():
    cal = Calibration.from_dict(ISO)
    assert cal.to_dict() == {**ISO, "n": 0, "source": ""}
    full = Calibration.from_dict({**ISO, "x": [0, 1], "n": 7, "source": "train"})
    assert full.to_dict() == {**ISO, "n": 7, "source": "train"}
    assert isinstance(full.to_dict()["x"][0], float)


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"kind": None}, r"kind must be one of \['isotonic', 'tanh'\], got None"),
        ({"kind": "tanh", "scale": True, "offset": 0.0}, "tanh: scale must be a finite"),
        ({"kind": "tanh", "scale": 1.0, "offset": float("inf")}, "offset must be a finite"),
        ({"kind": "tanh", "scale": 1.0}, "offset must be a finite"),
        ({**ISO, "x": [0.0, True]}, "x must be a list of numbers"),
        ({**ISO, "y": None}, "y must be a list of numbers"),
        ({**ISO, "x": [0.0, 1.0, 2.0]}, "same length"),
        ({**ISO, "x": [0.0, float("nan")]}, "knots must be finite"),
        ({**ISO, "y": [0.0, float("inf")]}, "knots must be finite"),
        ({**ISO, "x": [1.0, 1.0]}, "strictly increasing"),
        ({**ISO, "y": [1.0, 1.0]}, "strictly increasing"),
        ({**ISO, "tail": 0.0}, "tail must be > 0, got 0"),
        ({**ISO, "tail": float("inf")}, "tail must be a finite number"),
        ({**ISO, "tail": "1"}, "isotonic: tail must be a finite number"),
    ],
)
def test_malformed_sections_name_what_is_wrong(section, reason):
    with pytest.raises(CalibrationError, match=reason):
        Calibration.from_dict(section)


def test_knots_of_another_shape_are_refused():
    with pytest.raises(CalibrationError, match="same length"):
        IsotonicCalibration(x=((0.0, 1.0),), y=((0.0, 1.0),), tail=1.0)
    with pytest.raises(CalibrationError, match="tail must be > 0"):
        IsotonicCalibration(x=(0.0, 1.0), y=(0.0, 1.0), tail=float("nan"))


def test_calibrated_scores_are_float64_whatever_the_input_dtype():
    iso = IsotonicCalibration(x=(0.0, 1.0), y=(10.0, 20.0), tail=2.0)
    r32 = np.array([3.0, -1.0, 0.5], dtype=np.float32)
    np.testing.assert_array_equal(iso(r32), iso(r32.astype(np.float64)))
    assert TanhCalibration(scale=1.0, offset=0.0)(r32).dtype == np.float64
    r, t = labelled([1, 2], [3, 4])
    assert r.dtype == np.float64 and t.dtype == np.float64


def test_upper_tail_starts_at_the_last_knot_of_many():
    cal = IsotonicCalibration(x=(1.0, 2.0, 5.0), y=(0.0, 9.0, 12.0), tail=1.0)
    assert cal(np.array([7.0]))[0] == pytest.approx(12.0 + math.log1p(3.0 * 2.0))


def test_a_scale_below_one_is_valid_and_messages_are_exact():
    assert TanhCalibration(scale=0.5, offset=0.0).scale == 0.5
    with pytest.raises(CalibrationError, match="^calibration must be a mapping, got list$"):
        Calibration.from_dict([1])
    cases = [
        ({**ISO, "x": [0.0]}, "x and y need the same length, >= 2"),
        ({**ISO, "x": [0.0, float("nan")]}, "knots must be finite"),
        ({**ISO, "x": [1.0, 0.0]}, "knots must be strictly increasing"),
    ]
    for section, reason in cases:
        with pytest.raises(CalibrationError, match=f"^calibration isotonic: {reason}$"):
            Calibration.from_dict(section)


def test_fit_defaults_no_source_and_a_tail_from_a_label_range_below_one():
    cal = fit_calibration([0.0, 1.0], [0.0, 0.5])
    assert cal is not None and cal.source == "" and cal.tail == pytest.approx(0.05)


def test_cross_fitted_mae_defaults_to_five_folds_seeded_zero():
    rng = np.random.default_rng(3)
    raw, labels = rng.normal(size=12), rng.uniform(50, 99, 12)
    got = cross_fitted_mae(raw, labels)
    assert got == cross_fitted_mae(raw, labels, folds=5, seed=0)
    assert got != cross_fitted_mae(raw, labels, folds=6) and got != cross_fitted_mae(
        raw, labels, seed=1
    )
