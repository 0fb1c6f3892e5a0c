"""Validation metrics for scorers."""

from audioscore.metrics.ranking import group_metrics, kendall_tau, pairwise_accuracy, spearman

__all__ = ["group_metrics", "kendall_tau", "pairwise_accuracy", "spearman"]
