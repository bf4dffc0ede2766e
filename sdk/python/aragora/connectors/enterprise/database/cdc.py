"""The guide's CDC event model and handlers.

Every connector emits :class:`ChangeEvent` objects (the guide's "CDC Event Model") and hands them,
batch by batch, to the handlers added with ``connector.add_change_handler(...)``::

    from aragora.connectors.enterprise.database.cdc import (
        CallbackHandler, CompositeHandler, KnowledgeMoundHandler)

    composite = CompositeHandler()
    composite.add_handler(KnowledgeMoundHandler(mound))
    composite.add_handler(CallbackHandler(log_change))
    connector.add_change_handler(composite)

Delivery is **at least once**: a batch is acknowledged to the engine only after every handler
returned; if one raises, the engine offers the same events again (same ``id``\\ s) after a backoff
and saves no position past them. Handlers should therefore be idempotent (upsert by
``primary_key``, or remember ``event.id``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Union

__all__ = [
    "CDCSourceType", "ChangeOperation", "ChangeEvent", "SyncRow",
    "ChangeHandler", "CallbackHandler", "CompositeHandler", "CompositeHandlerError", "KnowledgeMoundHandler",
    "CDCError", "ConfigError",
    "render_row", "canonical_key", "knowledge_source_key",
]


# ---- errors --------------------------------------------------------------------------------------

class CDCError(Exception):
    """The CDC engine (the ``aragora cdc run`` child process) refused or failed.

    ``kind`` is ``"config"`` (bad input: see :class:`ConfigError`), ``"source"`` (the source
    database refused, is unreachable, or lost the resume position), ``"checkpoint"`` (the
    checkpoint file cannot be read or written), ``"state"`` (the call does not fit the connector's
    state), ``"protocol"`` (the child spoke something this SDK does not understand) or ``"exit"``
    (the child died without saying why: ``exit_code`` and ``stderr`` tell what is known).
    ``field`` names the offending setting (``"config.tables"``) when there is one."""

    def __init__(self, message: str, kind: str = "source", field: Optional[str] = None,
                 exit_code: Optional[int] = None, stderr: Optional[Sequence[str]] = None):
        self.message = message
        self.kind = kind
        self.field = field
        self.exit_code = exit_code
        self.stderr: List[str] = list(stderr or [])
        super().__init__(message)

    def __str__(self) -> str:
        text = self.message
        if self.field and not text.startswith(self.field):
            text = f"{self.field}: {text}"
        if self.kind == "exit" and self.stderr:
            text += "\nlast stderr lines:\n" + "\n".join(self.stderr)
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, field={self.field!r}, message={self.message!r})"

    @classmethod
    def from_json(cls, error: Any, exit_code: Optional[int] = None,
                  stderr: Optional[Sequence[str]] = None) -> "CDCError":
        """The exception for an ``{"error": {"kind", "field", "message"}}`` line."""
        if not isinstance(error, dict):
            error = {"message": str(error)}
        kind = str(error.get("kind") or "source")
        field_name = error.get("field")
        message = str(error.get("message") or "the CDC engine reported an error without a message")
        klass = ConfigError if kind == "config" else CDCError
        return klass(message, kind=kind, field=str(field_name) if field_name else None,
                     exit_code=exit_code, stderr=stderr)


class ConfigError(CDCError, ValueError):
    """Bad connector input (kind ``"config"``); ``field`` names it, e.g. ``config.tables``,
    ``config.server_id`` or ``credentials.username``, and ``str()`` starts with it. Raised before
    anything is started."""

    def __init__(self, message: str, kind: str = "config", field: Optional[str] = None,
                 exit_code: Optional[int] = None, stderr: Optional[Sequence[str]] = None):
        super().__init__(message, kind=kind, field=field, exit_code=exit_code, stderr=stderr)


# ---- event model ----------------------------------------------------------------------------------

class CDCSourceType(str, Enum):
    """Where a change came from (serialised lower-case)."""

    POSTGRESQL = "postgresql"
    MONGODB = "mongodb"
    MYSQL = "mysql"
    SQLSERVER = "sqlserver"
    SNOWFLAKE = "snowflake"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class ChangeOperation(str, Enum):
    """What happened to the row (serialised upper-case)."""

    INSERT = "INSERT"
    UPDATE = "UPDATE"
    DELETE = "DELETE"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))$")


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware ``datetime`` in UTC (fractions beyond microseconds are
    truncated). Works on every supported Python (``fromisoformat`` accepts ``Z`` only from 3.11)."""
    m = _RFC3339.match(text.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if not z:
        offset = timedelta(hours=int(oh), minutes=int(om))
        tz = timezone(offset if sign == "+" else -offset)
    leap = int(s) == 60  # a leap second: the last representable instant of that minute
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), 59 if leap else int(s),
                  999999 if leap else micro, tzinfo=tz)
    return dt.astimezone(timezone.utc)


