"""Where a benchmark run's time goes, and the least time any runner could take for it.

    python scripts/bench_floor.py --data outputs/bench/vs_upstream/data/synth_800 --repeats 3 \\
        [--theirs-json outputs/bench/vs_upstream/rows_800.json] [bench.run overrides ...]

1. Phases: `python -m bench.run model=cmi_rm_tiny dataset=synth` on `--data` (a folder with
   `bench.jsonl`, as `scripts/make_synthetic_corpus.py` writes it), a fresh output folder each
   run, with a clock read when each phase starts and ends (imports of torch and of the model's
   libraries, building the model, scoring, evaluation; decoding runs in workers from the moment
   `plan_decoding` returns). Medians of `--repeats` runs.
2. The floor, from work any runner of this model must do, each part measured alone in a fresh
   process: start-up (`python -c pass` plus composing the config), `import torch`, importing the
   model's libraries and building it (garbage collection paused, as the runner does), decoding every clip (CPU seconds), and the model's
   arithmetic on every clip (CPU seconds on one thread, batches of `batch_size` as the runner
   forms them). A runner can decode on the other cores while the model's libraries load, then
   split the remaining decoding and the arithmetic over every core (start-up, torch and the
   model each at the smaller of their time alone and in our run, so that it is a lower bound):

       floor = start-up + torch + model + (compute + max(0, decode - model * (cores - 1))) / cores

   Evaluation and plots are left out of it (they only add). `--theirs-json`: a
   `scripts/bench_vs_upstream.py` result; prints the largest end-to-end ratio a runner could
   reach against upstream's median wall time there.
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
SRC = str(ROOT / "src")

# a bench.run with clocks: an import hook marks when the watched modules load, and the
# pipeline's stage functions are wrapped when bench.pipeline has loaded
TIMELINE = r"""
import atexit, importlib.abc, importlib.util, json, runpy, sys, time
T0 = time.perf_counter()
marks = []
def mark(s): marks.append((round(time.perf_counter() - T0, 4), s))
WATCH = {"torch", "transformers", "muq", "bench.pipeline", "bench.eval_process"}
STAGES = ("plan_decoding", "prepare_model", "score_rows", "score_and_evaluate")
def wrapped(f, name):
    def g(*a, **k):
        mark("> " + name)
        try:
            return f(*a, **k)
        finally:
            mark("< " + name)
    return g
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in WATCH:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module
        def exec_module(m):
            mark("import> " + name); run(m); mark("import< " + name)
            if name == "bench.pipeline":
                for s in STAGES:
                    setattr(m, s, wrapped(getattr(m, s), s))
            if name == "bench.eval_process":  # the evaluation child's parent side
                m.EvalProcess.evaluate = wrapped(m.EvalProcess.evaluate, "evaluate")
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Hook())
def report():
    mark("end")
    print("@@" + json.dumps(marks), file=sys.stderr)
atexit.register(report)  # bench.run ends with bench.run.leave: atexit handlers, then os._exit
sys.argv = ["bench.run", *sys.argv[1:]]
runpy.run_module("bench.run", run_name="__main__", alter_sys=True)
"""

# the parts of the floor that need the model: its import and build, then decoding and scoring
MODEL = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from audioscore.config import load_config
from bench.models import build_model
cfg = load_config("bench", sys.argv[2:], conf_dir=sys.argv[1])
import gc
gc.disable()  # as the runner builds it: no collections while the libraries' imports run
t2 = time.perf_counter()
model, kw = build_model(cfg)
t3 = time.perf_counter()
gc.enable()
from bench.plan import RunPlan
from bench.infer import decode_row, model_preprocess, score_decoded
from bench.score import batch_rows
pre = model_preprocess(model, cfg.max_dur, cfg.get("max_seconds"))
rows = RunPlan.from_cfg(cfg).read_dataset().rows  # the rows a run selects
batches = batch_rows(cfg, rows, pre)
c0 = time.process_time()
decoded = [[decode_row(r, pre) for r in b] for b in batches]
decode_cpu = time.process_time() - c0
torch.set_num_threads(1)  # one thread: its CPU time is the arithmetic's, nothing spins
score_decoded(model, decoded[-1], pre.max_dur, kw)  # warm-up on the shortest batch
c1 = time.thread_time()
with torch.inference_mode():
    for d in decoded:
        score_decoded(model, d, pre.max_dur, kw)
compute_cpu = time.thread_time() - c1
audio = sum(len(x.audio) for d in decoded for r in d for x in r["sides"].values()
            if not isinstance(x, str)) / pre.sr
print("@@" + json.dumps({"torch": t1 - t0, "model": t3 - t2, "compose": t2 - t1,
    "decode_cpu": decode_cpu, "compute_cpu": compute_cpu, "audio_s": audio, "rows": len(rows)}))
"""


