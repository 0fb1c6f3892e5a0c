"""Benchmark runner: `python -m bench.run model=cmi_rm_tiny dataset=synth`.

Scores side A and side B of every CMI-RewardBench row, appending result rows per batch to
outputs/bench/<model.name>/<dataset.name>/results.jsonl, then writes the metrics files.
Rerunning resumes: rows already scored are skipped, failed ones retried. Several models run
one after another with `models=[cmi_rm_tiny,audioscore]` (or a Hydra multirun `-m model=a,b`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from bench.data import BenchRow, fill_durations, make_batches, read_bench
from bench.evaluate import evaluate_rows
from bench.infer import autocast_for, make_loader, model_preprocess, score_batch_rows
from bench.store import ResultWriter, compact, read_latest

log = logging.getLogger(__name__)


class SimulatedCrash(RuntimeError):
    """Raised by the `crash_after_batches` test hook, as if the process had been killed."""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def prepare_model_cfg(cfg: DictConfig) -> DictConfig:
    """The model config with runner-level settings pushed into keys the model declares."""
    mcfg = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    with open_dict(mcfg):
        if cfg.get("cache_dir") and "cache_dir" in mcfg:
            mcfg.cache_dir = str(cfg.cache_dir)  # models own their encoder cache; we pass the dir
        if cfg.get("device") and "device" in mcfg:
            mcfg.device = resolve_device(str(cfg.device))
        if "bf16" in mcfg and cfg.get("bf16") is not None:
            mcfg.bf16 = bool(cfg.bf16)
    return mcfg


def extra_score_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """`score_kwargs` from the runner config (added to the model config's own)."""
    extra = cfg.get("score_kwargs")
    return OmegaConf.to_container(extra, resolve=True) if extra else {}


def build_model(cfg: DictConfig) -> tuple[Any, dict[str, Any]]:
    """(reward model, score kwargs) through the rewards package, as a user's run builds it."""
    from rewards.build import build_reward_model

    model, score_kwargs = build_reward_model(prepare_model_cfg(cfg))
    extra = extra_score_kwargs(cfg)
    return model, {**(score_kwargs or {}), **extra}


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.output_root) / str(cfg.model.name) / str(cfg.dataset.name)


def part_files(out: Path) -> list[Path]:
    """Per-rank journals left by a sharded run (merged into results.jsonl at the end)."""
    return sorted(out.glob("results.rank*.jsonl"))


def fingerprint(cfg: DictConfig) -> str:
    """What makes scores reusable on resume: the model config (minus device and cache dir),
    the weights' modification time when `checkpoint` is a path, max_dur and score kwargs."""
    mcfg = OmegaConf.to_container(prepare_model_cfg(cfg), resolve=True)
    for k in ("device", "cache_dir"):
        mcfg.pop(k, None)
    ckpt = Path(str(mcfg.get("checkpoint") or ""))
    stamp = 0.0
    if str(ckpt) not in ("", ".") and ckpt.exists():
        files = [ckpt] if ckpt.is_file() else [p for p in ckpt.iterdir() if p.is_file()]
        stamp = max((p.stat().st_mtime for p in files), default=0.0)
    blob = {"model": mcfg, "weights_mtime": stamp, "max_dur": float(cfg.max_dur)}
    blob["score_kwargs"] = extra_score_kwargs(cfg)
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def read_dataset(cfg: DictConfig, whole: bool = False) -> list[BenchRow]:
    """The dataset's rows after the split filter; unless `whole`, also subsets and the slice."""
    ds = cfg.dataset
    return read_bench(
        ds.jsonl,
        ds.root,
        split=ds.get("split", "test"),
        subsets=None if whole or not ds.get("subsets") else list(ds.subsets),
        start_idx=0 if whole else int(cfg.get("start_idx") or 0),
        end_idx=None if whole else cfg.get("end_idx"),
    )


def select_todo(cfg: DictConfig, out: Path, fp: str) -> tuple[list[BenchRow], int]:
    """Rows in the selection that still need scoring, and how many are already done (scored
    ok by the same model fingerprint)."""
    rows = read_dataset(cfg)
    latest = read_latest([out / "results.jsonl", *part_files(out)])
    done = {
        k for k, r in latest.items() if r.get("status") == "ok" and r.get("bench_fingerprint") == fp
    }
    todo = [r for r in rows if r.key not in done]
    return todo, len(rows) - len(todo)


