"""The guide's in-process CDC connectors (aragora.connectors.enterprise.database).

Two kinds of tests:
- against the real engine (`aragora cdc run`) and a real MariaDB (ARAGORA_TEST_MYSQL_URL, started by
  scripts/test-services): the guide's MySQL example, bad input, redelivery, resume from a checkpoint;
- against tests/fake_cdc_engine.py, a stand-in speaking the same line protocol, for the Python side
  alone (spec building, event parsing, handlers, the pump's acks/nacks, errors, stderr handling).
"""

import asyncio
import json
import os
import pathlib
import random
import socket
import stat
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pytest

from aragora.connectors.enterprise.database import (CDCConnector, MongoDBConnector, MySQLConnector,
                                                    PostgreSQLConnector, SnowflakeConnector, SQLServerConnector)
from aragora.connectors.enterprise.database.cdc import (CallbackHandler, CDCError, CDCSourceType, ChangeEvent,
                                                        ChangeHandler, ChangeOperation, CompositeHandler,
                                                        CompositeHandlerError, ConfigError, KnowledgeMoundHandler,
                                                        SyncRow, knowledge_source_key, render_row)

HERE = pathlib.Path(__file__).resolve().parent


def run(coro, timeout=180):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate, timeout=60.0, what="condition"):
    """Polls `predicate` until it holds (no fixed sleeps standing in for synchronisation)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def event_json(i, op="INSERT", table="users", data=None, old=None, ts="2026-11-27T10:00:00.123456789Z"):
    return {"id": f"chg-{i:032x}", "source_type": "mysql", "connector_id": "mysql-myapp", "operation": op,
            "timestamp": ts, "database": "myapp", "table": table,
            "data": data if data is not None else {"id": i, "name": f"user {i}"},
            "old_data": old or {}, "primary_key": {"id": i}, "resume_token": f"0-1-{i}:1", "sequence_number": i}


class MemoryMound:
    """The knowledge store protocol KnowledgeMoundHandler writes to."""

    def __init__(self):
        self.items = {}
        self.calls = []

    async def upsert(self, source_key, content, metadata):
        self.calls.append(("upsert", source_key))
        self.items[source_key] = (content, metadata)

    async def delete(self, source_key):
        self.calls.append(("delete", source_key))
        self.items.pop(source_key, None)


# ---- spec building (no process) ------------------------------------------------------------------

def test_mysql_spec_maps_the_guide_arguments_onto_the_documented_config():
    connector = MySQLConnector(
        host="localhost",
        port=3306,
        database="myapp",
        tables=["users", "orders", "products"],
        use_binlog=True,  # Enable binlog CDC
        server_id=100,    # Unique server ID for replication
        credentials={"username": "cdc_user", "password": "secret"},
    )
    assert connector.spec() == {
        "command": "stream", "id": "mysql-myapp", "type": "mysql",
        "config": {"host": "localhost", "port": 3306, "database": "myapp",
                   "tables": ["users", "orders", "products"], "use_binlog": True, "server_id": 100},
        "username": "cdc_user", "password": "secret", "checkpoint_file": None}
    assert connector.spec("sync")["command"] == "sync" and connector.spec("health")["command"] == "health"
    assert "secret" not in repr(connector)
    # Every documented option is reachable: extra keywords go into config as given.
    c2 = MySQLConnector(database="shop", tables=("a",), snapshot="never", use_gtid=False, batch_size=10,
                        connector_id="mine", checkpoint_path="rel/cp.json")
    spec = c2.spec()
    assert spec["config"] == {"host": "localhost", "port": 3306, "database": "shop", "tables": ["a"],
                              "use_binlog": True, "snapshot": "never", "use_gtid": False, "batch_size": 10}
    assert spec["id"] == "mine" and spec["username"] is None and spec["password"] is None
    assert spec["checkpoint_file"] == os.path.abspath("rel/cp.json")


def test_sqlserver_specs_for_the_guides_cdc_and_change_tracking_connectors():
    # Using CDC (full change history)
    cdc_connector = SQLServerConnector(
        host="localhost",
        port=1433,
        database="myapp",
        schema="dbo",
        tables=["users", "orders"],
        use_cdc=True,
        poll_interval_seconds=5,
        credentials={"username": "sa", "password": "secret"},
    )

    # Using Change Tracking (lightweight, current changes only)
    ct_connector = SQLServerConnector(
        host="localhost",
        port=1433,
        database="myapp",
        use_change_tracking=True,
        credentials={"username": "sa", "password": "secret"},
    )
    assert cdc_connector.spec() == {
        "command": "stream", "id": "sqlserver-myapp", "type": "sqlserver",
        "config": {"host": "localhost", "port": 1433, "database": "myapp", "schema": "dbo",
                   "tables": ["users", "orders"], "use_cdc": True, "poll_interval_seconds": 5},
        "username": "sa", "password": "secret", "checkpoint_file": None}
    # Unset options stay unset: the engine applies docs/cdc/sqlserver.md's defaults (tables: every
    # table with Change Tracking).
    assert ct_connector.spec()["config"] == {"host": "localhost", "port": 1433, "database": "myapp",
                                             "use_change_tracking": True}
    assert cdc_connector.mode == "cdc" and ct_connector.mode == "change_tracking"
    assert SQLServerConnector(database="x", encrypt=False).spec()["config"]["encrypt"] is False
    for name in ("start_cdc_polling", "start_change_tracking_polling", "stop_cdc_polling",
                 "stop_change_tracking_polling", "sync", "health_check", "close", "add_change_handler"):
        assert callable(getattr(cdc_connector, name)), name

    # The start method must fit the configured mode (refused before any process starts).
    ct_connector.add_change_handler(CallbackHandler(lambda e: None))
    cdc_connector.add_change_handler(CallbackHandler(lambda e: None))
    with pytest.raises(ConfigError) as e:
        run(ct_connector.start_cdc_polling())
    assert e.value.field == "config.use_change_tracking" and str(e.value).startswith("config.use_change_tracking")
    with pytest.raises(ConfigError, match="use_change_tracking=True"):
        run(cdc_connector.start_change_tracking_polling())
    assert not ct_connector.running and not cdc_connector.running


def test_other_types_build_their_documented_configs():
    pg = PostgreSQLConnector(host="db", database="shop", tables=["orders"], mode="logical")
    assert pg.spec()["type"] == "postgresql" and pg.connector_id == "postgresql-shop"
    assert pg.spec()["config"] == {"host": "db", "port": 5432, "database": "shop", "tables": ["orders"],
                                   "mode": "logical"}
    mongo = MongoDBConnector(uri="mongodb://h:27017/?replicaSet=rs0", database="app", collections=["users"])
    assert mongo.spec()["config"] == {"uri": "mongodb://h:27017/?replicaSet=rs0", "database": "app",
                                      "collections": ["users"]}
    assert mongo.connector_id == "mongodb-app"
    generic = CDCConnector({"database": "d", "tables": ["t"]}, source_type="mysql")
    assert generic.spec()["type"] == "mysql" and generic.connector_id == "mysql-d"


def test_credentials_are_checked_and_passwords_can_come_from_env_or_file(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        MySQLConnector(database="d", tables=["t"], credentials={"user": "x"})
    assert e.value.field == "credentials.user" and "credentials.user" in str(e.value)
    with pytest.raises(ConfigError) as e:
        MySQLConnector(database="d", tables=["t"], credentials={"username": "u", "password": 5})
    assert e.value.field == "credentials.password"
    with pytest.raises(ConfigError) as e:
        MySQLConnector(database="d", tables=["t"], credentials={"username": "u", "password": "a", "password_env": "B"})
    assert e.value.field == "credentials.password_env"
    with pytest.raises(ConfigError) as e:
        MySQLConnector(host="h", tables=["t"])
    assert e.value.field == "config.database"

    monkeypatch.setenv("MY_CDC_PW", "from-env")
    assert MySQLConnector(database="d", credentials={"username": "u", "password_env": "MY_CDC_PW"}).spec()[
        "password"] == "from-env"
    key = tmp_path / "pw"
    key.write_text("from-file\n")
    sf = SnowflakeConnector(account="org-acct", database="app", tables=["users"], warehouse="wh",
                            credentials={"username": "cdc", "password_file": str(key)})
    assert sf.spec()["password"] == "from-file" and sf.spec()["config"]["warehouse"] == "wh"
    missing = MySQLConnector(database="d", credentials={"username": "u", "password_env": "NOPE_NOT_SET_X"})
    monkeypatch.delenv("NOPE_NOT_SET_X", raising=False)
    with pytest.raises(ConfigError) as e:
        missing.spec()
    assert e.value.field == "credentials.password_env"


# ---- event model and handlers ---------------------------------------------------------------------

def test_change_events_parse_to_the_guides_dataclass():
    raw = event_json(7, op="UPDATE", data={"id": 7, "name": "new"}, old={"id": 7, "name": "old"},
                     ts="2026-11-27T10:00:00.123456789Z")
    e = ChangeEvent.from_json(raw)
    assert e.operation is ChangeOperation.UPDATE and e.source_type is CDCSourceType.MYSQL
    assert e.timestamp == datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert e.data == {"id": 7, "name": "new"} and e.old_data == {"id": 7, "name": "old"}
    assert e.primary_key == {"id": 7} and e.sequence_number == 7 and e.resume_token == "0-1-7:1"
    assert f"Change: {e.operation} on {e.table}" == "Change: UPDATE on users"
    assert ChangeEvent.from_json(e.to_dict()) == e
    assert ChangeEvent.from_json(event_json(1, ts="2026-11-27T12:00:00+02:00")).timestamp == \
        datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
    assert ChangeEvent.from_json(event_json(1, ts="2026-11-27T10:00:00Z")).timestamp.tzinfo is not None
    assert [s.value for s in CDCSourceType] == ["postgresql", "mongodb", "mysql", "sqlserver", "snowflake"]
    with pytest.raises(ValueError):
        ChangeEvent.from_json({"id": "x"})


def test_callback_and_composite_handlers():
    seen_sync, seen_async = [], []

    async def main():
        async def on_change(event):
            seen_async.append(event.id)

        events = [ChangeEvent.from_json(event_json(i)) for i in range(3)]
        await CallbackHandler(on_change).handle_batch(events)
        await CallbackHandler(lambda e: seen_sync.append(e.id)).handle_batch(events)
        assert seen_async == seen_sync == [e.id for e in events]

        # Concurrent: each handler waits for the other to have started (would deadlock if sequential).
        a_started, b_started = asyncio.Event(), asyncio.Event()

        async def a(event):
            a_started.set()
            await asyncio.wait_for(b_started.wait(), 5)

        async def b(event):
            b_started.set()
            await asyncio.wait_for(a_started.wait(), 5)

        ran = []
        composite = CompositeHandler()
        composite.add_handler(CallbackHandler(a))
        composite.add_handler(CallbackHandler(b))
        composite.add_handler(CallbackHandler(lambda e: ran.append(e.id)))
        await composite.handle(events[0])
        assert ran == [events[0].id]

        # Fails if any handler fails; every handler still ran.
        def boom(event):
            raise RuntimeError("boom")

        ran.clear()
        failing = CompositeHandler([CallbackHandler(boom), CallbackHandler(lambda e: ran.append(e.id))])
        with pytest.raises(RuntimeError, match="boom"):
            await failing.handle_batch(events)
        assert ran == [e.id for e in events]
        twice = CompositeHandler([CallbackHandler(boom), CallbackHandler(boom)])
        with pytest.raises(CompositeHandlerError) as err:
            await twice.handle(events[0])
        assert len(err.value.errors) == 2

    run(main())


def test_knowledge_mound_handler_upserts_by_key_and_deletes():
    mound = MemoryMound()
    handler = KnowledgeMoundHandler(mound)
    with pytest.raises(TypeError, match="upsert"):
        KnowledgeMoundHandler(object())

    class Client:  # what AragoraClient looks like to the handler: a `.knowledge` namespace
        knowledge = mound
    assert KnowledgeMoundHandler(Client()).mound is mound

    ins = [ChangeEvent.from_json(event_json(i, data={"id": i, "name": f"n{i}"})) for i in (1, 2, 3)]
    upd = ChangeEvent.from_json(event_json(2, op="UPDATE", data={"id": 2, "name": "changed"},
                                           old={"id": 2, "name": "n2"}))
    dele = ChangeEvent.from_json(event_json(3, op="DELETE", data={}, old={"id": 3, "name": "n3"}))
    moved = ChangeEvent.from_json({**event_json(1, op="UPDATE", data={"id": 10, "name": "n1"},
                                                old={"id": 1, "name": "n1"}), "primary_key": {"id": 10}})

    async def main():
        await handler.handle_batch(ins)
        await handler.handle_batch(ins)  # redelivery: same items, no duplicates
        assert sorted(mound.items) == [knowledge_source_key("mysql-myapp", "users", {"id": i}) for i in (1, 2, 3)]
        await handler.handle_batch([upd, dele, moved])

    run(main())
    key = lambda i: knowledge_source_key("mysql-myapp", "users", {"id": i})  # noqa: E731
    assert key(1) == 'mysql-myapp/users/{"id":1}'
    assert sorted(mound.items) == sorted([key(2), key(10)])
    content, meta = mound.items[key(2)]
    assert content == render_row("users", {"id": 2}, {"id": 2, "name": "changed"}) == "table: users\nid: 2\nname: changed\n"
    assert meta["operation"] == "UPDATE" and meta["event_id"] == upd.id and meta["data"] == upd.data
    # Coalesced: one write per key per batch (the last change wins).
    assert mound.calls[-3:].count(("delete", key(1))) == 1


# ---- the pump against a fake engine -----------------------------------------------------------------

@pytest.fixture()
def fake_engine(tmp_path, monkeypatch):
    """ARAGORA_BIN pointing at tests/fake_cdc_engine.py; returns a function setting the scenario and
    one reading back what the engine received."""
    exe = tmp_path / "aragora"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_cdc_engine.py"}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    rec = tmp_path / "record.jsonl"
    scenario_file = tmp_path / "scenario.json"
    monkeypatch.setenv("ARAGORA_BIN", str(exe))
    monkeypatch.setenv("FAKE_CDC_RECORD", str(rec))
    monkeypatch.setenv("FAKE_CDC_SCENARIO", str(scenario_file))

    class Fake:
        def scenario(self, **s):
            scenario_file.write_text(json.dumps(s))

        def records(self):
            return [json.loads(l) for l in rec.read_text().splitlines()] if rec.exists() else []

        def replies(self):
            return [r["received"] for r in self.records() if "received" in r and "command" not in r["received"]]

    return Fake()


def guide_connector(**kw):
    return MySQLConnector(host="localhost", port=3306, database="myapp", tables=["users", "orders"],
                          use_binlog=True, server_id=100, credentials={"username": "cdc_user", "password": "secret"},
                          **kw)


def test_pump_delivers_batches_in_order_and_acks(fake_engine):
    batches = [[event_json(1), event_json(2)], [event_json(3, op="DELETE", data={}, old={"id": 3})]]
    fake_engine.scenario(batches=batches, stderr_bytes=1_000_000)  # a full stderr pipe must not block it
    got = []

    async def main():
        connector = guide_connector()
        connector.add_change_handler(CallbackHandler(lambda e: got.append(e)))
        await connector.start_binlog_cdc()
        assert connector.running
        await until(lambda: len(got) == 3, what="3 events")
        await connector.stop_binlog_cdc()
        assert not connector.running
        await connector.close()
        await connector.close()  # idempotent

    run(main())
    assert [e.id for e in got] == [e["id"] for b in batches for e in b]
    assert [e.operation for e in got] == [ChangeOperation.INSERT, ChangeOperation.INSERT, ChangeOperation.DELETE]
    assert all(isinstance(e, ChangeEvent) and e.timestamp.tzinfo is not None for e in got)
    records = fake_engine.records()
    assert records[0] == {"argv": ["cdc", "run"]}
    assert records[1]["received"]["password"] == "secret" and records[1]["received"]["command"] == "stream"
    assert {"password_in_argv_or_env": False} in records
    assert fake_engine.replies() == [{"ack": 1}, {"ack": 2}, {"stop": True}]


def test_a_failing_handler_nacks_and_gets_the_same_events_again(fake_engine):
    batch = [event_json(i) for i in range(1, 4)]
    big = event_json(4, data={"id": 4, "blob": "x" * 300_000})  # one line far over asyncio's 64 KiB default
    fake_engine.scenario(batches=[batch, [big]])
    attempts, steady = [], []

    def flaky(event):
        attempts.append(event.id)
        if len(attempts) == 2:
            raise RuntimeError("database is locked")

    async def main():
        connector = guide_connector()
        connector.add_change_handler(CallbackHandler(flaky))
        connector.add_change_handler(CallbackHandler(lambda e: steady.append(e.id)))
        await connector.start_binlog_cdc()
        await until(lambda: len(steady) == 4, what="all events")
        await connector.stop_binlog_cdc()
        assert connector.batches_refused == 1 and connector.events_delivered == 4

    run(main())
    ids = [e["id"] for e in batch]
    # First delivery: event 1, then event 2 raised; the batch came again whole, with the same ids.
    assert attempts == ids[:2] + ids + [big["id"]]
    # The handler that had acknowledged the refused batch is not asked again (as in the engine).
    assert steady == ids + [big["id"]]
    replies = fake_engine.replies()
    assert replies[0]["nack"] == 1 and "database is locked" in replies[0]["error"]
    assert replies[1:] == [{"ack": 2}, {"ack": 3}, {"stop": True}]


def test_a_handler_may_stop_its_own_connector(fake_engine):
    fake_engine.scenario(batches=[[event_json(1)], [event_json(2)]])
    seen = []

    async def main():
        connector = guide_connector()

        async def stop_on_first(event):
            seen.append(event.id)
            await connector.stop_binlog_cdc()  # must not wait for the pump that is running it

        connector.add_change_handler(stop_on_first)
        await connector.start_binlog_cdc()
        await asyncio.wait_for(connector.wait(), 30)
        assert not connector.running
        await connector.close()

    run(main())
    assert seen == [event_json(1)["id"]]
    assert fake_engine.replies()[0] == {"stop": True}


def test_engine_errors_become_exceptions(fake_engine):
    async def main():
        c = guide_connector(bogus=1)
        c.add_change_handler(lambda e: None)

        fake_engine.scenario(start_error={"kind": "config", "field": "config.bogus",
                                          "message": "unknown field `bogus`"})
        with pytest.raises(ConfigError) as e:
            await c.start_binlog_cdc()
        assert e.value.field == "config.bogus" and str(e.value) == "config.bogus: unknown field `bogus`"
        assert e.value.exit_code == 2 and not c.running

        fake_engine.scenario(start_error={"kind": "source", "field": None, "message": "connection refused"})
        with pytest.raises(CDCError) as e:
            await c.start_binlog_cdc()
        assert not isinstance(e.value, ConfigError) and e.value.kind == "source"

        fake_engine.scenario(crash_before_ready=True)
        with pytest.raises(CDCError) as e:
            await c.start_binlog_cdc()
        assert e.value.kind == "exit" and e.value.exit_code == 101
        assert "panicked" in str(e.value) and "something broke" in e.value.stderr[-1]

        # No handler: refused before anything starts.
        bare = guide_connector()
        with pytest.raises(ConfigError) as e:
            await bare.start_binlog_cdc()
        assert e.value.field == "handlers"

        # A stream that fails later: logged, kept in .failure, raised by stop().
        fake_engine.scenario(batches=[[event_json(1)]], after_batches="fail")
        got = []
        c2 = guide_connector()
        c2.add_change_handler(lambda e: got.append(e))
        await c2.start_binlog_cdc()
        await until(lambda: c2.failure is not None, what="the failure")
        assert not c2.running and c2.failure.message == "source went away" and len(got) == 1
        with pytest.raises(CDCError, match="source went away"):
            await c2.stop_binlog_cdc()
        await c2.close()

    run(main())


def test_sync_and_health_over_the_protocol(fake_engine):
    rows = [{"evidence_id": f"mysql:myapp.users:{{\"id\":{i}}}", "table": "users", "primary_key": {"id": i},
             "content": f"table: users\nid: {i}\n", "data": {"id": i}} for i in range(1, 6)]

    async def main():
        c = guide_connector()
        fake_engine.scenario(rows=rows)
        got = [row async for row in c.sync()]
        assert got == [SyncRow(**r) for r in rows] and got[0].evidence_id == 'mysql:myapp.users:{"id":1}'

        fake_engine.scenario(rows=rows, sync_error=2)
        partial = []
        with pytest.raises(CDCError, match="lost the source"):
            async for row in c.sync():
                partial.append(row)
        assert len(partial) == 2

        fake_engine.scenario(rows=rows * 40, slow_rows=True)
        gen = c.sync()
        first = await gen.__anext__()
        await gen.aclose()  # leaving early stops the read
        assert first.table == "users"

        fake_engine.scenario(health={"healthy": True, "latency_ms": 5.2, "details": {"phase": "stopped"}})
        health = await c.health_check()
        assert health == {"healthy": True, "latency_ms": 5.2, "details": {"phase": "stopped"}}

    run(main())
    commands = [r["received"]["command"] for r in fake_engine.records() if "command" in r.get("received", {})]
    assert commands == ["sync", "sync", "sync", "health"]


# ---- against the real engine and MariaDB -------------------------------------------------------------

MYSQL_URL = os.environ.get("ARAGORA_TEST_MYSQL_URL")
needs_mysql = pytest.mark.skipif(not MYSQL_URL, reason="ARAGORA_TEST_MYSQL_URL is not set "
                                 "(eval \"$(scripts/test-services start)\" starts a MariaDB)")


class MariaDB:
    def __init__(self, url):
        u = urlparse(url)
        self.host, self.port, self.user = u.hostname, u.port or 3306, u.username or "root"
        self.password = u.password

    def sql(self, statement, database=None):
        args = ["mariadb", "--no-defaults", "--protocol=tcp", "-h", self.host, "-P", str(self.port),
                "-u", self.user, "-N", "-B"]
        env = dict(os.environ)
        if self.password:
            env["MYSQL_PWD"] = self.password
        if database:
            args += ["-D", database]
        done = subprocess.run(args + ["-e", statement], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture()
def mariadb(monkeypatch):
    from conftest import _binary

    monkeypatch.setenv("ARAGORA_BIN", _binary())
    db = MariaDB(MYSQL_URL)
    name = f"pycdc_{os.getpid()}_{random.randrange(1 << 30)}"
    db.sql(f"CREATE DATABASE {name}")
    db.sql("CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(200));"
           "CREATE TABLE orders (id INT PRIMARY KEY, user_id INT, total DECIMAL(10,2));", database=name)
    db.name = name
    yield db
    db.sql(f"DROP DATABASE IF EXISTS {name}")


def server_id():
    # Unique among the replicas other suites may have registered on the shared MariaDB.
    return random.randrange(100_000, 2_000_000_000)


@needs_mysql
def test_guide_mysql_example_against_mariadb(mariadb, capsys):
    mariadb.sql("INSERT INTO users VALUES (1, 'Ada', 'ada@example.com'); INSERT INTO orders VALUES (9, 1, 5.00)",
                database=mariadb.name)
    received = []

    async def main():
        connector = MySQLConnector(
            host=mariadb.host,
            port=mariadb.port,
            database=mariadb.name,
            tables=["users", "orders"],
            use_binlog=True,  # Enable binlog CDC
            server_id=server_id(),    # Unique server ID for replication
            credentials={"username": mariadb.user, "password": mariadb.password},
        )

        # Add change event handler
        async def on_change(event):
            print(f"Change: {event.operation} on {event.table}")
            print(f"Data: {event.data}")
            received.append(event)

        connector.add_change_handler(CallbackHandler(on_change))

        # Start CDC
        await connector.start_binlog_cdc()
        assert connector.running

        # The initial snapshot brings the existing rows (both tables read: the copy is over, so the
        # changes below arrive once, from the binlog); then the source's changes stream.
        await until(lambda: len(received) == 2, what="the snapshot rows")
        mariadb.sql("INSERT INTO users VALUES (2, 'Grace', 'grace@example.com');"
                    "INSERT INTO orders VALUES (10, 2, 99.50);"
                    "UPDATE users SET email = 'grace@navy.mil' WHERE id = 2;"
                    "DELETE FROM users WHERE id = 1;", database=mariadb.name)
        await until(lambda: len(received) == 6, what="4 streamed changes")

        # Perform incremental sync
        synced = []
        async for row in connector.sync():
            print(f"Synced: {row.evidence_id}")
            synced.append(row)

        health = await connector.health_check()

        # Stop CDC
        await connector.stop_binlog_cdc()
        await connector.close()
        await connector.close()
        assert not connector.running
        return synced, health

    synced, health = run(main())
    snap = sorted(received[:2], key=lambda e: e.table, reverse=True)
    assert [(e.table, e.primary_key, e.resume_token) for e in snap] == [
        ("users", {"id": 1}, "snapshot"), ("orders", {"id": 9}, "snapshot")]
    snap, ins, order, upd, dele = snap[0], *received[2:]
    assert all(isinstance(e, ChangeEvent) for e in received)
    assert all(e.source_type is CDCSourceType.MYSQL and e.database == mariadb.name for e in received)
    assert all(isinstance(e.timestamp, datetime) and e.timestamp.tzinfo is not None for e in received)
    assert (snap.operation, snap.table, snap.data, snap.primary_key) == (
        ChangeOperation.INSERT, "users", {"id": 1, "name": "Ada", "email": "ada@example.com"}, {"id": 1})
    assert (ins.operation, ins.table, ins.data, ins.old_data) == (
        ChangeOperation.INSERT, "users", {"id": 2, "name": "Grace", "email": "grace@example.com"}, {})
    assert (order.operation, order.table, order.data, order.primary_key) == (
        ChangeOperation.INSERT, "orders", {"id": 10, "user_id": 2, "total": "99.50"}, {"id": 10})
    assert upd.operation is ChangeOperation.UPDATE and upd.primary_key == {"id": 2}
    assert upd.old_data["email"] == "grace@example.com" and upd.data["email"] == "grace@navy.mil"
    assert dele.operation is ChangeOperation.DELETE and dele.primary_key == {"id": 1}
    assert dele.old_data == {"id": 1, "name": "Ada", "email": "ada@example.com"} and dele.data == {}
    assert len({e.id for e in received}) == 6
    assert [e.sequence_number for e in received[2:]] == sorted(e.sequence_number for e in received[2:])
    assert all(e.resume_token for e in received)
    assert abs(ins.timestamp - datetime.now(timezone.utc)) < timedelta(minutes=10)
    out = capsys.readouterr().out
    assert "Change: UPDATE on users" in out and "Change: DELETE on users" in out

    by_table = {(r.table, json.dumps(r.primary_key, sort_keys=True)): r for r in synced}
    assert sorted(by_table) == [("orders", '{"id": 10}'), ("orders", '{"id": 9}'), ("users", '{"id": 2}')]
    grace = by_table[("users", '{"id": 2}')]
    assert grace.evidence_id == f'mysql:{mariadb.name}.users:{{"id":2}}'
    assert "grace@navy.mil" in grace.content and grace.data["name"] == "Grace"
    assert "Synced: mysql:" in out

    assert health["healthy"] is True and isinstance(health["latency_ms"], (int, float))
    assert health["latency_ms"] >= 0 and isinstance(health["details"], dict)
    # Asked while streaming, the running connector answers with its own state and counters.
    assert health["details"]["phase"] == "streaming", health
    assert health["details"]["running"] is True and health["details"]["events_total"] >= 6, health


@needs_mysql
def test_bad_input_is_a_config_error_and_an_unreachable_source_a_cdc_error(mariadb):
    async def main():
        def connector(**kw):
            args = dict(host=mariadb.host, port=mariadb.port, database=mariadb.name, tables=["users"],
                        server_id=server_id(), credentials={"username": mariadb.user})
            args.update(kw)
            c = MySQLConnector(**args)
            c.add_change_handler(CallbackHandler(lambda e: None))
            return c

        c = connector(no_such_option=1)
        with pytest.raises(ConfigError) as e:
            await c.start_binlog_cdc()
        assert e.value.field == "config.no_such_option" and "config.no_such_option" in str(e.value)
        assert not c.running

        c = connector(tables=[])
        with pytest.raises(ConfigError) as e:
            await c.start_binlog_cdc()
        assert e.value.field == "config.tables" and str(e.value).startswith("config.tables")

        c = connector(tables=["users", "no_such_table"])
        with pytest.raises(ConfigError) as e:
            await c.start_binlog_cdc()
        assert e.value.field == "config.tables[1]"

        with pytest.raises(ConfigError) as e:
            await connector(no_such_option=1).health_check()
        assert e.value.field == "config.no_such_option"

        # A port nothing listens on: the engine's error, not our start timeout.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
        s.close()
        c = connector(port=closed_port)
        with pytest.raises(CDCError) as e:
            await c.start_binlog_cdc(timeout=120)
        assert e.value.kind == "source" and not isinstance(e.value, ConfigError)
        assert "did not start within" not in str(e.value)
        assert not c.running
        await c.close()

    run(main())


@needs_mysql
def test_redelivery_after_a_handler_failure_and_composite_fan_out(mariadb):
    first_batch, attempts, logged = [], [], []
    mound = MemoryMound()

    def flaky(event):
        attempts.append(event.id)
        if not first_batch:
            first_batch.append(event.id)
            raise RuntimeError("not now")

    async def main():
        # snapshot="never" (a config option passed through): only the changes below, none copied
        # by a snapshot racing them.
        connector = MySQLConnector(host=mariadb.host, port=mariadb.port, database=mariadb.name, tables=["users"],
                                   server_id=server_id(), credentials={"username": mariadb.user}, snapshot="never")
        composite = CompositeHandler()
        composite.add_handler(KnowledgeMoundHandler(mound))
        composite.add_handler(CallbackHandler(flaky))
        composite.add_handler(CallbackHandler(lambda e: logged.append(e.id)))
        connector.add_change_handler(composite)
        await connector.start_binlog_cdc()
        mariadb.sql("INSERT INTO users VALUES (1, 'a', 'a@x'), (2, 'b', 'b@x'), (3, 'c', 'c@x');"
                    "UPDATE users SET name = 'B' WHERE id = 2; DELETE FROM users WHERE id = 3;",
                    database=mariadb.name)
        await until(lambda: len(set(attempts)) == 5 and connector.batches_refused >= 1
                    and connector.events_delivered >= 5, what="5 distinct events delivered")
        await connector.stop_binlog_cdc()
        await connector.close()

    run(main())
    # The refused first delivery came again, with the same ids, and nothing was lost or reordered.
    assert attempts.count(first_batch[0]) >= 2
    distinct = list(dict.fromkeys(attempts))
    assert len(distinct) == 5 and distinct == list(dict.fromkeys(logged))
    # Every handler of the composite saw every event; the mound reproduces the table.
    key = lambda i: knowledge_source_key(f"mysql-{mariadb.name}", "users", {"id": i})  # noqa: E731
    assert sorted(mound.items) == sorted([key(1), key(2)])
    assert "name: B" in mound.items[key(2)][0]


@needs_mysql
def test_knowledge_mound_handler_indexes_into_the_servers_mound(mariadb, client):
    """The guide's `composite.add_handler(KnowledgeMoundHandler(mound))` with the SDK client as
    the mound: rows land in the server's Knowledge Mound and leave it when deleted at the source."""
    word = f"okapi{uuid.uuid4().hex[:8]}"
    key = lambda i: knowledge_source_key(f"mysql-{mariadb.name}", "users", {"id": i})  # noqa: E731

    def indexed():
        return sorted(h.source_key for h in client.knowledge.search(word, source_type="cdc-client").items)

    async def main():
        connector = MySQLConnector(host=mariadb.host, port=mariadb.port, database=mariadb.name, tables=["users"],
                                   server_id=server_id(), credentials={"username": mariadb.user}, snapshot="never")
        composite = CompositeHandler()
        composite.add_handler(KnowledgeMoundHandler(client))
        connector.add_change_handler(composite)
        await connector.start_binlog_cdc()
        mariadb.sql(f"INSERT INTO users VALUES (1, '{word} one', 'a@x'), (2, '{word} two', 'b@x'),"
                    f" (3, '{word} three', 'c@x')", database=mariadb.name)
        await until(lambda: indexed() == sorted([key(1), key(2), key(3)]), what="three rows indexed")
        mariadb.sql("DELETE FROM users WHERE id = 2; UPDATE users SET email = 'new@x' WHERE id = 3",
                    database=mariadb.name)
        await until(lambda: indexed() == sorted([key(1), key(3)]), what="the deleted row unindexed")
        await until(lambda: any("new@x" in h.content for h in client.knowledge.search(word).items),
                    what="the update indexed")
        await connector.stop_binlog_cdc()
        await connector.close()

    run(main())
    hits = {h.source_key: h for h in client.knowledge.search(word).items}
    assert hits[key(1)].content == f"table: users\nid: 1\nemail: a@x\nname: {word} one\n"
    assert hits[key(3)].metadata.operation == "UPDATE" and hits[key(3)].metadata.table == "users"
    assert client.knowledge.delete(key(2)) is False  # already removed by the connector


