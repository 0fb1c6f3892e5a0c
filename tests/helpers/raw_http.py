"""HTTP over a bare socket, for tests that play slow or broken clients against `rewards.serve`:
the bytes sent, and when, are the test's to choose."""

from __future__ import annotations

import base64
import json
import select
import socket
from typing import Any

from rewards.http import encode_wav_base64


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one response, reading no byte past it
    (a pipelined response after it stays in the socket); the socket's timeout bounds each read
    (`TimeoutError` when the server does not answer)."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed before a full response: {data!r}")
        data += chunk
    lines = data[:-4].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    n = int(headers.get("content-length", 0))
    body = b""
    while len(body) < n:
        chunk = sock.recv(min(n - len(body), 65536))
        if not chunk:
            raise ConnectionError(f"closed after {len(body)} of {n} body bytes")
        body += chunk
    return int(lines[0].split()[1]), headers, body


def ready_connection(
    address: tuple[str, int], source: str | None = None, timeout: float = 10.0
) -> socket.socket:
    """A kept-alive connection the server has accepted and answered (`GET /health` -> 200):
    the readiness signal that it counts against the server's limits from now on."""
    sock = socket.create_connection(
        address, timeout=timeout, source_address=None if source is None else (source, 0)
    )
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = read_response(sock)
    assert status == 200, body
    return sock


def post_request(body: bytes, path: str = "/score", api_key: str | None = None) -> bytes:
    """A complete `POST` of `body` (kept alive)."""
    auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def score_request(wav: Any, sr: int, api_key: str | None = None) -> bytes:
    """A complete `POST /score` for one clip, encoded as `rewards.http` encodes it."""
    return post_request(json.dumps({"audio": encode_wav_base64(wav, sr)}).encode(), api_key=api_key)


def wav_file_request(data: bytes, sr: int) -> bytes:
    """A complete `POST /score` whose audio is the bytes of a WAV file, sent as they are."""
    audio = {"format": "wav", "sr": sr, "data": base64.b64encode(data).decode()}
    return post_request(json.dumps({"audio": audio}).encode())


def exchange(address: tuple[str, int], request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of one request on a fresh connection; `timeout` bounds each read."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        status, _, body = read_response(sock)
    return status, body


def trickle_until_answered(sock: socket.socket, data: bytes, pause: float) -> bytes:
    """Send `data` one byte at a time, waiting up to `pause` s between bytes for the server to
    answer; returns the first bytes it answers with (b"" when it sends nothing and closes)."""
    for i in range(len(data)):
        sock.sendall(data[i : i + 1])
        readable, _, _ = select.select([sock], [], [], pause)
        if readable:
            return sock.recv(65536)
    raise AssertionError(f"the server took all {len(data)} trickled bytes without answering")
