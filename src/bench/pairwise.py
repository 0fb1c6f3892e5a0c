"""Pairwise judging of pair rows (Music Arena, CMI-Pref): a `PairwiseJudge` with `pairwise` on (the
audio-LLM judge) states the preference itself with `compare_batch` instead of two scores.

`compare_rows` turns decoded pair rows (`bench.infer.decode_row`'s dicts) into result records:
the CMI-RewardBench fields `predicted_preference` (musicality, as upstream decides Music Arena),
`predicted_preference-musicality` and `predicted_preference-alignment` (model_a / model_b /
both; "both" when the judge's two orders disagree, counted 0.5 by the accuracy), the model's
details (e.g. `judge_answer`, the raw answers of both orders) and, for a pair that could not be
judged, the reason in `inference_error`. Per-clip score fields stay None. `score_with_pairwise`
sends a mixed batch's pair rows here and its other rows to the runner's per-clip path.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from audiobase import schemas as S
from bench.records import SideScore, make_result
from rewards.base import BatchInput, PairwiseJudge, RewardModel

PREF_FIELDS = {"musicality": S.PRED_PREF_MUSICALITY, "alignment": S.PRED_PREF_ALIGNMENT}


def wants_pairwise(model: RewardModel) -> bool:
    """Whether pair rows go to the model's `compare_batch`: it is a `PairwiseJudge` with
    `pairwise` on (its capabilities say so)."""
    return model.capabilities.pairwise


def is_pair(decoded: dict[str, Any]) -> bool:
    return "b" in decoded["sides"]


def compare_rows(
    model: PairwiseJudge,
    decoded: list[dict[str, Any]],
    max_dur: float | None,
    score_kwargs: dict[str, Any],
    model_name: str,
    extra: dict[str, Any] | None = None,
    seconds: Callable[[dict[str, Any]], float] | None = None,
) -> list[dict[str, Any]]:
    """One result record per decoded pair row; one `compare_batch` call for the decodable pairs.
    A side that failed to decode fails its row (not compared); a call that raises fails every
    pair it held. `seconds(decoded row)`: its `bench_audio_seconds` (default: the decoded
    waveforms' length at the model's `sr`)."""
    ready = [
        i
        for i, d in enumerate(decoded)
        if all(isinstance(d["sides"].get(s), BatchInput) for s in ("a", "b"))
    ]
    outcomes: dict[int, dict[str, Any]] = {}
    if ready:
        pairs = [(decoded[i]["sides"]["a"], decoded[i]["sides"]["b"]) for i in ready]
        try:
            got = list(model.compare_batch(pairs, max_dur=max_dur, **score_kwargs))
            if len(got) != len(pairs):
                raise ValueError(f"compare_batch returned {len(got)} results for {len(pairs)}")
        except Exception as e:
            got = [{"error": f"{type(e).__name__}: {e}"} for _ in pairs]
        outcomes = dict(zip(ready, got, strict=True))
    records = []
    for i, d in enumerate(decoded):
        rec = pair_record(d, outcomes.get(i), model_name)
        rec[S.AUDIO_SECONDS] = (seconds or partial(waveform_seconds, sr=model.capabilities.sr))(d)
        rec.update(extra or {})
        records.append(rec)
    return records


def waveform_seconds(decoded: dict[str, Any], sr: float) -> float:
    """Seconds of decoded audio in a row's sides (paths count 0)."""
    sides = decoded["sides"].values()
    return sum(
        len(x.audio) for x in sides if isinstance(x, BatchInput) and not isinstance(x.audio, str)
    ) / float(sr)


def pair_record(
    decoded: dict[str, Any], outcome: dict[str, Any] | None, model_name: str
) -> dict[str, Any]:
    """The result record of one pair row from its decoding and its `compare_batch` outcome
    (None: not compared because a side failed to decode)."""
    row, sides_in = decoded["row"], decoded["sides"]
    sides: dict[str, SideScore] = {}
    for side in ("a", "b"):
        inp = sides_in.get(side)
        bad = "" if isinstance(inp, BatchInput) else str(inp)
        sides[side] = {"alignment": None, "musicality": None, "valid": not bad, "error": bad}
    error = None if outcome is None else outcome.get("error")
    if error:
        files = " vs ".join(filter(None, (row.side_path("a"), row.side_path("b"))))
        for score in sides.values():
            score["valid"] = False
        sides["a"]["error"] = f"score_error: {error} [{files}]"
    rec = make_result(row, sides, decoded["notes"], model_name)
    if outcome is None:
        return rec
    clash = [k for k in outcome.get("details") or {} if k in rec]
    if clash:
        raise ValueError(
            f"{model_name}: details {clash} would overwrite fields of the result record "
            f"(row {row.index}); the model must name them differently"
        )
    rec.update(outcome.get("details") or {})  # failed pairs too: the answers say what went wrong
    if not error:  # None where the judge was not asked (no prompt to align to, dimension off)
        for dim, field in PREF_FIELDS.items():
            rec[field] = outcome.get(dim)
        rec[S.PRED_PREFERENCE] = outcome.get("musicality")  # Music Arena: musicality only
    return rec


def score_with_pairwise(
    model: PairwiseJudge,
    decoded: list[dict[str, Any]],
    score_clips: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    max_dur: float | None,
    score_kwargs: dict[str, Any],
    model_name: str,
    extra: dict[str, Any] | None = None,
    seconds: Callable[[dict[str, Any]], float] | None = None,
) -> list[dict[str, Any]]:
    """Records for a decoded batch in its order: pair rows through `compare_rows`, the other
    rows through `score_clips` (the runner's per-clip scoring)."""
    pairs = [i for i, d in enumerate(decoded) if is_pair(d)]
    singles = [i for i, d in enumerate(decoded) if not is_pair(d)]
    out: list[dict[str, Any]] = [{} for _ in decoded]
    if singles:
        for i, rec in zip(singles, score_clips([decoded[i] for i in singles]), strict=True):
            out[i] = rec
    if pairs:
        judged = compare_rows(
            model, [decoded[i] for i in pairs], max_dur, score_kwargs, model_name, extra, seconds
        )
        for i, rec in zip(pairs, judged, strict=True):
            out[i] = rec
    return out
