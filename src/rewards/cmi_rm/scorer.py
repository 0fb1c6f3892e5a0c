"""`CMIRewardModel`: CMI-RM behind the reward-model interface (`sr`, `score_batch`).

Modes (as the official `baselines/inference.py`):
- `final` (default): crop to `max_dur`, split into non-overlapping 30 s chunks, encode each
  chunk, concatenate the frames per clip, score once.
- `standard`: one window of `max_dur` seconds, or with `dur_step` sliding windows whose scores
  are averaged (broken upstream; works here).

By default a clip's score does not depend on its batch-mates: chunks (of evaluated clips and
references alike) are encoded `batch_size` per MuQ pass in length order, padded but exact (MuQ
never sees the padding: `audiobase.muq_padded`), downsamplers run on each
item's own frames, and a clip without reference audio gets an empty reference. What clips of one
call share is encoded once per call: each distinct text or lyrics string, and each distinct
reference waveform (the same tensor, or equal samples: both sides of a benchmark pair carry the
row's reference). `upstream_compat=True` reproduces upstream
instead: padded chunk batches with masks, padded downsampling, and 1 s of encoded silence as the
reference of ref-less clips whenever another clip in the batch has one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from audiobase.cache import FeatureCache
from audiobase.muq_padded import prepare_stem_for_scoring
from audiobase.plan import length_sorted_batches, pad_waves
from rewards.base import BatchInput, RewardModel, ScoreItemError, as_input, load_waveform
from rewards.cmi_rm.config import CMIRMConfig, find_checkpoint
from rewards.cmi_rm.encoders import (
    encode_audio_frames,
    encode_audio_frames_exact,
    encode_text_tokens,
)
from rewards.cmi_rm.loading import load_weights
from rewards.cmi_rm.model import CMIRewardNet

log = logging.getLogger(__name__)

CHUNK_SECONDS = 30.0
MUQ_MIN_SAMPLES = 1025  # shorter inputs break MuQ's conv stem (audiobase.audio.MUQ_MIN_SAMPLES)


@dataclass
class _Segment:
    wav: torch.Tensor  # [N] at sr
    ref: torch.Tensor | None  # [M] at sr
    text: str
    lyrics: str


@dataclass
class _Shared:
    """Per segment of one call: text and lyrics tokens [T_i, D], reference frames [R_i, D]."""

    texts: list[torch.Tensor]
    lyrics: list[torch.Tensor]
    refs: list[torch.Tensor]

    def slice(self, start: int, stop: int) -> _Shared:
        return _Shared(self.texts[start:stop], self.lyrics[start:stop], self.refs[start:stop])


def distinct_waves(
    waves: list[torch.Tensor | None],
) -> tuple[list[torch.Tensor], list[int | None]]:
    """(the distinct waveforms, each input's index among them or None): the same tensor object
    or equal samples count once."""
    distinct: list[torch.Tensor] = []
    by_id: dict[int, int] = {}
    which: list[int | None] = []
    for w in waves:
        if w is None:
            which.append(None)
            continue
        j = by_id.get(id(w))
        if j is None:
            j = next(
                (k for k, d in enumerate(distinct) if d.shape == w.shape and torch.equal(d, w)),
                len(distinct),
            )
            if j == len(distinct):
                distinct.append(w)
            by_id[id(w)] = j
        which.append(j)
    return distinct, which


def split_chunks(wav: torch.Tensor, n: int, drop_short: bool) -> list[torch.Tensor]:
    """Non-overlapping `n`-sample chunks; a tail too short for MuQ is dropped when `drop_short`."""
    chunks = [wav[i : i + n] for i in range(0, wav.shape[0], n)] or [wav]
    if drop_short and len(chunks) > 1 and chunks[-1].shape[0] < MUQ_MIN_SAMPLES:
        chunks = chunks[:-1]
    return chunks


def sliding_windows(
    wav: torch.Tensor, sr: int, max_dur: float, dur_step: float | None
) -> list[torch.Tensor]:
    """Upstream's windows: one crop if `dur_step` is None or the clip fits, else windows >= 1 s."""
    size = int(max_dur * sr)
    if dur_step is None or wav.shape[0] <= size:
        return [wav[:size]]
    step = int(dur_step * sr)
    if step <= 0:
        raise ValueError(f"dur_step must be > 0, got {dur_step}")
    windows, start = [], 0
    while start < wav.shape[0]:
        seg = wav[start : start + size]
        if seg.shape[0] >= sr:
            windows.append(seg)
        if start + size >= wav.shape[0]:
            break
        start += step
    return windows or [wav]


def pad_seqs(
    seqs: list[torch.Tensor], dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """[T_i, D] list -> x [B, T, D] (zero-padded), mask [B, T]."""
    t = max((s.shape[0] for s in seqs), default=0)
    x = torch.zeros(len(seqs), t, dim, device=device)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool, device=device)
    for i, s in enumerate(seqs):
        x[i, : s.shape[0]] = s.to(device=device, dtype=x.dtype)
        mask[i, : s.shape[0]] = True
    return x, mask


class CMIRewardModel(RewardModel):
    """CMI-RM from a directory with `model.safetensors` + `config.yaml` (or the `.safetensors` path).

    Args:
        checkpoint: directory, or the weights file (config next to it or one folder up).
        device: torch device string.
        mode: "final" or "standard" (see module docstring).
        config: explicit config.yaml path (else found next to the weights).
        upstream_compat: reproduce upstream's batch-dependent behaviour exactly.
        cache_dir: optional `audiobase.cache.FeatureCache` root for audio-tower outputs.
        bf16: bfloat16 autocast on CUDA (ignored on CPU).
        tiny: build a small random CMI-RM at `checkpoint` first if nothing is there (tests, demo).
        trust_remote_code: let the MuQ-MuLan folders run their own Python (`auto_map`, `*.py`)
            when the towers load. Off: such folders are refused before anything is loaded
            (`RemoteCodeRefused` names this key). Only this argument (the model config's key)
            opts in; the checkpoint's config.yaml cannot.
    """

    thread_safe = True  # scoring changes no state: the runner may score batches at once

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        mode: str = "final",
        config: str | Path | None = None,
        upstream_compat: bool = False,
        cache_dir: str | Path | None = None,
        bf16: bool = True,
        tiny: bool = False,
        sr: int = 24000,
        trust_remote_code: bool = False,
    ) -> None:
        if mode not in ("final", "standard"):
            raise ValueError(f"mode must be 'final' or 'standard', got {mode!r}")
        if tiny and not Path(checkpoint).exists():
            # here on purpose: only building a tiny model needs this module (peft, transformers:
            # seconds to import); loading a model imports what its towers need as it loads
            from rewards.cmi_rm.tiny import build_tiny_cmi_rm

            build_tiny_cmi_rm(checkpoint)
        weights, cfg_path = find_checkpoint(checkpoint)
        self.cfg = CMIRMConfig.from_yaml(config or cfg_path)
        if self.cfg.sr != sr:
            raise ValueError(f"{cfg_path}: model sr {self.cfg.sr} != requested sr {sr}")
        self.device = torch.device(device)
        self.mode, self.upstream_compat = mode, upstream_compat
        self.bf16 = bf16 and self.device.type == "cuda"
        self.net = CMIRewardNet(self.cfg, trust_remote_code=bool(trust_remote_code))
        self.load_info = load_weights(self.net, weights)
        self.net.to(self.device).eval()
        if self.device.type == "cpu" and self.net.audio_module.is_muq:
            prepare_stem_for_scoring(self.net.audio_module.model)  # scoring only: never saved
        self.checkpoint = str(weights)
        self._cache = None
        if cache_dir is not None:
            self._cache = FeatureCache(cache_dir, namespace="cmi_rm_audio")
        self._encoder_id: str | None = None

    @property
    def sr(self) -> int:
        return self.cfg.sr

    def __repr__(self) -> str:
        return f"CMIRewardModel({self.checkpoint!r}, mode={self.mode!r}, upstream_compat={self.upstream_compat})"

    # ------------------------------------------------------------------ public API
    def score_batch(
        self,
        inputs: list[BatchInput],
        batch_size: int = 4,
        max_dur: float = 30.0,
        dur_step: float | None = None,
        show_progress: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        """Scores [N, 2] (alignment, musicality); raises ScoreItemError naming a bad input."""
        if kwargs:
            raise TypeError(f"CMIRewardModel.score_batch got unknown options: {sorted(kwargs)}")
        items = [as_input(x) for x in inputs]
        if not items:
            return np.zeros((0, 2), dtype=np.float32)
        batch_size = max(1, int(batch_size))
        segments, owner = self._prepare(items, max_dur, dur_step)
        rows = range(0, len(segments), batch_size)
        if show_progress:
            rows = tqdm(rows, desc=f"CMI-RM ({self.mode})")
        chunked = self.mode == "final"
        shared = (
            None if self.upstream_compat else self._encode_shared(segments, batch_size, chunked)
        )
        raw = torch.cat(
            [
                self._forward_group(
                    segments[s : s + batch_size],
                    batch_size,
                    chunked,
                    None if shared is None else shared.slice(s, s + batch_size),
                )
                for s in rows
            ]
        )
        out = torch.zeros(len(items), raw.shape[1], dtype=torch.float64)
        counts = torch.zeros(len(items), dtype=torch.float64)
        out.index_add_(0, torch.tensor(owner), raw.double().cpu())
        counts.index_add_(0, torch.tensor(owner), torch.ones(len(owner), dtype=torch.float64))
        return (out / counts.unsqueeze(1)).numpy().astype(np.float32)[:, :2]

    # ------------------------------------------------------------------ preparation
    def _prepare(self, items: list[BatchInput], max_dur: float, dur_step: float | None):
        segments: list[_Segment] = []
        owner: list[int] = []
        refs: dict[Any, torch.Tensor] = {}  # a ref passed (or named) twice is prepared once
        for i, item in enumerate(items):
            try:
                if self.mode == "final":
                    windows = [self._load(item.audio, max_dur)]
                else:
                    windows = sliding_windows(
                        self._load(item.audio, None), self.sr, max_dur, dur_step
                    )
                ref = None
                if item.ref_audio is not None:
                    x = item.ref_audio
                    key = str(x) if isinstance(x, str | Path) else id(x)
                    ref = refs.get(key)
                    if ref is None:
                        ref = refs[key] = self._load(x, max_dur)
            except Exception as e:  # noqa: BLE001 - re-raised with the item named
                raise ScoreItemError(i, item, f"{type(e).__name__}: {e}") from e
            for w in windows:
                segments.append(_Segment(w, ref, item.text or "", item.lyrics or ""))
                owner.append(i)
        return segments, owner

    def _load(self, x: Any, max_dur: float | None) -> torch.Tensor:
        return load_waveform(x, self.sr, max_dur, min_samples=MUQ_MIN_SAMPLES)

    # ------------------------------------------------------------------ forward
    def _autocast(self):
        if self.bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def _encode_shared(self, segments: list[_Segment], encode_batch: int, chunked: bool) -> _Shared:
        """Texts, lyrics and references of a call's segments, each distinct one encoded once."""
        dim = self.cfg.dim
        texts, lyrics = self._encode_texts([s.text for s in segments], [s.lyrics for s in segments])
        distinct, which = distinct_waves([s.ref for s in segments])
        encoded = self._encode_waves(distinct, encode_batch, chunked)
        refs = [torch.zeros(0, dim) if j is None else encoded[j] for j in which]
        return _Shared(texts, lyrics, refs)

    @torch.no_grad()
    def _forward_group(
        self, group: list[_Segment], encode_batch: int, chunked: bool, shared: _Shared | None
    ) -> torch.Tensor:
        dim = self.cfg.dim
        if shared is not None:  # batch-independent: the call's shared inputs are encoded
            evals = self._encode_waves([s.wav for s in group], encode_batch, chunked)
            texts, lyrics, refs = shared.texts, shared.lyrics, shared.refs
        else:  # upstream_compat: upstream's padded passes, refs and texts per group
            evals = self._encode_waves([s.wav for s in group], encode_batch, chunked)
            if any(s.ref is not None for s in group):
                silence = torch.zeros(self.sr)  # upstream stands in 1 s of silence, encoded
                refs = self._encode_waves(
                    [s.ref if s.ref is not None else silence for s in group], encode_batch, chunked
                )
            else:
                refs = [torch.zeros(0, dim) for _ in group]
            texts, lyrics = self._encode_texts([s.text for s in group], [s.lyrics for s in group])
        net = self.net
        parts = [
            self._downsample(net.text_downsampler, texts),
            self._downsample(net.lyrics_downsampler, lyrics),
            self._downsample(net.ref_downsampler, refs),
            self._downsample(net.eval_downsampler, evals),
        ]
        with self._autocast():
            scores = net(*parts[0], *parts[1], *parts[2], *parts[3])
        return scores.float()

    def _downsample(self, ds: torch.nn.Module, seqs: list[torch.Tensor]):
        """Padded downsampling upstream-style, or per item so padding cannot leak across items."""
        if self.upstream_compat:
            x, mask = pad_seqs(seqs, self.cfg.dim, self.device)
            with self._autocast():
                return ds(x, mask)
        out = []
        for s in seqs:
            if s.shape[0] == 0:
                out.append(s)
                continue
            x = s.to(self.device).unsqueeze(0)  # [1, T, D]
            with self._autocast():
                y, m = ds(x, torch.ones(x.shape[:2], dtype=torch.bool, device=self.device))
            out.append(y[0][m[0]].float())
        return pad_seqs(out, self.cfg.dim, self.device)

    # ------------------------------------------------------------------ encoders
    def _encode_texts(self, texts: list[str], lyrics: list[str]) -> tuple[list, list]:
        """Per-item token embeddings; each distinct string is encoded once per call."""
        tm = self.net.text_module
        if self.upstream_compat:  # upstream pads texts and lyrics as two separate batches
            return self._split_tokens(*encode_text_tokens(tm, texts)), self._split_tokens(
                *encode_text_tokens(tm, lyrics)
            )
        unique = sorted(set(texts) | set(lyrics))
        with self._autocast():
            tokens = self._split_tokens(*encode_text_tokens(tm, unique))
        table = dict(zip(unique, tokens, strict=True))
        return [table[t] for t in texts], [table[t] for t in lyrics]

    @staticmethod
    def _split_tokens(x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return [x[i][mask[i]].float() for i in range(x.shape[0])]

    def _encode_waves(
        self, waves: list[torch.Tensor], encode_batch: int, chunked: bool
    ) -> list[torch.Tensor]:
        """Frames [T_i, D] per waveform: chunk (final mode), encode, concatenate per waveform."""
        n = int(CHUNK_SECONDS * self.sr)
        chunks, owner = [], []
        for i, w in enumerate(waves):
            for c in split_chunks(w, n, drop_short=not self.upstream_compat) if chunked else [w]:
                chunks.append(c)
                owner.append(i)
        if self.upstream_compat:
            frames = self._encode_padded(chunks, encode_batch)
        else:
            frames = self._encode_exact(chunks, encode_batch)
        per_wave: list[list[torch.Tensor]] = [[] for _ in waves]
        for o, f in zip(owner, frames, strict=True):
            per_wave[o].append(f)
        return [torch.cat(fs) for fs in per_wave]

    def _encode_padded(self, chunks: list[torch.Tensor], encode_batch: int) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for s in range(0, len(chunks), encode_batch):
            group = chunks[s : s + encode_batch]
            wav, mask = pad_seqs([c.unsqueeze(-1) for c in group], 1, self.device)
            with self._autocast():
                f, m = encode_audio_frames(self.net.audio_module, wav[..., 0], mask)
            out.extend(f[j][m[j]].float().cpu() for j in range(len(group)))
        return out

    def _encode_exact(self, chunks: list[torch.Tensor], encode_batch: int) -> list[torch.Tensor]:
        """`encode_batch` chunks per MuQ pass in length order, zero-padded but exact (a chunk
        gets the frames it gets alone, `encode_audio_frames_exact`); cache hits skip MuQ."""
        out: list[torch.Tensor | None] = [None] * len(chunks)
        keys: list[str | None] = [None] * len(chunks)
        todo: list[int] = []
        cache = self._cache
        for i, c in enumerate(chunks):
            if cache is not None:
                chunk_key = keys[i] = cache.key(self._encoder_fingerprint(), c)
                hit = cache.get(chunk_key)
                if hit is not None:
                    out[i] = hit["frames"]
                    continue
            todo.append(i)
        for sel in length_sorted_batches([chunks[i].shape[0] for i in todo], encode_batch):
            idx = [todo[j] for j in sel]
            wav, lengths = pad_waves([chunks[i] for i in idx])  # [b, N], [b]
            with self._autocast():
                f, m = encode_audio_frames_exact(
                    self.net.audio_module, wav.to(self.device), lengths.to(self.device)
                )
            for j, i in enumerate(idx):
                frames = out[i] = f[j][m[j]].float().cpu()  # [T_i, D]
                key = keys[i]
                if cache is not None and key is not None:
                    cache.put(key, {"frames": frames})
        return out  # type: ignore[return-value]

    def _encoder_fingerprint(self) -> str:
        """Identifies the audio tower (config + a sample of every weight) for cache keys."""
        if self._encoder_id is None:
            h = hashlib.sha1(
                f"{self.cfg.model_name}|{self.cfg.use_layer_idx}|bf16={self.bf16}".encode()
            )
            for name, p in self.net.audio_module.state_dict().items():
                h.update(name.encode())
                h.update(str(tuple(p.shape)).encode())
                h.update(p.detach().flatten()[:64].float().cpu().numpy().tobytes())
            self._encoder_id = h.hexdigest()
        return self._encoder_id
