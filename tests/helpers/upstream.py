"""Stand-ins for CMI-RewardBench's own types, to check our models work under its runner unchanged."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class UpstreamBatchInput:  # core/model_abc.py's BenchmarkBatchInput: a separate class, same fields
    audio: object
    text: str = ""
    lyrics: str = ""
    ref_audio: object = None

    def to_dict(self):
        return dataclasses.asdict(self)
