"""In-process CDC connectors: the guide's ``MySQLConnector``, ``SQLServerConnector`` and friends.

The engine is the Rust ``aragora`` binary (``ARAGORA_BIN``, else ``aragora`` on ``PATH``): each
connector runs ``aragora cdc run`` as a child process and drives it over a line protocol on its
stdin/stdout (see :mod:`._engine`); change events come back to this process, where the handlers
added with :meth:`CDCConnector.add_change_handler` run. The password travels only through the
child's stdin.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from typing import Any, AsyncIterator, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ._engine import Child
from .cdc import CDCError, ChangeEvent, ChangeHandler, ConfigError, SyncRow, as_handler

__all__ = ["CDCConnector", "MySQLConnector", "SQLServerConnector", "PostgreSQLConnector", "MongoDBConnector",
           "SnowflakeConnector"]

log = logging.getLogger("aragora.cdc")

PathLike = Union[str, "os.PathLike[str]"]
# The connector whose event pump runs the current code (handlers run in tasks that inherit it).
_PUMPING: "contextvars.ContextVar[Optional[CDCConnector]]" = contextvars.ContextVar("aragora_cdc_pump",
                                                                                   default=None)
_CREDENTIAL_FIELDS = ("username", "password", "password_env", "password_file")


def _table_list(tables: Any) -> Any:
    """Lists and tuples (any iterable but a string or mapping) become a list; anything else goes to
    the engine as given, which refuses it naming ``config.tables``."""
    if tables is None or isinstance(tables, (str, bytes, Mapping)):
        return tables
    try:
        return list(tables)
    except TypeError:
        return tables


def _check_credentials(credentials: Any) -> Optional[Dict[str, Any]]:
    if credentials is None:
        return None
    if not isinstance(credentials, Mapping):
        raise ConfigError("must be an object such as {\"username\": \"cdc_user\", \"password\": \"…\"}",
                          field="credentials")
    for key in credentials:
        if key not in _CREDENTIAL_FIELDS:
            raise ConfigError(f"unknown field {key!r}; expected one of {', '.join(_CREDENTIAL_FIELDS)}",
                              field=f"credentials.{key}")
    for key in _CREDENTIAL_FIELDS:
        value = credentials.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"must be a string, not {type(value).__name__}", field=f"credentials.{key}")
    given = [k for k in ("password", "password_env", "password_file") if credentials.get(k) is not None]
    if len(given) > 1:
        raise ConfigError(f"give one of password, password_env, password_file (got {', '.join(given)})",
                          field=f"credentials.{given[1]}")
    return dict(credentials)


class CDCConnector:
    """A CDC connector of any type, run in-process by the ``aragora`` binary.

    ``config`` is the connector's configuration exactly as ``POST /api/v1/connectors`` takes it
    (docs/cdc/<type>.md); ``credentials`` is ``{"username": …, "password": …}`` (or
    ``password_env`` / ``password_file`` instead of ``password``: read here, when the connector
    starts). ``connector_id`` names the connector (event ids, the replica name, the checkpoint).
    ``checkpoint_path``: a file where the engine persists the resume position after every
    acknowledged batch, so a new connector with the same id and path resumes where this one
    stopped; ``None`` keeps positions in the child's memory only (a restart starts from the
    source's current end, after the initial snapshot per ``config["snapshot"]``).
    """

    source_type = ""

    def __init__(self, config: Mapping[str, Any], credentials: Optional[Mapping[str, Any]] = None, *,
                 connector_id: Optional[str] = None, checkpoint_path: Optional[PathLike] = None,
                 source_type: Optional[str] = None):
        if source_type:
            self.source_type = source_type
        if not self.source_type:
            raise ConfigError("give the connector type (postgresql, mongodb, mysql, sqlserver, snowflake)",
                              field="type")
        if not isinstance(config, Mapping):
            raise ConfigError(f"must be an object, not {type(config).__name__}", field="config")
        self.config: Dict[str, Any] = dict(config)
        self._credentials = _check_credentials(credentials)
        if connector_id is None:
            database = self.config.get("database")
            if not database:
                raise ConfigError("required (it also names the connector unless connector_id= is given)",
                                  field="config.database")
            connector_id = f"{self.source_type}-{database}"
        if not isinstance(connector_id, str) or not connector_id.strip():
            raise ConfigError("must be a non-empty string", field="connector_id")
        self.connector_id = connector_id
        self.checkpoint_path: Optional[str] = (os.path.abspath(os.fspath(checkpoint_path))
                                               if checkpoint_path is not None else None)
        self._handlers: List[ChangeHandler] = []
        self._child: Optional[Child] = None
        self._pump_task: Optional[asyncio.Task] = None
        self._ready: Optional[asyncio.Future] = None
        self._stopping = False
        self._stopped_seen = False
        self._failure: Optional[CDCError] = None
        # health_check() calls waiting for the running engine's answer, oldest first.
        self._health_waiters: List["asyncio.Future[Dict[str, Any]]"] = []
        # The handlers that already acknowledged the last refused batch (not asked again on its retry).
        self._partial: Optional[Tuple[Tuple[str, ...], set]] = None
        self.events_delivered = 0
        self.batches_refused = 0

    def __repr__(self) -> str:
        user = (self._credentials or {}).get("username")
        return (f"{type(self).__name__}(connector_id={self.connector_id!r}, config={self.config!r}, "
                f"username={user!r}, checkpoint_path={self.checkpoint_path!r}, running={self.running})")

    # ---- handlers -----------------------------------------------------------------------------------

    def add_change_handler(self, handler: Any) -> None:
        """Adds a handler: a :class:`~aragora.connectors.enterprise.database.cdc.ChangeHandler`
        (``CallbackHandler``, ``CompositeHandler``, ``KnowledgeMoundHandler``, your own), any object
        with an async ``handle(event)``, or a plain (async) function taking the event."""
        self._handlers.append(as_handler(handler))

    def remove_change_handler(self, handler: Any) -> None:
        self._handlers = [h for h in self._handlers if h is not handler and getattr(h, "inner", None) is not handler]

    @property
    def handlers(self) -> List[ChangeHandler]:
        return list(self._handlers)

    # ---- spec -----------------------------------------------------------------------------------------

    def _password(self) -> Optional[str]:
        c = self._credentials or {}
        if c.get("password") is not None:
            return c["password"]
        if c.get("password_env") is not None:
            name = c["password_env"]
            if name not in os.environ:
                raise ConfigError(f"environment variable {name} is not set", field="credentials.password_env")
            return os.environ[name]
        if c.get("password_file") is not None:
            try:
                with open(c["password_file"], encoding="utf-8") as f:
                    return f.read().rstrip("\r\n")
            except OSError as e:
                raise ConfigError(f"cannot read {c['password_file']}: {e.strerror or e}",
                                  field="credentials.password_file") from None
        return None

    def spec(self, command: str = "stream") -> Dict[str, Any]:
        """The line written to the engine's stdin for ``command`` (``stream``, ``sync``, ``health``),
        password included: it goes to the child through its stdin only, never argv or environment."""
        if command not in ("stream", "sync", "health"):
            raise ValueError(f"unknown command {command!r}")
        return {
            "command": command,
            "id": self.connector_id,
            "type": self.source_type,
            "config": dict(self.config),
            "username": (self._credentials or {}).get("username"),
            "password": self._password(),
            "checkpoint_file": self.checkpoint_path,
        }

    # ---- streaming ------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from a successful :meth:`start` until :meth:`stop` (or the engine failing)."""
        return self._child is not None and self._child.running and self._failure is None

    @property
    def failure(self) -> Optional[CDCError]:
        """Why the stream ended on its own, if it did (also logged on ``aragora.cdc``)."""
        return self._failure

    async def start(self, timeout: float = 120.0) -> None:
        """Starts streaming changes to the handlers; returns once the engine reports the connector
        started (after its start-up checks: source settings, grants, tables, checkpoint). Raises
        :class:`ConfigError` for bad input (nothing is started) and :class:`CDCError` when the
        source refuses or cannot be reached, or the engine is not ready within ``timeout``."""
        if self._child is not None:
            if self.running:
                return
            await self._reap()  # a stream that failed on its own: start afresh
        if not self._handlers:
            raise ConfigError("add a change handler (connector.add_change_handler(...)) before starting: "
                              "without one, changes would be acknowledged unseen", field="handlers")
        spec = self.spec("stream")
        child = Child(spec)
        self._child, self._failure, self._stopping, self._stopped_seen = child, None, False, False
        self._partial = None
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        await child.spawn()
        self._pump_task = asyncio.ensure_future(self._pump(child, self._ready))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except asyncio.TimeoutError:
            await child.kill()
            await self._reap()
            raise CDCError(f"connector {self.connector_id} did not start within {timeout} s",
                           kind="source", stderr=list(child.stderr_tail)) from None
        except BaseException:
            await child.kill()
            await self._reap()
            raise

    async def _pump(self, child: Child, ready: "asyncio.Future[None]") -> None:
        _PUMPING.set(self)
        failure: Optional[CDCError] = None
        try:
            while True:
                msg = await child.read()
                if msg is None:
                    break
                if msg.get("ready") is True:
                    if not ready.done():
                        ready.set_result(None)
                        log.info("[%s] connector started", self.connector_id)
                elif "batch" in msg:
                    await self._deliver(child, msg)
                elif "health" in msg:
                    while self._health_waiters:
                        waiter = self._health_waiters.pop(0)
                        if not waiter.done():
                            waiter.set_result(msg["health"])
                            break
                elif msg.get("stopped") is True:
                    self._stopped_seen = True
                elif "error" in msg:
                    pass  # kept by child.read(); the exit follows
                else:
                    log.debug("[%s] ignoring engine message %.200s", self.connector_id, msg)
        except CDCError as e:
            failure = e
            await child.kill()
        except asyncio.CancelledError:
            await child.kill()
            raise
        except Exception as e:  # a bug here must not leave the child streaming unseen
            failure = CDCError(f"event pump failed: {e!r}", kind="protocol")
            log.exception("[%s] event pump failed", self.connector_id)
            await child.kill()
        for waiter in self._health_waiters:
            if not waiter.done():
                waiter.set_exception(CDCError("the connector stopped before it reported health",
                                              kind="state"))
        self._health_waiters.clear()
        code = await child.wait(30)
        if failure is None and child.error is not None:
            failure = await child.failure("stopping")
        if failure is None and not self._stopped_seen and not (self._stopping and code == 0):
            failure = await child.failure("it was stopped" if ready.done() else "the connector started")
        if not ready.done():
            ready.set_exception(failure or CDCError("the CDC engine ended before the connector started",
                                                    kind="exit", exit_code=code))
        elif failure is not None:
            self._failure = failure
            if not self._stopping:
                log.error("[%s] connector stopped: %s", self.connector_id, failure)

    async def _deliver(self, child: Child, msg: Dict[str, Any]) -> None:
        n = msg["batch"]
        raw = msg.get("events")
        if not isinstance(raw, list):
            raise CDCError(f"batch {n} without an events list", kind="protocol")
        try:
            events = [ChangeEvent.from_json(e) for e in raw]
        except ValueError as e:
            raise CDCError(f"batch {n}: {e}", kind="protocol") from None
        key = tuple(e.id for e in events)
        done = self._partial[1] if self._partial is not None and self._partial[0] == key else set()
        handlers = [h for h in self._handlers if id(h) not in done]
        if not self._handlers:
            await child.send({"nack": n, "error": "no change handler"})
            self.batches_refused += 1
            return
        results = await asyncio.gather(*(h.handle_batch(events) for h in handlers), return_exceptions=True)
        failures = []
        for h, r in zip(handlers, results):
            if isinstance(r, BaseException):
                if not isinstance(r, Exception):
                    raise r
                failures.append(f"{h.name}: {r}")
                log.warning("[%s] handler %s failed on batch %s (%d events); it will be offered again: %r",
                            self.connector_id, h.name, n, len(events), r)
            else:
                done.add(id(h))
        if failures:
            self._partial = (key, done)
            self.batches_refused += 1
            await child.send({"nack": n, "error": "; ".join(failures)[:4000]})
        else:
            self._partial = None
            self.events_delivered += len(events)
            log.debug("[%s] batch %s: %d events acknowledged", self.connector_id, n, len(events))
            await child.send({"ack": n})

    async def stop(self, timeout: float = 60.0) -> None:
        """Stops streaming: asks the engine to stop, waits until it did and exited (killing it after
        ``timeout``). Raises the stream's :class:`CDCError` if it had failed on its own."""
        child, pump = self._child, self._pump_task
        if child is None:
            return
        if _PUMPING.get() is self:
            # Called from a handler: the pump cannot wait for itself. Ask, and let it wind down
            # (wait() waits for the end).
            self._stopping = True
            await child.send({"stop": True})
            return
        self._stopping = True
        await child.send({"stop": True})
        if pump is not None:
            try:
                await asyncio.wait_for(asyncio.shield(pump), timeout)
            except asyncio.TimeoutError:
                log.warning("[%s] the CDC engine did not stop within %s s; killing it", self.connector_id, timeout)
                await child.kill()
        failure = await self._reap()
        if failure is not None:
            raise failure

    async def _reap(self) -> Optional[CDCError]:
        child, pump, failure = self._child, self._pump_task, self._failure
        if child is not None:
            await child.close_stdin()
            await child.kill()
        if pump is not None and not pump.done():
            try:
                await asyncio.wait_for(pump, 30)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                pass
        failure = failure or self._failure
        ready = self._ready
        if ready is not None and ready.done() and not ready.cancelled():
            ready.exception()  # retrieved: start() already raised it, or it is `failure`
        self._child, self._pump_task, self._failure, self._ready = None, None, None, None
        return failure

    async def close(self) -> None:
        """Stops the connector if it runs and releases the engine process. Idempotent; a failure of
        the stream (already logged) is not raised again here."""
        try:
            await self.stop()
        except CDCError as e:
            log.debug("[%s] close after failure: %s", self.connector_id, e)

    async def wait(self) -> None:
        """Waits until the stream ends (after :meth:`stop`, or on its own); raises its failure."""
        pump = self._pump_task
        if pump is not None:
            await asyncio.shield(pump)
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> "CDCConnector":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- sync and health --------------------------------------------------------------------------------

    async def sync(self) -> AsyncIterator[SyncRow]:
        """The tables' current rows, read by a separate engine process (in primary-key order per
        table; incremental with ``timestamp_column`` where the type supports it): an async
        generator of :class:`SyncRow` (``evidence_id``, ``table``, ``primary_key``, ``content``,
        ``data``). Leaving the loop early stops the read."""
        child = Child(self.spec("sync"))
        await child.spawn()
        finished = False
        try:
            while True:
                msg = await child.read()
                if msg is None:
                    raise await child.failure("sync() finished")
                if "row" in msg:
                    try:
                        row = SyncRow.from_json(msg["row"])
                    except ValueError as e:
                        raise CDCError(str(e), kind="protocol") from None
                    yield row
                elif msg.get("done") is True:
                    finished = True
                    break
                elif "error" in msg:
                    raise await child.failure("sync() finished")
            await child.close_stdin()
            code = await child.wait(30)
            if code not in (0, None):
                log.warning("[%s] sync: the CDC engine exited with status %s after done", self.connector_id, code)
        finally:
            if not finished or child.running:
                # Read-only: nothing to save, and the child may be blocked writing rows nobody reads.
                await child.terminate()

    async def health_check(self, timeout: float = 60.0) -> Dict[str, Any]:
        """``{"healthy": bool, "latency_ms": float, "details": {...}}``. While streaming, the running
        connector answers (its phase, event counters, lag and position); otherwise a fresh probe of
        the source (and of the checkpoint file, when there is one). Raises :class:`ConfigError` for
        bad input; a source that does not answer is ``healthy: False``, not an exception."""
        child = self._child
        # From inside a handler the pump is busy with that handler: probe instead of waiting on it.
        if self.running and child is not None and _PUMPING.get() is not self:
            waiter: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
            self._health_waiters.append(waiter)
            if await child.send({"health": True}):
                try:
                    return await asyncio.wait_for(waiter, timeout)
                except asyncio.TimeoutError:
                    raise CDCError(f"health check of {self.connector_id} took longer than {timeout} s",
                                   kind="source") from None
            self._health_waiters.remove(waiter)
        child = Child(self.spec("health"))
        await child.spawn()
        try:
            async def first_health() -> Dict[str, Any]:
                while True:
                    msg = await child.read()
                    if msg is None or "error" in msg:
                        raise await child.failure("it reported health")
                    if "health" in msg:
                        return msg["health"]

            try:
                health = await asyncio.wait_for(first_health(), timeout)
            except asyncio.TimeoutError:
                raise CDCError(f"health check of {self.connector_id} took longer than {timeout} s",
                               kind="source", stderr=list(child.stderr_tail)) from None
            if not isinstance(health, dict):
                raise CDCError(f"health is not an object: {health!r}"[:300], kind="protocol")
            await child.close_stdin()
            await child.wait(10)
            return health
        finally:
            if child.running:
                await child.kill()


