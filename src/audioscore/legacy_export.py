"""Export an original-format checkpoint as a scorer (`python -m audioscore.convert legacy`):
`audioscore.legacy` reads and checks it, this builds the net on MuQ and writes the export."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.utils import instantiate

from audiobase.muq import DEFAULT_PRETRAINED
from audiobase.weights import MissingWeightsError, find_user_error, looks_like_hub_id
from audioscore.export.scorer import export_scorer
from audioscore.legacy import (
    LEGACY_CALIBRATION,
    LEGACY_PREPROCESS,
    LegacyFormatError,
    read_legacy,
)

log = logging.getLogger(__name__)

SCALES = ("raw", "legacy")


class ConvertError(ValueError):
    """A conversion that cannot be done (e.g. the MuQ base weights cannot be loaded)."""


def convert_legacy(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    muq: str | None = DEFAULT_PRETRAINED,
    muq_config: dict | str | None = None,
    scale: str = "raw",
    full_encoder: bool = False,
) -> Path:
    """Write the export of the original-format checkpoint `src` to `out`; returns `out`.

    Args:
        src: the original checkpoint directory.
        out: the export directory to write.
        muq: MuQ's hub id or local directory (the base weights the LoRA was trained on).
        muq_config: with `muq=None`, a random MuQ of this config (tests, profiling).
        scale: "raw" (score = minus the original's musicality logit) or "legacy" (also store
            the transform to the original's printed numbers, 2 + 2 tanh(raw)).
        full_encoder: store MuQ's base weights in the export (self-contained, ~600 MB for
            MuQ-large's first 6 layers) instead of reloading them from `muq`.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    ckpt = read_legacy(src)
    for note in ckpt.dropped:
        log.info("%s: dropped %s", src, note)
    net_config = ckpt.net_config(muq, muq_config)
    try:
        net = instantiate(net_config, _convert_="all")
    except Exception as e:  # hub / file errors surface from inside MuQ.from_pretrained
        cause = e.__cause__ or e
        missing = find_user_error(e)
        if isinstance(missing, MissingWeightsError):  # the CLI's key for them is --muq
            how = (
                f"download with `huggingface-cli download {muq}`, or pass --muq DIR"
                if looks_like_hub_id(str(muq))
                else "pass --muq with a folder holding config.json + model.safetensors, or a hub id"
            )
            raise ConvertError(
                f"cannot build the original's net on MuQ {muq!r}: its weights are not here "
                f"(offline and not in the cache, or no such folder): {how}"
            ) from e
        raise ConvertError(
            f"cannot build the original's net on MuQ {muq or muq_config!r} (a hub id needs the "
            f"network or the Hugging Face cache, a directory config.json + model.safetensors): "
            f"{type(cause).__name__}: {cause}"
        ) from e
    own = net.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in ckpt.state.items()
        if k in own and own[k].shape != v.shape
    ]
    if wrong:
        raise LegacyFormatError(f"{src}: tensors do not fit MuQ {muq or muq_config!r}: {wrong[:3]}")
    missing, unexpected = net.load_state_dict(ckpt.state, strict=False)
    filled_by_muq = [k for k in missing if k.startswith("encoder.muq.") and "lora_" not in k]
    unfilled = sorted(set(missing) - set(filled_by_muq))
    if unexpected or unfilled:
        raise LegacyFormatError(
            f"{src}: weights do not fit the original's architecture on MuQ {muq or muq_config!r} "
            f"(not filled: {unfilled[:5]}, no place for: {sorted(unexpected)[:5]})"
        )
    meta = {
        "converted_from": str(Path(src).resolve()),
        "original_type": ckpt.kind,
        "sign": "raw = -(original musicality logit): higher is better",
        "dropped": ckpt.dropped,
    }
    return export_scorer(
        net,
        out,
        net_config=net_config,
        save_full_encoder=full_encoder or muq is None,
        preprocess=LEGACY_PREPROCESS,
        meta=meta,
        calibration=LEGACY_CALIBRATION if scale == "legacy" else None,
    )