def format_timestamp(dt: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class ChangeEvent:
    """One row change, exactly the guide's fields.

    ``data`` is the new row (INSERT/UPDATE; empty for DELETE), ``old_data`` the row before
    (UPDATE/DELETE, where the source provides it), ``primary_key`` the key columns. ``id`` is
    derived from the source position, so a redelivered event has the same id. ``timestamp`` is an
    aware UTC ``datetime`` (the source's commit time where known)."""

    id: str
    source_type: CDCSourceType
    connector_id: str
    operation: ChangeOperation
    timestamp: datetime
    database: str
    table: str
    data: Dict[str, Any] = field(default_factory=dict)
    old_data: Dict[str, Any] = field(default_factory=dict)
    primary_key: Dict[str, Any] = field(default_factory=dict)
    resume_token: str = ""
    sequence_number: int = 0

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "ChangeEvent":
        """From the engine's JSON (the same shape as ``GET /api/v1/connectors/{id}/events`` items
        and ``cdc.change`` webhook data). Unknown fields are ignored."""
        if not isinstance(obj, dict):
            raise ValueError(f"a change event must be a JSON object, not {type(obj).__name__}")
        try:
            ts = obj["timestamp"]
            return cls(
                id=str(obj["id"]),
                source_type=CDCSourceType(str(obj["source_type"]).lower()),
                connector_id=str(obj["connector_id"]),
                operation=ChangeOperation(str(obj["operation"]).upper()),
                timestamp=ts if isinstance(ts, datetime) else parse_timestamp(str(ts)),
                database=str(obj.get("database") or ""),
                table=str(obj["table"]),
                data=dict(obj.get("data") or {}),
                old_data=dict(obj.get("old_data") or {}),
                primary_key=dict(obj.get("primary_key") or {}),
                resume_token=str(obj.get("resume_token") or ""),
                sequence_number=int(obj.get("sequence_number") or 0),
            )
        except KeyError as e:
            raise ValueError(f"change event without {e.args[0]!r}: {obj!r}"[:500]) from None

    def to_dict(self) -> Dict[str, Any]:
        """The JSON shape (the inverse of :meth:`from_json`)."""
        return {
            "id": self.id, "source_type": self.source_type.value, "connector_id": self.connector_id,
            "operation": self.operation.value, "timestamp": format_timestamp(self.timestamp),
            "database": self.database, "table": self.table, "data": self.data, "old_data": self.old_data,
            "primary_key": self.primary_key, "resume_token": self.resume_token,
            "sequence_number": self.sequence_number,
        }


@dataclass
class SyncRow:
    """One row of ``connector.sync()``: ``evidence_id`` (e.g. ``mysql:<db>.<table>:<key>``),
    ``table``, ``primary_key``, ``content`` (the row as text) and ``data`` (the row)."""

    evidence_id: str
    table: str
    primary_key: Dict[str, Any]
    content: str
    data: Dict[str, Any]

    @classmethod
    def from_json(cls, obj: Dict[str, Any]) -> "SyncRow":
        if not isinstance(obj, dict):
            raise ValueError(f"a sync row must be a JSON object, not {type(obj).__name__}")
        try:
            return cls(evidence_id=str(obj["evidence_id"]), table=str(obj.get("table") or ""),
                       primary_key=dict(obj.get("primary_key") or {}), content=str(obj.get("content") or ""),
                       data=dict(obj.get("data") or {}))
        except KeyError as e:
            raise ValueError(f"sync row without {e.args[0]!r}") from None


# ---- handlers -------------------------------------------------------------------------------------

async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class ChangeHandler:
    """Base class of change handlers. Override :meth:`handle` (one event) or, to work on a whole
    batch at once (e.g. one transaction per batch), :meth:`handle_batch`. Raising fails the batch:
    it is offered again later (at least once)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    async def handle(self, event: ChangeEvent) -> None:
        # Not abstract: a handler may override handle_batch() alone.
        raise NotImplementedError(f"{type(self).__name__} must override handle() or handle_batch()")

    async def handle_batch(self, events: Sequence[ChangeEvent]) -> None:
        """Handles ``events`` in order; the default calls :meth:`handle` for each."""
        for event in events:
            await self.handle(event)


class CallbackHandler(ChangeHandler):
    """Calls ``callback(event)`` for every event, in order; the callback may be a coroutine
    function or a plain function."""

    def __init__(self, callback: Callable[[ChangeEvent], Union[None, Awaitable[None]]]):
        if not callable(callback):
            raise TypeError("CallbackHandler needs a callable")
        self.callback = callback

    @property
    def name(self) -> str:
        return f"CallbackHandler({getattr(self.callback, '__qualname__', repr(self.callback))})"

    async def handle(self, event: ChangeEvent) -> None:
        await _maybe_await(self.callback(event))


class CompositeHandlerError(Exception):
    """Several handlers of a :class:`CompositeHandler` failed on the same batch; ``errors`` lists
    ``(handler, exception)``."""

    def __init__(self, errors: List[tuple]):
        self.errors = errors
        super().__init__("; ".join(f"{getattr(h, 'name', h)}: {e}" for h, e in errors))


def as_handler(handler: Any) -> ChangeHandler:
    """A :class:`ChangeHandler` from a handler object (anything with an async ``handle(event)``)
    or from a plain callable (wrapped in :class:`CallbackHandler`)."""
    if isinstance(handler, ChangeHandler):
        return handler
    if hasattr(handler, "handle") and callable(getattr(handler, "handle")):
        return _DuckHandler(handler)
    if callable(handler):
        return CallbackHandler(handler)
    raise TypeError(f"not a change handler: {handler!r} (give a ChangeHandler, an object with "
                    "async handle(event), or a callable)")


class _DuckHandler(ChangeHandler):
    def __init__(self, inner: Any):
        self.inner = inner

    @property
    def name(self) -> str:
        return type(self.inner).__name__

    async def handle(self, event: ChangeEvent) -> None:
        await _maybe_await(self.inner.handle(event))

    async def handle_batch(self, events: Sequence[ChangeEvent]) -> None:
        batch = getattr(self.inner, "handle_batch", None)
        if callable(batch):
            await _maybe_await(batch(events))
        else:
            await super().handle_batch(events)


class CompositeHandler(ChangeHandler):
    """Runs several handlers **concurrently** on each batch (``asyncio.gather``; each handler sees
    the events in order). Every handler runs to completion; the batch fails if any failed (the
    exception is re-raised, or :class:`CompositeHandlerError` when several failed), and is then
    offered again to all of them."""

    def __init__(self, handlers: Optional[Iterable[Any]] = None):
        self.handlers: List[ChangeHandler] = [as_handler(h) for h in (handlers or [])]

    def add_handler(self, handler: Any) -> "CompositeHandler":
        self.handlers.append(as_handler(handler))
        return self

    def remove_handler(self, handler: Any) -> None:
        self.handlers = [h for h in self.handlers if h is not handler and getattr(h, "inner", None) is not handler]

    def __len__(self) -> int:
        return len(self.handlers)

    @property
    def name(self) -> str:
        return "CompositeHandler[" + ",".join(h.name for h in self.handlers) + "]"

    async def handle(self, event: ChangeEvent) -> None:
        await self.handle_batch([event])

    async def handle_batch(self, events: Sequence[ChangeEvent]) -> None:
        handlers = list(self.handlers)
        results = await asyncio.gather(*(h.handle_batch(events) for h in handlers), return_exceptions=True)
        errors = [(h, r) for h, r in zip(handlers, results) if isinstance(r, BaseException)]
        for _, e in errors:
            if not isinstance(e, Exception):  # cancellation, KeyboardInterrupt: not a handler failure
                raise e
        if len(errors) == 1:
            raise errors[0][1]
        if errors:
            raise CompositeHandlerError(errors)


# ---- knowledge mound --------------------------------------------------------------------------------

def canonical_key(primary_key: Dict[str, Any]) -> str:
    """The primary key as compact JSON with keys sorted at every level — the same spelling the
    Rust engine uses (``aragora_core::json::canonical_object``)."""
    return json.dumps(primary_key, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def knowledge_source_key(connector_id: str, table: str, primary_key: Dict[str, Any]) -> str:
    """``<connector>/<table>/<canonical primary key>``: the knowledge item a row becomes (the key
    the server's own CDC indexing uses, see docs/knowledge.md)."""
    return f"{connector_id}/{table}/{canonical_key(primary_key)}"


def render_row(table: str, primary_key: Dict[str, Any], row: Dict[str, Any]) -> str:
    """The row as searchable text, as the Rust engine renders it: ``table: <t>``, then the key
    columns, then the other columns (each group sorted), one ``column: value`` per line."""
    lines = [f"table: {table}"]
    rest = sorted(k for k in row if k not in primary_key)
    for k in sorted(primary_key) + rest:
        v = row[k] if k in row else primary_key.get(k)
        if isinstance(v, str):
            text = v
        elif v is None:
            text = "null"
        else:
            text = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
        lines.append(f"{k}: {text}")
    return "\n".join(lines) + "\n"


class KnowledgeMoundHandler(ChangeHandler):
    """Indexes changes into a knowledge store: one item per row, upserted under
    ``<connector>/<table>/<canonical primary key>`` (:func:`knowledge_source_key`) on INSERT and
    UPDATE, removed on DELETE (and under the old key when an UPDATE changed the primary key).

    ``mound`` is any object with two methods, coroutines or plain functions::

        async def upsert(self, source_key: str, content: str, metadata: dict) -> None
        async def delete(self, source_key: str) -> None   # a missing key is not an error

    Both must be idempotent (the same event may come twice). Each batch is coalesced by key (the
    last change of a row wins) before it is written. ``content`` is the row as text
    (:func:`render_row`); ``metadata`` holds ``connector_id``, ``source``, ``database``, ``table``,
    ``primary_key``, ``operation``, ``event_id``, ``sequence_number``, ``timestamp`` and ``data``.

    To index into the server's Knowledge Mound, pass an ``AragoraClient`` or
    ``AsyncAragoraClient`` (or its ``.knowledge``): items are upserted with
    ``POST /api/v1/knowledge/items`` and removed with ``DELETE /api/v1/knowledge/items``, under
    ``source_type`` ``cdc-client`` (``cdc`` belongs to the server's own connectors)."""

    def __init__(self, mound: Any):
        if not all(callable(getattr(mound, m, None)) for m in ("upsert", "delete")) \
                and hasattr(mound, "knowledge"):
            mound = mound.knowledge  # an Aragora client: its Knowledge resource
        missing = [m for m in ("upsert", "delete") if not callable(getattr(mound, m, None))]
        if missing:
            raise TypeError(
                f"KnowledgeMoundHandler needs an object with upsert(source_key, content, metadata) and "
                f"delete(source_key) methods; {type(mound).__name__} lacks {', '.join(missing)}")
        self.mound = mound

    async def handle(self, event: ChangeEvent) -> None:
        await self.handle_batch([event])

    @staticmethod
    def _previous_key(event: ChangeEvent) -> Optional[Dict[str, Any]]:
        if event.operation != ChangeOperation.UPDATE or not event.old_data:
            return None
        old = {}
        for k in event.primary_key:
            if k not in event.old_data:
                return None
            old[k] = event.old_data[k]
        return old if old != event.primary_key else None

    @staticmethod
    def metadata_for(event: ChangeEvent) -> Dict[str, Any]:
        return {
            "connector_id": event.connector_id, "source": event.source_type.value, "database": event.database,
            "table": event.table, "primary_key": event.primary_key, "operation": event.operation.value,
            "event_id": event.id, "sequence_number": event.sequence_number,
            "timestamp": format_timestamp(event.timestamp), "data": event.data,
        }

    async def handle_batch(self, events: Sequence[ChangeEvent]) -> None:
        last: Dict[str, Optional[ChangeEvent]] = {}
        for e in events:
            old = self._previous_key(e)
            if old is not None:
                last[knowledge_source_key(e.connector_id, e.table, old)] = None
            key = knowledge_source_key(e.connector_id, e.table, e.primary_key)
            last[key] = None if e.operation == ChangeOperation.DELETE else e
        for key, e in last.items():
            if e is None:
                await _maybe_await(self.mound.delete(key))
            else:
                await _maybe_await(self.mound.upsert(key, render_row(e.table, e.primary_key, e.data),
                                                     self.metadata_for(e)))
