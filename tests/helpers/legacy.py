"""The original scorer's checkpoint format, written from scratch, and its forward computed
independently of the project's modules (LoRA merged by hand, MuQ's own hidden_states[6], the
SongEval head in plain tensor operations)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch

ADAPTER = "audio_lora"  # the original's peft adapter name
TARGETS = ("linear_q", "linear_k", "linear_v", "linear_out")


def write_legacy_checkpoint(
    path: Path,
    *,
    dim: int,
    depth: int,
    r: int = 128,
    alpha: float = 48,
    hidden: int = 4096,
    attn_layers: int = 4,
    kind: str = "SongEvalGenerator_audio_lora",
    grl: bool = False,
    seed: int = 0,
) -> Path:
    """A random checkpoint in the original's layout: `weights.pt` (SongEval head, `fc` [5, 2D];
    + `speaker_discriminator.*` with `grl`), `muq_lora.pt` (lora_A/lora_B/scaling per attention
    Linear of every layer, non-zero B) and `type.txt`."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    head: dict[str, torch.Tensor] = {}
    for i in range(attn_layers):  # nn.MultiheadAttention's names
        head[f"attn.{i}.in_proj_weight"] = rand(3 * dim, dim, scale=dim**-0.5)
        head[f"attn.{i}.in_proj_bias"] = rand(3 * dim, scale=0.02)
        head[f"attn.{i}.out_proj.weight"] = rand(dim, dim, scale=dim**-0.5)
        head[f"attn.{i}.out_proj.bias"] = rand(dim, scale=0.02)
    head["ffd.0.weight"] = rand(hidden, dim, scale=dim**-0.5)
    head["ffd.0.bias"] = rand(hidden, scale=0.02)
    head["ffd.2.weight"] = rand(dim, hidden, scale=hidden**-0.5)
    head["ffd.2.bias"] = rand(dim, scale=0.02)
    head["fc.weight"] = rand(5, 2 * dim, scale=(2 * dim) ** -0.5)
    head["fc.bias"] = rand(5, scale=0.1)
    if grl:
        head["speaker_discriminator.0.weight"] = rand(512, 2 * dim, scale=0.02)
        head["speaker_discriminator.0.bias"] = rand(512, scale=0.02)
        head["speaker_discriminator.3.weight"] = rand(256, 512, scale=0.02)
        head["speaker_discriminator.3.bias"] = rand(256, scale=0.02)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(head, path / "weights.pt")
    if kind == "SongEvalGenerator_audio_lora":
        lora: dict[str, torch.Tensor] = {}
        for layer in range(depth):
            for t in TARGETS:
                name = f"model.conformer.layers.{layer}.self_attn.{t}.{ADAPTER}"
                lora[f"{name}.lora_A"] = rand(r, dim, scale=dim**-0.5)
                lora[f"{name}.lora_B"] = rand(dim, r, scale=0.5 * r**-0.5)  # trained: non-zero
                lora[f"{name}.scaling"] = torch.tensor(alpha / r)
        torch.save(lora, path / "muq_lora.pt")
    (path / "type.txt").write_text(kind)
    return path


def merge_lora(muq: Any, ckpt: Path) -> Any:
    """A copy of `muq` (muq's MuQ) with the checkpoint's LoRA merged: W += scaling * B @ A."""
    merged = copy.deepcopy(muq)
    lora_file = ckpt / "muq_lora.pt"
    if not lora_file.exists():
        return merged
    sd = torch.load(lora_file, map_location="cpu", weights_only=True)
    with torch.no_grad():
        for key in sd:
            if not key.endswith(".lora_A"):
                continue
            module = key[: -len(f".{ADAPTER}.lora_A")]
            prefix = key[: -len(".lora_A")]
            linear = merged.get_submodule(module)
            a, b, s = sd[f"{prefix}.lora_A"], sd[f"{prefix}.lora_B"], float(sd[f"{prefix}.scaling"])
            linear.weight += s * (b @ a)
    return merged


def songeval_logits(head: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
    """SongEval's Generator in eval mode, in float64 tensor operations: feats [T, D] -> [5]
    (before its tanh)."""
    h = {k: v.double() for k, v in head.items()}
    x = feats.double()
    ffd = torch.relu(x @ h["ffd.0.weight"].T + h["ffd.0.bias"]) @ h["ffd.2.weight"].T
    ffd = ffd + h["ffd.2.bias"]  # [T, D]
    a = ffd
    n_heads, (T, D) = 8, ffd.shape
    n_attn = len({k.split(".")[1] for k in h if k.startswith("attn.")})
    for i in range(n_attn):
        qkv = a @ h[f"attn.{i}.in_proj_weight"].T + h[f"attn.{i}.in_proj_bias"]  # [T, 3D]
        q, k, v = (t.reshape(T, n_heads, D // n_heads).transpose(0, 1) for t in qkv.chunk(3, -1))
        w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(D // n_heads), dim=-1)  # [H, T, T]
        o = (w @ v).transpose(0, 1).reshape(T, D)
        a = o @ h[f"attn.{i}.out_proj.weight"].T + h[f"attn.{i}.out_proj.bias"]
    pooled = torch.cat([a.mean(0), ffd.max(0).values])  # [2D]
    return pooled @ h["fc.weight"].T + h["fc.bias"]  # [5]


@torch.no_grad()
def original_logit(muq: Any, ckpt: Path, wav: torch.Tensor) -> float:
    """The original's musicality logit l for one clip wav [T] at 24 kHz (it prints
    5 - (2 tanh(l) + 3)): LoRA merged into `muq`, its hidden_states[6], SongEval's head, column 1."""
    merged = merge_lora(muq, ckpt).eval()
    feats = merged(wav[None].float(), output_hidden_states=True).hidden_states[6][0]  # [T', D]
    head = torch.load(ckpt / "weights.pt", map_location="cpu", weights_only=True)
    return float(songeval_logits(head, feats)[1])
