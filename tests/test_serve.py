"""`rewards.serve` under hostile clients: bad audio, half-sent bodies, too many connections,
oversized bodies and durations, and serving without a key where others can reach it."""

from __future__ import annotations

import base64
import logging
import socket
import time

import numpy as np
import pytest
import requests
import torch
from helpers.bench import serve

from rewards.base import RewardModel
from rewards.http import encode_wav_base64
from rewards.serve import make_server

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


def test_a_half_sent_body_does_not_hold_a_thread(server):
    srv, url = server(request_timeout=0.5)
    host, port = srv.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"{" * 500)
        t0 = time.monotonic()
        reply = s.recv(4096)  # the server gives up on the rest of the body and closes
        while chunk := s.recv(4096):
            reply += chunk
    assert time.monotonic() - t0 < 4.0 and reply.startswith(b"HTTP/1.1 408"), reply


def test_connections_beyond_max_threads_get_503(server):
    srv, url = server(max_threads=1, request_timeout=5.0)
    host, port = srv.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\n")  # holds the only slot, mid-request
        time.sleep(0.2)
        r = requests.get(url.replace("/score", "/health"), timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    time.sleep(0.2)  # the slot is free again once that client hangs up
    assert requests.get(url.replace("/score", "/health"), timeout=10).status_code == 200


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
