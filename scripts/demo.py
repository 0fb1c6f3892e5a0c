"""`make demo`: the whole job end to end on the synthetic corpus, on CPU, in a few minutes.

corpus -> plan A (MuQ-LoRA) -> plan B (MuQ + CAM++), both for the same number of optimizer
steps -> export (with a calibration onto the label scale) -> score the validation clips to a CSV
-> compare plans (val SRCC, pair accuracy, calibrated MAE at equal steps) -> benchmark (trained
scorer + tiny CMI-RM) -> summary table.
Every step is the same command a user types; outputs land in outputs/demo/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_step(title: str, cmd: list[str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"--- {title}: {time.time() - t0:.1f} s", flush=True)


def read_json(path: Path) -> list:
    return json.loads((ROOT / path).read_text())


def report_scores(scores_csv: Path, clips_csv: Path) -> None:
    """MAE of the calibrated scores against the corpus's ground truth, and whether calibrated
    and raw scores rank the clips alike."""
    with open(clips_csv, newline="") as f:
        truth = {Path(r["audio_file"]).name: float(r["score"]) for r in csv.DictReader(f)}
    with open(scores_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r["error"]]
    score = np.array([float(r["score"]) for r in rows])
    raw = np.array([float(r["raw_score"]) for r in rows])
    labels = np.array([truth[Path(r["path"]).name] for r in rows])
    same = bool((np.argsort(score, kind="stable") == np.argsort(raw, kind="stable")).all())
    print(
        f"plan A on {len(rows)} validation clips: calibrated {score.min():.1f}-{score.max():.1f} "
        f"(labels {labels.min():.1f}-{labels.max():.1f}), MAE {np.abs(score - labels).mean():.2f} "
        f"(calibration fitted on these clips: in-sample), same rank order as raw: {same}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/synth")
    ap.add_argument("--out", default="outputs/demo")
    ap.add_argument(
        "--steps", type=int, default=50, help="optimizer steps per plan (the same for both)"
    )
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    corpus, out = Path(args.corpus), Path(args.out)

    if not (ROOT / corpus / "train.json").exists():
        run_step("synthetic corpus", [PY, "scripts/make_synthetic_corpus.py", "--out", str(corpus)])
    print(f"corpus: {(ROOT / corpus).resolve()}")

    runs = {}
    for name, exp in [("plan_a", "muq_lora"), ("plan_b", "hybrid_campp")]:
        run_dir = out / name
        if (ROOT / run_dir).exists():  # a previous demo's logs would join this run's table
            print(f"removing the previous demo run {run_dir}", flush=True)
            shutil.rmtree(ROOT / run_dir)
        run_step(
            f"train {name} ({exp}, tiny random encoders, CPU)",
            [
                PY,
                "-m",
                "audioscore.train",
                f"experiment={exp}",
                "debug=tiny",
                f"data.root={corpus}",
                f"hydra.run.dir={run_dir}",
                f"trainer.max_steps={args.steps}",  # equal training, not equal wall time
                "trainer.max_epochs=-1",
            ],
        )
        runs[name] = run_dir

    val_clips = [str(corpus / c["audio_file"]) for g in read_json(corpus / "val.json") for c in g]
    scores_csv = out / "plan_a_val_scores.csv"
    run_step(
        "score the validation clips with plan A (calibrated to the label scale)",
        [
            PY,
            "-m",
            "audioscore.score",
            str(runs["plan_a"] / "export"),
            *val_clips,
            "--out",
            str(scores_csv),
        ],
    )
    report_scores(ROOT / scores_csv, ROOT / corpus / "clips.csv")
    run_step(
        "compare plans",
        [PY, "scripts/compare_plans.py", *map(str, runs.values()), "--out", str(out / "compare")],
    )
    bench_root = out / "bench"
    os.environ["AUDIOSCORE_CHECKPOINT"] = str(runs["plan_a"] / "export")  # model=audioscore's
    run_step(
        "benchmark plan A scorer + tiny CMI-RM",
        [
            PY,
            "-m",
            "bench.run",
            "-m",
            "model=audioscore,cmi_rm_tiny",
            f"dataset.jsonl={corpus / 'bench.jsonl'}",
            f"dataset.root={corpus}",
            f"output_root={bench_root}",
        ],
    )
    print("\n=== plan comparison")
    print((ROOT / out / "compare" / "plans.md").read_text())
    print(f"benchmark summaries: {sorted(map(str, (ROOT / bench_root).glob('*/*/summary.md')))}")
    print(f"demo outputs: {(ROOT / out).resolve()}")


if __name__ == "__main__":
    main()
