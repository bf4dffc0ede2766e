//! The PostgreSQL connector against the real PostgreSQL 15 of the test harness, in both capture
//! modes: a fresh source database per test.

use aragora_cdc::postgres::{PgMode, PostgresConfig, PostgresConnector, SnapshotMode};
use aragora_cdc::{
    ChangeEvent, ChangeHandler, ChangeOperation, CompositeHandler, Connector, HandlerError,
    KnowledgeMoundHandler, MemoryKnowledgeSink,
};
use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

struct Source {
    name: String,
    host: String,
    port: u16,
    user: String,
    client: Client,
}

fn admin_parts() -> (String, u16, String) {
    let url = aragora_testkit::pg_admin_url();
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
    let (user, hostpart) = rest.split_once('@').expect("user@host in the admin url");
    let hostport = hostpart.split('/').next().unwrap();
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    let user = user.split(':').next().unwrap();
    (host.to_string(), port.parse().unwrap(), user.to_string())
}

async fn client_for(host: &str, port: u16, user: &str, db: &str) -> Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host).port(port).user(user).dbname(db);
    let (client, conn) = cfg.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

impl Source {
    async fn new(ddl: &str) -> Source {
        let (host, port, user) = admin_parts();
        let name = aragora_testkit::scratch_database_name("src");
        let admin = client_for(&host, port, &user, "postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create source db");
        let client = client_for(&host, port, &user, &name).await;
        client.batch_execute(ddl).await.expect("ddl");
        Source {
            name,
            host,
            port,
            user,
            client,
        }
    }

    fn config(&self, mode: PgMode, tables: &[&str]) -> PostgresConfig {
        let mut c = PostgresConfig::new(self.host.clone(), self.name.clone(), tables.to_vec());
        c.port = self.port;
        c.mode = mode;
        c.slot_name = Some(format!("s_{}", &self.name[self.name.len() - 16..]));
        c.batch_size = 500;
        c.poll_interval_seconds = 0.2;
        c
    }

    fn connector(&self, id: &str, cfg: PostgresConfig) -> PostgresConnector {
        PostgresConnector::new(id, cfg, self.user.clone(), None).expect("connector")
    }

    async fn second_client(&self) -> Client {
        client_for(&self.host, self.port, &self.user, &self.name).await
    }

    /// Rows of `table` as id → row JSON.
    async fn rows(&self, table: &str) -> BTreeMap<String, Value> {
        self.client
            .query(
                &format!("SELECT id::text, to_jsonb(t)::text FROM {table} t"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                let row: String = r.get(1);
                (id, serde_json::from_str(&row).unwrap())
            })
            .collect()
    }

    async fn drop(self, connectors: &[&PostgresConnector]) {
        for c in connectors {
            c.stop().await.unwrap();
            c.teardown().await.unwrap();
        }
        drop(self.client);
        let admin = client_for(&self.host, self.port, &self.user, "postgres").await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop source db");
    }
}

/// Records every batch it acknowledges.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<ChangeEvent>>,
    max_batch: AtomicUsize,
}

impl Recorder {
    fn snapshot(&self) -> Vec<ChangeEvent> {
        self.events.lock().clone()
    }
    fn len(&self) -> usize {
        self.events.lock().len()
    }
}

#[async_trait]
impl ChangeHandler for Recorder {
    async fn handle(&self, e: &ChangeEvent) -> Result<(), HandlerError> {
        self.events.lock().push(e.clone());
        Ok(())
    }
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        self.max_batch.fetch_max(events.len(), Ordering::Relaxed);
        self.events.lock().extend_from_slice(events);
        Ok(())
    }
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let ok = aragora_testkit::eventually(Duration::from_secs(secs), || {
        let v = f();
        async move { v.then_some(()) }
    })
    .await;
    assert!(ok.is_some(), "timed out waiting for {what}");
}

const USERS: &str = "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, age int, \
                     profile jsonb, joined timestamptz DEFAULT '2024-01-02 03:04:05+00');";

