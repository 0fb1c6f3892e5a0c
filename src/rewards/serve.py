"""Reference HTTP server: any RewardModel over the `rewards.http` protocol.

    python -m rewards.serve --model cmi_rm_tiny [--set key=value ...] [--host 127.0.0.1] [--port 8000]

`--model` is a name under conf/bench/model/ or a yaml path; `--set` overrides its keys (dot-list).
Endpoints: `POST /score` (one clip, see rewards.http) and
`GET /health` -> {"sr", "model", "preprocess": Preprocess.to_dict() | null}.

A model with its own preprocessing contract (an exported scorer) publishes it on /health, so
clients decode files the same way, and it applies the contract again to what arrives
(idempotent); a request's `max_dur` never overrides it. Models without one get the request's
`max_dur` (CMI-RewardBench's crop), capped by `--max-dur-cap`. One file gets one score, served
or local. With `--api-key-env VAR`, requests must carry `Authorization: Bearer $VAR`; serving
without a key on an address other than loopback logs a warning.

Hostile clients: a body that is not JSON or not a readable WAV gets a 400 naming the reason,
one over `--max-body-mb` a 413, one not received within `--timeout` seconds a 408 (the same
timeout drops idle kept-alive connections); at most `--max-threads` connections are served at
once, others get a 503 with `Retry-After: 1` (which rewards.http retries). Requests are scored
one at a time (the model is shared).
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import math
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig

from audioscore.safe_config import UntrustedInputError
from rewards.base import BatchInput, model_contract
from rewards.build import build_reward_model, compose_model_config
from rewards.http import decode_wav_base64

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024  # bytes; base64 float32 at 24 kHz: about 8 minutes of audio
MAX_DUR_CAP = 120.0  # seconds a request's `max_dur` may ask for (CMI-RewardBench's default crop)
REQUEST_TIMEOUT = 30.0  # seconds a client may take to send a request (or stay idle between)
MAX_THREADS = 16  # connections served at once
DEFAULT_MAX_DUR = 30.0  # seconds, for a request without `max_dur` to a model without a contract
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "bench" / "model"


class RequestError(ValueError):
    """A request refused with `status` (the body may be unread: the connection is closed)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class ScoreHandler(BaseHTTPRequestHandler):
    """Handler bound to a model via `make_server`; subclass it to add behaviour (e.g. fault injection)."""

    model: Any = None
    lock: threading.Lock = threading.Lock()
    api_key: str | None = None
    max_body: int = MAX_BODY
    max_dur_cap: float | None = MAX_DUR_CAP
    timeout: ClassVar[float | None] = REQUEST_TIMEOUT  # socket timeout, set by StreamRequestHandler
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # route through logging, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.rstrip("/") == "/health":
            self.send_json(200, describe_model(self.model))
        else:
            self.send_json(404, {"error": f"no route {self.path}"})

    def read_json(self) -> Any:
        """The body as JSON; `RequestError` (400/408/413) when it is missing, too large, cut
        short or too slow to arrive, `ValueError` when it is not JSON."""
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        if n <= 0:
            raise RequestError(400, "bad request: no body (Content-Length missing or 0)")
        if n > self.max_body:
            self.discard(n)  # so the client reads the 413 instead of a reset connection
            raise RequestError(413, f"body of {n} bytes is over this server's {self.max_body}")
        try:
            raw = self.rfile.read(n)
        except TimeoutError:
            raise RequestError(408, f"body not received within {self.timeout} s") from None
        if len(raw) < n:
            raise RequestError(400, f"body cut short: {len(raw)} of {n} bytes")
        return json.loads(raw)

    def discard(self, n: int) -> None:
        """Read and drop up to `n` body bytes, for at most `timeout` seconds in all."""
        deadline = time.monotonic() + (self.timeout or REQUEST_TIMEOUT)
        try:
            while n > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(n, 1 << 20))
                if not chunk:
                    return
                n -= len(chunk)
        except OSError:  # a timeout or a reset: the connection is closed after the reply anyway
            pass

    def authorised(self) -> bool:
        if not self.api_key:
            return True
        got = self.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {self.api_key}".encode())

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") != "/score":
            self.send_json(404, {"error": f"no route {self.path}"})
            return
        if not self.authorised():
            self.send_json(401, {"error": "missing or wrong API key"})
            return
        try:
            item, max_dur = self.parse_item(self.read_json())
        except RequestError as e:
            self.close_connection = True  # the rest of the body (if any) is not read
            self.send_json(e.status, {"error": str(e)})
            return
        except (ValueError, KeyError, TypeError) as e:
            self.send_json(400, {"error": f"bad request: {type(e).__name__}: {e}"})
            return
        try:
            with self.lock:
                scores = self.model.score_batch([item], 1, max_dur)
        except Exception as e:  # noqa: BLE001 - the client gets the reason; the server keeps serving
            self.send_json(422, {"error": f"{type(e).__name__}: {e}"})
            return
        a, m = (float(x) for x in scores[0])
        self.send_json(
            200,
            {"alignment": None if math.isnan(a) else a, "musicality": None if math.isnan(m) else m},
        )

    def parse_item(self, body: Any) -> tuple[BatchInput, float | None]:
        if not isinstance(body, dict) or "audio" not in body:
            raise ValueError("expected a JSON object with 'audio'")
        sr = int(self.model.sr)

        def wave(obj: Any, field: str) -> torch.Tensor:
            if not isinstance(obj, dict) or "data" not in obj:
                raise ValueError(f"{field}: expected {{'format': 'wav', 'sr', 'data'}}")
            try:
                wav, got_sr = decode_wav_base64(obj)
            except Exception as e:  # base64 or libsndfile: the client sent something else
                raise ValueError(f"{field}: not a readable WAV ({type(e).__name__}: {e})") from e
            if got_sr != sr:
                raise ValueError(f"{field}: audio at {got_sr} Hz, this model needs {sr} Hz")
            return torch.from_numpy(wav)

        ref = body.get("ref_audio")
        item = BatchInput(
            audio=wave(body["audio"], "audio"),
            text=str(body.get("text") or ""),
            lyrics=str(body.get("lyrics") or ""),
            ref_audio=None if ref is None else wave(ref, "ref_audio"),
        )
        own = model_contract(self.model)
        if own is not None:  # the model's own crop, whatever the client asked for
            return item, own.max_dur
        max_dur = float(body.get("max_dur") or DEFAULT_MAX_DUR)
        if not math.isfinite(max_dur) or max_dur <= 0:
            raise ValueError(f"max_dur must be a positive number of seconds, got {max_dur}")
        return item, max_dur if self.max_dur_cap is None else min(max_dur, self.max_dur_cap)


