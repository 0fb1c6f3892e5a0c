"""Strict loading of a CMI-RM `model.safetensors` into `CMIRewardNet` (upstream hides partial loads)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from audiobase.weights_listing import listing, state_problems
from rewards.cmi_rm.config import CheckpointError
from rewards.cmi_rm.model import ENCODER_PREFIXES, CMIRewardNet

log = logging.getLogger(__name__)


LISTED = 12  # keys named per kind of problem in an error


def load_weights(net: CMIRewardNet, path: str | Path) -> dict[str, int]:
    """Load head weights (and tower weights if the file has them); raise naming every bad key.

    Every head key must be present. A tower (`audio_module.` / `text_module.`) absent from the
    file keeps its `from_pretrained` weights; a tower present in the file must be complete
    (missing non-persistent-like buffers are only logged). Unexpected keys and shape mismatches fail.
    """
    try:
        sd = load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as e:
        raise CheckpointError(path, f"cannot read safetensors: {e}") from e
    own = net.state_dict()
    params = {k for k, _ in net.named_parameters()}
    in_file = {p: any(k.startswith(p) for k in sd) for p in ENCODER_PREFIXES}
    expected = {
        k
        for k in own
        if not k.startswith(ENCODER_PREFIXES)
        or any(k.startswith(p) and in_file[p] for p in ENCODER_PREFIXES)
    }
    missing = sorted(expected - sd.keys())
    missing_buffers = [k for k in missing if k.startswith(ENCODER_PREFIXES) and k not in params]
    missing = [k for k in missing if k not in missing_buffers]
    unexpected = sorted(sd.keys() - own.keys())
    mismatched = sorted(
        f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
        for k in sd.keys() & own.keys()
        if sd[k].shape != own[k].shape
    )
    problems = state_problems(missing, unexpected, mismatched, limit=LISTED)
    if problems:
        raise CheckpointError(path, "; ".join(problems))
    if missing_buffers:
        log.warning(
            "%s: tower buffers not in file, kept from pretrained: %s",
            path,
            listing(missing_buffers, LISTED),
        )
    with torch.no_grad():
        net.load_state_dict(sd, strict=False)
    return {"loaded": len(sd), "towers_from_file": sum(in_file.values())}