@needs_mysql
def test_resume_from_checkpoint_path(mariadb, tmp_path):
    checkpoint = tmp_path / "users-checkpoint.json"
    connector_id = f"py-resume-{random.randrange(1 << 30)}"
    sid = server_id()
    first, second = [], []

    def make(into):
        c = MySQLConnector(host=mariadb.host, port=mariadb.port, database=mariadb.name, tables=["users"],
                           server_id=sid, credentials={"username": mariadb.user}, connector_id=connector_id,
                           checkpoint_path=checkpoint, snapshot="never")
        c.add_change_handler(CallbackHandler(lambda e: into.append(e)))
        return c

    def ins(*ids):
        mariadb.sql("".join(f"INSERT INTO users VALUES ({i}, 'u{i}', 'u{i}@x');" for i in ids),
                    database=mariadb.name)

    async def main():
        a = make(first)
        await a.start_binlog_cdc()
        ins(1, 2)
        await until(lambda: len(first) == 2, what="rows 1-2")
        await a.stop_binlog_cdc()
        await a.close()

        ins(3, 4)  # while no connector runs

        b = make(second)
        await b.start_binlog_cdc()
        ins(5)
        await until(lambda: any(e.primary_key == {"id": 5} for e in second), what="row 5")
        await b.stop_binlog_cdc()
        await b.close()

    run(main())
    assert checkpoint.exists()
    assert [e.primary_key["id"] for e in first] == [1, 2]
    assert [e.primary_key["id"] for e in second] == [3, 4, 5]
    assert not {e.id for e in first} & {e.id for e in second}


