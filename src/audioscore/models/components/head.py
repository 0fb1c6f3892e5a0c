"""SongEval-style scorer head with a padding mask: frame MLP, attention, mean+max pooling."""

from __future__ import annotations

import torch
from torch import nn


class SongEvalHead(nn.Module):
    """Frame features [B, F, D] + mask [B, F] -> one score per clip [B] (higher is better).

    Layout follows SongEval's `Generator` (ffd -> chained attention -> concat(mean(attn), max(ffd))
    -> dropout -> fc), but padded frames are masked in attention and in both poolings, so a clip
    scores the same alone or padded inside a batch. `extra_dim` features (e.g. a timbre embedding)
    are concatenated with the pooled vector before the final projection.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 4096,
        attn_layers: int = 4,
        heads: int = 8,
        dropout: float = 0.2,
        extra_dim: int = 0,
    ) -> None:
        super().__init__()
        self.ffd = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, in_dim)
        )
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(in_dim, heads, dropout=dropout, batch_first=True)
            for _ in range(attn_layers)
        )
        self.pooled_dim = 2 * in_dim + extra_dim
        self.extra_dim = extra_dim
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.pooled_dim, 1)

    def pool(
        self, feats: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """feats [B, F, D], mask [B, F] bool (True = valid) -> pooled [B, 2D (+E)]."""
        h = self.ffd(feats)  # [B, F, D]
        a = h
        for layer in self.attn:
            a, _ = layer(a, a, a, key_padding_mask=~mask, need_weights=False)  # [B, F, D]
        m = mask.unsqueeze(-1).to(a.dtype)  # [B, F, 1]
        mean = (a * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B, D]
        mx = h.masked_fill(~mask.unsqueeze(-1), torch.finfo(h.dtype).min).amax(1)  # [B, D]
        pooled = torch.cat([mean, mx], dim=-1)  # [B, 2D]
        if self.extra_dim:
            if extra is None or extra.shape[-1] != self.extra_dim:
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(f"head expects extra features [B, {self.extra_dim}], got {got}")
            pooled = torch.cat([pooled, extra.to(pooled.dtype)], dim=-1)  # [B, 2D + E]
        return pooled

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled [B, P] -> score [B]."""
        return self.fc(self.dropout(pooled)).squeeze(-1)

    def forward(
        self, feats: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.project(self.pool(feats, mask, extra))
