"""SongEval (`ASLP-lab/SongEval`) behind the reward-model interface: `model=songeval` in bench.

SongEval = MuQ-large (`OpenMuQ/MuQ-large-msd-iter`) hidden state 6 -> its `Generator` head ->
five scores in (1, 5): coherence, musicality, memorability, clarity, naturalness. Here MuQ is
`audiobase.muq.MuQTap` (layer 6, truncated above it: the same hidden state) and the head is
`audiobase.songeval_head.SongEvalHead` (also the scorer's head) with five outputs, loaded
strictly from SongEval's released `ckpt/model.safetensors`. Its `config.yaml` (`generator:` section) gives the head's sizes; it is
read as data, never instantiated.

As SongEval's `eval.py`: the whole clip (no crop, no loudness normalisation), mono at 24 kHz,
fp32 unless `bf16`. Unlike it, clips are batched (`batch_size` per MuQ pass, in length order),
exactly: MuQ never sees the padding (`muq_padded`) and the head masks padded frames, so a clip
scores the same alone or in a batch (SongEval itself scores one file at a time).

Layout of `checkpoint` (a clone of the SongEval repo, or `build_tiny_songeval`'s output):
    config.yaml               generator: {in_features, ffd_hidden_size, num_classes, attn_layer_num}
    ckpt/model.safetensors    the head weights (SongEval's key names)
    muq/                      tiny models only: the random MuQ (`MuQ.save_pretrained`)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from audiobase.audio import MUQ_MIN_SAMPLES, MUQ_SR
from audiobase.files import atomic_path, write_text
from audiobase.muq import DEFAULT_PRETRAINED, MuQTap, build_tiny_muq_dir
from audiobase.muq_padded import prepare_stem_for_scoring
from audiobase.plan import length_sorted_batches, pad_waves
from audiobase.preprocess import Preprocess
from audiobase.songeval_head import (
    SONGEVAL_DIMENSIONS,
    SONGEVAL_HEADS,
    SONGEVAL_WEIGHTS,
    HeadInitError,
    SongEvalHead,
    dimension_rows,
    load_songeval_head,
    songeval_weights,
)
from audiobase.weights import MissingWeightsError
from rewards.base import MUSICALITY, BatchInput, RewardModel, ScoreItemError, as_input

SONGEVAL_LAYER = 6  # eval.py: output["hidden_states"][6]
SONGEVAL_TARGET = "model.Generator"  # the class SongEval's config.yaml names (never built here)
# SongEval's published config.yaml (the head's sizes when a checkpoint comes without one)
SONGEVAL_CONFIG = {
    "in_features": 1024,
    "ffd_hidden_size": 4096,
    "num_classes": 5,
    "attn_layer_num": 4,
}
TINY_MUQ = dict(dim=32, depth=SONGEVAL_LAYER + 2, heads=2, ffn=64)
TINY_HEAD = {"in_features": 32, "ffd_hidden_size": 64, "num_classes": 5, "attn_layer_num": 2}


class SongEvalCheckpointError(ValueError):
    """A SongEval checkpoint that is missing, malformed, or does not fit the MuQ it runs on."""


def find_songeval(checkpoint: str | os.PathLike) -> tuple[Path, Path | None]:
    """(weights file, config.yaml or None) of a SongEval clone dir or its `.safetensors` file;
    the config sits next to `ckpt/` (SongEval's eval.py reads `<weights dir>/../config.yaml`)."""
    path = Path(checkpoint)
    if not path.exists():
        raise MissingWeightsError(
            f"SongEval ({path})",
            "model.checkpoint",
            env="SONGEVAL_CHECKPOINT",
            commands=(f"git clone https://github.com/ASLP-lab/SongEval {path}",),
            reason=f"no {path}",
        )
    try:
        weights = songeval_weights(path)
    except HeadInitError as e:
        raise SongEvalCheckpointError(str(e)) from e
    for cand in (weights.parent.parent / "config.yaml", weights.parent / "config.yaml"):
        if cand.is_file():
            return weights, cand
    return weights, None


def read_head_config(path: Path | None) -> dict[str, int]:
    """The head sizes from SongEval's config.yaml (`generator:`), as data; defaults without one."""
    if path is None:
        return dict(SONGEVAL_CONFIG)
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SongEvalCheckpointError(f"{path}: cannot read SongEval config: {e}") from e
    gen = cfg.get("generator") if isinstance(cfg, dict) else None
    if not isinstance(gen, dict):
        raise SongEvalCheckpointError(f"{path}: not a SongEval config (no `generator:` section)")
    gen = dict(gen)
    target = gen.pop("_target_", SONGEVAL_TARGET)
    if target != SONGEVAL_TARGET:
        raise SongEvalCheckpointError(
            f"{path}: generator targets {target!r}, SongEval's is {SONGEVAL_TARGET!r}"
        )
    unknown = sorted(set(gen) - set(SONGEVAL_CONFIG))
    if unknown:
        raise SongEvalCheckpointError(
            f"{path}: unknown generator keys {unknown}; known: {sorted(SONGEVAL_CONFIG)}"
        )
    out = {**SONGEVAL_CONFIG, **gen}
    if not all(isinstance(v, int) and v > 0 for v in out.values()):
        raise SongEvalCheckpointError(f"{path}: generator sizes must be positive integers: {out}")
    if out["num_classes"] != len(SONGEVAL_DIMENSIONS):
        raise SongEvalCheckpointError(
            f"{path}: num_classes {out['num_classes']}, SongEval has {len(SONGEVAL_DIMENSIONS)} "
            f"dimensions {list(SONGEVAL_DIMENSIONS)}"
        )
    return out


def songeval_head(cfg: dict[str, int]) -> SongEvalHead:
    """Our head with SongEval's layout for a `generator:` config: five outputs, 8 heads."""
    return SongEvalHead(
        in_dim=cfg["in_features"],
        hidden_dim=cfg["ffd_hidden_size"],
        attn_layers=cfg["attn_layer_num"],
        heads=SONGEVAL_HEADS,
        dropout=0.2,
        out_dim=cfg["num_classes"],
    )


def songeval_scale(logits: torch.Tensor) -> torch.Tensor:
    """SongEval's output transform, `tanh(x) * 2 + 3`: scores in (1, 5)."""
    return torch.tanh(logits) * 2.0 + 3.0


def build_tiny_songeval(out: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random SongEval at `out` in the released layout (+ `muq/`, its random MuQ);
    a no-op if one is there; safe against concurrent builders."""
    out = Path(out)
    if (out / SONGEVAL_WEIGHTS).is_file() and (out / "muq" / "config.json").is_file():
        return out
    with atomic_path(out, is_dir=True) as tmp, torch.random.fork_rng(devices=[]):
        build_tiny_muq_dir(tmp / "muq", seed=seed, **TINY_MUQ)
        torch.manual_seed(seed)
        head = songeval_head(TINY_HEAD)
        with torch.no_grad():  # attention biases start at zero: make every weight count
            for p in head.parameters():
                p.add_(0.05 * torch.randn_like(p))
        (tmp / SONGEVAL_WEIGHTS).parent.mkdir(parents=True)
        state = {k: v.contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(tmp / SONGEVAL_WEIGHTS))
        gen = {"_target_": SONGEVAL_TARGET, **TINY_HEAD}
        write_text(tmp / "config.yaml", yaml.safe_dump({"generator": gen}, sort_keys=False))
    return out


class SongEvalRewardModel(RewardModel):
    """SongEval: MuQ layer 6 + SongEval's head; `score_batch` -> [N, 2 + 5].

    Column 0 (alignment) is NaN, column 1 is musicality, columns 2-6 are the five dimensions in
    `extra_columns` order, each SongEval's score in (1, 5) (higher is better).

    Args:
        checkpoint: a clone of the SongEval repo (`ckpt/model.safetensors` + `config.yaml`) or
            the `.safetensors` file.
        muq: MuQ hub id or local dir for `MuQ.from_pretrained`; None = SongEval's
            MuQ-large-msd-iter, or with `tiny` the tiny build's own `muq/`.
        device: torch device string.
        bf16: bfloat16 autocast on CUDA (SongEval runs fp32); ignored on CPU.
        max_dur: score the first `max_dur` seconds (None = the whole clip, as SongEval).
        cache_dir: `FeatureCache` root for MuQ features, keyed by waveform content.
        tiny: build a tiny random SongEval at `checkpoint` first if nothing is there.
    """

    thread_safe = True  # scoring changes no state: the runner may score batches at once
    preprocess: Preprocess  # set in __init__: the model's own contract

    extra_columns = list(SONGEVAL_DIMENSIONS)

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        muq: str | None = None,
        device: str = "cpu",
        bf16: bool = False,
        max_dur: float | None = None,
        cache_dir: str | None = None,
        tiny: bool = False,
    ) -> None:
        if tiny:
            build_tiny_songeval(checkpoint)
        if muq is None:
            muq = str(Path(checkpoint) / "muq") if tiny else DEFAULT_PRETRAINED
        weights, cfg_path = find_songeval(checkpoint)
        head_cfg = read_head_config(cfg_path)
        self.encoder = MuQTap(
            pretrained=str(muq),
            layer=SONGEVAL_LAYER,
            truncate=True,
            cache_dir=cache_dir,
            weights_key="model.muq",
        )
        if self.encoder.out_dim != head_cfg["in_features"]:
            raise SongEvalCheckpointError(
                f"{cfg_path or weights}: head takes {head_cfg['in_features']}-d features, "
                f"MuQ {muq!r} gives {self.encoder.out_dim}-d"
            )
        self.head = songeval_head(head_cfg)
        load_songeval_head(self.head, weights, dimension_rows("all"))
        self.device = torch.device(device)
        self.encoder.to(self.device).eval()
        if self.device.type == "cpu":
            prepare_stem_for_scoring(self.encoder.muq)  # scoring only: never saved
        self.head.to(self.device).eval()
        self.bf16 = bool(bf16) and self.device.type == "cuda"
        self.checkpoint = str(weights)
        # SongEval's eval.py: librosa.load(sr=24000), mono, the whole song, no loudness change
        self.preprocess = Preprocess(sr=MUQ_SR, max_dur=max_dur, min_samples=MUQ_MIN_SAMPLES)

    @property
    def sr(self) -> int:
        return self.preprocess.sr

    def __repr__(self) -> str:
        return f"SongEvalRewardModel({self.checkpoint!r})"

    def score_batch(
        self,
        inputs: Sequence[BatchInput | Any],
        batch_size: int = 8,
        max_dur: float | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Paths or waveforms at `sr` -> [N, 7]: NaN, musicality, the five dimensions.

        The model's `preprocess` decides what is scored; the runner's `max_dur` does not apply.
        Raises `ScoreItemError` naming a bad input.
        """
        if kwargs:
            raise TypeError(
                f"SongEvalRewardModel.score_batch got unknown options: {sorted(kwargs)}"
            )
        wavs = []
        for i, x in enumerate(inputs):
            item = as_input(x)
            try:
                wavs.append(torch.from_numpy(self.preprocess(item.audio)))  # [T_i]
            except Exception as e:  # noqa: BLE001 - re-raised with the item named
                raise ScoreItemError(i, item, f"{type(e).__name__}: {e}") from e
        n_dims = len(SONGEVAL_DIMENSIONS)
        out = np.full((len(wavs), 2 + n_dims), np.nan, dtype=np.float64)
        # similar lengths share a batch; MuQTap batches unequal lengths exactly
        for idx in length_sorted_batches([w.shape[0] for w in wavs], batch_size):
            out[idx, 2:] = self._score([wavs[i] for i in idx]).numpy()
        out[:, MUSICALITY] = out[:, 2 + SONGEVAL_DIMENSIONS.index("musicality")]
        return out

    @torch.no_grad()
    def _score(self, wavs: list[torch.Tensor]) -> torch.Tensor:
        """[T_i] waveforms -> SongEval scores [B, 5] (float64, CPU)."""
        batch, lengths = pad_waves(wavs)  # [B, T] zero-padded, [B]
        keys = None
        if self.encoder.uses_keys:  # content keys: the runner passes waveforms, not paths
            keys = [hashlib.sha1(w.numpy().tobytes()).hexdigest() for w in wavs]
        # enabled=False also turns off a caller's autocast: fp32 unless bf16 was asked for
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            feats, mask = self.encoder(batch.to(self.device), lengths, keys=keys)  # [B, F, D]
            logits = self.head(feats, mask)  # [B, 5]
        return songeval_scale(logits.float()).double().cpu()
