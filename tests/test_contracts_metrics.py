"""bench.metrics: every metric table on tiny hand-checked inputs (upstream's detail groups,
system-level correlations, bootstrap CIs), the row helpers and metrics.json's frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.columns import (
    modality_of,
    month_of_path,
    norm_pref,
    numeric_pairs,
    subset_of_result,
    system_of,
    to_num,
)
from bench.metrics import (
    bootstrap_ci,
    ci_rows,
    compute_metrics,
    correlate,
    detail_rows,
    finite,
    pearson,
    resampled_corr,
    rowwise_pearson,
    select_rows,
    summary_rows,
    system_rows,
    upstream_config,
)

CMI = "cmi-arena-annotation"


def cmi(modality, mus, pred_mus, align, pred_align, conf_mus, conf_align):
    return {
        "source": CMI,
        "modality": modality,
        "preference-musicality": mus,
        "predicted_preference-musicality": pred_mus,
        "preference-alignment": align,
        "predicted_preference-alignment": pred_align,
        "confidence_preference-musicality": conf_mus,
        "confidence_preference-alignment": conf_align,
    }


def arena(month, pref, pred):
    return {
        "source": "x",
        "audio-path": f"d/MusicArena_data/a/{month}/f.wav",
        "preference": pref,
        "predicted_preference": pred,
    }


ROWS = [
    arena("2024-02", "model_a", "both"),
    arena("2024-01", "a", "model_a"),
    cmi("text", "model_a", "model_a", "model_b", "a", 4, 3),
    cmi("text+lyrics+ref", "model_a", "model_b", "both", "model_a", "1", "3.0"),
]


def d(task, key, value, n, acc, ref=None, dataset="CMI-Pref"):
    row = {"dataset": dataset, "task": task, "group_key": key, "group_value": value}
    if ref is not None:
        row["ref_category"] = ref
    return row | {"n": n, "ACC": acc}


def test_detail_rows_are_upstreams_groups_in_upstreams_order():
    rows = detail_rows(select_rows(ROWS))
    assert rows == [
        d("preference", "month", "2024-01", 1, 1.0, dataset="MusicArena"),
        d("preference", "month", "2024-02", 1, 0.5, dataset="MusicArena"),
        d("alignment", "modality", "text", 1, 0.0),
        d("musicality", "modality", "text", 1, 1.0),
        d("alignment", "modality", "text+lyrics+ref", 1, 0.5),
        d("musicality", "modality", "text+lyrics+ref", 1, 0.0),
        d("alignment", "confidence", "=3", 1, 0.0, "no_ref"),
        d("alignment", "confidence", "=3", 1, 0.5, "ref"),
        d("alignment", "confidence", "=3", 2, 0.25, "all"),
        d("musicality", "confidence", "<3", 1, 0.0, "ref"),
        d("musicality", "confidence", ">3", 1, 1.0, "no_ref"),
        d("musicality", "confidence", "<3", 1, 0.0, "all"),
        d("musicality", "confidence", ">3", 1, 1.0, "all"),
        d("alignment", "ref_subset", "no_ref", 1, 0.0),
        d("musicality", "ref_subset", "no_ref", 1, 1.0),
        d("alignment", "ref_subset", "ref", 1, 0.5),
        d("musicality", "ref_subset", "ref", 1, 0.0),
        d("alignment", "modality_type", "instru", 1, 0.0),
        d("musicality", "modality_type", "instru", 1, 1.0),
        d("alignment", "modality_type", "vocal", 1, 0.5),
        d("musicality", "modality_type", "vocal", 1, 0.0),
    ]
    assert list(rows[-1]) == ["dataset", "task", "group_key", "group_value", "n", "ACC"]
    assert list(rows[6]) == [
        *("dataset", "task", "group_key", "group_value", "ref_category", "n", "ACC"),
    ]


def test_detail_rows_skip_confidence_groups_when_the_column_is_not_in_the_file():
    rows = select_rows(ROWS)
    columns = set().union(*rows) - {"confidence_preference-alignment"}
    out = detail_rows(rows, columns)
    conf = {(r["task"], r["group_key"]) for r in out if r["group_key"] == "confidence"}
    assert conf == {("musicality", "confidence")}


def test_detail_rows_leave_out_rows_without_a_numeric_confidence():
    rows = select_rows([cmi("text", "a", "a", "a", "a", None, "high")])
    out = detail_rows(rows)
    assert not [r for r in out if r["group_key"] == "confidence"]
    assert len(out) == 10  # modality 2 + ref_subset 4 + modality_type 4


def test_detail_rows_of_one_cmi_row_count_empty_groups_as_n_zero():
    out = detail_rows(select_rows([cmi("text", "a", "a", "a", "a", None, None)]))
    assert [(r["group_key"], r["group_value"], r["n"], r["ACC"]) for r in out] == [
        ("modality", "text", 1, 1.0),
        ("modality", "text", 1, 1.0),
        ("ref_subset", "no_ref", 1, 1.0),
        ("ref_subset", "no_ref", 1, 1.0),
        ("ref_subset", "ref", 0, None),
        ("ref_subset", "ref", 0, None),
        ("modality_type", "instru", 1, 1.0),
        ("modality_type", "instru", 1, 1.0),
        ("modality_type", "vocal", 0, None),
        ("modality_type", "vocal", 0, None),
    ]


def test_detail_rows_without_cmi_rows_stop_after_music_arena():
    assert [r["group_value"] for r in detail_rows(select_rows(ROWS[:2]))] == [
        "2024-01",
        "2024-02",
    ]


PAM = [
    {"source": "PAM", "system": "s1", "musicality": 1, "predicted_musicality": 0.1},
    {"source": "PAM", "system": "s1", "musicality": "3", "predicted_musicality": 0.3},
    {"source": "PAM", "system": " s2 ", "musicality": 4, "predicted_musicality": 0.5},
    {"source": "PAM", "system": " ", "audio-path": "p/s3/x.wav", "musicality": 5,
     "predicted_musicality": 0.4},
    {"source": "PAM", "system": "s4", "musicality": 2, "predicted_musicality": None},
    {"source": "PAM", "system": "s5", "musicality": "n/a", "predicted_musicality": 0.2},
]  # fmt: skip


def test_system_rows_correlate_system_means_of_the_clips_with_both_numbers():
    (row,) = system_rows(select_rows(PAM))  # no alignment numbers: no alignment row
    xs, ys = [2.0, 4.0, 5.0], [0.2, 0.5, 0.4]
    assert row == {
        "dataset": "PAM",
        "task": "musicality",
        "level": "system",
        "n_systems": 3,
        "SRCC": pytest.approx(0.5),
        "LCC": pytest.approx(stats.pearsonr(xs, ys).statistic),
        "K-Tau": pytest.approx(1 / 3),
        "clips_per_system": {"s1": 2, "s2": 1, "s3": 1},
        "human_mean": {"s1": 2.0, "s2": 4.0, "s3": 5.0},
        "predicted_mean": {"s1": pytest.approx(0.2), "s2": 0.5, "s3": 0.4},
    }
    assert list(row) == [
        *("dataset", "task", "level", "n_systems", "SRCC", "LCC", "K-Tau"),
        *("clips_per_system", "human_mean", "predicted_mean"),
    ]


def test_system_rows_cover_alignment_too():
    rows = [r | {"text-music alignment": r["musicality"]} for r in PAM[:4]]
    rows = [r | {"predicted_text-music alignment": r["predicted_musicality"]} for r in rows]
    out = system_rows(select_rows(rows))
    assert [r["task"] for r in out] == ["musicality", "alignment"]
    assert out[1]["SRCC"] == pytest.approx(0.5)


def test_ci_rows_have_each_metric_with_its_interval():
    rows = select_rows(PAM[:4] + ROWS)
    out = ci_rows(rows, n_boot=50, seed=0)
    assert [(r["dataset"], r["task"], r["n"]) for r in out] == [
        ("PAM", "musicality", 4),
        ("PAM", "alignment", 0),  # a task of a subset present, without numbers
        ("MusicArena", "preference", 2),
        ("CMI-Pref", "alignment", 2),
        ("CMI-Pref", "musicality", 2),
    ]
    assert list(out[0]) == [
        *("dataset", "task", "n", "SRCC", "SRCC_lo", "SRCC_hi", "LCC", "LCC_lo", "LCC_hi"),
        *("K-Tau", "K-Tau_lo", "K-Tau_hi"),
    ]
    assert out[1]["SRCC"] is None and out[1]["SRCC_lo"] is None
    assert list(out[2]) == ["dataset", "task", "n", "ACC", "ACC_lo", "ACC_hi"]
    assert out[2]["ACC"] == 0.75 and 0.5 <= out[2]["ACC_lo"] <= out[2]["ACC_hi"] <= 1.0
    assert out[0]["SRCC"] == correlate(*numeric_pairs(rows[:4], "musicality",
                                                      "predicted_musicality"), "spearman")  # fmt: skip
    for col in ("SRCC", "LCC", "K-Tau"):
        assert -1.0 <= out[0][f"{col}_lo"] <= out[0][f"{col}_hi"] <= 1.0


def test_ci_rows_without_resamples_have_no_interval():
    out = ci_rows(select_rows(PAM[:4] + ROWS), n_boot=0, seed=0)
    assert out[0]["SRCC_lo"] is None and out[0]["K-Tau_hi"] is None
    assert out[2]["ACC_lo"] is None and out[2]["ACC_hi"] is None


def test_ci_rows_of_a_subset_with_no_valid_label_have_no_accuracy():
    rows = select_rows([arena("2024-01", "x", "y")])
    assert ci_rows(rows, 10, 0) == [
        {
            "dataset": "MusicArena",
            "task": "preference",
            "n": 0,
            "ACC": None,
            "ACC_lo": None,
            "ACC_hi": None,
        }
    ]


def test_ci_of_constant_credits_is_that_credit():
    out = ci_rows(select_rows([arena("m", "a", "a"), arena("m", "b", "b")]), 20, 0)
    assert (out[0]["ACC_lo"], out[0]["ACC_hi"]) == (1.0, 1.0)


def test_summary_rows_list_correlations_then_accuracies():
    out = summary_rows(select_rows(PAM[:4] + ROWS))
    assert [(r["dataset"], r["task"]) for r in out] == [
        ("PAM", "musicality"),
        ("PAM", "alignment"),
        ("MusicArena", "preference"),
        ("CMI-Pref", "alignment"),
        ("CMI-Pref", "musicality"),
    ]
    assert out[0]["n"] == 4 and list(out[0]) == ["dataset", "task", "n", "SRCC", "LCC", "K-Tau"]
    assert out[1] == {"dataset": "PAM", "task": "alignment", "n": 0} | dict.fromkeys(
        ("SRCC", "LCC", "K-Tau")
    )
    assert out[3] == {"dataset": "CMI-Pref", "task": "alignment", "n": 2, "ACC": 0.25}


def test_upstream_config_is_upstreams_eval_benchmark_yaml():
    assert upstream_config("dev") == {
        "filter": {"split": "dev"},
        "metrics": {"include_lcc": True, "include_k_tau": True},
        "groups": {
            "musicarena_by_month": True,
            "cmi_by_confidence": True,
            "cmi_by_modality": True,
            "by_duration": False,
            "duration_bin": [10, 30, 60, 120, 500],
        },
        "outputs": {
            "summary_csv": "metrics_summary.csv",
            "detail_csv": "metrics_detail.csv",
            "json": "metrics.json",
        },
    }


def test_compute_metrics_gathers_every_table_of_the_selected_rows():
    rows = [r | {"split": "test"} for r in PAM[:4] + ROWS] + [PAM[0] | {"split": "train"}]
    m = compute_metrics(rows, split="test", n_boot=7, seed=3)
    sel = select_rows(rows[:-1])
    assert list(m) == [
        *("config", "summary", "detail", "summary_ci", "system_level", "bootstrap", "n_rows"),
    ]
    assert m["config"] == upstream_config("test")
    assert m["summary"] == summary_rows(sel)
    assert m["detail"] == detail_rows(sel)
    assert m["summary_ci"] == ci_rows(sel, 7, 3)
    assert m["system_level"] == system_rows(sel)
    assert m["bootstrap"] == {"n_boot": 7, "seed": 3, "ci": 0.95, "method": "percentile"}
    assert m["n_rows"] == 8


def test_compute_metrics_gives_confidence_groups_by_the_files_columns():
    rows = [cmi("text", "a", "a", "a", "a", 4, None)]
    rows.append({"source": "x", "confidence_preference-alignment": None})
    keys = {(r["task"], r["group_key"]) for r in compute_metrics(rows, n_boot=0)["detail"]}
    assert ("alignment", "confidence") not in keys and ("musicality", "confidence") in keys


def test_compute_metrics_defaults_to_the_test_split_and_1000_resamples():
    m = compute_metrics([arena("m", "a", "a") | {"split": "train"}])
    assert m["n_rows"] == 0 and m["config"]["filter"]["split"] == "test"
    assert m["bootstrap"]["n_boot"] == 1000 and m["bootstrap"]["seed"] == 0


def test_select_rows_keeps_every_row_when_split_is_none_or_absent():
    rows = [{"source": CMI, "split": "train"}, {"source": CMI, "split": 1}]
    assert len(select_rows(rows, None)) == 2
    assert len(select_rows(rows, 1)) == 1  # compared as text
    assert len(select_rows([{"source": CMI}], "test")) == 1
    (r,) = select_rows([{"source": CMI, "lyrics": "la"}], "test")
    assert (r["benchmark_dataset"], r["month"], r["modality_group"]) == (
        "CMI-Pref",
        "unknown",
        "text+lyrics",
    )


def test_select_rows_does_not_change_the_callers_rows():
    row = {"source": CMI}
    select_rows([row])
    assert row == {"source": CMI}


# ---------------------------------------------------------------------- row helpers


def test_subset_of_result_falls_back_to_a_month_path_then_a_valid_existing_subset():
    assert subset_of_result({"source": "PAM x"}) == "PAM"
    assert subset_of_result({"audio2": "MusicArena_data/a/2024-03/x.wav"}) == "MusicArena"
    assert subset_of_result({"benchmark_dataset": " MusicEval "}) == "MusicEval"
    assert subset_of_result({"benchmark_dataset": "Other"}) == "Unknown"
    assert subset_of_result({}) == "Unknown"


def test_month_of_path_needs_two_components_below_the_data_folder():
    assert month_of_path(" x/MusicArena_data/a/2024-01/f.wav ") == "2024-01"
    assert month_of_path("MusicArena_data/a/2024-01") == "2024-01"
    assert month_of_path("MusicArena_data/a") == "unknown"
    assert month_of_path(None) == "unknown" and month_of_path("") == "unknown"


def test_system_of_is_the_system_field_else_the_clips_folder():
    assert system_of({"system": " s ", "audio-path": "a/b/c.wav"}) == "s"
    assert system_of({"system": None, "audio-path": "a/b/c.wav"}) == "b"
    assert system_of({"audio-path": "c.wav"}) == "unknown"
    assert system_of({"audio-path": None}) == "unknown"
    assert system_of({"system": 0}) == "0"


def test_modality_of_uses_the_field_else_lyrics_and_reference():
    assert modality_of({"modality": " text+ref "}) == "text+ref"
    assert modality_of({"modality": math.nan, "lyrics": "la", "ref-audio-path": "r"}) == (
        "text+lyrics+ref"
    )
    assert modality_of({"modality": " ", "ref-audio-path": "r"}) == "text+ref"
    assert modality_of({"lyrics": " ", "ref-audio-path": None}) == "text"


def test_norm_pref_and_to_num():
    assert [norm_pref(x) for x in (" A ", "Model_B", "NEITHER", "both", "c", None)] == [
        *("model_a", "model_b", "both", "both", None, None),
    ]
    assert [to_num(x) for x in ("2.5", 3, "x")][:2] == [2.5, 3.0]
    assert math.isnan(to_num("x")) and math.isnan(to_num(True)) and math.isnan(to_num([1]))


def test_finite_is_none_for_nan_inf_and_none():
    assert [finite(v) for v in (None, math.nan, math.inf, -math.inf, 1)] == [
        *(None, None, None, None, 1.0),
    ]


# ---------------------------------------------------------------------- statistics


def test_correlate_is_none_below_two_pairs_or_for_a_constant_side():
    one, two = np.array([1.0]), np.array([1.0, 2.0])
    assert correlate(one, one, "pearson") is None
    assert correlate(two, np.array([3.0, 3.0]), "spearman") is None
    assert correlate(np.array([3.0, 3.0]), two, "kendall") is None
    assert correlate(two, two, "pearson") == pytest.approx(1.0)
    assert correlate([1, 2, 3], [1, 3, 2], "spearman") == pytest.approx(0.5)
    assert correlate([1, 2, 3], [1, 3, 2], "kendall") == pytest.approx(1 / 3)


def test_pearson_is_nan_for_a_constant_side_and_clipped_to_one():
    assert math.isnan(pearson(np.array([1.0, 1.0]), np.array([1.0, 2.0])))
    assert math.isnan(pearson(np.array([1.0, 2.0]), np.array([5.0, 5.0])))
    x = np.array([0.1, 0.2, 0.3])
    assert pearson(x, x) == 1.0 and pearson(x, -x) == -1.0
    assert pearson(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(
        stats.pearsonr([1, 2, 4], [1, 3, 2]).statistic, abs=1e-12
    )


def test_numeric_pairs_drop_a_pair_with_either_side_missing():
    rows = [{"g": 1, "p": "2"}, {"g": None, "p": 1}, {"g": 2, "p": "x"}, {"g": "3", "p": 4}]
    x, y = numeric_pairs(rows, "g", "p")
    assert x.tolist() == [1.0, 3.0] and y.tolist() == [2.0, 4.0]


def test_rowwise_pearson_per_row_and_nan_for_a_constant_row():
    a = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    b = np.array([[1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    r = rowwise_pearson(a, b)
    assert r[0] == pytest.approx(0.5) and math.isnan(r[1])
    assert rowwise_pearson(a[:1], a[:1]).tolist() == [1.0]


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_resampled_corr_is_correlate_of_each_resample_and_nan_when_constant(method):
    x, y = np.array([1.0, 2.0, 4.0, 3.0]), np.array([2.0, 1.0, 4.0, 4.0])
    idx = np.array([[0, 1, 2, 3], [0, 0, 2, 3], [1, 1, 1, 1], [3, 3, 2, 1], [2, 3, 2, 3]])
    r = resampled_corr(idx, x, y, method)
    for i, row in enumerate(idx):
        want = correlate(x[row], y[row], method)
        assert (math.isnan(r[i]) and want is None) or r[i] == pytest.approx(want), i


def test_bootstrap_ci_is_none_for_fewer_than_two_items_or_no_resamples():
    stat = lambda idx: idx.mean(-1)  # noqa: E731
    assert bootstrap_ci(1, stat, 10, 0) == (None, None)
    assert bootstrap_ci(5, stat, 0, 0) == (None, None)
    assert bootstrap_ci(2, lambda idx: np.full(len(idx), np.nan), 10, 0) == (None, None)
    lo, hi = bootstrap_ci(2, stat, 1, 0)
    assert lo == hi and lo in (0.0, 0.5, 1.0)


def test_bootstrap_ci_leaves_out_undefined_resamples():
    lo, hi = bootstrap_ci(4, lambda idx: np.where(idx[:, 0] == 0, np.nan, 1.0), 50, 0)
    assert (lo, hi) == (1.0, 1.0)


def test_rowwise_pearson_is_clipped_to_plus_minus_one_exactly():
    # unclipped, these give 1.0000000000000002 and -1.0000000000000002
    x = np.array(
        [[0.4116305363741328, 1.0425133694426776, -0.12853466294403426, 1.3664634705496859]]
    )
    y = np.array([[3.1255630502371194, 7.37719709714581, -0.5147083789377754, 9.560355692010326]])
    assert rowwise_pearson(x, y).tolist() == [1.0]
    assert rowwise_pearson(x, -y).tolist() == [-1.0]


def test_resampled_corr_is_nan_for_a_resample_constant_on_one_side():
    # the mean of six 0.1s is not exactly 0.1: only the constant check gives NaN (and 0.1
    # is neither the smallest nor the largest value of the resamples)
    x, y = np.array([0.1, 0.1, 0.05, 0.5, 0.2, 0.3]), np.arange(1.0, 7.0)
    idx = np.array([[0, 1, 0, 1, 0, 1], [0, 1, 2, 3, 4, 5]])
    r = resampled_corr(idx, x, y, "pearson")
    assert math.isnan(r[0]) and r[1] == pytest.approx(correlate(x, y, "pearson"))
    r = resampled_corr(idx, y, x, "pearson")
    assert math.isnan(r[0]) and r[1] == pytest.approx(correlate(y, x, "pearson"))


def test_accuracy_skips_an_invalid_label_and_goes_on():
    rows = [
        arena("m", "x", "a"),
        arena("m", "a", None),
        arena("m", "a", "a"),
        arena("m", "b", "both"),
    ]
    assert ci_rows(select_rows(rows), 0, 0)[0]["n"] == 2
    assert summary_rows(select_rows(rows))[0]["ACC"] == 0.75


def test_summary_rows_have_no_row_for_an_absent_subset():
    assert [r["dataset"] for r in summary_rows(select_rows(PAM[:4]))] == ["PAM", "PAM"]
    assert [r["dataset"] for r in ci_rows(select_rows(PAM[:4]), 0, 0)] == ["PAM", "PAM"]
    assert [r["dataset"] for r in summary_rows(select_rows(ROWS[:2]))] == ["MusicArena"]


def test_detail_rows_count_text_plus_ref_as_instrumental():
    out = detail_rows(select_rows([cmi("text+ref", "a", "a", "a", "b", None, None)]))
    inst = [r for r in out if r["group_value"] == "instru"]
    assert [(r["n"], r["ACC"]) for r in inst] == [(1, 0.0), (1, 1.0)]


def test_system_rows_of_alignment_numbers_alone():
    rows = [
        {"source": "PAM", "system": s, "text-music alignment": g,
         "predicted_text-music alignment": p}
        for s, g, p in (("a", 1, 1.0), ("b", 2, 3.0), ("c", 3, 2.0))
    ]  # fmt: skip
    (row,) = system_rows(select_rows(rows))
    assert row["task"] == "alignment" and row["SRCC"] == pytest.approx(0.5)


def test_ci_rows_give_each_correlation_its_own_bootstrap():
    x, y = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([1.0, 2.0, 3.0, 4.0, 50.0])
    rows = select_rows(
        [
            {"source": "PAM", "musicality": a, "predicted_musicality": b}
            for a, b in zip(x, y, strict=True)
        ]
    )
    out = ci_rows(rows, n_boot=30, seed=2)[0]
    for col, method in (("SRCC", "spearman"), ("LCC", "pearson"), ("K-Tau", "kendall")):
        want = bootstrap_ci(5, lambda idx, m=method: resampled_corr(idx, x, y, m), 30, 2)
        assert (out[f"{col}_lo"], out[f"{col}_hi"]) == want, col
    assert out["SRCC_lo"] == 1.0 and out["LCC_lo"] < 1.0  # ranks are monotone, values are not


def test_compute_metrics_with_split_none_keeps_every_split():
    rows = [arena("m", "a", "a") | {"split": "train"}, arena("m", "a", "b") | {"split": "test"}]
    assert compute_metrics(rows, split=None, n_boot=0)["n_rows"] == 2
    assert compute_metrics(rows, split="train", n_boot=0)["n_rows"] == 1
