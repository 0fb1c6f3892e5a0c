"""CMI-RewardBench JSONL reading: split filter, subsets from `source`, paths, duration batches.

Subset rules follow CMI-RewardBench's `_to_benchmark_dataset` exactly: "PAM" anywhere in
`source` -> PAM; `source` equal to "MusicEval"/"SongEval" -> MusicEval; "Music Arena"
anywhere -> MusicArena; equal to "cmi-arena-annotation" -> CMI-Pref; anything else is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiobase.audio import header_seconds
from audiobase.schemas import AUDIO_A, AUDIO_B, LYRICS, PROMPT, REF_AUDIO, SOURCE, SPLIT
from audiobase.weights import DEMO_CORPUS, UserError

SUBSETS = ("PAM", "MusicEval", "MusicArena", "CMI-Pref")
PAIR_SUBSETS = ("MusicArena", "CMI-Pref")
ALL = "all"


class BenchDataError(UserError, ValueError):
    """A benchmark file that cannot be read; the message names the file (and line) and why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass
class BenchRow:
    """One benchmark row: the untouched input `raw` plus what the runner needs to score it."""

    index: int  # 0-based position among the file's non-empty lines
    key: str  # stable id for resuming: index + content hash
    subset: str
    raw: dict[str, Any]
    audio_a: str | None
    audio_b: str | None
    ref_audio: str | None
    text: str = ""
    lyrics: str = ""
    durations: list[float] = field(default_factory=list)  # seconds per side, 0 if unknown

    @property
    def sides(self) -> list[str]:
        """Sides to score: "a" always (a missing path becomes a recorded error), "b" for pairs."""
        return ["a", "b"] if self.raw.get(AUDIO_B) else ["a"]

    def side_path(self, side: str) -> str | None:
        return self.audio_a if side == "a" else self.audio_b


def parse_subset(value: Any) -> list[str] | None:
    """The runner's `subset` knob -> the subsets to keep (None = all four).

    Upstream's `--subset` names (`all`, `PAM`, `MusicEval`, `MusicArena`, `CMI-Pref`), or a
    list of them (`subset=[PAM,CMI-Pref]`); `null` and `all` keep every subset."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else [str(v) for v in value]
    if ALL in names:
        if len(names) > 1:
            raise ValueError(f"subset: 'all' cannot be combined with others, got {names}")
        return None
    unknown = sorted(set(names) - set(SUBSETS))
    if unknown:
        raise ValueError(f"subset: unknown {unknown}; choose {ALL} or from {list(SUBSETS)}")
    return names


def subset_of(source: Any) -> str | None:
    """Benchmark subset of a row's `source` (None: not part of the benchmark)."""
    s = "" if source is None else str(source)
    if "PAM" in s:
        return "PAM"
    if s in {"MusicEval", "SongEval"}:
        return "MusicEval"
    if "Music Arena" in s:
        return "MusicArena"
    if s == "cmi-arena-annotation":
        return "CMI-Pref"
    return None


def resolve_path(path: Any, root: str | Path) -> str | None:
    """Absolute paths as they are, relative ones joined to the dataset root; empty -> None."""
    if path is None or not str(path).strip():
        return None
    p = str(path).strip()
    return p if os.path.isabs(p) else os.path.normpath(os.path.join(str(root), p))


