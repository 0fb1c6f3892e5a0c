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
from audiobase.schemas import FINGERPRINT as FINGERPRINT_FIELD
from audiobase.schemas import ROW_INDEX, ROW_KEY, STATUS
from bench.guard import RunRefused, check_free_space
from bench.records import flag_nan_scores, to_json_line

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"


class ResultWriter:
    """Appends result rows to a JSONL file; each `write` is durable when it returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = None
        self.written: list[dict[str, Any]] = []  # each record as reading the file gives it

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        if self._f is None:
            self._f = open(self.path, "a+", encoding="utf-8")
            if self._f.tell() > 0:  # a kill mid-line leaves a partial last line: end it first
                self._f.seek(self._f.tell() - 1)
                if self._f.read(1) != "\n":
                    self._f.write("\n")
        lines = [to_json_line(r) for r in rows]
        self._f.write("".join(lines))
        self._f.flush()
        os.fsync(self._f.fileno())  # a kill after this loses nothing already written
        self.written += [json.loads(line) for line in lines]

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
    rows = write_compacted(results, read_latest([results, *part_paths]).values(), keep)
    for p in part_paths:
        p.unlink(missing_ok=True)
    return rows


class ResultsStore:
    """A run's results folder read once: the records of results.jsonl and any rank part files
    (`records`, file order), kept in memory while the run sets other fingerprints aside
    (bench.resume.set_aside), looks up what is done, appends (`ResultWriter`) and compacts.
    Only the part files a sharded run writes are read again, at compaction."""

    def __init__(self, out: Path, records: list[dict[str, Any]]):
        self.out = out
        self.records = records

    @classmethod
    def open(cls, out: str | Path) -> ResultsStore:
        out = Path(out)
        return cls(out, [rec for p in [out / RESULTS, *part_files(out)] for rec in iter_records(p)])

    @property
    def results(self) -> Path:
        return self.out / RESULTS

    def latest(self) -> dict[str, dict[str, Any]]:
        """`read_latest` of the files as they are now: key -> last record (shallow copies, so
        flagging NaN scores never changes `records`)."""
        latest = {rec[ROW_KEY]: dict(rec) for rec in self.records}
        flag_nan_scores(list(latest.values()))
        return latest

    def done(self, fp: str) -> set[str]:
        """Keys of rows scored ok under fingerprint `fp`."""
        return {
            k
            for k, r in self.latest().items()
            if r.get(STATUS) == "ok" and r.get(FINGERPRINT_FIELD) == fp
        }

    def writer(self) -> ResultWriter:
        """An appender to results.jsonl; `add` its records once it is closed."""
        return ResultWriter(self.results)

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        """Records appended to results.jsonl by this process (ResultWriter.written)."""
        self.records += list(records)

    def compact(self, keep: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        """`compact` without reading results.jsonl again: one record per row (those `keep`
        accepts) in row order; rank part files (a sharded run) are merged in and removed."""
        parts = part_files(self.out)
        need = sum(p.stat().st_size for p in [self.results, *parts] if p.is_file())
        check_free_space(self.out, need, f"compacting {self.results}")
        self.records += [rec for p in parts for rec in iter_records(p)]
        rows = write_compacted(self.results, self.latest().values(), keep)
        for p in parts:
            p.unlink(missing_ok=True)
        self.records = list(rows)
        return rows


def part_files(out: Path) -> list[Path]:
    """Per-rank journals left by a sharded run (merged into results.jsonl at the end)."""
    return sorted(out.glob("results.rank*.jsonl"))


def write_compacted(
    results: Path,
    latest: Iterable[dict[str, Any]],
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Rewrite `results` atomically with the `latest` records `keep` accepts, in row order."""
    kept = [r for r in latest if keep is None or keep(r)]
    rows = sorted(kept, key=lambda r: (r.get(ROW_INDEX, 0), r[ROW_KEY]))
    write_text(results, "".join(to_json_line(r) for r in rows))
    return rows
