"""CPU scoring streams (`score_streams`): thread-safe models score several batches at once,
results stay in batch order and equal one thread's bit for bit; decoding workers and plot
children run below the runner; the decode-ahead budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from helpers.bench import SR, ConcurrentStats, make_cfg, make_toy_bench
from omegaconf import OmegaConf

from audiobase.preprocess import Preprocess
from bench.baselines import SignalStatsReward
from bench.data import BenchRow
from bench.eval_process import NICE, EvalProcess
from bench.infer import prefetch_depth
from bench.models import (
    MAX_DECODE_WORKERS,
    MAX_STREAMS,
    decode_workers,
    pick_threads,
    score_streams,
)
from bench.run import run
from rewards.cmi_rm.tiny import build_tiny_cmi_rm

SRC = str(Path(__file__).parents[1] / "src")


def predictions(out: Path) -> list[tuple[str, dict]]:
    """(row key, predicted_* fields) per results.jsonl line, in file order."""
    rows = [json.loads(line) for line in next(out.rglob("results.jsonl")).open()]
    return [
        (r["bench_row_key"], {k: v for k, v in r.items() if k.startswith("predicted")})
        for r in rows
    ]


@pytest.fixture
def bench_root(tmp_path):
    make_toy_bench(tmp_path / "data", corrupt=False, missing=False)
    return tmp_path / "data"


def test_streams_overlap_batches_and_keep_batch_order(bench_root, tmp_path):
    one = ConcurrentStats(sr=SR)
    run(make_cfg(bench_root, tmp_path / "one", score_streams=1, device="cpu"), model=one)
    two = ConcurrentStats(sr=SR)
    run(make_cfg(bench_root, tmp_path / "two", score_streams=2, device="cpu"), model=two)
    assert one.most == 1 and two.most == 2
    assert predictions(tmp_path / "two") == predictions(tmp_path / "one")


class FirstBatchWaits(SignalStatsReward):
    """The baseline whose first batch waits until the third batch has started (or a timeout):
    the third can start only if a stream that finished the second did not wait on the first."""

    thread_safe = True

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls, self.lock, self.third = 0, threading.Lock(), threading.Event()
        self.third_started_first = None

    def score_batch(self, inputs, batch_size, max_dur, **kw):
        with self.lock:
            self.calls += 1
            call = self.calls
        if call == 3:
            self.third.set()
        if call == 1:
            self.third_started_first = self.third.wait(timeout=10)
        return super().score_batch(inputs, batch_size, max_dur, **kw)


def test_a_free_stream_starts_the_next_batch_while_the_oldest_still_runs(bench_root, tmp_path):
    model = FirstBatchWaits(sr=SR)
    cfg = make_cfg(bench_root, tmp_path / "out", score_streams=2, device="cpu", batch_size=2)
    run(cfg, model=model)
    assert model.calls >= 3 and model.third_started_first is True
    one = ConcurrentStats(sr=SR)
    run(
        make_cfg(bench_root, tmp_path / "one", score_streams=1, device="cpu", batch_size=2),
        model=one,
    )
    assert predictions(tmp_path / "out") == predictions(tmp_path / "one")  # still in batch order


def test_model_not_declaring_thread_safe_scores_one_batch_at_a_time(bench_root, tmp_path):
    model = ConcurrentStats(thread_safe=False, sr=SR)
    run(make_cfg(bench_root, tmp_path / "out", score_streams=4, device="cpu"), model=model)
    assert model.most == 1


def test_stream_and_thread_counts(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    safe, unsafe = ConcurrentStats(sr=SR), ConcurrentStats(thread_safe=False, sr=SR)
    cfg = OmegaConf.create({"device": "cpu", "score_streams": "auto", "torch_threads": "auto"})
    assert score_streams(cfg, safe) == MAX_STREAMS and score_streams(cfg, unsafe) == 1
    assert score_streams(cfg, safe, processes=4) == 4
    assert pick_threads(cfg, streams=8) == 2 and pick_threads(cfg, streams=1) == 16
    assert score_streams(OmegaConf.merge(cfg, {"score_streams": 3}), safe) == 3
    assert score_streams(OmegaConf.merge(cfg, {"device": "cuda"}), safe) == 1
    assert pick_threads(OmegaConf.merge(cfg, {"device": "cuda"})) is None


@pytest.mark.parametrize(
    ("cores", "processes", "want"),
    [(2, 1, 1), (1, 1, 1), (4, 1, 3), (64, 1, MAX_DECODE_WORKERS), (16, 4, 3), (4, 4, 1)],
)
def test_auto_decoding_workers_leave_a_core_to_each_model(monkeypatch, cores, processes, want):
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    auto = OmegaConf.create({"num_workers": "auto"})
    assert decode_workers(auto, processes) == want
    assert decode_workers(OmegaConf.create({"num_workers": 0}), processes) == 0  # as set
    assert decode_workers(OmegaConf.create({"num_workers": 5}), processes) == 5


def test_cmi_rm_streams_equal_one_thread_bit_for_bit(bench_root, tmp_path):
    """Two streams of one intra-op thread each give exactly one thread's scores."""
    ckpt = build_tiny_cmi_rm(tmp_path / "cmi_rm_tiny")
    model = {"name": "cmi", "_target_": "rewards.cmi_rm.CMIRewardModel", "checkpoint": str(ckpt)}
    model["sr"] = 24_000  # make_cfg's baseline runs at 16 kHz
    base = {"model": model, "device": "cpu", "max_dur": 3.0}
    old = torch.get_num_threads()
    run(make_cfg(bench_root, tmp_path / "a", score_streams=1, torch_threads=1, **base))
    run(make_cfg(bench_root, tmp_path / "b", score_streams=2, torch_threads="auto", **base))
    assert torch.get_num_threads() == old  # the runner restores the process's setting
    a, b = predictions(tmp_path / "a"), predictions(tmp_path / "b")
    assert a == b and any(v for _, p in a for v in p.values())


