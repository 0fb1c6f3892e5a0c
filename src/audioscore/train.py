"""Train a scorer: `python -m audioscore.train experiment=muq_lora [debug=tiny] [key=value ...]`.

`train(cfg)` is the plain function (tests call it); `main()` is the thin Hydra wrapper. Each job
is its own module: `training.build` (config to modules, `init_from`), `training.fit` (the
Lightning run), `export.run.export_best` (the best checkpoint as a scorer), `training.loggers`
(reporting).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from audiobase.weights import find_user_error
from audioscore.noise import quiet_third_party


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit the scorer described by `cfg`; returns (metrics, objects)."""
    # the jobs: torch, Lightning, transformers, peft, ~15 s of import on 2 cores; imported here
    # so that `--help` (and Hydra's config errors) answer without them
    import lightning as L

    from audioscore.export.run import export_best
    from audioscore.training.build import build_modules, check_data_keys, save_run_config
    from audioscore.training.fit import fit
    from audioscore.training.init_from import adopt_init_lora
    from audioscore.training.loggers import build_loggers

    check_data_keys(cfg)
    quiet_third_party()
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("init_from"):
        adopt_init_lora(cfg)  # before anything is built or saved: the LoRA rank must fit
    save_run_config(cfg, out_dir)

    datamodule, model, callbacks = build_modules(cfg)
    loggers = build_loggers(cfg)
    trainer, metrics, best = fit(cfg, model, datamodule, callbacks, loggers)

    objects: dict[str, Any] = {"model": model, "datamodule": datamodule, "trainer": trainer}
    objects["best_ckpt"] = best
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
