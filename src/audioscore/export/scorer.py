"""Self-contained scorer export (config.yaml + model.safetensors) and the reward-model wrapper
(re-exported by `audioscore.export`).

No Lightning on this path: `load_scorer` rebuilds the net from the `_target_` config stored in
config.yaml, so plan A (MuQ-LoRA) and plan B (MuQ + timbre) nets reload the same way. An
optional `calibration:` section (`audioscore.calibrate`) maps raw scores onto the label scale.
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
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file
from torch import nn

from audiobase.audio import MUQ_MIN_SAMPLES, MUQ_SR
from audiobase.files import atomic_path, write_text
from audiobase.plan import ScoringPlan
from audiobase.preprocess import Preprocess
from audiobase.schemas import (
    EXPORT_CONFIG_NAME,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    EXPORT_WEIGHTS_NAME,
)
from audioscore.calibrate import Calibration, CalibrationError
from audioscore.models.components.scorer import frozen_base_keys, pretrained_modules
from audioscore.safe_config import (
    StoredConfigError,
    UntrustedInputError,
    check_targets,
    read_yaml,
)

log = logging.getLogger(__name__)

FORMAT, VERSION = EXPORT_FORMAT, EXPORT_VERSION  # the file schema: audiobase.schemas
CONFIG_NAME, WEIGHTS_NAME = EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME
# the scorer's validation contract: the centre 30 s at -12 LUFS
DEFAULT_PREPROCESS = Preprocess(
    sr=MUQ_SR, max_dur=30.0, crop="center", target_lufs=-12.0, min_samples=MUQ_MIN_SAMPLES
)


class ExportError(UntrustedInputError):
    """An export directory that is missing files, malformed, or does not match its weights."""


def export_scorer(
    net: nn.Module,
    out_dir: str | os.PathLike,
    *,
    net_config: dict,
    save_full_encoder: bool = True,
    preprocess: Preprocess = DEFAULT_PREPROCESS,
    meta: dict | None = None,
    calibration: Calibration | None = None,
) -> Path:
    """Write `out_dir/config.yaml` + `out_dir/model.safetensors`; returns `out_dir`.

    `net_config` is the `_target_` config `net` was built from (the run's resolved `model.net`).
    Every `Pretrained` component found in `net` has its config (at the same path) replaced by
    its `standalone_config()`, since its weights travel in the state dict, unless
    `save_full_encoder=False` leaves its base weights out: those then come from its configured
    source (e.g. MuQ's `pretrained`) at load time, so its config stays as trained.
    `calibration`: raw score -> label scale, stored as plain numbers (`config.yaml`
    `calibration:`); `Scorer.score` applies it unless loaded with `calibrated=False`.
    """
    cfg = copy.deepcopy(net_config)
    drop: set[str] = set()
    for path, module in pretrained_modules(net).items():
        base = [] if save_full_encoder else module.base_state_keys()
        drop.update(f"{path}.{k}" for k in base)
        if not base:
            set_config_at(cfg, path, module.standalone_config())
    state = net.state_dict()
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state.items() if k not in drop}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "sr": preprocess.sr,
        "save_full_encoder": not drop,
        "preprocess": preprocess.to_dict(),
        "calibration": calibration.to_dict() if calibration is not None else None,
        "net": cfg,
        "meta": meta or {},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    # config last: its presence marks a complete export
    write_text(out / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
    return out


def set_config_at(cfg: dict, path: str, value: dict) -> None:
    """cfg["a"]["b"] = value for path "a.b": module paths in the net are config paths."""
    *parents, last = path.split(".")
    node: Any = cfg
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        raise ExportError(f"net config has no entry at {path!r} for the module built there")
    node[last] = value


def read_export_config(path: str | os.PathLike) -> dict:
    """config.yaml of an export directory, validated as plain data: no key or value may hold
    an OmegaConf interpolation (`${...}`: an export is stored resolved) and every `_target_`
    in it must name one of the project's components (`audioscore.safe_config.check_targets`),
    else ExportError naming the file and the key."""
    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file():
        raise ExportError(f"{path}: not a scorer export (no {CONFIG_NAME})")
    try:
        config = read_yaml(cfg_path)
        if not isinstance(config, dict) or config.get("format") != FORMAT or "net" not in config:
            raise ExportError(f"{cfg_path}: not an {FORMAT} config")
        # before anything is built: the config names what load_net will call
        check_targets(config, str(cfg_path))
    except StoredConfigError as e:
        raise ExportError(str(e)) from e
    try:
        export_calibration(config)
    except CalibrationError as e:
        raise ExportError(f"{cfg_path}: {e}") from e
    return config


def export_calibration(config: dict) -> Calibration | None:
    """The calibration an export stores (its `calibration` section), None when it has none."""
    section = config.get("calibration")
    return None if section is None else Calibration.from_dict(section)


def load_net(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the net of an export directory and load its weights; returns (net in eval, config)."""
    path = Path(path)
    config = read_export_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise ExportError(f"{path}: missing {WEIGHTS_NAME}")
    net = instantiate(config["net"], _convert_="all")
    missing, unexpected = net.load_state_dict(load_file(str(weights)), strict=False)
    allowed = set() if config.get("save_full_encoder", True) else set(frozen_base_keys(net))
    bad_missing = [k for k in missing if k not in allowed]
    if unexpected or bad_missing:
        raise ExportError(
            f"{weights}: weights do not match the net in {CONFIG_NAME} "
            f"(missing {bad_missing[:5]}, unexpected {unexpected[:5]})"
        )
    return net.to(device).eval(), config


def equal_length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of equal-length clips, for callers that stack clips without lengths
    (`score_wavs` batches unequal lengths exactly instead: `length_sorted_batches`)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[batches[-1][0]] == lengths[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.inference_mode()
def score_wavs(
    net: nn.Module, wavs: Sequence[np.ndarray], plan: ScoringPlan, keys: Sequence[str] | None = None
) -> np.ndarray:
    """Prepared waveforms [T_i] -> the net's raw scores [N], batched by `plan`: `batch_size`
    clips per forward, in length order, zero-padded with their lengths (MuQ encoders batch
    unequal lengths exactly, so a clip scores the same alone or in any batch), on the plan's
    device and autocast. `keys`: feature-cache keys of the clips (crop identities), for frozen
    encoders' caches."""
    scores = np.full(len(wavs), np.nan, dtype=np.float64)
    for idx in plan.batches([len(w) for w in wavs]):
        x, lengths = plan.collate([wavs[i] for i in idx])  # [B, T], [B]
        with plan.autocast():
            if keys is None:
                out = net(x, lengths)
            else:
                out = net(x, lengths, keys=[keys[i] for i in idx])
        scores[idx] = out["score"].float().cpu().numpy()
    return scores


class Scorer:
    """An exported scorer: files or waveforms in, one score each out, through its own contract.

    Args:
        path: the export directory (config.yaml + model.safetensors).
        device: torch device for the net.
        bf16: autocast in bfloat16 (None: on CUDA only).
        calibrated: scores on the label scale when the export stores a calibration (the
            default); False gives the net's raw scores. Ranks are the same either way.
        **preprocess: overrides of the stored contract (`max_dur`, `crop`, `target_lufs`).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        bf16: bool | None = None,
        calibrated: bool = True,
        **preprocess,
    ) -> None:
        self.path = str(path)
        self.device = torch.device(device)
        self.bf16 = self.device.type == "cuda" if bf16 is None else bool(bf16)
        self.net, self.config = load_net(path, str(self.device))
        self.preprocess = export_preprocess(self.config).replace(**preprocess)
        # how every route prepares and batches this scorer's clips
        self.plan = ScoringPlan(self.preprocess, device=str(self.device), bf16=self.bf16)
        self.calibration = export_calibration(self.config)
        self.calibrated = bool(calibrated)

    @property
    def sr(self) -> int:
        return self.preprocess.sr

    def prepare(self, audio: Any) -> np.ndarray:
        """A path or a waveform at `sr` -> the model input [T] (AudioError names a bad file)."""
        return self.plan.prepare(audio)

    def score(self, inputs: Sequence[Any], batch_size: int = 8) -> np.ndarray:
        """Paths or waveforms at `sr` -> scores [N] (calibrated unless `calibrated=False`)."""
        return self.score_prepared([self.prepare(x) for x in inputs], batch_size)

    def score_prepared(self, wavs: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """Prepared waveforms [T_i] -> scores [N] (calibrated unless `calibrated=False`)."""
        raw = self.raw_scores(wavs, batch_size)
        return self.calibrate(raw) if self.calibrated else raw

    def raw_scores(self, wavs: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """Prepared waveforms [T_i] -> the net's raw scores [N]."""
        return score_wavs(self.net, wavs, self.plan.replace(batch_size=batch_size))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores -> the label scale (unchanged when the export has no calibration)."""
        return raw if self.calibration is None else self.calibration(raw)

    def __repr__(self) -> str:
        return f"Scorer({self.path!r}, {self.preprocess})"


def export_preprocess(config: dict) -> Preprocess:
    """The preprocessing contract an export stores (its `preprocess` section)."""
    # version-1 exports stored only max_dur, crop and target_lufs
    stored = {"sr": config.get("sr", MUQ_SR), "min_samples": MUQ_MIN_SAMPLES}
    return Preprocess.from_dict({**stored, **config["preprocess"]})


def load_scorer(
    path: str | os.PathLike,
    device: str = "cpu",
    calibrated: bool = True,
    bf16: bool | None = None,
    **preprocess: Any,
) -> Scorer:
    """Load an exported scorer directory (`calibrated=False`: raw scores; `preprocess`:
    `max_dur` / `crop` / `target_lufs` overriding the stored contract). The one loader: the
    reward model `rewards.audioscore_rm.AudioscoreRewardModel` wraps what it returns."""
    return Scorer(path, device=device, bf16=bf16, calibrated=calibrated, **preprocess)