def row(durations: list[float], ref: bool = False) -> BenchRow:
    pair = len(durations) == 2
    raw = {"audio2": "b.wav"} if pair else {}
    r = BenchRow(
        0, "k", "CMI-Pref", raw, "a.wav", "b.wav" if pair else None, "r.wav" if ref else None
    )
    r.durations = durations
    return r


def test_decode_ahead_is_bounded_by_the_largest_batch():
    pre = Preprocess(sr=1000, max_dur=10.0)
    batches = [[row([4.0, 4.0])], [row([30.0, 2.0], ref=True)], [row([1.0])]]
    # largest batch: (10 + 2) s + a reference as long as its longest side (10 s) = 22 s, 88 kB
    assert prefetch_depth(batches, pre, 1, ahead_mb=88_000 * 3 / 2**20) == 3
    assert prefetch_depth(batches, pre, 2, ahead_mb=88_000 * 3 / 2**20) == 2  # at least 2
    assert prefetch_depth(batches * 20, pre, 1, ahead_mb=1.0) == 11  # 1 MiB // 88 kB
    assert prefetch_depth(batches, pre, 1, ahead_mb=1024) == 3  # never beyond the batches
    assert prefetch_depth(batches, pre, 2, ahead_mb=None) == 2  # DataLoader's default


def test_decoding_workers_and_the_evaluation_child_run_below_the_runner():
    code = (
        "import os; from bench.infer import worker_start; before = os.nice(0); "
        "worker_start(0, nice=3); print(os.nice(0) - before)"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) == 3
    evaluator = EvalProcess()
    try:
        assert evaluator.proc is not None
        child = evaluator.proc.pid
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        for _ in range(200):  # the child lowers itself once Python has started
            if os.getpriority(os.PRIO_PROCESS, child) > mine:
                break
            subprocess.run(["sleep", "0.05"])
        assert os.getpriority(os.PRIO_PROCESS, child) == min(19, mine + NICE)
    finally:
        evaluator.close()
