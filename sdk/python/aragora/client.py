"""The Aragora clients.

``AragoraClient(api_key=…)`` and ``AragonaClient(api_token=…)`` (the spelling in parts of the
guide) are the same synchronous client; ``AsyncAragoraClient`` has the same methods as coroutines.
The base URL comes from ``base_url=``, else ``ARAGORA_API_URL``, else ``http://127.0.0.1:8080``;
the token from ``api_key=``/``api_token=``, else ``ARAGORA_API_TOKEN``.
"""

from __future__ import annotations

from typing import Optional

from ._http import AsyncTransport, SyncTransport
from .resources import (Connectors, Debates, Events, Explainability, Knowledge, Marketplace, Webhooks,
                        Workers)


class _Namespaces:
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
                 base_url: Optional[str] = None, timeout: float = 30.0, max_retries: int = 3):
        self._transport = SyncTransport(api_key or api_token, base_url, timeout, max_retries)
        self._mount(self._transport)

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    def close(self) -> None:
        self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


AragonaClient = AragoraClient


class AsyncAragoraClient(_Namespaces):
    def __init__(self, api_key: Optional[str] = None, *, api_token: Optional[str] = None,
                 base_url: Optional[str] = None, timeout: float = 30.0, max_retries: int = 3):
        self._transport = AsyncTransport(api_key or api_token, base_url, timeout, max_retries)
        self._mount(self._transport)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()
