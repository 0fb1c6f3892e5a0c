"""Benchmark runner throughput, two modes.

1. Loop mode (the default): audio-seconds scored per second, our runner vs a one-clip-at-a-time
   loop, same model and data, in this process.

   python scripts/bench_throughput.py [model=cmi_rm_tiny] [dataset=synth] [batch_size=12] [...]

   Arguments are bench.yaml overrides. Both sides load the model once and warm it up on one clip
   first; the encoder cache stays off so neither side reuses work. The runner's time is end to
   end (row selection, duration probes, decoding in workers, scoring, durable writes); the loop
   decodes each clip with audiobase.audio.load_audio and calls score_batch on it alone.
   Writes throughput.json next to the runner's outputs and prints a summary.

2. Compare mode: our runner's command and a second, arbitrary command (say CMI-RewardBench's
   `inference_benchmark.py` with the same model and data), each run as a fresh process,
   interleaved (ours, theirs, ours, theirs, ...), `--repeats` pairs; end-to-end wall time
   (interpreter start to exit) and, when a side reports it, scoring-phase audio-s/s; medians,
   min and max; one JSON.

   python scripts/bench_throughput.py compare --repeats 5 --out speed.json \
       --ours-override dataset.jsonl=$PWD/data/synth/bench.jsonl \
       --ours-override dataset.root=$PWD/data/synth \
       --theirs "{python} inference_benchmark.py --checkpoint $PWD/outputs/models/cmi_rm_tiny \
                 --model_class_path rewards.cmi_rm:CMIRewardModel --device cpu \
                 --dataset_jsonl $PWD/data/synth/bench.jsonl --dataset_root $PWD/data/synth \
                 --output_dir {out} --batch_size 12 --max_dur 120" \
       --theirs-cwd /path/to/CMI-RewardBench --theirs-env PYTHONPATH=/path/with/pandas \
       --theirs-env OMP_NUM_THREADS=1

   (upstream builds `--model_class_path` classes as Class(checkpoint=..., device=...), which
   `CMIRewardModel` accepts: the same model code on both sides, only the runners differ;
   `--model cmi_rm --checkpoint .../model.safetensors` runs upstream's own CMI-RM code on the
   same weights instead, as its users do. Its evaluator needs pandas, installed anywhere on
   PYTHONPATH; docs/bench.md (Speed) has the numbers measured this way. Our
   runner uses every core (`score_streams=auto`: one batch per core on one thread each);
   upstream runs with torch's default threads unless OMP_NUM_THREADS is set for it.)

   Commands are shell command lines; `{out}` becomes a fresh empty folder per run (deleted after
   unless --keep), `{python}` this interpreter. `--ours-env/--theirs-env K=V` (repeatable, values
   may use the placeholders) and `--ours-cwd/--theirs-cwd` set each side's environment and folder.
   `--ours` defaults to the command above; `--ours-override key=value` appends bench.yaml
   overrides to it (e.g. dataset.jsonl=... dataset.root=...). `--warmup N` runs each side N
   times first, uncounted (page cache, .pyc files).
   Scoring phase: read from `{out}` after a run: our runner's `statistics.json` (`run`:
   `audio_seconds` over `timings.score_s` when the runner records it, else over `wall_s`, which
   includes the model build) or any `throughput.json`/`timing.json` holding `audio_seconds` and
   `scoring_s` (a wrapper around the other side's model can write one). A side reporting
   scoring time without audio seconds borrows the other side's (same data).
   The JSON: per run (order, side, wall_s, scoring figures, load average, exit status) and per
   side median/min/max, plus `speedup_e2e` = their median wall / ours (> 1: ours is faster) and
   the per-pair speedups.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

# loop mode imports torch, Hydra and the runner where it uses them (heavy: compare mode, which
# only starts processes, needs none of it)

CONF = str(Path(__file__).resolve().parents[1] / "conf" / "bench")
OURS = "{python} -m bench.run model=cmi_rm_tiny dataset=synth output_root={out} resume=false"
TIMING_FILES = ("throughput.json", "timing.json")


def one_clip_loop(cfg: DictConfig, model) -> dict:
    """Score every clip of the selection alone: decode, score_batch([x]), next."""
    from audiobase.audio import load_audio
    from bench.data import parse_subset, read_bench
    from rewards.base import BatchInput

    ds = cfg.dataset
    rows = read_bench(
        ds.jsonl,
        ds.root,
        split=ds.split,
        subsets=parse_subset(cfg.get("subset")),
        start_idx=int(cfg.start_idx or 0),
        end_idx=cfg.end_idx,
    )
    sr, max_dur = int(model.sr), float(cfg.max_dur)
    audio_s, n_ok, n_err = 0.0, 0, 0
    t0 = time.perf_counter()
    for r in rows:
        ref = None
        if r.ref_audio:
            try:
                ref = load_audio(r.ref_audio, sr, duration=max_dur)
            except Exception:
                ref = None
        for side in r.sides:
            try:
                wav = load_audio(r.side_path(side), sr, duration=max_dur)
                model.score_batch([BatchInput(wav, r.text, r.lyrics, ref)], 1, max_dur)
                audio_s += len(wav) / sr
                n_ok += 1
            except Exception:
                n_err += 1
    wall = time.perf_counter() - t0
    return {
        "audio_seconds": audio_s,
        "wall_s": wall,
        "clips_ok": n_ok,
        "clips_failed": n_err,
        "audio_s_per_s": audio_s / wall,
    }


def warm_up(cfg: DictConfig, model) -> None:
    from audiobase.audio import load_audio
    from bench.data import read_bench
    from rewards.base import BatchInput

    ds = cfg.dataset
    row = read_bench(ds.jsonl, ds.root, split=ds.split)[0]
    wav = load_audio(row.audio_a, int(model.sr), duration=float(cfg.max_dur))
    model.score_batch([BatchInput(wav, row.text, row.lyrics)], 1, float(cfg.max_dur))


def measure(overrides: list[str]) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from bench.models import build_model, decode_workers, pick_threads, score_streams
    from bench.run import run

    out = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "bench",
            overrides=[
                f"output_root={out}",
                "resume=false",
                "plots=false",
                "n_boot=0",
                "cache_dir=null",
                *overrides,
            ],
        )
    model, score_kwargs = build_model(cfg)
    default_threads = torch.get_num_threads()
    warm_up(cfg, model)
    _, info = run(cfg, model=model, score_kwargs=score_kwargs)
    ours = {
        k: info[k] for k in ("audio_seconds", "wall_s", "audio_s_per_s", "scored_rows", "batches")
    }
    loop = one_clip_loop(cfg, model)  # torch's default thread count, as a plain loop runs
    streams = score_streams(cfg, model)
    per_stream = pick_threads(cfg, streams=streams) or default_threads
    torch.set_num_threads(streams * per_stream)
    try:
        loop_tuned = one_clip_loop(cfg, model)  # the same loop on as many threads as the runner
    finally:
        torch.set_num_threads(default_threads)
    report = {
        "model": str(cfg.model.name),
        "dataset": str(cfg.dataset.name),
        "device": info["device"],
        "batch_size": int(cfg.batch_size),
        "num_workers": decode_workers(cfg),
        "max_dur": float(cfg.max_dur),
        "runner": ours,
        "one_clip_loop": loop,
        "one_clip_loop_same_threads": loop_tuned,
        "speedup_vs_same_threads": ours["audio_s_per_s"] / max(loop_tuned["audio_s_per_s"], 1e-9),
        "torch_threads": {
            "loop": default_threads,
            "runner": {"streams": streams, "threads_per_stream": per_stream},
        },
        "load_average": os.getloadavg(),
        "speedup": ours["audio_s_per_s"] / max(loop["audio_s_per_s"], 1e-9),
    }
    (Path(info["out_dir"]) / "throughput.json").write_text(json.dumps(report, indent=2))
    return report


# ---------------------------------------------------------------------------- compare mode
def expand(text: str, out: Path) -> str:
    return text.replace("{out}", str(out)).replace("{python}", shlex.quote(sys.executable))


def read_scoring(out: Path) -> dict[str, Any]:
    """Scoring-phase figures a finished run left under `out` (empty when it left none)."""
    for f in sorted(out.rglob("statistics.json")):
        run_info = json.loads(f.read_text()).get("run") or {}
        timings = run_info.get("timings") or {}
        score_s = timings.get("score_s", run_info.get("score_s"))
        secs = score_s if score_s is not None else run_info.get("wall_s")
        if secs:
            return {
                "audio_seconds": float(run_info.get("audio_seconds", 0.0)),
                "scoring_s": float(secs),
                "scoring_from": "statistics.json run."
                + ("timings.score_s" if score_s is not None else "wall_s (model build + scoring)"),
            }
    for name in TIMING_FILES:
        for f in sorted(out.rglob(name)):
            d = json.loads(f.read_text())
            if "scoring_s" in d:
                return {
                    "audio_seconds": float(d.get("audio_seconds") or 0.0),
                    "scoring_s": float(d["scoring_s"]),
                    "scoring_from": f.name,
                }
    return {}


def run_once(side: dict[str, Any], keep: bool) -> dict[str, Any]:
    """Run one side's command in a fresh `{out}`; wall time from spawn to exit."""
    out = Path(tempfile.mkdtemp(prefix=f"bench_throughput_{side['name']}_"))
    env = {**os.environ, **{k: expand(v, out) for k, v in side["env"].items()}}
    cmd = expand(side["cmd"], out)
    load = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(
        cmd, shell=True, cwd=side["cwd"], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    rec: dict[str, Any] = {"side": side["name"], "wall_s": wall, "rc": p.returncode}
    rec["cpu_s"] = cpu  # user + system seconds of the command and every process it waited for
    rec["load_average_1m"] = load
    rec.update(read_scoring(out))
    if p.returncode != 0:
        rec["stderr_tail"] = (p.stderr or p.stdout)[-2000:]
    if keep:
        rec["out"] = str(out)
    else:
        shutil.rmtree(out, ignore_errors=True)
    return rec


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    ok = [r for r in runs if r["rc"] == 0 and not r.get("warmup")]
    audio = {
        n: [r["audio_seconds"] for r in ok if r["side"] == n and r.get("audio_seconds")]
        for n in names
    }
    per_side = {}
    for n in names:
        mine = [r for r in ok if r["side"] == n]
        other = audio[names[1 - names.index(n)]]
        aps = []
        for r in mine:
            a = r.get("audio_seconds") or (statistics.median(other) if other else 0.0)
            if r.get("scoring_s") and a:
                aps.append(a / r["scoring_s"])
        e2e = [
            a / r["wall_s"]
            for r in mine
            if (a := r.get("audio_seconds") or (statistics.median(other) if other else 0.0))
        ]
        per_side[n] = {
            "runs": len(mine),
            "failed_runs": sum(r["side"] == n and r["rc"] != 0 for r in runs),
            "wall_s": spread([r["wall_s"] for r in mine]),
            "cpu_s": spread([r["cpu_s"] for r in mine if "cpu_s" in r]),
            "e2e_audio_s_per_s": spread(e2e),
            "scoring_audio_s_per_s": spread(aps),
            "scoring_from": sorted({r["scoring_from"] for r in mine if "scoring_from" in r}),
        }
    a, b = names
    pairs = [
        rb["wall_s"] / ra["wall_s"]
        for ra, rb in zip(
            [r for r in runs if r["side"] == a and not r.get("warmup")],
            [r for r in runs if r["side"] == b and not r.get("warmup")],
            strict=False,
        )
        if ra["rc"] == 0 and rb["rc"] == 0
    ]
    wa, wb = per_side[a]["wall_s"], per_side[b]["wall_s"]
    ca, cb = per_side[a]["cpu_s"], per_side[b]["cpu_s"]
    sa, sb = per_side[a]["scoring_audio_s_per_s"], per_side[b]["scoring_audio_s_per_s"]
    return {
        "sides": per_side,
        "speedup_e2e": wb["median"] / wa["median"] if wa and wb else None,
        "speedup_e2e_per_pair": pairs,
        "cpu_ratio": ca["median"] / cb["median"] if ca and cb and cb["median"] else None,
        "speedup_scoring": sa["median"] / sb["median"] if sa and sb else None,
    }


def compare(args: argparse.Namespace) -> dict[str, Any]:
    ours_cmd = " ".join([args.ours, *map(shlex.quote, args.ours_override)])
    sides = [
        {"name": "ours", "cmd": ours_cmd, "cwd": args.ours_cwd, "env": env_pairs(args.ours_env)},
        {
            "name": "theirs",
            "cmd": args.theirs,
            "cwd": args.theirs_cwd,
            "env": env_pairs(args.theirs_env),
        },
    ]
    runs: list[dict[str, Any]] = []
    schedule = [(s, True) for _ in range(args.warmup) for s in sides]
    schedule += [(s, False) for _ in range(args.repeats) for s in sides]
    for i, (side, warm) in enumerate(schedule):
        rec = {"order": i, **run_once(side, args.keep), **({"warmup": True} if warm else {})}
        runs.append(rec)
        aps = (rec.get("audio_seconds") or 0) / rec["scoring_s"] if rec.get("scoring_s") else None
        print(
            f"[{i + 1}/{len(schedule)}] {side['name']:6s}{' (warm-up)' if warm else ''} "
            f"rc={rec['rc']} wall {rec['wall_s']:7.2f} s"
            + (f", scoring {aps:7.1f} audio-s/s" if aps else "")
            + f", load {rec['load_average_1m']:.1f}",
            flush=True,
        )
        if rec["rc"] != 0:
            print(rec.get("stderr_tail", ""), file=sys.stderr)
    report = {
        "commands": {s["name"]: {k: s[k] for k in ("cmd", "cwd", "env")} for s in sides},
        "repeats": args.repeats,
        "warmup": args.warmup,
        "cpu_count": os.cpu_count(),
        "runs": runs,
        **summarize(runs, [s["name"] for s in sides]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return report


def env_pairs(items: list[str]) -> dict[str, str]:
    bad = [x for x in items if "=" not in x]
    if bad:
        raise SystemExit(f"--*-env takes KEY=VALUE, got {bad}")
    return dict(x.split("=", 1) for x in items)


def compare_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="bench_throughput.py compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--ours", default=OURS, help="our runner's command line (default: %(default)s)")
    ap.add_argument(
        "--ours-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="bench.yaml override appended to --ours (repeatable)",
    )
    ap.add_argument("--ours-cwd", default=None)
    ap.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--theirs", required=True, help="the other runner's command line")
    ap.add_argument("--theirs-cwd", default=None)
    ap.add_argument("--theirs-env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved pairs (default 5)")
    ap.add_argument("--warmup", type=int, default=0, help="uncounted runs of each side first")
    ap.add_argument("--out", default="outputs/bench/throughput_compare.json")
    ap.add_argument("--keep", action="store_true", help="keep each run's {out} folder")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    r = compare(args)
    print(f"{'side':8s} {'runs':>4s} {'wall s (median, min-max)':>28s} {'scoring audio-s/s':>26s}")
    for name, m in r["sides"].items():
        w, s = m["wall_s"], m["scoring_audio_s_per_s"]
        wt = f"{w['median']:.1f} ({w['min']:.1f}-{w['max']:.1f})" if w else "-"
        st = f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})" if s else "-"
        print(f"{name:8s} {m['runs']:4d} {wt:>28s} {st:>26s}")
    if r["speedup_e2e"]:
        print(f"end to end: ours is {r['speedup_e2e']:.2f}x theirs (median wall time ratio)")
    if r.get("cpu_ratio"):
        print(f"CPU seconds: ours uses {r['cpu_ratio']:.2f}x theirs (median ratio)")
    if r["speedup_scoring"]:
        print(f"scoring phase: ours is {r['speedup_scoring']:.2f}x theirs (median audio-s/s)")
    print(f"wrote {args.out}")
    failed = sum(m["failed_runs"] for m in r["sides"].values())
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    r = measure(argv)
    print(
        f"{r['model']} on {r['dataset']} ({r['device']}, batch_size={r['batch_size']}, "
        f"num_workers={r['num_workers']})"
    )
    for name in ("runner", "one_clip_loop", "one_clip_loop_same_threads"):
        m = r[name]
        print(
            f"  {name:26s} {m['audio_seconds']:8.1f} audio-s in {m['wall_s']:7.2f} s "
            f"= {m['audio_s_per_s']:7.1f} audio-s/s"
        )
    print(
        f"  speedup                    {r['speedup']:.2f}x (vs the loop at the runner's thread count: "
        f"{r['speedup_vs_same_threads']:.2f}x); threads {r['torch_threads']}, "
        f"load average {r['load_average'][0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
