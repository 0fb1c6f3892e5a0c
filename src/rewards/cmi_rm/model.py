"""`CMIRewardNet`: CMI-RM as a plain nn.Module (frozen MuQ-MuLan towers + the reward head).

Attribute names follow the official `RewardAttentionModel` so `state_dict()` keys match the
released `model.safetensors`: `audio_module.*` / `text_module.*` (MuQ-MuLan towers),
`prompt_transformer`, `joint_transformer`, `score_projector`, `single_score_projector`,
`alignment_head`, `quality_head`, `null_{text,lyrics,audio}_embedding`, `{text,lyrics,eval,ref}_downsampler`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rewards.cmi_rm.config import CMIRMConfig
from rewards.cmi_rm.downsample import build_downsamplers
from rewards.cmi_rm.layers import Transformer, build_score_head

ENCODER_PREFIXES = ("audio_module.", "text_module.")


def load_mulan_towers(
    model_name: str, trust_remote_code: bool = False
) -> tuple[nn.Module, nn.Module]:
    """(audio tower, text tower) of MuQ-MuLan `model_name` (hub id or local dir), loaded without
    running code from its folders unless `trust_remote_code` (`rewards.cmi_rm.towers`)."""
    # heavy (muq pulls torchvision): only when real towers are loaded
    from rewards.cmi_rm.towers import load_mulan_towers as load

    return load(model_name, trust_remote_code)


class CMIRewardNet(nn.Module):
    def __init__(
        self,
        cfg: CMIRMConfig,
        towers: tuple[nn.Module, nn.Module] | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        tf: dict[str, Any] = dict(
            dim_head=cfg.dim_head,
            heads=cfg.heads,
            attn_dropout=cfg.attn_dropout,
            ff_dropout=cfg.ff_dropout,
            ff_mult=cfg.ff_mult,
        )
        self.prompt_transformer = Transformer(dim, cfg.prompt_tf_depth, **tf)
        self.joint_transformer = Transformer(dim, cfg.joint_tf_depth, **tf)
        self.score_projector = build_score_head(dim, cfg.mlp_dim, cfg.output_dim)
        # stored in the released file though unused at inference; kept so loading is strict
        self.single_score_projector = build_score_head(dim, cfg.mlp_dim, 1)
        self.alignment_head = build_score_head(dim, cfg.mlp_dim, 1)
        self.quality_head = build_score_head(dim, cfg.mlp_dim, 1)
        if towers is None:
            towers = load_mulan_towers(cfg.model_name, trust_remote_code)
        audio, text = towers
        self.text_module, self.audio_module = text, audio
        for p in (*text.parameters(), *audio.parameters()):
            p.requires_grad_(False)
        ds = build_downsamplers(cfg.downsample, dim)
        self.text_downsampler, self.lyrics_downsampler = ds["text"], ds["lyrics"]
        self.eval_downsampler, self.ref_downsampler = ds["eval"], ds["ref"]
        n = cfg.null_lengths
        self.null_text_embedding = nn.Parameter(torch.zeros(1, n["text"], dim))
        self.null_lyrics_embedding = nn.Parameter(torch.zeros(1, n["lyrics"], dim))
        self.null_audio_embedding = nn.Parameter(torch.zeros(1, n["audio"], dim))
        self.category_embeddings = nn.ParameterDict()

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen towers: what a CMI-RM checkpoint must contain."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(ENCODER_PREFIXES)}

    def forward(
        self,
        text: torch.Tensor,  # [B, Lt, D] downsampled text tokens
        text_mask: torch.Tensor,  # [B, Lt] bool
        lyrics: torch.Tensor,  # [B, Ll, D]
        lyrics_mask: torch.Tensor,
        ref: torch.Tensor,  # [B, Lr, D] downsampled reference frames (Lr may be 0)
        ref_mask: torch.Tensor,
        frames: torch.Tensor,  # [B, T, D] downsampled eval frames
        frames_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Scores [B, output_dim]: column 0 alignment, column 1 musicality (upstream `forward_raw_text`)."""
        dtype = next(self.score_projector.parameters()).dtype  # the head's (maybe half) dtype
        parts = [text, ref] if self.cfg.mode == "text_only" else [text, lyrics, ref]
        masks = (
            [text_mask, ref_mask]
            if self.cfg.mode == "text_only"
            else [text_mask, lyrics_mask, ref_mask]
        )
        prompt = torch.cat([p.to(dtype) for p in parts], dim=1)  # [B, Lp, D]
        prompt_mask = torch.cat(masks, dim=1)
        prompt = self.prompt_transformer(prompt, mask=prompt_mask)
        joint = torch.cat([prompt, frames.to(dtype)], dim=1)  # [B, Lp + T, D]
        joint_mask = torch.cat([prompt_mask, frames_mask], dim=1)
        out = self.joint_transformer(joint, mask=joint_mask)[:, prompt.shape[1] :]  # [B, T, D]
        m = frames_mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)  # [B, D]
        return self.score_projector(pooled)
