"""How the audio-LLM judge (rewards.lalm_judge) reads answers: JSON and pattern answers, scores
and pairwise winners, what it sends, and the pairwise verdict table. Against the local
OpenAI-compatible stand-in (helpers.openai_stub) where a request is involved."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from helpers.openai_stub import OpenAIStub, request_parts

from rewards.base import BatchInput, ScoreItemError
from rewards.lalm_judge import (
    JudgeAnswerError,
    LALMJudge,
    answer_text,
    encode_wav_pcm16,
    last_json_object,
)

SR = 16_000
PROMPTS = {
    "musicality": 'Rate the musicality. Answer with JSON {"score": N}.',
    "alignment": 'How well does it fit {text}? Answer with JSON {"score": N}.',
    "pairwise_musicality": 'Which has better musicality? Answer with JSON {"winner": "A"}.',
    "pairwise_alignment": 'Which fits {text} better? Winner as JSON {"winner": "A"}.',
}


class JsonWinnerStub(OpenAIStub):
    """The stand-in judge, answering pairwise requests with a JSON object under `key`."""

    def __init__(self, key: str = "winner", **kw: Any) -> None:
        super().__init__(**kw)
        self.key = key

    def answer(self, body: dict[str, Any]) -> str:
        text = super().answer(body)
        if "\nWinner: " not in text:
            return text
        win = text.rsplit("Winner: ", 1)[1]
        return f'Clip {win} wins.\n```json\n{{"{self.key}": "{win}", "score": 3}}\n```'


def tone(amp: float, freq: float, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def pairs() -> list[tuple[BatchInput, BatchInput]]:
    """Pair 0: B louder, A higher. Pair 1: A louder and higher."""
    return [
        (BatchInput(tone(0.10, 400.0), "a song"), BatchInput(tone(0.40, 300.0), "a song")),
        (BatchInput(tone(0.30, 1500.0), "a song"), BatchInput(tone(0.05, 900.0), "a song")),
    ]


def make(url: str = "http://127.0.0.1:9/v1", **over: Any) -> LALMJudge:
    kw = {"prompts": PROMPTS, "url": url, "timeout": 5.0, "backoff_base": 0.01, **over}
    return LALMJudge(**kw)


def test_json_pairwise_reads_the_winner_key():
    with JsonWinnerStub() as stub:
        got = make(stub.url, answer_format="json", pairwise=True).compare_batch(pairs(), 30.0)
    assert [(g["musicality"], g["alignment"], g["error"]) for g in got] == [
        ("model_b", "model_a", None),
        ("model_a", "model_a", None),
    ]


def test_json_pairwise_reads_a_configured_winner_key():
    with JsonWinnerStub(key="better") as stub:
        m = make(stub.url, answer_format="json", pairwise=True, winner_key="better")
        got = m.compare_batch(pairs(), 30.0)
    assert [g["musicality"] for g in got] == ["model_b", "model_a"]


def test_json_pairwise_answer_without_the_winner_key_fails_the_pair():
    with JsonWinnerStub(key="choice") as stub:
        got = make(stub.url, answer_format="json", pairwise=True).compare_batch(pairs(), 30.0)
    assert all(
        g["musicality"] is None and "no JSON object with 'winner'" in g["error"] for g in got
    )


@pytest.mark.parametrize(
    ("answer", "winner"),
    [
        ('{"winner": "A"}', "first"),
        ('{"winner": "b"}', "second"),
        ('{"winner": " Clip B "}', "second"),
        ('{"winner": "TIE"}', "tie"),
        ('{"winner": "A"} then {"winner": "B"}', "second"),
    ],
)
def test_json_winner_values(answer, winner):
    assert make(answer_format="json")._read_winner(answer) == winner


@pytest.mark.parametrize(
    ("answer", "winner"),
    [
        ("Winner: A", "first"),
        ("winner - clip b", "second"),
        ("Winner: A. On reflection, Winner: tie", "tie"),
    ],
)
def test_pattern_winner_values_take_the_last_match(answer, winner):
    assert make()._read_winner(answer) == winner


@pytest.mark.parametrize(
    ("fmt", "answer", "reason"),
    [
        ("json", '{"winner": "C"}', "winner 'C' is not A, B or tie"),
        ("json", "Winner: A", "no JSON object with 'winner'"),
        ("pattern", "I like the first one", "no winner matching"),
    ],
)
def test_unreadable_winner_is_a_judge_answer_error(fmt, answer, reason):
    with pytest.raises(JudgeAnswerError, match=reason):
        make(answer_format=fmt)._read_winner(answer)


@pytest.mark.parametrize(
    ("answer", "score"),
    [('{"score": 7}', 7.0), ('{"score": "2.5"}', 2.5), ('{"score": 1} {"score": 10}', 10.0)],
)
def test_json_score_values_and_bounds_are_inclusive(answer, score):
    assert make(answer_format="json")._read_score(answer) == score


@pytest.mark.parametrize(
    ("answer", "score"),
    [("Score: 3", 3.0), ("score = 1.5 then Score: 9.5", 9.5), ("SCORE: 10", 10.0)],
)
def test_pattern_score_takes_the_last_match(answer, score):
    assert make()._read_score(answer) == score


@pytest.mark.parametrize(
    ("fmt", "answer", "reason"),
    [
        ("json", '{"rating": 3}', "no JSON object with 'score'"),
        ("json", '{"score": "high"}', "score 'high' is not a number"),
        ("json", '{"score": null}', "score None is not a number"),
        ("json", '{"score": 0.5}', r"score 0.5 outside \[1.0, 10.0\]"),
        ("json", '{"score": 10.5}', r"score 10.5 outside \[1.0, 10.0\]"),
        ("json", '{"score": NaN}', "score nan outside"),
        ("pattern", "no number here", "no score matching"),
    ],
)
def test_unreadable_score_is_a_judge_answer_error(fmt, answer, reason):
    with pytest.raises(JudgeAnswerError, match=reason):
        make(answer_format=fmt)._read_score(answer)


def test_score_range_none_accepts_any_finite_score():
    assert make(answer_format="json", score_range=None)._read_score('{"score": -40}') == -40.0
    with pytest.raises(JudgeAnswerError, match="outside"):
        make(answer_format="json", score_range=None)._read_score('{"score": Infinity}')


def test_last_json_object_skips_non_objects_and_broken_json():
    assert last_json_object('{"a": 1} [1, 2] {"b": 2} {broken') == {"b": 2}
    assert last_json_object('{"a": {"b": 1}}') == {"a": {"b": 1}}
    assert last_json_object("[1] no objects") is None
    assert last_json_object("") is None


def test_answer_text_joins_content_parts_and_reads_refusals():
    parts = {"choices": [{"message": {"content": [{"text": "Score"}, {"text": ": 4"}, "x"]}}]}
    assert answer_text(parts) == ("Score: 4", None)
    refusal = {"choices": [{"message": {"content": None, "refusal": "no"}}]}
    assert answer_text(refusal) == (None, "no")
    filtered = {"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}
    assert answer_text(filtered) == ("", "finish_reason content_filter")
    assert answer_text({"choices": [{"message": {"content": 5, "refusal": ""}}]}) == ("5", None)
    with pytest.raises(JudgeAnswerError, match="no choices"):
        answer_text({"choices": []})


def test_encode_wav_pcm16_is_a_clipped_16_bit_wav():
    wav, sr = sf.read(io.BytesIO(base64.b64decode(encode_wav_pcm16(np.array([0.5, 2.0]), 8000))))
    info = sf.info(io.BytesIO(base64.b64decode(encode_wav_pcm16(np.zeros(4), 8000))))
    assert sr == 8000 and info.subtype == "PCM_16"
    np.testing.assert_allclose(wav, [0.5, 1.0], atol=1e-4)


def test_request_body_carries_sampling_system_prompt_and_extra_body():
    with OpenAIStub() as stub:
        m = make(
            stub.url,
            answer_format="json",
            dimensions=["musicality"],
            system_prompt="You judge music.",
            temperature=0.5,
            seed=7,
            max_tokens=64,
            extra_body={"top_k": 1},
            model_name="judge-1",
        )
        m.score_batch([BatchInput(tone(0.2, 440.0))], 1, 30.0, top_p=0.9)
    (body,) = stub.requests
    assert body["model"] == "judge-1" and body["temperature"] == 0.5 and body["seed"] == 7
    assert body["max_tokens"] == 64 and body["top_k"] == 1 and body["top_p"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": "You judge music."}
    parts = body["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "Music clip:"}
    assert parts[-1] == {"type": "text", "text": PROMPTS["musicality"]}


def test_request_body_without_seed_max_tokens_or_system_prompt_leaves_them_out():
    with OpenAIStub() as stub:
        m = make(stub.url, answer_format="json", dimensions=["musicality"], seed=None, max_tokens=0)
        m.score_batch([BatchInput(tone(0.2, 440.0))], 1, 30.0)
    (body,) = stub.requests
    assert "seed" not in body and "max_tokens" not in body
    assert [msg["role"] for msg in body["messages"]] == ["user"]


def test_prompt_sections_fill_only_the_fields_a_row_has():
    m = make(
        prompts={
            **PROMPTS,
            "alignment": "{text_section}{lyrics_section}{reference_section}Fit? {x}",
        },
        sections={"reference": "Compare with the reference.\n"},
    )
    row = BatchInput(np.zeros(4), " calm ", "", None)
    assert m._fill(m.prompts["alignment"], row, False) == "Description: calm\nFit? {x}"
    row = BatchInput(np.zeros(4), "", " la la ", None)
    assert m._fill(m.prompts["alignment"], row, True) == (
        "Lyrics:\nla la\nCompare with the reference.\nFit? {x}"
    )


def test_url_gets_the_chat_completions_route_once():
    assert make("http://h:1/v1/").url == "http://h:1/v1/chat/completions"
    assert make("https://h/v1/chat/completions").url == "https://h/v1/chat/completions"
    with pytest.raises(ValueError, match="url must start with http"):
        make("ftp://h/v1")
    with pytest.raises(ValueError, match="answer_format must be"):
        make(answer_format="xml")


def test_own_max_dur_makes_a_start_crop_preprocess():
    assert make().preprocess is None
    p = make(max_dur=2.0, sr=8000).preprocess
    assert (p.sr, p.max_dur, p.crop) == (8000, 2.0, "start")
    assert make(max_dur=2.0)._prepare(5.0).max_dur == 2.0
    assert make()._prepare(5.0).max_dur == 5.0
    assert make()._prepare(0.0).max_dur is None and make()._prepare(None).max_dur is None


def test_last_json_object_resumes_at_the_next_brace_after_broken_json():
    assert last_json_object('{bad {"a": 1} {bad') == {"a": 1}
    assert last_json_object('{{"a": 1}') == {"a": 1}


def test_json_score_at_the_lower_bound_is_accepted():
    assert make(answer_format="json")._read_score('{"score": 1}') == 1.0


def test_score_batch_names_the_file_of_a_failed_item(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not audio")
    with pytest.raises(ScoreItemError, match=r"^item 0 \(.*broken\.wav\): ") as err:
        make().score_batch([str(bad)], 1, 30.0)
    assert err.value.index == 0 and err.value.audio == str(bad)


@pytest.mark.parametrize("detailed", [False, True])
def test_clips_are_cropped_to_the_calls_max_dur(detailed):
    with OpenAIStub() as stub:
        m = make(stub.url, answer_format="json", dimensions=["musicality"])
        clip = [BatchInput(tone(0.2, 440.0, seconds=0.5))]
        if detailed:
            m.score_batch_detailed(clip, 1, 0.1)
        else:
            m.score_batch(clip, 1, 0.1)
    (body,) = stub.requests
    wav, sr = request_parts(body)[0][0]
    assert sr == SR and len(wav) == int(0.1 * SR)


class BlankStub(OpenAIStub):
    """The stand-in judge answering only whitespace."""

    def answer(self, body: dict[str, Any]) -> str:
        return "  \n "


def test_a_whitespace_answer_is_an_empty_answer_and_failures_are_joined():
    with BlankStub() as stub:
        _, errors, _ = make(stub.url).score_batch_detailed(
            [BatchInput(tone(0.2, 440.0), "a song")], 1, 30.0
        )
    empty = "JudgeAnswerError: empty answer"
    assert errors == [f"musicality: {empty}; alignment: {empty}"]


def test_answer_text_without_choices_quotes_the_first_200_characters():
    payload = {"x": "a" * 300}
    with pytest.raises(JudgeAnswerError) as err:
        answer_text(payload)
    assert str(err.value) == f"no choices[0].message in {str(payload)[:200]!r}"


def test_answer_text_skips_content_parts_without_text():
    parts = {"choices": [{"message": {"content": [{"text": "Score: 4"}, {"type": "image"}]}}]}
    assert answer_text(parts) == ("Score: 4", None)


def test_lyrics_alone_are_something_to_align_to():
    m = make()
    assert m._has_condition(BatchInput(np.zeros(4), "", " la la "))
    assert not m._has_condition(BatchInput(np.zeros(4), " ", " "))


def test_pairwise_clips_are_cropped_to_the_calls_max_dur():
    with JsonWinnerStub() as stub:
        m = make(stub.url, answer_format="json", pairwise=True, dimensions=["musicality"])
        m.compare_batch(pairs()[:1], 0.1)
    assert len(stub.requests) == 2
    for body in stub.requests:
        assert [len(w) for w, _ in request_parts(body)[0]] == [int(0.1 * SR)] * 2


def test_pairwise_alignment_sends_the_reference_clip_third_with_its_label_and_section():
    ref = tone(0.3, 700.0, seconds=0.125)
    a = BatchInput(tone(0.10, 400.0), "a song", "", ref)
    b = BatchInput(tone(0.40, 300.0), "a song")
    prompts = {**PROMPTS, "pairwise_alignment": '{reference_section}Fit? JSON {"winner": "A"}'}
    with JsonWinnerStub() as stub:
        m = make(
            stub.url,
            answer_format="json",
            pairwise=True,
            prompts=prompts,
            sections={"reference": "REF. "},
            labels={"a": "First:", "b": "Second:", "reference": "Ref:"},
        )
        (got,) = m.compare_batch([(a, b)], 30.0)
    assert got["error"] is None and got["alignment"] == "model_a"
    by_prompt = {request_parts(body)[1][-1]: body for body in stub.requests}
    for body in stub.requests:
        audios, texts = request_parts(body)
        if texts[-1].startswith("REF. "):
            assert texts[:3] == ["First:", "Second:", "Ref:"] and len(audios) == 3
            np.testing.assert_allclose(audios[2][0], ref, atol=1e-4)
        else:
            assert "musicality" in texts[-1] and texts[:2] == ["First:", "Second:"]
            assert len(audios) == 2
    assert len(by_prompt) == 2 and len(stub.requests) == 4


def test_pairwise_without_anything_to_align_to_asks_musicality_only():
    a, b = (BatchInput(tone(amp, 400.0)) for amp in (0.1, 0.4))
    with JsonWinnerStub() as stub:
        m = make(
            stub.url, answer_format="json", pairwise=True, dimensions=["alignment", "musicality"]
        )
        (got,) = m.compare_batch([(a, b)], 30.0)
    assert got["alignment"] is None and got["musicality"] == "model_b"
    assert set(got["details"]["judge_answer"]) == {"musicality"} and len(stub.requests) == 2


def test_pairwise_tie_in_both_orders_is_both():
    clip = BatchInput(tone(0.2, 400.0), "a song")
    with JsonWinnerStub() as stub:
        (got,) = make(stub.url, answer_format="json", pairwise=True).compare_batch([(clip, clip)])
    assert (got["musicality"], got["alignment"], got["error"]) == ("both", "both", None)


def test_pairwise_unreadable_clip_fails_its_own_pair_only(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not audio")
    good = pairs()[0]
    with JsonWinnerStub() as stub:
        m = make(stub.url, answer_format="json", pairwise=True)
        broken, ok = m.compare_batch([(BatchInput(str(bad), "x"), good[1]), good], 30.0)
    assert broken["error"].startswith("AudioDecodeError: ") and "broken.wav" in broken["error"]
    assert broken["musicality"] is None and ok["musicality"] == "model_b"


def test_pairwise_failures_of_every_order_are_joined_in_order():
    with JsonWinnerStub(key="choice") as stub:
        (got,) = make(stub.url, answer_format="json", pairwise=True).compare_batch(pairs()[:1])
    reason = "JudgeAnswerError: no JSON object with 'winner' in the answer"
    assert got["error"] == "; ".join(
        f"{d} ({o}): {reason}" for d in ("musicality", "alignment") for o in ("ab", "ba")
    )


def test_defaults_are_the_documented_ones():
    m = LALMJudge(prompts={"musicality": "m", "alignment": "a"})
    assert (m.model_name, m.sr, m.pairwise, m.answer_format) == (
        "Qwen/Qwen2.5-Omni-7B",
        16000,
        False,
        "pattern",
    )
    assert m.sampling == {"temperature": 0.0, "seed": 0, "max_tokens": 512}
    assert m.transport.timeout == 120.0 and make(timeout=3.0).transport.timeout == 3.0


def test_url_keeps_its_last_character_when_no_slash_trails():
    assert make("http://judgeX").url == "http://judgeX/chat/completions"


def test_pairwise_needs_multi_audio_with_a_clear_message():
    with pytest.raises(
        ValueError, match=r"^pairwise needs multi_audio: true \(clips A and B in one request\)$"
    ):
        make(pairwise=True, multi_audio=False)


def test_unreadable_clip_fails_its_own_item_and_the_next_is_scored(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not audio")
    with OpenAIStub() as stub:
        m = make(stub.url, answer_format="json", dimensions=["musicality"])
        scores, errors, _ = m.score_batch_detailed(
            [BatchInput(str(bad)), BatchInput(tone(0.2, 440.0))], 2, 30.0
        )
    assert errors[0].startswith("AudioDecodeError: ") and "broken.wav" in errors[0]
    assert errors[1] is None and np.isfinite(scores[1, 1]) and np.isnan(scores[0]).all()


def test_a_clip_with_nothing_to_align_to_is_still_rated_for_musicality():
    with OpenAIStub() as stub:
        m = make(stub.url, answer_format="json", dimensions=["alignment", "musicality"])
        scores, errors, _ = m.score_batch_detailed([BatchInput(tone(0.2, 440.0))], 1, 30.0)
    assert errors == [None] and np.isnan(scores[0, 0]) and np.isfinite(scores[0, 1])


def test_per_clip_alignment_labels_the_reference_clip():
    ref = tone(0.3, 700.0, seconds=0.125)
    with OpenAIStub() as stub:
        m = make(
            stub.url, answer_format="json", dimensions=["alignment"], labels={"reference": "R:"}
        )
        m.score_batch([BatchInput(tone(0.2, 440.0), "a song", "", ref)], 1, 30.0)
    (body,) = stub.requests
    audios, texts = request_parts(body)
    assert texts[:2] == ["Music clip:", "R:"] and len(audios) == 2
