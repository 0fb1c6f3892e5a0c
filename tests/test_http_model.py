"""HTTP reward model against a real local server (127.0.0.1) that injects 500s, 429s and timeouts."""

from __future__ import annotations

import json
import select
import threading
import time
from collections import Counter

import numpy as np
import pytest
import requests
import torch

from audiobase.preprocess import Preprocess
from rewards import transport
from rewards.base import BatchInput, RewardModel, ScoreItemError
from rewards.http import HTTPRewardModel, HTTPScoreError, encode_wav_base64
from rewards.server import ScoreHandler, make_server

SR = 24000


pytestmark = pytest.mark.usefixtures("one_thread")


class WaveStats(RewardModel):
    """Deterministic stand-in for a scorer: (text length + ref energy, mean |x| of the crop)."""

    sr = SR

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        rows = []
        for x in inputs:
            wav = torch.as_tensor(x.audio)[: int(max_dur * SR)]
            ref = 0.0 if x.ref_audio is None else float(torch.as_tensor(x.ref_audio).pow(2).mean())
            rows.append([len(x.text) + ref, float(wav.abs().mean())])
        return np.asarray(rows)


class Contracted(WaveStats):
    """WaveStats with its own preprocessing contract (as an exported scorer has)."""

    preprocess = Preprocess(sr=SR, max_dur=1.0, crop="center", target_lufs=-20.0)


class NoInfoHandler(ScoreHandler):
    """A scoring service without the /health route."""

    def do_GET(self):  # noqa: N802
        self.send_json(404, {"error": "no such route"})


class FaultyHandler(ScoreHandler):
    """Per clip (keyed by its text): attempt 1 -> 500, 2 -> 429, 3 -> stall until the client
    times out and hangs up (then a 503 nobody reads), 4 -> OK."""

    attempts: Counter = Counter()
    plan = ("500", "429", "stall", "ok")

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        key = json.loads(raw)["text"]
        with self.lock_counts:
            self.attempts[key] += 1
            step = self.plan[min(self.attempts[key], len(self.plan)) - 1]
        if key.startswith("reject"):
            return self.send_json(400, {"error": "bad clip"})
        if step == "500":
            return self.send_json(500, {"error": "boom"})
        if step == "429":
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if step == "stall":
            wait_for_hangup(self.connection)
            return self.send_json(503, {"error": "late"})
        # replay the body for the real handler
        self.headers.replace_header("Content-Length", str(len(raw)))
        self.rfile = __import__("io").BytesIO(raw)
        return super().do_POST()

    def handle(self):  # a stalled client hangs up: the server must not die
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass


def wait_for_hangup(conn, limit_s=60.0):
    """Block until the client closes `conn` (its timeout fired) or `limit_s` passes."""
    readable, _, _ = select.select([conn], [], [], limit_s)
    assert readable, f"the client kept a stalled request open for {limit_s} s"


class StillClock:
    """rewards.transport's clock in a test: time stands still and every sleep is recorded
    instead of slept (the waits the transport asks for, deterministic)."""

    def __init__(self):
        self.sleeps, self.lock = [], threading.Lock()

    def monotonic(self):
        return 1000.0

    def sleep(self, seconds):
        with self.lock:
            self.sleeps.append(seconds)

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch):
    still = StillClock()
    monkeypatch.setattr(transport, "time", still)
    return still


