"""CMI-RewardBench metrics, reproduced from `evaluate_results.py` (commit 4620653), plus extras.

Exactly as upstream: rows kept by `split`; subset re-inferred from `source`; SRCC / LCC / K-Tau
(pandas 3 `Series.corr`: scipy's spearmanr and kendalltau (tau-b), pandas' own Pearson) on PAM
(musicality, alignment) and MusicEval (musicality) after dropping non-numeric pairs, None when
n < 2; accuracy on Music Arena (`preference` vs `predicted_preference`) and CMI-Pref (alignment,
musicality) with labels normalised case-insensitively (a/model_a, b/model_b, both/neither),
other labels dropped, a match 1, a mismatch involving "both" 0.5, else 0. Detail groups: Music
Arena by month; CMI-Pref by modality, confidence (<3, =3, >3) x ref category, ref subset and
instru/vocal. One deliberate difference: a NaN correlation (constant input) is reported as None.

Extras (not upstream): PAM system-level correlations and percentile-bootstrap 95% CIs (every
resample's statistic computed in one vectorised call)."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from audiobase import schemas as S
from bench.columns import (
    ACC_TASKS,
    CONFIDENCE_COLS,
    CORR_TASKS,
    NO_REF_MODALITIES,
    REF_MODALITIES,
    Row,
    by_subset,
    confidence_group,
    modality_of,
    month_of,
    norm_pref,
    numeric_pairs,
    subset_of_result,
    system_of,
    to_num,
)


# ---- statistics --------------------------------------------------------------------------
def finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """pandas (3.x) `Series.corr(method="pearson")` as it computes it: centred, scaled by the
    largest magnitude, then dot products; NaN when a side is constant. The dot products are
    BLAS's, so the last bit follows the machine's BLAS kernels, for pandas as for this."""
    x, y = x - x.mean(), y - y.mean()
    sx, sy = np.max(np.abs(x)), np.max(np.abs(y))
    if sx == 0 or sy == 0:
        return math.nan
    x, y = x / sx, y / sy
    dof = len(x) - 1
    r = np.dot(x, y) / dof / np.sqrt(np.dot(x, x) / dof) / np.sqrt(np.dot(y, y) / dof)
    return float(np.clip(r, -1.0, 1.0))


def correlate(x: np.ndarray, y: np.ndarray, method: str) -> float | None:
    """pandas Series.corr semantics; None when n < 2 or undefined (constant input)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    if method == "spearman":
        return finite(stats.spearmanr(x, y).statistic)  # Pearson on average ranks, as pandas
    if method == "kendall":
        return finite(stats.kendalltau(x, y).statistic)  # tau-b, as pandas
    return finite(pearson(x, y))


def pref_scores(rows: Sequence[Row], gt: str, pred: str) -> np.ndarray:
    """Per-pair credit: 1 match, 0.5 mismatch involving "both", 0 otherwise; invalid dropped."""
    out = []
    for r in rows:
        g, p = norm_pref(r.get(gt)), norm_pref(r.get(pred))
        if g is None or p is None:
            continue
        out.append(1.0 if g == p else (0.5 if "both" in (g, p) else 0.0))
    return np.array(out, float)


def accuracy(rows: Sequence[Row], gt: str, pred: str) -> dict[str, Any]:
    s = pref_scores(rows, gt, pred)
    return {"n": int(len(s)), "acc": float(s.mean()) if len(s) else None}


# ---- bootstrap: every resample at once -----------------------------------------------------
KENDALL_MAX_N = 2000  # above this, n x n sign matrices cost too much memory: a loop instead


def rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of a, b [B, n]."""
    a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return np.clip(r, -1.0, 1.0)


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Resampled indices [B, n] -> how often each original item was drawn [B, n]."""
    flat = idx + n * np.arange(len(idx))[:, None]
    return np.bincount(flat.ravel(), minlength=idx.size).reshape(idx.shape).astype(float)


