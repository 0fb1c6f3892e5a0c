"""CMI-RM token downsamplers (`downsample.configs.<name>.kind`), with the official parameter names.

Every downsampler maps (x [B, T, D], mask [B, T]) -> (y [B, T', D], mask [B, T']). Strided
kinds drop a trailing partial window (T' = T // factor). On a padded batch that partial window can
contain real frames of a shorter item, so the scorer runs downsamplers on each item's own frames
(see `downsample_each`) unless it reproduces upstream.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _trim(x: torch.Tensor, mask: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = (x.shape[1] // m) * m
    return x[:, :t], mask[:, :t]


def _pool_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    b, t = mask.shape
    t = (t // stride) * stride
    return mask[:, :t].reshape(b, t // stride, stride).any(dim=-1)


def choose_strides(factor: int) -> tuple[int, int]:
    """Two integer strides with product `factor`: smallest max, then preferring 3, 2, 4 (upstream)."""
    prefer = (3, 2, 4)

    def rank(s: int) -> int:
        return prefer.index(s) if s in prefer else 999

    pairs = [(s, factor // s) for s in range(2, factor + 1) if factor % s == 0]
    if not pairs:
        raise ValueError(f"downsample factor {factor} cannot be split into two strides")
    s1, s2 = min(
        pairs,
        key=lambda p: (
            max(p),
            rank(p[0]) + rank(p[1]),
            abs(p[0] - 3) + abs(p[1] - 3),
            abs(p[0] - p[1]),
        ),
    )
    if (s2 == 3 and s1 != 3) or (s2 < s1 and s1 != 3):
        s1, s2 = s2, s1
    return s1, s2


class Identity(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, mask


class MeanPool(nn.Module):
    """Masked mean over non-overlapping windows of `factor` frames; optional MLP (`mlp.0`, `mlp.3`)."""

    def __init__(
        self,
        dim: int,
        factor: int,
        mlp_ratio: float | None = None,
        dropout: float = 0.0,
        pre_mlp: bool = False,
    ) -> None:
        super().__init__()
        self.factor, self.pre_mlp = factor, pre_mlp
        self.mlp = None
        if mlp_ratio is not None:
            hidden = int(dim * mlp_ratio)
            self.mlp = nn.Sequential(
                nn.Linear(dim, hidden),
                nn.SiLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, dim),
                nn.Dropout(dropout),
            )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.bool()
        if self.factor == 1:
            x = x * mask.unsqueeze(-1).to(x.dtype)
            return (self.mlp(x) if self.mlp is not None else x), mask
        if self.mlp is not None and self.pre_mlp:
            x = self.mlp(x)
        x, mask = _trim(x, mask, self.factor)
        b, t, d = x.shape
        x = x.reshape(b, t // self.factor, self.factor, d)
        m = mask.reshape(b, t // self.factor, self.factor, 1).to(x.dtype)
        y = (x * m).sum(dim=2) / m.sum(dim=2).clamp_min(1.0)  # [B, T', D]
        out_mask = m.sum(dim=2).squeeze(-1) > 0
        y = y * out_mask.unsqueeze(-1).to(y.dtype)
        if self.mlp is not None and not self.pre_mlp:
            y = self.mlp(y)
        return y, out_mask


class ConvDown(nn.Module):
    """Strided depthwise conv + LayerNorm + SiLU (`dw`, `ln`); with `glu`, a pointwise GLU first (`pw1`)."""

    def __init__(
        self,
        dim: int,
        stride: int,
        kernel_size: int = 5,
        use_layernorm: bool = True,
        glu: bool = False,
    ) -> None:
        super().__init__()
        self.stride = stride
        if glu:
            self.pw1 = nn.Conv1d(dim, 2 * dim, kernel_size=1, bias=False)
            self.glu = nn.GLU(dim=1)
        self.use_glu = glu
        pad = (kernel_size - 1) // 2
        self.dw = nn.Conv1d(
            dim, dim, kernel_size, stride=stride, padding=pad, groups=dim, bias=False
        )
        self.ln = nn.LayerNorm(dim) if use_layernorm else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = _trim(x, mask.bool(), self.stride)
        if x.shape[1] == 0:
            return x, mask
        h = (x * mask.unsqueeze(-1).to(x.dtype)).transpose(1, 2)  # [B, D, T]
        if self.use_glu:
            h = self.glu(self.pw1(h))
        y = self.act(self.ln(self.dw(h).transpose(1, 2)))  # [B, T', D]
        out_mask = _pool_mask(mask, self.stride)
        return y * out_mask.unsqueeze(-1).to(y.dtype), out_mask


class TwoStageConv(nn.Module):
    """`block1`, `block2` (strides from `choose_strides`), and for the GLU kind a final `final_pw`."""

    def __init__(
        self,
        dim: int,
        factor: int,
        kernel_size: int = 5,
        use_layernorm: bool = True,
        glu: bool = False,
    ):
        super().__init__()
        self.factor = factor
        s1, s2 = (1, 1) if factor == 1 else choose_strides(factor)
        self.block1 = ConvDown(dim, s1, kernel_size, use_layernorm, glu)
        self.block2 = ConvDown(dim, s2, kernel_size, use_layernorm, glu)
        self.final_pw = nn.Conv1d(dim, dim, kernel_size=1, bias=False) if glu else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.bool()
        if self.factor == 1:
            return x * mask.unsqueeze(-1).to(x.dtype), mask
        x, mask = self.block2(*self.block1(x, mask))
        if self.final_pw is not None and x.shape[1] > 0:
            x = self.final_pw(x.transpose(1, 2)).transpose(1, 2) * mask.unsqueeze(-1).to(x.dtype)
        return x, mask


class RepeatedConv(nn.Module):
    """`conv`/`b2s`: one strided block applied `stage` times (upstream shares the block's weights)."""

    def __init__(
        self,
        dim: int,
        factor: int,
        stage: int = 1,
        kernel_size: int = 5,
        use_layernorm: bool = True,
    ):
        super().__init__()
        self.factor = factor
        block = ConvDown(dim, factor, kernel_size, use_layernorm)
        self.blocks = nn.ModuleList([block] * stage)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.bool()
        if self.factor == 1:
            return x * mask.unsqueeze(-1).to(x.dtype), mask
        for block in self.blocks:
            x, mask = block(x, mask)
        return x, mask


def build_downsampler(kind: str = "none", dim: int = 768, factor: int = 1, **kw: Any) -> nn.Module:
    """Same kind names as upstream `build_downsampler`."""
    kind = kind.lower()
    if kind in ("none",):
        return Identity()
    if kind in ("mean", "meanpool"):
        return MeanPool(dim, factor)  # upstream accepts and ignores mlp_ratio/dropout here
    if kind in ("meanpool+mlp", "mean+mlp", "baseline1", "b1"):
        return MeanPool(dim, factor, mlp_ratio=kw.pop("mlp_ratio", 2.0), **kw)
    if kind in ("conv*2", "baseline2", "b2"):
        return TwoStageConv(dim, factor, **kw)
    if kind in ("conv", "baseline2simple", "b2s"):
        return RepeatedConv(dim, factor, **kw)
    if kind in ("gluconv*2+pw", "baseline3", "b3"):
        return TwoStageConv(dim, factor, glu=True, **kw)
    raise ValueError(f"unknown downsampler kind {kind!r}")


def build_downsamplers(ds_cfg: dict | None, dim: int) -> dict[str, nn.Module]:
    """Resolve the config's `downsample` section into text/lyrics/eval/ref modules (upstream rules)."""
    names = ("text", "lyrics", "eval", "ref")
    if not ds_cfg or not ds_cfg.get("configs"):
        return {n: Identity() for n in names}
    configs = ds_cfg["configs"]

    def pick(name: str) -> dict:
        if name not in configs:
            raise ValueError(f"downsample config {name!r} not found; available: {sorted(configs)}")
        return dict(configs[name], dim=dim)

    eval_cfg = pick(ds_cfg.get("eval", "none"))
    ref_cfg = pick(ds_cfg["ref"]) if ds_cfg.get("ref") is not None else dict(eval_cfg)
    text_cfg = pick(ds_cfg.get("text", "none"))
    return {
        "text": build_downsampler(**text_cfg),
        "lyrics": build_downsampler(**dict(text_cfg)),
        "eval": build_downsampler(**eval_cfg),
        "ref": build_downsampler(**ref_cfg),
    }
