"""The reference HTTP server behind `python -m rewards.serve` (whose docstring describes it):
any RewardModel over the `rewards.http` protocol. `make_server` builds it around a model,
`load_model` loads the model `--model` names."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import http.client
import io
import ipaddress
import json
import logging
import math
import shutil
import socket
import tempfile
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig

from audiobase.audio import AudioError, load_audio
from audiobase.weights import find_user_error
from rewards.base import BatchInput, RewardModel
from rewards.build import build_reward_model, compose_model_config
from rewards.limits import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_DUR_CAP,
    MAX_PER_CLIENT,
    WORKERS,
)

log = logging.getLogger("rewards.serve")  # the command's name, as before the CLI moved out

MAX_HEADER_BYTES = 64 * 1024  # request line + headers
MAX_JSON_DEPTH = 32  # nesting of arrays/objects in a request body (the protocol needs 3)
DEFAULT_MAX_DUR = 30.0  # seconds, for a request without `max_dur` to a model without a contract
REFUSAL_LINGER = 1.0  # seconds a refused connection is drained, so the client reads the refusal
ERROR_LINGER = 2.0  # the same for a request refused with its body unread (401, 413, 408)

_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_BRACKET_STEP = np.zeros(256, np.int8)  # +1 opens an array or object, -1 closes one
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


class RequestError(ValueError):
    """A request refused with `status` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def key_matches(api_key: str | None, authorization: str | None) -> bool:
    """Whether an `Authorization` header carries `Bearer <api_key>` (always, without a key)."""
    if not api_key:
        return True
    got = (authorization or "").encode("latin-1", "replace")
    return hmac.compare_digest(got, f"Bearer {api_key}".encode("latin-1", "replace"))


def json_depth(raw: bytes, stop_above: int | None = None) -> int:
    """How deep arrays and objects nest in the JSON text `raw`, found without parsing it (bytes
    in strings do not count; vectorised, so 64 MiB takes a second at most). With `stop_above`,
    scanning stops once that depth is passed and the depth reached so far is returned."""
    # escaped backslashes, then escaped quotes, go first; what is left of the text is quotes
    # (each one opens or closes a string) and brackets
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    marks = np.frombuffer(text, np.uint8)
    depth = deepest = in_string = 0
    for i in range(0, len(marks), 1 << 20):
        chunk = marks[i : i + (1 << 20)]
        quotes = np.cumsum(chunk == ord('"'), dtype=np.int32) + in_string
        steps = np.where(quotes % 2 == 1, 0, _BRACKET_STEP[chunk])  # inside a string: 0
        level = depth + np.cumsum(steps, dtype=np.int32)
        deepest, depth, in_string = max(deepest, int(level.max())), int(level[-1]), quotes[-1] % 2
        if stop_above is not None and deepest > stop_above:
            break
    return deepest


