"""Acceptance benchmark: tiny plan A on the synthetic corpus, SRCC within a time budget on CPU.

    python scripts/train_benchmark.py [--corpus data/synth] [--minutes 10] [--target 0.8] [k=v ...]

Runs the user's command (`python -m audioscore.train experiment=muq_lora debug=tiny`) capped by
`trainer.max_time` (the LR schedule still follows trainer.max_epochs), reads the run's
metrics.csv and reports, per validation, the wall time since fit started and val/srcc, plus when
`--target` was first reached. Writes `<run_dir>/benchmark.json`. Exit status 1 if the target was not reached.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from audiobase.files import write_json

ROOT = Path(__file__).resolve().parents[1]


def read_validations(run_dir: Path) -> list[dict[str, float]]:
    """(time/train_s, epoch, val/srcc, val/ktau, val/pair_acc) per validation, from metrics.csv."""
    files = sorted(run_dir.glob("csv/**/metrics.csv"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no csv/**/metrics.csv (did training start?)")
    rows = []
    with open(files[-1]) as f:
        for r in csv.DictReader(f):
            if r.get("val/srcc"):
                keys = ("time/train_s", "epoch", "val/srcc", "val/ktau", "val/pair_acc")
                rows.append({k: float(r[k]) for k in keys if r.get(k)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--corpus", default="data/synth")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--out", default=None, help="run dir (default outputs/benchmark/<time>)")
    ap.add_argument("--experiment", default="muq_lora")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = ap.parse_args()

    corpus = Path(args.corpus)
    if not (corpus / "train.json").exists():
        print(f"{corpus}: no synthetic corpus; run scripts/make_synthetic_corpus.py --out {corpus}")
        return 2
    run_dir = Path(args.out or ROOT / "outputs" / "benchmark" / time.strftime("%Y%m%d-%H%M%S"))
    secs = int(args.minutes * 60)
    max_time = f"00:{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
    cmd = [
        sys.executable, "-m", "audioscore.train", f"experiment={args.experiment}", "debug=tiny",
        f"data.root={corpus}", f"hydra.run.dir={run_dir}", f"+trainer.max_time={max_time}",
        "trainer.enable_progress_bar=false", *args.overrides,
    ]  # fmt: skip
    print(" ".join(cmd), flush=True)
    t0 = time.monotonic()
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    wall = time.monotonic() - t0
    vals = read_validations(run_dir)
    hit = next((v for v in vals if v["val/srcc"] >= args.target), None)
    best = max(vals, key=lambda v: v["val/srcc"]) if vals else None
    for v in vals:
        print(f"  t={v.get('time/train_s', float('nan')):7.1f}s  epoch {int(v['epoch']):3d}  "
              f"srcc {v['val/srcc']:.3f}  ktau {v.get('val/ktau', float('nan')):.3f}  "
              f"pair_acc {v.get('val/pair_acc', float('nan')):.3f}")  # fmt: skip
    report = {
        "command": cmd,
        "returncode": rc,
        "wall_s": wall,
        "cpu_count": os.cpu_count(),
        "target": args.target,
        "reached_at": hit,
        "best": best,
        "validations": vals,
    }
    write_json(run_dir / "benchmark.json", report)
    best_s = f"{best['val/srcc']:.3f}" if best else "none"
    reached = f"at {hit['time/train_s']:.0f} s" if hit else "no"
    print(f"best val/srcc {best_s}; target {args.target} reached: {reached} ({run_dir})")
    return 0 if rc == 0 and hit else 1


if __name__ == "__main__":
    sys.exit(main())
