"""Self-contained scorer export (config.yaml + model.safetensors) and the reward-model wrapper.

No Lightning on this path: `load_scorer` rebuilds the net from the `_target_` config stored in
config.yaml, so plan A (MuQ-LoRA) and plan B (MuQ + timbre) nets reload the same way.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from audioscore.audio import MUQ_MIN_SAMPLES, MUQ_SR, AudioTooShortError, audio_duration
from audioscore.models.components.scorer import frozen_base_keys
from rewards.base import MUSICALITY, BatchInput, RewardModel, as_input

log = logging.getLogger(__name__)

FORMAT = "audioscore-scorer"
VERSION = 1
CONFIG_NAME, WEIGHTS_NAME = "config.yaml", "model.safetensors"
DEFAULT_PREPROCESS = {"target_lufs": -12.0, "max_dur": 30.0, "crop": "center"}


class ExportError(ValueError):
    """An export directory that is missing files, malformed, or does not match its weights."""


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def export_scorer(
    module_or_net: nn.Module,
    out_dir: str | os.PathLike,
    *,
    save_full_encoder: bool = True,
    net_config: dict | None = None,
    preprocess: dict | None = None,
    meta: dict | None = None,
) -> Path:
    """Write `out_dir/config.yaml` + `out_dir/model.safetensors`; returns `out_dir`.

    `save_full_encoder=False` stores only LoRA/head/other trained weights; the MuQ base then
    comes from the encoder's `pretrained` id/dir at load time. A randomly initialised encoder
    (no `pretrained`) is always saved in full, since nothing else could rebuild it.
    """
    from safetensors.torch import save_file

    from audioscore.models.components.muq_encoder import muq_config_dict

    net = getattr(module_or_net, "net", module_or_net)
    cfg = copy.deepcopy(net_config or getattr(net, "_net_config", None))
    if not cfg:
        raise ExportError("export_scorer needs the net's `_target_` config (net_config=...)")
    state = net.state_dict()
    enc = getattr(net, "encoder", None)
    drop = set(frozen_base_keys(net))
    full = save_full_encoder or not drop
    if full:
        drop = set()
        if enc is not None and hasattr(enc, "muq") and "encoder" in cfg:
            # rebuild the backbone from its own config, so loading needs no hub access
            cfg["encoder"]["pretrained"] = None
            cfg["encoder"]["muq_config"] = muq_config_dict(enc.muq)
    # plan B: the frozen CAM++ weights travel in the state dict, so no hub id is needed; it sits
    # at net.timbre (clip level) or, for frame-level fusion, inside the encoder
    for module, holder, key in (
        (getattr(net, "timbre", None), cfg, "timbre"),
        (getattr(enc, "campp", None), cfg.get("encoder", {}), "campp"),
    ):
        if hasattr(module, "standalone_config") and key in holder:
            holder[key] = module.standalone_config()
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state.items() if k not in drop}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "sr": MUQ_SR,
        "save_full_encoder": bool(full),
        "preprocess": {**DEFAULT_PREPROCESS, **(preprocess or {})},
        "net": cfg,
        "meta": meta or {},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(
        out / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT})
    )
    # config last: its presence marks a complete export
    _atomic_write(
        out / CONFIG_NAME, lambda p: p.write_text(yaml.safe_dump(config, sort_keys=False))
    )
    return out


def read_export_config(path: str | os.PathLike) -> dict:
    """config.yaml of an export directory, validated."""
    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file():
        raise ExportError(f"{path}: not a scorer export (no {CONFIG_NAME})")
    config = yaml.safe_load(cfg_path.read_text())
    if not isinstance(config, dict) or config.get("format") != FORMAT or "net" not in config:
        raise ExportError(f"{cfg_path}: not an {FORMAT} config")
    return config


def load_net(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the net of an export directory and load its weights; returns (net in eval, config)."""
    from hydra.utils import instantiate
    from safetensors.torch import load_file

    path = Path(path)
    config = read_export_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise ExportError(f"{path}: missing {WEIGHTS_NAME}")
    net = instantiate(config["net"], _convert_="all")
    net._net_config = config["net"]
    missing, unexpected = net.load_state_dict(load_file(str(weights)), strict=False)
    allowed = set() if config.get("save_full_encoder", True) else set(frozen_base_keys(net))
    bad_missing = [k for k in missing if k not in allowed]
    if unexpected or bad_missing:
        raise ExportError(
            f"{weights}: weights do not match the net in {CONFIG_NAME} "
            f"(missing {bad_missing[:5]}, unexpected {unexpected[:5]})"
        )
    return net.to(device).eval(), config