def parse_json_body(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A request body as JSON; `RequestError` 400 when it nests deeper than `max_depth` (checked
    before parsing: the parser recurses) or is not JSON."""
    if raw.count(b"[") + raw.count(b"{") > max_depth:  # else it cannot nest deeper
        depth = json_depth(raw, stop_above=max_depth)
        if depth > max_depth:
            raise RequestError(
                400,
                f"JSON nested {depth} levels deep or more; this server reads at most {max_depth}",
            )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise RequestError(400, f"body is not JSON: {e}") from None


def decode_audio_field(obj: Any, field: str, sr: int, scratch: Path) -> np.ndarray:
    """A request's `{"format": "wav", "sr", "data": base64}` -> mono float32 [T] at `sr`, decoded
    as the score CLI decodes a file (`load_audio`: truncation, NaN, empty and length checks;
    another rate is resampled); `RequestError` 400 naming the field and the reason."""
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), str):
        raise RequestError(400, f"{field}: expected {{'format': 'wav', 'sr', 'data': base64}}")
    try:
        data = base64.b64decode(obj["data"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, f"{field}: data is not base64 ({e})") from None
    path = scratch / f"{threading.get_ident()}-{field}.wav"  # one file per worker and field
    try:
        path.write_bytes(data)
        return load_audio(path, sr)
    except AudioError as e:  # the reason, without the scratch file's name
        raise RequestError(400, f"{field}: not a readable WAV: {e.reason}") from None
    finally:
        path.unlink(missing_ok=True)


class ScoreHandler(BaseHTTPRequestHandler):
    """Handles one request that the server has read in full (headers and body in `rfile`; the
    reply is collected in `wfile`); bound to a model via `make_server`. Subclass it to add
    behaviour (e.g. fault injection): `do_GET`/`do_POST`, `send_json` and `rfile` work as in
    `http.server`."""

    model: RewardModel
    lock: threading.Lock = threading.Lock()
    api_key: str | None = None
    max_dur_cap: float | None = MAX_DUR_CAP
    max_json_depth: int = MAX_JSON_DEPTH
    protocol_version = "HTTP/1.1"
    rfile: io.BytesIO
    wfile: io.BytesIO

    def setup(self) -> None:  # `request` is the raw request, not a socket
        self.connection = None
        self.rfile = io.BytesIO(self.request)
        self.wfile = io.BytesIO()

    def handle(self) -> None:
        self.handle_one_request()

    def finish(self) -> None:  # the server sends `wfile`'s bytes
        pass

    def handle_expect_100(self) -> bool:  # the server sent `100 Continue` before the body
        return True

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
        """The body as JSON; `RequestError` 400 when it is missing, too deep or not JSON."""
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        if n <= 0:
            raise RequestError(400, "bad request: no body (Content-Length missing or 0)")
        return parse_json_body(self.rfile.read(n), self.max_json_depth)

    def authorised(self) -> bool:
        return key_matches(self.api_key, self.headers.get("Authorization"))

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
            self.send_json(e.status, {"error": str(e)})
            return
        except (ValueError, KeyError, TypeError) as e:
            self.send_json(400, {"error": f"bad request: {type(e).__name__}: {e}"})
            return
        try:
            with self.lock:
                scores = self.model.score_batch([item], 1, cast(float, max_dur))
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
        caps = self.model.capabilities
        sr, scratch = caps.sr, cast("ScoreServer", self.server).scratch

        def wave(obj: Any, field: str) -> torch.Tensor:
            return torch.from_numpy(decode_audio_field(obj, field, sr, scratch))

        ref = body.get("ref_audio")
        item = BatchInput(
            audio=wave(body["audio"], "audio"),
            text=str(body.get("text") or ""),
            lyrics=str(body.get("lyrics") or ""),
            ref_audio=None if ref is None else wave(ref, "ref_audio"),
        )
        asked = None
        if caps.preprocess is None:  # the model's own crop wins, whatever the client asked for
            asked = float(body.get("max_dur") or DEFAULT_MAX_DUR)
            if not math.isfinite(asked) or asked <= 0:
                raise ValueError(f"max_dur must be a positive number of seconds, got {asked}")
            asked = asked if self.max_dur_cap is None else min(asked, self.max_dur_cap)
        # the model's plan: its own contract, else the client's (capped) crop
        return item, self.model.scoring_plan(asked).preprocess.max_dur


def describe_model(model: RewardModel) -> dict[str, Any]:
    """What /health answers: the sample rate, the class and the preprocessing contract (if any)."""
    caps = model.capabilities
    own = caps.preprocess
    return {
        "sr": caps.sr,
        "model": type(model).__name__,
        "preprocess": None if own is None else own.to_dict(),
    }


def http_response(status: int, obj: Any, retry_after: bool = False) -> bytes:
    """A complete JSON response that closes the connection (for refusals made before a
    handler sees the request)."""
    body = json.dumps(obj).encode()
    extra = "Retry-After: 1\r\n" if retry_after else ""
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"{extra}Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class ScoreServer:
    """The front end of `make_server`: reads requests on one event-loop thread, with deadlines
    and connection limits, and hands complete ones to `workers` handler threads.

    `serve_forever()`, `shutdown()` (from another thread), `server_close()` and
    `server_address` work as in `socketserver`.
    """

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[ScoreHandler],
        *,
        api_key: str | None = None,
        workers: int = WORKERS,
        max_connections: int = MAX_CONNECTIONS,
        max_per_client: int = MAX_PER_CLIENT,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        max_body: int = MAX_BODY,
    ) -> None:
        if min(workers, max_connections, max_per_client, max_body) < 1:
            raise ValueError(
                "need workers, max_connections, max_per_client and max_body >= 1; got "
                f"{workers}, {max_connections}, {max_per_client}, {max_body}"
            )
        if not (header_timeout > 0 and body_timeout > 0):
            raise ValueError(f"need timeouts > 0; got {header_timeout}, {body_timeout}")
        self.RequestHandlerClass = handler
        self.api_key, self.workers = api_key, int(workers)
        self.max_connections, self.max_per_client = int(max_connections), int(max_per_client)
        self.header_timeout, self.body_timeout = float(header_timeout), float(body_timeout)
        self.max_body = int(max_body)
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.scratch = Path(tempfile.mkdtemp(prefix="rewards-serve-"))  # request audio
        self.open_connections = 0  # touched on the loop thread only
        self.per_client: Counter[str] = Counter()
        self._lingering = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._shutdown_request = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    # ------------------------------------------------------------------ lifecycle
    def serve_forever(self) -> None:
        """Serve until `shutdown()` is called (from another thread)."""
        self._stopped.clear()
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` and wait for it to return."""
        self._shutdown_request.set()
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop has already closed
                pass
        self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rewards-serve")
        self._pool = pool
        server = await asyncio.start_server(self._connection, sock=self.socket)
        try:
            if not self._shutdown_request.is_set():
                await self._stop.wait()
        finally:
            server.close()
            pool.shutdown(wait=False, cancel_futures=True)
        # asyncio.run cancels the connections still open

    # ------------------------------------------------------------------ connections
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = str(peer[0])
        if self.open_connections >= self.max_connections:
            await self._refuse(
                reader,
                writer,
                503,
                f"server busy: {self.max_connections} connections open; retry later",
            )
            return
        if self.per_client[client] >= self.max_per_client:
            await self._refuse(
                reader,
                writer,
                429,
                f"too many connections from {client}: at most {self.max_per_client} at once",
            )
            return
        self.open_connections += 1
        self.per_client[client] += 1
        try:
            await self._session(reader, writer, peer)
        except RequestError as e:  # refused before a handler saw it: reply, drain, close
            with contextlib.suppress(OSError):  # the client hung up or stopped reading
                writer.write(http_response(e.status, {"error": str(e)}))
                await self._drain_input(reader, writer, ERROR_LINGER)
        except (ConnectionError, TimeoutError):  # the client went away or stopped reading
            pass
        except asyncio.CancelledError:  # shutdown; ending quietly keeps asyncio (3.11) from
            pass  # logging the cancelled task as an error
        except Exception:  # a bug here must not take the server down
            log.exception("connection from %s failed", client)
        finally:  # released before the socket closes: a client seeing EOF sees a free slot
            self.open_connections -= 1
            self.per_client[client] -= 1
            if not self.per_client[client]:
                del self.per_client[client]
            writer.close()

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, msg: str
    ) -> None:
        """Answer a connection over a limit at once (not counted, never read) and close it."""
        if self._lingering >= self.max_connections:  # a flood: do not even drain
            writer.transport.abort()
            return
        self._lingering += 1
        try:
            with contextlib.suppress(OSError):  # the client hung up or stopped reading
                writer.write(http_response(status, {"error": msg}, retry_after=True))
                await self._drain_input(reader, writer, REFUSAL_LINGER)
        finally:
            self._lingering -= 1
            writer.close()

    @staticmethod
    async def _drain_input(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float
    ) -> None:
        """Send what is written, end our side, and read and drop what the client sends for up to
        `seconds` (closing with unread input resets the connection, and the client could lose
        the reply)."""
        await asyncio.wait_for(writer.drain(), seconds)
        if writer.can_write_eof():
            writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            if not await asyncio.wait_for(reader.read(1 << 16), left):
                return

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Any
    ) -> None:
        """Requests on one connection, in order, until either side closes it."""
        loop = asyncio.get_running_loop()
        buf = bytearray()  # received and not yet handed on (pipelined requests stay here)
        while True:
            head = await self._read_head(reader, buf, loop.time() + self.header_timeout)
            if head is None:
                return
            n, expect = self._check_head(head)
            if expect and n and len(buf) < n:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self._read_body(reader, buf, n, loop.time() + self.body_timeout)
            raw = head + bytes(buf[:n])
            del buf[:n]
            out, close = await loop.run_in_executor(self._pool, self._handle, raw, peer)
            writer.write(out)
            await asyncio.wait_for(writer.drain(), self.body_timeout)
            if close:
                return

    async def _read_head(
        self, reader: asyncio.StreamReader, buf: bytearray, deadline: float
    ) -> bytes | None:
        """Request line and headers (taken out of `buf`); None when the client closes or stays
        idle past the deadline, `RequestError` 408/431 when it sends part and stops or too much."""
        loop = asyncio.get_running_loop()
        start = 0
        while True:
            while buf[:2] == b"\r\n":  # blank lines before a request are allowed
                del buf[:2]
            end = buf.find(b"\r\n\r\n", start)
            if end >= 0:
                head = bytes(buf[: end + 4])
                del buf[: end + 4]
                return head
            if len(buf) > MAX_HEADER_BYTES:
                raise RequestError(431, f"request headers over {MAX_HEADER_BYTES} bytes")
            start = max(0, len(buf) - 3)
            left = deadline - loop.time()
            if left <= 0:
                if not buf:
                    return None  # idle (a kept-alive connection nobody uses): just close
                raise RequestError(
                    408, f"request headers not received within {self.header_timeout:g} s"
                )
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 16), left)
            except TimeoutError:
                continue
            if not chunk:
                return None
            buf += chunk

    def _check_head(self, head: bytes) -> tuple[int, bool]:
        """(body length, whether the client waits for `100 Continue`) from the headers, after
        the checks made before any body is read: length, chunking, size and the API key."""
        _, _, rest = head.partition(b"\r\n")
        try:
            headers = http.client.parse_headers(io.BytesIO(rest))
        except http.client.HTTPException as e:
            raise RequestError(431, f"bad request headers: {e}") from None
        if headers.get("Transfer-Encoding"):
            raise RequestError(501, "chunked request bodies are not read; send Content-Length")
        lengths = {v.strip() for v in headers.get_all("Content-Length") or []}
        if len(lengths) > 1 or not all(v.isascii() and v.isdigit() for v in lengths):
            raise RequestError(400, f"bad Content-Length {sorted(lengths)}")
        n = int(lengths.pop()) if lengths else 0
        if n and not key_matches(self.api_key, headers.get("Authorization")):
            raise RequestError(401, "missing or wrong API key")
        if n > self.max_body:
            raise RequestError(413, f"body of {n} bytes is over this server's {self.max_body}")
        return n, (headers.get("Expect") or "").lower() == "100-continue"

    async def _read_body(
        self, reader: asyncio.StreamReader, buf: bytearray, n: int, deadline: float
    ) -> None:
        """Until `buf` holds `n` bytes; `RequestError` 408 past the deadline, 400 on a hang-up."""
        loop = asyncio.get_running_loop()
        while len(buf) < n:
            left = deadline - loop.time()
            if left <= 0:
                raise RequestError(
                    408,
                    f"body not received within {self.body_timeout:g} s ({len(buf)} of {n} bytes)",
                )
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), left)
            except TimeoutError:
                continue
            if not chunk:
                raise RequestError(400, f"body cut short: {len(buf)} of {n} bytes")
            buf += chunk

    def _handle(self, raw: bytes, peer: Any) -> tuple[bytes, bool]:
        """On a worker: the handler's reply to one complete request, and whether to close."""
        try:
            handler = self.RequestHandlerClass(raw, peer, self)  # type: ignore[arg-type]
            return handler.wfile.getvalue(), bool(handler.close_connection)
        except Exception:  # noqa: BLE001 - the client gets a 500, the server keeps serving
            log.exception("handler failed on a request from %s", peer[0])
            return http_response(500, {"error": "internal server error"}), True