def serve(model, handler=ScoreHandler, api_key=None):
    server = make_server(model, "127.0.0.1", 0, api_key=api_key, handler=handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/score"


@pytest.fixture
def faulty():
    FaultyHandler.attempts = Counter()
    FaultyHandler.lock_counts = threading.Lock()
    server, url = serve(WaveStats(), FaultyHandler)
    yield url
    server.shutdown()
    server.server_close()


def clips(n=5):
    g = torch.Generator().manual_seed(1)
    return [
        BatchInput(0.1 * torch.randn(SR * (1 + i % 3), generator=g), f"clip-{i}", "", None if i % 2 else 0.1 * torch.randn(SR, generator=g))
        for i in range(n)
    ]  # fmt: skip


def client(url, **kw):
    return HTTPRewardModel(
        url,
        timeout=2.5,
        max_retries=4,
        backoff_base=0.01,
        backoff_max=0.05,
        concurrency=3,
        seed=0,
        **kw,
    )


def test_survives_500_429_and_timeouts_losing_nothing(faulty):
    xs = clips()
    m = client(faulty)
    scores = m.score_batch(xs, 8, 30.0)
    expected = WaveStats().score_batch(xs, 8, 30.0)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)  # float32 WAV transport is lossless
    assert dict(FaultyHandler.attempts) == {
        f"clip-{i}": 4 for i in range(len(xs))
    }  # bounded: 4 each
    # every clip ends in one success, after one GET /health for the model's contract; a
    # kept-alive connection the server already closed can add a retried request that never
    # reaches the handler (seen on loaded CI runners)
    stats = m.transport.stats
    assert stats["requests"] == stats["retries"] + len(xs) + 1
    assert 4 * len(xs) + 1 <= stats["requests"] <= (1 + m.transport.max_retries) * len(xs) + 1


def test_batch_equals_alone(faulty):
    FaultyHandler.plan = ("500", "429", "ok")  # no stalls: keeps the one-by-one pass quick
    try:
        xs = clips(4)
        m = client(faulty)
        batched = m.score_batch(xs, 4, 30.0)
        FaultyHandler.attempts.clear()
        alone = np.stack([m.score_batch([x], 1, 30.0)[0] for x in xs])
    finally:
        FaultyHandler.plan = ("500", "429", "stall", "ok")
    np.testing.assert_allclose(batched, alone, atol=1e-4)


def test_4xx_fails_at_once_and_is_reported_per_item(faulty):
    xs = clips(3)
    xs[1] = BatchInput(xs[1].audio, "reject-me")
    m = client(faulty)
    scores, errors = m.score_batch_detailed(xs, 3, 30.0)
    assert errors[0] is None and errors[2] is None and "HTTP 400" in errors[1]
    assert FaultyHandler.attempts["reject-me"] == 1
    assert np.isnan(scores[1]).all() and np.isfinite(scores[[0, 2]]).all()
    with pytest.raises(ScoreItemError, match=r"item 1 .*HTTP 400"):
        client(faulty).score_batch(xs, 3, 30.0)


def test_gives_up_after_max_retries(faulty):
    FaultyHandler.plan = ("500",)
    try:
        m = client(faulty)
        m.transport.max_retries = 2
        scores, errors = m.score_batch_detailed(clips(1), 1, 30.0)
    finally:
        FaultyHandler.plan = ("500", "429", "stall", "ok")
    assert np.isnan(scores).all() and "gave up after 3 attempts" in errors[0]
    assert FaultyHandler.attempts["clip-0"] == 3


def test_api_key_from_env_never_exposed(monkeypatch):
    secret = "s3cr3t-token-value"
    server, url = serve(WaveStats(), api_key=secret)
    try:
        monkeypatch.setenv("RM_TEST_KEY", secret)
        good = HTTPRewardModel(url, api_key_env="RM_TEST_KEY", max_retries=0)
        assert good.score_batch(clips(1), 1, 30.0).shape == (1, 2)
        assert secret not in repr(good) and secret not in str(vars(good))
        monkeypatch.setenv("RM_TEST_KEY", "wrong-" + secret)
        bad = HTTPRewardModel(url, api_key_env="RM_TEST_KEY", max_retries=0)
        _, errors = bad.score_batch_detailed(clips(1), 1, 30.0)
        assert "HTTP 401" in errors[0] and secret not in errors[0]
    finally:
        server.shutdown()
        server.server_close()


