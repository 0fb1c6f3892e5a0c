"""The reward-model contract (seed 000 / CMI-RewardBench `core/model_abc.py`).

Every reward model exposes `sr` and `score_batch(inputs, batch_size, max_dur, **kw)`
returning a float array [N, 2]: column 0 = text-music alignment, column 1 = musicality,
NaN where a model has no such dimension. Higher is better in both columns. A model may return
more columns and name them in `extra_columns` (for columns 2..); the benchmark writes them as
`predicted_<name>`. `score_batch_detailed(...) -> (scores, errors[, details])` gives per-item
results (an error text or None per item, optionally a dict of details per item, e.g. a judge's
raw answer); the ABC's default scores the batch, then item by item if that fails.

What a model offers is declared on the class (`RewardModel`'s attributes) and read once into
`Capabilities`; a judge that compares two clips is a `PairwiseJudge`. A plain class with `sr`
and `score_batch` (CMI-RewardBench's duck-typed contract) is wrapped once at load
(`rewards.custom.adapt`).
"""

from __future__ import annotations

import contextlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from audiobase.plan import ScoringPlan
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


# (scores [N, C], error text or None per item[, details dict or None per item])
DetailedScores = (
    tuple[np.ndarray, Sequence[str | None]]
    | tuple[np.ndarray, Sequence[str | None], Sequence[dict[str, Any] | None]]
)


@dataclass(frozen=True)
class Capabilities:
    """What a reward model declares about itself, read once (`RewardModel.capabilities`) by
    every caller: the benchmark runner, the server, the custom-model adapter.

    `preprocess`: the model's own preprocessing contract (an exported scorer's), or None when
    it takes what the runner prepares (the first `max_dur` seconds at `sr`).
    `extra_columns`: names of score columns 2.., written as `predicted_<name>`.
    `thread_safe`: `score_batch` may run on several threads at once (no state changes).
    `batch_independent`: a clip's score never depends on its batch-mates (None: undeclared,
    the runner decides from the config). `pairwise`: pair rows go to `compare_batch`.
    """

    sr: int
    preprocess: Preprocess | None = None
    extra_columns: tuple[str, ...] = ()
    thread_safe: bool = False
    batch_independent: bool | None = None
    pairwise: bool = False


