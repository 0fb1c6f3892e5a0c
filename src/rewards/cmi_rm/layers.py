"""CMI-RM transformer blocks, laid out so parameter names match the official checkpoint.

Official layout (CMI-RewardBench `muq_mulan/modules/transformer.py`): each layer is
`layers.{i}.0` = attention (`norm.learned_gamma`, `to_q`, `to_kv`, `q_scale`, `k_scale`,
`to_out.0`) and `layers.{i}.1` = feed-forward Sequential (`0.learned_gamma`, `1`, GEGLU, dropout,
`4`). No positional embeddings: attention over a key-masked set is order-free, so where padding
sits inside a sequence does not change the result.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    """Bias-free LayerNorm with a learned gain (`learned_gamma`); beta is a fixed zero buffer."""

    beta: torch.Tensor  # registered buffer

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.learned_gamma = nn.Parameter(torch.ones(dim))
        self.register_buffer("beta", torch.zeros(dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.learned_gamma.to(x.dtype), self.beta.to(x.dtype)
        return F.layer_norm(x, x.shape[-1:], gamma, beta)


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def build_feed_forward(dim: int, mult: int = 4, dropout: float = 0.0) -> nn.Sequential:
    hidden = int(dim * mult * 2 / 3)  # GEGLU halves the width, so 2/3 keeps the parameter count
    return nn.Sequential(
        LayerNorm(dim),
        nn.Linear(dim, hidden * 2, bias=False),
        GEGLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, dim, bias=False),
    )


class Attention(nn.Module):
    """Pre-norm self-attention with l2-normalised, learnably scaled queries and keys."""

    def __init__(
        self, dim: int, dim_head: int = 64, heads: int = 8, dropout: float = 0.0, scale: float = 8
    ):
        super().__init__()
        self.heads, self.scale, self.dropout = heads, scale, dropout
        inner = dim_head * heads
        self.norm = LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape  # [B, N, D]
        x = self.norm(x)
        q = self.to_q(x)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # [B, H, N, d]
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        bias = None
        if mask is not None:
            # additive -1e9 on padded keys, as upstream: exp underflows to exactly 0 in fp32
            bias = ((~mask).to(q.dtype) * -1e9)[:, None, None, :]  # [B, 1, 1, N]
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=drop, scale=self.scale
        )
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class Transformer(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.0,
        ff_mult: int = 4,
        ff_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Attention(dim, dim_head=dim_head, heads=heads, dropout=attn_dropout),
                    build_feed_forward(dim, mult=ff_mult, dropout=ff_dropout),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] == 0:  # an empty prompt stays empty
            return x
        for layer in self.layers:
            attn, ff = cast(nn.ModuleList, layer)  # layers.{i} = [attention, feed-forward]
            x = attn(x, mask=mask) + x
            x = ff(x) + x
        return x


def build_score_head(dim: int, mlp_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, out_dim)
    )