def test_rate_limit_spaces_request_starts(clock):
    """20 requests/s over 4 threads: each start waits 50 ms more than the one before."""
    server, url = serve(WaveStats())
    try:
        m = HTTPRewardModel(url, concurrency=4, rate_limit=20.0, info_url="")
        m.score_batch(clips(5), 5, 30.0)
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(clock.sleeps) == pytest.approx([0.05, 0.10, 0.15, 0.20])


def test_connection_refused_is_retried_then_reported():
    m = HTTPRewardModel("http://127.0.0.1:9/score", max_retries=1, backoff_base=0.01, timeout=0.5)
    with pytest.raises(ScoreItemError, match="model info from .*/health: gave up after 2 attempts"):
        m.score_batch(clips(1), 1, 30.0)
    stats = m.transport.stats
    assert stats["requests"] == 2  # the contract is asked for once per call, not per item
    _, errors = m.score_batch_detailed(clips(3), 3, 30.0)
    assert all("gave up after 2 attempts" in e for e in errors) and stats["requests"] == 4


def test_health_publishes_the_contract_and_the_client_follows_it():
    server, url = serve(Contracted())
    try:
        info = requests.get(url.replace("/score", "/health"), timeout=10).json()
        assert info == {
            "sr": SR,
            "model": "Contracted",
            "preprocess": Contracted.preprocess.to_dict(),
        }
        m = HTTPRewardModel(url, max_retries=0)
        assert m.transport.stats["requests"] == 0  # nothing asked before first use
        assert m.preprocess == Contracted.preprocess and m.sr == SR
        xs = clips(4)  # 1-3 s: the 1 s centre crop matters
        remote = m.score_batch(xs, 4, 120.0)
        pre = Contracted.preprocess
        prepared = [
            BatchInput(pre(x.audio), x.text, "", None if x.ref_audio is None else pre(x.ref_audio))
            for x in xs
        ]
        local = Contracted().score_batch(prepared, 4, pre.max_dur)
        np.testing.assert_allclose(remote, local, rtol=1e-5)
        assert m.transport.stats["requests"] == 1 + len(xs)
    finally:
        server.shutdown()
        server.server_close()


def test_request_max_dur_reaches_only_models_without_a_contract():
    ramp = np.linspace(0.0, 1.0, 3 * SR, dtype=np.float32)  # a crop's mean |x| gives its length
    body = {"audio": encode_wav_base64(ramp, SR), "text": "", "max_dur": 0.25}
    for model, seconds in ((WaveStats(), 0.25), (Contracted(), 1.0)):
        server, url = serve(model)
        try:
            got = requests.post(url, json=body, timeout=10).json()["musicality"]
        finally:
            server.shutdown()
            server.server_close()
        assert got == pytest.approx(float(ramp[: int(seconds * SR)].mean()), rel=1e-5)


def test_server_without_info_route_means_no_contract():
    server, url = serve(WaveStats(), NoInfoHandler)
    try:
        m = HTTPRewardModel(url, sr=SR, max_retries=0)
        assert m.preprocess is None and m.sr == SR
        xs = clips(2)
        np.testing.assert_allclose(
            m.score_batch(xs, 2, 1.5), WaveStats().score_batch(xs, 2, 1.5), rtol=1e-6
        )
    finally:
        server.shutdown()
        server.server_close()


def test_parser_hooks_and_errors():
    m = HTTPRewardModel("http://127.0.0.1:9/score")
    x = clips(1)[0]
    assert m.parse_response({"scores": [1, None]}, x)[0] == 1.0
    assert np.isnan(m.parse_response({"musicality": 2.0}, x)[0])
    with pytest.raises(ValueError, match="unrecognised response"):
        m.parse_response({"score": 3}, x)
    with pytest.raises(ValueError, match="http://"):
        HTTPRewardModel("ftp://x")
    assert issubclass(HTTPScoreError, RuntimeError)


