"""Reference HTTP server: any RewardModel over the `rewards.http` protocol.

    python -m rewards.serve --model cmi_rm_tiny [--set key=value ...] [--host 127.0.0.1] [--port 8000]

`--model` is a name under conf/bench/model/ or a yaml path; `--set` overrides its keys (dot-list).
Endpoints: `POST /score` (one clip, see rewards.http) and
`GET /health` -> {"sr", "model", "preprocess": Preprocess.to_dict() | null}.

A model with its own preprocessing contract (an exported scorer) publishes it on /health, so
clients decode files the same way, and it applies the contract again to what arrives
(idempotent); a request's `max_dur` never overrides it. Models without one get the request's
`max_dur` (CMI-RewardBench's crop), capped by `--max-dur-cap`. One file gets one score, served
or local: the audio in a request is decoded by `audiobase.audio.load_audio`, with the checks
the score CLI makes (a truncated or unreadable WAV is a 400 naming the reason). With
`--api-key-env VAR`, requests must carry `Authorization: Bearer $VAR`; serving without a key
on an address other than loopback logs a warning.

Structure: one event-loop thread accepts connections and reads every request in full (headers
within `--header-timeout` seconds of waiting for them, the body within `--body-timeout`
seconds of the headers) before a worker sees it; `--workers` threads handle complete requests
only, so slow or idle clients hold a socket, never a worker. The API key is checked before a
body is read. At most `--max-connections` connections are open at once (more get 503) and at
most `--max-per-client` from one IP address (more get 429), both with `Retry-After: 1` (which
rewards.http retries).

Hostile clients: headers not complete within `--header-timeout` get a 408 (an idle kept-alive
connection is closed without one), a body not complete within `--body-timeout` a 408, headers
over 64 KiB a 431, a body without the key a 401 (unread), one over `--max-body-mb` a 413
(unread), a chunked body a 501; a body that is not JSON, JSON nested deeper than 32 levels, or
audio that is not a readable WAV gets a 400 naming the reason. Requests are scored one at a
time (the model is shared).
"""

from __future__ import annotations

import argparse
import logging
import os

from rewards.limits import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    MAX_BODY,
    MAX_CONNECTIONS,
    MAX_DUR_CAP,
    MAX_PER_CLIENT,
    WORKERS,
)

log = logging.getLogger(__name__)


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
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT,
        help="seconds a client may take to send its headers, or stay idle (default %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT,
        help="seconds a client may take to send a body after its headers (default %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help="threads handling complete requests (default %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=MAX_CONNECTIONS,
        help="connections open at once; more get 503 (default %(default)s)",
    )
    p.add_argument(
        "--max-per-client",
        type=int,
        default=MAX_PER_CLIENT,
        help="connections open at once from one IP address; more get 429 (default %(default)s)",
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
    # the server and the model's code (torch): ~2 s of import on 2 cores, and more for the
    # model's own libraries; --help and bad arguments answer without them
    from rewards.server import load_model, make_server

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
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        workers=args.workers,
        max_connections=args.max_connections,
        max_per_client=args.max_per_client,
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
