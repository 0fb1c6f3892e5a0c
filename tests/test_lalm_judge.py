"""Audio-LLM judge (rewards.lalm_judge) against a local OpenAI-compatible stand-in server
(helpers.openai_stub): requests, answers, faults, pairwise mode, bench.pairwise and a benchmark
run end to end."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers.openai_stub import FREQ_SCALE, RMS_SCALE, OpenAIStub, decode_audio, request_parts
from omegaconf import OmegaConf

from bench.data import read_bench
from bench.infer import decode_row
from bench.metrics import pref_scores
from bench.pairwise import compare_rows, score_with_pairwise, wants_pairwise
from bench.run import run
from rewards import http, lalm_judge
from rewards.base import BatchInput, PairwiseJudge, ScoreItemError
from rewards.build import build_reward_model
from rewards.http import HTTPRewardModel
from rewards.lalm_judge import LALMJudge, last_json_object
from rewards.transport import HTTPTransport

CONF = Path(__file__).resolve().parents[1] / "conf" / "bench"
SR = 16_000


def judge(url: str, **over) -> LALMJudge:
    """The judge as conf/bench/model/lalm_judge.yaml builds it, pointed at `url`."""
    cfg = OmegaConf.load(CONF / "model" / "lalm_judge.yaml")
    fast = {"timeout": 5.0, "backoff_base": 0.01, "backoff_max": 0.05, "concurrency": 3}
    cfg = OmegaConf.merge(cfg, {"url": url, **fast, **over})
    model, _ = build_reward_model(cfg)
    assert isinstance(model, LALMJudge)
    return model


def tone(amp: float, freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def expected(amp: float, freq: float) -> tuple[float, float]:
    """(alignment, musicality) the stub gives a tone: its frequency and its RMS."""
    rms = amp / math.sqrt(2)
    return 1 + 9 * min(freq / FREQ_SCALE, 1), 1 + 9 * min(rms / RMS_SCALE, 1)


TONES = [(0.10, 400.0), (0.40, 300.0), (0.25, 1500.0), (0.05, 900.0), (0.30, 650.0)]


def clips(text: str = "calm piano", lyrics: str = "", ref=None) -> list[BatchInput]:
    return [BatchInput(tone(a, f), text, lyrics, ref) for a, f in TONES]


def test_scores_follow_the_audio_and_requests_are_deterministic():
    with OpenAIStub() as stub:
        m = judge(stub.url)
        scores, errors, details = m.score_batch_detailed(clips(lyrics="la la"), 5, 30.0)
    assert errors == [None] * 5
    np.testing.assert_allclose(scores, [expected(a, f) for a, f in TONES], atol=0.06)
    assert details[0]["judge_answer"]["musicality"].endswith(f"Score: {scores[0, 1]:.1f}")
    assert len(stub.requests) == 10  # one per clip and dimension
    for body in stub.requests:
        assert body["model"] == "Qwen/Qwen2.5-Omni-7B"
        assert body["temperature"] == 0.0 and body["seed"] == 0
        assert body["messages"][0]["role"] == "system"
        parts = body["messages"][-1]["content"]
        audio = [p for p in parts if p["type"] == "input_audio"]
        assert len(audio) == 1 and audio[0]["input_audio"]["format"] == "wav"
        assert decode_audio(audio[0])[1] == SR
    prompts = [request_parts(b)[1][-1] for b in stub.requests]
    align = [p for p in prompts if "musicality" not in p]
    assert len(align) == 5 and all("Description: calm piano" in p for p in align)
    assert all("la la" in p and "{" not in p for p in align)


def test_reference_clip_goes_with_alignment_only_when_multi_audio():
    ref = tone(0.2, 500.0)
    for multi, n_audio in ((True, 2), (False, 1)):
        with OpenAIStub() as stub:
            judge(stub.url, multi_audio=multi).score_batch(clips(ref=ref)[:1], 1, 30.0)
        by_prompt = {request_parts(b)[1][-1]: request_parts(b)[0] for b in stub.requests}
        for prompt, audios in by_prompt.items():
            want = 1 if "musicality" in prompt else n_audio
            assert len(audios) == want, (multi, prompt)
            assert ("reference clip is audio" in prompt) == (want == 2)


def test_no_prompt_means_no_alignment_request_and_dimensions_switch_off():
    with OpenAIStub() as stub:
        scores = judge(stub.url).score_batch(clips(text=""), 5, 30.0)
        assert np.isnan(scores[:, 0]).all() and np.isfinite(scores[:, 1]).all()
        assert len(stub.requests) == 5
        only = judge(stub.url, dimensions=["alignment"]).score_batch(clips(), 5, 30.0)
    assert np.isnan(only[:, 1]).all() and np.isfinite(only[:, 0]).all()


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ("garbage", "no score matching"),
        ("text_refusal", "no score matching"),
        ("refuse", "the judge refused: I can't help"),
        ("out_of_range", "score 42 outside [1.0, 10.0]"),
        ("empty", "empty answer"),
    ],
)
def test_unusable_answer_fails_its_item_and_keeps_the_answer(step, reason):
    """Clip 1's musicality request gets the faulty answer; nothing is sent twice."""

    def plan(body, attempt):
        audios, texts = request_parts(body)
        loud = abs(np.sqrt(np.mean(audios[0][0] ** 2)) - 0.4 / math.sqrt(2)) < 0.01
        return step if loud and "musicality" in texts[-1] else "ok"

    with OpenAIStub(plan) as stub:
        m = judge(stub.url)
        scores, errors, details = m.score_batch_detailed(clips(), 5, 30.0)
        assert max(stub.attempts.values()) == 1
        with pytest.raises(ScoreItemError, match=r"item 1 .*musicality: JudgeAnswerError"):
            m.score_batch(clips(), 5, 30.0)
    assert [e is None for e in errors] == [True, False, True, True, True]
    assert errors[1].startswith("musicality: JudgeAnswerError") and reason in errors[1]
    kept = details[1]["judge_answer"]["musicality"]
    assert kept is not None and (step == "empty" or kept.strip())
    assert details[1]["judge_answer"]["alignment"].startswith("A fair piece")
    assert np.isfinite(scores[[0, 2, 3, 4]]).all()


