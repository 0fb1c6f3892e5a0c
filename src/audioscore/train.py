"""Train a scorer: `python -m audioscore.train experiment=muq_lora [debug=tiny] [key=value ...]`.

`train(cfg)` is the plain function (tests call it); `main()` is the thin Hydra wrapper.
"""

from __future__ import annotations

import csv
import inspect
import logging
import os
import random
import secrets
import sys
import warnings
from pathlib import Path
from typing import Any, cast

import hydra
import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from audiobase.files import write_text
from audiobase.preprocess import Preprocess
from audiobase.weights import DEMO_CORPUS, MissingDataError, find_user_error
from audioscore.data.datamodule import data_name
from audioscore.export import WEIGHTS_NAME, ExportError, export_scorer, read_export_config
from audioscore.export.run import fit_export_calibration
from audioscore.legacy import TYPE_NAME, is_legacy_checkpoint, read_legacy
from audioscore.losses import ScoreRegressionLoss
from audioscore.models.components.muq_encoder import MuQEncoder
from audioscore.models.components.scorer import frozen_base_keys
from audioscore.noise import drop_wandb_anonymous, quiet_third_party

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


def init_source(path: str, report: bool = True) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The weights and LoRA settings ({r, alpha, ...} or None) of an `init_from` source: an
    exported scorer or an original-format checkpoint (`audioscore.legacy`); `report` logs
    what the conversion of the latter leaves out."""
    if is_legacy_checkpoint(path):
        ckpt = read_legacy(path)
        for note in ckpt.dropped if report else []:
            log.info("init_from %s: dropped %s", path, note)
        return ckpt.state, ckpt.lora
    if not (Path(path) / "config.yaml").is_file():
        raise ExportError(
            f"init_from={path}: neither a scorer export (no config.yaml) nor an "
            f"original-format checkpoint (no {TYPE_NAME})"
        )
    config = read_export_config(path)  # validates the directory
    encoder = (config.get("net") or {}).get("encoder")
    lora = encoder.get("lora") if isinstance(encoder, dict) else None
    if isinstance(lora, dict):  # settings the export left at MuQEncoder's defaults
        defaults = inspect.signature(MuQEncoder._inject_lora).parameters
        lora = {"r": defaults["r"].default, "alpha": defaults["alpha"].default, **lora}
    return load_file(str(Path(path) / WEIGHTS_NAME)), lora or None


def lora_overrides(lora: dict) -> str:
    """The command-line overrides that give the run's MuQ this LoRA rank and alpha."""
    return f"model.net.encoder.lora.r={lora['r']} model.net.encoder.lora.alpha={lora['alpha']}"


def adopt_init_lora(cfg: DictConfig) -> None:
    """Give the run's MuQ the LoRA rank and alpha of `init_from` (its LoRA tensors only fit
    that rank, and alpha / r scales them); a run without LoRA fails naming the override."""
    _, lora = init_source(str(cfg.init_from), report=False)
    if not lora or OmegaConf.select(cfg, "model.net.encoder") is None:
        return
    if "lora" not in cfg.model.net.encoder:
        return  # an encoder without LoRA settings: its tensors are reported as ignored
    own = cfg.model.net.encoder.lora
    if own is None:
        raise ValueError(
            f"init_from={cfg.init_from} has LoRA r={lora['r']} alpha={lora['alpha']} but this "
            f"run's MuQ has none: set 'model.net.encoder.lora={{r: {lora['r']}, "
            f"alpha: {lora['alpha']}}}'"
        )
    if (own.get("r"), own.get("alpha")) != (lora["r"], lora["alpha"]):
        log.warning(
            "init_from %s: LoRA r=%s alpha=%s adopted (the config had r=%s alpha=%s)",
            cfg.init_from,
            lora["r"],
            lora["alpha"],
            own.get("r"),
            own.get("alpha"),
        )
        with open_dict(cfg):
            own.r, own.alpha = lora["r"], lora["alpha"]


def compact_keys(keys: list[str]) -> str:
    """Tensor names with numeric path parts merged: `layers.{0-5}.ffn1.weight`, one per pattern."""
    groups: dict[tuple[str, ...], list[tuple[int, ...]]] = {}
    for key in keys:
        parts = key.split(".")
        pattern = tuple("#" if p.isdigit() else p for p in parts)
        groups.setdefault(pattern, []).append(tuple(int(p) for p in parts if p.isdigit()))

    def span(values: set[int]) -> str:
        lo, hi = min(values), max(values)
        if len(values) == 1:
            return str(lo)
        if values == set(range(lo, hi + 1)):
            return f"{{{lo}-{hi}}}"
        return "{" + ",".join(str(v) for v in sorted(values)) + "}"

    out = []
    for pattern, numbers in groups.items():
        columns = iter([span({n[i] for n in numbers}) for i in range(len(numbers[0]))])
        out.append(".".join(next(columns) if p == "#" else p for p in pattern))
    return ", ".join(sorted(out))


