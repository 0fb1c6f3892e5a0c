"""Lightning callbacks of the training run (conf/train/callbacks/, and `SeedEachBatch`, which
`audioscore.training.build` adds when the run has a seed)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class ValidateAtEnd(Callback):
    """A run that ends mid-epoch (`trainer.max_steps` shorter than an epoch, or not a multiple
    of it) still validates its last step, so its best checkpoint and export exist.

    Lightning validates at epoch ends only, unless the trainer was asked to stop: raising
    `should_stop` on the last step makes its own loop run validation there (and checkpointing
    after it), the same path early stopping takes.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


class SeedEachBatch(L.Callback):
    """Reseeds torch, numpy and `random` before each training epoch from (seed, epoch) and
    before each batch from (seed, epoch, batch index, rank), so dropout and the adversary's
    re-initialisation draw the same numbers in a run resumed from a checkpoint (which holds no
    random state) as in an uninterrupted one. The epoch's seed is the same on every rank: a
    re-initialised adversary stays identical across DDP ranks."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def reseed(self, *keys: int) -> None:
        entropy = [self.seed % 2**32, *keys]
        state = np.random.SeedSequence(entropy).generate_state(2)  # 2 x uint32
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))
        np.random.seed(int(state[0]))
        random.seed(int(state[1]))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reseed(trainer.current_epoch)  # before the module's hook (adversary reset)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.reseed(trainer.current_epoch, batch_idx, trainer.global_rank)
