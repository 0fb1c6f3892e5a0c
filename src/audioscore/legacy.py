"""The original scorer's checkpoints (karl-wang's audioscore, QwenFeat-Vocal-Score), read safely.

A checkpoint is a directory:
- `type.txt`: `SongEvalGenerator_audio_lora` (MuQ with LoRA + SongEval head) or
  `SongEvalGenerator` (SongEval head on a frozen MuQ);
- `weights.pt`: the head's state dict, SongEval's `Generator` names (`ffd.*`, `attn.*`,
  `fc` [5, 2048]); the GRL variant adds `speaker_discriminator.*`;
- `muq_lora.pt` (LoRA type): `<MuQ module path>.<adapter>.lora_A|lora_B` (the weights) and
  `.scaling` (0-d) for each adapted Linear.

The original scores `hidden_states[6]` of MuQ-large with the head's column 1 (musicality),
prints `5 - (2 tanh(l) + 3)` and is lower-is-better. Here the head's projection keeps that row
negated, so the raw score is `-l`: higher is better, as everywhere in the project.
`convert_legacy` writes such a checkpoint as an export (`python -m audioscore.convert legacy`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from audiobase.audio import MUQ_MIN_SAMPLES, MUQ_SR
from audiobase.muq import DEFAULT_PRETRAINED
from audiobase.preprocess import Preprocess
from audiobase.songeval_head import SongEvalHead
from audioscore.calibrate import TanhCalibration
from audioscore.models.components.muq_encoder import MuQEncoder
from audioscore.models.components.scorer import VocalScorer

log = logging.getLogger(__name__)

LORA_TYPE, FROZEN_TYPE = "SongEvalGenerator_audio_lora", "SongEvalGenerator"
TYPES = (LORA_TYPE, FROZEN_TYPE)
TYPE_NAME, HEAD_NAME, LORA_NAME = "type.txt", "weights.pt", "muq_lora.pt"
TAP = 6  # SongEval's MuQ layer: hidden_states[6], the output of conformer layer 6 of 12
MUSICALITY = (
    1  # SongEval's output columns: coherence, musicality, memorability, clarity, naturalness
)
HEADS = 8  # SongEval's attention heads (not recorded in the weights)
DISCRIMINATOR = "speaker_discriminator."  # the GRL variant's speaker regressor
# what the original scored: the whole file at 24 kHz, no loudness normalisation
LEGACY_PREPROCESS = Preprocess(
    sr=MUQ_SR, max_dur=None, crop="start", target_lufs=None, min_samples=MUQ_MIN_SAMPLES
)
# the original's printed number 5 - (2 tanh(l) + 3) with raw = -l: 2 + 2 tanh(raw)
LEGACY_CALIBRATION = TanhCalibration(scale=2.0, offset=2.0)
_LORA_KEY = re.compile(r"^(?P<module>.+)\.(?P<adapter>[^.]+)\.(?P<part>lora_A|lora_B|scaling)$")
_LAYER = re.compile(r"conformer\.layers\.(\d+)\.")


class LegacyFormatError(ValueError):
    """An original-format checkpoint that is incomplete or not what its type.txt says."""


def is_legacy_checkpoint(path: str | os.PathLike) -> bool:
    """A directory holding the original's `type.txt` (and no export config.yaml)."""
    p = Path(path)
    return (p / TYPE_NAME).is_file() and not (p / "config.yaml").is_file()


