"""The run's reward model: its config with runner settings pushed in, building it, the resume
fingerprint and CPU threads. Shared by the one-process loop (bench.score) and the ranks of a
sharded run (bench.sharded), so neither imports the other or the runner.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from audiobase.preprocess import Preprocess
from rewards.build import build_reward_model


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config node as a plain, resolved dict (None -> {})."""
    out = OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}
    if not isinstance(out, dict):
        raise TypeError(f"expected a mapping, got {type(out).__name__}")
    return {str(k): v for k, v in out.items()}


def resolve_device(device: str) -> str:
    """`auto` -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def n_devices(cfg: DictConfig) -> int:
    """Scoring processes: `trainer.devices` (> 1 = sharded with Lightning predict)."""
    return int(cfg.trainer.get("devices", 1)) if cfg.get("trainer") else 1


def prepare_model_cfg(cfg: DictConfig, device: str | None = None) -> DictConfig:
    """The model config with runner-level settings pushed into keys the model declares;
    `device` overrides the runner's device."""
    mcfg = DictConfig(to_dict(cfg.model))
    device = device or cfg.get("device")
    with open_dict(mcfg):
        if cfg.get("cache_dir") and "cache_dir" in mcfg:
            mcfg.cache_dir = str(cfg.cache_dir)  # models own their encoder cache; we pass the dir
        if device and "device" in mcfg:
            mcfg.device = resolve_device(str(device))
        if "bf16" in mcfg and cfg.get("bf16") is not None:
            mcfg.bf16 = bool(cfg.bf16)
    return mcfg


def extra_score_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """`score_kwargs` from the runner config (added to the model config's own)."""
    return to_dict(cfg.get("score_kwargs"))


def build_model(cfg: DictConfig, device: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(reward model, score kwargs) through the rewards package, as a user's run builds it."""
    model, score_kwargs = build_reward_model(prepare_model_cfg(cfg, device))
    return model, {**(score_kwargs or {}), **extra_score_kwargs(cfg)}


def weights_mtime(checkpoint: Any) -> float:
    """Newest modification time of the checkpoint file or of any file under its folder, at any
    depth (SongEval keeps its weights in `ckpt/`); 0 = none."""
    path = Path(str(checkpoint or ""))
    if str(path) in ("", ".") or not path.exists():
        return 0.0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return max((p.stat().st_mtime for p in files), default=0.0)


def fingerprint(cfg: DictConfig, pre: Preprocess) -> str:
    """What makes scores reusable on resume: the model config (minus device and cache dir),
    the weights' modification time when `checkpoint` is a path, the preprocessing the model
    actually gets (`pre`: its own contract, or the runner's max_dur) and the score kwargs."""
    mcfg = to_dict(prepare_model_cfg(cfg))
    for k in ("device", "cache_dir"):
        mcfg.pop(k, None)
    blob = {
        "model": mcfg,
        "weights_mtime": weights_mtime(mcfg.get("checkpoint")),
        "preprocess": pre.to_dict(),
        "score_kwargs": extra_score_kwargs(cfg),
    }
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def pick_threads(cfg: DictConfig, processes: int = 1) -> int | None:
    """Intra-op threads for CPU scoring; `torch_threads: auto` leaves half the cores to the
    decoding workers and other processes (oversubscribed OpenMP threads spin and crawl)."""
    want = cfg.get("torch_threads", "auto")
    if want in (None, "none") or resolve_device(str(cfg.get("device") or "cpu")) != "cpu":
        return None
    if want == "auto":
        return max(1, (os.cpu_count() or 1) // (2 * max(processes, 1)))
    return int(want)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` intra-op threads (None = leave torch's setting)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
