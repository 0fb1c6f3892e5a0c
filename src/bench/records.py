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

from audiobase import schemas as S
from bench.data import BenchRow

SideScore = dict[str, Any]
# {"alignment", "musicality", "valid", "error", "extra"?, "details"?, "nan"?: NaN dimensions}
NONFINITE = "NonFiniteScore"  # the error kind of a NaN or infinite score (statistics, summary)
DIMENSIONS = {"alignment": S.PRED_ALIGNMENT, "musicality": S.PRED_MUSICALITY}
NAN_FIELD = S.NAN_SCORES  # the record's fields a model returned NaN for


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
    res[S.SUBSET] = row.subset
    res[S.PRED_ALIGNMENT] = pa.get("alignment")
    res[S.PRED_MUSICALITY] = pa.get("musicality")
    if "b" in sides:
        res[S.PRED_ALIGNMENT + S.SIDE_B] = pb.get("alignment")
        res[S.PRED_MUSICALITY + S.SIDE_B] = pb.get("musicality")
        mus = pair_pref_label(pa.get("musicality"), pb.get("musicality"))
        # Music Arena is decided on musicality only (upstream 326f8ac)
        res[S.PRED_PREFERENCE] = mus
        res[S.PRED_PREF_MUSICALITY] = mus
        res[S.PRED_PREF_ALIGNMENT] = pair_pref_label(pa.get("alignment"), pb.get("alignment"))
    for n in extra_names:  # a failed side: None, as its other scores
        res[f"{S.PREDICTED}{n}"] = pa.get("extra", {}).get(n)
        if "b" in sides:
            res[f"{S.PREDICTED}{n}{S.SIDE_B}"] = pb.get("extra", {}).get(n)
    nan = [DIMENSIONS[d] for d in pa.get("nan") or []]
    nan += [DIMENSIONS[d] + "_b" for d in pb.get("nan") or []] if "b" in sides else []
    if nan:
        res[NAN_FIELD] = nan
    res[S.VALID_A] = bool(pa.get("valid", False))
    if "b" in sides:
        res[S.VALID_B] = bool(pb.get("valid", False))
    errs = [f"{s}: {sc['error']}" for s, sc in sorted(sides.items()) if sc.get("error")]
    res[S.ERROR] = " | ".join(notes + errs)
    res[S.STATUS] = "ok" if all(sc.get("valid") for sc in sides.values()) else "error"
    res[S.ROW_INDEX] = row.index
    res[S.ROW_KEY] = row.key
    res[S.MODEL] = model_name
    add_details(res, sides, model_name)
    return res


def nan_fields(rec: dict[str, Any]) -> list[str]:
    """The record's `bench_nan_scores` (field names); anything else read from a file: []."""
    value = rec.get(NAN_FIELD)
    return [f for f in value if isinstance(f, str)] if isinstance(value, list) else []


def flag_nan_scores(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Turn into errors the NaN scores of dimensions the model has: a record listing a NaN
    field (`bench_nan_scores`) whose dimension is finite in another ok record (any side) is
    an error row, its side's scores null, `NonFiniteScore` in its `inference_error`, so it is
    counted as a failure and retried on resume. A dimension NaN in every record is one the
    model lacks (the reward-model contract), and stays as it is. Changes `records` in place
    and returns it."""
    dim_of = {f: k for k, d in DIMENSIONS.items() for f in (d, f"{d}_b")}
    has: set[str] = set()
    for r in records:
        if r.get("status") != "ok":
            continue
        nan = set(nan_fields(r))
        for dim, field in DIMENSIONS.items():
            if any(r.get(f) is not None and f not in nan for f in (field, f"{field}_b")):
                has.add(dim)
    for r in records:
        bad = [f for f in nan_fields(r) if dim_of.get(f) in has]
        if r.get("status") != "ok" or not bad:
            continue
        errs = [r.get("inference_error") or ""]
        for side, path_key in (("a", "audio-path"), ("b", "audio2")):
            mine = [f for f in bad if f.endswith("_b") == (side == "b")]
            if not mine:
                continue
            r[f"inference_valid_{side}"] = False
            suffix = "_b" if side == "b" else ""
            for field in DIMENSIONS.values():
                r[field + suffix] = None
            dims = ", ".join(f"{k}=nan" for k, d in DIMENSIONS.items() if d + suffix in mine)
            errs.append(
                f"{side}: score_error: {NONFINITE}: {dims} (finite for other clips) "
                f"[{r.get(path_key)}]"
            )
        r["inference_error"] = " | ".join(e for e in errs if e)
        r["status"] = "error"
        if "predicted_preference" in r:
            mus = pair_pref_label(r.get("predicted_musicality"), r.get("predicted_musicality_b"))
            r["predicted_preference"] = r["predicted_preference-musicality"] = mus
            r["predicted_preference-alignment"] = pair_pref_label(
                r.get("predicted_text-music alignment"), r.get("predicted_text-music alignment_b")
            )
    return records
