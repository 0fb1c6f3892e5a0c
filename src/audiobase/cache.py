"""On-disk cache of frozen-encoder outputs (CAM++ embeddings, frozen MuQ features).

Entries are safetensors files under `root/namespace/<k[:2]>/<k>.safetensors`, keyed by a
sha1 over whatever identifies the computation (file content hash, crop, length, encoder
config). Writes go to a unique temp file in the same directory and are published with
`os.replace`, which is atomic on POSIX: DDP ranks and concurrent runs sharing one cache
may race on the same key, but a reader only ever sees a missing or a complete file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from audiobase.files import atomic_path

log = logging.getLogger(__name__)

_DIGEST_MEMO: dict[tuple[str, int, int], str] = {}


class CacheError(ValueError):
    """A value that cannot be part of a cache key, or tensors that cannot be stored."""


def file_digest(path: str | os.PathLike) -> str:
    """sha1 of a file's bytes; memoised per (path, size, mtime) so epochs hash each file once."""
    p = os.fspath(path)
    st = os.stat(p)
    memo_key = (os.path.abspath(p), st.st_size, st.st_mtime_ns)
    if memo_key not in _DIGEST_MEMO:
        h = hashlib.sha1()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGEST_MEMO[memo_key] = h.hexdigest()
    return _DIGEST_MEMO[memo_key]


def _feed(h: Any, part: Any) -> None:
    """Feed one key part into the hash with a type tag, so e.g. "1" and 1 differ."""
    if isinstance(part, torch.Tensor):
        part = part.detach().cpu().contiguous().numpy()
    if isinstance(part, np.ndarray):
        arr = np.ascontiguousarray(part)
        h.update(f"nd:{arr.dtype.str}:{arr.shape}:".encode())
        h.update(arr.tobytes())
    elif isinstance(part, bytes | bytearray):
        h.update(b"b:" + bytes(part))
    elif isinstance(part, str):
        h.update(b"s:" + part.encode())
    elif isinstance(part, dict):
        try:
            text = json.dumps(part, sort_keys=True, default=str)
        except TypeError as e:  # non-string keys of mixed types
            raise CacheError(f"cache key dict is not serialisable: {e}") from e
        h.update(b"d:" + text.encode())
    elif isinstance(part, bool | int | float) or part is None:
        h.update(f"v:{part!r}".encode())
    elif isinstance(part, list | tuple):
        h.update(f"l{len(part)}:".encode())
        for p in part:
            _feed(h, p)
    else:
        raise CacheError(f"cannot use a {type(part).__name__} as a cache key part")
    h.update(b"|")


class FeatureCache:
    """Content-keyed tensor cache shared by epochs, A/B runs and DDP ranks."""

    def __init__(self, root: str | os.PathLike, namespace: str) -> None:
        if not namespace or "/" in namespace or namespace.startswith("."):
            raise CacheError(f"bad cache namespace {namespace!r}")
        self.root = Path(root)
        self.namespace = namespace
        self.dir = self.root / namespace
        self.hits = 0
        self.misses = 0

    def key(self, *parts: Any) -> str:
        """sha1 hex over the parts (str/bytes/np.ndarray/Tensor/dict/number/list)."""
        h = hashlib.sha1()
        for part in parts:
            _feed(h, part)
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None on a miss; an unreadable entry counts as a miss."""
        p = self.path(key)
        try:
            out = load_file(str(p))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (SafetensorError, OSError, ValueError) as e:
            # A truncated file can only come from outside our write-then-rename; recompute.
            log.warning("feature cache: unreadable entry %s (%s); recomputing", p, e)
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Store tensors atomically (`audiobase.files.atomic_path`)."""
        if not tensors:
            raise CacheError(f"refusing to cache an empty dict under {key}")
        # safetensors rejects shared storage and non-contiguous views: store private copies.
        data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        with atomic_path(self.path(key)) as tmp:
            save_file(data, str(tmp), metadata={"namespace": self.namespace})

    def get_or_compute(
        self,
        keys: Sequence[str | None],
        name: str,
        compute: Callable[[list[int]], Sequence[torch.Tensor]],
        device: torch.device | str = "cpu",
    ) -> list[torch.Tensor]:
        """One tensor per item: cached under `keys[i]` (None = never cached), the misses computed
        together by `compute(miss indices)` and stored under `name`."""
        out: list[torch.Tensor | None] = [None] * len(keys)
        for i, key in enumerate(keys):
            hit = self.get(key) if key is not None else None
            if hit is not None:
                out[i] = hit[name].to(device)
        todo = [i for i in range(len(keys)) if out[i] is None]
        if todo:
            for i, t in zip(todo, compute(todo), strict=True):
                out[i] = t
                key = keys[i]
                if key is not None:
                    self.put(key, {name: t})
        return out  # type: ignore[return-value]

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.dir)!r}, hits={self.hits}, misses={self.misses})"