def make_row_key(index: int, raw: dict[str, Any]) -> str:
    """Index plus a hash of the row's content, so an edited file never reuses stale scores."""
    blob = json.dumps(raw, sort_keys=True, ensure_ascii=False).encode()
    return f"{index}-{hashlib.sha1(blob).hexdigest()[:12]}"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file of objects; raises BenchDataError naming the line on bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise BenchDataError(
            path,
            f"benchmark file not found (set dataset.jsonl= and dataset.root=, or make the demo "
            f"corpus with `{DEMO_CORPUS}`)",
        )
    rows: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:  # -sig: a leading BOM (Windows editors) is skipped
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise BenchDataError(path, f"line {lineno}: not UTF-8 text ({e.reason})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchDataError(path, f"line {lineno}: invalid JSON ({e.msg})") from None
            except RecursionError:
                raise BenchDataError(path, f"line {lineno}: JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise BenchDataError(path, f"line {lineno}: expected a JSON object")
            rows.append(obj)
    return rows


def read_bench(
    path: str | Path,
    root: str | Path,
    *,
    split: str | None = "test",
    subsets: Sequence[str] | None = None,
    start_idx: int = 0,
    end_idx: int | None = None,
) -> list[BenchRow]:
    """Rows of `path` kept by split and subset, in file order, sliced [start_idx:end_idx].

    The slice applies after filtering, as seed 004's `--start_idx/--end_idx` do on the data list.
    """
    sel = read_selection(
        path, root, split=split, subsets=subsets, start_idx=start_idx, end_idx=end_idx
    )
    return sel.rows


@dataclass
class Selection:
    """A benchmark file read once: every benchmark row (split and source filters applied),
    the selected ones (subsets and slice too), and what each filter dropped."""

    every: list[BenchRow]
    rows: list[BenchRow]
    counts: dict[str, int]

    @property
    def keys(self) -> set[str]:
        """Row keys of every benchmark row, selected or not (compaction keeps their records)."""
        return {r.key for r in self.every}

    def todo(self, done: set[str]) -> list[BenchRow]:
        """The selected rows whose key is not in `done`."""
        return [r for r in self.rows if r.key not in done]


def read_selection(
    path: str | Path,
    root: str | Path,
    *,
    split: str | None = "test",
    subsets: Sequence[str] | None = None,
    start_idx: int = 0,
    end_idx: int | None = None,
) -> Selection:
    """Read `path` once: its benchmark rows in file order, the selection (`subsets`, then the
    slice [start_idx:end_idx], which applies after filtering as seed 004's
    `--start_idx/--end_idx` do) and what each filter dropped (`counts`: "lines",
    "dropped_split", "dropped_source" (not a benchmark subset), "dropped_subsets" (not in
    `subsets`), "dropped_slice", "selected")."""
    unknown = set(subsets or ()) - set(SUBSETS)
    if unknown:
        raise BenchDataError(path, f"unknown subsets {sorted(unknown)}; choose from {SUBSETS}")
    raws = read_jsonl(path)
    counts = dict.fromkeys(("dropped_split", "dropped_source", "dropped_subsets"), 0)
    every: list[BenchRow] = []
    for i, raw in enumerate(raws):
        if split is not None and str(raw.get(SPLIT)) != str(split):
            counts["dropped_split"] += 1  # CMI-RewardBench drops rows without a matching `split`
            continue
        subset = subset_of(raw.get(SOURCE))
        if subset is None:
            counts["dropped_source"] += 1
            continue
        every.append(
            BenchRow(
                index=i,
                key=make_row_key(i, raw),
                subset=subset,
                raw=raw,
                audio_a=resolve_path(raw.get(AUDIO_A), root),
                audio_b=resolve_path(raw.get(AUDIO_B), root),
                ref_audio=resolve_path(raw.get(REF_AUDIO), root),
                text=raw.get(PROMPT) or "",
                lyrics=raw.get(LYRICS) or "",
            )
        )
    rows = [r for r in every if not subsets or r.subset in subsets]
    counts["dropped_subsets"] = len(every) - len(rows)
    kept = rows[start_idx:end_idx]
    counts = {"lines": len(raws), **counts, "dropped_slice": len(rows) - len(kept)}
    return Selection(every, kept, counts | {"selected": len(kept)})


def probe_duration(path: str | None) -> float:
    """Seconds from the file's header, for batching (`audiobase.audio.header_seconds`); 0 when
    unknown (the worker then reports the real error). Scores do not depend on it: batches are
    exact, each clip is cropped from its decoded samples."""
    return header_seconds(path) if path else 0.0


def fill_durations(rows: list[BenchRow], threads: int = 8) -> None:
    """Set `row.durations` for every side (metadata reads, I/O bound, so threads help)."""
    jobs = [(r, s) for r in rows for s in r.sides]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        durs = list(pool.map(lambda rs: probe_duration(rs[0].side_path(rs[1])), jobs))
    for r in rows:
        r.durations = []
    for (r, _), d in zip(jobs, durs, strict=True):
        r.durations.append(d)


BATCHING = ("duration", "file", "upstream")


def make_batches(
    rows: list[BenchRow],
    batch_size: int,
    max_dur: float | None,
    *,
    batching: str = "duration",
    max_batch_seconds: float | None = None,
) -> list[list[BenchRow]]:
    """Group rows into batches; a row never splits.

    duration: longest first (similar lengths pad less; out-of-memory shows up on the first
    batch), at most `batch_size` clips per batch with both sides of a pair together, and
    `max_batch_seconds` capping the summed cropped audio. file: the same packing in file order.
    upstream: CMI-RewardBench's composition, see `make_upstream_batches`.
    """
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    if batching == "upstream":
        return make_upstream_batches(rows, batch_size)

    def cost(r: BenchRow) -> float:
        return sum(min(d, max_dur) if max_dur else d for d in (r.durations or [0.0]))

    order = sorted(rows, key=lambda r: (-cost(r), r.index)) if batching == "duration" else rows
    batches: list[list[BenchRow]] = []
    cur: list[BenchRow] = []
    n_clips, secs = 0, 0.0
    for r in order:
        k, c = len(r.sides), cost(r)
        full = n_clips + k > batch_size or (
            max_batch_seconds is not None and secs + c > max_batch_seconds
        )
        if cur and full:
            batches.append(cur)
            cur, n_clips, secs = [], 0, 0.0
        cur.append(r)
        n_clips, secs = n_clips + k, secs + c
    if cur:
        batches.append(cur)
    return batches


def make_upstream_batches(rows: list[BenchRow], batch_size: int) -> list[list[BenchRow]]:
    """`batch_size` rows per batch, per subset in file order, as `inference_benchmark.py`
    chunks them; the runner scores each batch's side A clips and side B clips as two calls,
    so every score_batch call sees the batch-mates it sees upstream."""
    batches = []
    for subset in SUBSETS:
        part = [r for r in rows if r.subset == subset]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return batches
