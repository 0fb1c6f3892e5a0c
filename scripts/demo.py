"""`make demo`: the whole job end to end on the synthetic corpus, on CPU, in a few minutes.

corpus -> plan A (MuQ-LoRA) -> plan B (MuQ + CAM++) -> export -> score files -> compare plans
-> benchmark (trained scorer + tiny CMI-RM) -> summary table.
Every step is the same command a user types; outputs land in outputs/demo/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run_step(title: str, cmd: list[str]) -> None:
    print(f"\n=== {title}\n$ {' '.join(cmd)}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"--- {title}: {time.time() - t0:.1f} s", flush=True)


def read_json(path: Path) -> list:
    return json.loads((ROOT / path).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--corpus", default="data/synth")
    ap.add_argument("--out", default="outputs/demo")
    ap.add_argument("--minutes", type=float, default=2.0, help="training time per plan")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    corpus, out = Path(args.corpus), Path(args.out)
    max_time = f"00:00:{int(args.minutes * 60) // 60:02d}:{int(args.minutes * 60) % 60:02d}"

    if not (ROOT / corpus / "train.json").exists():
        run_step("synthetic corpus", [PY, "scripts/make_synthetic_corpus.py", "--out", str(corpus)])
    print(f"corpus: {(ROOT / corpus).resolve()}")

    runs = {}
    for name, exp in [("plan_a", "muq_lora"), ("plan_b", "hybrid_campp")]:
        run_dir = out / name
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
                f"++trainer.max_time={max_time}",
            ],
        )
        runs[name] = run_dir

    val_clips = [str(corpus / c["audio_file"]) for g in read_json(corpus / "val.json") for c in g][
        :6
    ]
    run_step(
        "score validation clips with plan A",
        [PY, "-m", "audioscore.score", str(runs["plan_a"] / "export"), *val_clips],
    )
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