def resampled_kendall(idx: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of every resample: with draw counts w, the sums over pairs of sign
    products are quadratic forms w' S w of the originals' n x n sign matrices."""
    if len(x) > KENDALL_MAX_N:
        return np.array([stats.kendalltau(x[i], y[i]).statistic for i in idx])
    w = resample_counts(idx, len(x))
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])

    def form(m: np.ndarray) -> np.ndarray:
        return ((w @ m) * w).sum(1)

    with np.errstate(invalid="ignore", divide="ignore"):
        return form(sx * sy) / np.sqrt(form(sx * sx) * form(sy * sy))


def resampled_corr(idx: np.ndarray, x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """`correlate(x[i], y[i], method)` for every resample i of idx [B, n]; NaN where undefined."""
    xs, ys = x[idx], y[idx]
    if method == "kendall":
        r = resampled_kendall(idx, x, y)
    elif method == "spearman":  # Pearson on average ranks, as scipy's spearmanr
        r = rowwise_pearson(stats.rankdata(xs, axis=-1), stats.rankdata(ys, axis=-1))
    else:
        r = rowwise_pearson(xs, ys)
    constant = (xs.max(-1) == xs.min(-1)) | (ys.max(-1) == ys.min(-1))
    return np.where(constant, np.nan, r)


def bootstrap_ci(
    n: int, stat: Callable[[np.ndarray], np.ndarray], n_boot: int, seed: int
) -> tuple[float | None, float | None]:
    """Percentile 95% CI over `n_boot` resamples of n items (scipy.stats.bootstrap, seeded,
    vectorized). `stat(indices [B, n]) -> [B]` gives the statistic of every resample at once;
    resamples where it is undefined (NaN: a constant resample) are left out."""
    if n < 2 or n_boot <= 0:
        return None, None

    def of_indices(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return stat(idx.reshape(-1, n)).reshape(idx.shape[:-1])

    with warnings.catch_warnings():  # its own interval is NaN when a resample is degenerate
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (np.arange(n),),
            of_indices,
            n_resamples=n_boot,
            vectorized=True,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    vals = res.bootstrap_distribution
    vals = vals[np.isfinite(vals)]
    if len(vals) == 0:
        return None, None
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def corr_ci(
    x: np.ndarray, y: np.ndarray, method: str, n_boot: int, seed: int
) -> tuple[float | None, float | None]:
    return bootstrap_ci(len(x), lambda idx: resampled_corr(idx, x, y, method), n_boot, seed)


def mean_ci(s: np.ndarray, n_boot: int, seed: int) -> tuple[float | None, float | None]:
    return bootstrap_ci(len(s), lambda idx: s[idx].mean(-1), n_boot, seed)


# ---- tables ------------------------------------------------------------------------------
def select_rows(rows: Sequence[Row], split: str | None = "test") -> list[Row]:
    """Upstream filter: when any row has `split`, keep str(split) == target; add subset info."""
    if split is not None and any(S.SPLIT in r for r in rows):
        rows = [r for r in rows if str(r.get(S.SPLIT)) == str(split)]
    out = []
    for r in rows:
        r = dict(r)
        r[S.SUBSET] = subset_of_result(r)
        r["month"] = month_of(r)
        r["modality_group"] = modality_of(r)
        out.append(r)
    return out


CORR_COLS = (("SRCC", "spearman"), ("LCC", "pearson"), ("K-Tau", "kendall"))


def summary_rows(rows: Sequence[Row]) -> list[Row]:
    """metrics_summary.csv rows: upstream's rows, keys and order."""
    groups, out = by_subset(rows), []
    for subset, tasks in CORR_TASKS.items():
        for task, gt, pred in tasks if groups.get(subset) else ():
            x, y = numeric_pairs(groups[subset], gt, pred)
            row: Row = {"dataset": subset, "task": task, "n": int(len(x))}
            out.append(row | {col: correlate(x, y, method) for col, method in CORR_COLS})
    for subset, tasks in ACC_TASKS.items():
        for task, gt, pred in tasks if groups.get(subset) else ():
            a = accuracy(groups[subset], gt, pred)
            out.append({"dataset": subset, "task": task, "n": a["n"], "ACC": a["acc"]})
    return out


def ci_rows(rows: Sequence[Row], n_boot: int, seed: int) -> list[Row]:
    """metrics_ci.csv rows: each summary metric with its percentile-bootstrap 95% CI
    (`<metric>_lo`, `<metric>_hi`; None when n < 2 or n_boot = 0)."""
    groups, out = by_subset(rows), []
    for subset, tasks in CORR_TASKS.items():
        for task, gt, pred in tasks if groups.get(subset) else ():
            x, y = numeric_pairs(groups[subset], gt, pred)
            row: Row = {"dataset": subset, "task": task, "n": int(len(x))}
            for col, method in CORR_COLS:
                lo, hi = corr_ci(x, y, method, n_boot, seed)
                row |= {col: correlate(x, y, method), f"{col}_lo": lo, f"{col}_hi": hi}
            out.append(row)
    for subset, tasks in ACC_TASKS.items():
        for task, gt, pred in tasks if groups.get(subset) else ():
            s = pref_scores(groups[subset], gt, pred)
            lo, hi = mean_ci(s, n_boot, seed)
            acc = float(s.mean()) if len(s) else None
            row = {"dataset": subset, "task": task, "n": int(len(s)), "ACC": acc}
            out.append(row | {"ACC_lo": lo, "ACC_hi": hi})
    return out


def detail_rows(rows: Sequence[Row], columns: set[str] | None = None) -> list[Row]:
    """metrics_detail.csv rows, in upstream order (groups sorted like pandas groupby).
    `columns`: every key of the results file (default: of `rows`); as upstream, a task gets
    confidence rows only when its confidence column is one of them."""
    columns = set().union(*rows) if columns is None else columns
    groups, out = by_subset(rows), []
    ma = groups.get("MusicArena", [])
    for month in sorted({r["month"] for r in ma}):
        g = [r for r in ma if r["month"] == month]
        a = accuracy(g, S.PREFERENCE, S.PRED_PREFERENCE)
        out.append(detail("MusicArena", "preference", "month", month, a))
    cmi = groups.get("CMI-Pref", [])
    if not cmi:
        return out
    for mod in sorted({r["modality_group"] for r in cmi}):
        g = [r for r in cmi if r["modality_group"] == mod]
        for task, gt, pred in ACC_TASKS["CMI-Pref"]:
            out.append(detail("CMI-Pref", task, "modality", mod, accuracy(g, gt, pred)))
    for task, gt, pred in ACC_TASKS["CMI-Pref"]:
        conf_col = CONFIDENCE_COLS[task]
        if conf_col not in columns:
            continue  # upstream skips a task whose confidence column is absent
        tagged = [
            (cg, refcat(r), r) for r in cmi if (cg := confidence_group(r.get(conf_col))) is not None
        ]
        for cg, rc in sorted({(c, k) for c, k, _ in tagged}):
            g = [r for c, k, r in tagged if c == cg and k == rc]
            out.append(detail("CMI-Pref", task, "confidence", cg, accuracy(g, gt, pred), rc))
        for cg in sorted({c for c, _, _ in tagged}):
            g = [r for c, _, r in tagged if c == cg]
            out.append(detail("CMI-Pref", task, "confidence", cg, accuracy(g, gt, pred), "all"))
    for name, mods in (("no_ref", NO_REF_MODALITIES), ("ref", REF_MODALITIES)):
        g = [r for r in cmi if r["modality_group"] in mods]
        for task, gt, pred in ACC_TASKS["CMI-Pref"]:
            out.append(detail("CMI-Pref", task, "ref_subset", name, accuracy(g, gt, pred)))
    for name, mods in (
        ("instru", ("text", "text+ref")),
        ("vocal", ("text+lyrics", "text+lyrics+ref")),
    ):
        g = [r for r in cmi if r["modality_group"] in mods]
        for task, gt, pred in ACC_TASKS["CMI-Pref"]:
            out.append(detail("CMI-Pref", task, "modality_type", name, accuracy(g, gt, pred)))
    return out


def refcat(r: Row) -> str:
    return "ref" if str(r["modality_group"]) in REF_MODALITIES else "no_ref"


def detail(
    dataset: str, task: str, key: str, value: str, acc: dict, ref_category: str | None = None
) -> Row:
    row: Row = {"dataset": dataset, "task": task, "group_key": key, "group_value": value}
    if ref_category is not None:
        row["ref_category"] = ref_category
    return row | {"n": acc["n"], "ACC": acc["acc"]}


def system_rows(rows: Sequence[Row]) -> list[Row]:
    """PAM system-level SRCC/LCC/K-Tau: per system, mean predicted vs mean human score.

    Human system score = mean MOS over that system's test clips with a valid prediction
    (LDNet's convention, not a separate system-MOS file); clips per system are reported.
    """
    pam = by_subset(rows).get("PAM", [])
    out = []
    for task, gt, pred in CORR_TASKS["PAM"]:
        per: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in pam:
            x, y = to_num(r.get(gt)), to_num(r.get(pred))
            if not (math.isnan(x) or math.isnan(y)):
                per[system_of(r)].append((x, y))
        if not per:
            continue
        systems = sorted(per)
        xs = np.array([np.mean([p[0] for p in per[s]]) for s in systems])
        ys = np.array([np.mean([p[1] for p in per[s]]) for s in systems])
        out.append(
            {
                "dataset": "PAM",
                "task": task,
                "level": "system",
                "n_systems": len(systems),
                "SRCC": correlate(xs, ys, "spearman"),
                "LCC": correlate(xs, ys, "pearson"),
                "K-Tau": correlate(xs, ys, "kendall"),
                "clips_per_system": {s: len(per[s]) for s in systems},
                "human_mean": {s: float(v) for s, v in zip(systems, xs, strict=True)},
                "predicted_mean": {s: float(v) for s, v in zip(systems, ys, strict=True)},
            }
        )
    return out


def upstream_config(split: str | None) -> dict[str, Any]:
    """metrics.json's `config`: upstream's config/eval_benchmark.yaml, whose rules these are."""
    return {
        "filter": {"split": split},
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


def compute_metrics(
    rows: Sequence[Row], *, split: str | None = "test", n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """All metrics for result rows: upstream's {config, summary, detail}, then the extras
    {summary_ci, system_level, bootstrap, n_rows}."""
    sel = select_rows(rows, split)
    return {
        "config": upstream_config(split),
        "summary": summary_rows(sel),
        "detail": detail_rows(sel, set().union(*rows)),
        "summary_ci": ci_rows(sel, n_boot, seed),
        "system_level": system_rows(sel),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "ci": 0.95, "method": "percentile"},
        "n_rows": len(sel),
    }
