"""Result records: one CMI-RewardBench row plus its predictions, as results.jsonl stores them.

Every pair record carries all the prediction keys upstream's `evaluate_results.py` reads
(`predicted_preference`, `predicted_preference-musicality`, `predicted_preference-alignment`,
the `_b` scores), null when undecidable (a model without that dimension, a failed side):
upstream's evaluator drops a null label from the accuracy, while a key missing from every row
crashes it (KeyError). Records hold no bare NaN/Infinity (`to_json_line`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from bench.data import BenchRow

SideScore = dict[str, Any]  # {"alignment", "musicality", "valid", "error", "extra"?, "details"?}


def pair_pref_label(a: float | None, b: float | None) -> str | None:
    """CMI-RewardBench's `_pair_pref_label`: model_a if a > b, else model_b (ties -> model_b);
    None when a score is missing or not a number."""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return None
    return "model_a" if a > b else "model_b"


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats as None and numpy scalars/arrays as Python values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json_line(rec: dict[str, Any]) -> str:
    """One results.jsonl line: strict JSON (NaN/Infinity as null, other objects as text)."""
    return json.dumps(json_safe(rec), ensure_ascii=False, allow_nan=False, default=str) + "\n"


def add_details(res: dict[str, Any], sides: dict[str, SideScore], model_name: str) -> None:
    """A model's per-clip `details` as `<key>` (side A) and `<key>_b` (side B); a side
    without a key gets None. A key that would overwrite a field of the record is an error."""
    keys: list[str] = []
    for s in ("a", "b"):
        keys += [k for k in sides.get(s, {}).get("details") or {} if k not in keys]
    clash = [k for k in keys if k in res or ("b" in sides and f"{k}_b" in res)]
    if clash:
        raise ValueError(
            f"{model_name}: details {clash} would overwrite fields of the result record "
            f"(row {res.get('bench_row_index')}); the model must name them differently"
        )
    for k in keys:
        res[k] = (sides.get("a", {}).get("details") or {}).get(k)
        if "b" in sides:
            res[f"{k}_b"] = (sides["b"].get("details") or {}).get(k)


def make_result(
    row: BenchRow,
    sides: dict[str, SideScore],
    notes: list[str],
    model_name: str,
    extra_names: list[str] | tuple[str, ...] = (),
) -> dict:
    """Input row + predicted_* fields (CMI-RewardBench names, then `predicted_<name>` for the
    model's `extra_names` columns) + the model's details + validity, error and status."""
    pa = sides.get("a", {})
    pb = sides.get("b", {})
    res = dict(row.raw)
    res["benchmark_dataset"] = row.subset
    res["predicted_text-music alignment"] = pa.get("alignment")
    res["predicted_musicality"] = pa.get("musicality")
    if "b" in sides:
        res["predicted_text-music alignment_b"] = pb.get("alignment")
        res["predicted_musicality_b"] = pb.get("musicality")
        mus = pair_pref_label(pa.get("musicality"), pb.get("musicality"))
        # Music Arena is decided on musicality only (upstream 326f8ac)
        res["predicted_preference"] = mus
        res["predicted_preference-musicality"] = mus
        res["predicted_preference-alignment"] = pair_pref_label(
            pa.get("alignment"), pb.get("alignment")
        )
    for n in extra_names:  # a failed side: None, as its other scores
        res[f"predicted_{n}"] = pa.get("extra", {}).get(n)
        if "b" in sides:
            res[f"predicted_{n}_b"] = pb.get("extra", {}).get(n)
    res["inference_valid_a"] = bool(pa.get("valid", False))
    if "b" in sides:
        res["inference_valid_b"] = bool(pb.get("valid", False))
    errs = [f"{s}: {sc['error']}" for s, sc in sorted(sides.items()) if sc.get("error")]
    res["inference_error"] = " | ".join(notes + errs)
    res["status"] = "ok" if all(sc.get("valid") for sc in sides.values()) else "error"
    res["bench_row_index"] = row.index
    res["bench_row_key"] = row.key
    res["bench_model"] = model_name
    add_details(res, sides, model_name)
    return res