async fn maps_insert_update_delete(mode: PgMode) {
    let src = Source::new(USERS).await;
    let mut cfg = src.config(mode, &["users"]);
    cfg.snapshot = SnapshotMode::Never;
    let conn = src.connector("c-map", cfg);
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.expect("start");
    src.client
        .batch_execute(
            "INSERT INTO users (id, name, age, profile) VALUES (1, 'Ann', 30, '{\"k\": [1]}');
             UPDATE users SET name = 'Anna', age = 31 WHERE id = 1;
             DELETE FROM users WHERE id = 1;",
        )
        .await
        .unwrap();
    wait_until("three events", 20, || rec.len() >= 3).await;
    let ev = rec.snapshot();
    assert_eq!(ev.len(), 3, "{ev:#?}");
    let ops: Vec<ChangeOperation> = ev.iter().map(|e| e.operation).collect();
    assert_eq!(
        ops,
        [
            ChangeOperation::Insert,
            ChangeOperation::Update,
            ChangeOperation::Delete
        ]
    );
    let full = json!({"id": 1, "name": "Ann", "age": 30, "profile": {"k": [1]},
                      "joined": "2024-01-02T03:04:05+00:00"});
    assert_eq!(Value::Object(ev[0].data.clone()), full);
    assert!(ev[0].old_data.is_empty());
    assert_eq!(ev[1].data["name"], "Anna");
    assert_eq!(ev[1].data["age"], 31);
    assert_eq!(
        Value::Object(ev[1].old_data.clone()),
        full,
        "update carries the old row"
    );
    assert!(ev[2].data.is_empty());
    assert_eq!(ev[2].old_data["name"], "Anna");
    for e in &ev {
        assert_eq!(Value::Object(e.primary_key.clone()), json!({"id": 1}));
        assert_eq!(e.table, "users");
        assert_eq!(e.database, src.name);
        assert_eq!(e.connector_id, "c-map");
        assert!(e.id.starts_with("chg-"));
        assert!(!e.resume_token.is_empty());
        assert!(aragora_core::time::parse_rfc3339(&e.timestamp).is_some());
    }
    assert!(ev[0].sequence_number < ev[1].sequence_number);
    assert!(ev[1].sequence_number < ev[2].sequence_number);
    let health = conn.health_check().await;
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.details["events_total"], 3);
    src.drop(&[&conn]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_maps_insert_update_delete() {
    maps_insert_update_delete(PgMode::Trigger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_maps_insert_update_delete() {
    maps_insert_update_delete(PgMode::Logical).await;
}

/// Existing rows are snapshotted, writes during the snapshot are streamed, and the knowledge
/// mound ends equal to the table: no gap between snapshot and stream.
async fn snapshot_then_stream_without_gap(mode: PgMode) {
    let src = Source::new(
        "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO items SELECT g, g FROM generate_series(1, 3000) g;",
    )
    .await;
    let mut cfg = src.config(mode, &["items"]);
    cfg.batch_size = 100;
    let conn = Arc::new(src.connector("c-snap", cfg));
    let sink = Arc::new(MemoryKnowledgeSink::new());
    conn.add_change_handler(Arc::new(KnowledgeMoundHandler::new(sink.clone())));
    let writer = src.second_client().await;
    let writes = tokio::spawn(async move {
        for i in 0..200 {
            writer
                .batch_execute(&format!(
                    "UPDATE items SET v = v + 1000 WHERE id = {}; DELETE FROM items WHERE id = {};
                     INSERT INTO items VALUES ({}, 7);",
                    1 + i * 7,
                    2 + i * 7,
                    10_000 + i
                ))
                .await
                .unwrap();
        }
    });
    conn.start().await.expect("start");
    writes.await.unwrap();
    let expected = src.rows("items").await;
    let key = |id: &str| format!("c-snap/items/{{\"id\":{id}}}");
    wait_until("the mound to equal the table", 60, || {
        let items = sink.items();
        items.len() == expected.len()
            && expected.iter().all(|(id, row)| {
                items
                    .get(&key(id))
                    .is_some_and(|it| it.metadata["data"] == *row)
            })
    })
    .await;
    let health = conn.health_check().await;
    assert!(
        health.details["snapshot_rows"].as_u64().unwrap() >= 2800,
        "{health:?}"
    );
    src.drop(&[&conn]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_snapshot_then_stream_without_gap() {
    snapshot_then_stream_without_gap(PgMode::Trigger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_snapshot_then_stream_without_gap() {
    snapshot_then_stream_without_gap(PgMode::Logical).await;
}

/// A 100k-row transaction arrives whole, in batches no larger than the connector's bound.
async fn large_transaction_is_delivered_in_bounded_batches(mode: PgMode) {
    let src = Source::new("CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);").await;
    let mut cfg = src.config(mode, &["big"]);
    cfg.snapshot = SnapshotMode::Never;
    cfg.batch_size = 1000;
    let conn = src.connector("c-big", cfg);
    let count = Arc::new(AtomicUsize::new(0));
    let max_batch = Arc::new(AtomicUsize::new(0));
    struct Counter(Arc<AtomicUsize>, Arc<AtomicUsize>);
    #[async_trait]
    impl ChangeHandler for Counter {
        async fn handle(&self, _e: &ChangeEvent) -> Result<(), HandlerError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
            self.1.fetch_max(events.len(), Ordering::Relaxed);
            self.0.fetch_add(events.len(), Ordering::Relaxed);
            Ok(())
        }
    }
    conn.add_change_handler(Arc::new(Counter(count.clone(), max_batch.clone())));
    conn.start().await.expect("start");
    src.client
        .batch_execute(
            "INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g",
        )
        .await
        .unwrap();
    wait_until("100k events", 120, || {
        count.load(Ordering::Relaxed) >= 100_000
    })
    .await;
    assert_eq!(count.load(Ordering::Relaxed), 100_000);
    let biggest = max_batch.load(Ordering::Relaxed);
    assert!(
        biggest <= 4 * 1000,
        "a batch of {biggest} events: memory is not bounded by the batch size"
    );
    src.drop(&[&conn]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_large_transaction_is_bounded() {
    large_transaction_is_delivered_in_bounded_batches(PgMode::Trigger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_large_transaction_is_bounded() {
    large_transaction_is_delivered_in_bounded_batches(PgMode::Logical).await;
}

/// Fails every batch after recording what it was offered.
#[derive(Default)]
struct Failing {
    /// Event ids of each attempt.
    offered: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl ChangeHandler for Failing {
    fn name(&self) -> String {
        "failing".into()
    }
    async fn handle(&self, e: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(e)).await
    }
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        self.offered
            .lock()
            .push(events.iter().map(|e| e.id.clone()).collect());
        Err(HandlerError::new("downstream is down"))
    }
}

/// A handler failure is retried (never skipped), shows in health, holds the position; after a
/// restart the same events come again with the same ids.
async fn failures_hold_position_and_replay_same_ids(mode: PgMode) {
    let src = Source::new("CREATE TABLE t (id int PRIMARY KEY, v text);").await;
    let mut cfg = src.config(mode, &["t"]);
    cfg.snapshot = SnapshotMode::Never;
    let checkpoints = Arc::new(aragora_cdc::MemoryCheckpoints::new());
    let conn = src
        .connector("c-fail", cfg.clone())
        .with_checkpoints(checkpoints.clone());
    let failing = Arc::new(Failing::default());
    conn.add_change_handler(failing.clone());
    conn.start().await.unwrap();
    src.client
        .batch_execute(
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'); UPDATE t SET v = 'c' WHERE id = 1;",
        )
        .await
        .unwrap();
    wait_until("retries", 30, || failing.offered.lock().len() >= 3).await;
    let health = conn.health_check().await;
    assert!(
        !health.healthy,
        "a failing handler makes the connector unhealthy"
    );
    assert!(health.details["handler_errors_total"].as_u64().unwrap() >= 2);
    assert!(
        health.details["last_handler_error"]
            .as_str()
            .unwrap()
            .contains("downstream is down")
    );
    conn.stop().await.unwrap();
    let offered = failing.offered.lock().clone();
    let first_ids = offered[0].clone();
    assert!(!first_ids.is_empty());
    assert_eq!(
        offered[1], first_ids,
        "a retry offers the same events again"
    );
    assert_eq!(offered[2], first_ids, "nothing is skipped");

    let conn2 = src.connector("c-fail", cfg).with_checkpoints(checkpoints);
    let rec = Arc::new(Recorder::default());
    conn2.add_change_handler(rec.clone());
    conn2.start().await.unwrap();
    wait_until("replay", 30, || rec.len() >= 3).await;
    let replayed: Vec<String> = rec.snapshot().iter().map(|e| e.id.clone()).collect();
    assert_eq!(replayed.len(), 3);
    assert_eq!(
        replayed[..first_ids.len()],
        first_ids[..],
        "replayed events carry identical ids"
    );
    assert!(conn2.health_check().await.healthy);
    src.drop(&[&conn2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_mode_failures_hold_position_and_replay_same_ids() {
    failures_hold_position_and_replay_same_ids(PgMode::Trigger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_failures_hold_position_and_replay_same_ids() {
    failures_hold_position_and_replay_same_ids(PgMode::Logical).await;
}

/// 64 handlers in one CompositeHandler run concurrently: each waits at a barrier that only
/// opens when all 64 are inside `handle_batch` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_runs_64_handlers_concurrently() {
    const N: usize = 64;
    let src = Source::new("CREATE TABLE t (id int PRIMARY KEY);").await;
    let mut cfg = src.config(PgMode::Trigger, &["t"]);
    cfg.snapshot = SnapshotMode::Never;
    let conn = src.connector("c-comp", cfg);
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    struct AtBarrier(Arc<tokio::sync::Barrier>, Arc<Recorder>);
    #[async_trait]
    impl ChangeHandler for AtBarrier {
        async fn handle(&self, _e: &ChangeEvent) -> Result<(), HandlerError> {
            Ok(())
        }
        async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
            self.0.wait().await;
            self.1.handle_batch(events).await
        }
    }
    let composite = CompositeHandler::new();
    let recorders: Vec<Arc<Recorder>> = (0..N).map(|_| Arc::new(Recorder::default())).collect();
    for r in &recorders {
        composite.add_handler(Arc::new(AtBarrier(barrier.clone(), r.clone())));
    }
    assert_eq!(composite.len(), N);
    conn.add_change_handler(Arc::new(composite));
    conn.start().await.unwrap();
    src.client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 500)")
        .await
        .unwrap();
    wait_until("every handler saw every event", 30, || {
        recorders.iter().all(|r| r.len() >= 500)
    })
    .await;
    for r in &recorders {
        let ids: Vec<i64> = r
            .snapshot()
            .iter()
            .map(|e| e.primary_key["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, (1..=500).collect::<Vec<_>>(), "in order, exactly once");
    }
    src.drop(&[&conn]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_streams_rows_and_resumes_incrementally() {
    let src = Source::new(
        "CREATE TABLE docs (id int PRIMARY KEY, title text, updated_at bigint NOT NULL);
         INSERT INTO docs SELECT g, 'doc ' || g, g FROM generate_series(1, 2500) g;",
    )
    .await;
    let mut cfg = src.config(PgMode::Trigger, &["docs"]);
    cfg.timestamp_column = Some("updated_at".into());
    let conn = src.connector("c-sync", cfg);
    let rows: Vec<_> = conn.sync().collect().await;
    assert_eq!(rows.len(), 2500);
    let first = rows[0].as_ref().unwrap();
    assert_eq!(
        first.evidence_id,
        format!("postgresql:{}.public.docs:{{\"id\":1}}", src.name)
    );
    assert!(first.content.contains("title: doc 1"), "{}", first.content);
    src.client
        .batch_execute("UPDATE docs SET title = 'new', updated_at = 5000 WHERE id = 7")
        .await
        .unwrap();
    let again: Vec<_> = conn.sync().collect().await;
    assert_eq!(again.len(), 1, "only rows changed since the last sync");
    assert_eq!(again[0].as_ref().unwrap().data["title"], "new");
    // A missing table is an error naming it, not an empty stream.
    let mut bad = src.config(PgMode::Trigger, &["nope"]);
    bad.timestamp_column = None;
    let err = src.connector("c-bad", bad).sync().next().await.unwrap();
    assert!(err.unwrap_err().to_string().contains("nope"));
    src.drop(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_fills_unchanged_toast_and_follows_schema_changes() {
    let src = Source::new("CREATE TABLE notes (id int PRIMARY KEY, title text, body text);").await;
    let mut cfg = src.config(PgMode::Logical, &["notes"]);
    cfg.snapshot = SnapshotMode::Never;
    let conn = src.connector("c-toast", cfg);
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    // ~40 kB of incompressible text is stored out of line (TOAST).
    src.client
        .batch_execute(
            "INSERT INTO notes SELECT 1, 'a', string_agg(md5(g::text), '') FROM generate_series(1, 1250) g;
             UPDATE notes SET title = 'b' WHERE id = 1;
             ALTER TABLE notes ADD COLUMN tag text;
             UPDATE notes SET tag = 'x' WHERE id = 1;",
        )
        .await
        .unwrap();
    wait_until("three events", 30, || rec.len() >= 3).await;
    let ev = rec.snapshot();
    let body = ev[0].data["body"].as_str().unwrap().to_string();
    assert_eq!(body.len(), 40_000);
    assert_eq!(ev[1].data["title"], "b");
    assert_eq!(
        ev[1].data["body"],
        body.as_str(),
        "unchanged TOAST value filled in"
    );
    assert_eq!(ev[2].data["tag"], "x", "the added column appears");
    assert_eq!(ev[2].data["body"], body.as_str());
    let health = conn.health_check().await;
    assert_eq!(health.details["schema_changes"], 1, "{health:?}");
    assert_eq!(health.details["slot_exists"], true);
    src.drop(&[&conn]).await;
}

/// While a handler holds a batch far longer than `wal_sender_timeout`, the stream stays up
/// (keepalives are answered) and the slot's confirmed LSN does not move past unacknowledged
/// events; afterwards it catches up and the lag shows in health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_mode_keeps_the_stream_alive_under_backpressure() {
    let src = Source::new("CREATE TABLE t (id int PRIMARY KEY);").await;
    let mut cfg = src.config(PgMode::Logical, &["t"]);
    cfg.snapshot = SnapshotMode::Never;
    cfg.options = Some("-c wal_sender_timeout=1000".into());
    let conn = src.connector("c-slow", cfg);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let commit_lsn = Arc::new(Mutex::new(String::new()));
    struct Gated(
        Arc<tokio::sync::Semaphore>,
        Arc<AtomicUsize>,
        Arc<Mutex<String>>,
    );
    #[async_trait]
    impl ChangeHandler for Gated {
        async fn handle(&self, _e: &ChangeEvent) -> Result<(), HandlerError> {
            Ok(())
        }
        async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
            if let Some(e) = events.first() {
                // resume_token = "<commit LSN>:<n>"
                let lsn = e.resume_token.split(':').next().unwrap().to_string();
                self.2.lock().get_or_insert_default_string(lsn);
            }
            self.1.fetch_add(events.len(), Ordering::Relaxed);
            let _permit = self.0.acquire().await.map_err(HandlerError::from)?;
            Ok(())
        }
    }
    trait FirstOnly {
        fn get_or_insert_default_string(&mut self, v: String);
    }
    impl FirstOnly for String {
        fn get_or_insert_default_string(&mut self, v: String) {
            if self.is_empty() {
                *self = v;
            }
        }
    }
    conn.add_change_handler(Arc::new(Gated(
        gate.clone(),
        seen.clone(),
        commit_lsn.clone(),
    )));
    conn.start().await.unwrap();
    let slot = conn.config().slot_for("c-slow");
    src.client
        .batch_execute("INSERT INTO t SELECT generate_series(1, 20000)")
        .await
        .unwrap();
    wait_until("the handler to hold a batch", 30, || {
        seen.load(Ordering::Relaxed) > 0
    })
    .await;
    let commit = commit_lsn.lock().clone();
    // Three sender timeouts pass while the handler holds the batch: the stream stays up and the
    // slot never confirms the unacknowledged transaction.
    let held = tokio::time::Instant::now();
    while held.elapsed() < Duration::from_secs(3) {
        assert!(
            !confirmed_past(&src.client, &slot, &commit).await,
            "confirmed LSN passed {commit} before acknowledgement"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let health = conn.health_check().await;
    assert!(
        health.details["slot_lag_bytes"].as_i64().unwrap() > 0,
        "{health:?}"
    );
    gate.add_permits(1_000_000);
    wait_until("all events", 60, || seen.load(Ordering::Relaxed) >= 20_000).await;
    let health = conn.health_check().await;
    assert_eq!(
        health.details["reconnects"], 0,
        "the stream never broke: {health:?}"
    );
    let c = &src.client;
    let moved = aragora_testkit::eventually(Duration::from_secs(20), || async {
        confirmed_past(c, &slot, &commit).await.then_some(())
    })
    .await;
    if moved.is_none() {
        let r = c.query_one("SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text FROM pg_replication_slots WHERE slot_name = $1", &[&slot]).await.unwrap();
        eprintln!(
            "commit {commit} confirmed {} current {} health {:?}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            conn.health_check().await
        );
    }
    assert!(
        moved.is_some(),
        "confirmed LSN advances after acknowledgement"
    );
    src.drop(&[&conn]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_missing_tables_and_tables_without_keys() {
    let src = Source::new("CREATE TABLE nokey (v int);").await;
    for (tables, want) in [
        (vec!["ghost"], "does not exist"),
        (vec!["nokey"], "no primary key"),
    ] {
        let conn = src.connector("c-x", src.config(PgMode::Trigger, &tables));
        conn.add_change_handler(Arc::new(Recorder::default()));
        let err = conn.start().await.unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    let conn = src.connector("c-y", src.config(PgMode::Trigger, &["nokey"]));
    let err = conn.start().await.unwrap_err().to_string();
    assert!(err.contains("add a change handler"), "{err}");
    src.drop(&[]).await;
}

async fn confirmed_past(c: &Client, slot: &str, lsn: &str) -> bool {
    c.query_one(
        "SELECT confirmed_flush_lsn > $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot, &lsn],
    )
    .await
    .unwrap()
    .get(0)
}