def describe_model(model: Any) -> dict[str, Any]:
    """What /health answers: the sample rate, the class and the preprocessing contract (if any)."""
    own = model_contract(model)
    return {
        "sr": int(model.sr),
        "model": type(model).__name__,
        "preprocess": None if own is None else own.to_dict(),
    }


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_threads` at once; a connection beyond that is
    answered 503 with `Retry-After: 1` at once (not queued) and closed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, max_threads: int) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self.max_threads = max_threads
        self.slots = threading.BoundedSemaphore(max_threads)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refuse(request)
            return
        try:
            super().process_request(request, client_address)  # starts the thread
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def refuse(self, request: socket.socket) -> None:
        """503 on the accept thread: short writes and a bounded drain, then close."""
        body = json.dumps(
            {"error": f"server busy: {self.max_threads} connections in use; retry later"}
        ).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Retry-After: 1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            request.settimeout(0.2)
            request.sendall(head.encode() + body)
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 0.2  # read what the client sent, so close() sends
            while time.monotonic() < deadline and request.recv(65536):  # no reset before
                pass  # it has read the 503
        except OSError:
            pass
        self.close_request(request)


def is_loopback(host: str) -> bool:
    """Whether a bound address is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    model: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    handler: type[ScoreHandler] = ScoreHandler,
    *,
    request_timeout: float | None = REQUEST_TIMEOUT,
    max_threads: int = MAX_THREADS,
    max_body: int = MAX_BODY,
    max_dur_cap: float | None = MAX_DUR_CAP,
) -> BoundedHTTPServer:
    """A server bound to `model` (port 0 = any free port; see `server.server_address`).

    `request_timeout`: seconds a client may take to send its request (None = forever);
    `max_threads`: connections served at once (more get 503); `max_body`: bytes per request
    (more get 413); `max_dur_cap`: the most seconds a request's `max_dur` may ask for (None =
    no cap; a model with its own contract keeps its own crop).
    """
    bound = type(
        "BoundScoreHandler",
        (handler,),
        {
            "model": model,
            "lock": threading.Lock(),
            "api_key": api_key,
            "timeout": request_timeout,
            "max_body": int(max_body),
            "max_dur_cap": max_dur_cap,
        },
    )
    server = BoundedHTTPServer((host, port), bound, max_threads)
    bound_host = str(server.server_address[0])
    if not api_key and not is_loopback(bound_host):
        log.warning(
            "serving on %s without an API key: anyone who can reach this address can use the "
            "model (set --api-key-env, or bind to 127.0.0.1)",
            bound_host,
        )
    return server


def load_model_config(model: str, overrides: list[str]) -> DictConfig:
    """The model config `--model` names, composed as bench.run composes it (defaults lists
    honoured: `rewards.build.compose_model_config`), with the `--set` overrides."""
    return compose_model_config(model, overrides)


def load_model(model: str, overrides: list[str]) -> Any:
    """The reward model `--model` names; a config or checkpoint refused as input (it asks to
    run code, or is malformed) ends the program with its reason and exit status 2."""
    try:
        return build_reward_model(load_model_config(model, overrides))[0]
    except UntrustedInputError as e:
        log.error("cannot load model %r: %s", model, e)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="conf/bench/model name or yaml path")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", default=None, help="env var holding the key clients must send")
    p.add_argument(
        "--timeout",
        type=float,
        default=REQUEST_TIMEOUT,
        help="seconds a client may take to send a request or stay idle (default %(default)s)",
    )
    p.add_argument(
        "--max-threads",
        type=int,
        default=MAX_THREADS,
        help="connections served at once; more get 503 (default %(default)s)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=MAX_BODY / 2**20,
        help="largest request body in MiB; larger get 413 (default %(default)s)",
    )
    p.add_argument(
        "--max-dur-cap",
        type=float,
        default=MAX_DUR_CAP,
        help="most seconds a request's max_dur may ask for (default %(default)s)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    model = load_model(args.model, args.set)
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not key:
        raise SystemExit(f"environment variable {args.api_key_env} is not set")
    server = make_server(
        model,
        args.host,
        args.port,
        api_key=key,
        request_timeout=args.timeout,
        max_threads=args.max_threads,
        max_body=int(args.max_body_mb * 2**20),
        max_dur_cap=args.max_dur_cap,
    )
    log.info("serving %r on http://%s:%d/score", model, *server.server_address[:2])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
