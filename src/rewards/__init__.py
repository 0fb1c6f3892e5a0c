"""Reward models behind one interface: `sr` + `score_batch(...) -> np.ndarray [N, 2]`."""

from rewards.base import ALIGNMENT, MUSICALITY, BatchInput, RewardModel, as_input, is_reward_model

# CMI-RewardBench spells them BenchmarkBatchInput / BenchmarkModelABC.
BenchmarkBatchInput = BatchInput
BenchmarkModelABC = RewardModel

__all__ = [
    "ALIGNMENT",
    "MUSICALITY",
    "BatchInput",
    "BenchmarkBatchInput",
    "BenchmarkModelABC",
    "RewardModel",
    "as_input",
    "is_reward_model",
]
