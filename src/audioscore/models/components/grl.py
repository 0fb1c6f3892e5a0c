"""Gradient reversal (DANN) and the singer adversary that sits behind it."""

from __future__ import annotations

import math

import torch
from torch import nn


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.neg() * ctx.lambd, None


def reverse_grad(x: torch.Tensor, lambd: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -lambd backward."""
    return _ReverseGrad.apply(x, lambd)


def dann_lambda(progress: float, max_weight: float = 1.0, gamma: float = 10.0) -> float:
    """DANN schedule: max_weight * (2 / (1 + exp(-gamma p)) - 1), p in [0, 1] clipped."""
    p = min(max(float(progress), 0.0), 1.0)
    return max_weight * (2.0 / (1.0 + math.exp(-gamma * p)) - 1.0)


class GradientReversal(nn.Module):
    """Module form; set `.lambd` each step (the LightningModule follows the DANN schedule)."""

    def __init__(self, lambd: float = 0.0) -> None:
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_grad(x, self.lambd)


class SingerAdversary(nn.Module):
    """GRL -> (standardise) -> MLP or linear: singer logits [B, C] or a speaker embedding [B, E].

    Args:
        in_dim, out_dim: pooled width in, classes (or embedding width) out.
        hidden_dim: MLP width; 0 or None makes the adversary linear (the probe's own class).
        dropout: inside the MLP.
        norm: standardise the reversed features per dim (BatchNorm without affine) as the linear
            probe does; without it the encoder can hide singer identity in low-variance dims that
            an unnormalised adversary under-weights but a standardised probe still reads.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = 256,
        dropout: float = 0.3,
        norm: bool = False,
    ) -> None:
        super().__init__()
        self.grl = GradientReversal()
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if norm else nn.Identity()
        if hidden_dim:
            self.mlp = nn.Sequential(
                nn.Linear(in_dim, hidden_dim),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, out_dim),
            )
        else:
            self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(self.grl(pooled)))  # [B, C] or [B, E]
