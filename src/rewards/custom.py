"""Custom reward models named by `module:Class` (CMI-RewardBench's `--model_class_path` contract)."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import numpy as np
from hydra.utils import get_class

from audiobase.preprocess import Preprocess
from audiobase.weights import UserError
from rewards.base import BatchInput, DetailedScores, PairwiseJudge, RewardModel, runner_preprocess


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
                f"module {mod_name!r} does not import: no module named {cause.name!r} (run from "
                "the folder that holds it, put that folder on PYTHONPATH, or install the package)"
            )
        else:
            reason = f"module {mod_name!r} does not import: {type(cause).__name__}: {cause}"
        raise CustomModelError(class_path, reason) from e
    if not callable(declared(cls)["score_batch"]):
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


# What a plain class has (`sr`, `score_batch`) and may declare, with what saying nothing means
# (the `RewardModel` attributes of the same names; docs/custom.md lists them).
DECLARATIONS: dict[str, Any] = {
    "sr": None,
    "score_batch": None,
    "extra_columns": (),
    "thread_safe": False,
    "batch_independent": None,
    "preprocess": None,
    "pairwise": False,
    "score_batch_detailed": None,
    "compare_batch": None,
}


def declared(obj: Any) -> dict[str, Any]:
    """A plain class's (or instance's) `DECLARATIONS`, each or its default. The one place a
    user's class is read by name: at load, never while scoring. A `RewardModel` subclass
    declares them as attributes of the ABC and is read through those instead."""
    return {name: getattr(obj, name, default) for name, default in DECLARATIONS.items()}


def column_names(names: Any, class_path: str) -> list[str]:
    """`extra_columns` as a list of names; CustomModelError for anything else."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names or ()):
        raise CustomModelError(
            class_path, f"extra_columns must be a list of names, got {names!r:.80}"
        )
    return list(names or ())


class CustomRewardModel(RewardModel):
    """Wraps a user's model: its declarations (`DECLARATIONS`) are read once here, and its output
    is checked to be [N, 2 + len(extra_columns)]. Other attributes (e.g. `device`) pass
    through to the user's object."""

    def __init__(self, inner: Any, class_path: str) -> None:
        self.inner, self.class_path = inner, class_path
        if isinstance(inner, RewardModel):  # declared on the ABC: read through it
            caps = inner.capabilities
            decl: dict[str, Any] = {
                "extra_columns": caps.extra_columns,
                "thread_safe": caps.thread_safe,
                "batch_independent": caps.batch_independent,
                "preprocess": caps.preprocess,
                # its own per-item results only: the ABC's default is this wrapper's too, and
                # goes through the shape check of `score_batch` below
                "score_batch_detailed": (
                    inner.score_batch_detailed
                    if type(inner).score_batch_detailed is not RewardModel.score_batch_detailed
                    else None
                ),
            }
            if isinstance(inner, PairwiseJudge):
                decl |= {"pairwise": caps.pairwise, "compare_batch": inner.compare_batch}
        else:
            decl = declared(inner)
        self.extra_columns = column_names(decl["extra_columns"], class_path)
        self.thread_safe = bool(decl["thread_safe"])
        self.batch_independent = decl["batch_independent"]
        own = decl["preprocess"]
        self.preprocess = own if isinstance(own, Preprocess) else None
        detailed = decl["score_batch_detailed"]
        self._detailed = detailed if callable(detailed) else None

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

    def score_batch_detailed(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> DetailedScores:
        """The user's own per-item results when it declares them, else the ABC's default."""
        if self._detailed is not None:
            return self._detailed(inputs, batch_size, max_dur, **kwargs)
        return super().score_batch_detailed(inputs, batch_size, max_dur, **kwargs)

    def __getattr__(self, name: str) -> Any:  # e.g. device
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"CustomRewardModel({self.class_path})"


class CustomPairwiseJudge(CustomRewardModel, PairwiseJudge):
    """A user's judge declaring `pairwise` and a `compare_batch(pairs, max_dur, **kw)`."""

    def __init__(self, inner: Any, class_path: str, compare: Any) -> None:
        super().__init__(inner, class_path)
        self._compare = compare

    def compare_batch(
        self,
        pairs: list[tuple[BatchInput, BatchInput]],
        max_dur: float | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        return list(self._compare(pairs, max_dur=max_dur, **kwargs))


def adapt(obj: Any, class_path: str) -> CustomRewardModel:
    """A user's model object as a `RewardModel`, its declarations read once: a judge declaring
    `pairwise` with a callable `compare_batch` becomes a `PairwiseJudge`. CustomModelError when
    it lacks `sr` or a callable `score_batch`."""
    if isinstance(obj, RewardModel):
        if isinstance(obj, PairwiseJudge) and obj.capabilities.pairwise:
            return CustomPairwiseJudge(obj, class_path, obj.compare_batch)
        return CustomRewardModel(obj, class_path)
    decl = declared(obj)
    if decl["sr"] is None:
        raise CustomModelError(class_path, "instance has no `sr` attribute")
    if not callable(decl["score_batch"]):
        raise CustomModelError(class_path, "instance has no callable score_batch")
    if decl["pairwise"] and callable(decl["compare_batch"]):
        return CustomPairwiseJudge(obj, class_path, decl["compare_batch"])
    return CustomRewardModel(obj, class_path)


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
    return adapt(inner, class_path)


def expected_preprocess(
    cls: type, config: dict[str, Any], max_dur: float | None
) -> Preprocess | None:
    """`RewardModel.expected_preprocess` for a `class_path` class: its own when it is a
    `RewardModel`; for a plain class None when it declares a `preprocess` (known once built),
    else the runner's crop at the `sr` its config, class or constructor gives."""
    if issubclass(cls, RewardModel):
        return cls.expected_preprocess(config, max_dur)
    decl = declared(cls)
    if decl["preprocess"] is not None:
        return None
    return runner_preprocess(cls, config, max_dur, decl["sr"])


def declared_batch_independent(cls: type) -> bool | None:
    """A configured class's `batch_independent` declaration (None: undeclared)."""
    if issubclass(cls, RewardModel):
        return cls.batch_independent
    value = declared(cls)["batch_independent"]
    return value if isinstance(value, bool) else None
