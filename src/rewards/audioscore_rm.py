"""Scorers exported by `audioscore.train` (plan A or B) as reward models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audioscore.export import ScorerRewardModel


class AudioscoreRewardModel(ScorerRewardModel):
    """An exported scorer dir (config.yaml + model.safetensors), built from `conf/model/audioscore.yaml`.

    Scores: column 0 (alignment) NaN, column 1 the scorer's musicality/quality score.
    kwargs: preprocessing overrides, as `ScorerRewardModel`.
    """

    def __init__(self, checkpoint: str | Path, device: str = "cpu", **kwargs: Any) -> None:
        path = Path(checkpoint)
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: exported scorer not found (run audioscore.train + export first)"
            )
        super().__init__(str(path), device=device, **kwargs)

    def __repr__(self) -> str:
        return f"AudioscoreRewardModel({self.checkpoint!r})"
