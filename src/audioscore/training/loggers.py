"""Reporting of a training run: its loggers (wandb + CSV), and their history on resume."""

from __future__ import annotations

import csv
import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, cast

import hydra
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from audiobase.files import write_text
from audioscore.data.datamodule import data_name
from audioscore.noise import drop_wandb_anonymous

log = logging.getLogger(__name__)


WANDB_ID_FILE = "wandb_run_id"  # <run_dir>/wandb_run_id: the wandb run a resume continues
CSV_METRICS_FILE = "metrics.csv"  # what Lightning's CSVLogger writes in its log dir


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Instantiate `cfg.logger` entries; wandb goes offline when no WANDB_API_KEY is set.

    On resume (`ckpt_path`) the loggers continue the checkpoint's run: wandb the same run id
    (`wandb_run_id`), CSV loggers the rows logged before the checkpoint (`carry_csv_history`).
    """
    out_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is None or "_target_" not in lcfg:
            continue
        kwargs: dict[str, Any] = {}
        if "Wandb" in lcfg._target_:
            offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in (
                "offline",
                "disabled",
            )
            kwargs["offline"] = bool(lcfg.get("offline", False) or offline)
            if not lcfg.get("id"):
                kwargs["id"] = wandb_run_id(out_dir, ckpt_path)
            kwargs["resume"] = "allow"  # an id wandb knows is continued, a new one started
            kwargs["tags"] = run_tags(cfg, lcfg.get("tags"))
            Path(lcfg.save_dir).mkdir(parents=True, exist_ok=True)
        log.info("logger %s", name)
        logger = hydra.utils.instantiate(lcfg, **kwargs)
        if isinstance(logger, WandbLogger):
            drop_wandb_anonymous(logger)
        if ckpt_path and isinstance(logger, CSVLogger) and is_rank_zero():
            carry_csv_history(logger, ckpt_path, out_dir)
        loggers.append(logger)
    return loggers


def run_tags(cfg: DictConfig, logger_tags: Any) -> list[str]:
    """The logger's own tags, `data:<data name>` and the run's `tags=[...]`, each once."""
    tags = [*(logger_tags or []), f"data:{data_name(cfg.data)}", *(cfg.get("tags") or [])]
    return list(dict.fromkeys(str(t) for t in tags))


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's resolved config as plain values, with the derived data name."""
    config = cast(dict, OmegaConf.to_container(cfg, resolve=True))
    config["data_name"] = data_name(cfg.data)
    return config


def is_rank_zero() -> bool:
    """Whether this process is DDP rank 0 (Lightning reads the rank from the environment at
    import, so this holds before the trainer exists, also in relaunched rank processes)."""
    return getattr(rank_zero_only, "rank", 0) == 0


def finish_loggers(loggers: list[Any]) -> None:
    """End the wandb run of a finished fit, so a next `train()` in this process (a Hydra
    multirun, tests) starts its own run instead of logging into this one."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and is_rank_zero():
            logger.experiment.finish()


def checkpoint_run_dir(ckpt_path: str | os.PathLike) -> Path:
    """The run dir a checkpoint was written in (`<run>/checkpoints/<name>.ckpt`)."""
    return Path(ckpt_path).resolve().parent.parent


def checkpoint_step(ckpt_path: str | os.PathLike) -> int:
    """The optimizer step a Lightning checkpoint was taken at (memory-mapped: no weight is read)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path}: no such checkpoint file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if "global_step" not in ckpt:
        raise ValueError(f"ckpt_path={path}: not a Lightning checkpoint (no global_step)")
    return int(ckpt["global_step"])


def wandb_run_id(out_dir: Path, ckpt_path: str | None) -> str:
    """The wandb run id of this run, stored in `<run_dir>/wandb_run_id`: on resume the id
    stored by the checkpoint's run (so wandb continues it), else a new one."""
    run_id = ""
    if ckpt_path:
        for run_dir in (checkpoint_run_dir(ckpt_path), out_dir):
            stored = run_dir / WANDB_ID_FILE
            run_id = stored.read_text().strip() if stored.is_file() else ""
            if run_id:
                break
        else:
            log.info(
                "resuming from %s: no %s there, a new wandb run starts", ckpt_path, WANDB_ID_FILE
            )
    run_id = run_id or secrets.token_hex(4)
    if is_rank_zero():  # DDP ranks relaunched later must not overwrite it
        write_text(out_dir / WANDB_ID_FILE, run_id + "\n")
    return run_id


def carry_csv_history(logger: CSVLogger, ckpt_path: str, out_dir: Path) -> int:
    """Put the rows logged before the checkpoint back into a resumed run's CSV log.

    Lightning's CSVLogger deletes the `metrics.csv` of a fixed version when it starts, which
    wiped the history of a run resumed in place. The rows are read first from the same place
    in the checkpoint's run dir (this dir when resuming in place, so a resume into a new dir
    holds the whole history too), up to the checkpoint's step: later rows came from the
    interrupted stretch, which is trained again. Returns the number of rows carried.
    """
    log_dir = Path(logger.log_dir)
    try:
        rel = log_dir.resolve().relative_to(out_dir.resolve())
        source = checkpoint_run_dir(ckpt_path) / rel / CSV_METRICS_FILE
    except ValueError:  # a log dir outside the run dir: its own file
        source = log_dir / CSV_METRICS_FILE
    if not source.is_file():
        log.info("resuming: no %s, the CSV log starts at the checkpoint", source)
        return 0
    step = checkpoint_step(ckpt_path)
    rows = []
    with open(source, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                values = {k: csv_number(v) for k, v in row.items() if k and v not in ("", None)}
            except ValueError:  # a line cut short by the interruption
                log.warning("%s: skipping an unreadable row: %s", source, row)
                continue
            if "step" in values and values["step"] < step:
                rows.append(values)
    with warnings.catch_warnings():  # "previous log files will be deleted": they are kept here
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        writer = logger.experiment
    for values in rows:
        writer.log_metrics({k: v for k, v in values.items() if k != "step"}, int(values["step"]))
    logger.save()
    log.info("resuming: %d rows before step %d carried from %s", len(rows), step, source)
    return len(rows)


def csv_number(text: str) -> int | float:
    """A CSV cell as Lightning wrote it: an int (step, epoch) or a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def log_run_config(cfg: DictConfig, loggers: list[Any]) -> None:
    """Every hyperparameter to wandb: dashboards filter and group on them."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and is_rank_zero():
            logger.log_hyperparams(run_config(cfg))
