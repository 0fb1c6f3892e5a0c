"""A reward model behind an HTTP endpoint (one POST per clip).

Protocol (what `rewards.serve` speaks; override `build_request` / `parse_response` for others):
    POST <url>  {"audio": {"format": "wav", "sr": 24000, "data": <base64 float32 WAV>},
                 "text": str, "lyrics": str, "ref_audio": {...} | null, "max_dur": float, **extra_body}
    200 -> {"alignment": x, "musicality": y}  or  {"scores": [x, y]}   (null = NaN)

The model's preprocessing contract: `GET <info_url>` (default: `health` next to `url`, what
`rewards.serve` answers) -> {"sr", "preprocess": Preprocess.to_dict() | null}, fetched once on
first use with the same retry rules. With a contract, `preprocess` is that `Preprocess`: the
benchmark decodes files through it and `build_request` prepares audio through it (idempotent,
the server applies it again), so a file gets the score the server's model gives it locally.
An info route that answers 4xx or no JSON means no contract (the runner's first `max_dur`
seconds at `sr`); one that cannot be reached fails the items.

Transport (`rewards.transport.HTTPTransport`, shared with `rewards.lalm_judge`): at most
`concurrency` requests in flight, request starts spaced by `1/rate_limit` seconds, `timeout`
seconds per request. Connection errors, timeouts, response bodies cut short, 429 and 5xx are
retried `max_retries` times with exponential backoff and full jitter (Retry-After honoured, up
to `backoff_max`); any other 4xx or an unparsable 200 fails the item at once. The API key is
read from the environment variable named by `api_key_env` at request time and never stored,
logged or quoted in an error.

Failures: `score_batch_detailed` returns (scores with NaN rows, per-item error text);
`score_batch` raises `ScoreItemError` for the first failed item (the others still ran).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import threading
from typing import Any
from urllib.parse import urljoin

import numpy as np
import soundfile as sf

from audiobase.audio import DEFAULT_MAX_SECONDS, read_wav_bytes
from audiobase.preprocess import Preprocess
from rewards.base import BatchInput, RewardModel, ScoreItemError, as_input
from rewards.transport import HTTPScoreError, HTTPTransport

log = logging.getLogger(__name__)


def encode_wav_base64(wav: Any, sr: int) -> dict[str, Any]:
    """Waveform [T] -> {"format": "wav", "sr", "data": base64 of a float32 WAV} (lossless)."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wav, dtype=np.float32), sr, format="WAV", subtype="FLOAT")
    return {"format": "wav", "sr": sr, "data": base64.b64encode(buf.getvalue()).decode("ascii")}


