"""Audio-seconds scored per second: our runner vs a one-clip-at-a-time loop, same model and data.

python scripts/bench_throughput.py [model=cmi_rm_tiny] [dataset=synth] [batch_size=12] [...]

Arguments are bench.yaml overrides. Both sides load the model once and warm it up on one clip
first; the encoder cache stays off so neither side reuses work. The runner's time is end to
end (row selection, duration probes, decoding in workers, scoring, durable writes); the loop
decodes each clip with audiobase.audio.load_audio and calls score_batch on it alone.
Writes throughput.json next to the runner's outputs and prints a summary.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from audiobase.audio import load_audio
from bench.data import read_bench
from bench.models import build_model, pick_threads
from bench.run import run
from rewards.base import BatchInput

CONF = str(Path(__file__).resolve().parents[1] / "conf" / "bench")


def one_clip_loop(cfg: DictConfig, model) -> dict:
    """Score every clip of the selection alone: decode, score_batch([x]), next."""
    ds = cfg.dataset
    rows = read_bench(
        ds.jsonl,
        ds.root,
        split=ds.split,
        subsets=ds.get("subsets"),
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
    ds = cfg.dataset
    row = read_bench(ds.jsonl, ds.root, split=ds.split)[0]
    wav = load_audio(row.audio_a, int(model.sr), duration=float(cfg.max_dur))
    model.score_batch([BatchInput(wav, row.text, row.lyrics)], 1, float(cfg.max_dur))


def measure(overrides: list[str]) -> dict:
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
    torch.set_num_threads(pick_threads(cfg) or default_threads)
    try:
        loop_tuned = one_clip_loop(cfg, model)  # the same loop with the runner's thread count
    finally:
        torch.set_num_threads(default_threads)
    report = {
        "model": str(cfg.model.name),
        "dataset": str(cfg.dataset.name),
        "device": info["device"],
        "batch_size": int(cfg.batch_size),
        "num_workers": int(cfg.num_workers),
        "max_dur": float(cfg.max_dur),
        "runner": ours,
        "one_clip_loop": loop,
        "one_clip_loop_same_threads": loop_tuned,
        "speedup_vs_same_threads": ours["audio_s_per_s"] / max(loop_tuned["audio_s_per_s"], 1e-9),
        "torch_threads": {"loop": default_threads, "runner": pick_threads(cfg)},
        "load_average": os.getloadavg(),
        "speedup": ours["audio_s_per_s"] / max(loop["audio_s_per_s"], 1e-9),
    }
    (Path(info["out_dir"]) / "throughput.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    r = measure(list(sys.argv[1:] if argv is None else argv))
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
