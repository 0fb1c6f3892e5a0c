"""`build_reward_model(cfg.model)`: one entry point for every reward-model config in conf/bench/model/."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from audiobase.preprocess import Preprocess
from audioscore.config import CONF_ROOT, load_config
from audioscore.safe_config import StoredConfigError
from rewards import custom
from rewards.base import RewardModel
from rewards.custom import CustomModelError, adapt, build_custom_model, load_class

RESERVED = ("name", "score_kwargs", "inputs", "grad")  # the runner's keys, not constructor args
BENCH_CONF_DIR = CONF_ROOT / "bench"
MODEL_CONF_DIR = BENCH_CONF_DIR / "model"


def compose_model_config(model: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The reward-model config `model` names, composed by Hydra as `python -m bench.run
    model=<model>` composes it (its `defaults:` list honoured), then `overrides` (a dot-list,
    `key=value`, new keys allowed) merged in.

    `model`: a name under conf/bench/model/, or a yaml path (its `defaults:` may name configs
    beside it or under conf/bench/model/). The composed config may only reference its own keys
    and call the resolvers in `audioscore.safe_config.SAFE_RESOLVERS` (StoredConfigError naming
    the file and key otherwise); a file that cannot be composed raises StoredConfigError too.
    """
    if model.endswith((".yaml", ".yml")):
        if not Path(model).is_file():
            raise StoredConfigError(model, "the file", "no such model config")
        cfg = load_config(model, conf_dir=MODEL_CONF_DIR, values=overrides)
    else:
        where = str(MODEL_CONF_DIR / f"{model}.yaml")
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", model) or not Path(where).is_file():
            names = sorted(p.stem for p in MODEL_CONF_DIR.glob("*.yaml"))
            raise StoredConfigError(
                where, "the file", f"no such model config (names: {', '.join(names)})"
            )
        cfg = load_config(
            "bench",
            [f"model={model}"],
            conf_dir=BENCH_CONF_DIR,
            values=overrides,
            node="model",
            where=where,
        )
    OmegaConf.set_struct(cfg, False)
    return cfg


def _to_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    if not isinstance(cfg, dict):
        raise TypeError(f"model config must be a mapping, got {type(cfg).__name__}")
    return dict(cfg)


def _locate(target: str) -> type:
    try:
        return get_class(target)
    except (ImportError, ValueError) as e:
        raise ValueError(f"model _target_ {target!r} cannot be loaded: {e}") from e


def model_class(model_cfg: Any) -> type:
    """The class a model config names (`class_path` or `_target_`), imported but not built."""
    cfg = _to_dict(model_cfg)
    if cfg.get("class_path"):
        return load_class(str(cfg["class_path"]))
    if cfg.get("_target_"):
        return _locate(str(cfg["_target_"]))
    raise ValueError(f"model config {cfg.get('name')!r} needs `_target_` or `class_path`")


def build_reward_model(model_cfg: Any) -> tuple[RewardModel, dict[str, Any]]:
    """Build the model a `conf/bench/model/<reward>.yaml` describes; returns (model, score_kwargs).

    Two forms:
    - `_target_: pkg.mod.Class` + constructor keys (cmi_rm, audioscore, http): `Class(**keys)`.
    - `class_path: pkg.mod:Class` + `init_kwargs` (+ `checkpoint`, `device` injected unless in
      init_kwargs): CMI-RewardBench's custom-model contract; duck-typed classes accepted.
    `name` (used in output paths), `score_kwargs` (passed to every `score_batch`), `inputs` and
    `grad` (how the benchmark runner calls the model) are not constructor arguments.
    """
    cfg = _to_dict(model_cfg)
    score_kwargs = dict(cfg.pop("score_kwargs", None) or {})
    name = cfg.pop("name", None)
    for key in ("inputs", "grad"):
        cfg.pop(key, None)
    if "class_path" in cfg:
        class_path = cfg.pop("class_path")
        if not class_path:
            raise CustomModelError(
                str(class_path), "model.class_path is empty (set model.class_path=pkg.mod:Class)"
            )
        init = dict(cfg.pop("init_kwargs", None) or {})
        checkpoint, device = cfg.pop("checkpoint", None), cfg.pop("device", None)
        if cfg:
            raise CustomModelError(
                class_path, f"unknown keys {sorted(cfg)}; put constructor args in init_kwargs"
            )
        model: RewardModel = build_custom_model(
            class_path, init, checkpoint=checkpoint, device=device
        )
    elif "_target_" in cfg:
        target = cfg.pop("_target_")
        # called directly (not hydra.utils.instantiate) so constructor errors keep their type
        built = _locate(target)(**cfg)
        if isinstance(built, RewardModel):
            model = built
        else:  # a duck-typed class: wrapped once, as a class_path model is
            try:
                model = adapt(built, str(target))
            except CustomModelError as e:
                raise TypeError(
                    f"model config {name!r} built a {type(built).__name__}, which has no "
                    f"sr/score_batch ({e.reason})"
                ) from e
    else:
        raise ValueError(f"model config {name!r} needs `_target_` or `class_path`")
    return model, score_kwargs


def expected_preprocess(model_cfg: Any, max_dur: float | None) -> Preprocess | None:
    """What the model a config names will be fed (`RewardModel.expected_preprocess`), read
    before it is built; `max_dur` is the runner's crop."""
    cfg = _to_dict(model_cfg)
    return custom.expected_preprocess(model_class(cfg), cfg, max_dur)


def declared_batch_independent(model_cfg: Any) -> bool | None:
    """The configured class's `batch_independent` declaration (None: undeclared)."""
    return custom.declared_batch_independent(model_class(model_cfg))
