"""Frozen GE2E voice encoder (Resemblyzer) as plan B's timbre branch, beside CAM++.

The weights are Resemblyzer's `pretrained.pt` (the GE2E speaker encoder of Wan et al. 2018 as
trained by Resemblyzer 0.1.4, Apache-2.0), read from the installed `resemblyzer` package: the file
is located with `importlib.util.find_spec`, which does not execute the package (its `__init__`
imports webrtcvad and librosa, which this path never needs), and read with
`torch.load(weights_only=True)`. Nothing is downloaded.

The network (3-layer LSTM 40 -> 256, Linear 256 -> 256, ReLU, L2 norm) and the front end are
Resemblyzer's, reimplemented in torch so that clips batch: 16 kHz mono, volume raised to -30 dBFS
when quieter (`normalize_volume(increase_only=True)`), 40-bin mel power spectrogram (25 ms Hann
window, 10 ms hop, centred, zero-padded; librosa's Slaney mel filters), 1.6 s partial utterances
at 1.3 per second (`VoiceEncoder.compute_partial_slices`, the last one dropped below 75 %
coverage), the utterance embedding is the L2-normalised mean of the partial embeddings.

What differs from `VoiceEncoder().embed_utterance(preprocess_wav(wav, sr))`: no voice-activity
trimming (`trim_long_silences`, webrtcvad): the clip is embedded whole, long silences included;
and resampling uses `torchaudio.functional.resample` instead of librosa's soxr. On a waveform
that already is at 16 kHz (for instance the output of `preprocess_wav`) the embedding equals
Resemblyzer's within 1e-5 (tests/test_ge2e.py).

Batching is exact: every partial utterance is exactly 160 mel frames, so all partials of all
clips go through the LSTM as one batch with no padding; clips are zero-padded for the STFT,
which is what Resemblyzer does past the end of a clip, and each clip's frames stop at its own end.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchaudio.functional as taf
from torch import nn

from audiobase.audio import MUQ_SR
from audiobase.cache import FeatureCache
from audiobase.weights import MissingPackageError
from audioscore.models.components.campp import state_sha1

log = logging.getLogger(__name__)

GE2E_SR = 16_000
N_MELS = 40
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s
HIDDEN = 256
EMBED = 256
LAYERS = 3
NORM_TARGET_DBFS = -30.0
INT16_MAX = 2**15 - 1
PACKAGE = "resemblyzer"
INSTALL = "pip install --no-deps resemblyzer==0.1.4"
STATE_KEYS = {
    *(f"lstm.{kind}_l{i}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for i in range(LAYERS)),
    "linear.weight",
    "linear.bias",
}  # fmt: skip


class Ge2eLoadError(RuntimeError):
    """GE2E weights could not be found or do not fit the network; names the source."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason


def package_weights() -> Path:
    """`pretrained.pt` inside the installed resemblyzer package (the package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"the GE2E voice encoder (campp=ge2e) needs the {PACKAGE} package, which is not "
            f"installed: {INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise Ge2eLoadError(str(path), "the resemblyzer package has no pretrained.pt; reinstall it")
    return path


def load_ge2e_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The LSTM + Linear tensors of a GE2E checkpoint ({"model_state": ...} as Resemblyzer and
    Real-Time-Voice-Cloning save it, or a flat state dict); the training-only similarity
    parameters are dropped. Read with `weights_only=True`."""
    path = Path(path)
    try:
        ck: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise Ge2eLoadError(str(path), f"cannot read weights: {type(e).__name__}: {e}") from e
    state = ck.get("model_state", ck) if isinstance(ck, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Ge2eLoadError(str(path), "file does not hold a GE2E state dict")
    state = {k: v for k, v in state.items() if k in STATE_KEYS}
    if set(state) != STATE_KEYS:
        raise Ge2eLoadError(
            str(path), f"missing GE2E tensors: {sorted(STATE_KEYS - set(state))[:5]}"
        )
    return state


class Ge2eNet(nn.Module):
    """Resemblyzer's VoiceEncoder network: mels [N, frames, 40] -> L2-normalised [N, 256]."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBED)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))  # [N, 256]
        return raw / torch.norm(raw, dim=1, keepdim=True)


def partial_starts(n_samples: int, rate: float, min_coverage: float) -> list[int]:
    """First mel frame of each 160-frame partial utterance of a clip of `n_samples` at 16 kHz:
    `VoiceEncoder.compute_partial_slices`, always at least one."""
    n_frames = -(-(n_samples + 1) // HOP)
    step = round(GE2E_SR / rate / HOP)
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(f"GE2E rate {rate} gives a partial step of {step} frames (1..160)")
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


class Ge2eEncoder(nn.Module):
    """Frozen GE2E voice encoder: wav [B, T] at `in_sr` -> L2-normalised embedding [B, 256].

    Args:
        source: "resemblyzer" (the installed package's pretrained.pt), a GE2E checkpoint file of
            the same format, or None: the architecture with random weights that an enclosing
            checkpoint (a scorer export) overwrites; such an encoder has no cache.
        in_sr: sample rate of the incoming waveforms (MuQ's 24 kHz).
        rate: partial utterances per second (Resemblyzer's default 1.3).
        min_coverage: the last partial is kept when at least this share of it is audio.
        normalize_volume: raise quieter clips to -30 dBFS, as `preprocess_wav` does.
        max_s: only the first `max_s` seconds are used.
        cache_dir: FeatureCache root; used when `keys` are passed to forward.
    """

    window: torch.Tensor  # buffers (not in the state dict)
    mel_fb: torch.Tensor

    def __init__(
        self,
        source: str | None = PACKAGE,
        *,
        in_sr: int = MUQ_SR,
        rate: float = 1.3,
        min_coverage: float = 0.75,
        normalize_volume: bool = True,
        max_s: float = 90.0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 < min_coverage <= 1:
            raise ValueError(f"GE2E min_coverage must be in (0, 1], got {min_coverage}")
        if not (rate > 0 and max_s > 0 and in_sr > 0):
            raise ValueError(
                f"GE2E rate, max_s and in_sr must be > 0, got {rate}, {max_s}, {in_sr}"
            )
        partial_starts(GE2E_SR, rate, min_coverage)  # the rate gives 1..160 frames per step
        self.model = Ge2eNet()
        self.weights_sha1: str | None = None
        if source is not None:
            path = package_weights() if source == PACKAGE else Path(source).expanduser()
            if not path.is_file():
                raise Ge2eLoadError(str(source), "no such file (and not 'resemblyzer')")
            state = load_ge2e_state(path)
            try:
                self.model.load_state_dict(state)
            except RuntimeError as e:  # wrong shapes
                raise Ge2eLoadError(str(path), f"state dict does not fit GE2E: {e}") from e
            self.weights_sha1 = state_sha1(state)
        self.model.eval().requires_grad_(False)
        self.source = source
        self.in_sr, self.rate, self.min_coverage = int(in_sr), float(rate), float(min_coverage)
        self.normalize_volume, self.max_s = bool(normalize_volume), float(max_s)
        self.out_dim: int = EMBED
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        fb = taf.melscale_fbanks(
            N_FFT // 2 + 1, 0.0, GE2E_SR / 2, N_MELS, GE2E_SR, norm="slaney", mel_scale="slaney"
        )  # [201, 40], librosa.filters.mel's defaults
        self.register_buffer("mel_fb", fb, persistent=False)
        self.cache = None
        if cache_dir and self.weights_sha1 is not None:
            self.cache = FeatureCache(cache_dir, f"ge2e-{self.config_hash()[:16]}")

    # ---- Pretrained protocol (export) --------------------------------------------------------
    def base_state_keys(self) -> list[str]:
        """None: the encoder is small (1.4 M parameters) and the package may be missing where
        the scorer is used, so its weights travel in every export."""
        return []

    def standalone_config(self) -> dict[str, Any]:
        """A `_target_` config rebuilding this encoder without the package; for exports."""
        return {
            "_target_": f"{Ge2eEncoder.__module__}.Ge2eEncoder",
            "source": None,
            "in_sr": self.in_sr,
            "rate": self.rate,
            "min_coverage": self.min_coverage,
            "normalize_volume": self.normalize_volume,
            "max_s": self.max_s,
        }

    def config_hash(self) -> str:
        """Identifies everything that changes the embedding (weights + front end)."""
        cfg = (
            f"{self.weights_sha1}|{self.in_sr}|{self.rate}|{self.min_coverage}|"
            f"{self.normalize_volume}|{self.max_s}|v1"
        )
        return hashlib.sha1(cfg.encode()).hexdigest()

    def train(self, mode: bool = True) -> Ge2eEncoder:
        super().train(mode)
        self.model.eval()  # frozen whatever the parent does
        return self

    # ---- embedding ---------------------------------------------------------------------------
    def mels(self, wav16: torch.Tensor) -> torch.Tensor:
        """[B, T] at 16 kHz -> mel power spectrogram [B, 1 + T // 160, 40] (librosa's
        `melspectrogram(n_fft=400, hop_length=160, n_mels=40)`, centred, zero-padded)."""
        spec = (
            torch.stft(
                wav16,
                N_FFT,
                HOP,
                window=self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            ).abs()
            ** 2
        )  # [B, 201, F]
        return torch.matmul(spec.transpose(1, 2), self.mel_fb)  # [B, F, 40]

    def to_16k(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """[B, T] at `in_sr` -> ([B, T16] at 16 kHz, zero past each clip's end; true lengths),
        volume-normalised when `normalize_volume`. Batched resampling is exact: past its end a
        clip is zeros, which is what resampling it alone pads with."""
        lens = [int(n) for n in lengths]
        if min(lens, default=1) <= 0:
            raise ValueError("empty clip (length 0) given to GE2E")
        wav = wav.float()
        if self.in_sr != GE2E_SR:
            wav = taf.resample(wav, self.in_sr, GE2E_SR)
            lens = [-(-n * GE2E_SR // self.in_sr) for n in lens]
        lens = [min(n, int(self.max_s * GE2E_SR)) for n in lens]
        wav = wav[:, : max(lens)]
        mask = (
            torch.arange(wav.shape[1], device=wav.device)
            < torch.tensor(lens, device=wav.device)[:, None]
        )
        wav = wav * mask
        if self.normalize_volume:  # resemblyzer.audio.normalize_volume(increase_only=True)
            rms = torch.sqrt(
                (wav * INT16_MAX).pow(2).sum(1) / torch.tensor(lens, device=wav.device)
            )
            change = NORM_TARGET_DBFS - 20 * torch.log10(rms / INT16_MAX)
            gain = torch.where((rms > 0) & (change > 0), 10 ** (change / 20), torch.ones_like(rms))
            wav = wav * gain[:, None]
        return wav, lens

    @torch.no_grad()
    def embed_16k(self, wav16: torch.Tensor, lens: Sequence[int]) -> torch.Tensor:
        """[B, T] at 16 kHz (zero past each clip's end), true lengths -> [B, 256]."""
        starts = [partial_starts(n, self.rate, self.min_coverage) for n in lens]
        need = max((s[-1] + PARTIAL_FRAMES) * HOP for s in starts)  # Resemblyzer's zero padding
        if wav16.shape[1] < need:
            wav16 = torch.nn.functional.pad(wav16, (0, need - wav16.shape[1]))
        mel = self.mels(wav16)  # [B, F, 40]
        parts = torch.stack(
            [mel[i, s : s + PARTIAL_FRAMES] for i, ss in enumerate(starts) for s in ss]
        )  # [N, 160, 40]
        partial = self.model(parts)  # [N, 256]
        owner = torch.tensor([i for i, ss in enumerate(starts) for _ in ss], device=partial.device)
        total = torch.zeros(len(starts), EMBED, device=partial.device).index_add_(0, owner, partial)
        mean = total / torch.bincount(owner, minlength=len(starts)).unsqueeze(1)
        return mean / torch.norm(mean, dim=1, keepdim=True)

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """wav [B, T] at `in_sr`, lengths [B] -> L2-normalised embeddings [B, 256]."""
        wav16, lens = self.to_16k(wav, lengths)
        return self.embed_16k(wav16, lens)

    @torch.no_grad()
    def embed_clips(self, clips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Unpadded clips [T_i] at `in_sr` -> [N, 256], batched (as `CamppEncoder.embed_clips`)."""
        lengths = torch.tensor([c.shape[0] for c in clips])
        wav = torch.zeros(len(clips), int(lengths.max()), device=clips[0].device)
        for i, c in enumerate(clips):
            wav[i, : c.shape[0]] = c
        return self.embed(wav, lengths)

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str] | None = None
    ) -> torch.Tensor:
        """wav [B, T] at `in_sr`, lengths [B] -> L2-normalised embedding [B, 256]."""
        with torch.autocast(wav.device.type, enabled=False):  # GE2E stays in fp32
            if self.cache is None or keys is None:
                return self.embed(wav, lengths)
            ckeys = [self.cache.key(str(k), int(n)) for k, n in zip(keys, lengths, strict=True)]

            def compute(todo: list[int]) -> list[torch.Tensor]:
                return list(self.embed(wav[todo], lengths[todo]))

            return torch.stack(self.cache.get_or_compute(ckeys, "emb", compute, wav.device))

    def extra_repr(self) -> str:
        return f"source={self.source!r}, out_dim={self.out_dim}, in_sr={self.in_sr}"