def _without_none(**fields: Any) -> Dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class MySQLConnector(CDCConnector):
    """MySQL / MariaDB: binlog CDC and ``sync()`` (docs/cdc/mysql.md).

    Keyword arguments map onto the ``config`` fields of docs/cdc/mysql.md: ``host``, ``port``,
    ``database``, ``tables``, ``use_binlog``, ``server_id`` (default: derived from the connector
    id); any further keyword (``snapshot``, ``use_gtid``, ``batch_size``, ``checkpoint_interval_ms``,
    ``heartbeat_seconds``, ``timestamp_column``, …) goes into ``config`` as given, and the engine
    refuses unknown ones naming them. The default ``connector_id`` is ``mysql-<database>``."""

    source_type = "mysql"

    def __init__(self, host: str = "localhost", port: int = 3306, database: Optional[str] = None,
                 tables: Optional[Iterable[str]] = None, use_binlog: bool = True, server_id: Optional[int] = None,
                 credentials: Optional[Mapping[str, Any]] = None, *, connector_id: Optional[str] = None,
                 checkpoint_path: Optional[PathLike] = None, **config: Any):
        cfg = _without_none(host=host, port=port, database=database, tables=_table_list(tables),
                            use_binlog=use_binlog, server_id=server_id)
        cfg.update(config)
        super().__init__(cfg, credentials, connector_id=connector_id, checkpoint_path=checkpoint_path)

    async def start_binlog_cdc(self, timeout: float = 120.0) -> None:
        """Starts streaming the binlog (after the initial snapshot on a first start, per
        ``snapshot``); returns once the connector runs."""
        await self.start(timeout)

    async def stop_binlog_cdc(self, timeout: float = 60.0) -> None:
        await self.stop(timeout)


