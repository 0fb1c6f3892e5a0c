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

    @torch.no_grad()
    def predict(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] without a graph (val/adv_acc), as `RidgeAdversary.predict`."""
        return self(pooled)


class RidgeAdversary(nn.Module):
    """GRL -> the best linear probe of the singer, refit in closed form at every step.

    An MLP adversary trails the features it is trained on, and the reversed gradient then teaches
    the encoder to make it confidently wrong (a relabelling that a fresh probe still reads). Here
    the adversary has no weights to trail: each step a standardised ridge regression from features
    to targets (singer one-hots, or speaker embeddings) is solved on the current batch plus a
    memory bank of recent detached features, and the loss is its unexplained share, 1 - R^2, in
    [0, 1]. The encoder, through the GRL, can only raise it by making features carry less of the
    target, as the probe measures it.

    `condition` on the clip's true score: targets and features are first residualised on a cubic
    of the (standardised) score, so what the probe reads is singer information beyond quality. Where
    training singers have their own quality level, quality alone predicts the singer, and an
    unconditioned adversary would push the encoder to forget quality.

    Args:
        in_dim, out_dim: feature width in; classes (one-hot targets) or embedding width out.
        bank: detached rows kept from earlier steps (the fit needs more rows than a batch, and
            more than the feature width); None = max(256, 2 * in_dim).
        ridge: penalty on standardised features, as a fraction of the rows.
        condition: residualise on the true score (rows without a score are left out).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bank: int | None = None,
        ridge: float = 0.1,
        condition: bool = True,
    ) -> None:
        super().__init__()
        self.grl = GradientReversal()
        self.out_dim, self.ridge, self.condition = out_dim, float(ridge), bool(condition)
        bank = int(bank) if bank else max(256, 2 * in_dim)
        # the bank is working memory, rebuilt within a few steps: not part of checkpoints
        self.register_buffer("bank_x", torch.zeros(bank, in_dim), persistent=False)
        self.register_buffer("bank_y", torch.zeros(bank, out_dim), persistent=False)
        self.register_buffer("bank_s", torch.zeros(bank), persistent=False)
        self.filled, self.next = 0, 0

    def targets(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Singer ids [B] (-1 unknown) or embeddings [B, E] -> (targets [B, out], known [B])."""
        if target.dim() == 1:
            known = target >= 0
            y = nn.functional.one_hot(target.clamp(min=0), self.out_dim).float()
            return y, known
        return target.float(), torch.ones(len(target), dtype=torch.bool, device=target.device)

    def forward(
        self, x: torch.Tensor, target: torch.Tensor, score: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [B, D] (pooled), target [B] ids or [B, E], score [B] -> 1 - R^2 of the refit probe."""
        y, keep = self.targets(target)
        if self.condition and score is None:
            raise ValueError("a conditioned ridge adversary needs the clips' scores")
        s = torch.zeros(len(x), device=x.device) if score is None else score.float()
        if self.condition:
            keep = keep & torch.isfinite(s)
        x, y, s = self.grl(x.float())[keep], y[keep], s[keep]
        n = self.filled
        xs = torch.cat([x, self.bank_x[:n]])  # [N, D]; current rows first, with gradient
        ys = torch.cat([y, self.bank_y[:n]])  # [N, out]
        ss = torch.cat([s, self.bank_s[:n]])  # [N]
        if self.training:
            self.remember(x.detach(), y, s)
        if len(xs) < 4:
            return x.sum() * 0.0  # nothing to fit yet; keeps the graph
        with torch.autocast(x.device.type, enabled=False):  # a solve needs float32
            return unexplained(xs, ys, ss if self.condition else None, self.ridge)

    @torch.no_grad()
    def remember(self, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> None:
        """Ring buffer: the newest rows overwrite the oldest."""
        size = self.bank_x.shape[0]
        k = min(len(x), size)
        idx = (self.next + torch.arange(k, device=x.device)) % size
        self.bank_x[idx], self.bank_y[idx], self.bank_s[idx] = x[-k:], y[-k:], s[-k:]
        self.next = (self.next + k) % size
        self.filled = min(self.filled + k, size)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, D] -> targets predicted by the probe fit on the bank [B, out] (val/adv_acc)."""
        n = self.filled
        if n < 4:
            return torch.zeros(len(x), self.out_dim, device=x.device)
        bx, by = self.bank_x[:n], self.bank_y[:n]
        mu, sd = bx.mean(0), bx.std(0).clamp(min=1e-6)
        with torch.autocast(x.device.type, enabled=False):
            w = ridge_fit((bx - mu) / sd, by - by.mean(0), self.ridge)  # [D, out]
            return ((x.float() - mu) / sd) @ w + by.mean(0)


def ridge_fit(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Centred x [N, D], y [N, K] -> W [D, K] minimising |y - x W|^2 + ridge N |W|^2."""
    d = x.shape[1]
    gram = x.T @ x + ridge * len(x) * torch.eye(d, device=x.device, dtype=x.dtype)  # [D, D]
    return torch.linalg.solve(gram, x.T @ y)


def unexplained(
    x: torch.Tensor, y: torch.Tensor, score: torch.Tensor | None, ridge: float
) -> torch.Tensor:
    """1 - R^2 of a standardised ridge probe x [N, D] -> y [N, K], optionally given the score."""
    x = (x - x.mean(0)) / x.std(0).clamp(min=1e-6)  # the probe standardises; so must we
    y = y - y.mean(0)
    if score is not None:
        z = (score - score.mean()) / score.std().clamp(min=1e-6)
        basis = torch.stack([torch.ones_like(z), z, z**2, z**3], dim=1)  # [N, 4]
        inv = torch.linalg.pinv(basis.T @ basis)  # [4, 4]; pinv: constant scores are fine

        def residual(v: torch.Tensor) -> torch.Tensor:
            return v - basis @ (inv @ (basis.T @ v))  # what the score explains is not the probe's

        x, y = residual(x), residual(y)
    w = ridge_fit(x, y, ridge)  # [D, K]
    total = (y**2).sum().clamp(min=1e-8)
    return ((y - x @ w) ** 2).sum() / total
