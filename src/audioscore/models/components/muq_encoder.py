"""MuQ backbone tapped at one hidden layer, optionally truncated, with LoRA adapters (peft).

Real weights come through `MuQ.from_pretrained(hub id or local dir)`; tests use a tiny random
MuQ saved with `build_tiny_muq_dir` and loaded through that same call.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

MUQ_SR = 24_000
DEFAULT_PRETRAINED = "OpenMuQ/MuQ-large-msd-iter"
DEFAULT_LORA_TARGETS = ("linear_q", "linear_k", "linear_v", "linear_out")
# MuQ recipe statistics for the normalised log-mel (global scalars)
MEL_MEAN, MEL_STD = 6.768444971712967, 18.417922652295623


def tiny_muq_config(dim: int = 32, depth: int = 2, heads: int = 2, ffn: int = 64) -> dict:
    """A MuQ config of a few hundred thousand parameters that builds and runs offline."""
    from transformers import Wav2Vec2ConformerConfig

    w2v2 = Wav2Vec2ConformerConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=ffn,
        conv_depthwise_kernel_size=7,
        position_embeddings_type="rotary",
        hidden_act="swish",
        layerdrop=0.0,  # the Wav2Vec2ConformerConfig default 0.1 would skip layers
    )
    # to_dict() keeps int keys in id2label, which EasyDict rejects; the JSON round trip fixes that
    w2v2_dict = json.loads(w2v2.to_json_string(use_diff=False))
    return {
        "conv_dim": 8,
        "encoder_dim": dim,
        "encoder_depth": depth,
        "codebook_size": 16,
        "stat": {"melspec_2048_mean": MEL_MEAN, "melspec_2048_std": MEL_STD},
        "w2v2_config": w2v2_dict,
    }


def build_tiny_muq_dir(path: str | os.PathLike, seed: int = 0, **kw: Any) -> Path:
    """Save a tiny random MuQ with `save_pretrained`, loadable by `MuQ.from_pretrained(path)`."""
    from muq import MuQ

    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MuQ(tiny_muq_config(**kw))
    # write-then-rename so a concurrent reader never sees a half-written directory
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    try:
        os.replace(tmp, path)
    except OSError:  # `path` exists as a non-empty dir (e.g. another process won the race)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / "config.json").exists():
            model.save_pretrained(path)
    return path


def load_muq(
    pretrained: str | None, muq_config: dict | str | None = None, seed: int = 0
) -> nn.Module:
    """MuQ from a hub id / local dir (the user's path) or, with `pretrained=None`, random init."""
    from muq import MuQ

    if pretrained is not None:
        return MuQ.from_pretrained(str(pretrained))
    if muq_config is None:
        raise ValueError("MuQEncoder needs `pretrained` (hub id or dir) or `muq_config`")
    if muq_config == "tiny":
        muq_config = tiny_muq_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MuQ(copy.deepcopy(dict(muq_config)))


def muq_config_dict(muq: nn.Module) -> dict:
    """The MuQConfig of a loaded model as a plain dict (stored by full-encoder exports)."""
    from dataclasses import asdict, is_dataclass

    cfg = muq.config
    return asdict(cfg) if is_dataclass(cfg) else dict(cfg)


class MuQEncoder(nn.Module):
    """Waveform [B, T] at 24 kHz -> MuQ hidden layer `layer` [B, F, D] at 25 Hz plus frame mask.

    Args:
        pretrained: hub id or local directory for `MuQ.from_pretrained`; None = random init from
            `muq_config` (a MuQConfig dict, or "tiny" for `tiny_muq_config()`).
        layer: hidden-state index (0 = conv stem, k = output of conformer layer k).
        truncate: drop conformer layers above `layer` (same output, less compute).
        lora: None (frozen backbone) or dict(r, alpha, dropout, target_modules).
        train_backbone: also fine-tune the base weights (default False: only LoRA trains).
    """

    def __init__(
        self,
        pretrained: str | None = DEFAULT_PRETRAINED,
        layer: int = 6,
        truncate: bool = True,
        lora: dict | None = None,
        muq_config: dict | str | None = None,
        seed: int = 0,
        train_backbone: bool = False,
    ) -> None:
        super().__init__()
        self.pretrained = pretrained
        self.train_backbone = train_backbone
        self.muq = load_muq(pretrained, muq_config, seed)
        conformer = self.muq.model.conformer
        depth = len(conformer.layers)
        if not 0 <= layer <= depth:
            raise ValueError(f"layer={layer} outside 0..{depth} for this MuQ")
        self.layer = layer
        if truncate and layer < depth:
            conformer.layers = conformer.layers[:layer]
            # the final layer_norm would otherwise be applied to layer k's output
            conformer.layer_norm = nn.Identity()
            self.tap = -1
        else:
            self.tap = layer
        self.out_dim = int(self.muq.config.encoder_dim)
        self.has_lora = bool(lora)
        for p in self.muq.parameters():
            p.requires_grad_(train_backbone)
        if lora:
            self._inject_lora(**lora)
        self.muq.eval()

    def _inject_lora(
        self,
        r: int = 16,
        alpha: float = 32,
        dropout: float = 0.0,
        target_modules: list[str] | tuple[str, ...] = DEFAULT_LORA_TARGETS,
    ) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        cfg = LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules)
        )
        try:
            inject_adapter_in_model(cfg, self.muq)
        except ValueError as e:  # peft's NoMatchingPeftModuleError
            raise ValueError(
                f"LoRA targets {list(target_modules)} match no module of MuQ up to layer "
                f"{self.layer}: {e}"
            ) from e
        for name, p in self.muq.named_parameters():
            if "lora_" in name:
                p.requires_grad_(self._layer_used(name))

    def _layer_used(self, name: str) -> bool:
        """LoRA above the tapped layer cannot change the output: keep it frozen (DDP-safe)."""
        marker = "conformer.layers."
        if marker not in name:
            return True
        idx = int(name.split(marker, 1)[1].split(".", 1)[0])
        return idx < self.layer

    def train(self, mode: bool = True) -> MuQEncoder:
        # BatchNorm stats, dropout and layerdrop of the backbone stay in eval; only LoRA dropout trains
        super().train(mode)
        self.muq.eval()
        for name, m in self.muq.named_modules():
            if name.endswith("lora_dropout") or ".lora_dropout." in name:
                m.train(mode)
        return self

    def base_state_keys(self) -> list[str]:
        """state_dict keys of frozen pretrained weights (not LoRA), relative to this module."""
        if self.train_backbone:
            return []
        return [k for k in self.state_dict() if k.startswith("muq.") and "lora_" not in k]

    @staticmethod
    def frame_lengths(lengths: torch.Tensor, n_samples: int, n_frames: int) -> torch.Tensor:
        """Valid frames per clip, using MuQ's own sample->frame mask striding."""
        stride = max(1, int(n_samples / max(n_frames, 1)))
        return torch.clamp((lengths + stride - 1) // stride, min=1, max=n_frames)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """wav [B, T] float, lengths [B] samples -> (features [B, F, D], frame mask [B, F] bool)."""
        B, T = wav.shape
        attn = None
        if lengths is not None and bool((lengths < T).any()):
            attn = torch.arange(T, device=wav.device)[None, :] < lengths[:, None]  # [B, T]
        out = self.muq(wav.float(), attention_mask=attn, output_hidden_states=True)
        feats = out.hidden_states[self.tap]  # [B, F, D]
        F = feats.shape[1]
        if lengths is None:
            lengths = torch.full((B,), T, device=wav.device, dtype=torch.long)
        n_valid = self.frame_lengths(lengths.to(wav.device), T, F)
        mask = torch.arange(F, device=wav.device)[None, :] < n_valid[:, None]  # [B, F]
        return feats, mask
