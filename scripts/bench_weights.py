"""Audio-seconds per second on CPU of the reward models with published weights (DNSMOS, CREPE).

    python scripts/bench_weights.py [--models dnsmos pitch pitch_full] [--seconds 10]
        [--clips 8] [--repeats 5] [--threads 1]

Each model scores the same `--clips` synthetic sung clips of `--seconds` s (one `score_batch`
call, the model's own batching: DNSMOS stacks 9.01 s windows, CREPE stacks frames), after one
warm-up call; the median of `--repeats` timed calls is reported as audio seconds per wall-clock
second and per CPU-second of this process (what it costs on a machine other jobs share), with torch and onnxruntime limited to `--threads` intra-op threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from rewards.dnsmos import DNSMOSRewardModel
from rewards.pitch import PitchRewardModel

SR = 16000
MODELS = {
    "dnsmos": lambda threads: DNSMOSRewardModel(threads=threads),
    "pitch": lambda threads: PitchRewardModel(capacity="tiny"),
    "pitch_full": lambda threads: PitchRewardModel(capacity="full"),
}


def sung_clip(seconds: float, seed: int) -> np.ndarray:
    """A vibrato-laden harmonic tone stepping through notes, with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    midi = 57 + rng.choice([0, 2, 4, 7, 9], size=int(seconds * 3) + 1)[(t * 3).astype(int)]
    f0 = 440 * 2 ** ((midi - 69 + 0.3 * np.sin(2 * np.pi * 5.5 * t)) / 12)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 10))
    return (0.15 * x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["dnsmos", "pitch"], choices=sorted(MODELS))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clips = [sung_clip(args.seconds, i) for i in range(args.clips)]
    audio_s = args.clips * args.seconds
    out = {}
    for name in args.models:
        model = MODELS[name](args.threads)
        model.score_batch(clips[:1], 1)  # warm-up
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model.score_batch(clips, len(clips))
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        med, med_cpu = statistics.median(times), statistics.median(cpu)
        out[name] = audio_s / med
        print(
            f"{name:11s} {audio_s / med:8.1f} audio-s/s wall, {audio_s / med_cpu:8.1f} audio-s per "
            f"CPU-s  (medians of {args.repeats}: {med:.2f} s wall, {med_cpu:.2f} s CPU for "
            f"{args.clips} x {args.seconds:g} s, {args.threads} thread(s))",
            flush=True,
        )
    return out


if __name__ == "__main__":
    main()