class SQLServerConnector(CDCConnector):
    """SQL Server: CDC (capture instances) or Change Tracking polling (docs/cdc/sqlserver.md).

    Keyword arguments map onto its ``config``: ``host``, ``port``, ``database``, ``schema``
    (default ``dbo``), ``tables`` (default: every table with a capture instance / with Change
    Tracking), ``use_cdc``, ``use_change_tracking``, ``poll_interval_seconds``; further keywords
    (``snapshot``, ``batch_size``, ``max_transactions_per_poll``, ``encrypt``,
    ``trust_server_certificate``, ``checkpoint_interval_ms``) pass through. Default
    ``connector_id``: ``sqlserver-<database>``."""

    source_type = "sqlserver"

    def __init__(self, host: str = "localhost", port: int = 1433, database: Optional[str] = None,
                 schema: Optional[str] = None, tables: Optional[Iterable[str]] = None,
                 use_cdc: Optional[bool] = None, use_change_tracking: Optional[bool] = None,
                 poll_interval_seconds: Optional[float] = None, credentials: Optional[Mapping[str, Any]] = None, *,
                 connector_id: Optional[str] = None, checkpoint_path: Optional[PathLike] = None, **config: Any):
        cfg = _without_none(host=host, port=port, database=database, schema=schema, tables=_table_list(tables),
                            use_cdc=use_cdc, use_change_tracking=use_change_tracking,
                            poll_interval_seconds=poll_interval_seconds)
        cfg.update(config)
        super().__init__(cfg, credentials, connector_id=connector_id, checkpoint_path=checkpoint_path)

    @property
    def mode(self) -> str:
        """``"change_tracking"`` or ``"cdc"``, as the engine will choose from the configuration."""
        if self.config.get("use_change_tracking") is True and self.config.get("use_cdc") is not True:
            return "change_tracking"
        return "cdc"

    async def start_cdc_polling(self, timeout: float = 120.0) -> None:
        """Starts polling the CDC capture instances. Refused (``ConfigError`` naming
        ``config.use_change_tracking``) on a connector configured for Change Tracking."""
        if self.mode != "cdc":
            raise ConfigError("this connector is configured for Change Tracking: call "
                              "start_change_tracking_polling(), or configure use_cdc=True",
                              field="config.use_change_tracking")
        await self.start(timeout)

    async def start_change_tracking_polling(self, timeout: float = 120.0) -> None:
        """Starts polling Change Tracking. Needs ``use_change_tracking=True``."""
        if self.mode != "change_tracking":
            raise ConfigError("start_change_tracking_polling() needs use_change_tracking=True "
                              "(this connector is configured for CDC: call start_cdc_polling())",
                              field="config.use_change_tracking")
        await self.start(timeout)

    async def stop_cdc_polling(self, timeout: float = 60.0) -> None:
        await self.stop(timeout)

    async def stop_change_tracking_polling(self, timeout: float = 60.0) -> None:
        await self.stop(timeout)


