"""A scoring run in one pass: the dataset and the results folder are read once and passed along.

`score_and_evaluate(plan, ...)`: read the selection (`bench.data.read_selection`) and the
results folder (`bench.store.ResultsStore`), plan the model's input from its config and start
decoding the rows still to score while the model is built, check the built model against the
plan (the fingerprint is computed again only if its input or weights differ from what the
config said), set other fingerprints' scores aside, score, compact in memory, evaluate.
The evaluation runs in `bench.eval_process.EvalProcess`'s child, started with the run.
`bench.run` imports this module only for a scoring run (it loads torch and the model code).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiobase.files import write_json
from audiobase.preprocess import Preprocess
from bench.data import Selection
from bench.eval_process import EvalProcess
from bench.infer import model_preprocess
from bench.models import (
    build_model,
    checkpoint_path,
    configured_class,
    digest_sidecar,
    expected_preprocess,
    extra_score_kwargs,
    fingerprint,
    n_devices,
    prepare_model_cfg,
    resolve_device,
    to_dict,
    weight_files,
)
from bench.plan import RunPlan
from bench.resume import set_aside
from bench.score import Prefetch, ScoreJob, prefetch, score_rows
from bench.store import ResultsStore

log = logging.getLogger(__name__)


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic GC paused while torch and the model's libraries load: imports make
    millions of long-lived objects, which set off full collections (about 0.7 s of a 10 s run
    on the project machine). Objects alive after the block are then frozen (`gc.freeze`), so
    later collections skip them; `run` unfreezes them when it returns."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def weights_stamp(cfg: DictConfig) -> list[tuple[str, int, int]]:
    """(file, size, mtime) of the model's weights on disk: a model that writes its weights
    while it is built (the tiny CMI-RM on first use) changes it."""
    ckpt = checkpoint_path(to_dict(prepare_model_cfg(cfg)))
    if ckpt is None:
        return []
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in weight_files(ckpt)]


@dataclass
class Plan:
    """What the model's config says it will be fed, before it is built: its input, the
    fingerprint that implies, the weights it was computed over, and the decoding started."""

    pre: Preprocess
    fp: str
    weights: list[tuple[str, int, int]]
    early: Prefetch | None


def plan_decoding(plan: RunPlan, data: Selection, store: ResultsStore) -> Plan | None:
    """Start decoding before the model is built, when its config tells what it will be fed
    (bench.models.expected_preprocess): the rows still to score under the fingerprint that
    input implies go to the decoding workers, which run while the model loads. None: no such
    plan (a sharded run, a model whose input only the built model knows)."""
    cfg = plan.cfg
    if n_devices(cfg) > 1:
        return None
    cls = configured_class(cfg)
    pre = expected_preprocess(cfg, cls)
    if pre is None:
        return None
    weights = weights_stamp(cfg)
    fp = fingerprint(cfg, pre, cls, digest_sidecar(cfg))
    set_aside(store, fp)
    return Plan(pre, fp, weights, prefetch(cfg, data.todo(store.done(fp)), pre, fp))


def prepare_model(
    cfg: DictConfig, model: Any = None, score_kwargs: dict[str, Any] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(the model, the model the scoring stage uses, score kwargs). Sharded ranks build their
    own on their devices (scoring model None), so then this copy stays on the CPU and scores
    nothing."""
    scoring_model = model
    if model is None:
        sharded = n_devices(cfg) > 1
        model, score_kwargs = build_model(cfg, device="cpu" if sharded else None)
        scoring_model = None if sharded else model
    return model, scoring_model, {**(score_kwargs or {}), **extra_score_kwargs(cfg)}


def run_fingerprint(cfg: DictConfig, pre: Preprocess, planned: Plan | None) -> str:
    """The built model's fingerprint: the planned one when the model gets the input its config
    said and its weights are unchanged, else computed for what it is."""
    if planned is not None and planned.pre == pre and planned.weights == weights_stamp(cfg):
        return planned.fp
    return fingerprint(cfg, pre, configured_class(cfg), digest_sidecar(cfg))


def score_and_evaluate(
    plan: RunPlan,
    model: Any,
    score_kwargs: dict[str, Any] | None,
    evaluator: EvalProcess | None,
    reading_only: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stages 1-4 of a scoring run (`stage` score or all). `evaluator`: the started
    evaluation child (`stage=all`; None otherwise). `reading_only`: a rank
    > 0 of plain ddp, which reads the folder but leaves the files to rank 0."""
    cfg = plan.cfg
    t0 = time.perf_counter()
    data = plan.read_dataset()  # the dataset file, read once
    store = ResultsStore.open(plan.out)  # results.jsonl (and rank parts), read once
    with collection_paused():
        planned = None
        if model is None and not reading_only:
            planned = plan_decoding(plan, data, store)
        model, scoring_model, score_kwargs = prepare_model(cfg, model, score_kwargs)
    t_model = time.perf_counter()
    plan.log_selection(data)
    pre = model_preprocess(model, cfg.max_dur, cfg.get("max_seconds"))
    fp = run_fingerprint(cfg, pre, planned)
    if not reading_only and (planned is None or fp != planned.fp):
        set_aside(store, fp)
    todo = data.todo(store.done(fp))
    skipped = len(data.rows) - len(todo)
    log.info(
        "%s: %d rows to score, %d already done; model input %s", plan.out, len(todo), skipped, pre
    )
    t_select = time.perf_counter()
    job = ScoreJob(cfg, scoring_model, score_kwargs, pre, fp, store)
    counts = score_rows(job, todo, planned.early if planned else None)
    if not counts.get("is_global_zero", True):  # plain ddp: every rank gets here, rank 0 reports
        return {}, {"is_global_zero": False}
    keys = data.keys
    rows = store.compact(keep=lambda r: r["bench_row_key"] in keys)
    t_score = time.perf_counter()
    timings = {
        "model_s": t_model - t0,
        "select_s": t_select - t_model,
        "score_s": t_score - t_select,
    }
    run_info = describe_run(cfg, counts, skipped, t_score - t0, data.counts, timings)
    if plan.stage == "all":
        if evaluator is None:  # bench.run.run_locked starts one for every run that evaluates
            raise RuntimeError("stage=all: no evaluation process was started")
        metrics = evaluator.evaluate(rows, plan.out, run_info=run_info, **plan.metrics)
    else:  # stage=evaluate later keeps this run's entry (bench.evaluate reads it back)
        metrics = {}
        write_json(plan.out / "statistics.json", {"run": run_info})
    return metrics, plan.outcome(rows, counts["scored_keys"], run_info)


def describe_run(
    cfg: DictConfig,
    counts: dict[str, Any],
    skipped: int,
    wall: float,
    selection: dict[str, int],
    timings: dict[str, float],
) -> dict[str, Any]:
    """statistics.json's `run` entry: what this invocation did and how fast (`timings`:
    seconds per stage), and what the split, source, subset and slice filters dropped."""
    return {
        "model": str(cfg.model.name),
        "dataset": str(cfg.dataset.name),
        "device": resolve_device(cfg.get("device", "auto")),
        "devices": n_devices(cfg),
        "scored_rows": counts["ok"] + counts["error"],
        "failed_rows_this_run": counts["error"],
        "skipped_rows": skipped,
        "batches": counts["batches"],
        "audio_seconds": counts["audio_seconds"],
        "wall_s": wall,
        "audio_s_per_s": counts["audio_seconds"] / wall if wall > 0 else 0.0,
        "selection": selection,
        "timings": timings,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
