"""Crash-safe results files: append + flush + fsync per batch; compaction by an atomic rewrite.

The journal may hold several records for one row (a failed try, then a retry); the last one
wins. A line cut short by a kill is skipped on reading. Lines are strict JSON (no bare NaN).
`read_results` also reads upstream CMI-RewardBench's results.jsonl (rows without our key).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from audiobase.files import write_text
from bench.guard import check_free_space
from bench.records import to_json_line

log = logging.getLogger(__name__)


class ResultWriter:
    """Appends result rows to a JSONL file; each `write` is durable when it returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = None

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        if self._f is None:
            self._f = open(self.path, "a+", encoding="utf-8")
            if self._f.tell() > 0:  # a kill mid-line leaves a partial last line: end it first
                self._f.seek(self._f.tell() - 1)
                if self._f.read(1) != "\n":
                    self._f.write("\n")
        self._f.write("".join(to_json_line(r) for r in rows))
        self._f.flush()
        os.fsync(self._f.fileno())  # a kill after this loses nothing already written

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_records(path: str | Path, keyed: bool = True) -> Iterable[dict[str, Any]]:
    """Records of a results journal, skipping blank and truncated/corrupt lines; `keyed`:
    only records with our row key (`bench_row_key`), else every JSON object."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)  # also reads upstream's bare NaN
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping an unreadable line (cut by a kill?)", path, lineno)
                continue
            if isinstance(rec, dict) and (not keyed or "bench_row_key" in rec):
                yield rec


def read_latest(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """key -> last record over the journals (read in order): the row's current state."""
    latest: dict[str, dict[str, Any]] = {}
    for p in paths:
        for rec in iter_records(p):
            latest[rec["bench_row_key"]] = rec
    return latest


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a results.jsonl, ours or upstream's: records with our row key, last one per
    row, in row order; then records without it (upstream's `inference_benchmark.py` writes one
    per row) in file order."""
    ours: dict[str, dict[str, Any]] = {}
    theirs: list[dict[str, Any]] = []
    for rec in iter_records(path, keyed=False):
        if "bench_row_key" in rec:
            ours[rec["bench_row_key"]] = rec
        else:
            theirs.append(rec)
    return sorted(ours.values(), key=lambda r: r.get("bench_row_index", 0)) + theirs


def compact(
    results: str | Path,
    parts: Iterable[str | Path] = (),
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Merge `parts` into `results`: one record per row (those `keep` accepts), in file
    order; parts are removed. Refuses up front (`DiskSpaceError`, nothing changed) when the
    disk cannot hold the rewritten file next to the old one."""
    part_paths = [Path(p) for p in parts]
    results = Path(results)
    # the rewrite goes next to the old file before replacing it: about its size again
    need = sum(p.stat().st_size for p in [results, *part_paths] if p.is_file())
    check_free_space(results.parent, need, f"compacting {results}")
    latest = [r for r in read_latest([results, *part_paths]).values() if keep is None or keep(r)]
    rows = sorted(latest, key=lambda r: (r.get("bench_row_index", 0), r["bench_row_key"]))
    write_text(results, "".join(to_json_line(r) for r in rows))
    for p in part_paths:
        p.unlink(missing_ok=True)
    return rows
