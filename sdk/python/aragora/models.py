"""Response models: dictionaries that also allow attribute access (``batch.status``).

They keep every field the server sends, so new server fields never break old clients; the class
annotations list the documented fields for type checkers and editors.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional


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
    """A marketplace template (``template_data`` and ``checksum`` on publish, get and update)."""

    id: str
    name: str
    description: str
    category: str
    visibility: str
    tags: List[str]
    owner: str
    workspace: str
    latest_version: str
    downloads: int
    rating_average: float
    rating_count: int
    created_at: str
    updated_at: str
    template_data: Optional[Dict[str, Any]]
    checksum: Optional[str]


class TemplateVersion(Model):
    """One immutable version of a template (``template_data`` when fetched by version)."""

    template_id: str
    version: str
    changelog: str
    checksum: str
    size_bytes: int
    downloads: int
    yanked: bool
    published_by: str
    created_at: str
    yanked_at: Optional[str]


class Download(Model):
    """A download: the version's data and its ``sha256:`` checksum."""

    template_id: str
    name: str
    version: str
    template_data: Dict[str, Any]
    checksum: str
    yanked: bool
    counted: bool


class Rating(Model):
    """A template's rating after ``rate``."""

    template_id: str
    rating: int
    rating_average: float
    rating_count: int


class Review(Model):
    id: str
    template_id: str
    user: str
    rating: int
    title: str
    content: str
    created_at: str
    updated_at: str


class Explanation(Model):
    """An explanation; the analyses are under their API names (``evidence_chain``,
    ``vote_pivots``, ``counterfactuals``, ``reasoning_chain``, ``belief_changes`` …)."""

    decision_id: str
    debate_id: str
    conclusion: str
    confidence: float
    consensus_reached: bool
    evidence_chain: List[Dict[str, Any]]
    vote_pivots: List[Dict[str, Any]]
    counterfactuals: List[Dict[str, Any]]


class Batch(Model):
    """A batch job (progress fields once fetched with ``get_batch_status``).

    ``status`` is the guide's: ``"processing"`` until every debate id has been handled, then
    ``"completed"`` — also when some or all debates could not be explained, so
    ``while batch.status != "completed"`` always ends. ``phase`` keeps the finer state:
    ``pending`` (no worker has started it) or ``processing`` while running; ``completed`` (every
    debate explained), ``partial`` or ``failed`` (none explained) once finished. ``succeeded``,
    ``failed`` and ``not_found`` count the per-debate results, which keep their own ``status``
    (``success``, ``error``, ``not_found``). ``error`` is set when the batch's background job gave
    up before every id was handled (``processed`` < ``total``; ids without a result were not
    explained), else ``None``."""

    batch_id: str
    status: str
    phase: str
    error: Optional[str]
    total: int
    processed: int
    succeeded: int
    failed: int
    not_found: int
    progress_percent: float


class BatchResult(Model):
    """One debate's result in a batch (``get_batch_results`` items): ``status`` is ``success``
    (``explanation`` set), ``error`` (``error`` set) or ``not_found``."""

    position: int
    debate_id: str
    status: str
    explanation: Optional[Dict[str, Any]]
    error: Optional[str]
    processing_time_ms: float
    attempt: int
    created_at: str


class Category(Model):
    """A marketplace category with the number of listed templates you may see."""

    name: str
    count: int


class Event(Model):
    """An event of the workspace's event log (``events.list`` items)."""

    event_type: str
    event_id: str
    timestamp: str
    data: Dict[str, Any]


class ConnectorEvent(Model):
    """A change a server-managed connector delivered (``connectors.events`` items): the JSON of
    the guide's ``ChangeEvent`` (``operation`` and ``source_type`` as strings)."""

    id: str
    source_type: str
    connector_id: str
    operation: str
    timestamp: str
    database: str
    table: str
    data: Dict[str, Any]
    old_data: Dict[str, Any]
    primary_key: Dict[str, Any]
    resume_token: str
    sequence_number: int


class Webhook(Model):
    """A webhook registration (``secret`` only on create and rotation)."""

    id: str
    url: str
    event_types: List[str]
    description: str
    enabled: bool
    disabled_reason: Optional[str]
    created_at: str
    updated_at: str
    secret: Optional[str]


class Receipt(Model):
    """One delivery attempt."""

    id: str
    webhook_id: str
    delivery_id: str
    event_id: str
    event_type: str
    attempt: int
    trigger: str
    status: str
    status_code: Optional[int]
    error_class: Optional[str]
    error_message: Optional[str]
    duration_ms: Optional[int]
    created_at: str


class Debate(Model):
    """A debate record (see the API reference)."""

    id: str
    status: str


class KnowledgeItem(Model):
    """A knowledge mound item (search hits add ``exact_phrase``, ``score`` and ``snippet``)."""

    id: str
    workspace: str
    source_type: str
    source_key: str
    content: str
    metadata: Dict[str, Any]
    confidence: float
    created_at: str
    updated_at: str


class Connector(Model):
    """A server-managed CDC connector (``type`` is a key: ``connector["type"]``)."""

    id: str
    name: str
    workspace: str
    config: Dict[str, Any]
    credentials: Dict[str, Any]
    handlers: List[str]
    state: str
    running_on: Optional[str]
    created_at: str


class _Items(list):
    """A page's items that can still be called as ``dict.items()``: ``page.items`` is the list,
    ``page.items()`` the key/value view that ``json.dumps`` and other dict code call."""

    def __init__(self, items: List[Any], page: "Page") -> None:
        super().__init__(items)
        self._page = page

    def __call__(self) -> Any:
        return dict.items(self._page)


class Page(Model):
    """A list page: items, total, next_cursor (and page/limit where the API uses them).

    Iterating a page yields its items (``for t in client.marketplace.list_templates()``);
    ``page["items"]`` and ``page.items`` are the list, ``page.total`` and ``page.next_cursor``
    the rest. It is still a dict of the response (``json.dumps(page)`` works).
    """

    @property
    def items(self) -> List[Any]:  # type: ignore[override]
        return _Items(self.get("items", []), self)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return iter(self.get("items", []))


def page_of(body: Dict[str, Any], item_cls: type) -> Page:
    page = Page({k: Model.wrap(v) for k, v in body.items() if k != "items"})
    page["items"] = [item_cls(Model.wrap(i)) for i in body.get("items", [])]
    return page
