"""The reference server's limits: the defaults of `python -m rewards.serve`'s flags and of
`rewards.server.make_server`, apart so that the command line prints them without importing
the server (torch)."""

MAX_BODY = 64 * 1024 * 1024  # bytes; base64 float32 at 24 kHz: about 8 minutes of audio
MAX_DUR_CAP = 120.0  # seconds a request's `max_dur` may ask for (CMI-RewardBench's default crop)
HEADER_TIMEOUT = 10.0  # seconds a client may take to send request line + headers (or stay idle)
BODY_TIMEOUT = 60.0  # seconds a client may take to send a body once its headers are in
WORKERS = 4  # threads handling complete requests
MAX_CONNECTIONS = 64  # connections open at once
MAX_PER_CLIENT = 16  # connections open at once from one IP address
