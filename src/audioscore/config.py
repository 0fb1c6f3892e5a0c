"""`load_config`: the one way a yaml config is read into an OmegaConf tree (training, bench,
model and timbre-grid configs): composed by Hydra with its `defaults:` list, then held to the
trust model's rule for configs from disk (docs/security.md): every string may only reference
other keys or call the resolvers in `SAFE_RESOLVERS`.

Stored configs that get built (an export's `config.yaml`, a run's `.hydra/config.yaml`) go
further through `audioscore.safe_config` (`resolve_stored`, `check_targets`): their `_target_`s
are checked on the resolved tree before anything is instantiated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from audioscore.safe_config import SAFE_RESOLVERS, StoredConfigError, check_interpolations

CONF_ROOT = Path(__file__).resolve().parents[2] / "conf"  # conf/train, conf/bench, conf/timbre


def load_config(
    config: str | Path,
    overrides: Sequence[str] = (),
    *,
    conf_dir: str | Path | None = None,
    values: Sequence[str] = (),
    node: str | None = None,
    where: str | None = None,
) -> DictConfig:
    """The config `config` names, composed by Hydra (its `defaults:` list honoured) with the
    Hydra `overrides`, then `values` (a dot-list, `key=value`, new keys allowed) merged in.

    `config`: a config name in `conf_dir`, or a yaml path (its `defaults:` may then also name
    configs in `conf_dir`). `conf_dir=None` composes in the running `@hydra.main` app's own
    search path. `node`: return only this sub-tree (e.g. `model` of a bench config); `where`:
    the file errors name (default: the composed file).
    A file that is missing or cannot be composed, or a string calling a resolver outside
    `SAFE_RESOLVERS`, raises `StoredConfigError` naming the file (and key).
    """
    path = Path(config) if str(config).endswith((".yaml", ".yml")) else None
    if where is None:
        where = str(path) if path is not None else str(Path(conf_dir or ".") / f"{config}.yaml")
    cfg: Any
    try:
        if path is not None:
            if not path.is_file():
                raise StoredConfigError(where, "the file", "no such config")
            search = [f"hydra.searchpath=[file://{Path(conf_dir).resolve()}]"] if conf_dir else []
            with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base="1.3"):
                cfg = compose(path.stem, overrides=[*search, *overrides])
        elif conf_dir is None:  # inside @hydra.main: its config dir is already initialised
            cfg = compose(config_name=str(config), overrides=list(overrides))
        else:
            with initialize_config_dir(
                config_dir=str(Path(conf_dir).resolve()), version_base="1.3"
            ):
                cfg = compose(str(config), overrides=list(overrides))
        if node is not None:
            cfg = cfg[node]
        if values:
            OmegaConf.set_struct(cfg, False)
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(values)))
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as e:
        raise StoredConfigError(where, "the file", f"cannot be composed ({e})") from e
    if not isinstance(cfg, DictConfig):
        raise StoredConfigError(where, "the file", "is not a mapping")
    check_interpolations(OmegaConf.to_container(cfg, resolve=False), where, SAFE_RESOLVERS)
    return cfg
