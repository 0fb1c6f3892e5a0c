"""Scorers exported by `audioscore.train` (plan A or B) as reward models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rewards.base import BatchInput, RewardModel


class AudioscoreRewardModel(RewardModel):
    """An exported scorer dir (config.yaml + model.safetensors) via `audioscore.export.ScorerRewardModel`.

    Scores: column 0 (alignment) NaN, column 1 the scorer's musicality/quality score.
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu", **kwargs: Any) -> None:
        from audioscore.export import (
            ScorerRewardModel,
        )  # lazy: keeps training code out of other imports

        path = Path(checkpoint)
        self.checkpoint = str(path)
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: exported scorer not found (run audioscore.train + export first)"
            )
        self.inner = ScorerRewardModel(
            str(path), device=device, **kwargs
        )  # kwargs: preprocess overrides

    @property
    def sr(self) -> int:
        return int(self.inner.sr)

    def score_batch(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> np.ndarray:
        return np.asarray(self.inner.score_batch(inputs, batch_size, max_dur, **kwargs))

    def __repr__(self) -> str:
        return f"AudioscoreRewardModel({self.checkpoint!r})"
