"""The reward-model contract (seed 000 / CMI-RewardBench `core/model_abc.py`).

Every reward model exposes `sr` and `score_batch(inputs, batch_size, max_dur, **kw)`
returning a float array [N, 2]: column 0 = text-music alignment, column 1 = musicality,
NaN where a model has no such dimension. Higher is better in both columns. A model may return
more columns and name them in `extra_columns: list[str]` (for columns 2..); the benchmark
writes them as `predicted_<name>`. A model with per-item results may also offer
`score_batch_detailed(...) -> (scores, errors[, details])`: an error text or None per item, and
optionally a dict (or None) of details per item, e.g. a judge's raw answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from audiobase.preprocess import Preprocess

ALIGNMENT, MUSICALITY = 0, 1  # column indices of score_batch's output


@dataclass
class BatchInput:
    """One item to score. `audio`/`ref_audio`: a file path or a mono waveform tensor at `sr`.
    `path`: the file a waveform was decoded from, so errors can name it (not sent to models'
    services, not part of `to_dict`)."""

    audio: Any
    text: str = ""
    lyrics: str = ""
    ref_audio: Any | None = None
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The CMI-RewardBench fields (audio, text, lyrics, ref_audio)."""
        d = asdict(self)
        d.pop("path")
        return d


class RewardModel(ABC):
    """Abstract reward model. Subclasses set `sr` and implement `score_batch`.

    `thread_safe = True` declares that `score_batch` may run on several threads at once (no
    state changes while scoring): the benchmark runner then scores that many batches at once
    on CPU (`score_streams`), each on one intra-op thread.
    """

    thread_safe: bool = False

    @property
    @abstractmethod
    def sr(self) -> int:
        """Sample rate (Hz) that waveform inputs must already be at."""

    @abstractmethod
    def score_batch(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> np.ndarray:
        """Score `inputs`; returns float array [N, 2] (alignment, musicality)."""


def model_contract(model: Any) -> Preprocess | None:
    """The model's own preprocessing contract (an exported scorer's), or None when it takes
    whatever the runner prepares (CMI-RewardBench's first `max_dur` seconds at `sr`)."""
    own = getattr(model, "preprocess", None)
    return own if isinstance(own, Preprocess) else None


def is_reward_model(obj: Any) -> bool:
    """Duck-typed check used by CMI-RewardBench's runner: an `sr` and a callable `score_batch`."""
    return hasattr(obj, "sr") and callable(getattr(obj, "score_batch", None))


def as_input(x: BatchInput | dict[str, Any] | Any) -> BatchInput:
    """Accept our BatchInput, CMI-RewardBench's BenchmarkBatchInput, a dict, or a bare path/tensor."""
    if isinstance(x, BatchInput):
        return x
    if isinstance(x, dict):
        keys = ("audio", "text", "lyrics", "ref_audio", "path")
        return BatchInput(**{k: x[k] for k in keys if k in x})
    if hasattr(x, "audio") and hasattr(x, "text"):
        return BatchInput(
            audio=x.audio,
            text=getattr(x, "text", "") or "",
            lyrics=getattr(x, "lyrics", "") or "",
            ref_audio=getattr(x, "ref_audio", None),
        )
    return BatchInput(audio=x)


class ScoreItemError(RuntimeError):
    """One input could not be scored. `index` is its position in the `score_batch` call;
    `audio` names it: its path, the file a waveform came from (`BatchInput.path`), or
    `<waveform>` when nothing is known."""

    def __init__(self, index: int, item: Any, reason: str) -> None:
        self.index, self.reason = index, reason
        audio = getattr(item, "audio", item)
        self.audio = str(
            getattr(item, "path", None) or ("<waveform>" if _is_array(audio) else audio)
        )
        super().__init__(f"item {index} ({self.audio}): {reason}")


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def load_waveform(x: Any, sr: int, max_dur: float | None = None, *, min_samples: int = 0):
    """A path (decoded and resampled to `sr`) or a waveform already at `sr` -> 1-D float32 tensor.

    Waveforms may be [T], [1, T] or [C, T] (channels averaged), torch or numpy; the first
    `max_dur` seconds are kept (CMI-RewardBench's crop). Raises `AudioError` naming the file.
    """
    pre = Preprocess(sr=sr, max_dur=max_dur or None, crop="start", min_samples=min_samples)
    return torch.from_numpy(pre(x))


def score_detailed(
    model: Any, inputs: list, batch_size: int, max_dur: float, **kwargs: Any
) -> tuple[np.ndarray, list[str | None]]:
    """Score with per-item failure capture: (scores [N, C] with NaN rows, error text or None
    per item); C = 2, or more for a model with `extra_columns`.

    Tries the whole call first; if it raises, scores items one by one so one bad file costs one
    row, not the batch. Models with their own `score_batch_detailed` (e.g. HTTP) are used
    directly; its optional third element (per-item details) is not returned here.
    """
    if hasattr(model, "score_batch_detailed"):
        out = model.score_batch_detailed(inputs, batch_size, max_dur, **kwargs)
        return out[0], out[1]
    try:
        scores = np.asarray(
            model.score_batch(inputs, batch_size, max_dur, **kwargs), dtype=np.float64
        )
        return scores, [None] * len(inputs)
    except Exception:  # noqa: BLE001 - fall back to per-item to find and record the culprit(s)
        pass
    rows: list[np.ndarray | None] = [None] * len(inputs)
    errors: list[str | None] = [None] * len(inputs)
    for i, item in enumerate(inputs):
        try:
            rows[i] = np.asarray(model.score_batch([item], 1, max_dur, **kwargs), np.float64)[0]
        except Exception as e:  # noqa: BLE001 - recorded per item, the run goes on
            errors[i] = f"{type(e).__name__}: {e}"
    width = max([2] + [len(r) for r in rows if r is not None])
    scores = np.full((len(inputs), width), np.nan)
    for i, r in enumerate(rows):
        if r is not None:
            scores[i, : len(r)] = r
    return scores, errors
