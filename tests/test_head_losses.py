"""Head masking, ranking/regression losses and ranking metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from audiobase.songeval_head import SongEvalHead
from audioscore.losses import (
    ListMLELoss,
    PairwiseLogisticLoss,
    ScoreRegressionLoss,
    listmle_loss,
    pairwise_logistic_loss,
)
from audioscore.metrics import (
    GroupRanking,
    group_metrics,
    kendall_tau,
    pairwise_accuracy,
    spearman,
)


def test_head_padding_does_not_change_score():
    torch.manual_seed(0)
    head = SongEvalHead(in_dim=16, hidden_dim=32, attn_layers=2, heads=2).eval()
    a, b = torch.randn(1, 7, 16), torch.randn(1, 12, 16)  # two clips of different length
    feats = torch.zeros(2, 12, 16)
    feats[0, :7], feats[1] = a[0], b[0]
    feats[0, 7:] = 100.0  # garbage in the padding must not leak
    mask = torch.arange(12)[None] < torch.tensor([[7], [12]])
    batched = head(feats, mask)
    alone = torch.cat(
        [head(a, torch.ones(1, 7, dtype=torch.bool)), head(b, torch.ones(1, 12, dtype=torch.bool))]
    )
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_head_extra_features_are_used_and_checked():
    head = SongEvalHead(in_dim=8, hidden_dim=16, attn_layers=1, heads=2, extra_dim=3).eval()
    feats, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    pooled = head.pool(feats, mask, torch.ones(2, 3))
    assert pooled.shape == (2, head.pooled_dim) == (2, 19)
    assert torch.equal(pooled[:, -3:], torch.ones(2, 3))
    with pytest.raises(ValueError, match="extra features"):
        head(feats, mask)


def brute_listmle(s: list[float]) -> float:
    """-log P(order) under Plackett-Luce, per choice made."""
    nll = sum(-(s[i] - math.log(sum(math.exp(x) for x in s[i:]))) for i in range(len(s)))
    return nll / (len(s) - 1)


def test_listmle_matches_plackett_luce_and_ignores_padding():
    s = [2.0, 0.5, 1.0]
    got = listmle_loss(torch.tensor([s + [9.0, -9.0]]), torch.tensor([[1, 1, 1, 0, 0]]).bool())
    assert got.item() == pytest.approx(brute_listmle(s), rel=1e-6)
    # two groups of different length: the mean over all choices made
    scores = torch.tensor([[1.0, 0.0, 0.0], [3.0, 1.0, 2.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()
    expected = (brute_listmle([1.0, 0.0]) * 1 + brute_listmle([3.0, 1.0, 2.0]) * 2) / 3
    assert ListMLELoss()(scores, mask).item() == pytest.approx(expected, rel=1e-6)


def test_listmle_prefers_the_true_order():
    mask = torch.ones(1, 4, dtype=torch.bool)
    right = listmle_loss(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), mask)
    wrong = listmle_loss(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), mask)
    assert right < wrong
    s = torch.zeros(1, 4, requires_grad=True)
    listmle_loss(s, mask).backward()
    assert (torch.diff(s.grad[0]) > 0).all()  # descent raises the top item most


def test_pairwise_loss_matches_definition_and_skips_ties():
    s = torch.tensor([[0.3, 0.9, -0.2]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    pairs = [(i, j) for i, j in itertools.combinations(range(3), 2)]
    manual = np.mean([math.log1p(math.exp(-(s[0, i] - s[0, j] - 0.2))) for i, j in pairs])
    assert pairwise_logistic_loss(s, mask).item() == pytest.approx(manual, rel=1e-6)
    targets = torch.tensor([[90.0, 90.0, 50.0]])  # first pair tied: skipped
    manual_t = np.mean([math.log1p(math.exp(-(s[0, i] - s[0, j] - 0.2))) for i, j in pairs[1:]])
    got = PairwiseLogisticLoss(margin=0.2)(s, mask, targets)
    assert got.item() == pytest.approx(manual_t, rel=1e-6)


def test_regression_standardises_and_ignores_missing():
    loss = ScoreRegressionLoss(kind="mse")
    loss.fit_stats(70.0, 10.0)
    scores = torch.tensor([[1.0, -1.0, 5.0]])
    targets = torch.tensor([[80.0, 60.0, float("nan")]])
    assert loss(scores, torch.ones(1, 3, dtype=torch.bool), targets).item() == pytest.approx(0.0)
    assert loss(scores + 1, torch.ones(1, 3, dtype=torch.bool), targets).item() == pytest.approx(
        1.0
    )
    with pytest.raises(ValueError, match="scores"):
        loss(scores, torch.ones(1, 3, dtype=torch.bool), None)
    with pytest.raises(ValueError):
        ScoreRegressionLoss(kind="l1")


def test_rank_metrics_agree_with_scipy():
    rng = np.random.default_rng(0)
    pred, truth = rng.normal(size=30), rng.normal(size=30)
    assert spearman(pred, truth) == pytest.approx(stats.spearmanr(pred, truth).statistic)
    assert kendall_tau(pred, truth) == pytest.approx(stats.kendalltau(pred, truth).statistic)
    assert math.isnan(spearman(np.ones(4), truth[:4]))
    acc, n = pairwise_accuracy(np.array([3.0, 2.0, 2.0, 0.0]), np.array([4.0, 3.0, 2.0, 2.0]))
    # pairs with distinct truth: 5; (1,2) is a prediction tie -> 0.5
    assert n == 5 and acc == pytest.approx(4.5 / 5)


def test_group_metrics_are_within_groups():
    # each group perfectly ordered, but group 1 sits far below group 0 in prediction
    pred = np.array([10, 9, 8, -1, -2, -3.0])
    truth = np.array([3, 2, 1, 30, 20, 10.0])
    m = group_metrics(pred, truth, np.array([0, 0, 0, 1, 1, 1]))
    assert m["srcc"] == pytest.approx(1.0) and m["ktau"] == pytest.approx(1.0)
    assert m["pair_acc"] == pytest.approx(1.0)
    assert m["srcc_pooled"] < 0


def test_group_ranking_counts_each_clip_once_and_scores_the_adversary():
    """Validation gathering: DistributedSampler repeats clips to pad ranks; they count once."""
    metric = GroupRanking()
    index = torch.tensor([0, 1, 2, 3])
    score = torch.tensor([3.0, 1.0, 2.0, 0.5])
    truth = torch.tensor([3.0, 2.0, 1.0, 0.0])  # group 0 ranked wrongly once, group 1 right
    group = torch.tensor([0, 0, 0, 1])
    hit = torch.tensor([True, False, True, True])
    known = torch.tensor([True, True, True, False])
    metric.update(index[:3], score[:3], truth[:3], group[:3], hit[:3], known[:3])
    # the next "rank" repeats clip 0 with a different (padded) prediction: the first one counts
    metric.update(index[[3, 0]], torch.tensor([0.5, -9.0]), truth[[3, 0]], group[[3, 0]],
                  hit[[3, 0]], known[[3, 0]])  # fmt: skip
    got = metric.compute()
    want = group_metrics(score.numpy(), truth.numpy(), group.numpy())
    for key in ("srcc", "ktau", "pair_acc"):
        assert got[key] == pytest.approx(want[key])
    assert got["adv_acc"] == pytest.approx(2 / 3)  # clip 3 has no known singer
    metric.reset()
    metric.update(index, score, truth, group)  # no adversary: no adv_acc
    assert "adv_acc" not in metric.compute()