def pick_threads(cfg: DictConfig, processes: int = 1) -> int | None:
    """Intra-op threads for CPU scoring; `torch_threads: auto` leaves half the cores to the
    decoding workers and other processes (oversubscribed OpenMP threads spin and crawl)."""
    want = cfg.get("torch_threads", "auto")
    if want in (None, "none") or resolve_device(str(cfg.get("device") or "cpu")) != "cpu":
        return None
    if want == "auto":
        return max(1, (os.cpu_count() or 1) // (2 * max(processes, 1)))
    return int(want)


@contextlib.contextmanager
def torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def score_local(
    cfg: DictConfig,
    model: Any,
    score_kwargs: dict[str, Any],
    batches: list[list[BenchRow]],
    writer: ResultWriter,
    fp: str = "",
) -> dict[str, Any]:
    """One process: workers decode ahead, the model scores, each batch is appended durably."""
    device = resolve_device(cfg.get("device", "auto"))
    pre = model_preprocess(model, cfg.max_dur)
    loader = make_loader(batches, pre, int(cfg.num_workers))
    n_rows = sum(len(b) for b in batches)
    counts = {"ok": 0, "error": 0, "audio_seconds": 0.0, "scored_keys": []}
    t0 = time.perf_counter()
    bar = tqdm(
        total=n_rows, unit="row", desc=f"{cfg.model.name}/{cfg.dataset.name}", dynamic_ncols=True
    )
    with bar:
        for i, decoded in enumerate(loader):
            rows = score_batch_rows(
                model,
                decoded,
                pre.max_dur,
                score_kwargs,
                str(cfg.model.name),
                autocast=lambda: autocast_for(device, bool(cfg.get("bf16", True))),
                extra={"bench_fingerprint": fp},
                per_side=cfg.get("batching") == "upstream",
            )
            writer.write(rows)
            for r in rows:
                counts[r["status"]] += 1
                counts["scored_keys"].append(r["bench_row_key"])
                counts["audio_seconds"] += r["bench_audio_seconds"]
            rate = counts["audio_seconds"] / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(ok=counts["ok"], err=counts["error"], audio_s_per_s=f"{rate:.1f}")
            bar.update(len(rows))
            if cfg.get("crash_after_batches") is not None and i + 1 >= int(cfg.crash_after_batches):
                raise SimulatedCrash(f"test hook: stopped after {i + 1} batches")
    return counts


def run(
    cfg: DictConfig, model: Any = None, score_kwargs: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score the dataset with one model and write all outputs; returns (metrics, info).

    `model` lets callers pass a built reward model (anything with `sr` + `score_batch`);
    otherwise `cfg.model` goes through rewards.build.build_reward_model.
    """
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    if not cfg.get("resume", True):  # a fresh run: forget earlier scores
        for p in [results, *part_files(out)]:
            p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    devices = int(cfg.trainer.get("devices", 1)) if cfg.get("trainer") else 1
    ckpt = cfg.model.get("checkpoint")
    if model is None and (devices == 1 or (ckpt and not Path(str(ckpt)).exists())):
        # built before the fingerprint, so weights a model writes on first use (tiny) count
        model, score_kwargs = build_model(cfg)
    fp = fingerprint(cfg)
    todo, skipped = select_todo(cfg, out, fp)
    fill_durations(todo)
    batches = make_batches(
        todo,
        int(cfg.batch_size),
        float(cfg.max_dur),
        batching=str(cfg.get("batching", "duration")),
        max_batch_seconds=cfg.get("max_batch_seconds"),
    )
    log.info(
        "%s: %d rows to score in %d batches, %d already done", out, len(todo), len(batches), skipped
    )
    counts: dict[str, Any] = {"ok": 0, "error": 0, "audio_seconds": 0.0, "scored_keys": []}
    if batches and devices > 1:
        from bench.sharded import score_sharded

        counts = score_sharded(cfg, model, score_kwargs, batches, out, fp)
        if not counts["is_global_zero"]:  # under plain ddp every rank runs this; rank 0 merges
            return {}, {"is_global_zero": False}
    elif batches:
        with ResultWriter(results) as writer, torch_threads(pick_threads(cfg)):
            counts = score_local(cfg, model, score_kwargs or {}, batches, writer, fp)
    # one record per row; rows no longer in the dataset file or scored by another model
    # fingerprint (new weights, other settings) are dropped, so metrics never mix them
    keys = {r.key for r in read_dataset(cfg, whole=True)}
    all_rows = compact(
        results,
        part_files(out),
        keep=lambda r: r["bench_row_key"] in keys and r.get("bench_fingerprint") == fp,
    )
    wall = time.perf_counter() - t0
    run_info = {
        "model": str(cfg.model.name),
        "dataset": str(cfg.dataset.name),
        "device": resolve_device(cfg.get("device", "auto")),
        "devices": devices,
        "scored_rows": counts["ok"] + counts["error"],
        "failed_rows_this_run": counts["error"],
        "skipped_rows": skipped,
        "batches": len(batches),
        "audio_seconds": counts["audio_seconds"],
        "wall_s": wall,
        "audio_s_per_s": counts["audio_seconds"] / wall if wall > 0 else 0.0,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    metrics = evaluate_rows(
        all_rows,
        out,
        split=cfg.dataset.get("split", "test"),
        n_boot=int(cfg.get("n_boot", 1000)),
        seed=int(cfg.get("seed", 0)),
        plots=bool(cfg.get("plots", True)),
        run_info=run_info,
        title=f"{cfg.model.name} on {cfg.dataset.name}",
        variant=str(cfg.model.name),
    )
    n_fail = sum(r.get("status") == "error" for r in all_rows)
    info = run_info | {
        "out_dir": str(out),
        "results": str(results),
        "failed_rows": n_fail,
        "total_rows": len(all_rows),
        "failed_frac": n_fail / max(len(all_rows), 1),
        "scored_keys": counts["scored_keys"],
    }
    info["too_many_failures"] = info["failed_frac"] > float(cfg.get("max_fail_frac", 1.0))
    return metrics, info


def task_overrides() -> list[str]:
    """The command line's overrides (empty outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def model_cfgs(cfg: DictConfig, overrides: list[str] | None = None) -> list[DictConfig]:
    """One full config per model in `models` (a list of conf/model names, or a mapping).

    List: `models=[audioscore,cmi_rm_tiny] model.checkpoint=X`: every other override applies
    to each model, but a `model.<key>=...` override goes to the first listed model whose config
    has <key> (runner keys such as device, bf16 and cache_dir reach every model anyway).
    Mapping: `models={plan_a:{config:audioscore,checkpoint:X},cmi_rm_tiny:{}}`: each entry's
    keys override that model only; `config` (default: the entry's name) picks conf/model/,
    and the entry's name becomes `model.name` (the output folder).
    """
    models = cfg.get("models")
    if not models:
        return [cfg]
    from hydra import compose

    overrides = task_overrides() if overrides is None else overrides
    key = lambda o: o.split("=")[0].lstrip("+~")  # noqa: E731
    shared = [o for o in overrides if key(o).split(".")[0] not in ("models", "model")]
    per_model = [o for o in overrides if key(o).startswith("model.")]

    def base(name: str) -> DictConfig:
        return compose("bench", overrides=[*shared, f"model={name}", "models=null"])

    if isinstance(models, DictConfig):
        out = []
        for label, extra in models.items():
            extra = OmegaConf.to_container(extra or {}, resolve=True)
            c = base(str(extra.pop("config", label)))
            with open_dict(c):
                c.model = OmegaConf.merge(c.model, {"name": str(label), **extra})
            out.append(c)
        return out
    names = [str(n) for n in models]
    bases = [base(n) for n in names]
    mine: list[list[str]] = [[] for _ in names]
    for o in per_model:
        field = key(o).split(".")[1]
        owner = next((i for i, b in enumerate(bases) if field in b.model.keys()), None)  # ??? too
        if owner is not None:
            mine[owner].append(o)
    return [
        compose("bench", overrides=[*shared, f"model={n}", "models=null", *m]) if m else b
        for n, b, m in zip(names, bases, mine, strict=True)
    ]


def run_cli(cfg: DictConfig, overrides: list[str] | None = None) -> int:
    """Run every requested model in turn; the exit status is non-zero if any exceeded
    `max_fail_frac` or crashed (the others still run)."""
    status = 0
    for c in model_cfgs(cfg, overrides):
        try:
            metrics, info = run(c)
        except Exception:
            log.exception("benchmark run failed for model %s", c.model.get("name"))
            status = 1
            continue
        if not metrics:  # a non-zero ddp rank: rank 0 reports
            continue
        print(f"{info['out_dir']}: {info['total_rows']} rows, {info['failed_rows']} failed")
        for r in metrics["summary"]:
            vals = {k: r[k] for k in ("SRCC", "LCC", "K-Tau", "ACC") if k in r}
            print(f"  {r['dataset']:<10} {r['task']:<11} n={r['n']:<5} {vals}")
        if info["too_many_failures"]:
            log.error(
                "%s: %.1f%% of rows failed (max_fail_frac=%s); see statistics.json",
                info["out_dir"],
                100 * info["failed_frac"],
                c.get("max_fail_frac"),
            )
            status = max(status, 3)
    return status


@hydra.main(version_base="1.3", config_path="../../conf/bench", config_name="bench")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    status = run_cli(cfg)
    if status and HydraConfig.get().mode != RunMode.MULTIRUN:  # exiting would end a multirun
        sys.exit(status)


if __name__ == "__main__":
    main()
