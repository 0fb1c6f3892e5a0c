"""Scorers exported by `audioscore.train` (plan A or B) as reward models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiobase.preprocess import Preprocess
from audiobase.weights import MissingWeightsError
from audioscore.export import Scorer, export_preprocess, load_scorer, read_export_config
from rewards.base import MUSICALITY, BatchInput, RewardModel, as_input


class MissingExportError(MissingWeightsError, FileNotFoundError):
    """An exported scorer directory that is not there (the CLIs print it as one line)."""


class AudioscoreRewardModel(RewardModel):
    """An exported scorer dir (config.yaml + model.safetensors); `model=audioscore` in bench.

    Column 1 (musicality) is the scorer's vocal-quality score, on the label scale when the
    export stores a calibration (`calibrated=False`: the raw score; ranks are the same either
    way); column 0 (alignment) is NaN.
    The export's preprocessing contract decides what audio the net sees; `max_dur`, `crop` and
    `target_lufs` given here override it for this model. The runner's `max_dur` argument to
    `score_batch` does not: the same file gets the same score from every route.
    """

    thread_safe = True  # scoring changes no state: the runner may score batches at once

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        bf16: bool | None = None,
        max_dur: float | None = None,
        crop: str | None = None,
        target_lufs: float | None = None,
        calibrated: bool = True,
    ) -> None:
        path = Path(checkpoint)
        if not path.exists():
            raise MissingExportError(
                str(path),
                "model.checkpoint",
                env="AUDIOSCORE_CHECKPOINT",
                reason="exported scorer not found: audioscore.train exports one, make demo both plans",
            )
        self.checkpoint = str(path)
        self.scorer: Scorer = load_scorer(
            path,
            device,
            calibrated,
            bf16,
            max_dur=max_dur,
            crop=crop,
            target_lufs=target_lufs,
        )
        self.preprocess: Preprocess = self.scorer.preprocess  # the export's contract

    @classmethod
    def expected_preprocess(
        cls, config: dict[str, Any], max_dur: float | None
    ) -> Preprocess | None:
        """The export's stored contract (its config.yaml) with this config's overrides; the
        runner's `max_dur` does not apply. None when the export cannot be read (building the
        model reports why)."""
        ckpt = Path(str(config.get("checkpoint") or ""))
        if str(ckpt) in ("", ".") or not (ckpt / "config.yaml").is_file():
            return None
        try:
            pre = export_preprocess(read_export_config(ckpt))
        except Exception:  # noqa: BLE001 - building the model reports it properly
            return None
        return pre.replace(**{k: config.get(k) for k in ("max_dur", "crop", "target_lufs")})

    @property
    def sr(self) -> int:
        return self.scorer.sr

    @property
    def net(self) -> Any:
        return self.scorer.net

    @property
    def config(self) -> dict[str, Any]:
        return self.scorer.config

    def score_batch(
        self,
        inputs: Sequence[BatchInput | Any],
        batch_size: int = 8,
        max_dur: float | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Paths or waveforms at `sr` -> [N, 2]; raises AudioError naming a bad file."""
        out = np.full((len(inputs), 2), np.nan, dtype=np.float64)
        out[:, MUSICALITY] = self.scorer.score([as_input(x).audio for x in inputs], batch_size)
        return out

    def __repr__(self) -> str:
        return f"AudioscoreRewardModel({self.checkpoint!r})"
