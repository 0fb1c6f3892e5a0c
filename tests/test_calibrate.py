"""audioscore.calibrate: strictly increasing, rank-preserving raw -> label-scale maps; the
training run fits one on the validation clips, logs val/mae and stores it in the export."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from helpers.train import make_cfg

from audioscore.calibrate import (
    Calibration,
    CalibrationError,
    IsotonicCalibration,
    TanhCalibration,
    cross_fitted_mae,
    fit_calibration,
)
from audioscore.export.run import calibration_items
from audioscore.metrics import group_metrics, kendall_tau, spearman
from audioscore.train import train
from rewards.audioscore_rm import AudioscoreRewardModel


def noisy_scores(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels on 50-99 and raw logits that follow them, with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.uniform(50, 99, n).round(1)
    raw = (labels - 75) / 10 + rng.normal(0, 0.8, n)
    return raw, labels


def test_strictly_increasing_everywhere_and_ranks_unchanged():
    raw, labels = noisy_scores()
    cal = fit_calibration(raw, labels, source="val")
    assert cal is not None and cal.source == "val" and cal.n == len(raw)
    grid = np.linspace(raw.min() - 50, raw.max() + 50, 20_001)  # far past both ends
    assert (np.diff(cal(grid)) > 0).all()
    # scores outside the fitted range too: rank metrics are identical on raw and calibrated
    rng = np.random.default_rng(1)
    probe_raw = np.concatenate([raw, rng.normal(0, 6, 100)])
    probe_truth = np.concatenate([labels, rng.uniform(50, 99, 100)])
    calibrated = cal(probe_raw)
    assert spearman(calibrated, probe_truth) == spearman(probe_raw, probe_truth)
    assert kendall_tau(calibrated, probe_truth) == kendall_tau(probe_raw, probe_truth)
    groups = np.arange(len(probe_raw)) % 7
    assert group_metrics(calibrated, probe_truth, groups) == group_metrics(
        probe_raw, probe_truth, groups
    )


def test_lands_on_the_label_scale_with_sane_tails():
    raw, labels = noisy_scores()
    cal = fit_calibration(raw, labels)
    assert cal is not None
    mae = np.abs(cal(raw) - labels).mean()
    assert mae < np.abs(raw - labels).mean() / 10 and mae < 8  # raw logits are nowhere near
    assert 50 <= cal(raw).min() and cal(raw).max() <= 99  # in range: isotonic levels
    # past the knots the map keeps rising but never leaves the labelled range
    lo, hi = cal(np.array([raw.min() - 100, raw.max() + 100]))
    assert labels.min() <= lo < cal(raw).min() and cal(raw).max() < hi <= labels.max()
    assert cal.lo == labels.min() and cal.hi == labels.max()
    assert not cal.extrapolated(cal(np.array([-1e6, 1e6]))).any()


def test_an_end_knot_on_the_range_edge_extrapolates_and_says_so():
    """The top clip alone holds the highest label: no room above it, the tail grows past 99
    (still in order) and `extrapolated` names those scores."""
    cal = fit_calibration([0.0, 1.0, 2.0, 3.0], [50.0, 60.0, 70.0, 99.0])
    assert cal is not None and cal.hi == 99.0 and cal.y[-1] == 99.0
    far = cal(np.array([2.5, 3.0, 4.0, 40.0]))
    assert (np.diff(far) > 0).all() and far[-1] > 99.0
    np.testing.assert_array_equal(cal.extrapolated(far), [False, False, True, True])
    # the bottom knot is the lowest label too: below it the same holds
    low = cal(np.array([-1e3]))
    assert low[0] < 50.0 and cal.extrapolated(low).all()


def test_unlabelled_and_degenerate_inputs():
    assert fit_calibration([1.0, 2.0], [np.nan, np.nan]) is None  # no clip has a score
    cal = fit_calibration([0.0, 1.0, 2.0, np.nan], [80.0, np.nan, 60.0, 70.0])
    assert cal is not None and cal.n == 2  # NaN labels / scores are left out
    # scores that fall while labels rise: one isotonic level, still strictly increasing
    flat = fit_calibration([3.0, 2.0, 1.0], [60.0, 70.0, 80.0])
    assert flat is not None
    out = flat(np.array([0.0, 1.5, 2.5, 9.0]))
    assert (np.diff(out) > 0).all() and np.allclose(out, 70.0, atol=1e-3)
    single = fit_calibration([0.5], [77.0])
    assert single is not None and single(np.array([0.5]))[0] == pytest.approx(77.0)
    assert np.isnan(single(np.array([np.nan]))[0])


def test_round_trips_as_plain_numbers():
    raw, labels = noisy_scores(50)
    cal = fit_calibration(raw, labels, source="train")
    assert cal is not None
    stored = yaml.safe_load(yaml.safe_dump(cal.to_dict()))  # plain yaml, no python tags
    back = Calibration.from_dict(stored)
    assert back == cal and back.source == "train"
    np.testing.assert_array_equal(back(raw), cal(raw))
    tanh = Calibration.from_dict({"kind": "tanh", "scale": 2.0, "offset": 2.0})
    assert isinstance(tanh, TanhCalibration)
    np.testing.assert_allclose(tanh(np.array([0.0, 10.0])), [2.0, 4.0])
    assert Calibration.from_dict(tanh.to_dict()) == tanh


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"kind": "spline"}, "kind must be one of"),
        ({"kind": "tanh", "scale": -1.0, "offset": 0.0}, "scale must be > 0"),
        ({"kind": "tanh", "scale": "big", "offset": 0.0}, "scale must be a finite number"),
        ({"kind": "isotonic", "x": [0.0, 1.0], "y": [2.0, 1.0], "tail": 1.0}, "strictly"),
        ({"kind": "isotonic", "x": [0.0], "y": [1.0], "tail": 1.0}, ">= 2"),
        ({"kind": "isotonic", "x": "0,1", "y": [1.0, 2.0], "tail": 1.0}, "list of numbers"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_malformed_sections_are_refused(section, reason):
    with pytest.raises(CalibrationError, match=reason):
        Calibration.from_dict(section)


def test_cross_fitted_mae_is_out_of_sample():
    raw, labels = noisy_scores(120)
    cal = fit_calibration(raw, labels)
    assert isinstance(cal, IsotonicCalibration)
    in_sample = np.abs(cal(raw) - labels).mean()
    held_out = cross_fitted_mae(raw, labels)
    assert in_sample < held_out < 12  # isotonic overfits its own clips a little
    assert np.isnan(cross_fitted_mae(raw[:3], labels[:3]))


def corpus_dm(val: list[list[dict]], train: list[list[dict]]) -> SimpleNamespace:
    return SimpleNamespace(val_groups=val, train_groups=[train])


def test_calibration_clips_fall_back_from_val_to_train_to_none():
    scored = [[{"audio_file": "a", "score": 90.0}, {"audio_file": "b", "score": 60.0}]]
    unscored = [[{"audio_file": "c", "score": None}, {"audio_file": "d", "score": None}]]
    items, source = calibration_items(corpus_dm(scored, unscored))
    assert source == "val" and [i["audio_file"] for i in items] == ["a", "b"]
    items, source = calibration_items(corpus_dm(unscored, scored + scored))
    assert source == "train" and [i["audio_file"] for i in items] == ["a", "b"]  # each file once
    assert calibration_items(corpus_dm(unscored, unscored)) == ([], "")


def test_training_logs_val_mae_and_exports_a_calibration(tmp_path, synth_corpus):
    metrics, objects = train(make_cfg(tmp_path, synth_corpus))
    assert np.isfinite(metrics["val/mae"]) and metrics["val/mae"] >= 0
    config = yaml.safe_load((objects["export_dir"] / "config.yaml").read_text())
    assert config["calibration"]["kind"] == "isotonic"
    assert config["calibration"]["source"] == "val" and config["calibration"]["n"] == 4
    val = [c for g in yaml.safe_load(synth_corpus["val"].read_text()) for c in g]
    files = [str(synth_corpus["root"] / c["audio_file"]) for c in val]
    labels = np.array([c["score"] for c in val])
    calibrated = AudioscoreRewardModel(objects["export_dir"]).score_batch(files, 4)[:, 1]
    raw = AudioscoreRewardModel(objects["export_dir"], calibrated=False).score_batch(files, 4)[:, 1]
    assert not np.allclose(calibrated, raw)
    assert (np.argsort(calibrated) == np.argsort(raw)).all()
    # fitted on these clips: calibrated scores sit on their label scale (in-sample)
    assert np.abs(calibrated - labels).mean() < np.abs(raw - labels).mean()
    assert labels.min() - 1 <= calibrated.min() and calibrated.max() <= labels.max() + 1
