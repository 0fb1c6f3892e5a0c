"""Callbacks the training tests add through the config (`+callbacks.<name>._target_=...`)."""

from __future__ import annotations

from typing import Any

import lightning as L


class KeysSeen(L.Callback):
    """Records the cache keys (file, crop start, length) of every training batch, per epoch."""

    def __init__(self) -> None:
        self.keys: dict[int, list[str]] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.keys.setdefault(trainer.current_epoch, []).extend(batch["keys"])


def keys_seen(trainer: L.Trainer) -> dict[int, list[str]]:
    """The keys a `KeysSeen` callback of `trainer` recorded, per epoch."""
    (cb,) = [c for c in trainer.callbacks if isinstance(c, KeysSeen)]  # type: ignore[attr-defined]
    return cb.keys


class Interrupted(Exception):
    """What `CrashAtEpoch` raises: the run stops as if killed."""


class CrashAtEpoch(L.Callback):
    """Stops the run with `Interrupted` when epoch `epoch` starts, after the checkpoints of the
    epoch before were written: a run killed between two epochs."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise Interrupted(f"stopped at the start of epoch {self.epoch}")
