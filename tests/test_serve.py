"""`rewards.serve` under hostile clients: bad audio, trickled headers and bodies, idle and
pipelined connections, too many connections in all and from one client, oversized bodies and
durations, and serving without a key where others can reach it (the attacks that must not
hold the server are in test_hostile.py, section 4)."""

from __future__ import annotations

import base64
import json
import logging
import socket

import numpy as np
import pytest
import requests
import torch
from helpers.bench import serve
from helpers.raw_http import (
    read_response,
    ready_connection,
    score_request,
    trickle_until_answered,
)

from rewards.base import RewardModel
from rewards.http import encode_wav_base64
from rewards.server import json_depth, make_server

SR = 16_000


class MeanAbs(RewardModel):
    """(0, mean |x| of the crop): the score gives away how much audio the model saw."""

    sr = SR

    def score_batch(self, inputs, batch_size, max_dur, **kwargs):
        return np.asarray(
            [
                [0.0, float(torch.as_tensor(x.audio)[: int(max_dur * SR)].abs().mean())]
                for x in inputs
            ]
        )


@pytest.fixture
def server():
    made = []

    def start(**kw):
        srv, url = serve(MeanAbs(), **kw)
        made.append(srv)
        return srv, url

    yield start
    for srv in made:
        srv.shutdown()
        srv.server_close()


def test_a_body_that_is_not_audio_gets_a_400_naming_the_reason(server):
    _, url = server()
    body = {"audio": {"format": "wav", "sr": SR, "data": base64.b64encode(b"no wav").decode()}}
    r = requests.post(url, json=body, timeout=10)
    assert r.status_code == 400 and "not a readable WAV" in r.json()["error"]
    r = requests.post(url, json={"audio": {"data": "%%% not base64"}}, timeout=10)
    assert r.status_code == 400 and "audio" in r.json()["error"]


def test_headers_trickled_a_byte_at_a_time_get_408_at_the_header_deadline(server):
    """The deadline is for all the headers, not per byte: a byte every 50 ms never stalls a
    read, yet the client is answered 408 and dropped once `header_timeout` has passed."""
    srv, _ = server(header_timeout=0.5)
    with socket.create_connection(srv.server_address, timeout=5) as s:
        reply = trickle_until_answered(s, b"GET /health HTTP/1.1\r\nX-Pad: " + b"a" * 200, 0.05)
    assert reply.startswith(b"HTTP/1.1 408"), reply


def test_a_body_trickled_a_byte_at_a_time_gets_408_at_the_body_deadline(server):
    srv, _ = server(body_timeout=0.5)
    with socket.create_connection(srv.server_address, timeout=5) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n")
        reply = trickle_until_answered(s, b"{" * 300, 0.05)
    assert reply.startswith(b"HTTP/1.1 408") and b"body not received" in reply, reply


def test_an_idle_kept_alive_connection_is_closed_without_a_reply(server):
    srv, _ = server(header_timeout=0.3)
    with ready_connection(srv.server_address, timeout=5) as s:
        assert s.recv(4096) == b""  # EOF at the deadline; the socket timeout bounds the wait


def test_a_body_without_the_key_is_refused_before_it_is_read(server):
    srv, _ = server(api_key="k")
    with socket.create_connection(srv.server_address, timeout=5) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        status, headers, body = read_response(s)  # no byte of the body was sent
    assert status == 401 and headers["connection"] == "close", body


def test_pipelined_requests_are_answered_in_order(server):
    srv, _ = server()
    with socket.create_connection(srv.server_address, timeout=5) as s:
        s.sendall(score_request(np.full(SR, 0.5, np.float32), SR) + b"GET /nope HTTP/1.1\r\n\r\n")
        first, second = read_response(s), read_response(s)
    assert first[0] == 200 and json.loads(first[2])["musicality"] == pytest.approx(0.5)
    assert second[0] == 404


def test_a_chunked_body_gets_501(server):
    srv, _ = server()
    with socket.create_connection(srv.server_address, timeout=5) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        status, _, body = read_response(s)
    assert status == 501 and b"Content-Length" in body


def test_connections_beyond_max_connections_get_503(server):
    srv, url = server(max_connections=1)
    health = url.replace("/score", "/health")
    with ready_connection(srv.server_address) as s:  # holds the only connection
        r = requests.get(health, timeout=10)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        s.sendall(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        read_response(s)
        assert s.recv(1) == b""  # closed by the server: its connection is released
    assert requests.get(health, timeout=10).status_code == 200


def test_connections_beyond_max_per_client_get_429_and_other_clients_are_served(server):
    srv, url = server(max_per_client=2)
    try:  # the whole of 127.0.0.0/8 is loopback on Linux; elsewhere only 127.0.0.1 may be
        socket.create_connection(srv.server_address, source_address=("127.0.0.2", 0)).close()
    except OSError:
        pytest.skip("no second loopback address to connect from")
    with ready_connection(srv.server_address), ready_connection(srv.server_address):
        r = requests.get(url.replace("/score", "/health"), timeout=10)
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert "at most 2" in r.json()["error"]
        ready_connection(srv.server_address, source="127.0.0.2").close()  # another client


def test_body_limit_and_max_dur_cap(server):
    _, url = server(max_body=300_000, max_dur_cap=0.5)
    ramp = np.linspace(0.0, 1.0, 2 * SR, dtype=np.float32)
    body = {"audio": encode_wav_base64(ramp, SR), "max_dur": 1000.0}
    got = requests.post(url, json=body, timeout=10).json()["musicality"]
    assert got == pytest.approx(float(ramp[: SR // 2].mean()), rel=1e-5)  # capped to 0.5 s
    r = requests.post(url, json=body | {"pad": "x" * 200_000}, timeout=10)  # about 370 kB
    assert r.status_code == 413 and "over this server's 300000" in r.json()["error"]


def test_warns_when_serving_without_a_key_beyond_loopback(caplog):
    with caplog.at_level(logging.WARNING, logger="rewards.serve"):
        make_server(MeanAbs(), "127.0.0.1", 0).server_close()
        assert "without an API key" not in caplog.text
        make_server(MeanAbs(), "0.0.0.0", 0).server_close()
        assert "without an API key" in caplog.text and "0.0.0.0" in caplog.text
        caplog.clear()
        make_server(MeanAbs(), "0.0.0.0", 0, api_key="k").server_close()
        assert "without an API key" not in caplog.text


def nesting(obj):
    """Depth of parsed JSON: what `json_depth` must find in its text without parsing it."""
    if isinstance(obj, dict | list):
        items = obj.values() if isinstance(obj, dict) else obj
        return 1 + max((nesting(x) for x in items), default=0)
    return 0


@pytest.mark.parametrize(
    "text",
    [
        r'{"audio": {"data": "AAAA"}, "text": "[[[{{{", "lyrics": "]]]}}}"}',
        r'["\\", ["\"[[[", [{"k\\\"]": [[]]}]]]',  # escaped backslashes and quotes
        r'[[], [[]], {"a": [{}]}, "}}}}"]',
        "[" * 40 + '"]]]"' + "]" * 40,
    ],
)
def test_json_depth_skips_strings_and_escapes(text):
    assert json_depth(text.encode()) == nesting(json.loads(text))


def test_audio_at_another_rate_is_resampled_as_the_cli_resamples_a_file(server):
    _, url = server()
    body = {"audio": encode_wav_base64(np.full(SR // 2, 0.5, np.float32), SR // 2)}
    r = requests.post(url, json=body, timeout=10)
    assert r.status_code == 200 and r.json()["musicality"] == pytest.approx(0.5, abs=0.01)