@pytest.mark.parametrize(
    ("step", "reason"),
    [("no_choices", "no choices[0].message"), ("not_json", "non-JSON response")],
)
def test_malformed_responses_fail_the_item_without_retrying(step, reason):
    with OpenAIStub((step,)) as stub:
        _, errors, details = judge(stub.url).score_batch_detailed(clips()[:2], 2, 30.0)
        assert len(stub.requests) == 4  # 2 clips x 2 dimensions, once each
    assert all(reason in e for e in errors)
    assert details[0]["judge_answer"] == {"musicality": None, "alignment": None}


def test_survives_500_429_and_timeouts_losing_nothing():
    xs = clips()[:3]
    with OpenAIStub(("500", "429", "stall", "ok")) as stub:
        m = judge(stub.url, timeout=1.0)
        scores, errors, _ = m.score_batch_detailed(xs, 3, 30.0)
    assert errors == [None] * 3
    np.testing.assert_allclose(scores, [expected(a, f) for a, f in TONES[:3]], atol=0.06)
    assert sorted(stub.attempts.values()) == [4] * 6  # every request: 500, 429, stall, ok
    assert m.transport.stats["retries"] >= 18


def test_gives_up_after_max_retries():
    with OpenAIStub(("500",)) as stub:
        _, errors, _ = judge(stub.url, max_retries=2).score_batch_detailed(clips()[:1], 1, 30.0)
        assert sorted(stub.attempts.values()) == [3, 3]
    assert "gave up after 3 attempts: HTTP 500" in errors[0]


def test_api_key_from_env_never_exposed(monkeypatch):
    secret = "judge-s3cr3t-value"
    with OpenAIStub(api_key=secret) as stub:
        monkeypatch.setenv("JUDGE_TEST_KEY", secret)
        good = judge(stub.url, api_key_env="JUDGE_TEST_KEY", max_retries=0)
        assert good.score_batch(clips()[:1], 1, 30.0).shape == (1, 2)
        assert secret not in repr(good) and secret not in str(vars(good))
        assert secret not in str(vars(good.transport))
        monkeypatch.setenv("JUDGE_TEST_KEY", "wrong-" + secret)
        _, errors, _ = good.score_batch_detailed(clips()[:1], 1, 30.0)
    assert "HTTP 401" in errors[0] and secret not in errors[0]