def prepare_audio(
    audio: Any, max_dur: float | None, target_lufs: float | None, crop: str = "center"
) -> np.ndarray:
    """A path (decoded at 24 kHz) or a mono 24 kHz waveform -> the model input [T] float32.

    Cropped to `max_dur` seconds (centre window by default, as in validation) and loudness
    normalised as in training.
    """
    from audioscore.audio import load_audio, loudness_normalize

    n_max = None if not max_dur else int(round(max_dur * MUQ_SR))
    if isinstance(audio, str | os.PathLike):
        offset = 0.0
        if n_max is not None and crop == "center":
            offset = max(0.0, (audio_duration(audio) - max_dur) / 2)
        wav = load_audio(
            audio, MUQ_SR, offset=offset, duration=max_dur or None, min_samples=MUQ_MIN_SAMPLES
        )
        name = os.fspath(audio)
    else:
        wav = (
            torch.as_tensor(audio).detach().float().cpu().numpy()
            if not isinstance(audio, np.ndarray)
            else audio.astype(np.float32)
        )
        if wav.ndim == 2 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.ndim != 1:
            raise ValueError(f"waveform input must be mono [T] at 24 kHz, got shape {wav.shape}")
        name = "<waveform>"
        if n_max is not None and wav.shape[0] > n_max:
            start = (wav.shape[0] - n_max) // 2 if crop == "center" else 0
            wav = wav[start : start + n_max]
        if wav.shape[0] < MUQ_MIN_SAMPLES:
            raise AudioTooShortError(
                name, f"{wav.shape[0]} samples at 24 kHz, MuQ needs at least {MUQ_MIN_SAMPLES}"
            )
    if target_lufs is not None:
        wav = loudness_normalize(wav, MUQ_SR, target_lufs)
    return np.ascontiguousarray(wav, dtype=np.float32)


def equal_length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of equal-length clips: no padding enters the encoder, so a clip scores the
    same alone or in a batch (MuQ's conv stem and conformer convs would see padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[batches[-1][0]] == lengths[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class ScorerRewardModel(RewardModel):
    """An exported scorer behind the rewards interface: column 1 = vocal score, column 0 = NaN."""

    def __init__(
        self, checkpoint: str, device: str = "cpu", bf16: bool | None = None, **kw: Any
    ) -> None:
        """kw: preprocessing overrides (target_lufs, max_dur, crop); bf16=None: autocast on CUDA."""
        self.checkpoint = str(checkpoint)
        self.device = torch.device(device)
        self.bf16 = self.device.type == "cuda" if bf16 is None else bool(bf16)
        self.net, self.config = load_net(checkpoint, str(self.device))
        known = {k: v for k, v in kw.items() if k in DEFAULT_PREPROCESS}
        self.preprocess = {**DEFAULT_PREPROCESS, **self.config.get("preprocess", {}), **known}

    @property
    def sr(self) -> int:
        return MUQ_SR

    @torch.inference_mode()
    def score_waveforms(self, wavs: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """Prepared waveforms [T_i] -> scores [N] (batches hold equal-length clips only)."""
        scores = np.full(len(wavs), np.nan, dtype=np.float64)
        for idx in equal_length_batches([len(w) for w in wavs], max(1, batch_size)):
            x = torch.from_numpy(np.stack([wavs[i] for i in idx])).to(self.device)  # [B, T]
            lengths = torch.full((len(idx),), x.shape[1], dtype=torch.long, device=self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = self.net(x, lengths)
            scores[idx] = out["score"].float().cpu().numpy()
        return scores

    def score_batch(
        self,
        inputs: list[BatchInput] | list[Any],
        batch_size: int = 8,
        max_dur: float | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Score `inputs` (paths or mono 24 kHz waveforms) -> [N, 2]; raises AudioError on bad audio."""
        max_dur = max_dur if max_dur is not None else self.preprocess["max_dur"]
        wavs = [
            prepare_audio(
                as_input(x).audio, max_dur, self.preprocess["target_lufs"], self.preprocess["crop"]
            )
            for x in inputs
        ]
        out = np.full((len(inputs), 2), np.nan, dtype=np.float64)
        out[:, MUSICALITY] = self.score_waveforms(wavs, batch_size)
        return out


def load_scorer(path: str | os.PathLike, device: str = "cpu") -> ScorerRewardModel:
    """Load an exported scorer directory as a reward model."""
    return ScorerRewardModel(checkpoint=str(path), device=device)
