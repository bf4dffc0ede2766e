"""HTTP transports (sync and async) with the SDK's retry rule: 429 and 503 are retried, never
before the server's ``Retry-After`` (seconds or an HTTP date) has passed, with exponential backoff
when there is none; a ``Retry-After`` longer than ``max_retry_wait`` raises at once (the error's
``retry_after`` is the server's value); other errors raise at once."""

from __future__ import annotations

import asyncio
import math
import os
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, Optional, Sequence

import httpx

from .errors import AragoraError, error_for

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
RETRY_STATUSES = (429, 503)
DEFAULT_MAX_RETRY_WAIT = 30.0
URL_VARIABLES = ("ARAGORA_API_URL", "ARAGORA_URL")
TOKEN_VARIABLES = ("ARAGORA_API_TOKEN", "ARAGORA_TOKEN")
_RAISE = object()  # ``call(not_found=...)`` default: a 404 raises NotFoundError.


def env_any(names: Sequence[str]) -> Optional[str]:
    """The first of these environment variables that is set and not blank (as the CLI reads them)."""
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds, or an HTTP date (RFC 9110)
    counted from now; never negative. None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:  # "-0000": UTC without a stated source
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _retry_after(resp: httpx.Response) -> Optional[float]:
    return parse_retry_after(resp.headers.get("retry-after"))


def _body(resp: httpx.Response) -> Any:
    if not resp.content:
        return None
    ctype = resp.headers.get("content-type", "")
    if "json" in ctype:
        return resp.json()
    return resp.text


class _Base:
    def __init__(self, token: Optional[str], base_url: Optional[str], timeout: float, max_retries: int,
                 max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT):
        if max_retry_wait is None or not max_retry_wait >= 0:
            raise ValueError("max_retry_wait must be a number of seconds >= 0")
        self.base_url = (base_url or env_any(URL_VARIABLES) or DEFAULT_BASE_URL).rstrip("/")
        token = token or env_any(TOKEN_VARIABLES)
        self.headers = {"User-Agent": "aragora-python/0.1.0"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = float(max_retry_wait)

    @staticmethod
    def _clean(params: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        if not params:
            return None
        out = {}
        for k, v in params.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, (list, tuple)):
                v = ",".join(str(x) for x in v)
            out[k] = v
        return out

    def _delay(self, attempt: int, resp: httpx.Response) -> Optional[float]:
        """How long to wait before retrying ``resp``, or None to raise now: no retries left, not a
        retryable status, or a ``Retry-After`` longer than ``max_retry_wait`` (retrying sooner
        would only fail again)."""
        if resp.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        ra = _retry_after(resp)
        if ra is None:
            return min(0.25 * (2 ** attempt), 8.0, self.max_retry_wait)
        return ra if ra <= self.max_retry_wait else None


class SyncTransport(_Base):
    def __init__(self, token, base_url, timeout, max_retries, max_retry_wait=DEFAULT_MAX_RETRY_WAIT):
        super().__init__(token, base_url, timeout, max_retries, max_retry_wait)
        self.client = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                   trust_env=False)

    def call(self, method: str, path: str, *, json: Any = None, params: Optional[Dict[str, Any]] = None,
             headers: Optional[Dict[str, str]] = None, wrap: Callable[[Any], Any] = lambda b: b,
             not_found: Any = _RAISE) -> Any:
        attempt = 0
        while True:
            try:
                resp = self.client.request(method, path, json=json, params=self._clean(params), headers=headers)
            except httpx.HTTPError as e:
                raise AragoraError(0, "transport_error", str(e)) from e
            delay = self._delay(attempt, resp)
            if delay is not None:
                time.sleep(delay)
                attempt += 1
                continue
            body = _body(resp)
            if resp.status_code == 404 and not_found is not _RAISE:
                return not_found
            if resp.status_code >= 400:
                raise error_for(resp.status_code, body, _retry_after(resp))
            return wrap(body)

    def close(self) -> None:
        self.client.close()


class AsyncTransport(_Base):
    def __init__(self, token, base_url, timeout, max_retries, max_retry_wait=DEFAULT_MAX_RETRY_WAIT):
        super().__init__(token, base_url, timeout, max_retries, max_retry_wait)
        self.client = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                        trust_env=False)

    async def call(self, method: str, path: str, *, json: Any = None, params: Optional[Dict[str, Any]] = None,
                   headers: Optional[Dict[str, str]] = None, wrap: Callable[[Any], Any] = lambda b: b,
                   not_found: Any = _RAISE) -> Any:
        attempt = 0
        while True:
            try:
                resp = await self.client.request(method, path, json=json, params=self._clean(params),
                                                 headers=headers)
            except httpx.HTTPError as e:
                raise AragoraError(0, "transport_error", str(e)) from e
            delay = self._delay(attempt, resp)
            if delay is not None:
                await asyncio.sleep(delay)
                attempt += 1
                continue
            body = _body(resp)
            if resp.status_code == 404 and not_found is not _RAISE:
                return not_found
            if resp.status_code >= 400:
                raise error_for(resp.status_code, body, _retry_after(resp))
            return wrap(body)

    async def aclose(self) -> None:
        await self.client.aclose()
