"""Ranking metrics against ground truth: Spearman, Kendall tau-b, pairwise accuracy, per group."""

from __future__ import annotations

import numpy as np
from scipy import stats


def spearman(pred: np.ndarray, truth: np.ndarray) -> float:
    """Spearman rank correlation; NaN when either side is constant or has < 2 items."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(truth) == 0:
        return float("nan")
    return float(stats.spearmanr(pred, truth).statistic)


def kendall_tau(pred: np.ndarray, truth: np.ndarray) -> float:
    """Kendall tau-b (tie-corrected); NaN when undefined."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(truth) == 0:
        return float("nan")
    return float(stats.kendalltau(pred, truth).statistic)


def pairwise_accuracy(pred: np.ndarray, truth: np.ndarray) -> tuple[float, int]:
    """Fraction of pairs with different truth that `pred` orders the same way (pred ties = 0.5).

    Returns (accuracy, number of pairs); accuracy is NaN when there is no such pair.
    """
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    dt = np.sign(truth[:, None] - truth[None, :])  # [N, N]
    dp = np.sign(pred[:, None] - pred[None, :])
    upper = np.triu(np.ones_like(dt, dtype=bool), k=1) & (dt != 0)
    n = int(upper.sum())
    if n == 0:
        return float("nan"), 0
    agree = np.where(dp[upper] == 0, 0.5, (dp[upper] == dt[upper]).astype(float))
    return float(agree.mean()), n


def group_metrics(pred: np.ndarray, truth: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """srcc / ktau averaged over groups (weighted by size), pair_acc pooled over within-group pairs.

    `truth` is the ground-truth score (higher = better); where scores are unknown pass
    -position-in-group so the given order is the truth. Also returns `srcc_pooled` over all items.
    """
    pred, truth, groups = (np.asarray(a) for a in (pred, truth, groups))
    srccs, ktaus, weights, correct, pairs = [], [], [], 0.0, 0
    for g in np.unique(groups):
        sel = groups == g
        p, t = pred[sel], truth[sel]
        s, k = spearman(p, t), kendall_tau(p, t)
        if not np.isnan(s):
            srccs.append(s)
            ktaus.append(k)
            weights.append(sel.sum())
        acc, n = pairwise_accuracy(p, t)
        if n:
            correct += acc * n
            pairs += n
    nan = float("nan")
    return {
        "srcc": float(np.average(srccs, weights=weights)) if srccs else nan,
        "ktau": float(np.average(ktaus, weights=weights)) if ktaus else nan,
        "pair_acc": correct / pairs if pairs else nan,
        "srcc_pooled": spearman(pred, truth),
    }