def test_json_answers():
    prompts = {
        "musicality": 'Rate the musicality. Answer with JSON {"score": N}.',
        "alignment": 'How well does it fit {text}? Answer with JSON {"score": N}.',
    }
    with OpenAIStub() as stub:
        m = judge(stub.url, answer_format="json", prompts=prompts)
        scores, errors, details = m.score_batch_detailed(clips(), 5, 30.0)
    assert errors == [None] * 5 and "```json" in details[0]["judge_answer"]["alignment"]
    np.testing.assert_allclose(scores, [expected(a, f) for a, f in TONES], atol=0.06)
    assert last_json_object('x {"a": 1} y {"score": 2} z {') == {"score": 2}


def test_unreadable_file_fails_its_own_item(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not audio")
    xs = clips()[:2]
    xs[1] = BatchInput(str(bad), "calm piano")
    with OpenAIStub() as stub:
        m = judge(stub.url, pairwise=True)
        scores, errors, _ = m.score_batch_detailed(xs, 2, 30.0)
        assert len(stub.requests) == 2  # only the readable clip was sent
        got = m.compare_batch([(xs[0], xs[1])], max_dur=30.0)
    assert errors[0] is None and "broken.wav" in errors[1] and np.isnan(scores[1]).all()
    assert "broken.wav" in got[0]["error"] and got[0]["musicality"] is None


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="no template for \\['pairwise_musicality'"):
        LALMJudge(prompts={"musicality": "m", "alignment": "a"}, pairwise=True)
    with pytest.raises(ValueError, match="unknown dimensions \\['timbre'\\]"):
        judge("http://127.0.0.1:9/v1", dimensions=["timbre"])
    with pytest.raises(ValueError, match="pairwise needs multi_audio"):
        judge("http://127.0.0.1:9/v1", pairwise=True, multi_audio=False)


# ---------------------------------------------------------------------- pairwise
PAIRS = [((0.10, 400.0), (0.40, 300.0)), ((0.30, 1500.0), (0.05, 900.0))]


def pair_inputs(swap: bool = False) -> list[tuple[BatchInput, BatchInput]]:
    out = []
    for (aa, fa), (ab, fb) in PAIRS:
        a, b = BatchInput(tone(aa, fa), "a song"), BatchInput(tone(ab, fb), "a song")
        out.append((b, a) if swap else (a, b))
    return out


MIRROR = {"model_a": "model_b", "model_b": "model_a", "both": "both", None: None}


def test_pairwise_asks_both_orders_and_swapping_mirrors_the_preference():
    with OpenAIStub() as stub:
        m = judge(stub.url, pairwise=True)
        got = m.compare_batch(pair_inputs(), max_dur=30.0)
        swapped = m.compare_batch(pair_inputs(swap=True), max_dur=30.0)
        assert len(stub.requests) == 16  # 2 runs x 2 pairs x 2 dimensions x 2 orders
    # pair 0: B louder, A higher; pair 1: A louder and higher
    assert [(g["musicality"], g["alignment"]) for g in got] == [
        ("model_b", "model_a"),
        ("model_a", "model_a"),
    ]
    for g, s in zip(got, swapped, strict=True):
        assert s["musicality"] == MIRROR[g["musicality"]] and s["error"] is None
        assert s["alignment"] == MIRROR[g["alignment"]]
    answers = got[0]["details"]["judge_answer"]["musicality"]
    assert answers["ab"].endswith("Winner: B") and answers["ba"].endswith("Winner: A")


def test_position_bias_becomes_both():
    with OpenAIStub(bias="first") as stub:
        got = judge(stub.url, pairwise=True).compare_batch(pair_inputs(), max_dur=30.0)
    assert all(g["musicality"] == g["alignment"] == "both" for g in got)


def test_pairwise_unparsable_answer_fails_the_pair_and_keeps_both_answers():
    def plan(body, attempt):
        first = decode_audio([p for p in body["messages"][-1]["content"] if "input_audio" in p][0])
        return "garbage" if abs(first[0].max() - 0.3) < 0.01 else "ok"  # pair 1, order ab

    with OpenAIStub(plan) as stub:
        got = judge(stub.url, pairwise=True).compare_batch(pair_inputs(), max_dur=30.0)
    assert got[0]["error"] is None
    assert got[1]["musicality"] is None and "(ab): JudgeAnswerError" in got[1]["error"]
    assert got[1]["details"]["judge_answer"]["musicality"]["ab"].startswith("What a lovely")


