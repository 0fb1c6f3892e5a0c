"""Benchmark runner for reward models on CMI-RewardBench-format data (see docs/bench.md)."""
