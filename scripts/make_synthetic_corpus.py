"""Write the synthetic singing corpus (audioscore.synth.make_corpus); `make demo` runs this.

python scripts/make_synthetic_corpus.py --out data/synth [--singers 8] [--clips 320] [--seed 0]
    [--timbre-effect X] [--timbre-confound Y]

With X = Y = 0 (the defaults) the corpus is byte-identical to one made before the knobs existed.
"""

from __future__ import annotations

import argparse
import time

from audioscore.synth import make_corpus


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description="Synthetic singing corpus with known scores.")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--singers", type=int, default=8)
    ap.add_argument("--clips", type=int, default=320, help="train + val clips (25%% val)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-dur", type=float, default=3.0, help="train/val clip seconds, min")
    ap.add_argument("--max-dur", type=float, default=20.0, help="train/val clip seconds, max")
    ap.add_argument("--bench-rows", type=int, default=20, help="rows per benchmark subset")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    ap.add_argument(
        "--timbre-effect",
        type=float,
        default=0.0,
        help="X: true score += X tau in every split (tau in [-1, 1]: the singer's timbre)",
    )
    ap.add_argument(
        "--timbre-confound",
        type=float,
        default=0.0,
        help="Y: training labels only += Y tau (timbre predicts train scores, not the truth)",
    )
    args = ap.parse_args(argv)
    t0 = time.time()
    paths = make_corpus(
        args.out,
        singers=args.singers,
        clips=args.clips,
        seed=args.seed,
        min_dur=args.min_dur,
        max_dur=args.max_dur,
        bench_rows=args.bench_rows,
        workers=args.workers,
        timbre_effect=args.timbre_effect,
        timbre_confound=args.timbre_confound,
    )
    print(f"corpus written to {paths['root']} in {time.time() - t0:.1f} s")
    for key in ("train", "val", "bench", "clips_csv", "readme"):
        print(f"  {key:9s} {paths[key]}")
    return paths


if __name__ == "__main__":
    main()
