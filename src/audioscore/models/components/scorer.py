"""VocalScorer: encoder (+ frame timbre) -> head (+ clip timbre); the net that gets exported."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from audiobase.songeval_head import SongEvalHead
from audioscore.models.components.fusion import FrameTimbre
from audioscore.models.components.protocols import ClipEncoder, Encoder, Pretrained


class VocalScorer(nn.Module):
    """wav [B, T] at 24 kHz + lengths [B] -> {"score": [B], "pooled": [B, P]} (+ "timbre" [B, E]).

    Args:
        encoder: an `Encoder` (forward(wav, lengths, keys=None) -> (feats [B, F, D], mask [B, F]),
            `out_dim`); it gets the batch's per-clip cache keys only when its `uses_keys` is true.
        head: a `SongEvalHead` or a factory `head(in_dim=..., extra_dim=...)` (Hydra
            `_partial_`), so the head's input sizes follow the encoder and the timbre branches.
        timbre: optional `ClipEncoder` (e.g. CAM++): [B, E] per clip, concatenated with the
            head's pooled vector before the projection.
        frame_timbre: optional `FrameTimbre`: [B, F, P] appended to every encoder frame.
    """

    def __init__(
        self,
        encoder: Encoder,
        head: SongEvalHead | Callable[..., SongEvalHead],
        timbre: ClipEncoder | None = None,
        frame_timbre: FrameTimbre | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, Encoder):
            raise TypeError(f"{type(encoder).__name__} does not implement the Encoder protocol")
        self.encoder: Encoder = encoder
        self.timbre: ClipEncoder | None = timbre
        self.frame_timbre: FrameTimbre | None = frame_timbre
        if not isinstance(head, SongEvalHead):
            in_dim = encoder.out_dim + (frame_timbre.out_dim if frame_timbre is not None else 0)
            head = head(in_dim=in_dim, extra_dim=timbre.out_dim if timbre is not None else 0)
        self.head: SongEvalHead = head
        self.pooled_dim = head.pooled_dim

    def forward(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor | None = None,
        keys: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
        if keys is not None and self.encoder.uses_keys:
            feats, mask = self.encoder(wav, lengths, keys=keys)  # [B, F, D], [B, F]
        else:
            feats, mask = self.encoder(wav, lengths)
        if self.frame_timbre is not None:
            frames = self.frame_timbre(wav, lengths, mask, keys=keys)  # [B, F, P]
            feats = torch.cat([feats, frames.to(feats.dtype)], dim=-1)  # [B, F, D + P]
        extra = None
        if self.timbre is not None:
            extra = self.timbre(wav, lengths, keys=keys)  # [B, E]
        pooled = self.head.pool(feats, mask, extra)  # [B, P]
        score = self.head.project(pooled)  # [B]
        out = {"score": score.float(), "pooled": pooled}
        if extra is not None:
            out["timbre"] = extra
        return out


def pretrained_modules(net: nn.Module) -> dict[str, Pretrained]:
    """Outermost modules implementing `Pretrained`, by attribute path ("encoder", "timbre", ...)."""
    found: dict[str, Pretrained] = {}
    for name, module in net.named_modules():
        if name and isinstance(module, Pretrained):
            if not any(name.startswith(f"{outer}.") for outer in found):
                found[name] = module
    return found


def frozen_base_keys(net: nn.Module, prefix: str = "") -> list[str]:
    """Keys of pretrained weights that the components' own sources rebuild
    (`save_full_encoder=false` leaves them out of checkpoints and exports)."""
    return [
        f"{prefix}{path}.{k}"
        for path, module in pretrained_modules(net).items()
        for k in module.base_state_keys()
    ]
