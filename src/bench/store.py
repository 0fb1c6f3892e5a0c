"""Crash-safe results files: append + flush + fsync per batch; compaction by an atomic rewrite.

The journal may hold several records for one row (a failed try, then a retry); the last one
wins. A line cut short by a kill is skipped on reading. Lines are strict JSON (no bare NaN).
`read_results` also reads upstream CMI-RewardBench's results.jsonl (rows without our key).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from audiobase.files import write_text
from bench.guard import RunRefused, check_free_space
from bench.records import flag_nan_scores, to_json_line

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


class ResultsFileError(RunRefused):
    """A results file line that bench.run did not write (the message names the file, the line
    and the problem). A line cut short by a kill is skipped instead, with a warning."""

    def __init__(self, path: str | Path, lineno: int, reason: str):
        self.path, self.lineno, self.reason = str(path), lineno, reason
        super().__init__(f"{path}:{lineno}: {reason}")


FINGERPRINT = re.compile(r"[0-9a-f]{1,64}")  # bench.models.fingerprint: 16 hex digits


def check_record(path: Path, lineno: int, rec: dict[str, Any]) -> None:
    """The fields the runner keys on or builds names from: `bench_row_key` a string,
    `bench_row_index` an integer, `bench_fingerprint` hex digits (it names a file,
    bench.resume.aside_path). Raises ResultsFileError otherwise."""
    key, index, fp = (
        rec["bench_row_key"],
        rec.get("bench_row_index", 0),
        rec.get("bench_fingerprint"),
    )
    if not isinstance(key, str):
        raise ResultsFileError(
            path, lineno, f"bench_row_key must be a string, got {type(key).__name__} {key!r:.80}"
        )
    if not isinstance(index, int) or isinstance(index, bool):
        raise ResultsFileError(
            path, lineno, f"bench_row_index must be an integer, got {index!r:.80}"
        )
    if fp not in (None, "") and not (isinstance(fp, str) and FINGERPRINT.fullmatch(fp)):
        raise ResultsFileError(
            path,
            lineno,
            f"bench_fingerprint must be hex digits (bench.run writes 16), got {fp!r:.80}: "
            "this line was not written by bench.run; remove it or move the file away",
        )


def iter_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) per non-blank line. A line that is not JSON (cut by a kill)
    is skipped with a warning naming it; text that is not UTF-8 or JSON nested too deeply to
    parse raises ResultsFileError."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ResultsFileError(path, lineno, f"not UTF-8 text ({e.reason})") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)  # also reads upstream's bare NaN
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping an unreadable line (cut by a kill?)", path, lineno)
            except RecursionError:
                raise ResultsFileError(path, lineno, "JSON nested too deeply") from None


def iter_records(path: str | Path, keyed: bool = True) -> Iterable[dict[str, Any]]:
    """Records of a results journal, skipping blank and truncated/corrupt lines; `keyed`:
    only records with our row key (`bench_row_key`), else every JSON object. A record with
    our key whose key fields are malformed raises ResultsFileError (`check_record`)."""
    path = Path(path)
    if not path.is_file():
        return
    for lineno, rec in iter_lines(path):
        if not isinstance(rec, dict):
            continue
        if "bench_row_key" in rec:
            check_record(path, lineno, rec)
        elif keyed:
            continue
        yield rec


def read_latest(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """key -> last record over the journals (read in order): the row's current state (a NaN
    score of a dimension the model has made an error: bench.records.flag_nan_scores)."""
    latest: dict[str, dict[str, Any]] = {}
    for p in paths:
        for rec in iter_records(p):
            latest[rec["bench_row_key"]] = rec
    flag_nan_scores(list(latest.values()))  # NaN in a dimension the model has: an error row
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
    flag_nan_scores(list(ours.values()))
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
