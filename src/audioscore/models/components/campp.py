"""Frozen CAM++ speaker encoder (3D-Speaker) as the timbre branch of plan B.

The network is the official class shipped in modelscope (`modelscope.models.audio.sv.DTDNN`);
this file only resolves and loads its weights and reproduces 3D-Speaker's front end:
16 kHz mono, 80-bin Kaldi fbank with dither 0, per-utterance mean subtraction. CAM++ has
no padding mask, so every clip is embedded at its true length; clips longer than
`chunk_s` are cut into fixed chunks (last one filled by circular repetition, as
`speakerlab/bin/infer_sv_batch.py` does) whose raw embeddings are averaged.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as taf
from safetensors.torch import load_file
from torch import nn

from audiobase.audio import CAMPP_SR, MUQ_SR
from audiobase.cache import FeatureCache
from audiobase.files import atomic_path
from audiobase.weights import MissingWeightsError
from audioscore.safe_config import component

log = logging.getLogger(__name__)

N_MELS = 80
WEIGHT_SUFFIXES = (".bin", ".pt", ".ckpt", ".pth", ".safetensors")

# ModelScope ids -> (revision, weights file, embedding size), from 3D-Speaker's infer_sv.py.
CAMPP_MODELS: dict[str, tuple[str, str, int]] = {
    "iic/speech_campplus_sv_zh-cn_16k-common": ("v1.0.0", "campplus_cn_common.bin", 192),
    "iic/speech_campplus_sv_zh_en_16k-common_advanced": ("v1.0.0", "campplus_cn_en_common.pt", 192),
    "iic/speech_campplus_sv_en_voxceleb_16k": ("v1.0.2", "campplus_voxceleb.bin", 512),
}


class CamppLoadError(RuntimeError):
    """CAM++ weights could not be found or do not fit the network; names the source."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source, self.reason = source, reason


def build_campp(
    embedding_size: int = 192, growth_rate: int = 32, bn_size: int = 4, init_channels: int = 128
) -> Any:
    """The official CAMPPlus class (random weights), checkpointing off since we never train it."""
    from modelscope.models.audio.sv.DTDNN import CAMPPlus  # slow import: only when needed

    return CAMPPlus(
        feat_dim=N_MELS,
        embedding_size=embedding_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        init_channels=init_channels,
        memory_efficient=False,
    )


