"""Reward models behind one interface: `sr` + `score_batch(...) -> np.ndarray [N, 2]`, their
declarations read once into `Capabilities`; `PairwiseJudge` for judges that compare two clips.

The names of `rewards.base` are re-exported here on first use: `python -m rewards.serve` imports
this package before parsing its arguments, and `rewards.base` costs torch (~2 s of import) that
`--help` does not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rewards.base import (
        ALIGNMENT,
        MUSICALITY,
        BatchInput,
        Capabilities,
        PairwiseJudge,
        RewardModel,
        as_input,
    )

    # CMI-RewardBench spells them BenchmarkBatchInput / BenchmarkModelABC.
    BenchmarkBatchInput = BatchInput
    BenchmarkModelABC = RewardModel

# CMI-RewardBench's spellings -> ours
ALIASES = {"BenchmarkBatchInput": "BatchInput", "BenchmarkModelABC": "RewardModel"}

__all__ = [
    "ALIGNMENT",
    "MUSICALITY",
    "BatchInput",
    "BenchmarkBatchInput",
    "BenchmarkModelABC",
    "Capabilities",
    "PairwiseJudge",
    "RewardModel",
    "as_input",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("rewards.base"), ALIASES.get(name, name))
