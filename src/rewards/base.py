"""The reward-model contract (seed 000 / CMI-RewardBench `core/model_abc.py`).

Every reward model exposes `sr` and `score_batch(inputs, batch_size, max_dur, **kw)`
returning a float array [N, 2]: column 0 = text-music alignment, column 1 = musicality,
NaN where a model has no such dimension. Higher is better in both columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ALIGNMENT, MUSICALITY = 0, 1  # column indices of score_batch's output


@dataclass
class BatchInput:
    """One item to score. `audio`/`ref_audio`: a file path or a mono waveform tensor at `sr`."""

    audio: Any
    text: str = ""
    lyrics: str = ""
    ref_audio: Any | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RewardModel(ABC):
    """Abstract reward model. Subclasses set `sr` and implement `score_batch`."""

    @property
    @abstractmethod
    def sr(self) -> int:
        """Sample rate (Hz) that waveform inputs must already be at."""

    @abstractmethod
    def score_batch(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> np.ndarray:
        """Score `inputs`; returns float array [N, 2] (alignment, musicality)."""


def is_reward_model(obj: Any) -> bool:
    """Duck-typed check used by CMI-RewardBench's runner: an `sr` and a callable `score_batch`."""
    return hasattr(obj, "sr") and callable(getattr(obj, "score_batch", None))


def as_input(x: BatchInput | dict[str, Any] | Any) -> BatchInput:
    """Accept our BatchInput, CMI-RewardBench's BenchmarkBatchInput, a dict, or a bare path/tensor."""
    if isinstance(x, BatchInput):
        return x
    if isinstance(x, dict):
        return BatchInput(**{k: x[k] for k in ("audio", "text", "lyrics", "ref_audio") if k in x})
    if hasattr(x, "audio") and hasattr(x, "text"):
        return BatchInput(
            audio=x.audio,
            text=getattr(x, "text", "") or "",
            lyrics=getattr(x, "lyrics", "") or "",
            ref_audio=getattr(x, "ref_audio", None),
        )
    return BatchInput(audio=x)
