"""audioscore.losses against values worked out by hand from their definitions: ListMLE's
Plackett-Luce NLL, the pairwise logistic loss with margin and ties, and the standardised score
regression. Tiny tensors, float64."""

from __future__ import annotations

import math

import pytest
import torch

from audioscore.losses import (
    ListMLELoss,
    PairwiseLogisticLoss,
    ScoreRegressionLoss,
    listmle_loss,
    pairwise_logistic_loss,
)


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def m(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def plackett_luce_nll(s: list[float]) -> float:
    """-log P(order) = sum_i [log sum_{k>=i} exp(s_k) - s_i], last term 0."""
    return sum(math.log(sum(math.exp(x) for x in s[i:])) - s[i] for i in range(len(s)))


def test_listmle_is_the_plackett_luce_nll_per_choice():
    s = [2.0, 0.5, -1.0]
    assert listmle_loss(t(s), m([True] * 3)).item() == pytest.approx(plackett_luce_nll(s) / 2)


def test_listmle_ignores_trailing_padding_and_averages_over_choices_of_all_rows():
    scores = t([1.0, 3.0, 99.0], [0.0, -2.0, 5.0])
    mask = m([True, True, False], [True, True, True])
    want = (plackett_luce_nll([1.0, 3.0]) + plackett_luce_nll([0.0, -2.0, 5.0])) / 3
    assert listmle_loss(scores, mask).item() == pytest.approx(want)


def test_listmle_of_single_items_is_zero_not_nan():
    assert listmle_loss(t([4.0, 0.0]), m([True, False])).item() == 0.0
    assert ListMLELoss()(t([4.0], [1.0]), m([True], [True])).item() == 0.0


def test_listmle_module_ignores_targets():
    s, mask = t([1.0, 0.0]), m([True, True])
    assert ListMLELoss()(s, mask, t([0.0, 9.0])).item() == listmle_loss(s, mask).item()


def test_pairwise_logistic_is_the_mean_softplus_of_margin_minus_difference():
    s = [1.0, 0.5, 2.0]  # pairs (0,1) (0,2) (1,2), the higher position first
    want = sum(softplus(-(s[i] - s[j] - 0.2)) for i, j in [(0, 1), (0, 2), (1, 2)]) / 3
    got = pairwise_logistic_loss(t(s), m([True] * 3))
    assert got.item() == pytest.approx(want)


def test_pairwise_logistic_margin_is_configurable():
    s = [1.0, 0.0]
    got = PairwiseLogisticLoss(margin=0.7)(t(s), m([True, True]))
    assert got.item() == pytest.approx(softplus(-(1.0 - 0.7)))
    assert PairwiseLogisticLoss().margin == 0.2


def test_pairwise_logistic_skips_padding_and_known_ties_but_not_unknowns():
    s = t([3.0, 1.0, 0.0, 7.0])
    mask = m([True, True, True, False])
    targets = t([5.0, 5.0, float("nan"), 1.0])  # (0,1) a known tie; NaN is never a tie
    want = (softplus(-(3.0 - 0.0 - 0.2)) + softplus(-(1.0 - 0.0 - 0.2))) / 2
    assert pairwise_logistic_loss(s, mask, targets).item() == pytest.approx(want)
    assert PairwiseLogisticLoss()(s, mask, targets).item() == pytest.approx(want)


def test_pairwise_logistic_without_pairs_is_zero():
    assert pairwise_logistic_loss(t([1.0, 2.0]), m([True, False])).item() == 0.0


def test_regression_standardises_targets_before_the_loss():
    loss = ScoreRegressionLoss(kind="mse", mean=3.0, std=2.0)
    got = loss(t([0.5, 0.0]), m([True, True]), t([5.0, 3.0]))  # z = [1, 0]
    assert got.item() == pytest.approx(((0.5 - 1.0) ** 2 + 0.0) / 2)


def test_regression_huber_uses_delta():
    loss = ScoreRegressionLoss(kind="huber", delta=0.5)
    got = loss(t([3.0]), m([True]), t([0.0]))  # |err| = 3 > delta: delta * (|e| - delta / 2)
    assert got.item() == pytest.approx(0.5 * (3.0 - 0.25))
    small = ScoreRegressionLoss()(t([0.5]), m([True]), t([0.0]))  # delta 1: 0.5 * e^2
    assert small.item() == pytest.approx(0.125)


def test_regression_ignores_padding_and_unknown_scores():
    loss = ScoreRegressionLoss(kind="mse")
    got = loss(t([1.0, 50.0, 70.0]), m([True, True, False]), t([0.0, float("nan"), 0.0]))
    assert got.item() == pytest.approx(1.0)


def test_fit_stats_sets_mean_and_floors_std():
    loss = ScoreRegressionLoss(kind="mse")
    loss.fit_stats(2.0, 4.0)
    assert loss(t([0.0]), m([True]), t([6.0])).item() == pytest.approx(1.0)
    loss.fit_stats(0.0, 0.0)
    assert loss.std.item() == pytest.approx(1e-6)
    assert set(dict(loss.named_buffers())) == {"mean", "std"}


def test_regression_errors_are_clear():
    with pytest.raises(ValueError, match="regression kind must be 'mse' or 'huber', got 'l1'"):
        ScoreRegressionLoss(kind="l1")
    loss = ScoreRegressionLoss()
    with pytest.raises(
        ValueError, match="^regression loss needs ground-truth scores in the groups file$"
    ):
        loss(t([1.0]), m([True]))
    with pytest.raises(ValueError, match="^regression loss: no item in this batch has a score$"):
        loss(t([1.0, 2.0]), m([True, False]), t([float("nan"), 1.0]))


def test_listmle_of_one_pair_is_divided_by_one_choice():
    s = [0.0, 1.0]
    assert listmle_loss(t(s), m([True, True])).item() == pytest.approx(plackett_luce_nll(s))


def test_listmle_rows_of_one_item_add_no_choice_to_the_average():
    scores = t([2.0, 0.5, -1.0], [4.0, 0.0, 0.0])
    mask = m([True, True, True], [True, False, False])
    want = plackett_luce_nll([2.0, 0.5, -1.0]) / 2
    assert listmle_loss(scores, mask).item() == pytest.approx(want)


def test_regression_defaults_are_huber_delta_one_on_unscaled_scores():
    loss = ScoreRegressionLoss()
    assert (loss.kind, loss.delta, loss.mean.item(), loss.std.item()) == ("huber", 1.0, 0.0, 1.0)
    assert loss(t([1.5]), m([True]), t([0.0])).item() == pytest.approx(1.0 * (1.5 - 0.5))
    assert loss(t([0.0]), m([True]), t([2.0])).item() == pytest.approx(1.5)
