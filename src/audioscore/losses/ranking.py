"""Ranking losses over padded groups sorted high to low.

Shapes: scores [G, N] (model outputs), mask [G, N] bool (True = real item), targets [G, N]
ground-truth scores or NaN when unknown. Position order within a row is the true order (best first).
"""

from __future__ import annotations

import torch
from torch import nn


def listmle_loss(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plackett-Luce NLL of the given order, averaged over items (padding must trail each row)."""
    neg_inf = torch.finfo(scores.dtype).min
    s = scores.masked_fill(~mask, neg_inf)  # [G, N]
    # log sum_{k >= i} exp(s_k): reverse cumulative logsumexp
    tail = torch.logcumsumexp(s.flip(-1), dim=-1).flip(-1)  # [G, N]
    nll = (tail - s).masked_fill(~mask, 0.0)  # [G, N]
    # the last real item contributes 0: normalise by the number of choices actually made
    n_terms = (mask.sum(-1) - 1).clamp(min=0).sum().clamp(min=1)
    return nll.sum() / n_terms


def pairwise_logistic_loss(
    scores: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor | None = None,
    margin: float = 0.2,
) -> torch.Tensor:
    """mean over pairs (i above j) of log(1 + exp(-(s_i - s_j - margin))); known ties skipped."""
    G, N = scores.shape
    pos = torch.arange(N, device=scores.device)
    above = pos[:, None] < pos[None, :]  # [N, N] i ranked above j
    pair = above[None] & mask[:, :, None] & mask[:, None, :]  # [G, N, N]
    if targets is not None:
        known = ~torch.isnan(targets)
        ties = (targets[:, :, None] == targets[:, None, :]) & known[:, :, None] & known[:, None, :]
        pair = pair & ~ties
    diff = scores[:, :, None] - scores[:, None, :] - margin  # [G, N, N]
    loss = nn.functional.softplus(-diff)
    return (loss * pair).sum() / pair.sum().clamp(min=1)


class ListMLELoss(nn.Module):
    """ListMLE (Xia et al. 2008): needs only the order, suits 'groups sorted high to low'."""

    def forward(
        self, scores: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        return listmle_loss(scores, mask)


class PairwiseLogisticLoss(nn.Module):
    """RankNet-style pairwise loss with a margin (0.2 as in the original audioscore recipe)."""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = margin

    def forward(
        self, scores: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        return pairwise_logistic_loss(scores, mask, targets, self.margin)
