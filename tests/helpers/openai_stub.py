"""A stand-in OpenAI-compatible `/v1/chat/completions` server for judge tests (127.0.0.1, port 0).

It speaks the wire format vLLM serves for audio LLMs and answers deterministically from the
audio it receives, so a correct client gets a meaningful ranking:
- the prompt (the last text part) mentions "musicality": the feature is the clip's RMS, else
  (alignment) its dominant frequency;
- the prompt mentions "winner" (pairwise): "Winner: A" when the first clip's feature is larger,
  "Winner: B" when smaller, "Winner: tie" when equal (`bias="first"`: always A);
- otherwise a score `1 + 9 * min(feature / scale, 1)` as "Score: x.y", or `{"score": x.y}` when
  the prompt shows a JSON example (`{"`).

`plan` injects faults per distinct request (attempt n of the same body takes step n, the last
step repeats), or is a callable (body, attempt) -> step. Steps: ok, 500, 429 (Retry-After: 0),
stall (answers 503 once the client has timed out and hung up), garbage (an answer with no
score), refuse (an OpenAI `refusal`), text_refusal (a refusal in the content), out_of_range
(Score: 42), empty (an empty answer), no_choices (a 200 without choices), not_json (a 200 HTML
page).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import select
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import soundfile as sf

CANNED = {  # answers of the fault steps
    "garbage": "What a lovely song! I really enjoyed the chorus.",
    "text_refusal": "I'm sorry, but I can't help with rating this audio.",
    "out_of_range": "Score: 42",
    "empty": "",
}
RMS_SCALE = 0.5  # RMS that maps to score 10
FREQ_SCALE = 2000.0  # Hz that maps to score 10


def decode_audio(part: dict[str, Any]) -> tuple[np.ndarray, int]:
    """An `input_audio` content part -> (mono float32 [T], sr)."""
    raw = base64.b64decode(part["input_audio"]["data"])
    wav, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    return wav.mean(axis=1), int(sr)


def rms(wav: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wav)))) if wav.size else 0.0


def dominant_freq(wav: np.ndarray, sr: int) -> float:
    if wav.size < 2:
        return 0.0
    spectrum = np.abs(np.fft.rfft(wav))
    return float(np.fft.rfftfreq(wav.size, 1.0 / sr)[int(np.argmax(spectrum))])


def request_parts(body: dict[str, Any]) -> tuple[list[tuple[np.ndarray, int]], list[str]]:
    """(decoded audios, text parts) of the last user message."""
    user = [m for m in body.get("messages", []) if m.get("role") == "user"][-1]
    content = user["content"]
    if isinstance(content, str):
        return [], [content]
    audios = [decode_audio(p) for p in content if p.get("type") == "input_audio"]
    texts = [p["text"] for p in content if p.get("type") == "text"]
    return audios, texts


class OpenAIStub:
    """Serve until `close()` (or as a context manager); `url` is the base (`.../v1`)."""

    def __init__(
        self,
        plan: Sequence[str] | Callable[[dict[str, Any], int], str] = ("ok",),
        api_key: str | None = None,
        bias: str | None = None,
        port: int = 0,
    ) -> None:
        self.plan, self.api_key, self.bias = plan, api_key, bias
        self.requests: list[dict[str, Any]] = []  # every body received, faults included
        self.attempts: Counter = Counter()  # per request digest
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    stub.handle(self, raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): the server must not die

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> OpenAIStub:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ answering
    def step(self, body: dict[str, Any], raw: bytes) -> str:
        digest = hashlib.sha1(raw).hexdigest()
        with self.lock:
            self.requests.append(body)
            self.attempts[digest] += 1
            n = self.attempts[digest]
        if callable(self.plan):
            return self.plan(body, n)
        return self.plan[min(n, len(self.plan)) - 1]

    def answer(self, body: dict[str, Any]) -> str:
        """What a well-behaved judge says about this request (see the module docstring)."""
        audios, texts = request_parts(body)
        prompt = texts[-1].lower() if texts else ""
        if "musicality" in prompt:
            feats = [rms(w) for w, _ in audios]
            scale = RMS_SCALE
        else:
            feats = [dominant_freq(w, sr) for w, sr in audios]
            scale = FREQ_SCALE
        if "winner" in prompt:
            a, b = feats[0], feats[1]
            win = "A" if self.bias == "first" or a > b else ("B" if a < b else "tie")
            return f"Clip {win} is the stronger one here.\nWinner: {win}"
        score = round(1.0 + 9.0 * min(feats[0] / scale, 1.0), 1)
        if '{"' in prompt:
            return f'Here is my rating:\n```json\n{{"score": {score}}}\n```'
        return f"A fair piece with a clear sound.\nScore: {score}"

    def handle(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        if not h.path.rstrip("/").endswith("/chat/completions"):
            return send(h, 404, {"error": {"message": f"no route {h.path}"}})
        if self.api_key and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return send(h, 401, {"error": {"message": "invalid API key"}})
        body = json.loads(raw)
        step = self.step(body, raw)
        if step == "500":
            return send(h, 500, {"error": {"message": "boom"}})
        if step == "429":
            return send(h, 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if step == "stall":  # answer once the client has timed out and hung up
            readable, _, _ = select.select([h.connection], [], [], 60.0)
            assert readable, "the client kept a stalled request open for 60 s"
            return send(h, 503, {"error": {"message": "late"}})
        if step == "not_json":
            return send(h, 200, "<html>gateway</html>")
        if step == "no_choices":
            return send(h, 200, {"object": "chat.completion", "choices": []})
        if step == "ok":
            message: dict[str, Any] = {"role": "assistant", "content": self.answer(body)}
        elif step == "refuse":
            refusal = "I can't help with that request."
            message = {"role": "assistant", "content": None, "refusal": refusal}
        elif step in CANNED:
            message = {"role": "assistant", "content": CANNED[step]}
        else:
            raise ValueError(f"unknown plan step {step!r}")
        return send(
            h,
            200,
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            },
        )


def send(
    h: BaseHTTPRequestHandler, status: int, obj: Any, headers: dict[str, str] | None = None
) -> None:
    data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
    h.send_response(status)
    h.send_header("Content-Type", "text/html" if isinstance(obj, str) else "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)
