"""Lightning callbacks of the training run (conf/train/callbacks/)."""

from __future__ import annotations

from typing import Any

import lightning as L
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
