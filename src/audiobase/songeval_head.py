"""SongEval-style scorer head with a padding mask: frame MLP, attention, mean+max pooling.

Shared by the trainer (the scorer's head) and the SongEval reward model (SongEval's own head).

The module names and shapes are SongEval's (`ASLP-lab/SongEval` `model.py` `Generator`), so its
released head (`ckpt/model.safetensors`) loads strictly: `init="songeval:PATH[#dimension]"`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from audiobase.weights_listing import state_problems

# SongEval's five outputs, in the order of its `fc` rows (eval.py)
SONGEVAL_DIMENSIONS = ("coherence", "musicality", "memorability", "clarity", "naturalness")
SONGEVAL_SCHEME = "songeval:"
SONGEVAL_WEIGHTS = Path("ckpt") / "model.safetensors"  # inside a clone of the SongEval repo
SONGEVAL_HEADS = 8  # SongEval's Generator hard-codes num_heads=8 (not visible in the weights)


class HeadInitError(ValueError):
    """A head `init` source that cannot start this head: bad spec, unreadable file, wrong keys."""


class SongEvalHead(nn.Module):
    """Frame features [B, F, D] + mask [B, F] -> scores [B] (or [B, out_dim]), higher is better.

    Layout follows SongEval's `Generator` (ffd -> chained attention -> concat(mean(attn), max(ffd))
    -> dropout -> fc), but padded frames are masked in attention and in both poolings, so a clip
    scores the same alone or padded inside a batch. `extra_dim` features (e.g. a timbre embedding)
    are concatenated with the pooled vector before the final projection. The output is `fc`'s
    value (SongEval's score before its `tanh(x) * 2 + 3`, same order).

    Args:
        init: None (random init) or `songeval:PATH[#dimension]`: start from SongEval's released
            head (PATH = its `model.safetensors` or a SongEval clone). `fc` takes the rows of
            the chosen dimension(s): a name of `SONGEVAL_DIMENSIONS` or an index, `all` for the
            five; default musicality (out_dim 1) or all (out_dim 5). Columns for `extra_dim`
            start at zero. Any key or shape mismatch is a `HeadInitError` naming the keys.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 4096,
        attn_layers: int = 4,
        heads: int = 8,
        dropout: float = 0.2,
        extra_dim: int = 0,
        out_dim: int = 1,
        init: str | None = None,
    ) -> None:
        super().__init__()
        self.init_args = {
            "in_dim": in_dim,
            "hidden_dim": hidden_dim,
            "attn_layers": attn_layers,
            "heads": heads,
            "dropout": dropout,
            "extra_dim": extra_dim,
            "out_dim": out_dim,
        }
        self.ffd = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, in_dim)
        )
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(in_dim, heads, dropout=dropout, batch_first=True)
            for _ in range(attn_layers)
        )
        self.pooled_dim = 2 * in_dim + extra_dim
        self.extra_dim = extra_dim
        self.out_dim = out_dim
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.pooled_dim, out_dim)
        if init is not None:
            path, dims = parse_init(init, out_dim)
            load_songeval_head(self, path, dims)

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
        """pooled [B, P] -> score [B] (out_dim 1) or [B, out_dim]."""
        y = self.fc(self.dropout(pooled))  # [B, out_dim]
        return y.squeeze(-1) if self.out_dim == 1 else y

    def forward(
        self, feats: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.project(self.pool(feats, mask, extra))

    # ---- Pretrained protocol (export): the weights travel in the state dict, not `init` ------
    def standalone_config(self) -> dict[str, Any]:
        """This head's full architecture with no `init` source (an export carries the weights)."""
        return {"_target_": f"{SongEvalHead.__module__}.SongEvalHead", **self.init_args}

    def base_state_keys(self) -> list[str]:
        """Nothing is rebuilt from `init` at load time: every head weight is exported."""
        return []


def parse_init(spec: str, out_dim: int = 1) -> tuple[Path, list[int]]:
    """`songeval:PATH[#dimension]` -> (weights file, SongEval output rows for `fc`)."""
    if not isinstance(spec, str) or not spec.startswith(SONGEVAL_SCHEME):
        raise HeadInitError(f"head init {spec!r}: expected 'songeval:PATH[#dimension]'")
    rest = spec[len(SONGEVAL_SCHEME) :]
    path, _, dim = rest.partition("#")
    if not path:
        raise HeadInitError(f"head init {spec!r}: no path after 'songeval:'")
    default = "all" if out_dim == len(SONGEVAL_DIMENSIONS) else "musicality"
    rows = dimension_rows(dim or default)
    if len(rows) != out_dim:
        raise HeadInitError(
            f"head init {spec!r}: {len(rows)} SongEval dimension(s) for a head with "
            f"out_dim={out_dim}; pick one of {list(SONGEVAL_DIMENSIONS)}"
        )
    return songeval_weights(path), rows


def dimension_rows(dim: str | int) -> list[int]:
    """SongEval output rows for a dimension name, an index 0-4, or `all`."""
    key = str(dim).strip().lower()
    if key == "all":
        return list(range(len(SONGEVAL_DIMENSIONS)))
    if key in SONGEVAL_DIMENSIONS:
        return [SONGEVAL_DIMENSIONS.index(key)]
    if key.isdigit() and int(key) < len(SONGEVAL_DIMENSIONS):
        return [int(key)]
    raise HeadInitError(
        f"unknown SongEval dimension {dim!r}; known: {list(SONGEVAL_DIMENSIONS)}, 0-4 or all"
    )


def songeval_weights(path: str | os.PathLike) -> Path:
    """SongEval's head weights: the `.safetensors` file itself or a SongEval clone's
    `ckpt/model.safetensors`."""
    p = Path(path)
    for cand in (p, p / SONGEVAL_WEIGHTS, p / SONGEVAL_WEIGHTS.name):
        if cand.is_file():
            return cand
    raise HeadInitError(
        f"{p}: no SongEval head weights (a .safetensors file or {SONGEVAL_WEIGHTS})"
    )


def songeval_state_dict(
    head: SongEvalHead, src: Mapping[str, torch.Tensor], rows: list[int], name: str = "<state>"
) -> dict[str, torch.Tensor]:
    """SongEval's head state dict (`fc` [5, 2D]) -> `head`'s (`fc` [len(rows), 2D + E]).

    Every other key must match `head`'s name and shape; `fc` keeps the chosen rows and zeros
    for `head`'s extra columns. Raises `HeadInitError` naming every missing, unexpected or
    mis-shaped key.
    """
    own = head.state_dict()
    n_out = len(SONGEVAL_DIMENSIONS)
    two_d = head.pooled_dim - head.extra_dim
    want = {k: tuple(v.shape) for k, v in own.items()}
    want["fc.weight"], want["fc.bias"] = (n_out, two_d), (n_out,)
    missing = sorted(want.keys() - src.keys())
    unexpected = sorted(src.keys() - want.keys())
    mismatched = sorted(
        f"{k} (file {tuple(src[k].shape)}, head {want[k]})"
        for k in src.keys() & want.keys()
        if tuple(src[k].shape) != want[k]
    )
    problems = state_problems(missing, unexpected, mismatched, limit=30)
    if problems:
        arch = ", ".join(f"{k}={v}" for k, v in head.init_args.items())
        raise HeadInitError(
            f"{name}: not a SongEval head for SongEvalHead({arch}): " + "; ".join(problems)
        )
    state = {k: src[k].to(own[k].dtype) for k in own if not k.startswith("fc.")}
    weight = torch.zeros_like(own["fc.weight"])  # [out, 2D + E]: extra columns start at 0
    weight[:, :two_d] = src["fc.weight"][rows]
    state["fc.weight"] = weight
    state["fc.bias"] = src["fc.bias"][rows].to(own["fc.bias"].dtype)
    return state


def load_songeval_head(head: SongEvalHead, path: str | os.PathLike, rows: list[int]) -> None:
    """Load SongEval's released head (safetensors) strictly into `head`, `fc` from `rows`."""
    if head.init_args["heads"] != SONGEVAL_HEADS:
        raise HeadInitError(
            f"{path}: SongEval's attention has {SONGEVAL_HEADS} heads, this head "
            f"{head.init_args['heads']} (set heads={SONGEVAL_HEADS})"
        )
    try:
        src = load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as e:
        raise HeadInitError(f"{path}: cannot read safetensors: {e}") from e
    head.load_state_dict(songeval_state_dict(head, src, rows, str(path)), strict=True)
