"""Spearman correlation of `model=pitch` (CREPE intonation) with the synthetic corpus's true
pitch error.

    python scripts/pitch_srcc.py --corpus data/synth [--split val] [--capacity tiny]
    python scripts/pitch_srcc.py --make outputs/pitch_corpus --clips 40 --seed 11 [--split all]

The corpus (`scripts/make_synthetic_corpus.py`, or made here with `--make`) knows each clip's
pitch error (`pitch_cents` in clips.csv: per-note detune RMS, plus an unsteady drift of 0.4 of
it). The model scores each clip of `--split` (`all` = train and val); the script prints, as
JSON, the Spearman correlation of the score with `pitch_cents` over the clips that got a score
(`srcc`; negative = the score falls as the error grows, as it should), the clip counts and the
median measured error in cents (`rewards.pitch.synthetic_srcc`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from audioscore.synth import make_corpus
from rewards.pitch import PitchRewardModel, synthetic_srcc


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", type=Path, help="an existing synthetic corpus")
    src.add_argument("--make", type=Path, help="write a fresh corpus here first")
    ap.add_argument("--clips", type=int, default=40, help="with --make: train + val clips")
    ap.add_argument("--seed", type=int, default=11, help="with --make")
    ap.add_argument("--min-dur", type=float, default=3.0, help="with --make")
    ap.add_argument("--max-dur", type=float, default=8.0, help="with --make")
    ap.add_argument("--split", default="val", choices=["train", "val", "all"])
    ap.add_argument("--capacity", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = args.corpus
    if args.make is not None:
        root = make_corpus(
            args.make,
            clips=args.clips,
            seed=args.seed,
            min_dur=args.min_dur,
            max_dur=args.max_dur,
            bench_rows=1,
            formats=("wav",),
        )["root"]
    model = PitchRewardModel(capacity=args.capacity)
    result = synthetic_srcc(model, Path(root), args.split)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
