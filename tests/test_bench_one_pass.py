"""A run reads its dataset file and its results file once each (bench.run's one pass)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers.bench import make_cfg, make_toy_bench

from bench.run import run

READS: list[tuple[str, str]] | None = None  # (path, mode) of every open while a test listens


def listen(event: str, args: tuple) -> None:
    if READS is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        mode = args[1] if isinstance(args[1], str) else "r"  # os.open: flags, None mode
        if isinstance(args[1], str) or not (args[2] & (os.O_WRONLY | os.O_RDWR)):
            READS.append((os.path.realpath(os.fsdecode(args[0])), mode))


sys.addaudithook(listen)  # hooks cannot be removed: it records only while READS is a list


def reads_during(fn) -> Counter:
    """How many times each file was opened for reading (not writing or appending) by `fn()`."""
    global READS
    READS = []
    try:
        fn()
        return Counter(p for p, mode in READS if not set(mode) & set("wax+"))
    finally:
        READS = None


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toybench")
    make_toy_bench(root)
    return root


def test_a_run_reads_the_dataset_once(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, num_workers=0, plots=False)
    reads = reads_during(lambda: run(cfg))
    assert reads[os.path.realpath(cfg.dataset.jsonl)] == 1


def test_a_resumed_run_reads_the_results_once(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, num_workers=0, plots=False, end_idx=10)
    run(cfg)  # leaves results to resume from
    results = Path(tmp_path) / "signal_stats" / "toy" / "results.jsonl"
    assert results.stat().st_size > 0
    cfg.end_idx = None
    reads = reads_during(lambda: run(cfg))
    assert reads[os.path.realpath(results)] == 1
    assert reads[os.path.realpath(cfg.dataset.jsonl)] == 1


def test_a_changed_fingerprint_reads_the_results_once(toy, tmp_path):
    cfg = make_cfg(toy, tmp_path, num_workers=0, plots=False)
    run(cfg)
    cfg.max_dur = 3.0  # another input: the earlier scores are set aside, not read again
    results = Path(tmp_path) / "signal_stats" / "toy" / "results.jsonl"
    reads = reads_during(lambda: run(cfg))
    assert reads[os.path.realpath(results)] == 1
    assert len(list(results.parent.glob("results.*.jsonl"))) == 1  # the set-aside file
