"""The Aragora clients.

``AragoraClient(api_key=…)`` and ``AragonaClient(api_token=…)`` (the spelling in parts of the
guide) are the same synchronous client; ``AsyncAragoraClient`` has the same methods as coroutines
and the same public attributes (``base_url``, ``timeout``, ``max_retries``, ``max_retry_wait``).
The base URL comes from ``base_url=``, else ``ARAGORA_API_URL``, else the older ``ARAGORA_URL``,
else ``http://127.0.0.1:8080``; the token from ``api_key=``/``api_token=``, else
``ARAGORA_API_TOKEN``, else ``ARAGORA_TOKEN`` — the variables of the ``aragora`` CLI's client
commands, in the same order (blank values are skipped).

429 and 503 are retried up to ``max_retries`` times, never before the server's ``Retry-After``
(seconds or an HTTP date); when that is longer than ``max_retry_wait`` seconds (default 30) the
error is raised at once, its ``retry_after`` the server's value.
"""

from __future__ import annotations

from typing import Optional, Union

from ._http import DEFAULT_MAX_RETRY_WAIT, AsyncTransport, SyncTransport
from .resources import (Connectors, Debates, Events, Explainability, Knowledge, Marketplace, Webhooks,
                        Workers)


class _Namespaces:
    _transport: Union[SyncTransport, AsyncTransport]

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    @property
    def timeout(self) -> float:
        return self._transport.timeout

    @property
    def max_retries(self) -> int:
        return self._transport.max_retries

    @property
    def max_retry_wait(self) -> float:
        return self._transport.max_retry_wait

    def _mount(self, transport) -> None:
        self.marketplace = Marketplace(transport)
        self.explainability = Explainability(transport)
        self.webhooks = Webhooks(transport)
        self.events = Events(transport)
        self.debates = Debates(transport)
        self.knowledge = Knowledge(transport)
        self.connectors = Connectors(transport)
        self.workers = Workers(transport)


class AragoraClient(_Namespaces):
    def __init__(self, api_key: Optional[str] = None, *, api_token: Optional[str] = None,
                 base_url: Optional[str] = None, timeout: float = 30.0, max_retries: int = 3,
                 max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT):
        self._transport = SyncTransport(api_key or api_token, base_url, timeout, max_retries, max_retry_wait)
        self._mount(self._transport)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


AragonaClient = AragoraClient


class AsyncAragoraClient(_Namespaces):
    def __init__(self, api_key: Optional[str] = None, *, api_token: Optional[str] = None,
                 base_url: Optional[str] = None, timeout: float = 30.0, max_retries: int = 3,
                 max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT):
        self._transport = AsyncTransport(api_key or api_token, base_url, timeout, max_retries, max_retry_wait)
        self._mount(self._transport)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
