"""Custom reward models named by `module:Class` (CMI-RewardBench's `--model_class_path` contract)."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import numpy as np
from hydra.utils import get_class

from audiobase.weights import UserError
from rewards.base import BatchInput, RewardModel, is_reward_model


class CustomModelError(UserError, ValueError):
    """A `class_path` that does not import, or a class that is not a reward model."""

    def __init__(self, class_path: str, reason: str) -> None:
        self.class_path, self.reason = class_path, reason
        super().__init__(f"{class_path}: {reason}")


def load_class(class_path: str) -> type:
    """'pkg.mod:Class' (or 'pkg.mod.Class') -> the class object (through Hydra's locator)."""
    if ":" in class_path:
        mod_name, _, attr = class_path.partition(":")
    else:
        mod_name, _, attr = class_path.rpartition(".")
    if not mod_name or not attr:
        raise CustomModelError(class_path, "expected 'package.module:ClassName'")
    try:
        cls = get_class(f"{mod_name}.{attr}")
    except ValueError as e:  # located, but not a class
        raise CustomModelError(class_path, f"{attr!r} is not a class: {e}") from e
    except Exception as e:  # noqa: BLE001 - any import failure is reported with its cause
        # a module that failed to import is not left in sys.modules
        cause = e.__cause__ or e
        if mod_name in sys.modules:
            reason = f"{mod_name!r} has no attribute {attr!r}: {cause}"
        elif isinstance(cause, ModuleNotFoundError) and mod_name.startswith(str(cause.name)):
            reason = (
                f"no module named {cause.name!r}: run from the folder that holds it, put that "
                "folder on PYTHONPATH, or install the package"
            )
        else:
            reason = f"module {mod_name!r} does not import: {type(cause).__name__}: {cause}"
        raise CustomModelError(class_path, reason) from e
    if not callable(getattr(cls, "score_batch", None)):
        raise CustomModelError(
            class_path, "class has no callable score_batch(inputs, batch_size, max_dur, **kw)"
        )
    return cls


def _accepts(cls: type, name: str) -> bool:
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class CustomRewardModel(RewardModel):
    """Wraps a user's model: checks the output is [N, 2 + len(extra_columns)] (the class may
    name extra score columns in `extra_columns`); every other attribute passes through."""

    def __init__(self, inner: Any, class_path: str) -> None:
        self.inner, self.class_path = inner, class_path

    @property
    def sr(self) -> int:
        return int(self.inner.sr)

    def score_batch(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> np.ndarray:
        out = np.asarray(
            self.inner.score_batch(inputs, batch_size, max_dur, **kwargs), dtype=np.float64
        )
        width = 2 + len(self.extra_columns)
        if out.shape != (len(inputs), width):
            named = f" (2 + extra_columns {self.extra_columns})" if width > 2 else ""
            raise CustomModelError(
                self.class_path,
                f"score_batch returned shape {out.shape}, expected ({len(inputs)}, {width})"
                + named,
            )
        return out

    @property
    def extra_columns(self) -> list[str]:
        """The names the user's class gives its score columns 2.. (`extra_columns`), or []."""
        names = getattr(self.inner, "extra_columns", None) or []
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise CustomModelError(
                self.class_path, f"extra_columns must be a list of names, got {names!r:.80}"
            )
        return list(names)

    def __getattr__(self, name: str) -> Any:  # e.g. score_batch_detailed, device
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"CustomRewardModel({self.class_path})"


def build_custom_model(
    class_path: str,
    init_kwargs: dict[str, Any] | None = None,
    checkpoint: Any = None,
    device: Any = None,
) -> CustomRewardModel:
    """`Class(**init_kwargs)` with `checkpoint`/`device` injected unless given (or not accepted)."""
    cls = load_class(class_path)
    kw = dict(init_kwargs or {})
    for key, value in (("checkpoint", checkpoint), ("device", device)):
        if key not in kw and _accepts(cls, key):
            kw[key] = value
    try:
        inner = cls(**kw)
    except TypeError as e:
        raise CustomModelError(class_path, f"cannot construct with {sorted(kw)}: {e}") from e
    if not is_reward_model(inner):
        raise CustomModelError(class_path, "instance has no `sr` attribute")
    return CustomRewardModel(inner, class_path)
