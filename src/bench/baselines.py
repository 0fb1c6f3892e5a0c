"""A signal-statistics reward model: a cheap, deterministic, non-learned baseline.

Musicality = loudness (RMS dBFS / 20) minus spectral flatness (noise-like audio scores lower);
alignment = spectral centroid in kHz, a brightness proxy that ignores the prompt (it only shows
how far a text-blind baseline gets). Use it as `model=custom` with
`class_path: bench.baselines:SignalStatsReward`; it needs no weights, so tests and the
throughput script can run the full pipeline with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from audiobase.preprocess import Preprocess
from rewards.base import BatchInput, RewardModel, as_input


class SignalStatsReward(RewardModel):
    """Scores waveforms (or paths) from RMS level, spectral flatness and spectral centroid."""

    def __init__(
        self, sr: int = 16_000, n_fft: int = 1024, checkpoint: Any = None, device: str = "cpu"
    ):
        self._sr, self.n_fft, self.device = int(sr), int(n_fft), device

    @property
    def sr(self) -> int:
        return self._sr

    def load(self, x: Any, max_dur: float | None) -> torch.Tensor:
        """Waveform [T] at self.sr from a tensor/array or a file path, prepared as the runner
        prepares any model's input (the first `max_dur` s, at least one FFT window)."""
        crop = max_dur if max_dur and max_dur > 0 else None
        pre = Preprocess(sr=self.sr, max_dur=crop, min_samples=self.n_fft)
        return torch.from_numpy(pre(x))  # [T]

    def score_one(self, wav: torch.Tensor) -> tuple[float, float]:
        """(alignment, musicality) for one waveform [T]."""
        rms_db = 20 * torch.log10(wav.pow(2).mean().sqrt() + 1e-8)
        win = torch.hann_window(self.n_fft)
        spec = torch.stft(wav, self.n_fft, self.n_fft // 2, window=win, return_complex=True)
        power = spec.abs().pow(2).mean(dim=1) + 1e-12  # [F] mean power per bin
        flatness = torch.exp(torch.log(power).mean()) / power.mean()  # 1 = white noise
        freqs = torch.linspace(0, self.sr / 2, power.numel())
        centroid_khz = (freqs * power).sum() / power.sum() / 1000
        return float(centroid_khz), float(rms_db / 20 - flatness)

    def score_batch(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> np.ndarray:
        rows = [self.score_one(self.load(as_input(x).audio, max_dur)) for x in inputs]
        return np.array(rows, dtype=np.float64).reshape(len(inputs), 2)  # [N, 2]