def decode_wav_base64(
    obj: dict[str, Any],
    name: str = "<request audio>",
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> tuple[np.ndarray, int]:
    """Inverse of `encode_wav_base64`: (mono float32 [T], sr). Only WAV is read; a truncated
    one or one longer than `max_seconds` raises AudioError (see `read_wav_bytes`)."""
    return read_wav_bytes(base64.b64decode(obj["data"]), name, max_seconds=max_seconds)


def _float_or_nan(x: Any) -> float:
    return math.nan if x is None else float(x)


class HTTPRewardModel(RewardModel):
    def __init__(
        self,
        url: str,
        checkpoint: Any = None,  # accepted for the runner's injection; unused
        device: Any = None,  # accepted for the runner's injection; unused
        sr: int = 24000,
        extra_body: dict[str, Any] | None = None,
        info_url: str | None = None,
        **transport: Any,
    ) -> None:
        """`transport`: HTTPTransport's keys (api_key_env, timeout, max_retries, backoff_base,
        backoff_max, concurrency, rate_limit, headers, seed, ...), flat in the model config."""
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.transport = HTTPTransport(**transport)
        self.url, self._sr = url, int(sr)
        # "" = ask nothing (no contract); None = the `health` route next to `url`
        self.info_url = urljoin(url, "health") if info_url is None else info_url
        self._info: dict[str, Any] | None = None
        self._info_lock = threading.Lock()
        self.extra_body = dict(extra_body or {})

    @classmethod
    def expected_preprocess(
        cls, config: dict[str, Any], max_dur: float | None
    ) -> Preprocess | None:
        """None: the contract is known once built (the server's, or the judge's own crop)."""
        return None

    @property
    def sr(self) -> int:
        """The configured `sr` until the server's info is known, then the server's; reading it
        sends nothing (duck-typed checks look at `sr`)."""
        return int((self._info or {}).get("sr") or self._sr)

    @property  # asked of the server on first read, never set
    def preprocess(self) -> Preprocess | None:  # type: ignore[override]
        """The server model's preprocessing contract, None when it has none."""
        return self.server_info().get("preprocess")

    def server_info(self) -> dict[str, Any]:
        """{"sr", "preprocess": Preprocess | None} from `info_url`, fetched once; {} when the
        server has no info route. Raises HTTPScoreError when it cannot be reached."""
        with self._info_lock:
            if self._info is None:
                self._info = self._fetch_info()
            return self._info

    def _fetch_info(self) -> dict[str, Any]:
        if not self.info_url:
            return {}
        try:
            payload: Any = self.transport.request("get", self.info_url)
        except HTTPScoreError as e:
            if e.status is None or e.status >= 500 or e.status == 429:
                raise HTTPScoreError(
                    f"cannot read model info from {self.info_url}: {e}", e.status, e.attempts
                ) from None
            log.warning("%s: %s; assuming no preprocessing contract", self.info_url, e)
            return {}
        if not isinstance(payload, dict):
            log.warning("%s: not a JSON object; assuming no contract", self.info_url)
            return {}
        pre = payload.get("preprocess")
        try:
            pre = None if pre is None else Preprocess.from_dict(pre)
        except (TypeError, ValueError) as e:  # a contract we cannot follow must not be ignored
            raise HTTPScoreError(f"{self.info_url}: unusable preprocess {pre!r}: {e}") from None
        sr = pre.sr if pre is not None else payload.get("sr")
        if sr is not None and int(sr) != self._sr:
            log.warning("%s: the server's model runs at %s Hz, not sr=%d", self.url, sr, self._sr)
        return {"sr": None if sr is None else int(sr), "preprocess": pre}

    def __repr__(self) -> str:
        return f"HTTPRewardModel(url={self.url!r}, concurrency={self.transport.concurrency})"

    # ------------------------------------------------------------------ hooks
    def build_request(self, item: BatchInput, max_dur: float | None) -> dict[str, Any]:
        """JSON body for one clip. Override for another service's protocol."""
        pre, sr = self.preprocess, self.sr
        if pre is not None:  # the server's contract, not the runner's crop
            prepare = pre
        else:
            prepare = Preprocess(sr=sr, max_dur=max_dur or None)  # the runner's first max_dur s
        ref = None if item.ref_audio is None else prepare(item.ref_audio)
        return {
            "audio": encode_wav_base64(prepare(item.audio), sr),
            "text": item.text or "",
            "lyrics": item.lyrics or "",
            "ref_audio": None if ref is None else encode_wav_base64(ref, sr),
            "max_dur": max_dur,
            **self.extra_body,
        }

    def parse_response(self, payload: Any, item: BatchInput) -> tuple[float, float]:
        """(alignment, musicality) from the decoded JSON. Override for another protocol."""
        if isinstance(payload, dict) and ("alignment" in payload or "musicality" in payload):
            return _float_or_nan(payload.get("alignment")), _float_or_nan(payload.get("musicality"))
        if (
            isinstance(payload, dict)
            and isinstance(payload.get("scores"), list)
            and len(payload["scores"]) == 2
        ):
            a, m = payload["scores"]
            return _float_or_nan(a), _float_or_nan(m)
        raise ValueError(f"unrecognised response {str(payload)[:200]!r}")

    # ------------------------------------------------------------------ scoring
    def score_batch(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> np.ndarray:
        scores, errors = self.score_batch_detailed(inputs, batch_size, max_dur, **kwargs)
        for i, err in enumerate(errors):
            if err is not None:
                raise ScoreItemError(i, as_input(inputs[i]), err)
        return scores

    def score_batch_detailed(
        self, inputs: list[BatchInput], batch_size: int, max_dur: float, **kwargs: Any
    ) -> tuple[np.ndarray, list[str | None]]:
        """All items are attempted; (scores [N, 2] with NaN where failed, error text or None)."""
        items = [as_input(x) for x in inputs]
        scores = np.full((len(items), 2), np.nan)
        errors: list[str | None] = [None] * len(items)
        if not items:
            return scores, errors
        try:  # one info fetch for the call, not one per item
            self.server_info()
        except HTTPScoreError as e:
            return scores, [self.transport.describe(e)] * len(items)
        rows, errors = self.transport.map(
            lambda i: self._score_one(items[i], max_dur, kwargs), len(items)
        )
        for i, row in enumerate(rows):
            if row is not None:
                scores[i] = row
        return scores, errors

    def _score_one(
        self, item: BatchInput, max_dur: float, extra: dict[str, Any]
    ) -> tuple[float, float]:
        body = json.dumps({**self.build_request(item, max_dur), **extra})
        return self.transport.request(
            "post", self.url, body, lambda p: self.parse_response(p, item)
        )
