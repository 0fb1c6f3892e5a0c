"""bench.pairwise: which models judge pairs themselves, and the result record of a judged,
failed or undecodable pair row (tiny WAVs, a model object whose compare_batch answers what
each test gives it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiobase.preprocess import Preprocess
from bench.data import read_bench
from bench.infer import decode_row
from bench.pairwise import compare_rows, pair_record, score_with_pairwise, wants_pairwise
from rewards.base import PairwiseJudge, RewardModel
from rewards.custom import adapt

SR = 1000


class Judge(PairwiseJudge):
    """A pairwise model answering `outcomes` (or raising `fail`); records the calls."""

    sr = SR

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        return np.zeros((len(inputs), 2))

    def __init__(self, outcomes: list[dict[str, Any]] | None = None, fail: str = "") -> None:
        self.outcomes, self.fail, self.calls = outcomes or [], fail, []

    def compare_batch(self, pairs, max_dur=None, **kwargs):
        self.calls.append((len(pairs), max_dur, kwargs))
        if self.fail:
            raise RuntimeError(self.fail)
        return self.outcomes


def rows(root: Path, n_pairs: int = 1, missing: bool = False, single: bool = False) -> list[dict]:
    """Decoded pair rows of 0.1 s and 0.2 s clips (+ one with a missing clip, + a PAM row)."""
    sf.write(root / "a.wav", np.full(100, 0.1, dtype=np.float32), SR)
    sf.write(root / "b.wav", np.full(200, 0.1, dtype=np.float32), SR)
    pair = {"source": "cmi-arena-annotation", "split": "test", "audio-path": "a.wav"}
    pair |= {"audio2": "b.wav", "prompt": "p", "preference-musicality": "model_a"}
    out = [pair] * n_pairs + ([{**pair, "audio2": "missing.wav"}] if missing else [])
    out += [{"source": "PAM (music)", "split": "test", "audio-path": "a.wav"}] if single else []
    (root / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
    pre = Preprocess(sr=SR)
    return [decode_row(r, pre) for r in read_bench(root / "bench.jsonl", root)]


OK = {"musicality": "model_b", "alignment": "model_a", "details": {"judge_answer": "x"}}


def test_wants_pairwise_is_a_pairwise_judge_with_pairwise_on():
    assert wants_pairwise(Judge())

    class Off(Judge):
        pairwise = False

    class Lookalike(RewardModel):  # not a PairwiseJudge: its compare_batch is never looked for
        pairwise = True
        sr = SR

        def score_batch(self, inputs, batch_size, max_dur, **kwargs):
            return np.zeros((len(inputs), 2))

        def compare_batch(self, pairs, **kwargs):
            return []

    class DuckJudge:  # a user's plain class, adapted once at load
        pairwise, sr = True, SR

        def score_batch(self, inputs, batch_size, max_dur, **kwargs):
            return np.zeros((len(inputs), 2))

        def compare_batch(self, pairs, max_dur=None, **kwargs):
            return [OK for _ in pairs]

    assert not wants_pairwise(Off()) and not wants_pairwise(Lookalike())
    duck = adapt(DuckJudge(), "user:DuckJudge")
    assert isinstance(duck, PairwiseJudge) and wants_pairwise(duck)
    assert duck.compare_batch([(1, 2)]) == [OK]
    plain = adapt(Lookalike(), "user:Lookalike")
    assert not isinstance(plain, PairwiseJudge) and not wants_pairwise(plain)


def test_judged_pair_record_carries_both_preferences_and_details(tmp_path):
    (rec,) = compare_rows(Judge([OK]), rows(tmp_path), 5.0, {"seed": 1}, "j", {"fp": "f"})
    assert rec["predicted_preference"] == rec["predicted_preference-musicality"] == "model_b"
    assert rec["predicted_preference-alignment"] == "model_a"
    assert rec["judge_answer"] == "x" and rec["fp"] == "f" and rec["bench_model"] == "j"
    assert rec["status"] == "ok" and rec["inference_error"] == ""
    assert rec["inference_valid_a"] is True and rec["inference_valid_b"] is True
    assert rec["bench_audio_seconds"] == pytest.approx(0.3)


def test_compare_batch_gets_max_dur_and_the_score_kwargs_once(tmp_path):
    judge = Judge([OK, OK])
    compare_rows(judge, rows(tmp_path, n_pairs=2), 5.0, {"seed": 1}, "j")
    assert judge.calls == [(2, 5.0, {"seed": 1})]


def test_a_dimension_not_asked_is_none(tmp_path):
    (rec,) = compare_rows(Judge([{"musicality": "both"}]), rows(tmp_path), None, {}, "j")
    assert rec["predicted_preference-musicality"] == "both"
    assert rec["predicted_preference-alignment"] is None


def test_undecodable_side_fails_its_row_without_asking_the_model(tmp_path):
    judge = Judge([OK])
    ok, bad = compare_rows(judge, rows(tmp_path, missing=True), None, {}, "j")
    assert judge.calls[0][0] == 1 and ok["status"] == "ok"
    assert bad["status"] == "error" and bad["inference_valid_a"] is True
    assert bad["inference_valid_b"] is False and "missing.wav" in bad["inference_error"]
    assert bad["predicted_preference"] is None and "judge_answer" not in bad


def test_no_decodable_pair_means_no_call(tmp_path):
    judge = Judge()
    (bad,) = compare_rows(judge, rows(tmp_path, n_pairs=0, missing=True), None, {}, "j")
    assert judge.calls == [] and bad["status"] == "error"


def test_a_failed_call_fails_every_pair_naming_both_files(tmp_path):
    recs = compare_rows(Judge(fail="judge down"), rows(tmp_path, n_pairs=2), None, {}, "j")
    for rec in recs:
        assert rec["status"] == "error" and rec["predicted_preference"] is None
        assert rec["inference_valid_a"] is False and rec["inference_valid_b"] is False
        assert "a: score_error: RuntimeError: judge down [" in rec["inference_error"]
        assert "a.wav vs " in rec["inference_error"] and "b.wav]" in rec["inference_error"]


def test_a_wrong_number_of_outcomes_fails_every_pair(tmp_path):
    recs = compare_rows(Judge([OK]), rows(tmp_path, n_pairs=2), None, {}, "j")
    assert all("compare_batch returned 1 results for 2" in r["inference_error"] for r in recs)


def test_a_failed_pair_keeps_the_answers_but_no_preference(tmp_path):
    failed = {"musicality": None, "error": "unreadable", "details": {"judge_answer": "?"}}
    (rec,) = compare_rows(Judge([failed]), rows(tmp_path), None, {}, "j")
    assert rec["judge_answer"] == "?" and rec["status"] == "error"
    assert rec["predicted_preference-alignment"] is None
    assert "score_error: unreadable" in rec["inference_error"]


def test_details_that_would_overwrite_record_fields_are_refused(tmp_path):
    clash = {**OK, "details": {"status": "ok"}}
    with pytest.raises(ValueError, match=r"j: details \['status'\] would overwrite.*row 0"):
        compare_rows(Judge([clash]), rows(tmp_path), None, {}, "j")


def test_pair_record_of_a_row_not_compared_has_no_preference(tmp_path):
    (d,) = rows(tmp_path)
    rec = pair_record(d, None, "j")
    assert rec["status"] == "ok" and rec["predicted_preference"] is None


def test_seconds_callback_replaces_the_waveform_length(tmp_path):
    (rec,) = compare_rows(Judge([OK]), rows(tmp_path), None, {}, "j", seconds=lambda d: 7.0)
    assert rec["bench_audio_seconds"] == 7.0


def test_score_with_pairwise_sends_singles_to_the_clip_path_in_batch_order(tmp_path):
    decoded = rows(tmp_path, n_pairs=1, single=True)
    decoded = [decoded[1], decoded[0]]
    judge = Judge([OK])
    recs = score_with_pairwise(
        judge,
        decoded,
        lambda ds: [{"clip": len(ds)}],
        5.0,
        {"seed": 1},
        "j",
        {"fp": "f"},
        lambda d: 7.0,
    )
    assert recs[0] == {"clip": 1} and recs[1]["predicted_preference"] == "model_b"
    assert judge.calls == [(1, 5.0, {"seed": 1})]
    assert (recs[1]["bench_model"], recs[1]["fp"], recs[1]["bench_audio_seconds"]) == (
        "j",
        "f",
        7.0,
    )


def test_score_with_pairwise_refuses_a_clip_path_that_loses_records(tmp_path):
    decoded = rows(tmp_path, n_pairs=0, single=True)
    with pytest.raises(ValueError):
        score_with_pairwise(Judge(), decoded, lambda ds: [], None, {}, "j")


def test_score_with_pairwise_without_pairs_never_asks_the_model(tmp_path):
    judge = Judge()
    decoded = rows(tmp_path, n_pairs=0, single=True)
    assert score_with_pairwise(judge, decoded, lambda ds: [{}] * len(ds), None, {}, "j") == [{}]
    assert judge.calls == []