class RewardModel(ABC):
    """Abstract reward model. Subclasses set `sr` and implement `score_batch`; the class
    attributes below are the declarations callers read (once, through `capabilities`), each
    with the default a model gets by saying nothing.

    `thread_safe = True` declares that `score_batch` may run on several threads at once (no
    state changes while scoring): the benchmark runner then scores that many batches at once
    on CPU (`score_streams`), each on one intra-op thread. `batch_independent = True`: scores
    never depend on batch-mates, so batching settings are not part of the resume fingerprint.
    `extra_columns`: names of score columns 2... `preprocess`: the model's own contract (a
    property where only the built model knows it, e.g. an HTTP model asks its server).
    """

    thread_safe: bool = False
    batch_independent: bool | None = None
    extra_columns: Sequence[str] = ()
    preprocess: Preprocess | None = None

    @property
    @abstractmethod
    def sr(self) -> int:
        """Sample rate (Hz) that waveform inputs must already be at."""

    @abstractmethod
    def score_batch(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> np.ndarray:
        """Score `inputs`; returns float array [N, 2] (alignment, musicality)."""

    @property
    def capabilities(self) -> Capabilities:
        """The model's declarations, read on first use and kept in the instance. (Not
        functools.cached_property: before Python 3.12 it holds one lock for every instance, so
        an HTTP client reading its server's contract would wait on the server model's read.)"""
        caps = self.__dict__.get("_capabilities")
        if caps is None:
            caps = self.__dict__["_capabilities"] = self._read_capabilities()
        return caps

    def _read_capabilities(self) -> Capabilities:
        own = self.preprocess  # first: an HTTP model learns its server's sr from the same answer
        return Capabilities(
            sr=int(self.sr),
            preprocess=own if isinstance(own, Preprocess) else None,
            extra_columns=tuple(str(n) for n in self.extra_columns or ()),
            thread_safe=bool(self.thread_safe),
            batch_independent=self.batch_independent,
            pairwise=isinstance(self, PairwiseJudge) and bool(self.pairwise),
        )

    def scoring_plan(
        self, max_dur: float | None, max_seconds: float | None = None, batch_size: int = 8
    ) -> ScoringPlan:
        """How this model's inputs are prepared: its own contract when it declares one, else
        the runner's (the first `max_dur` seconds at `sr`, CMI-RewardBench's crop).
        `max_seconds`: files longer than this are refused (None: the contract's default)."""
        caps = self.capabilities
        pre = caps.preprocess or Preprocess(
            sr=caps.sr, max_dur=max_dur if max_dur and max_dur > 0 else None
        )
        return ScoringPlan(pre.replace(max_seconds=max_seconds), batch_size=batch_size)

    @classmethod
    def expected_preprocess(
        cls, config: dict[str, Any], max_dur: float | None
    ) -> Preprocess | None:
        """What the model built from `config` (its constructor keys) will be fed, told before
        it is built so decoding can start while it loads; None when only the built model can
        tell. Default: the runner's crop (`max_dur`) at the `sr` the config gives, else at the
        class's own `sr` (an int class attribute, or the constructor's default)."""
        return runner_preprocess(cls, config, max_dur, cls.sr)

    def score_batch_detailed(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> DetailedScores:
        """Per-item results: (scores [N, C] with NaN rows, error text or None per item[,
        details: a dict or None per item]); C = 2 + len(extra_columns), or more.

        Default: the whole call first; if it raises (or returns the wrong shape), items one by
        one, so one bad file costs one row, not the batch. Models that know per-item results
        themselves (HTTP, the audio-LLM judge) override it and send nothing twice.
        """
        n, width = len(inputs), 2 + len(self.capabilities.extra_columns)
        try:
            out = self.score_batch(inputs, batch_size, max_dur, **kwargs)
            return checked_scores(out, n, width), [None] * n
        except Exception:  # noqa: BLE001 - fall back to per-item to find and record the culprit(s)
            pass
        rows: list[np.ndarray | None] = [None] * n
        errors: list[str | None] = [None] * n
        for i, item in enumerate(inputs):
            try:
                out = self.score_batch([item], 1, max_dur, **kwargs)
                rows[i] = checked_scores(out, 1, width)[0]
            except Exception as e:  # noqa: BLE001 - recorded per item, the run goes on
                errors[i] = f"{type(e).__name__}: {e}"
        scores = np.full((n, max([width] + [len(r) for r in rows if r is not None])), np.nan)
        for i, r in enumerate(rows):
            if r is not None:
                scores[i, : len(r)] = r
        return scores, errors


class PairwiseJudge(RewardModel):
    """A reward model that can also compare two clips: pair rows (Music Arena, CMI-Pref) go to
    `compare_batch` while `pairwise` is on; clips without a pair are still scored per clip."""

    pairwise: bool = True  # an instance may turn it off: then pairs are scored clip by clip

    @abstractmethod
    def compare_batch(
        self,
        pairs: list[tuple[BatchInput, BatchInput]],
        max_dur: float | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        """One outcome per (A, B) pair: {"musicality": "model_a" | "model_b" | "both" | None,
        "alignment": ..., "details": {...}} or {"error": text, "details": {...}}."""


def checked_scores(out: Any, n: int, width: int) -> np.ndarray:
    """`out` as float64 [n, >= width]; ValueError naming the shape otherwise."""
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < width:
        raise ValueError(f"score_batch returned shape {arr.shape}, expected [{n}, {width}]")
    return arr


def runner_preprocess(
    cls: type, config: dict[str, Any], max_dur: float | None, class_sr: object = None
) -> Preprocess | None:
    """The runner's crop (`max_dur`; none when falsy) at the `sr` the config (or its
    `init_kwargs`) gives, else at the class's own: `class_sr` when it is an int (a class
    attribute), or `cls`'s constructor default. None when no sr is known before building."""
    sr = config.get("sr", (config.get("init_kwargs") or {}).get("sr"))
    if sr is None:
        sr = class_sr
        if not isinstance(sr, int):  # a property or set in __init__: the constructor default
            with contextlib.suppress(TypeError, ValueError):
                default = inspect.signature(cls).parameters.get("sr")
                sr = default.default if default is not None else None
    if not isinstance(sr, int) or isinstance(sr, bool):
        return None
    return Preprocess(sr=sr, max_dur=max_dur if max_dur and max_dur > 0 else None)


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
