"""Export a finished training run: its calibration fitted on the run's clips, any checkpoint
(`python -m audioscore.export RUN_DIR [--ckpt best|last|PATH]`, `audioscore.export.cli`). Apart from the scoring path
(`audioscore.export.scorer`) because it needs the DataModule, which imports Lightning (seconds of
start-up a scoring command does not pay)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from audiobase.preprocess import Preprocess
from audioscore.calibrate import Calibration, fit_calibration
from audioscore.data.datamodule import GroupsDataModule, ValItems
from audioscore.export.scorer import ExportError, export_scorer, score_wavs
from audioscore.losses import ScoreRegressionLoss
from audioscore.models.components.scorer import frozen_base_keys
from audioscore.safe_config import read_yaml, resolve_stored

log = logging.getLogger(__name__)


def calibration_items(datamodule: Any) -> tuple[list[dict], str]:
    """The clips a calibration is fitted on: the scored validation clips, else the scored
    training clips (each file once), else none; returns (items, "val" | "train" | "")."""
    val = [it for g in datamodule.val_groups for it in g if it.get("score") is not None]
    if val:
        return val, "val"
    train = {
        it["audio_file"]: it
        for gs in datamodule.train_groups
        for g in gs
        for it in g
        if it.get("score") is not None
    }
    return list(train.values()), "train" if train else ""


def fit_export_calibration(net: torch.nn.Module, datamodule: Any) -> Calibration | None:
    """Score the calibration clips (`calibration_items`) with `net` exactly as the export will
    (the contract's window, length-sorted exact batches) and fit raw score -> labelled `score`."""
    items, source = calibration_items(datamodule)
    if not items:
        log.info("no clip has a score: the export has no calibration (raw scores)")
        return None
    hp = datamodule.hparams
    loader = torch.utils.data.DataLoader(
        ValItems([items], datamodule.loader(), datamodule.singer_ids),
        batch_size=hp.val_batch_size,
        num_workers=hp.num_workers,
        collate_fn=list,  # records (None = unreadable, recorded by the loader)
    )
    device = next(net.parameters()).device
    plan = datamodule.plan.replace(device=str(device), bf16=device.type == "cuda")
    was_training = net.training
    net.eval()
    raw: list[float] = []
    labels: list[float] = []
    for records in loader:
        ok = [r for r in records if r is not None]
        wavs, keys = [r["wav"] for r in ok], [r["key"] for r in ok]  # keys: frozen-encoder cache
        raw.extend(score_wavs(net, wavs, plan.replace(batch_size=len(wavs)), keys).tolist())
        labels.extend(r["score"] for r in ok)
    net.train(was_training)
    cal = fit_calibration(raw, labels, source=source)
    if cal is not None:
        mae = float(np.mean(np.abs(cal(np.array(raw)) - np.array(labels))))
        log.info(
            "calibration: %d %s clips, %d knots, in-sample MAE %.3f", cal.n, source, len(cal.x), mae
        )
    return cal


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


CKPT_CHOICES = ("best", "last")


def run_checkpoint(run_dir: Path, ckpt: str) -> Path:
    """`best` (the monitored checkpoint: the one `epoch_*.ckpt`, or the one `last.ckpt`
    recorded as best), `last`, or a path."""
    if ckpt not in CKPT_CHOICES:
        path = Path(ckpt)
        if not path.is_file():
            raise ExportError(f"--ckpt {ckpt}: no such checkpoint file")
        return path
    folder = run_dir / "checkpoints"
    last = folder / "last.ckpt"
    if ckpt == "last":
        if not last.is_file():
            raise ExportError(f"{run_dir}: no checkpoints/last.ckpt")
        return last
    best = sorted(p for p in folder.glob("*.ckpt") if p.name != "last.ckpt")
    if len(best) == 1:
        return best[0]
    if last.is_file():  # several kept (save_top_k > 1): last.ckpt's callbacks name the best
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        for key, cb in (state.get("callbacks") or {}).items():
            recorded = cb.get("best_model_path") if isinstance(cb, dict) else None
            if (
                "val/srcc" in str(key)
                and recorded
                and Path(recorded).name in {b.name for b in best}
            ):
                return folder / Path(recorded).name
    raise ExportError(
        f"{run_dir}: cannot tell the best checkpoint ({len(best)} in {folder}); "
        "give --ckpt last or --ckpt PATH"
    )


def export_run(
    run_dir: str | os.PathLike, ckpt: str = "best", out: str | os.PathLike | None = None
) -> Path:
    """Export a finished run's checkpoint (`best`, `last` or a path) as a scorer folder.

    Built from the run's `.hydra/config.yaml`, which is data: resolved once with harmless
    resolvers, only the project's components built (`audioscore.safe_config`). The calibration
    is fitted on the run's validation clips as at the end of training (`fit_export_calibration`).
    """
    run_dir = Path(run_dir)
    cfg_file = run_dir / ".hydra" / "config.yaml"
    if not cfg_file.is_file():
        raise ExportError(f"{run_dir}: not a run folder (no {cfg_file.relative_to(run_dir)})")
    raw = read_yaml(cfg_file)
    data = dict(raw.get("data") or {}) if isinstance(raw, dict) else {}
    data.pop("_target_", None)  # the DataModule is built below from plain values, not a target
    paths = dict(raw.get("paths") or {})
    paths["output_dir"] = str(run_dir)  # was `${hydra:runtime.output_dir}`, this folder
    raw = {**raw, "data": data, "paths": paths}
    keys = ("model.net", "data")
    stored = resolve_stored(raw, str(cfg_file), keys)
    net_config = stored["model.net"]
    net = instantiate(net_config, _convert_="all")
    path = run_checkpoint(run_dir, ckpt)
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    missing, _ = net.load_state_dict(
        {k[4:]: v for k, v in state.items() if k.startswith("net.")}, strict=False
    )
    if set(missing) - set(frozen_base_keys(net)):
        raise ExportError(f"{path}: does not fit the run's net (missing {sorted(missing)[:3]})")
    data_cfg = stored["data"]
    pre = instantiate(data_cfg.pop("preprocess"))
    data_cfg.update(num_workers=0, failures_path=None)
    datamodule = GroupsDataModule(**data_cfg, preprocess=pre)
    datamodule.setup("fit")
    calibration = fit_export_calibration(net.eval(), datamodule)
    dest = Path(out) if out else run_dir / f"export_{path.stem}"
    return export_scorer(
        net,
        dest,
        net_config=net_config,
        preprocess=pre,
        meta={"ckpt": str(path)},
        calibration=calibration,
    )
