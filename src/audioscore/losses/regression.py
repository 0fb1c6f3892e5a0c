"""Scalar-score regression on standardised scores (MSE or Huber)."""

from __future__ import annotations

import torch
from torch import nn


class ScoreRegressionLoss(nn.Module):
    """Regress model outputs onto (score - mean) / std; items without a score are ignored.

    `mean`/`std` come from the training scores (the LightningModule calls `fit_stats` with the
    DataModule's statistics); they are buffers, so they travel in checkpoints.
    """

    mean: torch.Tensor  # registered buffers
    std: torch.Tensor

    def __init__(
        self, kind: str = "huber", delta: float = 1.0, mean: float = 0.0, std: float = 1.0
    ):
        super().__init__()
        if kind not in ("mse", "huber"):
            raise ValueError(f"regression kind must be 'mse' or 'huber', got {kind!r}")
        self.kind, self.delta = kind, delta
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def fit_stats(self, mean: float, std: float) -> None:
        self.mean.fill_(float(mean))
        self.std.fill_(max(float(std), 1e-6))

    def forward(
        self, scores: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        if targets is None:
            raise ValueError("regression loss needs ground-truth scores in the groups file")
        valid = mask & ~torch.isnan(targets)  # [G, N]
        if not bool(valid.any()):
            raise ValueError("regression loss: no item in this batch has a score")
        z = (targets[valid] - self.mean) / self.std
        pred = scores[valid].float()
        if self.kind == "mse":
            return nn.functional.mse_loss(pred, z)
        return nn.functional.huber_loss(pred, z, delta=self.delta)
