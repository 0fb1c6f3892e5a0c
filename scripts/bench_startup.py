"""Start-up times of the command-line tools, and scoring one file against its floor.

    python scripts/bench_startup.py [--runs 5] [--vs-src /other/checkout/src]

1. `python -m MODULE --help` of every tool, each a fresh process, wall time from start to exit.
2. `python -m audioscore.score EXPORT clip.wav` on a tiny random export (built in a temporary
   folder, as the tests build it) and one 3 s clip, against its floor: a fresh
   `python -c "import torch"` plus the model's load (`load_scorer`, the imports the net needs
   included) and forward on the prepared clip, timed inside one process that has imported torch.

Runs are interleaved (every command once, then again, ...) so that a drift in the machine's
speed touches all of them alike; medians are printed, min and max beside them. `--vs-src`: the
`src` folder of another checkout (say the main branch) whose tools run interleaved with this
tree's, for a before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CLIS = (
    "audioscore.train",
    "audioscore.score",
    "audioscore.convert",
    "audioscore.export",
    "audioscore.studies.campp_pretrain",
    "rewards.serve",
)

FLOOR = """
import json, sys, time
import torch
torch.set_num_threads(1)
t0 = time.perf_counter()
from audioscore.export import load_scorer
scorer = load_scorer(sys.argv[1])
t1 = time.perf_counter()
wav = scorer.prepare(sys.argv[2])
t2 = time.perf_counter()
scorer.raw_scores([wav])
t3 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "forward": t3 - t2}))
"""

MAKE = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[2])
from helpers.routes import make_tiny_export
from audiobase.audio import save_audio
root = Path(sys.argv[1])
make_tiny_export(root)
t = np.arange(3 * 24_000) / 24_000
save_audio(root / "clip.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24_000)
"""


def wall(cmd: list[str], src: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def row(name: str, times: list[float]) -> str:
    return f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each command")
    ap.add_argument("--vs-src", type=Path, default=None, help="another checkout's src folder")
    args = ap.parse_args()
    py = sys.executable
    trees = {"": SRC} if args.vs_src is None else {" (this tree)": SRC, " (vs)": args.vs_src}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        subprocess.run(
            [py, "-c", MAKE, str(folder), str(ROOT / "tests")],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            check=True,
        )
        export, clip = str(folder / "export"), str(folder / "clip.wav")
        commands: dict[str, tuple[list[str], Path]] = {}
        for mod in CLIS:
            for tag, src in trees.items():
                commands[f"`{mod} --help`{tag}"] = ([py, "-m", mod, "--help"], src)
        for tag, src in trees.items():
            score = [py, "-m", "audioscore.score", export, clip]
            commands[f"score one file{tag}"] = (score, src)
        commands['`python -c "import torch"`'] = ([py, "-c", "import torch"], SRC)
        times: dict[str, list[float]] = {name: [] for name in commands}
        floor: list[dict[str, float]] = []
        for i in range(args.runs + 1):  # the first round warms the caches and is not counted
            for name, (cmd, src) in commands.items():
                t = wall(cmd, src)
                if i:
                    times[name].append(t)
            out = subprocess.run(
                [py, "-c", FLOOR, export, clip],
                env={**os.environ, "PYTHONPATH": str(SRC)},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            if i:
                floor.append(json.loads(out))
    print(f"{args.runs} runs each, seconds of wall time (median, min, max)\n")
    print("| command | median | min | max |\n|---|---|---|---|")
    for name, ts in times.items():
        print(row(name, ts))
    load = [f["load"] for f in floor]
    forward = [f["forward"] for f in floor]
    print(row("load (in process)", load))
    print(row("forward (in process)", forward))
    base = statistics.median(times['`python -c "import torch"`'])
    floor_s = base + statistics.median(load) + statistics.median(forward)
    for tag in trees:
        score_s = statistics.median(times[f"score one file{tag}"])
        print(
            f"\nscore one file{tag}: {score_s:.2f} s, floor (import torch + load + forward) "
            f"{floor_s:.2f} s, ratio {score_s / floor_s:.2f}"
        )


if __name__ == "__main__":
    main()
