"""`init_from=`: start a run from an exported scorer or an original-format checkpoint."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from audioscore.export import WEIGHTS_NAME, ExportError, read_export_config
from audioscore.legacy import TYPE_NAME, is_legacy_checkpoint, read_legacy
from audioscore.models.components.muq_encoder import MuQEncoder
from audioscore.models.components.scorer import frozen_base_keys

log = logging.getLogger(__name__)


def init_source(path: str, report: bool = True) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The weights and LoRA settings ({r, alpha, ...} or None) of an `init_from` source: an
    exported scorer or an original-format checkpoint (`audioscore.legacy`); `report` logs
    what the conversion of the latter leaves out."""
    if is_legacy_checkpoint(path):
        ckpt = read_legacy(path)
        for note in ckpt.dropped if report else []:
            log.info("init_from %s: dropped %s", path, note)
        return ckpt.state, ckpt.lora
    if not (Path(path) / "config.yaml").is_file():
        raise ExportError(
            f"init_from={path}: neither a scorer export (no config.yaml) nor an "
            f"original-format checkpoint (no {TYPE_NAME})"
        )
    config = read_export_config(path)  # validates the directory
    encoder = (config.get("net") or {}).get("encoder")
    lora = encoder.get("lora") if isinstance(encoder, dict) else None
    if isinstance(lora, dict):  # settings the export left at MuQEncoder's defaults
        defaults = inspect.signature(MuQEncoder._inject_lora).parameters
        lora = {"r": defaults["r"].default, "alpha": defaults["alpha"].default, **lora}
    return load_file(str(Path(path) / WEIGHTS_NAME)), lora or None


def lora_overrides(lora: dict) -> str:
    """The command-line overrides that give the run's MuQ this LoRA rank and alpha."""
    return f"model.net.encoder.lora.r={lora['r']} model.net.encoder.lora.alpha={lora['alpha']}"


def adopt_init_lora(cfg: DictConfig) -> None:
    """Give the run's MuQ the LoRA rank and alpha of `init_from` (its LoRA tensors only fit
    that rank, and alpha / r scales them); a run without LoRA fails naming the override."""
    _, lora = init_source(str(cfg.init_from), report=False)
    if not lora or OmegaConf.select(cfg, "model.net.encoder") is None:
        return
    if "lora" not in cfg.model.net.encoder:
        return  # an encoder without LoRA settings: its tensors are reported as ignored
    own = cfg.model.net.encoder.lora
    if own is None:
        raise ValueError(
            f"init_from={cfg.init_from} has LoRA r={lora['r']} alpha={lora['alpha']} but this "
            f"run's MuQ has none: set 'model.net.encoder.lora={{r: {lora['r']}, "
            f"alpha: {lora['alpha']}}}'"
        )
    if (own.get("r"), own.get("alpha")) != (lora["r"], lora["alpha"]):
        log.warning(
            "init_from %s: LoRA r=%s alpha=%s adopted (the config had r=%s alpha=%s)",
            cfg.init_from,
            lora["r"],
            lora["alpha"],
            own.get("r"),
            own.get("alpha"),
        )
        with open_dict(cfg):
            own.r, own.alpha = lora["r"], lora["alpha"]


def compact_keys(keys: list[str]) -> str:
    """Tensor names with numeric path parts merged: `layers.{0-5}.ffn1.weight`, one per pattern."""
    groups: dict[tuple[str, ...], list[tuple[int, ...]]] = {}
    for key in keys:
        parts = key.split(".")
        pattern = tuple("#" if p.isdigit() else p for p in parts)
        groups.setdefault(pattern, []).append(tuple(int(p) for p in parts if p.isdigit()))

    def span(values: set[int]) -> str:
        lo, hi = min(values), max(values)
        if len(values) == 1:
            return str(lo)
        if values == set(range(lo, hi + 1)):
            return f"{{{lo}-{hi}}}"
        return "{" + ",".join(str(v) for v in sorted(values)) + "}"

    out = []
    for pattern, numbers in groups.items():
        columns = iter([span({n[i] for n in numbers}) for i in range(len(numbers[0]))])
        out.append(".".join(next(columns) if p == "#" else p for p in pattern))
    return ", ".join(sorted(out))


def load_init_weights(net: torch.nn.Module, path: str) -> None:
    """Start from an exported scorer or an original-format checkpoint: copy every weight it
    holds that fits this net; log what it ignored and what it left unfilled."""
    state, lora = init_source(path)
    own = net.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        hint = ""
        if lora and any("lora_" in k for k in mismatched):
            hint = f"; its LoRA has r={lora['r']} alpha={lora['alpha']}: set {lora_overrides(lora)}"
        raise ValueError(f"init_from={path}: shape mismatch for {mismatched[:5]}{hint}")
    if lora and any("lora_" in k and k in own for k in state):
        scalings = {
            round(float(s), 6)
            for m in net.modules()
            if isinstance(m, LoraLayer)
            for s in m.scaling.values()
        }
        if scalings and scalings != {round(lora["alpha"] / lora["r"], 6)}:
            raise ValueError(
                f"init_from={path}: its LoRA has alpha/r = {lora['alpha']}/{lora['r']}, this "
                f"net scales LoRA by {sorted(scalings)}: set {lora_overrides(lora)}"
            )
    missing, unexpected = net.load_state_dict(state, strict=False)
    loaded = len(state) - len(unexpected)
    if loaded == 0:
        raise ValueError(f"init_from={path}: no weight matches this net")
    log.info("init_from %s: loaded %d tensors", path, loaded)
    base = set(frozen_base_keys(net))
    from_source = [k for k in missing if k in base]
    unfilled = [k for k in missing if k not in base]
    if from_source:
        log.info(
            "init_from %s: %d pretrained tensors come from the encoder's own source: %s",
            path,
            len(from_source),
            compact_keys(from_source),
        )
    if unfilled:
        log.warning(
            "init_from %s: %d tensors not filled (they keep their initial values): %s",
            path,
            len(unfilled),
            compact_keys(unfilled),
        )
    if unexpected:
        log.warning(
            "init_from %s: %d tensors ignored (no place in this net): %s",
            path,
            len(unexpected),
            compact_keys(unexpected),
        )