def is_loopback(host: str) -> bool:
    """Whether a bound address is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    model: RewardModel,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    handler: type[ScoreHandler] = ScoreHandler,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    workers: int = WORKERS,
    max_connections: int = MAX_CONNECTIONS,
    max_per_client: int = MAX_PER_CLIENT,
    max_body: int = MAX_BODY,
    max_dur_cap: float | None = MAX_DUR_CAP,
) -> ScoreServer:
    """A server bound to `model` (port 0 = any free port; see `server.server_address`).

    `header_timeout`: seconds a client may take to send request line and headers (and stay
    idle between requests); `body_timeout`: seconds to send a body once its headers are in;
    `workers`: threads handling complete requests; `max_connections` / `max_per_client`:
    connections open at once in all / from one IP (more get 503 / 429); `max_body`: bytes per
    request (more get 413); `max_dur_cap`: the most seconds a request's `max_dur` may ask for
    (None = no cap; a model with its own contract keeps its own crop).
    """
    bound = type(
        "BoundScoreHandler",
        (handler,),
        {"model": model, "lock": threading.Lock(), "api_key": api_key, "max_dur_cap": max_dur_cap},
    )
    server = ScoreServer(
        (host, port),
        bound,
        api_key=api_key,
        workers=workers,
        max_connections=max_connections,
        max_per_client=max_per_client,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_body=max_body,
    )
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


def load_model(model: str, overrides: list[str]) -> RewardModel:
    """The reward model `--model` names; a config or checkpoint refused as input (it asks to
    run code, or is malformed) ends the program with its reason and exit status 2."""
    try:
        return build_reward_model(load_model_config(model, overrides))[0]
    except Exception as e:  # refused input, missing weights or package: one line, exit 2
        err = find_user_error(e)
        if err is None:
            raise
        log.error("cannot load model %r: %s", model, err)
        raise SystemExit(2) from None
