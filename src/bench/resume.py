"""One fingerprint per results file: scores made under another are set aside, never mixed.

A run's fingerprint (bench.models.fingerprint) covers everything that changes a score. Before
a run reads what is already done, `set_aside` moves records of any other fingerprint out of
results.jsonl into `results.<fingerprint>.jsonl` next to it (a plain rename in the usual case:
the whole file is one earlier fingerprint), and brings back a file set aside earlier under the
run's own fingerprint, so switching a setting back resumes the scores made with it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from audiobase.files import write_text
from audiobase.schemas import FINGERPRINT as FINGERPRINT_FIELD
from bench.guard import RunRefused, inside
from bench.store import FINGERPRINT, RESULTS, ResultsStore, iter_records, part_files

log = logging.getLogger(__name__)


def aside_path(out: Path, fp: str) -> Path:
    """Where scores of fingerprint `fp` are kept while another one runs. `fp` comes from a
    results file (data): anything but hex digits is refused (`RunRefused`), and so is a path
    that would resolve outside `out`."""
    if fp and not FINGERPRINT.fullmatch(fp):
        raise RunRefused(
            f"{out}: fingerprint {fp!r:.80} is not hex digits; refusing to name a file"
        )
    return inside(out, out / f"results.{fp or 'unknown'}.jsonl", f"{out}: fingerprint {fp!r:.80}")


def append_lines(path: Path, lines: list[str]) -> None:
    """Add `lines` (JSON records) after `path`'s content, in one atomic rewrite."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text(path, old + "".join(line + "\n" for line in lines))


def set_aside(out: Path | ResultsStore, fp: str) -> list[Path]:
    """Make results.jsonl (and rank parts) hold only fingerprint `fp`'s records; returns the
    files that received other fingerprints' records. Logs every move. `out`: the run's folder,
    or its `ResultsStore` (read once; its records are updated to what the files now hold)."""
    store = out if isinstance(out, ResultsStore) else ResultsStore.open(out)
    out = store.out
    results = out / RESULTS
    parts = part_files(out)
    by_fp: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in store.records:
        by_fp[str(rec.get(FINGERPRINT_FIELD) or "")].append(rec)
    others = sorted(set(by_fp) - {fp})
    moved: list[Path] = []
    if others:
        if len(by_fp) == 1 and not parts and not aside_path(out, others[0]).exists():
            moved.append(aside_path(out, others[0]))
            os.replace(results, moved[0])  # the usual case: one earlier fingerprint, renamed
        else:
            for other in others:
                moved.append(aside_path(out, other))
                append_lines(moved[-1], [dump(rec) for rec in by_fp[other]])
            write_text(results, "".join(dump(rec) + "\n" for rec in by_fp.get(fp, [])))
            for p in parts:
                p.unlink()
        store.records = by_fp.get(fp, [])
        log.warning(
            "%s: the model, its code, weights, preprocessing or batching changed (fingerprint "
            "%s); earlier scores moved to %s, scoring starts afresh in %s",
            out,
            fp,
            ", ".join(p.name for p in moved),
            RESULTS,
        )
    kept = aside_path(out, fp)
    if kept.is_file():
        back = list(iter_records(kept))
        current = results.read_text(encoding="utf-8") if results.is_file() else ""
        append_lines(kept, [line for line in current.splitlines() if line.strip()])
        os.replace(kept, results)
        store.records = back + store.records
        log.warning("%s: resuming the scores of fingerprint %s kept in %s", out, fp, kept.name)
    return moved


def dump(rec: dict[str, Any]) -> str:
    """A record as one line of a set-aside file."""
    return json.dumps(rec, ensure_ascii=False)
