"""CMI-RM `config.yaml`: the keys the official `ModelConfig.from_yaml` reads, same defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audiobase.weights import MissingWeightsError
from audioscore.safe_config import UntrustedInputError

CONFIG_NAME, WEIGHTS_NAME = "config.yaml", "model.safetensors"
# the model-config key (CMIRewardModel argument) that lets the towers' folders run their code;
# never read from the checkpoint's own config.yaml
REMOTE_CODE_KEY = "trust_remote_code"


class CheckpointError(UntrustedInputError):
    """A CMI-RM checkpoint that cannot be used; the message names the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class RemoteCodeRefused(CheckpointError):
    """A folder the towers load from carries code, and `trust_remote_code` is not set."""


@dataclass
class CMIRMConfig:
    name: str = "reward"
    model_name: str = "OpenMuQ/MuQ-MuLan-large"
    dim: int = 768
    mode: str = "concat_text_late"
    attention_mode: str = "SA"
    mlp_dim: int = 512
    output_dim: int = 2
    sr: int = 24000
    prompt_tf_depth: int = 1
    joint_tf_depth: int = 4
    dim_head: int = 64
    heads: int = 8
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    ff_mult: int = 4
    use_layer_idx: int = -1
    null_lengths: dict[str, int] = field(
        default_factory=lambda: {"text": 10, "lyrics": 10, "audio": 10}
    )
    downsample: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # training-only keys, kept for the record

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CMIRMConfig:
        d = dict(d.get("model", d)) if isinstance(d.get("model"), dict) else dict(d)
        known = {f for f in cls.__dataclass_fields__ if f not in ("null_lengths", "extra")}
        null = d.pop("null_embedding", None) or {}
        lengths = {
            k: int((null.get(k) or {}).get("length", 10)) for k in ("text", "lyrics", "audio")
        }
        kw = {k: d.pop(k) for k in list(d) if k in known}
        return cls(**kw, null_lengths=lengths, extra=d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> CMIRMConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise CheckpointError(path, f"cannot read config: {e}") from e
        if not isinstance(raw, dict):
            raise CheckpointError(path, "config.yaml is not a mapping")
        cfg = cls.from_dict(raw)
        cfg.check(path)
        return cfg

    def check(self, path: str | Path) -> None:
        if self.name != "reward":
            raise CheckpointError(
                path, f"model name {self.name!r} is not supported (only 'reward')"
            )
        if self.attention_mode != "SA":
            raise CheckpointError(
                path, f"attention_mode {self.attention_mode!r} is not supported (only 'SA')"
            )
        if self.mode not in ("concat_text_late", "text_only"):
            raise CheckpointError(path, f"mode {self.mode!r} is not supported")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        lengths, extra = d.pop("null_lengths"), d.pop("extra")
        d["null_embedding"] = {k: {"length": v} for k, v in lengths.items()}
        return {**extra, **d}


def find_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) from a directory or a `.safetensors` file (config beside it or one up)."""
    p = Path(path)
    if p.is_dir():
        weights = p / WEIGHTS_NAME
    elif p.suffix == ".safetensors":
        weights = p
    elif not p.exists():
        raise MissingWeightsError(
            f"CMI-RM ({p})",
            "model.checkpoint",
            hf=f"HaiwenXia/CMI-RM --local-dir {p}",
            env="CMI_RM_CHECKPOINT",
            reason=f"no {p}",
        )
    else:
        raise CheckpointError(p, "expected a directory or a .safetensors file")
    if not weights.is_file():
        raise CheckpointError(weights, "weights file not found")
    for cand in (weights.parent / CONFIG_NAME, weights.parent.parent / CONFIG_NAME):
        if cand.is_file():
            return weights, cand
    raise CheckpointError(weights, f"no {CONFIG_NAME} next to it or one folder up")
