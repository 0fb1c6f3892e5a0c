"""Result records: one CMI-RewardBench row plus its predictions, as results.jsonl stores them."""

from __future__ import annotations

from typing import Any

from bench.data import BenchRow

SideScore = dict[str, Any]  # {"alignment", "musicality", "valid", "error", "extra"?}


def pair_pref_label(a: float | None, b: float | None) -> str | None:
    """CMI-RewardBench's `_pair_pref_label`: model_a if a > b, else model_b (ties -> model_b)."""
    if a is None or b is None:
        return None
    return "model_a" if a > b else "model_b"


def make_result(
    row: BenchRow,
    sides: dict[str, SideScore],
    notes: list[str],
    model_name: str,
    extra_names: list[str] | tuple[str, ...] = (),
) -> dict:
    """Input row + predicted_* fields (CMI-RewardBench names, then `predicted_<name>` for the
    model's `extra_names` columns) + validity, error and status."""
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
        ali = pair_pref_label(pa.get("alignment"), pb.get("alignment"))
        if mus is not None:  # Music Arena is decided on musicality only (upstream 326f8ac)
            res["predicted_preference"] = mus
            res["predicted_preference-musicality"] = mus
        if ali is not None:
            res["predicted_preference-alignment"] = ali
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
    return res
