"""Frame- and token-level outputs of the `muq` MuQ-MuLan towers, with padding masks.

`muq` 0.1.0's towers only return pooled or unmasked outputs; CMI-RM needs per-frame/per-token
embeddings with masks (upstream patched the towers for it). These functions call the towers'
own submodules the same way the patched towers do. The towers are typed `Any`: `muq` ships no
types, and their submodules (`model`, `proj`, `tokenizer`, ...) are reached by name.

`encode_audio_frames` is upstream's padded forward (MuQ sees the padding: `upstream_compat`);
`encode_audio_frames_exact` batches unequal lengths so that each gets its frames alone.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from audiobase.muq_padded import muq_padded_hidden

_TOKENIZER_LOCK = threading.Lock()


@torch.no_grad()
def encode_audio_frames(
    audio_module: Any, wavs: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """wavs [B, N] at 24 kHz (mask [B, N] True = real sample) -> frames [B, T, D], mask [B, T]."""
    attn = mask.long() if mask is not None else None
    out = audio_module.model(wavs, attention_mask=attn, output_hidden_states=True)
    hidden = out.hidden_states[audio_module.use_layer_idx]  # [B, T, model_dim], 25 Hz
    t = hidden.shape[1]
    if mask is None:
        frame_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    else:
        # upstream's rule: take every skip_n-th sample flag, skip_n = samples per frame (floored)
        skip = max(1, int(mask.shape[-1] / t))
        frame_mask = mask.bool()[:, ::skip][:, :t]
    frames = audio_module.proj(hidden)
    frames = audio_module.transformer(frames, mask=frame_mask)
    return frames, frame_mask


@torch.no_grad()
def encode_audio_frames_exact(
    audio_module: Any, wavs: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """wavs [B, N] at 24 kHz, zero-padded, lengths [B] samples -> frames [B, T, D], mask [B, T];
    each clip's valid frames equal what it gets encoded alone (`muq_padded`)."""
    hidden, frame_mask = muq_padded_hidden(
        audio_module.model, wavs, lengths, audio_module.use_layer_idx
    )  # [B, T, model_dim], 25 Hz
    frames = audio_module.transformer(audio_module.proj(hidden), mask=frame_mask)
    return frames, frame_mask


@torch.no_grad()
def encode_text_tokens(text_module: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Strings -> tokens [B, L, D] and mask [B, L]; XLM-R input truncated to 512 tokens as upstream."""
    max_len = min(int(text_module.max_seq_len), 512)
    with _TOKENIZER_LOCK:  # a fast tokenizer re-sets its padding state per call: one at a time
        tok = text_module.tokenizer(
            list(texts),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max_len,
            return_token_type_ids=False,
        )
    tok = tok.to(text_module.device)
    hidden = text_module.pred_pretrained_model_hidden(**tok)  # [B, L, model_dim]
    mask = tok["attention_mask"].bool()
    tokens = text_module.transformer(text_module.proj(hidden), mask=mask)
    return tokens, mask
