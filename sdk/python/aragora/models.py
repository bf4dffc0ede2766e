"""Response models: dictionaries that also allow attribute access (``batch.status``).

They keep every field the server sends, so new server fields never break old clients.
"""

from __future__ import annotations

from typing import Any, Dict, List


class Model(dict):
    """A JSON object with attribute access. Missing attributes raise ``AttributeError``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    @classmethod
    def wrap(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return cls({k: Model.wrap(v) for k, v in value.items()})
        if isinstance(value, list):
            return [Model.wrap(v) for v in value]
        return value


class Template(Model):
    """A marketplace template: id, name, description, category, visibility, tags, owner, workspace,
    latest_version, downloads, rating_average, rating_count, created_at, updated_at, template_data?"""


class Download(Model):
    """A download: template_id, version, checksum, template_data."""


class Review(Model):
    """A review: id, template_id, rating, title, content, user, created_at."""


class Explanation(Model):
    """An explanation: decision_id, debate_id, conclusion, confidence, consensus_reached,
    evidence_chain, vote_pivots, counterfactuals, reasoning_chain, belief_changes, method…"""


class Batch(Model):
    """A batch job: batch_id, status (pending|processing|completed|partial|failed), total, progress."""


class Webhook(Model):
    """A webhook: id, url, event_types, description, enabled, created_at (secret on create/rotate)."""


class Receipt(Model):
    """A delivery attempt: id, webhook_id, event_id, event_type, attempt, trigger, status,
    status_code, error_class, duration_ms, created_at, next_attempt_at."""


class Debate(Model):
    """A debate record (see the API reference)."""


class KnowledgeItem(Model):
    """A knowledge mound item."""


class Connector(Model):
    """A CDC connector."""


class Page(Model):
    """A list page: items, total, next_cursor (and page/limit where the API uses them)."""

    @property
    def items(self) -> List[Any]:  # type: ignore[override]
        return self.get("items", [])


def page_of(body: Dict[str, Any], item_cls: type) -> Page:
    page = Page({k: Model.wrap(v) for k, v in body.items() if k != "items"})
    page["items"] = [item_cls(Model.wrap(i)) for i in body.get("items", [])]
    return page
