"""CMI-RewardBench metric rules, checked against scipy and hand-counted accuracies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from bench import metrics
from bench.columns import (
    confidence_group,
    modality_of,
    month_of,
    norm_pref,
    subset_of_result,
)
from bench.evaluate import main as evaluate_main
from bench.metrics import (
    compute_metrics,
    corr_ci,
    correlate,
    mean_ci,
    resampled_corr,
)


def pam_rows(n: int = 40, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1, 5, n)
    pred = gt + rng.normal(0, 1.0, n)
    return [
        {
            "source": "PAM (music)",
            "split": "test",
            "audio-path": f"human_eval/music/sys{i % 4}/{i}.wav",
            "musicality": float(g),
            "text-music alignment": str(round(float(5 - g), 2)),  # strings count as numbers
            "predicted_musicality": float(p),
            "predicted_text-music alignment": float(-p),
        }
        for i, (g, p) in enumerate(zip(gt, pred, strict=True))
    ]


def test_correlations_match_scipy():
    rows = pam_rows()
    rows[3]["predicted_musicality"] = None  # failed clip: dropped, not zero
    rows[5]["musicality"] = "n/a"  # non-numeric label: dropped
    m = compute_metrics(rows, n_boot=0)["summary"]
    mus = next(r for r in m if r["task"] == "musicality")
    keep = [r for i, r in enumerate(rows) if i not in (3, 5)]
    x = np.array([r["musicality"] for r in keep])
    y = np.array([r["predicted_musicality"] for r in keep])
    assert mus["n"] == len(keep)
    assert mus["SRCC"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert mus["LCC"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
    assert mus["K-Tau"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    ali = next(r for r in m if r["task"] == "alignment")
    assert ali["SRCC"] > 0.5  # truth 5 - g, prediction -p: both flipped, so still agreeing


def test_correlation_edge_cases():
    assert correlate(np.array([1.0]), np.array([2.0]), "spearman") is None  # n < 2
    assert correlate(np.ones(5), np.arange(5.0), "pearson") is None  # constant -> undefined
    ties = correlate(np.array([1, 1, 2, 3.0]), np.array([1, 2, 2, 3.0]), "spearman")
    assert ties == pytest.approx(stats.spearmanr([1, 1, 2, 3], [1, 2, 2, 3]).statistic)


def pair(pref, pred, **kw):
    return (
        {"source": "cmi-arena-annotation", "split": "test"}
        | {
            "preference-musicality": pref,
            "predicted_preference-musicality": pred,
            "preference-alignment": pref,
            "predicted_preference-alignment": pred,
        }
        | kw
    )


def test_preference_accuracy_rules():
    rows = [
        pair("model_a", "model_a"),  # 1
        pair("A", "model_b"),  # 0 (labels normalised case-insensitively)
        pair("both", "model_b"),  # 0.5
        pair("neither", "model_a"),  # 0.5 (neither == both)
        pair("Model_B", "model_b"),  # 1
        pair("", "model_a"),  # dropped: unknown label
        pair("model_a", None),  # dropped: no prediction (failed side)
    ]
    s = compute_metrics(rows, n_boot=0)["summary"]
    mus = next(r for r in s if r["dataset"] == "CMI-Pref" and r["task"] == "musicality")
    assert mus["n"] == 5
    assert mus["ACC"] == pytest.approx((1 + 0 + 0.5 + 0.5 + 1) / 5)


def test_exact_tie_counts_as_model_b():
    from bench.records import pair_pref_label

    assert pair_pref_label(1.0, 1.0) == "model_b"
    assert pair_pref_label(2.0, 1.0) == "model_a"
    assert pair_pref_label(None, 1.0) is None


def test_row_helpers():
    assert norm_pref(" B ") == "model_b" and norm_pref("x") is None
    assert (
        month_of({"audio-path": "MusicArena_data/audio_files/02-2025SEP/x-a.mp3"}) == "02-2025SEP"
    )
    assert month_of({"audio-path": "a.mp3", "audio2": "d/MusicArena_data/f/03-X/b.mp3"}) == "03-X"
    assert subset_of_result({"source": "SongEval"}) == "MusicEval"
    assert subset_of_result({"source": "MusicEval v2"}) == "Unknown"  # exact match upstream
    assert (
        subset_of_result({"source": "", "audio-path": "MusicArena_data/a/01-M/x.mp3"})
        == "MusicArena"
    )
    assert modality_of({"lyrics": "la", "ref-audio-path": "r.wav"}) == "text+lyrics+ref"
    assert modality_of({"lyrics": " ", "ref-audio-path": ""}) == "text"
    assert modality_of({"modality": "text+ref", "lyrics": "la"}) == "text+ref"
    assert [confidence_group(v) for v in ("2.5", 3, "4.0", "x")] == ["<3", "=3", ">3", None]


def test_split_filter_and_detail_groups():
    rows = [
        pair("model_a", "model_a", lyrics="la", **{"confidence_preference-musicality": "4.0"}),
        pair(
            "model_a",
            "model_b",
            **{"ref-audio-path": "r.wav", "confidence_preference-musicality": "1.0"},
        ),
        pair("model_a", "model_b", split="train"),  # filtered out
    ]
    m = compute_metrics(rows, n_boot=0)
    d = {
        (r["task"], r["group_key"], r["group_value"], r.get("ref_category")): r for r in m["detail"]
    }
    assert d[("musicality", "modality", "text+lyrics", None)]["ACC"] == 1.0
    assert d[("musicality", "modality", "text+ref", None)]["ACC"] == 0.0
    assert d[("musicality", "confidence", ">3", "no_ref")]["n"] == 1
    assert d[("musicality", "confidence", "<3", "ref")]["ACC"] == 0.0
    assert d[("musicality", "confidence", "<3", "all")]["n"] == 1
    assert d[("musicality", "ref_subset", "ref", None)]["n"] == 1
    assert d[("musicality", "modality_type", "vocal", None)]["ACC"] == 1.0
    # no alignment confidence column at all -> upstream emits no alignment confidence rows
    assert not any(k[0] == "alignment" and k[1] == "confidence" for k in d)
    assert m["n_rows"] == 2


def test_system_level_and_bootstrap():
    rows = pam_rows(80)
    m = compute_metrics(rows, n_boot=200, seed=1)
    sys_mus = next(r for r in m["system_level"] if r["task"] == "musicality")
    assert sys_mus["n_systems"] == 4 and sum(sys_mus["clips_per_system"].values()) == 80
    xs = [
        np.mean([r["musicality"] for r in rows if f"/sys{k}/" in r["audio-path"]]) for k in range(4)
    ]
    ys = [
        np.mean([r["predicted_musicality"] for r in rows if f"/sys{k}/" in r["audio-path"]])
        for k in range(4)
    ]
    assert sys_mus["LCC"] == pytest.approx(stats.pearsonr(xs, ys).statistic)
    mus = next(r for r in m["summary_ci"] if r["task"] == "musicality")
    assert mus["SRCC_lo"] < mus["SRCC"] < mus["SRCC_hi"]
    assert mus["SRCC_hi"] - mus["SRCC_lo"] < 0.5
    assert "SRCC_lo" not in m["summary"][0]  # upstream's summary rows stay as upstream's
    again = compute_metrics(rows, n_boot=200, seed=1)["summary_ci"]
    assert again[0]["SRCC_lo"] == mus["SRCC_lo"]  # seeded: reproducible


def test_evaluate_cli_writes_every_file(tmp_path):
    rows = pam_rows() + [pair("model_a", "model_a", lyrics="x")]
    for i, r in enumerate(rows):
        r |= {
            "bench_row_index": i,
            "bench_row_key": f"k{i}",
            "status": "ok",
            "benchmark_dataset": "PAM",
        }
    res = tmp_path / "results.jsonl"
    res.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut short by a ki')
    assert evaluate_main([str(res), "--n-boot", "20"]) == 0
    for name in (
        "metrics.json",
        "metrics_summary.csv",
        "metrics_detail.csv",
        "metrics_ci.csv",
        "metadata.json",
        "statistics.json",
        "summary.md",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert list((tmp_path / "plots").glob("scatter_PAM_musicality.png"))
    header = (tmp_path / "metrics_summary.csv").read_text().splitlines()[0]
    assert header == "dataset,task,n,SRCC,LCC,K-Tau,ACC"
    ci_header = (tmp_path / "metrics_ci.csv").read_text().splitlines()[0]
    assert ci_header.startswith("dataset,task,n,SRCC,SRCC_lo,SRCC_hi,LCC,LCC_lo,LCC_hi")
    latex = (tmp_path / "latex.txt").read_text().splitlines()
    assert len(latex) == 12 and latex[1].startswith(f"{tmp_path.name} & ")  # as upstream
    summary = json.loads((tmp_path / "metrics.json").read_text())["summary"]
    pam = {r["task"]: r["SRCC"] for r in summary if r["dataset"] == "PAM"}
    final = latex[5].split(" & ")
    assert final[1] == f"{(pam['musicality'] + pam['alignment']) / 2:.4f}"
    st = json.loads((tmp_path / "statistics.json").read_text())
    assert st["total_rows"] == len(rows) and st["failed"] == 0


def test_bootstrap_ci_is_scipys_percentile_interval():
    rng = np.random.default_rng(0)
    s = rng.normal(size=41)
    lo, hi = mean_ci(s, n_boot=300, seed=5)
    ref = stats.bootstrap(
        (s,), np.mean, n_resamples=300, method="percentile", rng=np.random.default_rng(5)
    ).confidence_interval
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])  # many constant resamples
    lo, hi = corr_ci(x, y, "spearman", 200, 0)
    assert lo is not None and -1 <= lo <= hi <= 1


@pytest.mark.parametrize("method", ["spearman", "pearson", "kendall"])
@pytest.mark.parametrize("kendall_max_n", [2000, 0])  # 0: Kendall's per-resample fallback
def test_all_resamples_at_once_equal_one_by_one(method, kendall_max_n, monkeypatch):
    """The batched statistics equal `correlate` on each resample, undefined ones included."""
    monkeypatch.setattr(metrics, "KENDALL_MAX_N", kendall_max_n)
    rng = np.random.default_rng(1)
    for n in (40, 3):
        x = np.round(rng.uniform(1, 5, n), 1)  # rounded: ties, as in MOS labels
        y = np.round(x + rng.normal(0, 1, n), 1)
        idx = rng.integers(0, n, (300, n))
        got = resampled_corr(idx, x, y, method)
        ref = [correlate(x[i], y[i], method) for i in idx]
        ref = np.array([np.nan if v is None else v for v in ref])
        assert np.array_equal(np.isnan(got), np.isnan(ref))
        assert np.nanmax(np.abs(got - ref)) < 1e-12


def test_pearson_is_pandas_formula():
    """pandas 3's Series.corr("pearson") (its own scaled dot products), not np.corrcoef:
    values recorded from pandas 3.1.1, which can differ from np.corrcoef in the last bit."""
    x = np.array([3.1, 4.4, 2.0, 4.9, 1.2, 3.3, 2.8])
    y = np.array([0.12, 0.31, 0.05, 0.2, 0.02, 0.33, 0.18])
    assert correlate(x, y, "pearson") == 0.741846456423034  # np.corrcoef: ...0342
