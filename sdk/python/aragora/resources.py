"""API namespaces. Each method builds one request; the transport (sync or async) sends it, so the
same classes serve ``AragoraClient`` and ``AsyncAragoraClient``."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional
from urllib.parse import quote

from .models import (Batch, BatchResult, Category, Connector, ConnectorEvent, Debate, Download, Event, Explanation,
                     KnowledgeItem, Model, Rating, Receipt, Review, Template, TemplateVersion, Webhook, page_of)


def _p(segment: str) -> str:
    return quote(str(segment), safe="")


class _Resource:
    def __init__(self, transport):
        self._t = transport


class Marketplace(_Resource):
    """Template marketplace: ``/api/marketplace/templates``."""

    def list_templates(self, category: Optional[str] = None, visibility: Optional[str] = None,
                       tags: Optional[Iterable[str]] = None, q: Optional[str] = None,
                       min_rating: Optional[float] = None, sort: Optional[str] = None, page: int = 1,
                       limit: int = 20, cursor: Optional[str] = None):
        params = dict(category=category, visibility=visibility, tags=list(tags) if tags else None, q=q,
                      min_rating=min_rating, sort=sort, page=None if cursor else page, limit=limit,
                      cursor=cursor)
        return self._t.call("GET", "/api/marketplace/templates", params=params,
                            wrap=lambda b: page_of(b, Template))

    def search(self, q: str, **kwargs):
        return self.list_templates(q=q, **kwargs)

    def publish(self, template: Dict[str, Any]):
        return self._t.call("POST", "/api/marketplace/templates", json=template, wrap=lambda b: Template(Model.wrap(b)))

    def get(self, template_id: str):
        return self._t.call("GET", f"/api/marketplace/templates/{_p(template_id)}",
                            wrap=lambda b: Template(Model.wrap(b)))

    def update(self, template_id: str, **fields):
        return self._t.call("PATCH", f"/api/marketplace/templates/{_p(template_id)}", json=fields,
                            wrap=lambda b: Template(Model.wrap(b)))

    def delete(self, template_id: str):
        return self._t.call("DELETE", f"/api/marketplace/templates/{_p(template_id)}")

    def download(self, template_id: str, version: Optional[str] = None):
        body = {"version": version} if version else None
        return self._t.call("POST", f"/api/marketplace/templates/{_p(template_id)}/download", json=body,
                            wrap=lambda b: Download(Model.wrap(b)))

    def rate(self, template_id: str, rating: int):
        return self._t.call("POST", f"/api/marketplace/templates/{_p(template_id)}/rate",
                            json={"rating": rating}, wrap=lambda b: Rating(Model.wrap(b)))

    def review(self, template_id: str, rating: int, title: Optional[str] = None, content: Optional[str] = None):
        body = {"rating": rating, "title": title, "content": content}
        return self._t.call("POST", f"/api/marketplace/templates/{_p(template_id)}/reviews",
                            json={k: v for k, v in body.items() if v is not None},
                            wrap=lambda b: Review(Model.wrap(b)))

    def reviews(self, template_id: str, limit: int = 20, cursor: Optional[str] = None):
        return self._t.call("GET", f"/api/marketplace/templates/{_p(template_id)}/reviews",
                            params={"limit": limit, "cursor": cursor}, wrap=lambda b: page_of(b, Review))

    def versions(self, template_id: str):
        return self._t.call("GET", f"/api/marketplace/templates/{_p(template_id)}/versions",
                            wrap=lambda b: page_of(b, TemplateVersion))

    def get_version(self, template_id: str, version: str):
        return self._t.call("GET", f"/api/marketplace/templates/{_p(template_id)}/versions/{_p(version)}",
                            wrap=lambda b: TemplateVersion(Model.wrap(b)))

    def yank(self, template_id: str, version: str):
        return self._t.call("POST", f"/api/marketplace/templates/{_p(template_id)}/versions/{_p(version)}/yank",
                            wrap=lambda b: TemplateVersion(Model.wrap(b)))

    def unyank(self, template_id: str, version: str):
        return self._t.call("POST", f"/api/marketplace/templates/{_p(template_id)}/versions/{_p(version)}/unyank",
                            wrap=lambda b: TemplateVersion(Model.wrap(b)))

    def publish_version(self, template_id: str, version: str, template_data: Dict[str, Any],
                        changelog: str = ""):
        return self._t.call("POST", f"/api/marketplace/templates/{_p(template_id)}/versions",
                            json={"version": version, "template_data": template_data, "changelog": changelog},
                            wrap=lambda b: TemplateVersion(Model.wrap(b)))

    def categories(self, limit: int = 20, cursor: Optional[str] = None):
        """A page of categories by name (``Category``: ``name``, ``count``)."""
        return self._t.call("GET", "/api/marketplace/categories", params={"limit": limit, "cursor": cursor},
                            wrap=lambda b: page_of(b, Category))


class Explainability(_Resource):
    """Decision explanations and batch jobs."""

    def get_explanation(self, debate_id: str, format: str = "json", include_evidence: Optional[bool] = None,
                        include_counterfactuals: Optional[bool] = None,
                        include_vote_pivots: Optional[bool] = None):
        params = dict(format=format, include_evidence=include_evidence,
                      include_counterfactuals=include_counterfactuals, include_vote_pivots=include_vote_pivots)
        wrap = (lambda b: Explanation(Model.wrap(b))) if format == "json" else Model.wrap
        return self._t.call("GET", f"/api/v1/debates/{_p(debate_id)}/explanation", params=params, wrap=wrap)

    def get_stored(self, decision_id: str):
        return self._t.call("GET", f"/api/v1/explanations/{_p(decision_id)}",
                            wrap=lambda b: Explanation(Model.wrap(b)))

    def create_batch(self, debate_ids: List[str], include_evidence: bool = True,
                     include_counterfactuals: bool = True, include_vote_pivots: bool = True,
                     format: str = "json", idempotency_key: Optional[str] = None):
        body = {"debate_ids": list(debate_ids),
                "options": {"include_evidence": include_evidence,
                            "include_counterfactuals": include_counterfactuals,
                            "include_vote_pivots": include_vote_pivots, "format": format}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._t.call("POST", "/api/v1/explainability/batch", json=body, headers=headers,
                            wrap=lambda b: Batch(Model.wrap(b)))

    def get_batch_status(self, batch_id: str):
        return self._t.call("GET", f"/api/v1/explainability/batch/{_p(batch_id)}/status",
                            wrap=lambda b: Batch(Model.wrap({"batch_id": batch_id, **b})))

    def get_batch_results(self, batch_id: str, limit: int = 100, cursor: Optional[str] = None,
                          status: Optional[str] = None):
        """A page of ``BatchResult`` in submission order; the page also has ``batch_id``,
        ``batch_status`` and ``batch_phase``. ``status`` filters (success, error, not_found)."""
        return self._t.call("GET", f"/api/v1/explainability/batch/{_p(batch_id)}/results",
                            params={"limit": limit, "cursor": cursor, "status": status},
                            wrap=lambda b: page_of(b, BatchResult))


class Webhooks(_Resource):
    """Webhook registrations, test deliveries and receipts: ``/api/webhooks``."""

    def register(self, url: str, event_types: List[str], secret: Optional[str] = None,
                 description: Optional[str] = None):
        body = {"url": url, "event_types": list(event_types), "secret": secret, "description": description}
        return self._t.call("POST", "/api/webhooks", json={k: v for k, v in body.items() if v is not None},
                            wrap=lambda b: Webhook(Model.wrap(b)))

    def list(self, limit: int = 50, cursor: Optional[str] = None):
        return self._t.call("GET", "/api/webhooks", params={"limit": limit, "cursor": cursor},
                            wrap=lambda b: page_of(b, Webhook))

    def get(self, webhook_id: str):
        return self._t.call("GET", f"/api/webhooks/{_p(webhook_id)}", wrap=lambda b: Webhook(Model.wrap(b)))

    def update(self, webhook_id: str, **fields):
        return self._t.call("PUT", f"/api/webhooks/{_p(webhook_id)}", json=fields,
                            wrap=lambda b: Webhook(Model.wrap(b)))

    def delete(self, webhook_id: str):
        return self._t.call("DELETE", f"/api/webhooks/{_p(webhook_id)}")

    def test(self, webhook_id: str):
        return self._t.call("POST", f"/api/webhooks/{_p(webhook_id)}/test", wrap=lambda b: Receipt(Model.wrap(b)))

    def get_receipts(self, webhook_id: str, status: Optional[str] = None, limit: int = 10,
                     cursor: Optional[str] = None):
        return self._t.call("GET", f"/api/webhooks/{_p(webhook_id)}/receipts",
                            params={"status": status, "limit": limit, "cursor": cursor},
                            wrap=lambda b: page_of(b, Receipt))


class Events(_Resource):
    """Custom events through the outbox (delivered to subscribed webhooks) and the event log."""

    def publish(self, event_type: str, data: Dict[str, Any], idempotency_key: Optional[str] = None):
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._t.call("POST", "/api/v1/events", json={"event_type": event_type, "data": data},
                            headers=headers, wrap=Model.wrap)

    def list(self, type: Optional[str] = None, after: Optional[str] = None, limit: int = 100,
             cursor: Optional[str] = None):
        """A page of ``Event``, oldest first; pass the page's ``next_cursor`` as ``after`` (or
        ``cursor``) for the next one."""
        return self._t.call("GET", "/api/v1/events",
                            params={"type": type, "after": after, "cursor": cursor, "limit": limit},
                            wrap=lambda b: page_of(b, Event))


class Debates(_Resource):
    """Debates: start (runs on the server), import finished transcripts, read."""

    def start(self, task: str, agents: List[Dict[str, Any]], rounds: int = 2,
              consensus: Optional[Dict[str, Any]] = None, context: Optional[str] = None):
        body = {"task": task, "agents": agents, "rounds": rounds}
        if consensus:
            body["consensus"] = consensus
        if context:
            body["context"] = context
        return self._t.call("POST", "/api/v1/debates", json=body, wrap=Model.wrap)

    def import_debate(self, record: Dict[str, Any]):
        return self._t.call("POST", "/api/v1/debates/import", json=record, wrap=lambda b: Debate(Model.wrap(b)))

    def get(self, debate_id: str):
        return self._t.call("GET", f"/api/v1/debates/{_p(debate_id)}", wrap=lambda b: Debate(Model.wrap(b)))

    def list(self, status: Optional[str] = None, limit: int = 20, cursor: Optional[str] = None):
        return self._t.call("GET", "/api/v1/debates", params={"status": status, "limit": limit, "cursor": cursor},
                            wrap=lambda b: page_of(b, Debate))


CLIENT_SOURCE_TYPE = "cdc-client"
"""Default ``source_type`` of :meth:`Knowledge.upsert` and :meth:`Knowledge.delete`: items a
client-side connector indexes (``cdc`` and ``debate`` are written by the server only)."""


class Knowledge(_Resource):
    """The knowledge mound: search, read, ingest, delete.

    ``upsert`` and ``delete`` (by source key) make this object, or the client itself, a mound for
    :class:`~aragora.connectors.enterprise.database.cdc.KnowledgeMoundHandler`."""

    def search(self, q: str, source_type: Optional[str] = None, limit: int = 10, cursor: Optional[str] = None):
        """One page of hits, best first. For the next page pass the page's ``next_cursor`` as
        ``cursor`` with the same ``q`` and ``source_type`` (None on the last page)."""
        return self._t.call("GET", "/api/v1/knowledge/search",
                            params={"q": q, "source_type": source_type, "limit": limit, "cursor": cursor},
                            wrap=lambda b: page_of(b, KnowledgeItem))

    def get(self, item_id: str):
        return self._t.call("GET", f"/api/v1/knowledge/items/{_p(item_id)}",
                            wrap=lambda b: KnowledgeItem(Model.wrap(b)))

    def ingest(self, content: str, source_key: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None,
               confidence: Optional[float] = None):
        body = {"content": content, "source_key": source_key, "metadata": metadata, "confidence": confidence}
        return self._t.call("POST", "/api/v1/knowledge/items", json={k: v for k, v in body.items() if v is not None},
                            wrap=lambda b: KnowledgeItem(Model.wrap(b)))

    def upsert(self, source_key: str, content: str, metadata: Optional[Dict[str, Any]] = None,
               source_type: str = CLIENT_SOURCE_TYPE, confidence: Optional[float] = None):
        """Creates the item of ``(source_type, source_key)``, or updates it in place (same id)."""
        body = {"content": content, "source_type": source_type, "source_key": source_key, "metadata": metadata,
                "confidence": confidence}
        return self._t.call("POST", "/api/v1/knowledge/items", json={k: v for k, v in body.items() if v is not None},
                            wrap=lambda b: KnowledgeItem(Model.wrap(b)))

    def delete(self, source_key: str, source_type: str = CLIENT_SOURCE_TYPE):
        """Deletes the item of ``(source_type, source_key)``: True when one was removed, False when
        there was none (not an error, so replays are harmless)."""
        return self._t.call("DELETE", "/api/v1/knowledge/items",
                            params={"source_type": source_type, "source_key": source_key},
                            wrap=lambda b: True, not_found=False)

    def delete_item(self, item_id: str):
        """Deletes one item by id; raises NotFoundError when this workspace has no such item."""
        return self._t.call("DELETE", f"/api/v1/knowledge/items/{_p(item_id)}")


class Connectors(_Resource):
    """Server-managed CDC connectors."""

    def create(self, name: str, type: str, config: Dict[str, Any], credentials: Optional[Dict[str, Any]] = None,
               handlers: Optional[List[str]] = None, start: bool = True):
        body = {"name": name, "type": type, "config": config, "credentials": credentials or {},
                "handlers": handlers or ["knowledge_mound"], "start": start}
        return self._t.call("POST", "/api/v1/connectors", json=body, wrap=lambda b: Connector(Model.wrap(b)))

    def list(self, limit: Optional[int] = None, cursor: Optional[str] = None):
        return self._t.call("GET", "/api/v1/connectors", params={"limit": limit, "cursor": cursor},
                            wrap=lambda b: page_of(b, Connector))

    def get(self, connector_id: str):
        return self._t.call("GET", f"/api/v1/connectors/{_p(connector_id)}", wrap=lambda b: Connector(Model.wrap(b)))

    def delete(self, connector_id: str):
        return self._t.call("DELETE", f"/api/v1/connectors/{_p(connector_id)}")

    def health(self, connector_id: str):
        return self._t.call("GET", f"/api/v1/connectors/{_p(connector_id)}/health", wrap=Model.wrap)

    def start(self, connector_id: str):
        return self._t.call("POST", f"/api/v1/connectors/{_p(connector_id)}/start", wrap=Model.wrap)

    def stop(self, connector_id: str):
        return self._t.call("POST", f"/api/v1/connectors/{_p(connector_id)}/stop", wrap=Model.wrap)

    def events(self, connector_id: str, limit: int = 50, cursor: Optional[str] = None):
        """A page of ``ConnectorEvent``, newest first; ``next_cursor`` pages to older ones."""
        return self._t.call("GET", f"/api/v1/connectors/{_p(connector_id)}/events",
                            params={"limit": limit, "cursor": cursor or None},
                            wrap=lambda b: page_of(b, ConnectorEvent))


class Workers(_Resource):
    def status(self):
        return self._t.call("GET", "/api/workers/status", wrap=Model.wrap)
