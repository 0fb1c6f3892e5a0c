"""JSON over HTTP for reward models behind a service: retries, backoff, pacing, concurrency, key.

`HTTPTransport` is what `rewards.http.HTTPRewardModel` (this project's protocol) and
`rewards.lalm_judge.LALMJudge` (OpenAI-compatible chat completions) send requests through:

- at most `concurrency` requests in flight (`map`), request starts spaced by `1/rate_limit`
  seconds across threads, `timeout` seconds per request;
- connection errors, timeouts, response bodies cut short (a chunked body or a Content-Length
  not delivered), 429 and 5xx are retried `max_retries` times with exponential backoff and full
  jitter (Retry-After seconds honoured, up to `backoff_max`); any other 4xx, or a 200 that is
  not JSON, fails at once (`HTTPScoreError`, `.status` = the HTTP status);
- the API key is read from the environment variable named by `api_key_env` at request time; it
  is never stored on the object, logged, or put in an error message (response text quoted in an
  error is redacted before it is shortened, so no part of the key survives the cut).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests

log = logging.getLogger(__name__)
T = TypeVar("T")


class HTTPScoreError(RuntimeError):
    """A request that failed for good; `status` is the last HTTP status (None: no response)."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1) -> None:
        self.status, self.attempts = status, attempts
        super().__init__(message)


class RetryableError(Exception):
    """What a retry may fix: raised inside an attempt to have `with_retries` try again."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        self.status, self.retry_after = status, retry_after
        super().__init__(message)


def retry_after(headers: Any) -> float | None:
    """A `Retry-After` header in seconds; None when absent or an HTTP date."""
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


class HTTPTransport:
    """Sends JSON requests with the retry, pacing and key rules above; thread-safe."""

    def __init__(
        self,
        *,
        api_key_env: str | None = None,
        api_key_header: str = "Authorization",
        api_key_prefix: str = "Bearer ",
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        concurrency: int = 4,
        rate_limit: float | None = None,
        headers: dict[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0, timeout > 0")
        self.api_key_env, self.api_key_header, self.api_key_prefix = (
            api_key_env,
            api_key_header,
            api_key_prefix,
        )
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.concurrency, self.rate_limit = int(concurrency), rate_limit
        self.headers = dict(headers or {})
        self._rng = random.Random(seed)  # jitter only; seeded for reproducible tests
        self._pace_lock = threading.Lock()
        self._next_start = 0.0
        self._local = threading.local()  # one requests.Session per worker thread
        self.stats = {"requests": 0, "retries": 0}
        self._stats_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HTTPTransport(concurrency={self.concurrency}, max_retries={self.max_retries})"

    # ------------------------------------------------------------------ requests
    def request(
        self,
        method: str,
        url: str,
        body: str | None = None,
        parse: Callable[[Any], T] = lambda x: x,
    ) -> T:
        """`parse(decoded JSON)` of one request, retried as described; `parse` raising anything
        but `RetryableError` fails at once (nothing is sent again)."""
        return self.with_retries(lambda: parse(self.send(method, url, body)))

    def with_retries(self, attempt_once: Callable[[], T]) -> T:
        """`attempt_once()`, retried with backoff on `RetryableError` up to `max_retries` times."""
        last: RetryableError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep_backoff(attempt, last)
                with self._stats_lock:
                    self.stats["retries"] += 1
            try:
                return attempt_once()
            except RetryableError as e:
                last = e
        raise HTTPScoreError(
            f"gave up after {self.max_retries + 1} attempts: {last}",
            status=last.status if last else None,
            attempts=self.max_retries + 1,
        )

    def send(self, method: str, url: str, body: str | None = None) -> Any:
        """One request -> decoded JSON; `RetryableError` for what a retry may fix."""
        self._pace()
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        with self._stats_lock:
            self.stats["requests"] += 1
        try:
            resp = session.request(
                method, url, data=body, headers=self.request_headers(), timeout=self.timeout
            )
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,  # a body cut short: chunked or by length
        ) as e:
            raise RetryableError(f"{type(e).__name__} contacting {url}") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise RetryableError(
                f"HTTP {resp.status_code} from {url}", resp.status_code, retry_after(resp.headers)
            )
        if resp.status_code >= 400:  # redact before the cut: a cut key would no longer match
            text = self.redact(resp.text)[:300]
            raise HTTPScoreError(f"HTTP {resp.status_code} from {url}: {text}", resp.status_code)
        try:
            return resp.json()
        except ValueError as e:
            text = self.redact(resp.text)[:200]
            raise HTTPScoreError(f"non-JSON response from {url}: {text!r}", resp.status_code) from e

    def request_headers(self) -> dict[str, str]:
        """Content type, the configured headers and the API key (read from the environment now)."""
        headers = {"Content-Type": "application/json", **self.headers}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                headers[self.api_key_header] = f"{self.api_key_prefix}{key}"
            else:
                log.warning(
                    "environment variable %s is not set; sending no API key", self.api_key_env
                )
        return headers

    # ------------------------------------------------------------------ many at once
    def map(self, fn: Callable[[int], T], n: int) -> tuple[list[T | None], list[str | None]]:
        """`fn(i)` for i < n, `concurrency` at a time; (results, redacted error text or None).
        Every call runs: one failure costs its own slot only."""
        results: list[T | None] = [None] * n
        errors: list[str | None] = [None] * n

        def run(i: int) -> None:
            try:
                results[i] = fn(i)
            except Exception as e:  # noqa: BLE001 - recorded per item
                errors[i] = self.describe(e)

        if n:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, n)) as pool:
                list(pool.map(run, range(n)))
        return results, errors

    def describe(self, e: BaseException) -> str:
        """`Type: message` with the API key redacted: the error text items are recorded with."""
        return self.redact(f"{type(e).__name__}: {e}")

    def redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text

    # ------------------------------------------------------------------ timing
    def _pace(self) -> None:
        """Space request starts by 1/rate_limit seconds across all worker threads."""
        if not self.rate_limit:
            return
        with self._pace_lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / float(self.rate_limit)
        if start > now:
            time.sleep(start - now)

    def _sleep_backoff(self, attempt: int, err: RetryableError | None) -> None:
        cap = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        delay = self._rng.uniform(0, cap)  # full jitter spreads retries of concurrent clients
        if err is not None and err.retry_after is not None:
            delay = max(delay, min(err.retry_after, self.backoff_max))
        time.sleep(delay)
