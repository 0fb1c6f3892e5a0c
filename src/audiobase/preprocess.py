"""The preprocessing contract: one object decides what audio a model sees.

A `Preprocess` names the sample rate, the crop (how long, which window), the loudness target
and the shortest input the model accepts. An exported scorer stores its own in `config.yaml`;
training validation, `python -m audioscore.score`, the reward wrapper, `rewards.serve` and
`bench.run` all prepare audio through it, so one file gets one score whichever route it takes.

Preparing is idempotent: a prepared waveform passed through `apply` again comes back the same
(within float rounding of the loudness gain), which is what lets a client prepare audio and a
server apply the same contract on arrival.

`max_seconds` is the reading route's safety limit, not part of what the model sees: files (and
waveforms) longer than it are refused (`AudioTooLongError`) before they are decoded whole. It
is left out of `to_dict` (so exports, /health and bench fingerprints do not carry it) and out
of equality; each route sets its own (training data config, `--max-seconds` of the score CLI).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audiobase.audio import (
    DEFAULT_MAX_SECONDS,
    AudioDecodeError,
    AudioTooShortError,
    audio_duration,
    load_audio,
    loudness_normalize,
    too_long,
)

CROPS = ("start", "center")
WAVEFORM = "<waveform>"  # the name errors give an input that is not a file


@dataclass(frozen=True)
class Preprocess:
    """What a model sees: mono float32 at `sr`, at most `max_dur` s, loudness `target_lufs`.

    Args:
        sr: sample rate (Hz) of the prepared waveform.
        max_dur: longest input in seconds (None = the whole clip).
        crop: which `max_dur` window of a longer clip: `start` (the first seconds, as
            CMI-RewardBench) or `center` (the middle, as the scorer's validation).
        target_lufs: integrated loudness to normalise to (None = leave the level alone).
        min_samples: fewer samples than this is an error naming the file (MuQ needs 1025).
        max_seconds: a longer file is refused before it is decoded whole (None = no limit);
            a safety limit of the route, not stored by `to_dict`.
    """

    sr: int
    max_dur: float | None = None
    crop: str = "start"
    target_lufs: float | None = None
    min_samples: int = 0
    max_seconds: float | None = field(default=DEFAULT_MAX_SECONDS, compare=False)

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"preprocess.crop must be one of {CROPS}, got {self.crop!r}")
        if self.sr <= 0 or (self.max_dur is not None and self.max_dur <= 0):
            raise ValueError(f"preprocess needs sr > 0 and max_dur > 0 or null: {self}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"preprocess.max_seconds must be > 0 or null: {self}")

    @property
    def max_samples(self) -> int | None:
        return None if self.max_dur is None else int(round(self.max_dur * self.sr))

    def window(self, duration: float) -> float:
        """Start (seconds) of the window this contract takes from a clip of `duration` s."""
        if self.max_dur is None or self.crop == "start" or duration <= self.max_dur:
            return 0.0
        return (duration - self.max_dur) / 2

    def load(self, path: str | os.PathLike, offset: float | None = None) -> np.ndarray:
        """Decode `path` and prepare it -> [T] float32; `offset` (s) overrides the crop window
        (training's random crops). Raises `AudioError` naming the file and the reason."""
        if offset is None and self.crop == "center":
            offset = self.window(audio_duration(path, max_seconds=self.max_seconds))
        wav = load_audio(
            path,
            self.sr,
            offset=offset or 0.0,
            duration=self.max_dur,
            min_samples=self.min_samples,
            max_seconds=self.max_seconds,
        )
        return self.normalize(wav)

    def apply(self, wav: Any, name: str = WAVEFORM) -> np.ndarray:
        """A waveform already at `sr` ([T], [1, T] or [C, T], numpy or torch) -> [T] float32."""
        x = to_mono(wav, name)
        if self.max_seconds is not None and x.shape[0] > self.max_seconds * self.sr:
            raise too_long(name, self.max_seconds, f"{x.shape[0] / self.sr:.1f} s at {self.sr} Hz")
        n_max = self.max_samples
        if n_max is not None and x.shape[0] > n_max:
            start = (x.shape[0] - n_max) // 2 if self.crop == "center" else 0
            x = x[start : start + n_max]
        if x.shape[0] < max(self.min_samples, 1):
            raise AudioTooShortError(
                name, f"{x.shape[0]} samples at {self.sr} Hz, need at least {self.min_samples}"
            )
        return self.normalize(x)

    def __call__(self, audio: Any) -> np.ndarray:
        """A path (decoded) or a waveform at `sr` -> the model input [T] float32."""
        if isinstance(audio, str | os.PathLike):
            return self.load(audio)
        return self.apply(audio)

    def normalize(self, wav: np.ndarray) -> np.ndarray:
        if self.target_lufs is not None:
            wav = loudness_normalize(wav, self.sr, self.target_lufs)
        return np.ascontiguousarray(wav, dtype=np.float32)

    def replace(self, **changes: Any) -> Preprocess:
        """A copy with `changes` (keys of this class only; None values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """What the model sees (without the route's `max_seconds`)."""
        d = dataclasses.asdict(self)
        d.pop("max_seconds")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Build from a stored dict; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown preprocess keys {unknown}; known: {sorted(names)}")
        return cls(**d)


def to_mono(wav: Any, name: str = WAVEFORM) -> np.ndarray:
    """[T], [1, T] or [C, T] (channels averaged), numpy or torch -> finite [T] float32."""
    if hasattr(wav, "detach"):  # a torch tensor, without importing torch here
        wav = wav.detach().float().cpu().numpy()
    if not isinstance(wav, np.ndarray):
        raise TypeError(f"audio must be a path or a waveform, got {type(wav).__name__}")
    x = wav.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x[0] if x.shape[0] == 1 else x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"{name}: waveform must be [T] or [C, T], got shape {tuple(wav.shape)}")
    if not np.all(np.isfinite(x)):
        raise AudioDecodeError(name, "waveform contains NaN or Inf")
    return x
