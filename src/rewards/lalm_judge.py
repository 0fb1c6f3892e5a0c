"""An audio-language model as a judge, behind an OpenAI-compatible chat completions endpoint.

Per clip (`score_batch_detailed`), one request per dimension:
    POST <url>/chat/completions  {"model": model_name, "temperature": 0.0, "seed": 0,
        "max_tokens": ..., "messages": [{"role": "system", "content": system_prompt},
        {"role": "user", "content": [{"type": "text", "text": <label>},
            {"type": "input_audio", "input_audio": {"data": <base64 16-bit WAV>, "format": "wav"}},
            ..., {"type": "text", "text": <the dimension's prompt>}]}], **extra_body}
the form vLLM accepts for audio LLMs (Qwen2.5-Omni, Qwen3-Omni, Gemma 3n, ...). `musicality`
(column 1) sends the clip; `alignment` (column 0) the clip, the row's prompt and lyrics in the
text and, when the row has one and `multi_audio` is on, the reference clip as a second audio.
A row with no prompt, lyrics or reference gets NaN alignment without a request; a dimension
left out of `dimensions` is NaN. The score is read from the answer with `score_pattern` (the
last match) or, with `answer_format: json`, from `score_key` of the last JSON object in it.

Pairwise (`compare_batch`, for Music Arena and CMI-Pref rows): one request with clips A and B
per dimension, then the same with B and A; the answer names the better clip (`winner_pattern`
or `winner_key`: A, B or tie). Both orders agreeing give model_a / model_b, disagreeing (a
position bias) or a tie gives "both", which CMI-RewardBench's accuracy counts as 0.5.

Failures: an answer without a readable score (or winner), a score outside `score_range`, a
refusal or an empty answer fails the item with the reason, and the raw answer is kept in its
details (`{"judge_answer": {dimension: text}}`). Requests go through
`rewards.transport.HTTPTransport`, as `rewards.http`'s do: retries with backoff and jitter on
connection errors, timeouts, 429 and 5xx; timeouts, concurrency, rate limit, and the API key
from the environment variable named by `api_key_env`.

Prompt templates come from the config (conf/bench/model/lalm_judge.yaml): `{text_section}`,
`{lyrics_section}` and `{reference_section}` become the `sections` templates when the row has a
prompt, lyrics or a reference sent with it (else nothing), then `{text}` and `{lyrics}` become
the row's prompt and lyrics; other braces are left as written (JSON examples need no escaping).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile as sf

from audiobase.preprocess import Preprocess
from rewards.base import (
    ALIGNMENT,
    MUSICALITY,
    BatchInput,
    PairwiseJudge,
    ScoreItemError,
    as_input,
)
from rewards.transport import HTTPTransport

log = logging.getLogger(__name__)

DIMENSIONS = {"alignment": ALIGNMENT, "musicality": MUSICALITY}
LABELS = {"clip": "Music clip:", "a": "Clip A:", "b": "Clip B:", "reference": "Reference clip:"}
SECTIONS = {"text": "Description: {text}\n", "lyrics": "Lyrics:\n{lyrics}\n", "reference": ""}
WINNERS = {"a": "first", "b": "second", "tie": "tie", "both": "tie"}


class JudgeAnswerError(ValueError):
    """An answer the judge gave that holds no usable score or winner; the reason says why."""


@dataclass
class Verdict:
    """One request's outcome: the raw answer (None when no answer came) and what it says."""

    answer: str | None = None
    value: float | str | None = None
    error: str | None = None


@dataclass
class _Task:
    item: int  # index of the clip or pair
    dim: str
    order: str = ""  # pairwise: "ab" or "ba"
    body: dict[str, Any] = field(default_factory=dict)


def encode_wav_pcm16(wav: np.ndarray, sr: int) -> str:
    """Mono float waveform [T] -> base64 of a 16-bit PCM WAV (what every audio LLM server reads)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0), sr, "PCM_16", format="WAV")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def audio_part(data: str) -> dict[str, Any]:
    """An OpenAI `input_audio` content part for a base64 WAV."""
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def answer_text(payload: Any) -> tuple[str | None, str | None]:
    """(content, refusal) of the first choice of a chat completion; JudgeAnswerError when the
    response has no message at all."""
    try:
        choice = payload["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise JudgeAnswerError(f"no choices[0].message in {str(payload)[:200]!r}") from None
    content = message.get("content")
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    refusal = message.get("refusal")
    if not refusal and choice.get("finish_reason") == "content_filter":
        refusal = "finish_reason content_filter"
    return (None if content is None else str(content)), (None if not refusal else str(refusal))


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last JSON object in `text` (code fences and prose around it allowed), or None."""
    decoder, found, i = json.JSONDecoder(), None, text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found = obj
        i = text.find("{", end)
    return found