@dataclass
class LegacyCheckpoint:
    """An original-format checkpoint mapped onto this project's `VocalScorer` names.

    `state` holds the net's tensors (`head.*`; `encoder.muq.<module>.lora_A|B.default.weight`),
    with the musicality row of `fc` negated; `dropped` says what was left out and why.
    """

    path: Path
    kind: str
    state: dict[str, torch.Tensor]
    lora: dict[str, Any] | None  # {r, alpha, dropout, target_modules}; None for a frozen MuQ
    head: dict[str, int]  # hidden_dim, attn_layers, in_dim
    dropped: list[str] = field(default_factory=list)

    def net_config(
        self, pretrained: str | None = DEFAULT_PRETRAINED, muq_config: dict | str | None = None
    ) -> dict:
        """`VocalScorer` config of the original's architecture (MuQ from `pretrained`, or random
        from `muq_config`), tapped at layer 6 and truncated above it."""
        return {
            "_target_": f"{VocalScorer.__module__}.VocalScorer",
            "encoder": {
                "_target_": f"{MuQEncoder.__module__}.MuQEncoder",
                "pretrained": pretrained,
                "muq_config": muq_config,
                "layer": TAP,
                "truncate": True,
                "lora": None if self.lora is None else dict(self.lora),
                "train_backbone": False,
                "cache_dir": None,
            },
            "head": {
                "_target_": f"{SongEvalHead.__module__}.SongEvalHead",
                "_partial_": True,
                "hidden_dim": self.head["hidden_dim"],
                "attn_layers": self.head["attn_layers"],
                "heads": HEADS,
                "dropout": 0.2,
            },
        }


def _load(path: Path) -> dict[str, torch.Tensor]:
    """A torch.save'd dict of tensors, without unpickling anything else."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, refused globals
        raise LegacyFormatError(f"{path}: cannot be read as a tensor dict ({e})") from e
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LegacyFormatError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def _read_head(path: Path, dropped: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """weights.pt -> our `head.*` tensors (fc = minus the musicality row) and the head's sizes."""
    sd = _load(path)
    disc = sorted(k for k in sd if k.startswith(DISCRIMINATOR))
    if disc:
        dropped.append(
            f"{len(disc)} GRL speaker-discriminator tensors ({', '.join(disc)}): "
            "training-only, not part of the score"
        )
    head = {k: v for k, v in sd.items() if not k.startswith(DISCRIMINATOR)}
    need = ["ffd.0.weight", "ffd.0.bias", "ffd.2.weight", "ffd.2.bias", "fc.weight", "fc.bias"]
    missing = [k for k in need if k not in head]
    if missing:
        raise LegacyFormatError(f"{path}: not a SongEval head state dict (missing {missing})")
    n_attn = len({k.split(".")[1] for k in head if k.startswith("attn.")})
    known = {*need} | {
        f"attn.{i}.{p}"
        for i in range(n_attn)
        for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    }
    unknown = sorted(set(head) - known)
    if unknown:
        raise LegacyFormatError(f"{path}: unexpected keys for a SongEval head: {unknown[:8]}")
    fc_w, fc_b = head.pop("fc.weight"), head.pop("fc.bias")  # [C, 2D], [C]
    if fc_w.ndim != 2 or fc_w.shape[0] <= MUSICALITY:
        raise LegacyFormatError(
            f"{path}: fc.weight {tuple(fc_w.shape)} has no musicality row {MUSICALITY}"
        )
    others = [i for i in range(fc_w.shape[0]) if i != MUSICALITY]
    dropped.append(f"fc rows {others} (the other SongEval dimensions): the original scores row 1")
    state = {f"head.{k}": v for k, v in head.items()}
    # lower-is-better -> higher-is-better: raw = -(musicality logit)
    state["head.fc.weight"] = -fc_w[MUSICALITY : MUSICALITY + 1].clone()  # [1, 2D]
    state["head.fc.bias"] = -fc_b[MUSICALITY : MUSICALITY + 1].clone()  # [1]
    sizes = {
        "in_dim": int(head["ffd.0.weight"].shape[1]),
        "hidden_dim": int(head["ffd.0.weight"].shape[0]),
        "attn_layers": n_attn,
    }
    if fc_w.shape[1] != 2 * sizes["in_dim"]:
        raise LegacyFormatError(
            f"{path}: fc.weight {tuple(fc_w.shape)} does not take mean+max of "
            f"{sizes['in_dim']}-d frames"
        )
    return state, sizes


