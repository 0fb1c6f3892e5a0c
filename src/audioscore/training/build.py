"""Config to modules: check the data keys, keep the run's config, build the DataModule, the
LightningModule (with `init_from` weights) and the callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from audiobase.files import write_text
from audiobase.weights import DEMO_CORPUS, MissingDataError
from audioscore.callbacks import SeedEachBatch
from audioscore.training.init_from import load_init_weights


def check_data_keys(cfg: DictConfig) -> None:
    """Refuse a run whose groups files are not set, in one line saying what to set."""
    data = cfg.get("data")
    unset = [
        k for k in ("train_files", "val_files") if data is None or OmegaConf.is_missing(data, k)
    ]
    if unset:
        raise MissingDataError(
            f"{' and '.join('data.' + k for k in unset)} not set: give your groups files "
            f"(data.train_files=[train.json] data.val_files=[val.json] data.root=DIR), or make the "
            f"demo corpus with `{DEMO_CORPUS}` and add data=synth"
        )


def save_run_config(cfg: DictConfig, out_dir: Path) -> None:
    """Keep `<run_dir>/.hydra/config.yaml` also when train() is called without Hydra (tests)."""
    path = out_dir / ".hydra" / "config.yaml"
    if not path.exists():
        write_text(path, OmegaConf.to_yaml(cfg, resolve=False))


def build_modules(cfg: DictConfig) -> tuple[Any, Any, list[Any]]:
    """(datamodule, model, callbacks) of the run: the net, loss and partials built by Hydra,
    the net started from `init_from` when set."""
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model = hydra.utils.instantiate(cfg.model)
    if cfg.get("init_from"):
        load_init_weights(model.net, cfg.init_from)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.get("seed") is not None:  # first: the others' hooks see the reseeded state
        callbacks.insert(0, SeedEachBatch(cfg.seed))
    return datamodule, model, callbacks
