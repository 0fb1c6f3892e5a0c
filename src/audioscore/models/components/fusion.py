"""Plan B fusion of MuQ with CAM++.

Clip level (the default plan B): `VocalScorer(encoder, head, timbre=CamppEncoder(...))`; the
head concatenates the L2-normalised CAM++ embedding with its pooled MuQ vector. Nothing here
is needed for that.

Frame level (optional): `FrameFusionEncoder` wraps the MuQ encoder and appends projected
CAM++ frame features, resampled from CAM++'s 50 Hz to MuQ's 25 Hz frame grid, to every MuQ
frame. It keeps the encoder contract `forward(wav, lengths) -> (feats [B, F, D'], mask)` and
`out_dim`, so the scorer and head need no change. `build_frame_fusion_encoder` is its config
entry point (`conf/model/hybrid_campp_frame.yaml`): MuQ's arguments stay at `net.encoder`, so
`debug=tiny`, export and `save_full_encoder=false` treat it like the plain MuQ encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from audioscore.models.components.campp import CamppEncoder
from audioscore.models.components.muq_encoder import MuQEncoder
from audioscore.models.components.scorer import encode


def align_frames(frames: torch.Tensor, n_out: int) -> torch.Tensor:
    """[T, C] at one frame rate -> [n_out, C] by linear interpolation over time.

    CAM++ runs at 50 Hz and MuQ at 25 Hz, but their frame counts differ by edge effects
    (Kaldi's snip_edges, MuQ's dropped last mel frame), so we stretch rather than stride.
    """
    if frames.shape[0] == n_out:
        return frames
    x = frames.t().unsqueeze(0)  # [1, C, T]
    return F.interpolate(x, size=n_out, mode="linear", align_corners=False)[0].t()  # [n_out, C]


class FrameFusionEncoder(nn.Module):
    """MuQ frames [B, F, D] ‖ Linear(CAM++ frames aligned to F) [B, F, P] -> [B, F, D + P].

    Args:
        encoder: the MuQ encoder (forward(wav, lengths) -> (feats, mask), `out_dim`).
        campp: a frozen `CamppEncoder` (its `in_sr` must be MuQ's 24 kHz).
        proj_dim: width of the trainable projection of CAM++'s 512-d frame features.
    """

    def __init__(self, encoder: nn.Module, campp: CamppEncoder, proj_dim: int = 64) -> None:
        super().__init__()
        self.encoder = encoder
        self.campp = campp
        self.norm = nn.LayerNorm(campp.frame_dim)  # CAM++ frames are post-ReLU, unbounded
        self.proj = nn.Linear(campp.frame_dim, proj_dim)
        self.out_dim = int(encoder.out_dim) + proj_dim

    # the MuQ encoder's export/checkpoint interface, relative to this module (export_scorer
    # rewrites `pretrained`/`muq_config` at net.encoder, frozen_base_keys drops base weights)
    @property
    def muq(self) -> nn.Module:
        return self.encoder.muq

    @property
    def pretrained(self) -> str | None:
        return getattr(self.encoder, "pretrained", None)

    def base_state_keys(self) -> list[str]:
        base = getattr(self.encoder, "base_state_keys", None)
        return [f"encoder.{k}" for k in base()] if base is not None else []

    @property
    def uses_keys(self) -> bool:
        """Per-clip cache keys help when CAM++ (always frozen) or the wrapped encoder caches."""
        return self.campp.cache is not None or bool(getattr(self.encoder, "uses_keys", False))

    def forward(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor | None = None,
        keys: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """wav [B, T], lengths [B] -> (feats [B, F, D + P], mask [B, F])."""
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], device=wav.device)
        feats, mask = encode(self.encoder, wav, lengths, keys)  # [B, F, D], [B, F]
        B, n_frames, _ = feats.shape
        aligned = torch.zeros(B, n_frames, self.campp.frame_dim, device=feats.device)
        for i, fr in enumerate(self.campp.frame_features(wav, lengths, keys=keys)):
            n_valid = int(mask[i].sum())
            aligned[i, :n_valid] = align_frames(fr, n_valid)  # padded frames stay 0 (masked)
        extra = self.proj(self.norm(aligned)).to(feats.dtype)  # [B, F, P]
        return torch.cat([feats, extra], dim=-1), mask


def build_frame_fusion_encoder(
    campp: CamppEncoder, proj_dim: int = 64, **muq_kwargs: Any
) -> FrameFusionEncoder:
    """Config entry point: `MuQEncoder(**muq_kwargs)` with projected CAM++ frames appended."""
    return FrameFusionEncoder(MuQEncoder(**muq_kwargs), campp, proj_dim=proj_dim)
