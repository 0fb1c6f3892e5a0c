"""The Lightning run: build the trainer, fit, and read back its metrics and best checkpoint."""

from __future__ import annotations

from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from audioscore.training.loggers import finish_loggers, log_run_config


def fit(
    cfg: DictConfig, model: Any, datamodule: Any, callbacks: list[Any], loggers: list[Any]
) -> tuple[L.Trainer, dict[str, float], str | None]:
    """Fit `model` on `datamodule` (resuming from `ckpt_path` when set); returns the trainer,
    its final metrics (+ `best/val_srcc`) and the best checkpoint's path (None: none kept)."""
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    log_run_config(cfg, loggers)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    finish_loggers(loggers)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or None
    if best and getattr(ckpt_cb, "best_model_score", None) is not None:
        metrics["best/val_srcc"] = float(ckpt_cb.best_model_score)
    return trainer, metrics, best
