"""Self-contained scorer export (config.yaml + model.safetensors) and the reward-model wrapper:
`audioscore.export.scorer` (the scoring path, no Lightning) and `audioscore.export.run` (export a
finished training run, `python -m audioscore.export`).

The names of `scorer` are re-exported here on first use: `python -m audioscore.export` imports
this package before parsing its arguments, and `scorer` costs torch (~2 s of import) that
`--help` does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audioscore.export.scorer import (
        CONFIG_NAME,
        DEFAULT_PREPROCESS,
        FORMAT,
        VERSION,
        WEIGHTS_NAME,
        ExportError,
        Scorer,
        equal_length_batches,
        export_calibration,
        export_preprocess,
        export_scorer,
        load_net,
        load_scorer,
        read_export_config,
        score_wavs,
        set_config_at,
    )

__all__ = [
    "CONFIG_NAME",
    "DEFAULT_PREPROCESS",
    "FORMAT",
    "VERSION",
    "WEIGHTS_NAME",
    "ExportError",
    "Scorer",
    "equal_length_batches",
    "export_calibration",
    "export_preprocess",
    "export_scorer",
    "load_net",
    "load_scorer",
    "read_export_config",
    "score_wavs",
    "set_config_at",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("audioscore.export.scorer"), name)
