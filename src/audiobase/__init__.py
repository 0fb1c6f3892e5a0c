"""The base layer: audio I/O, the preprocessing contract, the feature cache and atomic writes.

Nothing here imports `audioscore`, `rewards` or `bench`; they all build on it.
"""
