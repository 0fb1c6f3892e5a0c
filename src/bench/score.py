"""The scoring stage: rows to score -> duration batches -> result records appended per batch.

One process (`score_local`: DataLoader workers decode ahead, the model scores, each batch is
fsynced to results.jsonl), or `trainer.devices > 1` ranks (bench.sharded, one part file each).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from tqdm import tqdm

from audiobase.preprocess import Preprocess
from bench.data import BenchRow, fill_durations, make_batches
from bench.infer import autocast_for, make_loader, score_batch_rows
from bench.models import (
    decode_workers,
    model_grad,
    model_inputs,
    n_devices,
    pick_threads,
    resolve_device,
    score_streams,
    torch_threads,
)
from bench.store import ResultsStore, ResultWriter

log = logging.getLogger(__name__)


@dataclass
class Prefetch:
    """Batches whose decoding started before the model was built (workers run meanwhile);
    valid only for the fingerprint and the rows it was planned for."""

    fp: str
    keys: list[str]
    batches: list[list[BenchRow]]
    decoded: Iterator[list[dict[str, Any]]]

    def discard(self) -> None:
        """Drop the started decoding (its workers exit with their iterator)."""
        self.decoded = iter(())


@dataclass
class ScoreJob:
    """What the scoring stage needs, decided once per run: the settings, the model (None: each
    rank of a sharded run builds its own), its score kwargs, the input it gets, the resume
    fingerprint and the results folder read once (`ResultsStore`, which gets what is written)."""

    cfg: DictConfig
    model: Any
    score_kwargs: dict[str, Any]
    pre: Preprocess
    fp: str
    store: ResultsStore


def open_batches(
    cfg: DictConfig, batches: list[list[BenchRow]], pre: Preprocess
) -> Iterator[list[dict[str, Any]]]:
    """Start decoding `batches` in `num_workers` processes (they begin at once); yields each
    decoded batch. A model taking paths (`model.inputs=paths`) gets them undecoded."""
    loader = make_loader(
        batches,
        None if model_inputs(cfg) == "paths" else pre,
        decode_workers(cfg),
        ahead_mb=cfg.get("decode_ahead_mb"),
        nice=int(cfg.get("decode_nice", 0) or 0),
    )
    return iter(loader)


def prefetch(cfg: DictConfig, rows: list[BenchRow], pre: Preprocess, fp: str) -> Prefetch | None:
    """Batch `rows` and start decoding them now, while the model is still being built."""
    if not rows or n_devices(cfg) > 1:
        return None
    batches = batch_rows(cfg, rows, pre)
    return Prefetch(fp, [r.key for r in rows], batches, open_batches(cfg, batches, pre))


def new_counts() -> dict[str, Any]:
    """What a scoring pass reports: rows ok / failed, audio seconds, the keys it wrote."""
    return {"ok": 0, "error": 0, "audio_seconds": 0.0, "scored_keys": [], "batches": 0}


def batch_rows(cfg: DictConfig, rows: list[BenchRow], pre: Preprocess) -> list[list[BenchRow]]:
    """`batch_size`-clip batches, packed by the duration the model will see."""
    fill_durations(rows)
    return make_batches(
        rows,
        int(cfg.batch_size),
        pre.max_dur,
        batching=str(cfg.get("batching", "duration")),
        max_batch_seconds=cfg.get("max_batch_seconds"),
    )


def score_local(
    job: ScoreJob,
    batches: list[list[BenchRow]],
    writer: ResultWriter,
    started: Iterator[list[dict[str, Any]]] | None = None,
    streams: int = 1,
) -> dict[str, Any]:
    """One process: workers decode ahead (`started`: decoding already under way), the model
    scores `streams` batches at once (threads; `bench.models.score_streams`), and each batch
    is appended durably in batch order."""
    cfg, model, pre = job.cfg, job.model, job.pre
    device = resolve_device(cfg.get("device", "auto"))
    loader = started if started is not None else open_batches(cfg, batches, pre)
    grad = model_grad(cfg)
    counts = new_counts() | {"batches": len(batches)}
    t0 = time.perf_counter()
    bar = tqdm(
        total=sum(len(b) for b in batches),
        unit="row",
        desc=f"{cfg.model.name}/{cfg.dataset.name}",
        dynamic_ncols=True,
    )

    def score(decoded: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return score_batch_rows(
            model,
            decoded,
            pre.max_dur,
            job.score_kwargs,
            str(cfg.model.name),
            autocast=lambda: autocast_for(device, bool(cfg.get("bf16", True))),
            extra={"bench_fingerprint": job.fp},
            per_side=cfg.get("batching") == "upstream",
            grad=grad,
        )

    def record(rows: list[dict[str, Any]]) -> None:
        writer.write(rows)
        for r in rows:
            counts[r["status"]] += 1
            counts["scored_keys"].append(r["bench_row_key"])
            counts["audio_seconds"] += r["bench_audio_seconds"]
        rate = counts["audio_seconds"] / max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix(ok=counts["ok"], err=counts["error"], audio_s_per_s=f"{rate:.1f}")
        bar.update(len(rows))

    with bar:
        if streams <= 1:
            for decoded in loader:
                record(score(decoded))
            return counts
        with ThreadPoolExecutor(streams, thread_name_prefix="score") as pool:
            pending: deque[Future[list[dict[str, Any]]]] = deque()
            for decoded in loader:
                pending.append(pool.submit(score, decoded))
                # one batch queued per stream beyond those running: a stream that finishes
                # before the oldest batch starts the next at once instead of waiting on it
                if len(pending) >= 2 * streams:  # the oldest first: results stay in batch order
                    record(pending.popleft().result())
            while pending:
                record(pending.popleft().result())
    return counts


def score_rows(
    job: ScoreJob, rows: list[BenchRow], early: Prefetch | None = None
) -> dict[str, Any]:
    """Score `rows` and append their records to the job's results folder; returns the
    pass's counts.

    `job.model=None` with `trainer.devices > 1`: every rank builds its own from `cfg.model`.
    Under plain ddp every rank runs this; the counts of a non-zero rank say
    `is_global_zero: False` and that rank stops after scoring. `early`: decoding started
    before the model was built, used when it was planned for this fingerprint and these rows.
    """
    cfg = job.cfg
    decoded = None
    if early is not None and early.fp == job.fp and early.keys == [r.key for r in rows]:
        batches, decoded = early.batches, early.decoded
    else:
        if early is not None:
            early.discard()
            log.debug("the built model differs from what its config said; decoding restarts")
        batches = batch_rows(cfg, rows, job.pre)
    if not batches:
        return new_counts()
    if n_devices(cfg) > 1:
        # here on purpose: Lightning takes seconds to import and only sharded runs need it
        from bench.sharded import score_sharded

        out = job.store.out
        counts = score_sharded(cfg, job.model, job.score_kwargs, batches, out, job.fp)
        return counts | {"batches": len(batches)}
    streams = score_streams(cfg, job.model)
    threads = pick_threads(cfg, streams=streams)
    with job.store.writer() as writer, torch_threads(threads):
        try:
            return score_local(job, batches, writer, decoded, streams)
        finally:
            job.store.add(writer.written)
