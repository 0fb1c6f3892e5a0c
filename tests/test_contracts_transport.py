"""The HTTP transport's rules (rewards.transport.HTTPTransport) and the HTTP reward model's
protocol (rewards.http.HTTPRewardModel): what is retried and how long it waits, what fails at
once, which headers go out, how the API key stays out of errors, and how the model's info and
requests are read and built. A stand-in session and a stand-in transport: no server, no
network; `time.sleep` and `time.monotonic` are recorded, never waited on."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import threading
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf

import rewards.transport as transport_mod
from audiobase.audio import AudioDecodeError, AudioTooLongError
from audiobase.preprocess import Preprocess
from rewards.base import BatchInput, ScoreItemError
from rewards.http import HTTPRewardModel, decode_wav_base64, encode_wav_base64
from rewards.transport import HTTPScoreError, HTTPTransport, RetryableError, retry_after

URL = "http://svc.test/score"
KEY_ENV = "AUDIOSCORE_TEST_TRANSPORT_KEY"


class Response:
    def __init__(self, status: int = 200, payload: Any = None, text: str | None = None, **headers):
        self.status_code, self.headers = status, headers
        self._payload = payload
        self.text = json.dumps(payload) if text is None else text

    def json(self) -> Any:
        return json.loads(self.text)


class Session:
    """Answers each request with the next of `answers` (a Response or an exception to raise)."""

    def __init__(self, *answers: Any) -> None:
        self.answers, self.calls = list(answers), []

    def request(self, method, url, data=None, headers=None, timeout=None):
        self.calls.append({"method": method, "url": url, "data": data, "headers": headers})
        self.calls[-1]["timeout"] = timeout
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Every `time.sleep` of the transport, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(transport_mod.time, "sleep", slept.append)
    return slept


def with_session(t: HTTPTransport, session: Session) -> HTTPTransport:
    t._local.session = session
    return t


class TopRng:
    """A jitter source that always draws the top of its range (and records the ranges)."""

    def __init__(self, pick=lambda lo, hi: hi) -> None:
        self.ranges: list[tuple[float, float]] = []
        self.pick = pick

    def uniform(self, lo: float, hi: float) -> float:
        self.ranges.append((lo, hi))
        return self.pick(lo, hi)


# ---------------------------------------------------------------- retry_after / errors


def test_retry_after_reads_seconds_and_clamps_negative_to_zero():
    assert retry_after({"Retry-After": "2.5"}) == 2.5
    assert retry_after({"Retry-After": "-3"}) == 0.0
    assert retry_after({"Retry-After": "0"}) == 0.0


def test_retry_after_absent_or_an_http_date_is_none():
    assert retry_after({}) is None
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None


def test_http_score_error_defaults_to_no_status_and_one_attempt():
    e = HTTPScoreError("boom")
    assert (str(e), e.status, e.attempts) == ("boom", None, 1)
    e = HTTPScoreError("boom", 404, 3)
    assert (e.status, e.attempts) == (404, 3)


def test_retryable_error_defaults_to_no_status_and_no_retry_after():
    e = RetryableError("again")
    assert (str(e), e.status, e.retry_after) == ("again", None, None)
    e = RetryableError("again", 503, 1.5)
    assert (e.status, e.retry_after) == (503, 1.5)


# ---------------------------------------------------------------- construction


def test_defaults_are_the_documented_ones():
    t = HTTPTransport()
    assert (t.api_key_env, t.api_key_header, t.api_key_prefix) == (None, "Authorization", "Bearer ")
    assert (t.timeout, t.max_retries, t.backoff_base, t.backoff_max) == (60.0, 4, 0.5, 30.0)
    assert (t.concurrency, t.rate_limit, t.headers) == (4, None, {})
    assert t.stats == {"requests": 0, "retries": 0}
    assert repr(t) == "HTTPTransport(concurrency=4, max_retries=4)"


def test_settings_are_kept_as_numbers_of_their_kind():
    t = HTTPTransport(timeout=5, max_retries=2, backoff_base=1, backoff_max=3, concurrency=2)
    assert [type(v) for v in (t.timeout, t.backoff_base, t.backoff_max)] == [float] * 3
    assert (t.timeout, t.max_retries, t.backoff_base, t.backoff_max) == (5.0, 2, 1.0, 3.0)
    assert (t.concurrency, type(t.max_retries), type(t.concurrency)) == (2, int, int)
    t = HTTPTransport(rate_limit=2.0, api_key_env="E", api_key_header="X-Key", api_key_prefix="")
    assert (t.rate_limit, t.api_key_env, t.api_key_header, t.api_key_prefix) == (
        2.0,
        "E",
        "X-Key",
        "",
    )


def test_headers_are_copied_not_shared():
    given = {"X-A": "1"}
    t = HTTPTransport(headers=given)
    given["X-B"] = "2"
    assert t.headers == {"X-A": "1"}


@pytest.mark.parametrize(
    "bad", [{"concurrency": 0}, {"max_retries": -1}, {"timeout": 0}, {"timeout": -1.0}]
)
def test_impossible_settings_are_refused(bad):
    with pytest.raises(ValueError, match=r"^need concurrency >= 1, max_retries >= 0, timeout > 0$"):
        HTTPTransport(**bad)


def test_the_smallest_possible_settings_are_accepted():
    t = HTTPTransport(concurrency=1, max_retries=0, timeout=0.001)
    assert (t.concurrency, t.max_retries) == (1, 0)


# ---------------------------------------------------------------- retries and backoff


def test_a_success_needs_no_retry_and_no_wait(sleeps):
    t = HTTPTransport()
    assert t.with_retries(lambda: "ok") == "ok"
    assert sleeps == [] and t.stats["retries"] == 0


def test_retryable_failures_are_retried_until_success_and_counted(sleeps):
    t = HTTPTransport(max_retries=3, seed=0)
    left = [RetryableError("a"), RetryableError("b")]

    def attempt():
        if left:
            raise left.pop(0)
        return 7

    assert t.with_retries(attempt) == 7
    assert len(sleeps) == 2 and t.stats["retries"] == 2


def test_giving_up_names_the_attempts_and_the_last_error_and_keeps_its_status(sleeps):
    t = HTTPTransport(max_retries=2, seed=0)
    n = iter(range(10))

    def attempt():
        raise RetryableError(f"HTTP 503 #{next(n)}", 503 + len(sleeps))

    with pytest.raises(HTTPScoreError) as err:
        t.with_retries(attempt)
    assert str(err.value) == "gave up after 3 attempts: HTTP 503 #2"
    assert (err.value.status, err.value.attempts) == (505, 3)
    assert len(sleeps) == 2 and t.stats["retries"] == 2


def test_no_retries_means_one_attempt_and_no_wait(sleeps):
    t = HTTPTransport(max_retries=0)
    calls = []

    def attempt():
        calls.append(1)
        raise RetryableError("x")

    with pytest.raises(HTTPScoreError, match=r"^gave up after 1 attempts: x$") as err:
        t.with_retries(attempt)
    assert calls == [1] and sleeps == [] and err.value.status is None


def test_other_exceptions_fail_at_once_without_retry(sleeps):
    t = HTTPTransport(max_retries=3)
    with pytest.raises(KeyError):
        t.with_retries(lambda: {}["x"])
    assert sleeps == [] and t.stats["retries"] == 0


def test_backoff_doubles_from_the_base_up_to_the_max_with_full_jitter(sleeps):
    t = HTTPTransport(max_retries=4, backoff_base=1.0, backoff_max=3.0)
    t._rng = rng = TopRng()
    with pytest.raises(HTTPScoreError):
        t.with_retries(lambda: (_ for _ in ()).throw(RetryableError("x")))
    assert rng.ranges == [(0, 1.0), (0, 2.0), (0, 3.0), (0, 3.0)]
    assert sleeps == [1.0, 2.0, 3.0, 3.0]


def test_retry_after_is_a_floor_on_the_wait_capped_at_backoff_max(sleeps):
    t = HTTPTransport(max_retries=2, backoff_base=1.0, backoff_max=4.0)
    t._rng = TopRng(lambda lo, hi: 0.25)
    waits = iter([RetryableError("x", 429, 2.0), RetryableError("x", 429, 60.0)])
    with pytest.raises(HTTPScoreError):
        t.with_retries(lambda: (_ for _ in ()).throw(next(waits, RetryableError("x"))))
    assert sleeps == [2.0, 4.0]


def test_jitter_below_retry_after_is_raised_and_above_is_kept(sleeps):
    t = HTTPTransport(max_retries=1, backoff_base=1.0, backoff_max=10.0)
    t._rng = TopRng(lambda lo, hi: 0.75)
    with pytest.raises(HTTPScoreError):
        t.with_retries(lambda: (_ for _ in ()).throw(RetryableError("x", 429, 0.5)))
    assert sleeps == [0.75]


def test_seeded_jitter_is_reproducible(sleeps):
    def waits(seed):
        sleeps.clear()
        t = HTTPTransport(max_retries=3, seed=seed)
        with pytest.raises(HTTPScoreError):
            t.with_retries(lambda: (_ for _ in ()).throw(RetryableError("x")))
        return list(sleeps)

    first = waits(5)
    assert first == waits(5) and all(0 <= w <= 0.5 * 2**i for i, w in enumerate(first))


# ---------------------------------------------------------------- one request


def test_send_posts_the_body_with_headers_and_timeout_and_decodes_json(sleeps):
    session = Session(Response(200, {"ok": 1}))
    t = with_session(HTTPTransport(timeout=7), session)
    assert t.send("post", URL, '{"a": 1}') == {"ok": 1}
    assert session.calls == [
        {
            "method": "post",
            "url": URL,
            "data": '{"a": 1}',
            "headers": {"Content-Type": "application/json"},
            "timeout": 7.0,
        }
    ]
    assert t.stats["requests"] == 1


def test_send_without_a_body_sends_none():
    session = Session(Response(200, [1]))
    t = with_session(HTTPTransport(), session)
    assert t.send("get", URL) == [1]
    assert session.calls[0]["data"] is None


def test_each_thread_opens_one_session_and_reuses_it(monkeypatch):
    made = []

    class Counted(Session):
        def __init__(self):
            super().__init__(Response(200, 1), Response(200, 2))
            made.append(self)

    monkeypatch.setattr(transport_mod.requests, "Session", Counted)
    t = HTTPTransport()
    assert (t.send("get", URL), t.send("get", URL)) == (1, 2)
    assert len(made) == 1 and t.stats["requests"] == 2
    other = []
    thread = threading.Thread(target=lambda: other.append(t.send("get", URL)))
    thread.start()
    thread.join()
    assert other == [1] and len(made) == 2


@pytest.mark.parametrize("status", [429, 500, 503, 599])
def test_429_and_5xx_are_retryable_with_their_status_and_retry_after(status):
    t = with_session(HTTPTransport(), Session(Response(status, {}, **{"Retry-After": "3"})))
    with pytest.raises(RetryableError) as err:
        t.send("post", URL, "{}")
    assert str(err.value) == f"HTTP {status} from {URL}"
    assert (err.value.status, err.value.retry_after) == (status, 3.0)


@pytest.mark.parametrize(
    "exc",
    [
        requests.ConnectionError("refused"),
        requests.Timeout("slow"),
        requests.exceptions.ChunkedEncodingError("cut"),
    ],
)
def test_connection_errors_timeouts_and_cut_bodies_are_retryable(exc):
    t = with_session(HTTPTransport(), Session(exc))
    with pytest.raises(RetryableError) as err:
        t.send("post", URL, "{}")
    assert str(err.value) == f"{type(exc).__name__} contacting {URL}"
    assert err.value.status is None and err.value.__cause__ is None


@pytest.mark.parametrize("status", [400, 404, 499])
def test_other_4xx_fail_at_once_quoting_the_first_300_characters(status):
    t = with_session(HTTPTransport(), Session(Response(status, text="e" * 400)))
    with pytest.raises(HTTPScoreError) as err:
        t.send("post", URL, "{}")
    assert str(err.value) == f"HTTP {status} from {URL}: {'e' * 300}"
    assert (err.value.status, err.value.attempts) == (status, 1)


def test_a_399_is_no_error():
    t = with_session(HTTPTransport(), Session(Response(399, {"x": 1})))
    assert t.send("get", URL) == {"x": 1}


def test_a_200_that_is_not_json_fails_at_once_quoting_200_characters():
    t = with_session(HTTPTransport(), Session(Response(200, text="<" * 300)))
    with pytest.raises(HTTPScoreError) as err:
        t.send("get", URL)
    assert str(err.value) == f"non-JSON response from {URL}: {'<' * 200!r}"
    assert err.value.status == 200


def test_request_parses_the_json_and_retries_what_parse_calls_retryable(sleeps):
    session = Session(Response(200, {"n": 1}), Response(200, {"n": 2}))
    t = with_session(HTTPTransport(seed=0), session)

    def parse(p):
        if p["n"] < 2:
            raise RetryableError("not yet")
        return p["n"] * 10

    assert t.request("post", URL, "{}", parse) == 20
    assert [c["method"] for c in session.calls] == ["post", "post"]
    assert [c["data"] for c in session.calls] == ["{}", "{}"]
    assert len(sleeps) == 1 and t.stats == {"requests": 2, "retries": 1}


def test_request_without_parse_returns_the_decoded_json():
    t = with_session(HTTPTransport(), Session(Response(200, {"a": [1]})))
    assert t.request("get", URL) == {"a": [1]}


def test_a_parse_error_fails_at_once():
    session = Session(Response(200, {}), Response(200, {}))
    t = with_session(HTTPTransport(), session)
    with pytest.raises(KeyError):
        t.request("get", URL, None, lambda p: p["missing"])
    assert len(session.calls) == 1


# ---------------------------------------------------------------- headers and the key


def test_headers_hold_the_content_type_and_the_configured_ones():
    t = HTTPTransport(headers={"X-A": "1"})
    assert t.request_headers() == {"Content-Type": "application/json", "X-A": "1"}
    t = HTTPTransport(headers={"Content-Type": "text/plain"})
    assert t.request_headers() == {"Content-Type": "text/plain"}


def test_the_key_is_read_from_the_environment_at_request_time(monkeypatch):
    t = HTTPTransport(api_key_env=KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "k1")
    assert t.request_headers()["Authorization"] == "Bearer k1"
    monkeypatch.setenv(KEY_ENV, "k2")
    assert t.request_headers()["Authorization"] == "Bearer k2"
    assert "k2" not in repr(vars(t))


def test_the_key_goes_under_the_configured_header_and_prefix(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "k")
    t = HTTPTransport(api_key_env=KEY_ENV, api_key_header="X-Key", api_key_prefix="")
    assert t.request_headers() == {"Content-Type": "application/json", "X-Key": "k"}


def test_an_unset_key_sends_none_and_warns_naming_the_variable(monkeypatch, caplog):
    monkeypatch.delenv(KEY_ENV, raising=False)
    t = HTTPTransport(api_key_env=KEY_ENV)
    with caplog.at_level(logging.WARNING, logger="rewards.transport"):
        assert t.request_headers() == {"Content-Type": "application/json"}
    assert [r.getMessage() for r in caplog.records] == [
        f"environment variable {KEY_ENV} is not set; sending no API key"
    ]


def test_an_empty_key_sends_none_and_warns(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, "")
    t = HTTPTransport(api_key_env=KEY_ENV)
    with caplog.at_level(logging.WARNING, logger="rewards.transport"):
        assert "Authorization" not in t.request_headers()
    assert len(caplog.records) == 1


def test_no_key_variable_means_no_key_and_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="rewards.transport"):
        assert HTTPTransport().request_headers() == {"Content-Type": "application/json"}
    assert caplog.records == []


def test_the_key_is_redacted_before_the_error_text_is_cut(monkeypatch):
    key = "sk-" + "s" * 40
    monkeypatch.setenv(KEY_ENV, key)
    text = "x" * 280 + key
    t = with_session(HTTPTransport(api_key_env=KEY_ENV), Session(Response(401, text=text)))
    with pytest.raises(HTTPScoreError) as err:
        t.send("post", URL)
    assert str(err.value) == f"HTTP 401 from {URL}: {('x' * 280 + '***')[:300]}"
    t = with_session(HTTPTransport(api_key_env=KEY_ENV), Session(Response(200, text=text)))
    with pytest.raises(HTTPScoreError) as err:
        t.send("post", URL)
    assert str(err.value) == f"non-JSON response from {URL}: {('x' * 280 + '***')[:200]!r}"


def test_redact_replaces_the_key_and_leaves_text_alone_without_one(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sekrit")
    assert HTTPTransport(api_key_env=KEY_ENV).redact("a sekrit b") == "a *** b"
    assert HTTPTransport().redact("a sekrit b") == "a sekrit b"
    monkeypatch.setenv(KEY_ENV, "")
    assert HTTPTransport(api_key_env=KEY_ENV).redact("a b") == "a b"


def test_describe_is_type_and_message_redacted(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sekrit")
    t = HTTPTransport(api_key_env=KEY_ENV)
    assert t.describe(ValueError("bad sekrit")) == "ValueError: bad ***"


# ---------------------------------------------------------------- many at once


def test_map_keeps_the_order_and_records_each_failure_in_its_own_slot(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sekrit")
    t = HTTPTransport(api_key_env=KEY_ENV, concurrency=2)

    def fn(i):
        if i == 1:
            raise RuntimeError("no sekrit")
        return i * 10

    assert t.map(fn, 3) == ([0, None, 20], [None, "RuntimeError: no ***", None])


def test_map_of_nothing_runs_nothing():
    assert HTTPTransport().map(lambda i: 1 / 0, 0) == ([], [])


def test_map_runs_up_to_concurrency_calls_at_once():
    t = HTTPTransport(concurrency=3)
    barrier = threading.Barrier(3, timeout=30)
    results, errors = t.map(lambda i: barrier.wait() >= 0, 3)
    assert results == [True] * 3 and errors == [None] * 3


@pytest.mark.parametrize(("concurrency", "n", "workers"), [(2, 5, 2), (4, 3, 3), (1, 1, 1)])
def test_map_starts_no_more_workers_than_concurrency_or_calls(monkeypatch, concurrency, n, workers):
    asked = []

    class Pool(transport_mod.ThreadPoolExecutor):
        def __init__(self, max_workers=None):
            asked.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(transport_mod, "ThreadPoolExecutor", Pool)
    assert HTTPTransport(concurrency=concurrency).map(lambda i: i, n)[0] == list(range(n))
    assert asked == [workers]


def test_map_with_concurrency_one_runs_one_call_at_a_time():
    t = HTTPTransport(concurrency=1)
    threads = set()
    t.map(lambda i: threads.add(threading.get_ident()), 4)
    assert len(threads) == 1


# ---------------------------------------------------------------- pacing


def test_rate_limit_spaces_request_starts(monkeypatch, sleeps):
    monkeypatch.setattr(transport_mod.time, "monotonic", lambda: 100.0)
    t = HTTPTransport(rate_limit=4.0)
    for _ in range(3):
        t._pace()
    assert sleeps == [0.25, 0.5]


def test_a_request_after_the_spacing_has_passed_does_not_wait(monkeypatch, sleeps):
    now = iter([100.0, 101.0])
    monkeypatch.setattr(transport_mod.time, "monotonic", lambda: next(now))
    t = HTTPTransport(rate_limit=2.0)
    t._pace()
    t._pace()
    assert sleeps == [] and t._next_start == 101.5


def test_no_rate_limit_never_waits(monkeypatch, sleeps):
    monkeypatch.setattr(transport_mod.time, "monotonic", lambda: 100.0)
    t = HTTPTransport()
    for _ in range(3):
        t._pace()
    assert sleeps == [] and t._next_start == 0.0


def test_send_is_paced(monkeypatch, sleeps):
    monkeypatch.setattr(transport_mod.time, "monotonic", lambda: 5.0)
    t = with_session(HTTPTransport(rate_limit=1.0), Session(Response(200, 1), Response(200, 2)))
    t.send("get", URL)
    t.send("get", URL)
    assert sleeps == [1.0]


# ================================================================ rewards.http

SR = 8000


def wav_of(obj: dict[str, Any]) -> tuple[np.ndarray, int, str]:
    data, sr = sf.read(io.BytesIO(base64.b64decode(obj["data"])), dtype="float32")
    return data, sr, sf.info(io.BytesIO(base64.b64decode(obj["data"]))).subtype


def test_encode_wav_base64_is_a_lossless_float_wav():
    wav = np.array([0.0, 0.123456789, -1.5, 2.0], dtype=np.float64)
    obj = encode_wav_base64(wav, SR)
    assert (obj["format"], obj["sr"], sorted(obj)) == ("wav", SR, ["data", "format", "sr"])
    data, sr, subtype = wav_of(obj)
    assert (sr, subtype) == (SR, "FLOAT")
    np.testing.assert_array_equal(data, wav.astype(np.float32))
    assert isinstance(obj["data"], str)


def test_decode_wav_base64_inverts_encode():
    wav = np.array([0.5, -0.25, 0.125], dtype=np.float32)
    got, sr = decode_wav_base64(encode_wav_base64(wav, SR))
    np.testing.assert_array_equal(got, wav)
    assert sr == SR


def test_decode_wav_base64_names_the_request_audio_in_errors():
    bad = {"data": base64.b64encode(b"not a wav at all").decode()}
    with pytest.raises(AudioDecodeError, match=r"^<request audio>: "):
        decode_wav_base64(bad)
    with pytest.raises(AudioDecodeError, match=r"^ref_audio: "):
        decode_wav_base64(bad, "ref_audio")


def test_decode_wav_base64_refuses_audio_past_max_seconds():
    obj = encode_wav_base64(np.zeros(SR * 2, np.float32), SR)
    with pytest.raises(AudioTooLongError, match=r"^clip: longer than the limit of max_seconds=1 s"):
        decode_wav_base64(obj, "clip", max_seconds=1.0)
    assert decode_wav_base64(obj, "clip", max_seconds=None)[0].shape == (SR * 2,)


class Stub:
    """Stands in for the model's transport.request: answers `get` with `info` (or raises it)
    and `post` with `parse(reply(body))`."""

    def __init__(self, info: Any = None, reply=lambda body: {"alignment": 1, "musicality": 2}):
        self.info, self.reply, self.calls = info, reply, []

    def __call__(self, method, url, body=None, parse=lambda x: x):
        self.calls.append((method, url, body))
        if method == "get":
            if isinstance(self.info, BaseException):
                raise self.info
            return parse(self.info)
        return parse(self.reply(json.loads(body)))


def model(stub: Stub | None = None, **kw: Any) -> HTTPRewardModel:
    m = HTTPRewardModel(URL, **kw)
    if stub is not None:
        m.transport.request = stub
    return m


def test_url_must_be_http_or_https():
    with pytest.raises(
        ValueError, match=r"^url must start with http:// or https://, got 'ftp://x'$"
    ):
        HTTPRewardModel("ftp://x")
    assert HTTPRewardModel("https://svc.test/s").url == "https://svc.test/s"


def test_info_url_defaults_to_health_next_to_the_url_and_empty_asks_nothing():
    assert model().info_url == "http://svc.test/health"
    assert model(info_url="http://other.test/info").info_url == "http://other.test/info"
    stub = Stub({"sr": 1})
    m = model(stub, info_url="")
    assert m.server_info() == {} and stub.calls == []


def test_transport_keys_reach_the_transport_and_sr_is_an_int():
    m = HTTPRewardModel(URL, sr="16000", concurrency=2, max_retries=1, timeout=3)
    assert (m.transport.concurrency, m.transport.max_retries, m.transport.timeout) == (2, 1, 3.0)
    assert m.sr == 16000 and type(m.sr) is int
    assert repr(m) == f"HTTPRewardModel(url={URL!r}, concurrency=2)"


def test_the_default_rate_is_24_khz():
    assert model().sr == 24000


def test_an_overridden_parser_is_given_the_item():
    class ByText(HTTPRewardModel):
        def parse_response(self, payload, item):
            return float(len(item.text)), float(payload["m"])

    m = ByText(URL, sr=SR)
    m.transport.request = Stub({"sr": SR}, lambda body: {"m": 0.5})
    got = m.score_batch([BatchInput(np.ones(4, np.float32) * 0.1, "abc")], 1, 1.0)
    np.testing.assert_array_equal(got, [[3.0, 0.5]])


def test_extra_body_is_copied():
    extra = {"a": 1}
    m = model(extra_body=extra)
    extra["b"] = 2
    assert m.extra_body == {"a": 1}
    assert model().extra_body == {}


def test_sr_is_the_configured_one_until_the_server_says_otherwise():
    stub = Stub({"sr": 16000})
    m = model(stub, sr=24000)
    assert m.sr == 24000 and stub.calls == []  # reading sr sends nothing
    assert m.server_info() == {"sr": 16000, "preprocess": None}
    assert m.sr == 16000


def test_info_is_fetched_once_from_the_info_url():
    stub = Stub({"sr": 24000})
    m = model(stub)
    m.server_info()
    m.server_info()
    assert m.preprocess is None
    assert stub.calls == [("get", "http://svc.test/health", None)]


def test_the_server_contract_becomes_the_preprocess_and_its_sr_wins():
    pre = Preprocess(sr=16000, max_dur=1.0, crop="center")
    stub = Stub({"sr": 99, "preprocess": pre.to_dict()})
    m = model(stub)
    assert m.preprocess == pre
    assert m.server_info()["sr"] == 16000 and type(m.server_info()["sr"]) is int


def test_a_server_answering_no_sr_leaves_the_configured_one():
    m = model(Stub({"preprocess": None}), sr=22050)
    assert m.server_info() == {"sr": None, "preprocess": None}
    assert m.sr == 22050


def test_a_contract_at_another_rate_than_configured_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="rewards.http"):
        model(Stub({"sr": "16000"}), sr=24000).server_info()
    assert [r.getMessage() for r in caplog.records] == [
        f"{URL}: the server's model runs at 16000 Hz, not sr=24000"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rewards.http"):
        model(Stub({"sr": 24000}), sr=24000).server_info()
    assert caplog.records == []


@pytest.mark.parametrize("status", [None, 429, 500, 503])
def test_an_info_route_that_cannot_be_reached_fails_with_its_status(status):
    m = model(Stub(HTTPScoreError("down", status, 5)))
    with pytest.raises(HTTPScoreError) as err:
        m.server_info()
    assert str(err.value) == "cannot read model info from http://svc.test/health: down"
    assert (err.value.status, err.value.attempts, err.value.__cause__) == (status, 5, None)


@pytest.mark.parametrize("status", [400, 404, 499])
def test_an_info_route_answering_4xx_means_no_contract(status, caplog):
    m = model(Stub(HTTPScoreError("nope", status)))
    with caplog.at_level(logging.WARNING, logger="rewards.http"):
        assert m.server_info() == {}
    assert [r.getMessage() for r in caplog.records] == [
        "http://svc.test/health: nope; assuming no preprocessing contract"
    ]
    assert m.preprocess is None


def test_info_that_is_not_a_json_object_means_no_contract(caplog):
    m = model(Stub([1, 2]))
    with caplog.at_level(logging.WARNING, logger="rewards.http"):
        assert m.server_info() == {}
    assert [r.getMessage() for r in caplog.records] == [
        "http://svc.test/health: not a JSON object; assuming no contract"
    ]


def test_an_unusable_contract_fails_naming_it():
    m = model(Stub({"preprocess": {"sr": 16000, "bogus": 1}}))
    with pytest.raises(HTTPScoreError, match=r"^http://svc.test/health: unusable preprocess ") as e:
        m.server_info()
    assert "'bogus': 1" in str(e.value) and e.value.__cause__ is None
    m = model(Stub({"preprocess": {"sr": "x", "max_dur": []}}))
    with pytest.raises(HTTPScoreError, match="unusable preprocess"):
        m.server_info()


def posted(stub: Stub) -> dict[str, Any]:
    return json.loads(stub.calls[-1][2])


def test_without_a_contract_the_request_holds_the_runners_first_max_dur_seconds():
    stub = Stub({"sr": SR})
    m = model(stub, sr=SR, extra_body={"model": "m1"})
    wav = np.arange(SR * 2, dtype=np.float32) / (SR * 4)
    got = m.score_batch([BatchInput(wav, "a text", "la la")], 1, 0.5)
    np.testing.assert_array_equal(got, [[1.0, 2.0]])
    body = posted(stub)
    assert stub.calls[-1][:2] == ("post", URL)
    assert (body["text"], body["lyrics"], body["ref_audio"], body["max_dur"]) == (
        "a text",
        "la la",
        None,
        0.5,
    )
    assert body["model"] == "m1" and body["audio"]["sr"] == SR
    audio, sr, _ = wav_of(body["audio"])
    np.testing.assert_array_equal(audio, wav[: SR // 2])


def test_a_zero_max_dur_sends_the_whole_clip():
    stub = Stub({"sr": SR})
    wav = np.linspace(-0.5, 0.5, SR, dtype=np.float32)
    model(stub, sr=SR).score_batch([BatchInput(wav)], 1, 0.0)
    body = posted(stub)
    assert wav_of(body["audio"])[0].shape == (SR,)
    assert (body["text"], body["lyrics"], body["max_dur"]) == ("", "", 0.0)


def test_with_a_contract_the_server_preprocess_prepares_audio_and_ref():
    pre = Preprocess(sr=SR, max_dur=0.5, crop="center")
    stub = Stub({"preprocess": pre.to_dict()})
    wav = np.arange(SR * 2, dtype=np.float32) / (SR * 4)
    ref = wav[::-1].copy()
    model(stub, sr=SR).score_batch([BatchInput(wav, ref_audio=ref)], 1, 2.0)
    body = posted(stub)
    np.testing.assert_array_equal(wav_of(body["audio"])[0], pre(wav))
    np.testing.assert_array_equal(wav_of(body["ref_audio"])[0], pre(ref))
    assert body["ref_audio"]["sr"] == SR and body["max_dur"] == 2.0


def test_call_keywords_join_the_request_body():
    stub = Stub({"sr": SR})
    model(stub, sr=SR, extra_body={"a": 1}).score_batch(
        [BatchInput(np.ones(10, np.float32) * 0.1)], 1, 1.0, a=2, seed=3
    )
    body = posted(stub)
    assert (body["a"], body["seed"]) == (2, 3)


def test_parse_response_reads_named_scores_with_null_as_nan():
    m = model()
    item = BatchInput(np.zeros(1))
    assert m.parse_response({"alignment": 1, "musicality": 2}, item) == (1.0, 2.0)
    a, mu = m.parse_response({"musicality": 0.5}, item)
    assert math.isnan(a) and mu == 0.5
    a, mu = m.parse_response({"alignment": "3"}, item)
    assert a == 3.0 and math.isnan(mu)


def test_parse_response_reads_a_pair_of_scores():
    m = model()
    item = BatchInput(np.zeros(1))
    a, mu = m.parse_response({"scores": [None, "4"]}, item)
    assert math.isnan(a) and mu == 4.0


@pytest.mark.parametrize("payload", [[1, 2], {"scores": [1, 2, 3]}, {"scores": "12"}, {}])
def test_parse_response_refuses_anything_else_quoting_it(payload):
    with pytest.raises(ValueError, match=r"^unrecognised response ") as err:
        model().parse_response(payload, BatchInput(np.zeros(1)))
    assert repr(str(payload)[:200]) in str(err.value)


def test_a_long_unrecognised_response_is_quoted_to_200_characters():
    with pytest.raises(ValueError) as err:
        model().parse_response({"x": "y" * 500}, BatchInput(np.zeros(1)))
    assert str(err.value) == f"unrecognised response {str({'x': 'y' * 500})[:200]!r}"


def test_score_batch_detailed_of_nothing_asks_nothing():
    stub = Stub({"sr": SR})
    scores, errors = model(stub).score_batch_detailed([], 1, 1.0)
    assert scores.shape == (0, 2) and errors == [] and stub.calls == []


def test_an_unreachable_info_route_fails_every_item_with_one_fetch():
    stub = Stub(HTTPScoreError("down", None))
    items = [BatchInput(np.zeros(4, np.float32)), BatchInput(np.zeros(4, np.float32))]
    scores, errors = model(stub).score_batch_detailed(items, 2, 1.0)
    assert np.isnan(scores).all() and scores.shape == (2, 2)
    msg = "HTTPScoreError: cannot read model info from http://svc.test/health: down"
    assert errors == [msg, msg] and len(stub.calls) == 1


def test_a_failed_item_is_nan_and_the_others_are_scored():
    def reply(body):
        if body["text"] == "bad":
            return {"nothing": 1}
        return {"scores": [len(body["text"]), 0.5]}

    stub = Stub({"sr": SR}, reply)
    items = [BatchInput(np.ones(4, np.float32) * 0.1, t) for t in ("ab", "bad", "abcd")]
    scores, errors = model(stub, sr=SR).score_batch_detailed(items, 3, 1.0)
    np.testing.assert_array_equal(scores[[0, 2]], [[2.0, 0.5], [4.0, 0.5]])
    assert np.isnan(scores[1]).all()
    assert errors[0] is None and errors[2] is None
    assert errors[1].startswith("ValueError: unrecognised response")


def test_score_batch_raises_for_the_first_failed_item_naming_it():
    stub = Stub({"sr": SR}, lambda body: {} if body["text"] != "ok" else {"scores": [1, 2]})
    items = [
        BatchInput(np.ones(4, np.float32) * 0.1, "ok"),
        BatchInput(np.ones(4, np.float32) * 0.1, "x", path="second.wav"),
        BatchInput(np.ones(4, np.float32) * 0.1, "y", path="third.wav"),
    ]
    with pytest.raises(ScoreItemError) as err:
        model(stub, sr=SR).score_batch(items, 3, 1.0)
    assert (err.value.index, err.value.audio) == (1, "second.wav")
    assert err.value.reason.startswith("ValueError: unrecognised response")