class LALMJudge(PairwiseJudge):
    """A reward model asking an audio LLM for scores (see the module docstring)."""

    def __init__(
        self,
        prompts: dict[str, str],
        url: str = "http://127.0.0.1:8000/v1",
        model_name: str = "Qwen/Qwen2.5-Omni-7B",
        sr: int = 16000,
        max_dur: float | None = None,
        dimensions: list[str] | tuple[str, ...] = ("musicality", "alignment"),
        multi_audio: bool = True,
        pairwise: bool = False,
        system_prompt: str | None = None,
        labels: dict[str, str] | None = None,
        sections: dict[str, str] | None = None,
        answer_format: str = "pattern",
        score_pattern: str = r"(?i)score[^0-9\-]{0,12}(-?\d+(?:\.\d+)?)",
        winner_pattern: str = r"(?i)winner[^A-Za-z]{0,12}(?:clip\s*)?\b(A|B|tie)\b",
        score_key: str = "score",
        winner_key: str = "winner",
        score_range: list[float] | tuple[float, float] | None = (1.0, 10.0),
        temperature: float = 0.0,
        seed: int | None = 0,
        max_tokens: int | None = 512,
        extra_body: dict[str, Any] | None = None,
        **transport: Any,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else f"{url}/chat/completions"
        unknown = sorted(set(dimensions) - set(DIMENSIONS))
        if unknown:
            raise ValueError(f"unknown dimensions {unknown}; choose from {sorted(DIMENSIONS)}")
        if answer_format not in ("pattern", "json"):
            raise ValueError(f"answer_format must be 'pattern' or 'json', got {answer_format!r}")
        self.dimensions = [str(d) for d in dimensions]
        self.prompts = {str(k): str(v) for k, v in (prompts or {}).items()}
        needed = self.dimensions + ([f"pairwise_{d}" for d in self.dimensions] if pairwise else [])
        missing = [k for k in needed if k not in self.prompts]
        if missing:
            raise ValueError(f"prompts has no template for {missing} (set prompts.<name>)")
        if pairwise and not multi_audio:
            raise ValueError("pairwise needs multi_audio: true (clips A and B in one request)")
        self.model_name, self._sr = str(model_name), int(sr)
        self.max_dur = None if not max_dur else float(max_dur)
        self.multi_audio, self.pairwise = bool(multi_audio), bool(pairwise)
        # with `max_dur` set, the judge's own crop (the first `max_dur` seconds at `sr`), which
        # the benchmark then decodes with; None = the runner's crop
        self.preprocess = (
            None
            if self.max_dur is None
            else Preprocess(sr=self._sr, max_dur=self.max_dur, crop="start")
        )
        self.system_prompt = system_prompt or None
        self.labels = {**LABELS, **(labels or {})}
        self.sections = {**SECTIONS, **(sections or {})}
        self.answer_format = answer_format
        self.score_re, self.winner_re = re.compile(score_pattern), re.compile(winner_pattern)
        self.score_key, self.winner_key = score_key, winner_key
        self.score_range = None if score_range is None else tuple(float(x) for x in score_range)
        self.sampling: dict[str, Any] = {"temperature": float(temperature)}
        if seed is not None:
            self.sampling["seed"] = int(seed)
        if max_tokens:
            self.sampling["max_tokens"] = int(max_tokens)
        self.extra_body = dict(extra_body or {})
        # HTTPTransport's keys, flat in the config; an LLM answer takes a while: 120 s timeout
        self.transport = HTTPTransport(**{"timeout": 120.0, **transport, "seed": seed})

    def __repr__(self) -> str:
        return f"LALMJudge(url={self.url!r}, model_name={self.model_name!r})"

    @classmethod
    def expected_preprocess(
        cls, config: dict[str, Any], max_dur: float | None
    ) -> Preprocess | None:
        """None: the contract is known once built (the server's, or the judge's own crop)."""
        return None

    @property
    def sr(self) -> int:
        return self._sr

    # ------------------------------------------------------------------ per clip
    def score_batch(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> np.ndarray:
        scores, errors, _ = self.score_batch_detailed(inputs, batch_size, max_dur, **kwargs)
        for i, err in enumerate(errors):
            if err is not None:
                raise ScoreItemError(i, as_input(inputs[i]), err)
        return scores

    def score_batch_detailed(
        self, inputs: list[Any], batch_size: int, max_dur: float | None, **kwargs: Any
    ) -> tuple[np.ndarray, list[str | None], list[dict[str, Any]]]:
        """(scores [N, 2] with NaN where failed or not asked, error text or None, details);
        details[i] = {"judge_answer": {dimension: raw answer or None}}."""
        items = [as_input(x) for x in inputs]
        prepare = self._prepare(max_dur)
        tasks: list[_Task] = []
        problems: list[list[str]] = [[] for _ in items]
        for i, item in enumerate(items):
            try:  # a file that cannot be read fails its own item (inputs: paths)
                audio = encode_wav_pcm16(prepare(item.audio), self._sr)
                ref = self._ref(item, prepare)
            except Exception as e:  # noqa: BLE001 - recorded per item
                problems[i].append(f"{type(e).__name__}: {e}")
                continue
            for dim in self.dimensions:
                if dim == "alignment" and not self._has_condition(item):
                    continue  # nothing to align to: NaN, as a model without the dimension
                parts = [text_part(self.labels["clip"]), audio_part(audio)]
                if dim == "alignment" and ref is not None:
                    parts += [text_part(self.labels["reference"]), audio_part(ref)]
                prompt = self._fill(self.prompts[dim], item, ref is not None)
                tasks.append(_Task(i, dim, body=self._body(parts, prompt, kwargs)))
        verdicts = self._run(tasks, self._read_score)
        scores = np.full((len(items), 2), np.nan)
        answers: list[dict[str, str | None]] = [{} for _ in items]
        for t, v in zip(tasks, verdicts, strict=True):
            answers[t.item][t.dim] = v.answer
            if v.error is not None:
                problems[t.item].append(f"{t.dim}: {v.error}")
            elif isinstance(v.value, float):
                scores[t.item, DIMENSIONS[t.dim]] = v.value
        errors = ["; ".join(p) if p else None for p in problems]
        return scores, errors, [{"judge_answer": a} for a in answers]

    # ------------------------------------------------------------------ pairwise
    def compare_batch(
        self, pairs: list[tuple[Any, Any]], max_dur: float | None = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        """Per pair (A, B): {"musicality", "alignment": "model_a" | "model_b" | "both" | None,
        "details": {"judge_answer": {dimension: {"ab": answer, "ba": answer}}},
        "error": text or None}. Each dimension is asked in both orders; None = not asked."""
        prepare = self._prepare(max_dur)
        tasks: list[_Task] = []
        out: list[dict[str, Any]] = [
            {"musicality": None, "alignment": None, "details": {"judge_answer": {}}, "error": None}
            for _ in pairs
        ]
        for i, (a, b) in enumerate(pairs):
            a, b = as_input(a), as_input(b)
            try:  # a file that cannot be read fails its own pair (inputs: paths)
                clips = {
                    "a": encode_wav_pcm16(prepare(a.audio), self._sr),
                    "b": encode_wav_pcm16(prepare(b.audio), self._sr),
                }
                ref = self._ref(a, prepare)
            except Exception as e:  # noqa: BLE001 - recorded per pair
                out[i]["error"] = f"{type(e).__name__}: {e}"
                continue
            for dim in self.dimensions:
                if dim == "alignment" and not self._has_condition(a):
                    continue
                for order in ("ab", "ba"):
                    parts = [text_part(self.labels["a"]), audio_part(clips[order[0]])]
                    parts += [text_part(self.labels["b"]), audio_part(clips[order[1]])]
                    if dim == "alignment" and ref is not None:
                        parts += [text_part(self.labels["reference"]), audio_part(ref)]
                    prompt = self._fill(self.prompts[f"pairwise_{dim}"], a, ref is not None)
                    tasks.append(_Task(i, dim, order, self._body(parts, prompt, kwargs)))
        verdicts = self._run(tasks, self._read_winner)
        by_pair: dict[tuple[int, str], dict[str, Verdict]] = {}
        for t, v in zip(tasks, verdicts, strict=True):
            by_pair.setdefault((t.item, t.dim), {})[t.order] = v
            out[t.item]["details"]["judge_answer"].setdefault(t.dim, {})[t.order] = v.answer
        for (i, dim), orders in by_pair.items():
            bad = [f"{dim} ({o}): {v.error}" for o, v in orders.items() if v.error is not None]
            if bad:
                out[i]["error"] = "; ".join(filter(None, [out[i]["error"], *bad]))
                continue
            # "first" in the B-then-A order is B: map both answers to model_a / model_b / both
            ab = {"first": "model_a", "second": "model_b"}.get(str(orders["ab"].value), "both")
            ba = {"first": "model_b", "second": "model_a"}.get(str(orders["ba"].value), "both")
            out[i][dim] = ab if ab == ba else "both"
        return out

    # ------------------------------------------------------------------ requests
    def _prepare(self, max_dur: float | None) -> Preprocess:
        """What a clip goes through before sending: the judge's own crop, else the call's."""
        crop = self.max_dur or (max_dur if max_dur and max_dur > 0 else None)
        return Preprocess(sr=self._sr, max_dur=crop, crop="start")

    def _has_condition(self, item: BatchInput) -> bool:
        """Whether a row gives the judge anything to align the music to."""
        text = (item.text or "").strip() or (item.lyrics or "").strip()
        return bool(text) or (item.ref_audio is not None and self.multi_audio)

    def _ref(self, item: BatchInput, prepare: Preprocess) -> str | None:
        if item.ref_audio is None or not self.multi_audio:
            return None
        return encode_wav_pcm16(prepare(item.ref_audio), self._sr)

    def _fill(self, template: str, item: BatchInput, has_ref: bool) -> str:
        """The template with the row's fields in; other braces are left as written."""
        text, lyrics = (item.text or "").strip(), (item.lyrics or "").strip()
        sections = {
            "{text_section}": self.sections["text"] if text else "",
            "{lyrics_section}": self.sections["lyrics"] if lyrics else "",
            "{reference_section}": self.sections["reference"] if has_ref else "",
        }
        for key, value in sections.items():
            template = template.replace(key, value)
        return template.replace("{text}", text).replace("{lyrics}", lyrics)

    def _body(self, parts: list[dict[str, Any]], prompt: str, extra: dict[str, Any]) -> dict:
        messages: list[dict[str, Any]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": [*parts, text_part(prompt)]})
        return {
            "model": self.model_name,
            "messages": messages,
            **self.sampling,
            **self.extra_body,
            **extra,
        }

    def _run(self, tasks: list[_Task], read: Any) -> list[Verdict]:
        """All tasks through the transport, `concurrency` at a time; a verdict per task."""

        def one(k: int) -> Verdict:
            content, refusal = self.transport.request(
                "post", self.url, json.dumps(tasks[k].body), answer_text
            )
            if refusal:
                return Verdict(refusal, None, f"JudgeAnswerError: the judge refused: {refusal}")
            if not content or not content.strip():
                return Verdict(content, None, "JudgeAnswerError: empty answer")
            try:
                return Verdict(content, read(content))
            except JudgeAnswerError as e:
                return Verdict(content, None, f"JudgeAnswerError: {e}")

        verdicts, errors = self.transport.map(one, len(tasks))
        return [
            v if v is not None else Verdict(None, None, e)
            for v, e in zip(verdicts, errors, strict=True)
        ]

    # ------------------------------------------------------------------ answers
    def _read_score(self, answer: str) -> float:
        """The score an answer gives (see `answer_format`); JudgeAnswerError when none."""
        if self.answer_format == "json":
            obj = last_json_object(answer)
            if obj is None or self.score_key not in obj:
                raise JudgeAnswerError(f"no JSON object with {self.score_key!r} in the answer")
            raw = obj[self.score_key]
        else:
            found = self.score_re.findall(answer)
            if not found:
                raise JudgeAnswerError(f"no score matching {self.score_re.pattern!r}")
            raw = found[-1]
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise JudgeAnswerError(f"score {raw!r} is not a number") from None
        lo_hi = self.score_range
        if not math.isfinite(value) or (lo_hi is not None and not lo_hi[0] <= value <= lo_hi[1]):
            raise JudgeAnswerError(f"score {value:g} outside {list(lo_hi or ())}")
        return value

    def _read_winner(self, answer: str) -> str:
        """ "first", "second" or "tie" from an answer naming A, B or tie."""
        if self.answer_format == "json":
            obj = last_json_object(answer)
            if obj is None or self.winner_key not in obj:
                raise JudgeAnswerError(f"no JSON object with {self.winner_key!r} in the answer")
            raw = str(obj[self.winner_key])
        else:
            found = self.winner_re.findall(answer)
            if not found:
                raise JudgeAnswerError(f"no winner matching {self.winner_re.pattern!r}")
            raw = found[-1]
        key = raw.strip().lower().removeprefix("clip").strip()
        if key not in WINNERS:
            raise JudgeAnswerError(f"winner {raw!r} is not A, B or tie")
        return WINNERS[key]
