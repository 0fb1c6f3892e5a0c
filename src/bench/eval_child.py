"""The evaluation child of a scoring run: `python -m bench.eval_child NICE WAYS`.

`bench.eval_process.EvalProcess` starts it when a run begins. It imports the metrics'
libraries (scipy.stats) and the plots' (matplotlib), about 1.4 CPU-s on the 2-core project
machine, while the runner imports torch and builds the model, so the runner's own process
never imports them. Then it reads one line naming a JSON job file (`rows`, `out_dir`,
`kwargs` for `bench.evaluate.evaluate_rows`), writes every metrics file while `WAYS` forked
copies of it draw the plots (`bench.plots.ForkedDrawing`), prints metrics.json's content as
one line of JSON and exits without the interpreter's teardown.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from bench.evaluate import evaluate_rows
from bench.plots import ForkedDrawing


def serve_one(ways: int = 1) -> None:
    """Evaluate the job named on stdin's first line; print the metrics as one JSON line."""
    name = sys.stdin.readline().strip()
    if not name:  # the runner closed the pipe without work: nothing to evaluate
        return
    job = json.loads(Path(name).read_text())
    drawing = ForkedDrawing(ways)
    metrics = evaluate_rows(job["rows"], job["out_dir"], plotter=drawing, **job["kwargs"])
    print(json.dumps(metrics, ensure_ascii=False, default=str), flush=True)


if __name__ == "__main__":
    nice, ways = (int(a) for a in sys.argv[1:3])
    if nice > 0:
        os.nice(nice)  # below the runner: its decoding and scoring come first
    serve_one(ways)
    # the answer is flushed and every file written and closed: skip the interpreter's teardown
    # of matplotlib and scipy (0.13-0.17 s that the runner would wait for)
    os._exit(0)
