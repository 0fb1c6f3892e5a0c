"""Validation metrics for scorers."""

from audioscore.metrics.ranking import group_metrics, kendall_tau, pairwise_accuracy, spearman
from audioscore.metrics.validation import GroupRanking

__all__ = ["GroupRanking", "group_metrics", "kendall_tau", "pairwise_accuracy", "spearman"]
