"""Plan B fusion of MuQ with CAM++.

Clip level (the default plan B): `VocalScorer(encoder, head, timbre=CamppEncoder(...))`; the
head concatenates the L2-normalised CAM++ embedding with its pooled MuQ vector. Nothing here
is needed for that.

Frame level (optional): `VocalScorer(encoder, head, frame_timbre=FrameTimbre(campp, proj_dim))`
appends projected CAM++ frame features, resampled from CAM++'s 50 Hz to MuQ's 25 Hz frame grid,
to every MuQ frame before the head. MuQ stays at `net.encoder` and CAM++ sits at
`net.frame_timbre.campp`, the same paths as in the config (`conf/train/model/hybrid_campp_frame.yaml`),
so `debug=tiny`, export and `save_full_encoder=false` treat MuQ as in plan A.

Projected clip timbre (optional): `VocalScorer(encoder, head, timbre=ProjectedTimbre(campp, P))`
puts a trainable LayerNorm + Linear after the frozen CAM++ embedding (config
`conf/train/model/hybrid_campp_proj.yaml`, CAM++ at `net.timbre.encoder`). The GRL singer adversary
can then act on the timbre dims too (`model.adversary.timbre=true`, experiment
`hybrid_campp_proj_grl`): on frozen dims a reversed gradient has nothing to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from audioscore.models.components.campp import CamppEncoder
from audioscore.models.components.protocols import ClipEncoder


def align_frames(frames: torch.Tensor, n_out: int) -> torch.Tensor:
    """[T, C] at one frame rate -> [n_out, C] by linear interpolation over time.

    CAM++ runs at 50 Hz and MuQ at 25 Hz, but their frame counts differ by edge effects
    (Kaldi's snip_edges, MuQ's dropped last mel frame), so we stretch rather than stride.
    """
    if frames.shape[0] == n_out:
        return frames
    x = frames.t().unsqueeze(0)  # [1, C, T]
    return F.interpolate(x, size=n_out, mode="linear", align_corners=False)[0].t()  # [n_out, C]


class FrameTimbre(nn.Module):
    """Frozen CAM++ frames aligned to the encoder's F frames -> LayerNorm -> Linear: [B, F, P].

    Args:
        campp: a frozen `CamppEncoder` (its `in_sr` must be MuQ's 24 kHz).
        proj_dim: width of the trainable projection of CAM++'s frame features (512-d released).
    """

    def __init__(self, campp: CamppEncoder, proj_dim: int) -> None:
        super().__init__()
        self.campp = campp
        self.norm = nn.LayerNorm(campp.frame_dim)  # CAM++ frames are post-ReLU, unbounded
        self.proj = nn.Linear(campp.frame_dim, proj_dim)
        self.out_dim = int(proj_dim)

    def forward(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor,
        mask: torch.Tensor,
        keys: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """wav [B, T], lengths [B], the encoder's frame mask [B, F] -> features [B, F, P]."""
        B, n_frames = mask.shape
        aligned = torch.zeros(B, n_frames, self.campp.frame_dim, device=mask.device)  # [B, F, C]
        for i, fr in enumerate(self.campp.frame_features(wav, lengths, keys=keys)):
            n_valid = int(mask[i].sum())
            aligned[i, :n_valid] = align_frames(fr, n_valid)  # padded frames stay 0 (masked)
        return self.proj(self.norm(aligned))  # [B, F, P]


class ProjectedTimbre(nn.Module):
    """A frozen clip-timbre encoder (CAM++) -> LayerNorm -> Linear: [B, P], trainable after the
    encoder, so a singer adversary behind a GRL can make these dims singer-blind.

    Args:
        encoder: a frozen `ClipEncoder` (e.g. `CamppEncoder`), at `net.timbre.encoder`.
        proj_dim: width of the projection (the head's `extra_dim`).
    """

    def __init__(self, encoder: nn.Module, proj_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        in_dim = int(cast(ClipEncoder, encoder).out_dim)
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, proj_dim)
        self.out_dim = int(proj_dim)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str] | None = None
    ) -> torch.Tensor:
        """wav [B, T], lengths [B] -> [B, P]."""
        emb = self.encoder(wav, lengths, keys=keys)  # [B, E]
        return self.proj(self.norm(emb.float()))
