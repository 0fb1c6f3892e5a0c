"""VocalScorer: encoder -> (optional timbre branch) -> head; the net that gets exported."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class VocalScorer(nn.Module):
    """wav [B, T] at 24 kHz + lengths [B] -> {"score": [B], "pooled": [B, P]}.

    Args:
        encoder: `MuQEncoder`-like: forward(wav, lengths) -> (feats [B, F, D], mask [B, F]),
            with `out_dim`. An encoder whose `uses_keys` is true also gets the batch's per-clip
            cache keys as forward(wav, lengths, keys=...) (a frozen, cached encoder).
        head: an `nn.Module` or a factory `head(in_dim=..., extra_dim=...)` (Hydra `_partial_`),
            so the head's input sizes follow the encoder and timbre branch.
        timbre: optional module with `out_dim` and forward(wav, lengths, keys=None) -> [B, E];
            its output is concatenated with the head's pooled vector before the final projection.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module | Callable[..., nn.Module],
        timbre: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.timbre = timbre
        extra = int(getattr(timbre, "out_dim", 0)) if timbre is not None else 0
        if not isinstance(head, nn.Module):
            head = head(in_dim=encoder.out_dim, extra_dim=extra)
        self.head = head
        self.pooled_dim = int(head.pooled_dim)

    def forward(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor | None = None,
        keys: list[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
        feats, mask = encode(self.encoder, wav, lengths, keys)  # [B, F, D], [B, F]
        extra = None
        if self.timbre is not None:
            extra = self.timbre(wav, lengths, keys=keys)  # [B, E]
        pooled = self.head.pool(feats, mask, extra)  # [B, P]
        score = self.head.project(pooled)  # [B]
        out = {"score": score.float(), "pooled": pooled}
        if extra is not None:
            out["timbre"] = extra
        return out


def encode(
    encoder: nn.Module,
    wav: torch.Tensor,
    lengths: torch.Tensor,
    keys: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """encoder(wav, lengths) -> (feats [B, F, D], mask [B, F]); the per-clip cache keys go along
    only to an encoder whose `uses_keys` is true (others would ignore them or not take them)."""
    if keys is not None and getattr(encoder, "uses_keys", False):
        return encoder(wav, lengths, keys=keys)
    return encoder(wav, lengths)


def frozen_base_keys(net: nn.Module, prefix: str = "") -> list[str]:
    """Keys of pretrained encoder weights that can be rebuilt from the encoder's `pretrained`."""
    enc = getattr(net, "encoder", None)
    if (
        enc is None
        or getattr(enc, "pretrained", None) is None
        or not hasattr(enc, "base_state_keys")
    ):
        return []
    return [f"{prefix}encoder.{k}" for k in enc.base_state_keys()]