def infer_campp_arch(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Constructor arguments of CAMPPlus read off a state dict's shapes."""
    try:
        growth = state["xvector.block1.tdnnd1.cam_layer.linear_local.weight"].shape[0]
        bn_ch = state["xvector.block1.tdnnd1.linear1.weight"].shape[0]
        return {
            "embedding_size": state["xvector.dense.linear.weight"].shape[0],
            "growth_rate": growth,
            "bn_size": bn_ch // growth,
            "init_channels": state["xvector.tdnn.linear.weight"].shape[0],
        }
    except KeyError as e:
        raise ValueError(f"not a CAMPPlus state dict (missing {e})") from e


def resolve_campp_weights(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    filename: str | None = None,
    hub_cache_dir: str | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A weights file from a local file, a local directory or a ModelScope model id."""
    src = str(source)
    p = Path(src).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        return _find_weights_in_dir(p, filename, src)
    if src.startswith(("/", ".", "~")) or src.endswith(WEIGHT_SUFFIXES) or src.count("/") != 1:
        raise CamppLoadError(src, "no such file or directory (and not a ModelScope model id)")
    model_id = "iic/" + src[5:] if src.startswith("damo/") else src  # damo/ was renamed iic/
    known = CAMPP_MODELS.get(model_id)
    revision = revision or (known[0] if known else None)
    filename = filename or (known[1] if known else None)
    if local_files_only is None:  # the Makefile's offline switch also covers ModelScope
        local_files_only = "1" in (
            os.environ.get("MODELSCOPE_OFFLINE"),
            os.environ.get("HF_HUB_OFFLINE"),
        )
    from modelscope.hub.snapshot_download import snapshot_download  # slow import: hub ids only

    try:
        snap = snapshot_download(
            model_id,
            revision=revision,
            cache_dir=hub_cache_dir,
            local_files_only=local_files_only,
            allow_patterns=[filename, "configuration.json"] if filename else None,
        )
    except Exception as e:  # modelscope raises many unrelated types for "not available"
        reason = "offline and not in the cache" if local_files_only else type(e).__name__
        raise MissingWeightsError(
            f"CAM++ {model_id}",
            "model.net.timbre.source",
            modelscope=model_id,
            reason=reason,
        ) from e
    return _find_weights_in_dir(Path(snap), filename, model_id)


def _find_weights_in_dir(d: Path, filename: str | None, src: str) -> Path:
    if filename:
        if (d / filename).is_file():
            return d / filename
        raise CamppLoadError(src, f"{filename} not found in {d}")
    found = sorted(f for f in d.iterdir() if f.suffix in WEIGHT_SUFFIXES and f.is_file())
    if len(found) != 1:
        raise CamppLoadError(
            src, f"expected one weights file {WEIGHT_SUFFIXES} in {d}, got {found}"
        )
    return found[0]


def load_campp_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat CAMPPlus state dict (torch pickle with weights_only=True, or safetensors)."""
    path = Path(path)
    state: Any
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CamppLoadError(str(path), f"cannot read weights: {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise CamppLoadError(str(path), "file does not hold a state dict")
    if all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_campp(path: str | os.PathLike) -> tuple[nn.Module, str]:
    """Build CAMPPlus to fit the file and load it strictly; returns (model, weights sha1)."""
    state = load_campp_state(path)
    try:
        arch = infer_campp_arch(state)
    except ValueError as e:
        raise CamppLoadError(str(path), str(e)) from e
    model = build_campp(**arch)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # BatchNorm step counters are never used in eval mode; everything else must match.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CamppLoadError(
            str(path), f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model, state_sha1(state)


def state_sha1(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict: the identity of the weights (feature-cache namespaces)."""
    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_random_campp(seed: int, **arch: Any) -> nn.Module:
    """CAMPPlus with seeded random weights and non-trivial BatchNorm statistics (tiny configs,
    tests, offline demos); the caller's RNG stream is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_campp(**arch)
        randomise_bn_stats(model)
    return model


def compute_fbank(wav16: torch.Tensor) -> torch.Tensor:
    """3D-Speaker's FBank(80, 16000, mean_nor=True) with dither 0: [T] -> [frames, 80]."""
    feat = kaldi.fbank(
        wav16.unsqueeze(0), num_mel_bins=N_MELS, sample_frequency=CAMPP_SR, dither=0.0
    )  # [F, 80]
    return feat - feat.mean(0, keepdim=True)


def chunk_clip(wav16: torch.Tensor, chunk: int) -> list[torch.Tensor]:
    """Fixed chunks; a single short clip stays whole, the last chunk wraps around."""
    n = -(-wav16.shape[0] // chunk)
    if n <= 1:
        return [wav16]
    reps = -(-n * chunk // wav16.shape[0])
    full = wav16.repeat(reps)[: n * chunk]
    return list(full.view(n, chunk))


class CamppEncoder(nn.Module):
    """Frozen CAM++ timbre encoder: wav [B, T] at `in_sr` -> L2-normalised embedding [B, E].

    Args:
        source: local weights file, a directory holding one, or a ModelScope model id.
            None builds the architecture `arch` with random weights that an enclosing
            checkpoint (a scorer export) is expected to overwrite; such an encoder has no cache.
        arch: CAMPPlus constructor sizes (embedding_size, growth_rate, ...), only with source=None.
        seed: with source=None, seeded random weights (a tiny debug CAM++ that needs no file
            and is cached like real weights); None = weights come later (an export).
        revision, filename, hub_cache_dir, local_files_only: passed to `snapshot_download`.
        in_sr: sample rate of the incoming waveforms (MuQ's 24 kHz).
        chunk_s: chunk length; longer clips are split and chunk embeddings averaged.
        max_s: only the first `max_s` seconds are used (3D-Speaker's batch tool uses 90 s).
        min_s: shorter clips are wrapped around to this length (CAM++'s std pooling is NaN
            for 2 frames or fewer).
        normalize: L2-normalise the output (CAM++'s raw output is a BatchNorm, unbounded).
        cache_dir: FeatureCache root; used when `keys` are passed to forward.
    """

    def __init__(
        self,
        source: str | None,
        *,
        arch: dict[str, int] | None = None,
        seed: int | None = None,
        revision: str | None = None,
        filename: str | None = None,
        hub_cache_dir: str | None = None,
        local_files_only: bool | None = None,
        in_sr: int = MUQ_SR,
        chunk_s: float = 10.0,
        max_s: float = 90.0,
        min_s: float = 0.5,
        normalize: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.model: Any  # modelscope's CAMPPlus (untyped)
        self.weights_sha1: str | None
        if source is None:
            if not arch:
                raise CamppLoadError("<none>", "source=None needs `arch` (weights come later)")
            if seed is None:
                self.model, self.weights_sha1 = build_campp(**arch), None
            else:
                self.model = build_random_campp(seed, **arch)
                self.weights_sha1 = state_sha1(self.model.state_dict())
        else:
            path = resolve_campp_weights(
                source,
                revision=revision,
                filename=filename,
                hub_cache_dir=hub_cache_dir,
                local_files_only=local_files_only,
            )
            self.model, self.weights_sha1 = load_campp(path)
        self.model.eval().requires_grad_(False)
        self.source = None if source is None else str(source)
        self.arch = infer_campp_arch(self.model.state_dict())
        self.in_sr, self.chunk_s, self.max_s, self.min_s = in_sr, chunk_s, max_s, min_s
        self.normalize = normalize
        self.out_dim: int = self.model.xvector.dense.linear.out_channels
        self.cache = None
        if cache_dir and self.weights_sha1 is not None:
            self.cache = FeatureCache(cache_dir, f"campp-{self.config_hash()[:16]}")

    # ---- Pretrained protocol (export) --------------------------------------------------------
    def base_state_keys(self) -> list[str]:
        """None: CAM++ is small and its source (a hub cache, a local file) may be gone where the
        scorer is used, so its weights travel in every export."""
        return []

    def standalone_config(self) -> dict[str, Any]:
        """A `_target_` config rebuilding this encoder without any weights source; for exports,
        where the CAM++ weights travel inside the scorer's state dict."""
        return {
            "_target_": f"{CamppEncoder.__module__}.CamppEncoder",
            "source": None,
            "arch": dict(self.arch),
            "in_sr": self.in_sr,
            "chunk_s": self.chunk_s,
            "max_s": self.max_s,
            "min_s": self.min_s,
            "normalize": self.normalize,
        }

    def config_hash(self) -> str:
        """Identifies everything that changes the raw embedding (weights + front end)."""
        cfg = f"{self.weights_sha1}|{self.in_sr}|{self.chunk_s}|{self.max_s}|{self.min_s}|v1"
        return hashlib.sha1(cfg.encode()).hexdigest()

    def train(self, mode: bool = True) -> CamppEncoder:
        # Frozen: BatchNorm must keep its running statistics whatever the parent does.
        super().train(mode)
        self.model.eval()
        return self

    @torch.no_grad()
    def embed_clip(self, wav: torch.Tensor) -> torch.Tensor:
        """One unpadded clip [T] at `in_sr` -> raw (unnormalised) embedding [E]."""
        return self.embed_clips([wav])[0]

    @torch.no_grad()
    def embed_clips(self, clips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Unpadded clips at `in_sr` -> raw embeddings [N, E]; equal-length chunks are batched."""
        chunk = int(self.chunk_s * CAMPP_SR)
        feats: list[torch.Tensor] = []
        owner: list[int] = []
        for i, wav in enumerate(clips):
            wav16 = self._pad_min(self._to_16k(wav))
            for piece in chunk_clip(wav16, chunk):
                feats.append(compute_fbank(piece))  # [F, 80]
                owner.append(i)
        embs = torch.empty(len(feats), self.out_dim, device=feats[0].device)
        by_len: dict[int, list[int]] = {}
        for j, f in enumerate(feats):
            by_len.setdefault(f.shape[0], []).append(j)
        for idx in by_len.values():  # never zero-pad: batch only equal frame counts
            embs[idx] = self.model(torch.stack([feats[j] for j in idx])).float()  # [n, E]
        owner_t = torch.tensor(owner, device=embs.device)
        out = torch.zeros(len(clips), self.out_dim, device=embs.device)
        out.index_add_(0, owner_t, embs)
        return out / torch.bincount(owner_t, minlength=len(clips)).unsqueeze(1)  # [N, E]

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str] | None = None
    ) -> torch.Tensor:
        """wav [B, T] at `in_sr`, lengths [B] -> embedding [B, E] (L2-normalised by default)."""
        with torch.autocast(wav.device.type, enabled=False):  # CAM++ stays in fp32
            raw = self._embed_cached(wav, lengths, keys)  # [B, E]
        return F.normalize(raw, dim=-1) if self.normalize else raw

    def _embed_cached(
        self, wav: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str] | None
    ) -> torch.Tensor:
        clips = [wav[i, : int(lengths[i])] for i in range(wav.shape[0])]  # true lengths
        if self.cache is None or keys is None:
            return self.embed_clips(clips)  # [B, E]
        ckeys = [self.cache.key(str(k), int(n)) for k, n in zip(keys, lengths, strict=True)]
        embs = self.cache.get_or_compute(
            ckeys, "emb", lambda todo: list(self.embed_clips([clips[i] for i in todo])), wav.device
        )
        return torch.stack(embs)  # [B, E]

    @property
    def frame_dim(self) -> int:
        """Channels of the frame-level features (512 for the released models)."""
        return int(self.model.xvector.out_nonlinear.batchnorm.num_features)

    @torch.no_grad()
    def frame_features(
        self, wav: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str] | None = None
    ) -> list[torch.Tensor]:
        """Frame-level features before stats pooling, per clip: [T50_i, C] at 50 Hz.

        Same chunking as the embedding; chunk frames are concatenated in time and the
        wrapped-around tail is cut off. CAM's context masks are clip/chunk-wide, so these
        are features of the chunk, not of a local window. With `keys` and a cache, stored
        per key next to the embeddings (same namespace, a "frames" key prefix).
        """
        clips = [wav[i, : int(lengths[i])] for i in range(wav.shape[0])]  # true lengths
        with torch.autocast(wav.device.type, enabled=False):
            if self.cache is None or keys is None:
                return [self._frames_clip(c) for c in clips]
            ckeys = [
                self.cache.key("frames", str(k), int(n)) for k, n in zip(keys, lengths, strict=True)
            ]
            return self.cache.get_or_compute(
                ckeys,
                "frames",
                lambda todo: [self._frames_clip(clips[i]) for i in todo],
                wav.device,
            )

    def _frames_clip(self, wav: torch.Tensor) -> torch.Tensor:
        """One unpadded clip [T] at `in_sr` -> frame features [T50, C]."""
        chunk = int(self.chunk_s * CAMPP_SR)
        wav16 = self._to_16k(wav)
        true_frames = -(-(1 + max(wav16.shape[0] - 400, 0) // 160) // 2)
        wav16 = self._pad_min(wav16)
        parts = []
        for piece in chunk_clip(wav16, chunk):
            x = compute_fbank(piece).t().unsqueeze(0)  # [1, 80, F]
            parts.append(self.model.xvector[:-2](self.model.head(x))[0])  # [C, F/2]
        return torch.cat(parts, dim=1)[:, : max(true_frames, 1)].t().float()  # [T50, C]

    def _to_16k(self, wav: torch.Tensor) -> torch.Tensor:
        wav16 = wav.float()
        if self.in_sr != CAMPP_SR:
            wav16 = taf.resample(wav16, self.in_sr, CAMPP_SR)
        return wav16[: int(self.max_s * CAMPP_SR)]

    def _pad_min(self, wav16: torch.Tensor) -> torch.Tensor:
        min_len = int(self.min_s * CAMPP_SR)
        if wav16.shape[0] == 0:
            raise ValueError("empty clip (length 0) given to CAM++")
        if wav16.shape[0] < min_len:  # wrap around: never pad with zeros
            wav16 = wav16.repeat(-(-min_len // wav16.shape[0]))[:min_len]
        return wav16

    def extra_repr(self) -> str:
        return f"source={self.source!r}, out_dim={self.out_dim}, chunk_s={self.chunk_s}"


def randomise_bn_stats(model: nn.Module) -> None:
    """Non-trivial BatchNorm running statistics, so that loading them is actually checked."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)


def save_random_campp(path: str | os.PathLike, seed: int = 0, **arch: Any) -> Path:
    """Write a seeded random CAMPPlus state dict: a user-style weights file for tests."""
    model = build_random_campp(seed, **arch)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return path


@component
def build_tiny_campp_encoder(
    *,
    seed: int = 0,
    embedding_size: int = 32,
    growth_rate: int = 4,
    bn_size: int = 2,
    init_channels: int = 16,
    **kwargs: Any,
) -> CamppEncoder:
    """A small CAM++ (the official class) with seeded random weights, built in memory."""
    arch = dict(
        embedding_size=embedding_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        init_channels=init_channels,
    )
    return CamppEncoder(None, arch=arch, seed=seed, **kwargs)


@component
def build_campp_encoder(
    source: str | None,
    *,
    tiny: Any = None,
    tiny_arch: dict[str, int] | None = None,
    **kwargs: Any,
) -> CamppEncoder:
    """Config entry point (`conf/train/campp/*.yaml`): the real encoder, or a tiny random one.

    `tiny` is truthy under `debug=tiny`, where MuQ is replaced by a random tiny model too; the
    tiny CAM++ gets seeded random weights in memory (nothing is written).
    """
    if tiny:
        return build_tiny_campp_encoder(**(tiny_arch or {}), **kwargs)
    if source is None and "arch" not in kwargs:
        raise CamppLoadError("<none>", "no CAM++ source given")
    return CamppEncoder(source, **kwargs)