@needs_mysql
def test_a_connector_that_stops_itself_is_reported(mariadb):
    """Two connectors with one server_id, as a user with exactly the guide's grants (which cannot
    list the source's replicas, so neither start sees the clash): the source ends the first one's
    binlog dump when the second connects, a configuration error retrying cannot fix — the SDK
    reports it on the first connector instead of looking alive."""
    sid = server_id()
    user = f"py_guide_{random.randrange(1 << 30)}"
    mariadb.sql(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'secret';"
                f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'127.0.0.1';"
                f"GRANT SELECT ON {mariadb.name}.* TO '{user}'@'127.0.0.1';")

    def make(name):
        c = MySQLConnector(host=mariadb.host, port=mariadb.port, database=mariadb.name, tables=["users"],
                           server_id=sid, credentials={"username": user, "password": "secret"},
                           connector_id=name, snapshot="never")
        c.add_change_handler(CallbackHandler(lambda e: None))
        return c

    async def main():
        a, b = make("py-dup-a"), make("py-dup-b")
        await a.start_binlog_cdc()
        await b.start_binlog_cdc()
        deadline = asyncio.get_running_loop().time() + 30
        while a.failure is None:
            assert asyncio.get_running_loop().time() < deadline, "the displaced connector looked alive"
            await asyncio.sleep(0.1)
        assert not a.running
        assert "server_id" in str(a.failure), a.failure
        for c in (a, b):
            await c.close()

    try:
        run(main())
    finally:
        mariadb.sql(f"DROP USER '{user}'@'127.0.0.1'")
