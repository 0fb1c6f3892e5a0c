"""The columns of a results row as the metrics and plots read them: numbers, preference labels,
the subset, Music Arena month, modality, confidence group and generating system (upstream
`evaluate_results.py`'s readings), and which columns each subset's tasks compare.

No statistics library: `bench.plots` reads rows through it too, and drawing needs no
scipy.stats (bench.metrics computes the statistics).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiobase import schemas as S
from bench.data import SUBSETS, subset_of

Row = dict[str, Any]
NO_REF_MODALITIES = ("text", "text+lyrics")
REF_MODALITIES = ("text+ref", "text+lyrics+ref")
CORR_TASKS = {  # subset -> [(task, truth column, prediction column)]
    "PAM": [
        ("musicality", S.MUSICALITY, S.PRED_MUSICALITY),
        ("alignment", S.ALIGNMENT, S.PRED_ALIGNMENT),
    ],
    "MusicEval": [("musicality", S.MUSICALITY, S.PRED_MUSICALITY)],
}
ACC_TASKS = {
    "MusicArena": [("preference", S.PREFERENCE, S.PRED_PREFERENCE)],
    "CMI-Pref": [
        ("alignment", S.PREF_ALIGNMENT, S.PRED_PREF_ALIGNMENT),
        ("musicality", S.PREF_MUSICALITY, S.PRED_PREF_MUSICALITY),
    ],
}
CONFIDENCE_COLS = {
    "alignment": S.CONFIDENCE + S.PREF_ALIGNMENT,
    "musicality": S.CONFIDENCE + S.PREF_MUSICALITY,
}


def to_num(x: Any) -> float:
    """pandas.to_numeric(errors="coerce") for one value: NaN when not a number."""
    if x is None or isinstance(x, bool):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def norm_pref(x: Any) -> str | None:
    """Upstream `_norm_pref`: model_a / model_b / both, or None (row dropped)."""
    if x is None:
        return None
    return {
        "a": "model_a",
        "b": "model_b",
        "model_a": "model_a",
        "model_b": "model_b",
        "both": "both",
        "neither": "both",
    }.get(str(x).strip().lower())


def month_of_path(path: Any) -> str:
    """The path component two levels below `MusicArena_data`, else "unknown"."""
    s = "" if path is None else str(path).strip()
    parts = Path(s).parts if s else ()
    if "MusicArena_data" in parts:
        i = parts.index("MusicArena_data")
        if i + 2 < len(parts):
            return parts[i + 2]
    return "unknown"


def month_of(row: Row) -> str:
    m = month_of_path(row.get(S.AUDIO_A))
    return m if m != "unknown" else month_of_path(row.get(S.AUDIO_B))


def subset_of_result(row: Row) -> str:
    """Upstream `_infer_benchmark_dataset`: the loader's rules, then a Music Arena month path,
    then an existing valid `benchmark_dataset`."""
    subset = subset_of(row.get(S.SOURCE, ""))
    if subset is not None:
        return subset
    if month_of(row) != "unknown":
        return "MusicArena"
    existing = str(row.get(S.SUBSET, "")).strip()
    return existing if existing in SUBSETS else "Unknown"


def modality_of(row: Row) -> str:
    """The `modality` field, else inferred from non-empty `lyrics` / `ref-audio-path`."""
    m = row.get(S.MODALITY)
    if m is not None and not (isinstance(m, float) and math.isnan(m)) and str(m).strip():
        return str(m).strip()
    lyr = bool(str(row.get(S.LYRICS, "") or "").strip())
    ref = bool(str(row.get(S.REF_AUDIO, "") or "").strip())
    return {
        (True, True): "text+lyrics+ref",
        (True, False): "text+lyrics",
        (False, True): "text+ref",
    }.get((lyr, ref), "text")


def confidence_group(v: Any) -> str | None:
    x = to_num(v)
    if math.isnan(x):
        return None
    return "<3" if x < 3 else (">3" if x > 3 else "=3")


def system_of(row: Row) -> str:
    """Generating system: a `system` field, else the clip's parent directory (PAM layout)."""
    s = row.get(S.SYSTEM)
    if s is not None and str(s).strip():
        return str(s).strip()
    p = str(row.get(S.AUDIO_A, "") or "")
    return Path(p).parent.name or "unknown"


def numeric_pairs(rows: Sequence[Row], gt: str, pred: str) -> tuple[np.ndarray, np.ndarray]:
    """Both columns as numbers, pairs with a NaN dropped (upstream `dropna`)."""
    x = np.array([to_num(r.get(gt)) for r in rows], float)
    y = np.array([to_num(r.get(pred)) for r in rows], float)
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def by_subset(rows: Sequence[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r[S.SUBSET]].append(r)
    return groups
