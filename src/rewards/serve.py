"""Reference HTTP server: any RewardModel over the `rewards.http` protocol.

    python -m rewards.serve --model cmi_rm_tiny [--set key=value ...] [--host 127.0.0.1] [--port 8000]

`--model` is a name under conf/bench/model/ or a yaml path; `--set` overrides its keys (dot-list).
Endpoints: `POST /score` (one clip, see rewards.http) and
`GET /health` -> {"sr", "model", "preprocess": Preprocess.to_dict() | null}.

A model with its own preprocessing contract (an exported scorer) publishes it on /health, so
clients decode files the same way, and it applies the contract again to what arrives
(idempotent); a request's `max_dur` never overrides it. Models without one get the request's
`max_dur` (CMI-RewardBench's crop). One file gets one score, served or local.
With `--api-key-env VAR`, requests must carry `Authorization: Bearer $VAR`.
Requests are scored one at a time (the model is shared); the listener is threaded.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from rewards.base import BatchInput, model_contract
from rewards.build import build_reward_model
from rewards.http import decode_wav_base64

log = logging.getLogger(__name__)

MAX_BODY = 512 * 1024 * 1024
DEFAULT_MAX_DUR = 30.0  # seconds, for a request without `max_dur` to a model without a contract
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "bench" / "model"


class ScoreHandler(BaseHTTPRequestHandler):
    """Handler bound to a model via `make_server`; subclass it to add behaviour (e.g. fault injection)."""

    model: Any = None
    lock: threading.Lock = threading.Lock()
    api_key: str | None = None
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
        n = int(self.headers.get("Content-Length") or 0)
        if n <= 0 or n > MAX_BODY:
            raise ValueError(f"body length {n} outside 1..{MAX_BODY}")
        return json.loads(self.rfile.read(n))

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

        def wave(obj: Any) -> torch.Tensor:
            wav, got_sr = decode_wav_base64(obj)
            if got_sr != sr:
                raise ValueError(f"audio at {got_sr} Hz, this model needs {sr} Hz")
            return torch.from_numpy(wav)

        ref = body.get("ref_audio")
        item = BatchInput(
            audio=wave(body["audio"]),
            text=str(body.get("text") or ""),
            lyrics=str(body.get("lyrics") or ""),
            ref_audio=None if ref is None else wave(ref),
        )
        own = model_contract(self.model)
        if own is not None:  # the model's own crop, whatever the client asked for
            return item, own.max_dur
        return item, float(body.get("max_dur") or DEFAULT_MAX_DUR)


def describe_model(model: Any) -> dict[str, Any]:
    """What /health answers: the sample rate, the class and the preprocessing contract (if any)."""
    own = model_contract(model)
    return {
        "sr": int(model.sr),
        "model": type(model).__name__,
        "preprocess": None if own is None else own.to_dict(),
    }


def make_server(
    model: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    handler: type[ScoreHandler] = ScoreHandler,
) -> ThreadingHTTPServer:
    """A server bound to `model` (port 0 = any free port; see `server.server_address`)."""
    bound = type(
        "BoundScoreHandler",
        (handler,),
        {"model": model, "lock": threading.Lock(), "api_key": api_key},
    )
    server = ThreadingHTTPServer((host, port), bound)
    server.daemon_threads = True
    return server


def load_model_config(model: str, overrides: list[str]) -> DictConfig | ListConfig:
    path = Path(model) if model.endswith((".yaml", ".yml")) else CONF_DIR / f"{model}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model config")
    return OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(overrides))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="conf/bench/model name or yaml path")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", default=None, help="env var holding the key clients must send")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    model, _ = build_reward_model(load_model_config(args.model, args.set))
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not key:
        raise SystemExit(f"environment variable {args.api_key_env} is not set")
    server = make_server(model, args.host, args.port, api_key=key)
    log.info("serving %r on http://%s:%d/score", model, *server.server_address[:2])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