class PostgreSQLConnector(CDCConnector):
    """PostgreSQL (docs/cdc/postgresql.md): ``mode`` ``trigger`` (the guide's LISTEN/NOTIFY) or
    ``logical``; keyword arguments are its ``config`` fields. Default ``connector_id``:
    ``postgresql-<database>``. Use :meth:`start` / :meth:`stop`."""

    source_type = "postgresql"

    def __init__(self, host: str = "localhost", port: int = 5432, database: Optional[str] = None,
                 tables: Optional[Iterable[str]] = None, credentials: Optional[Mapping[str, Any]] = None, *,
                 connector_id: Optional[str] = None, checkpoint_path: Optional[PathLike] = None, **config: Any):
        cfg = _without_none(host=host, port=port, database=database, tables=_table_list(tables))
        cfg.update(config)
        super().__init__(cfg, credentials, connector_id=connector_id, checkpoint_path=checkpoint_path)


class MongoDBConnector(CDCConnector):
    """MongoDB change streams (docs/cdc/mongodb.md): ``uri``, ``database``, ``collections`` and the
    other ``config`` fields as keywords. Default ``connector_id``: ``mongodb-<database>``."""

    source_type = "mongodb"

    def __init__(self, uri: Optional[str] = None, database: Optional[str] = None,
                 collections: Optional[Iterable[str]] = None, credentials: Optional[Mapping[str, Any]] = None, *,
                 connector_id: Optional[str] = None, checkpoint_path: Optional[PathLike] = None, **config: Any):
        cfg = _without_none(uri=uri, database=database, collections=_table_list(collections))
        cfg.update(config)
        super().__init__(cfg, credentials, connector_id=connector_id, checkpoint_path=checkpoint_path)


class SnowflakeConnector(CDCConnector):
    """Snowflake (docs/cdc/snowflake.md): ``account``, ``database``, ``tables`` and the other
    ``config`` fields as keywords; the private key PEM is the credentials' password (e.g.
    ``credentials={"username": "cdc_user", "password_file": "key.p8"}``). Default
    ``connector_id``: ``snowflake-<database>``."""

    source_type = "snowflake"

    def __init__(self, account: Optional[str] = None, database: Optional[str] = None,
                 tables: Optional[Iterable[str]] = None, credentials: Optional[Mapping[str, Any]] = None, *,
                 connector_id: Optional[str] = None, checkpoint_path: Optional[PathLike] = None, **config: Any):
        cfg = _without_none(account=account, database=database, tables=_table_list(tables))
        cfg.update(config)
        super().__init__(cfg, credentials, connector_id=connector_id, checkpoint_path=checkpoint_path)