def _read_lora(path: Path, dropped: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """muq_lora.pt -> our LoRA tensors (layers below the tap) and {r, alpha, ...}."""
    sd = _load(path)
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise LegacyFormatError(
                f"{path}: unexpected key {key!r} (want <module>.<adapter>.lora_A|lora_B|scaling)"
            )
        modules.setdefault(m["module"], {})[m["part"]] = value
    if not modules:
        raise LegacyFormatError(f"{path}: no LoRA tensors")
    ranks, scalings = set(), set()
    for name, parts in modules.items():
        if set(parts) != {"lora_A", "lora_B", "scaling"}:
            raise LegacyFormatError(
                f"{path}: {name} has {sorted(parts)}, needs lora_A, lora_B, scaling"
            )
        a, b = parts["lora_A"], parts["lora_B"]  # [r, in], [out, r]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LegacyFormatError(
                f"{path}: {name} lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} disagree on r"
            )
        ranks.add(int(a.shape[0]))
        scalings.add(round(float(parts["scaling"]), 8))
    if len(ranks) != 1 or len(scalings) != 1:
        raise LegacyFormatError(
            f"{path}: mixed LoRA ranks {sorted(ranks)} / scalings {sorted(scalings)}"
        )
    r, scaling = ranks.pop(), scalings.pop()
    alpha = scaling * r  # peft: scaling = alpha / r
    layer_of = {n: int(m[1]) for n in modules if (m := _LAYER.search(n))}
    above = sorted(n for n, i in layer_of.items() if i >= TAP)
    if above:
        top = max(layer_of.values()) + 1  # layer k = conformer.layers[k - 1]
        dropped.append(
            f"LoRA of {len(above)} modules in conformer layers {TAP + 1}-{top} (above the "
            f"layer-{TAP} tap: they cannot change the score)"
        )
    state: dict[str, torch.Tensor] = {}
    for name, parts in modules.items():
        if name in above:
            continue
        state[f"encoder.muq.{name}.lora_A.default.weight"] = parts["lora_A"]
        state[f"encoder.muq.{name}.lora_B.default.weight"] = parts["lora_B"]
    targets = sorted({n.rsplit(".", 1)[-1] for n in modules})
    lora = {
        "r": r,
        "alpha": int(alpha) if abs(alpha - round(alpha)) < 1e-6 else alpha,
        "dropout": 0.0,
        "target_modules": targets,
    }
    return state, lora


def read_legacy(path: str | os.PathLike) -> LegacyCheckpoint:
    """Read an original-format checkpoint directory (torch.load with weights_only=True only)."""
    root = Path(path)
    if not root.is_dir():
        raise LegacyFormatError(f"{root}: not a directory (an original checkpoint is a folder)")
    type_path = root / TYPE_NAME
    if not type_path.is_file():
        raise LegacyFormatError(f"{root}: no {TYPE_NAME}, not an original-format checkpoint")
    kind = type_path.read_text().strip()
    if kind not in TYPES:
        raise LegacyFormatError(
            f"{type_path}: type {kind!r} is not supported (supported: {', '.join(TYPES)})"
        )
    head_path = root / HEAD_NAME
    if not head_path.is_file():
        raise LegacyFormatError(f"{root}: missing {HEAD_NAME} (the head's weights)")
    dropped: list[str] = []
    state, sizes = _read_head(head_path, dropped)
    lora = None
    if kind == LORA_TYPE:
        lora_path = root / LORA_NAME
        if not lora_path.is_file():
            raise LegacyFormatError(f"{root}: type {kind} but no {LORA_NAME}")
        lora_state, lora = _read_lora(lora_path, dropped)
        state.update(lora_state)
    elif (root / LORA_NAME).is_file():
        dropped.append(f"{LORA_NAME}: type {kind} scores with a frozen MuQ")
    return LegacyCheckpoint(root, kind, state, lora, sizes, dropped)
