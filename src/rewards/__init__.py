"""Reward models behind one interface: `sr` + `score_batch(...) -> np.ndarray [N, 2]`, their
declarations read once into `Capabilities`; `PairwiseJudge` for judges that compare two clips."""

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