def tail_json(text: str) -> object:
    return json.loads(text.rsplit("@@", 1)[1].splitlines()[0])


def python(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env
    )


START, TORCH = "start-up (Hydra, config, output folder)", "import torch"
MODEL_PHASE = "build the model (its libraries' imports)"
TOTAL = "total (the whole process)"


def phases(marks: list[list], wall: float) -> dict[str, float]:
    """Seconds per phase from one run's clock marks and its whole process's wall time."""
    at = {name: t for t, name in marks}
    got = lambda a, b: at[b] - at[a] if a in at and b in at else float("nan")  # noqa: E731
    return {
        START: at.get("import> bench.pipeline", float("nan")),
        TORCH: got("import> torch", "import< torch"),
        "plan decoding (duration probes, workers start)": got("> plan_decoding", "< plan_decoding"),
        MODEL_PHASE: got("> prepare_model", "< prepare_model"),
        "score (decoding in workers meanwhile)": got("> score_rows", "< score_rows"),
        "evaluate (metrics, files, plots)": got("> evaluate", "< evaluate"),
        "report, exit": wall - at.get("< score_and_evaluate", float("nan")),
        TOTAL: wall,
    }


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with bench.jsonl (the synthetic corpus)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--theirs-json", help="scripts/bench_vs_upstream.py's rows_<N>.json")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("overrides", nargs="*", help="bench.run overrides (model=..., ...)")
    a = ap.parse_args(argv)
    data = Path(a.data).resolve()
    over = ["model=cmi_rm_tiny", "dataset=synth", f"dataset.jsonl={data / 'bench.jsonl'}"]
    over += [f"dataset.root={data}", *a.overrides]

    runs: list[dict[str, float]] = []
    floors: list[dict] = []
    for i in range(a.repeats):  # interleaved: a run, then the floor's parts, then again
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            p = python(["-c", TIMELINE, *over, f"output_root={out}", "resume=false"])
            wall = time.perf_counter() - t
        if p.returncode:
            print(p.stderr[-3000:], file=sys.stderr)
            return p.returncode
        runs.append(phases(tail_json(p.stderr), wall))  # type: ignore[arg-type]
        t = time.perf_counter()
        python(["-c", "pass"])
        bare = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as out:
            p = python(["-c", MODEL, str(ROOT / "conf" / "bench"), *over, f"output_root={out}"])
        if p.returncode:
            print(p.stderr[-3000:], file=sys.stderr)
            return p.returncode
        floors.append({**tail_json(p.stdout), "python": bare})  # type: ignore[dict-item]
        print(f"[{i + 1}/{a.repeats}] run {runs[-1][TOTAL]:.2f} s", flush=True)

    print(f"\nphases of our run (median of {a.repeats}, seconds):")
    for k in runs[0]:
        print(f"  {k:<48} {median([r[k] for r in runs]):6.2f}")
    f = {k: median([x[k] for x in floors]) for k in floors[0]}
    ph = {k: median([r[k] for r in runs]) for k in runs[0]}
    # a lower bound: each serial part at the smaller of its time alone and in our run
    startup = min(f["python"] + f["compose"], ph[START])
    f["torch"] = min(f["torch"], ph[TORCH])
    f["model"] = min(f["model"], ph[MODEL_PHASE])
    rest = f["compute_cpu"] + max(0.0, f["decode_cpu"] - f["model"] * (a.cores - 1))
    floor = startup + f["torch"] + f["model"] + rest / a.cores
    print(
        f"\nwork any runner of this model does ({int(f['rows'])} rows, {f['audio_s']:.0f} audio-s):"
    )
    print(f"  start-up (python + compose)            {startup:6.2f} s")
    print(f"  import torch                           {f['torch']:6.2f} s")
    print(f"  the model's libraries + build          {f['model']:6.2f} s")
    print(f"  decoding                               {f['decode_cpu']:6.2f} CPU-s")
    print(f"  model arithmetic (one thread)          {f['compute_cpu']:6.2f} CPU-s")
    print(f"  floor on {a.cores} cores                        {floor:6.2f} s")
    ours = median([r[TOTAL] for r in runs])
    print(f"  our run                                {ours:6.2f} s ({ours / floor:.2f}x the floor)")
    if a.theirs_json:
        theirs = json.loads(Path(a.theirs_json).read_text())
        wall = median([r["wall_s"] for r in theirs["runs"] if r["side"] == "theirs"])
        print(f"  upstream's runner (median)             {wall:6.2f} s")
        print(
            f"  largest possible ratio                 {wall / floor:6.2f}x (ours: {wall / ours:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