def load_init_weights(net: torch.nn.Module, path: str) -> None:
    """Start from an exported scorer or an original-format checkpoint: copy every weight it
    holds that fits this net; log what it ignored and what it left unfilled."""
    state, lora = init_source(path)
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        hint = ""
        if lora and any("lora_" in k for k in mismatched):
            hint = f"; its LoRA has r={lora['r']} alpha={lora['alpha']}: set {lora_overrides(lora)}"
        raise ValueError(f"init_from={path}: shape mismatch for {mismatched[:5]}{hint}")
    if lora and any("lora_" in k and k in own for k in state):
        scalings = {
            round(float(s), 6)
            for m in net.modules()
            if isinstance(m, LoraLayer)
            for s in m.scaling.values()
        }
        if scalings and scalings != {round(lora["alpha"] / lora["r"], 6)}:
            raise ValueError(
                f"init_from={path}: its LoRA has alpha/r = {lora['alpha']}/{lora['r']}, this "
                f"net scales LoRA by {sorted(scalings)}: set {lora_overrides(lora)}"
            )
    missing, unexpected = net.load_state_dict(state, strict=False)
    loaded = len(state) - len(unexpected)
    if loaded == 0:
        raise ValueError(f"init_from={path}: no weight matches this net")
    log.info("init_from %s: loaded %d tensors", path, loaded)
    base = set(frozen_base_keys(net))
    from_source = [k for k in missing if k in base]
    unfilled = [k for k in missing if k not in base]
    if from_source:
        log.info(
            "init_from %s: %d pretrained tensors come from the encoder's own source: %s",
            path,
            len(from_source),
            compact_keys(from_source),
        )
    if unfilled:
        log.warning(
            "init_from %s: %d tensors not filled (they keep their initial values): %s",
            path,
            len(unfilled),
            compact_keys(unfilled),
        )
    if unexpected:
        log.warning(
            "init_from %s: %d tensors ignored (no place in this net): %s",
            path,
            len(unexpected),
            compact_keys(unexpected),
        )


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


def save_run_config(cfg: DictConfig, out_dir: Path) -> None:
    """Keep `<run_dir>/.hydra/config.yaml` also when train() is called without Hydra (tests)."""
    path = out_dir / ".hydra" / "config.yaml"
    if not path.exists():
        write_text(path, OmegaConf.to_yaml(cfg, resolve=False))


def export_best(
    model: Any, ckpt_path: str | None, cfg: DictConfig, out_dir: Path, preprocess: Preprocess
) -> Path:
    """Export the best checkpoint (or the final weights) as a self-contained scorer dir, with
    the run's resolved net config (what `load_net` instantiates) and a calibration of its raw
    scores onto the label scale (`fit_export_calibration`; none when no clip has a score)."""
    if ckpt_path and Path(ckpt_path).is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        model.net.load_state_dict(state, strict=bool(cfg.save_full_encoder))
    meta = {"experiment": cfg.get("experiment_name"), "plan": cfg.get("plan"), "ckpt": ckpt_path}
    if isinstance(model.loss_fn, ScoreRegressionLoss):  # score = (raw - mean) / std
        meta["score_mean"], meta["score_std"] = float(model.loss_fn.mean), float(model.loss_fn.std)
    trainer = getattr(model, "_trainer", None)  # None when exported outside a fit
    datamodule = getattr(trainer, "datamodule", None)
    calibration = fit_export_calibration(model.net, datamodule) if datamodule else None
    return export_scorer(
        model.net,
        out_dir / "export",
        net_config=cast(dict, OmegaConf.to_container(cfg.model.net, resolve=True)),
        save_full_encoder=bool(cfg.save_full_encoder),
        preprocess=preprocess,
        meta=meta,
        calibration=calibration,
    )


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


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit the scorer described by `cfg`; returns (metrics, objects)."""
    check_data_keys(cfg)
    quiet_third_party()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("init_from"):
        adopt_init_lora(cfg)  # before anything is built or saved: the LoRA rank must fit
    save_run_config(cfg, out_dir)

    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model = hydra.utils.instantiate(cfg.model)  # the net, loss and partials built by Hydra
    if cfg.get("init_from"):
        load_init_weights(model.net, cfg.init_from)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.get("seed") is not None:  # first: the others' hooks see the reseeded state
        callbacks.insert(0, SeedEachBatch(cfg.seed))
    loggers = build_loggers(cfg)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for logger in loggers:  # every hyperparameter: dashboards filter and group on them
        if isinstance(logger, WandbLogger) and is_rank_zero():
            logger.log_hyperparams(run_config(cfg))

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    finish_loggers(loggers)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") or None
    objects: dict[str, Any] = {"model": model, "datamodule": datamodule, "trainer": trainer}
    objects["best_ckpt"] = best
    if best and getattr(ckpt_cb, "best_model_score", None) is not None:
        metrics["best/val_srcc"] = float(ckpt_cb.best_model_score)
    if cfg.get("export") and trainer.is_global_zero:
        objects["export_dir"] = export_best(model, best, cfg, out_dir, datamodule.preprocess)
        print(f"exported scorer: {objects['export_dir']}", flush=True)
    print(
        f"run dir: {out_dir}  best checkpoint: {best}  world size {trainer.world_size}", flush=True
    )
    return metrics, objects


@hydra.main(config_path="../../conf/train", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics, _ = train(cfg)
    except Exception as e:
        err = find_user_error(e)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    return metrics.get("val/srcc")


if __name__ == "__main__":
    main()
