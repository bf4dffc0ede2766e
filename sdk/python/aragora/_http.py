"""HTTP transports (sync and async) with the SDK's retry rule: 429 and 503 are retried, honouring
``Retry-After`` (capped), with exponential backoff otherwise; other errors raise at once."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Callable, Dict, Optional

import httpx

from .errors import AragoraError, error_for

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
RETRY_STATUSES = (429, 503)
MAX_RETRY_AFTER = 30.0
_RAISE = object()  # ``call(not_found=...)`` default: a 404 raises NotFoundError.


def _retry_after(resp: httpx.Response) -> Optional[float]:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER))
    except ValueError:
        return None


def _body(resp: httpx.Response) -> Any:
    if not resp.content:
        return None
    ctype = resp.headers.get("content-type", "")
    if "json" in ctype:
        return resp.json()
    return resp.text


class _Base:
    def __init__(self, token: Optional[str], base_url: Optional[str], timeout: float, max_retries: int):
        self.base_url = (base_url or os.environ.get("ARAGORA_API_URL") or DEFAULT_BASE_URL).rstrip("/")
        token = token or os.environ.get("ARAGORA_API_TOKEN")
        self.headers = {"User-Agent": "aragora-python/0.1.0"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.max_retries = max_retries

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

    def _delay(self, attempt: int, resp: httpx.Response) -> float:
        ra = _retry_after(resp)
        return ra if ra is not None else min(0.25 * (2 ** attempt), 8.0)


class SyncTransport(_Base):
    def __init__(self, token, base_url, timeout, max_retries):
        super().__init__(token, base_url, timeout, max_retries)
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
            if resp.status_code in RETRY_STATUSES and attempt < self.max_retries:
                time.sleep(self._delay(attempt, resp))
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
    def __init__(self, token, base_url, timeout, max_retries):
        super().__init__(token, base_url, timeout, max_retries)
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
            if resp.status_code in RETRY_STATUSES and attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, resp))
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
