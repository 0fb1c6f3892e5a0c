"""Score audio files with an exported scorer: `python -m audioscore.score CKPT_DIR a.m4a b.wav ...`.

Prints `<score>\t<path>` per file (higher is better). A bad file gets an error line on stderr,
the others still score, and the exit status is 1 if any file failed. No Lightning import here.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from audiobase.audio import AudioError
from audioscore.export import ExportError, load_scorer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m audioscore.score", description=__doc__)
    ap.add_argument("ckpt_dir", help="exported scorer directory (config.yaml + model.safetensors)")
    ap.add_argument("files", nargs="+", help="audio files (any format PyAV decodes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--max-dur", type=float, default=None, help="seconds per clip (default: export's)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model = load_scorer(args.ckpt_dir, device=args.device, max_dur=args.max_dur)
    except (ExportError, OSError) as e:
        print(f"error: cannot load scorer: {e}", file=sys.stderr)
        return 2
    wavs, good, failed = [], [], 0
    for path in args.files:
        try:
            wavs.append(model.prepare(path))
            good.append(path)
        except (AudioError, ValueError) as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
    scores = model.score_prepared(wavs, args.batch_size) if wavs else np.zeros(0)
    for path, s in zip(good, scores, strict=True):
        print(f"{s:.6f}\t{path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