def test_serves_tiny_cmi_rm_end_to_end(tmp_path_factory):
    from rewards.cmi_rm import CMIRewardModel
    from rewards.cmi_rm.tiny import build_tiny_cmi_rm

    local = CMIRewardModel(build_tiny_cmi_rm(tmp_path_factory.getbasetemp() / "cmi_rm_tiny"))
    server, url = serve(local)
    try:
        xs = clips(3)
        remote = HTTPRewardModel(url, concurrency=2).score_batch(xs, 3, 30.0)
        np.testing.assert_allclose(remote, local.score_batch(xs, 3, 30.0), atol=1e-5)
    finally:
        server.shutdown()
        server.server_close()


class TruncatingHandler(ScoreHandler):
    """Per clip: attempt 1 -> a body shorter than its Content-Length, attempt 2 -> a chunked
    body cut after one chunk, then OK. Both connections close mid-body."""

    attempts: Counter = Counter()

    def do_POST(self):  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = json.loads(raw)["text"]
        with self.lock_counts:
            self.attempts[key] += 1
            n = self.attempts[key]
        if n <= 2:
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if n == 1:
                self.send_header("Content-Length", "200")
                self.end_headers()
                self.wfile.write(b'{"alignment": 1.0, "musi')
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b'10\r\n{"alignment": 1.\r\n')
            self.wfile.flush()
            return None
        self.headers.replace_header("Content-Length", str(len(raw)))
        self.rfile = __import__("io").BytesIO(raw)
        return super().do_POST()


def test_truncated_response_bodies_are_retried():
    TruncatingHandler.attempts = Counter()
    TruncatingHandler.lock_counts = threading.Lock()
    server, url = serve(WaveStats(), TruncatingHandler)
    try:
        xs = clips(3)
        scores, errors = client(url).score_batch_detailed(xs, 3, 30.0)
    finally:
        server.shutdown()
        server.server_close()
    assert errors == [None] * 3, errors
    np.testing.assert_allclose(scores, WaveStats().score_batch(xs, 3, 30.0), rtol=1e-6)
    assert dict(TruncatingHandler.attempts) == {f"clip-{i}": 3 for i in range(3)}


class EchoKeyHandler(ScoreHandler):
    """Answers 400 with the request's Authorization header placed across the 300th character
    of the body (as a service echoing the request back in its error page)."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        self.send_json(400, {"error": "x" * (300 - len('{"error": "') - 6) + key})


def test_api_key_is_redacted_before_the_response_text_is_cut(monkeypatch):
    secret = "0123456789abcdefghijklmnopqrstuvwxyz"
    monkeypatch.setenv("RM_TEST_KEY", secret)
    server, url = serve(WaveStats(), EchoKeyHandler)
    try:
        m = HTTPRewardModel(url, sr=SR, api_key_env="RM_TEST_KEY", max_retries=0, info_url="")
        _, errors = m.score_batch_detailed(clips(1), 1, 30.0)
    finally:
        server.shutdown()
        server.server_close()
    assert "HTTP 400" in errors[0] and secret[:6] not in errors[0], errors[0]


class RetryAfterHandler(ScoreHandler):
    """First POST: 429 with `Retry-After: 1`; then OK. Counts the POSTs."""

    posts = 0

    def do_POST(self):  # noqa: N802
        RetryAfterHandler.posts += 1  # make_server serves a subclass: count on this one
        if RetryAfterHandler.posts == 1:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return super().do_POST()


def test_retry_after_is_honoured(clock):
    """The client waits the 1 s the server asks for; its own backoff here is at most 10 ms."""
    RetryAfterHandler.posts = 0
    server, url = serve(WaveStats(), RetryAfterHandler)
    try:
        m = HTTPRewardModel(url, sr=SR, backoff_base=0.01, backoff_max=5.0, info_url="")
        scores, errors = m.score_batch_detailed(clips(1), 1, 30.0)
    finally:
        server.shutdown()
        server.server_close()
    assert errors == [None] and RetryAfterHandler.posts == 2
    assert clock.sleeps == [1.0]
