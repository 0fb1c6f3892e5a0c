"""Gradient reversal (DANN) and the singer adversaries that sit behind it (ridge, mlp)."""

from __future__ import annotations

import math
from typing import Any

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


def dann_lambda(progress: float, max_weight: float, gamma: float) -> float:
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


def target_dim(mode: str, num_singers: int, timbre_dim: int) -> int:
    """Adversary output width: singer classes (classify) or the speaker embedding (regress)."""
    if mode == "classify":
        if num_singers < 2:
            raise ValueError("GRL classify mode needs >= 2 singers (the `singer` field)")
        return num_singers
    if mode == "regress":
        if not timbre_dim:
            raise ValueError("GRL regress mode needs a timbre module (speaker embedding)")
        return timbre_dim
    raise ValueError(f"adversary.mode must be classify or regress, got {mode!r}")


class Adversary(nn.Module):
    """What both adversary kinds share: the GRL in front, the target, the DANN schedule of the
    reversal strength and the loss weight. Built by `ScorerLitModule.setup` from a Hydra partial
    (conf/train/adversary/*.yaml) once the sizes are known.

    Args:
        in_dim: width of the features it sees (the head's pooled vector minus clip timbre dims).
        num_singers: singer classes in the training data (classify mode).
        timbre_dim: width of the clip timbre embedding (regress mode; 0 = none).
        mode: `classify` singer ids or `regress` to the frozen timbre embedding.
        max_weight, gamma: lambda = max_weight * (2 / (1 + exp(-gamma p)) - 1), p = progress.
        weight: total loss = task + weight * adversary loss (the sign flips inside the GRL only).
        timbre: also see plan B's clip-timbre dims (appended last to the pooled vector); only
            useful when they are trained (`fusion.ProjectedTimbre`), checked at setup.
    """

    # the ridge kind keeps these fixed; the mlp kind takes them from its yaml
    lr_scale: float = 1.0
    orthogonal: bool = False
    reset_every_epochs: int = 0

    def __init__(
        self,
        in_dim: int,
        num_singers: int = 0,
        timbre_dim: int = 0,
        *,
        mode: str,
        max_weight: float,
        gamma: float,
        weight: float,
        timbre: bool = False,
    ) -> None:
        super().__init__()
        self.in_dim, self.mode, self.sees_timbre = int(in_dim), mode, bool(timbre)
        self.out_dim = target_dim(mode, num_singers, timbre_dim)
        self.max_weight, self.gamma, self.weight = float(max_weight), float(gamma), float(weight)
        self.grl = GradientReversal()

    def schedule(self, progress: float) -> float:
        """Set and return the reversal strength for training progress p in [0, 1]."""
        self.grl.lambd = dann_lambda(progress, self.max_weight, self.gamma)
        return self.grl.lambd

    def loss(
        self, x: torch.Tensor, target: torch.Tensor, score: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [B, D], target: singer ids [B] (-1 unknown) or embeddings [B, E], score [B]."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, D] -> predicted targets [B, out] without a graph (val/adv_acc)."""
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Re-initialise trained weights (`reset_every_epochs`); nothing to do without any."""


class SingerAdversary(Adversary):
    """GRL -> (standardise) -> MLP or linear: singer logits [B, C] or a speaker embedding [B, E].

    Args (besides `Adversary`'s):
        hidden_dim: MLP width; 0 makes the adversary linear (the probe's own class).
        dropout: inside the MLP.
        norm: standardise the reversed features per dim (BatchNorm without affine) as the linear
            probe does; without it the encoder can hide singer identity in low-variance dims that
            an unnormalised adversary under-weights but a standardised probe still reads.
        lr_scale: its learning rate relative to the scorer's (a faster learner keeps the reversed
            gradient informative within a short schedule).
        orthogonal: drop the score direction from its input (see `ScorerLitModule.adversary_input`).
        reset_every_epochs: re-initialise it (and its optimizer state) every k epochs; 0 = never.
    """

    def __init__(
        self,
        in_dim: int,
        num_singers: int = 0,
        timbre_dim: int = 0,
        *,
        hidden_dim: int,
        dropout: float,
        norm: bool,
        lr_scale: float,
        orthogonal: bool,
        reset_every_epochs: int,
        **grl: Any,
    ) -> None:
        super().__init__(in_dim, num_singers, timbre_dim, **grl)
        self.lr_scale, self.orthogonal = float(lr_scale), bool(orthogonal)
        self.reset_every_epochs = int(reset_every_epochs)
        self.norm = nn.BatchNorm1d(in_dim, affine=False) if norm else nn.Identity()
        if hidden_dim:
            self.mlp = nn.Sequential(
                nn.Linear(in_dim, hidden_dim),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, self.out_dim),
            )
        else:
            self.mlp = nn.Sequential(nn.Linear(in_dim, self.out_dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(self.grl(pooled)))  # [B, C] or [B, E]

    def loss(
        self, x: torch.Tensor, target: torch.Tensor, score: torch.Tensor | None = None
    ) -> torch.Tensor:
        pred = self(x)
        if self.mode == "regress":
            return nn.functional.mse_loss(pred, target.float())  # [B, E] speaker embedding
        if not bool((target >= 0).any()):
            return pred.sum() * 0.0  # keeps the graph (DDP) without a signal
        return nn.functional.cross_entropy(pred, target, ignore_index=-1)

    @torch.no_grad()
    def predict(self, pooled: torch.Tensor) -> torch.Tensor:
        return self(pooled)

    def reset_parameters(self) -> None:
        """A fresh adversary: the scorer's features must stop identifying singers, not merely
        fool the old one with a relabelling."""
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                m.reset_parameters()


class RidgeAdversary(Adversary):
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

    Args (besides `Adversary`'s):
        bank: detached rows kept from earlier steps (the fit needs more rows than a batch, and
            more than the feature width); None = max(256, 2 * in_dim).
        ridge: penalty on standardised features, as a fraction of the rows.
        condition: residualise on the true score (rows without a score are left out).
    """

    bank_x: torch.Tensor  # [bank, D]
    bank_y: torch.Tensor  # [bank, out]
    bank_s: torch.Tensor  # [bank]

    def __init__(
        self,
        in_dim: int,
        num_singers: int = 0,
        timbre_dim: int = 0,
        *,
        bank: int | None,
        ridge: float,
        condition: bool,
        **grl: Any,
    ) -> None:
        super().__init__(in_dim, num_singers, timbre_dim, **grl)
        self.ridge, self.condition = float(ridge), bool(condition)
        bank = int(bank) if bank else max(256, 2 * in_dim)
        # the bank is working memory, rebuilt within a few steps: not part of checkpoints
        self.register_buffer("bank_x", torch.zeros(bank, in_dim), persistent=False)
        self.register_buffer("bank_y", torch.zeros(bank, self.out_dim), persistent=False)
        self.register_buffer("bank_s", torch.zeros(bank), persistent=False)
        self.filled, self.next = 0, 0  # rows held; the ring position written next

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

    def loss(
        self, x: torch.Tensor, target: torch.Tensor, score: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self(x, target, score)

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
