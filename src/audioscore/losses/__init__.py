"""Training objectives: ranking (ListMLE, pairwise logistic) and score regression."""

from audioscore.losses.ranking import (
    ListMLELoss,
    PairwiseLogisticLoss,
    listmle_loss,
    pairwise_logistic_loss,
)
from audioscore.losses.regression import ScoreRegressionLoss

__all__ = [
    "ListMLELoss",
    "PairwiseLogisticLoss",
    "ScoreRegressionLoss",
    "listmle_loss",
    "pairwise_logistic_loss",
]
