"""What the scorer and the exporter expect of their parts; components implement these by shape,
no base class needed (checked with `isinstance` at build and export time)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Encoder(Protocol):
    """Frame-level audio encoder: wav [B, T] + lengths [B] -> (feats [B, F, D], mask [B, F]).

    `uses_keys`: forward() can use the batch's per-clip cache keys (a frozen, cached encoder);
    others are called without them.
    """

    out_dim: int

    @property
    def uses_keys(self) -> bool: ...

    def __call__(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor | None = None,
        keys: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class ClipEncoder(Protocol):
    """Clip-level embedding: wav [B, T] + lengths [B] (+ cache keys) -> [B, E] (plan B's timbre)."""

    out_dim: int

    def __call__(
        self, wav: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str] | None = None
    ) -> torch.Tensor: ...


@runtime_checkable
class Pretrained(Protocol):
    """A component whose weights come from outside the run (a hub id, a weights file).

    The exporter finds every such module in `net.named_modules()` and rewrites the net config at
    the same path, so a module's attribute path must equal its config path.
    """

    def standalone_config(self) -> dict[str, Any]:
        """`_target_` config rebuilding this module's architecture offline, with no weights
        source: an export carries the weights in its state dict."""
        ...

    def base_state_keys(self) -> list[str]:
        """state_dict keys (relative to this module) that its configured source rebuilds, so
        `save_full_encoder=false` may leave them out; [] when nothing else could rebuild them."""
        ...