def write_pairs(root: Path) -> list[dict]:
    """A tiny benchmark of CMI-Pref pairs (labels from loudness) and a PAM row; decoded rows."""
    import soundfile as sf

    rows = []
    for i, ((aa, fa), (ab, fb)) in enumerate(PAIRS):
        sf.write(root / f"{i}a.wav", tone(aa, fa), SR)
        sf.write(root / f"{i}b.wav", tone(ab, fb), SR)
        rows.append(
            {
                "source": "cmi-arena-annotation",
                "split": "test",
                "audio-path": f"{i}a.wav",
                "audio2": f"{i}b.wav",
                "prompt": "a song",
                "preference-musicality": "model_a" if aa > ab else "model_b",
                "preference-alignment": "model_a",
            }
        )
    rows.append({**rows[0], "audio2": "missing.wav"})
    rows.append({"source": "PAM (music)", "split": "test", "audio-path": "0a.wav", "prompt": "x"})
    (root / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from audiobase.preprocess import Preprocess

    pre = Preprocess(sr=SR, max_dur=30.0)
    return [decode_row(r, pre) for r in read_bench(root / "bench.jsonl", root)]


def test_bench_pairwise_records(tmp_path):
    decoded = write_pairs(tmp_path)
    with OpenAIStub(bias=None) as stub:
        m = judge(stub.url, pairwise=True)
        assert wants_pairwise(m) and not wants_pairwise(judge(stub.url))
        pairs = [d for d in decoded if "b" in d["sides"]]
        recs = compare_rows(m, pairs, 30.0, {}, "lalm_judge_pairwise", {"bench_fingerprint": "f"})
        n_pair_requests = len(stub.requests)
    assert n_pair_requests == 8  # the pair with a missing clip is not sent
    ok, _, bad = recs
    assert ok["status"] == "ok" and ok["bench_fingerprint"] == "f"
    assert ok["predicted_preference"] == ok["predicted_preference-musicality"] == "model_b"
    assert ok["predicted_preference-alignment"] == "model_a"
    assert ok["predicted_musicality"] is None and ok["inference_valid_b"] is True
    assert set(ok["judge_answer"]) == {"musicality", "alignment"}
    assert bad["status"] == "error" and "missing.wav" in bad["inference_error"]
    assert bad["predicted_preference"] is None and "judge_answer" not in bad
    # upstream's accuracy: agreeing 1, "both" 0.5
    credit = pref_scores(recs, "preference-musicality", "predicted_preference-musicality")
    assert credit.tolist() == [1.0, 1.0]  # the failed pair is dropped
    both = {**ok, "predicted_preference-musicality": "both"}
    assert pref_scores([both], "preference-musicality", "predicted_preference-musicality") == 0.5


def test_score_with_pairwise_keeps_the_batch_order(tmp_path):
    decoded = write_pairs(tmp_path)
    with OpenAIStub() as stub:
        m = judge(stub.url, pairwise=True)
        seen = []

        def clips_path(ds):
            seen.extend(d["row"].subset for d in ds)
            return [{"row": d["row"].index, "path": "clips"} for d in ds]

        recs = score_with_pairwise(m, decoded, clips_path, 30.0, {}, "j")
    assert seen == ["PAM"]
    assert [r.get("path") for r in recs] == [None, None, None, "clips"]
    assert [r["bench_row_index"] for r in recs[:3]] == [0, 1, 2]


def test_judge_pairwise_failure_of_the_call_fails_its_pairs(tmp_path):
    decoded = [d for d in write_pairs(tmp_path) if "b" in d["sides"]][:2]

    class Broken(PairwiseJudge):
        sr = SR

        def score_batch(self, inputs, batch_size, max_dur, **kw):
            raise NotImplementedError

        def compare_batch(self, pairs, max_dur=None, **kw):
            raise RuntimeError("judge down")

    recs = compare_rows(Broken(), decoded, 30.0, {}, "broken")
    assert all("RuntimeError: judge down" in r["inference_error"] for r in recs)
    assert all(r["status"] == "error" for r in recs)


# ---------------------------------------------------------------------- shared transport
def test_retries_and_keys_go_through_one_shared_transport(monkeypatch):
    """Both service models send through rewards.transport; neither keeps a copy of its rules."""
    for name in ("_with_retries", "_send", "_pace", "_sleep_backoff", "_retry_after"):
        assert not hasattr(http, name) and not hasattr(HTTPRewardModel, name)
        assert not hasattr(lalm_judge, name) and not hasattr(LALMJudge, name)
    waits = []
    monkeypatch.setattr(HTTPTransport, "_sleep_backoff", lambda self, n, e: waits.append(n))
    with OpenAIStub(("429", "ok")) as stub:
        m = judge(stub.url)
        assert isinstance(m.transport, HTTPTransport)
        m.score_batch(clips()[:1], 1, 30.0)
    assert waits == [1, 1]
    assert isinstance(HTTPRewardModel("http://127.0.0.1:9/score").transport, HTTPTransport)


# ---------------------------------------------------------------------- end to end
def test_bench_run_scores_the_synthetic_benchmark_through_a_local_judge(synth_corpus, tmp_path):
    """`bench.run model=lalm_judge model.url=<stub>`: every row scored, or recorded with its
    reason and the judge's raw answer; metrics and plots written as for any model."""
    cfg = OmegaConf.load(CONF / "bench.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    model = OmegaConf.load(CONF / "model" / "lalm_judge.yaml")

    def plan(body, attempt):  # some clips' musicality answers are unusable
        audios, texts = request_parts(body)
        digest = hashlib.sha1(audios[0][0].tobytes()).digest()[0]
        return "garbage" if "musicality" in texts[-1] and digest % 5 == 0 else "ok"

    with OpenAIStub(plan) as stub:
        cfg.model = OmegaConf.merge(model, {"url": stub.url, "concurrency": 4})
        cfg.dataset = {
            "name": "synth",
            "jsonl": str(synth_corpus["bench"]),
            "root": str(synth_corpus["root"]),
            "split": "test",
        }
        cfg.output_root = str(tmp_path)
        cfg.num_workers, cfg.n_boot, cfg.plots, cfg.max_fail_frac = 0, 20, True, 1.0
        metrics, info = run(cfg)
    out = tmp_path / "lalm_judge" / "synth"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    for r in rows:
        answers = [r[k] for k in ("judge_answer", "judge_answer_b") if k in r]
        assert answers and all(a["musicality"] for a in answers)  # raw answers kept
        if r["status"] == "ok":
            assert r["predicted_musicality"] is not None
        else:
            assert "JudgeAnswerError: no score matching" in r["inference_error"]
            assert any(a["musicality"].startswith("What a lovely") for a in answers)
    failed = sum(r["status"] == "error" for r in rows)
    assert info["failed_rows"] == failed and 0 < failed < len(rows)
    for name in ("metrics.json", "metrics_summary.csv", "summary.md", "statistics.json"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "plots").glob("*.png"))
    assert {s["dataset"] for s in metrics["summary"]} >= {"PAM", "MusicEval", "CMI-Pref"}


def test_bench_run_pairwise_judges_pair_rows_and_scores_single_clips(synth_corpus, tmp_path):
    """`bench.run model=lalm_judge_pairwise`: pair rows get the judge's preferences (no per-clip
    scores), single-clip rows per-clip scores, all in one results file."""
    cfg = OmegaConf.load(CONF / "bench.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    model = OmegaConf.load(CONF / "model" / "lalm_judge.yaml")
    model = OmegaConf.merge(model, OmegaConf.load(CONF / "model" / "lalm_judge_pairwise.yaml"))
    model.pop("defaults")
    with OpenAIStub() as stub:
        cfg.model = OmegaConf.merge(model, {"url": stub.url, "concurrency": 4})
        cfg.dataset = {
            "name": "synth",
            "jsonl": str(synth_corpus["bench"]),
            "root": str(synth_corpus["root"]),
            "split": "test",
        }
        cfg.output_root = str(tmp_path)
        cfg.num_workers, cfg.n_boot, cfg.plots = 0, 0, False
        metrics, info = run(cfg)
    rows = [
        json.loads(x)
        for x in (tmp_path / "lalm_judge_pairwise" / "synth" / "results.jsonl")
        .read_text()
        .splitlines()
    ]
    assert info["failed_rows"] == 0
    pairs = [r for r in rows if r["benchmark_dataset"] in ("MusicArena", "CMI-Pref")]
    singles = [r for r in rows if r["benchmark_dataset"] in ("PAM", "MusicEval")]
    assert pairs and singles
    for r in pairs:
        assert r["predicted_preference"] in ("model_a", "model_b", "both")
        assert r["predicted_musicality"] is None and set(r["judge_answer"]) >= {"musicality"}
    assert all(r["predicted_musicality"] is not None for r in singles)
    assert {s["dataset"] for s in metrics["summary"]} >= {"MusicArena", "CMI-Pref", "PAM"}
