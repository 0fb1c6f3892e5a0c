"""CMI-RM (CMI-RewardBench's reward model) on the `muq` package's MuQ-MuLan towers."""

from rewards.cmi_rm.config import CheckpointError, CMIRMConfig
from rewards.cmi_rm.scorer import CMIRewardModel

__all__ = ["CMIRMConfig", "CMIRewardModel", "CheckpointError"]
