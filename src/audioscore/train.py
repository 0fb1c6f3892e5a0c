"""Train a scorer: `python -m audioscore.train experiment=muq_lora [debug=tiny] [key=value ...]`.

`train(cfg)` is the plain function (tests call it); `main()` is the thin Hydra wrapper.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, cast

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from audiobase.files import write_text
from audiobase.preprocess import Preprocess
from audioscore.export import WEIGHTS_NAME, export_scorer, read_export_config
from audioscore.losses import ScoreRegressionLoss

log = logging.getLogger(__name__)


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Instantiate `cfg.logger` entries; wandb goes offline when no WANDB_API_KEY is set."""
    loggers = []
    for name, lcfg in (cfg.get("logger") or {}).items():
        if lcfg is None or "_target_" not in lcfg:
            continue
        kwargs = {}
        if "Wandb" in lcfg._target_:
            offline = not os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in (
                "offline",
                "disabled",
            )
            kwargs["offline"] = bool(lcfg.get("offline", False) or offline)
            Path(lcfg.save_dir).mkdir(parents=True, exist_ok=True)
        log.info("logger %s", name)
        loggers.append(hydra.utils.instantiate(lcfg, **kwargs))
    return loggers


def load_init_weights(net: torch.nn.Module, export_dir: str) -> None:
    """Start from an exported scorer: copy every weight it holds that matches this net."""
    read_export_config(export_dir)  # validates the directory
    state = load_file(str(Path(export_dir) / WEIGHTS_NAME))
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f"init_from={export_dir}: shape mismatch for {mismatched[:5]}")
    missing, unexpected = net.load_state_dict(state, strict=False)
    loaded = len(state) - len(unexpected)
    log.info(
        "init_from %s: loaded %d tensors (%d unexpected ignored)",
        export_dir,
        loaded,
        len(unexpected),
    )
    if loaded == 0:
        raise ValueError(f"init_from={export_dir}: no weight matches this net")


def save_run_config(cfg: DictConfig, out_dir: Path) -> None:
    """Keep `<run_dir>/.hydra/config.yaml` also when train() is called without Hydra (tests)."""
    path = out_dir / ".hydra" / "config.yaml"
    if not path.exists():
        write_text(path, OmegaConf.to_yaml(cfg, resolve=False))


def export_best(
    model: Any, ckpt_path: str | None, cfg: DictConfig, out_dir: Path, preprocess: Preprocess
) -> Path:
    """Export the best checkpoint (or the final weights) as a self-contained scorer dir, with
    the run's resolved net config (what `load_net` instantiates)."""
    if ckpt_path and Path(ckpt_path).is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        model.net.load_state_dict(state, strict=bool(cfg.save_full_encoder))
    meta = {"experiment": cfg.get("experiment_name"), "plan": cfg.get("plan"), "ckpt": ckpt_path}
    if isinstance(model.loss_fn, ScoreRegressionLoss):  # score = (raw - mean) / std
        meta["score_mean"], meta["score_std"] = float(model.loss_fn.mean), float(model.loss_fn.std)
    return export_scorer(
        model.net,
        out_dir / "export",
        net_config=cast(dict, OmegaConf.to_container(cfg.model.net, resolve=True)),
        save_full_encoder=bool(cfg.save_full_encoder),
        preprocess=preprocess,
        meta=meta,
    )


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit the scorer described by `cfg`; returns (metrics, objects)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg, out_dir)

    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model = hydra.utils.instantiate(cfg.model)  # the net, loss and partials built by Hydra
    if cfg.get("init_from"):
        load_init_weights(model.net, cfg.init_from)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg))

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)

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
    metrics, _ = train(cfg)
    return metrics.get("val/srcc")


if __name__ == "__main__":
    main()
