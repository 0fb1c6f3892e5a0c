"""Attacks on the boundary, one test each: everything a user brings in (export folders,
checkpoints, run folders, results files, bench JSONL, HTTP requests, audio files) is data.
Read top to bottom, this module is the list of attacks the trust model (docs/security.md)
defends against; each test names the input, the attack and what must happen instead."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


# === 1-3. Code from data: config interpolation, double resolution, remote code ===========


# === 4. Server: slow clients, nested JSON, truncated audio ================================

from helpers.bench import serve as serve_in_thread
from helpers.bench import tone
from helpers.raw_http import (
    exchange,
    post_request,
    ready_connection,
    score_request,
    wav_file_request,
)

from audiobase.audio import AudioDecodeError, load_audio, save_audio
from bench.baselines import SignalStatsReward

SERVED_SR = 16_000  # SignalStatsReward's rate


@pytest.fixture
def scoring_server():
    """start(**make_server keys) -> a `rewards.serve` server (a signal-statistics model) in a
    thread; shut down after the test."""
    made = []

    def start(**kw):
        srv, _ = serve_in_thread(SignalStatsReward(sr=SERVED_SR), **kw)
        made.append(srv)
        return srv

    yield start
    for srv in made:
        srv.shutdown()
        srv.server_close()


SLOW_STARTS = {  # what a slow client sends before it stops
    "headers": b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: a",
    "body": b"POST /score HTTP/1.1\r\nAuthorization: Bearer k\r\nContent-Length: 900\r\n\r\n{",
}


@pytest.mark.parametrize("stall", sorted(SLOW_STARTS))
def test_slow_clients_cannot_hold_the_workers(scoring_server, stall):
    """Attack: slowloris. workers + 1 connections each send part of a request (headers without
    their end, or an authorised body's first byte) and stop. An authorised request must still
    be answered, within 2 s (the socket timeout bounds each read)."""
    srv = scoring_server(api_key="k", workers=2)
    slow = [ready_connection(srv.server_address) for _ in range(srv.workers + 1)]
    try:
        for s in slow:
            s.sendall(SLOW_STARTS[stall])
        clip = tone(0.5, 0.3, 440.0, 0.01, seed=0)
        status, body = exchange(srv.server_address, score_request(clip, SERVED_SR, "k"), 2.0)
    finally:
        for s in slow:
            s.close()
    assert status == 200, body


@pytest.mark.parametrize("opens", [b"[", b'{"a":'])
def test_json_nested_1000_deep_gets_a_400_and_the_server_keeps_serving(scoring_server, opens):
    """Attack: a body nesting arrays (or objects) 1000 levels deep, which a recursive JSON
    parser cannot finish. It must be answered 400 naming the depth; the server then serves on."""
    srv = scoring_server()
    closes = b"]" if opens == b"[" else b"}"
    nested = opens * 1000 + b"1" + closes * 1000
    status, body = exchange(srv.server_address, post_request(nested), 10.0)
    assert status == 400 and b"nested 1000 levels deep" in body, body
    clip = tone(0.5, 0.3, 440.0, 0.01, seed=0)
    assert exchange(srv.server_address, score_request(clip, SERVED_SR))[0] == 200


def test_a_truncated_wav_is_refused_as_the_cli_refuses_it(scoring_server, tmp_path):
    """Attack: a WAV cut short (its header declares 1 s, the file holds half of it). The score
    CLI's decoder refuses the file; the server must answer this item 400 naming the truncation,
    not score the half it holds."""
    path = save_audio(tmp_path / "clip.wav", tone(1.0, 0.3, 440.0, 0.01, seed=0), SERVED_SR)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(path, SERVED_SR)  # what the score CLI decodes a file with
    srv = scoring_server()
    status, body = exchange(srv.server_address, wav_file_request(data[: len(data) // 2], SERVED_SR))
    assert status == 400 and b"audio: not a readable WAV: truncated" in body, body


# === 5. Decompression bombs and folder walks ==============================================


# === 6, 8, 9. Paths, locks and non-finite scores in the bench =============================


# === 7. Training resume ===================================================================


# === end of attacks ========================================================================
