"""MuQ built or loaded, and tapped at one hidden layer (optionally truncated above it).

Shared by the trainer (`audioscore`'s `MuQEncoder` adds LoRA and fine-tuning to `MuQTap`) and
the reward models that run MuQ (SongEval, CMI-RM's tiny build).

Real weights come through `MuQ.from_pretrained(hub id or local dir)`; tests use a tiny random
MuQ saved with `build_tiny_muq_dir` and loaded through that same call.

Clips of different lengths share one backbone pass and each gets the features it gets alone
(`muq_padded`: padding is invisible to MuQ's front end, convolutions and attention). A frozen
tap with a `cache_dir` and per-clip keys stores each clip's unpadded features in a
`FeatureCache` namespace hashed from its weights, config and tap, so epochs and runs on the
same crops skip the backbone.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import Wav2Vec2ConformerConfig

from audiobase.cache import FeatureCache
from audiobase.files import atomic_path
from audiobase.muq_padded import muq_num_frames, muq_padded_hidden, stem_strides
from audiobase.weights import DEFAULT_PRETRAINED, hf_source, hub_mixin_quiet

# MuQ recipe statistics for the normalised log-mel (global scalars)
MEL_MEAN, MEL_STD = 6.768444971712967, 18.417922652295623


def make_muq_config(
    dim: int,
    depth: int,
    heads: int,
    ffn: int,
    kernel: int,
    conv_dim: int,
    codebook_size: int,
    **w2v2_extra: Any,
) -> dict:
    """A complete MuQConfig dict (an empty `w2v2_config` would fail inside MuQ); `w2v2_extra`
    goes to `Wav2Vec2ConformerConfig`."""
    w2v2 = Wav2Vec2ConformerConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=ffn,
        conv_depthwise_kernel_size=kernel,
        position_embeddings_type="rotary",
        hidden_act="swish",
        layerdrop=0.0,  # the Wav2Vec2ConformerConfig default 0.1 would skip layers
        **w2v2_extra,
    )
    # to_dict() keeps int keys in id2label, which EasyDict rejects; the JSON round trip fixes that
    w2v2_dict = json.loads(w2v2.to_json_string(use_diff=False))
    return {
        "conv_dim": conv_dim,
        "encoder_dim": dim,
        "encoder_depth": depth,
        "codebook_size": codebook_size,
        "stat": {"melspec_2048_mean": MEL_MEAN, "melspec_2048_std": MEL_STD},
        "w2v2_config": w2v2_dict,
    }


def tiny_muq_config(dim: int = 32, depth: int = 2, heads: int = 2, ffn: int = 64) -> dict:
    """A MuQ config of a few hundred thousand parameters that builds and runs offline."""
    return make_muq_config(dim, depth, heads, ffn, kernel=7, conv_dim=8, codebook_size=16)


def large_muq_config() -> dict:
    """MuQ-large's published architecture (`OpenMuQ/MuQ-large-msd-iter`, ~330M parameters):
    1024-d, 12 conformer layers of 16 heads and 4096-d feed-forward, depthwise kernel 31, rotary
    positions (MuQ's pretraining recipe config). Random weights: for profiling and tests of the
    real-size path offline; real weights come through `pretrained`."""
    return make_muq_config(
        1024,
        12,
        16,
        4096,
        kernel=31,
        conv_dim=512,
        codebook_size=4096,
        hidden_dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        conformer_conv_dropout=0.1,
        feat_proj_dropout=0.1,
        layer_norm_eps=1e-5,
        max_source_positions=5000,
    )


# `muq_config=<name>` presets (random weights, no download)
MUQ_PRESETS = {"tiny": tiny_muq_config, "large": large_muq_config}


def build_tiny_muq_dir(path: str | os.PathLike, seed: int = 0, **kw: Any) -> Path:
    """Save a tiny random MuQ with `save_pretrained`, loadable by `MuQ.from_pretrained(path)`."""
    from muq import MuQ  # heavy (pulls torchvision): only when a MuQ is built

    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MuQ(tiny_muq_config(**kw))
    # a concurrent reader never sees a half-written directory; a concurrent writer's copy wins
    with atomic_path(path, is_dir=True) as tmp:
        model.save_pretrained(tmp)
    return path


def load_muq(
    pretrained: str | None,
    muq_config: dict | str | None = None,
    seed: int = 0,
    key: str = "model.net.encoder.pretrained",
) -> Any:
    """MuQ from a hub id / local dir (the user's path) or, with `pretrained=None`, random init.
    Weights that cannot be had raise MissingWeightsError naming `key`, the config key to set."""
    from muq import MuQ  # heavy (pulls torchvision): only when a MuQ is built

    if pretrained is not None:
        with hub_mixin_quiet():
            return MuQ.from_pretrained(hf_source(str(pretrained), key))
    if muq_config is None:
        raise ValueError("MuQEncoder needs `pretrained` (hub id or dir) or `muq_config`")
    if isinstance(muq_config, str):
        if muq_config not in MUQ_PRESETS:
            raise ValueError(
                f"muq_config must be a MuQConfig dict or one of {sorted(MUQ_PRESETS)}, "
                f"got {muq_config!r}"
            )
        muq_config = MUQ_PRESETS[muq_config]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MuQ(copy.deepcopy(dict(muq_config)))


def muq_config_dict(muq: Any) -> dict:
    """The MuQConfig of a loaded model as a plain dict (stored by full-encoder exports)."""
    cfg = muq.config
    return asdict(cfg) if is_dataclass(cfg) and not isinstance(cfg, type) else dict(cfg)


class MuQTap(nn.Module):
    """Waveform [B, T] at 24 kHz -> MuQ hidden layer `layer` [B, F, D] at 25 Hz plus frame mask.

    Frozen unless a subclass trains something (`audioscore`'s `MuQEncoder`: LoRA, backbone).

    Args:
        pretrained: hub id or local directory for `MuQ.from_pretrained`; None = random init from
            `muq_config` (a MuQConfig dict, or a preset name: "tiny" = `tiny_muq_config()`,
            "large" = `large_muq_config()`, MuQ-large's architecture).
        layer: hidden-state index (0 = conv stem, k = output of conformer layer k).
        truncate: drop conformer layers above `layer` (same output, less compute).
        cache_dir: FeatureCache root for a frozen tap; used when forward() gets `keys`. Ignored
            while anything in the tap trains.
        weights_key: the config key that sets `pretrained`, named when the weights are missing.
    """

    def __init__(
        self,
        pretrained: str | None = DEFAULT_PRETRAINED,
        layer: int = 6,
        truncate: bool = True,
        muq_config: dict | str | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        weights_key: str = "model.net.encoder.pretrained",
    ) -> None:
        super().__init__()
        self.pretrained = pretrained
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self._cache: FeatureCache | None = None
        self.muq: Any = load_muq(pretrained, muq_config, seed, weights_key)  # muq's MuQ (untyped)
        conformer = self.muq.model.conformer
        depth = len(conformer.layers)
        if not 0 <= layer <= depth:
            raise ValueError(f"layer={layer} outside 0..{depth} for this MuQ")
        self.layer = layer
        if truncate and layer < depth:
            conformer.layers = conformer.layers[:layer]
            # the final layer_norm would otherwise be applied to layer k's output
            conformer.layer_norm = nn.Identity()
            self.tap = -1
        else:
            self.tap = layer
        self.out_dim = int(self.muq.config.encoder_dim)
        for p in self.muq.parameters():
            p.requires_grad_(False)
        self.muq.eval()
        # frame count = f(samples): mel hop, then the time strides of the conv stem
        self.hop_length = int(self.muq.config.hop_length)
        self.conv_strides = stem_strides(self.muq)
        # new weights (an export, init_from) mean a new cache namespace
        self.register_load_state_dict_post_hook(self._reset_cache)

    def train(self, mode: bool = True) -> MuQTap:
        # BatchNorm stats, dropout and layerdrop of the backbone stay in eval
        super().train(mode)
        self.muq.eval()
        return self

    # ---- frames and masks ------------------------------------------------------------------
    def num_frames(self, n_samples: torch.Tensor | int) -> torch.Tensor | int:
        """Exact MuQ frame count of a clip of `n_samples` samples (tensor or int, elementwise)."""
        return muq_num_frames(n_samples, self.hop_length, self.conv_strides)

    # ---- cache -----------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        """No trainable parameter: the output is a fixed function of the waveform (cacheable)."""
        return not any(p.requires_grad for p in self.parameters())

    @property
    def uses_keys(self) -> bool:
        """Whether forward() can use per-clip cache keys (frozen and a cache_dir configured)."""
        return self.cache_dir is not None and self.frozen

    def config_hash(self) -> str:
        """sha1 over everything that changes the features: weights, MuQ config, tap, truncation."""
        h = hashlib.sha1(f"muq-features|v1|{self.layer}|{self.tap}|".encode())
        h.update(json.dumps(muq_config_dict(self.muq), sort_keys=True, default=str).encode())
        state = self.muq.state_dict()
        for k in sorted(state):
            t = state[k].detach().cpu().reshape(-1).contiguous()
            h.update(f"|{k}:{t.dtype}:{tuple(state[k].shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    @property
    def cache(self) -> FeatureCache | None:
        """The FeatureCache of this encoder's exact weights; hashed on first use (the weights of
        an export are only loaded after construction) and again after `load_state_dict`."""
        if self.cache_dir is None:
            return None
        if self._cache is None:
            self._cache = FeatureCache(self.cache_dir, f"muq-{self.config_hash()[:16]}")
        return self._cache

    def _reset_cache(self, *_: Any) -> None:
        self._cache = None

    # ---- forward ---------------------------------------------------------------------------
    def forward(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor | None = None,
        keys: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """wav [B, T] float, lengths [B] samples -> (features [B, F, D], frame mask [B, F] bool).

        `keys` (one per clip, identifying its content) are only used by a frozen encoder with a
        `cache_dir`; see `uses_keys`.
        """
        B, T = wav.shape
        if lengths is None:
            lengths = torch.full((B,), T, device=wav.device, dtype=torch.long)
        lengths = lengths.to(wav.device)
        if self.frozen:
            return self._forward_frozen(wav, lengths, keys)
        feats, mask = muq_padded_hidden(self.muq, wav, lengths, self.tap)  # [B, F, D], [B, F]
        expected = self.num_frames(int(lengths.max()))
        if feats.shape[1] != expected:
            raise RuntimeError(f"MuQ gave {feats.shape[1]} frames, expected {expected}")
        return feats, mask

    @torch.no_grad()
    def _forward_frozen(
        self, wav: torch.Tensor, lengths: torch.Tensor, keys: Sequence[str] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cache hits skip MuQ; the other clips share one exact padded pass, so a clip gets the
        same features alone, padded in a batch, or from the cache."""
        B = wav.shape[0]
        n_valid = [int(n) for n in cast(torch.Tensor, self.num_frames(lengths)).tolist()]
        feats: list[torch.Tensor | None] = [None] * B
        ckeys: list[str | None] = [None] * B
        cache = self.cache if keys is not None else None
        if cache is not None and keys is not None:
            if len(keys) != B:
                raise ValueError(f"{len(keys)} cache keys for a batch of {B} clips")
            # autocast changes the features: bf16 and fp32 results are separate entries
            dev = wav.device.type
            amp = str(torch.get_autocast_dtype(dev)) if torch.is_autocast_enabled(dev) else "fp32"
            for i in range(B):
                key = ckeys[i] = cache.key(str(keys[i]), int(lengths[i]), amp)
                hit = cache.get(key)
                if hit is not None and hit["feats"].shape[0] == n_valid[i]:
                    feats[i] = hit["feats"].to(wav.device)  # [F_i, D]
        todo = [i for i in range(B) if feats[i] is None]
        if todo:  # one padded pass, exact: each clip gets the features it gets alone
            out, _ = muq_padded_hidden(self.muq, wav[todo], lengths[todo], self.tap)  # [b, F, D]
            for j, i in enumerate(todo):
                f = feats[i] = out[j, : n_valid[i]]  # [F_i, D]
                ckey = ckeys[i]
                if cache is not None and ckey is not None:
                    cache.put(ckey, {"feats": f, "n_frames": torch.tensor([n_valid[i]])})
        done = cast(list[torch.Tensor], feats)  # every clip is a cache hit or was just run
        F = max(n_valid)
        batch = done[0].new_zeros(B, F, done[0].shape[-1])  # [B, F, D], padded frames stay 0
        for i, f in enumerate(done):
            if f.shape[0] != n_valid[i]:
                raise RuntimeError(f"MuQ gave {f.shape[0]} frames, expected {n_valid[i]}")
            batch[i, : f.shape[0]] = f.to(batch.dtype)
        mask = (
            torch.arange(F, device=wav.device)[None, :]
            < torch.tensor(n_valid, device=wav.device)[:, None]
        )  # [B, F]
        return batch, mask
