"""The base layer: audio I/O, the preprocessing contract, the feature cache and atomic writes,
and the audio-model parts that the trainer and the reward models share (the MuQ tap and its exact
padded batches, SongEval's head, weight-mismatch messages).

Nothing here imports `audioscore`, `rewards` or `bench`; they all build on it.
"""
