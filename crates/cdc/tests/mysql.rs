//! The MySQL/MariaDB connector against the real MariaDB of the test harness
//! (`scripts/test-services start mysql`: ROW binlog, FULL row images, strict GTID): a fresh
//! source database per test. MySQL-only paths (GTID sets for COM_BINLOG_DUMP_GTID, binary JSON)
//! are covered by the fixture tests at the end of this file.

use aragora_cdc::mysql::gtid::{MysqlGtidSet, ResumeToken};
use aragora_cdc::mysql::{MySqlConfig, MySqlConnector, SnapshotMode};
use aragora_cdc::{
    ChangeEvent, ChangeHandler, ChangeOperation, CheckpointStore, Connector, HandlerError,
    MemoryCheckpoints,
};
use async_trait::async_trait;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// PURGE BINARY LOGS removes files other tests' checkpoints may point into, and skips files a
/// connected binlog reader is using: tests that stream hold this for reading, the purge test for
/// writing.
static BINLOG_FILES: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

struct Source {
    name: String,
    host: String,
    port: u16,
    conn: Conn,
}

fn admin_opts(db: Option<&str>) -> (Opts, String, u16) {
    let url = aragora_testkit::mysql_url();
    let opts = Opts::from_url(&url).expect("mysql url");
    let host = opts.ip_or_hostname().to_string();
    let port = opts.tcp_port();
    let b = mysql_async::OptsBuilder::from_opts(opts)
        .db_name(db.map(str::to_string))
        .prefer_socket(false);
    (b.into(), host, port)
}

impl Source {
    async fn new(ddl: &str) -> Source {
        let name = format!("src_{}", &aragora_testkit::random_hex()[..16]);
        let (opts, host, port) = admin_opts(None);
        let mut admin = Conn::new(opts).await.expect("connect to MariaDB");
        admin
            .query_drop(format!("CREATE DATABASE {name}"))
            .await
            .expect("create db");
        drop(admin);
        let (opts, _, _) = admin_opts(Some(&name));
        let mut conn = Conn::new(opts).await.expect("connect");
        for stmt in ddl.split(';').filter(|s| !s.trim().is_empty()) {
            conn.query_drop(stmt).await.expect("ddl");
        }
        Source {
            name,
            host,
            port,
            conn,
        }
    }

    fn config(&self, tables: &[&str]) -> MySqlConfig {
        let mut c = MySqlConfig::new(self.host.clone(), self.name.clone(), tables.to_vec());
        c.port = self.port;
        c.batch_size = 500;
        c.heartbeat_seconds = 1.0;
        c
    }

    fn connector(&self, id: &str, cfg: MySqlConfig) -> MySqlConnector {
        MySqlConnector::new(id, cfg, "root", None).expect("connector")
    }

    async fn exec(&mut self, sql: &str) {
        self.conn
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn drop_db(mut self) {
        let name = self.name.clone();
        self.exec(&format!("DROP DATABASE {name}")).await;
    }
}

/// Records every batch it acknowledges.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<ChangeEvent>>,
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
        self.events.lock().extend_from_slice(events);
        Ok(())
    }
}

/// Acknowledges the first `ack` events (whole batches), then records what it is offered and
/// refuses it.
struct AckThenFail {
    ack: usize,
    acked: Mutex<Vec<ChangeEvent>>,
    refused: Mutex<Vec<ChangeEvent>>,
    offers: AtomicUsize,
}

impl AckThenFail {
    /// Acknowledges batches until `ack` events were acknowledged, then refuses every batch.
    fn new(ack: usize) -> Arc<AckThenFail> {
        Arc::new(AckThenFail {
            ack,
            acked: Mutex::new(Vec::new()),
            refused: Mutex::new(Vec::new()),
            offers: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl ChangeHandler for AckThenFail {
    async fn handle(&self, _e: &ChangeEvent) -> Result<(), HandlerError> {
        unreachable!("batches only")
    }
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        self.offers.fetch_add(1, Ordering::Relaxed);
        let mut acked = self.acked.lock();
        if acked.len() < self.ack {
            acked.extend_from_slice(events);
            return Ok(());
        }
        let mut refused = self.refused.lock();
        if refused.is_empty() {
            refused.extend_from_slice(events);
        }
        Err(HandlerError::new("downstream unavailable"))
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

/// Waits until the connector streams the binlog: its (initial) snapshot is over, so rows written
/// from now on arrive once, from the binlog (a row written during the snapshot may arrive twice:
/// copied, then streamed).
async fn streaming(c: &MySqlConnector) {
    wait_until("streaming", 30, || c.status().phase() == "streaming").await;
}

const USERS: &str = "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, \
     age INT, balance DECIMAL(10,2), kind ENUM('free','pro') DEFAULT 'free', \
     tags SET('a','b','c'), joined DATETIME(3), seen TIMESTAMP NULL, avatar VARBINARY(16), \
     big BIGINT UNSIGNED, profile JSON) ENGINE=InnoDB;
     CREATE TABLE other (id INT PRIMARY KEY, v INT)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_insert_update_delete() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new(USERS).await;
    let conn = src.connector("my-map", src.config(&["users"]));
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start_binlog_cdc().await.expect("start");
    streaming(&conn).await;
    src.exec(
        "INSERT INTO users VALUES (1, 'Ann', 30, 12.50, 'pro', 'a,c', '2024-01-02 03:04:05.678', \
         '2024-05-06 07:08:09', x'ff00', 18446744073709551615, '{\"k\": [1]}')",
    )
    .await;
    src.exec("INSERT INTO other VALUES (1, 1)").await;
    src.exec("UPDATE users SET name = 'Anna', age = NULL WHERE id = 1")
        .await;
    src.exec("DELETE FROM users WHERE id = 1").await;
    wait_until("three events", 20, || rec.len() >= 3).await;
    let ev = rec.snapshot();
    assert_eq!(ev.len(), 3, "only `users` is captured: {ev:#?}");
    let ops: Vec<ChangeOperation> = ev.iter().map(|e| e.operation).collect();
    assert_eq!(
        ops,
        [
            ChangeOperation::Insert,
            ChangeOperation::Update,
            ChangeOperation::Delete
        ]
    );
    let row = json!({
        "id": 1, "name": "Ann", "age": 30, "balance": "12.50", "kind": "pro", "tags": "a,c",
        "joined": "2024-01-02 03:04:05.678000", "seen": "2024-05-06 07:08:09",
        "avatar": "\\xff00", "big": 18446744073709551615u64, "profile": "{\"k\": [1]}"
    });
    assert_eq!(Value::Object(ev[0].data.clone()), row);
    assert!(ev[0].old_data.is_empty());
    assert_eq!(Value::Object(ev[0].primary_key.clone()), json!({"id": 1}));
    assert_eq!(Value::Object(ev[1].old_data.clone()), row);
    assert_eq!(ev[1].data["name"], json!("Anna"));
    assert_eq!(ev[1].data["age"], Value::Null);
    assert!(ev[2].data.is_empty());
    assert_eq!(ev[2].old_data["name"], json!("Anna"));
    assert_eq!(Value::Object(ev[2].primary_key.clone()), json!({"id": 1}));
    for e in &ev {
        assert_eq!(e.table, "users");
        assert_eq!(e.database, src.name);
        assert_eq!(e.source_type.as_str(), "mysql");
        assert!(
            e.resume_token.starts_with("0-1-"),
            "GTID-based: {}",
            e.resume_token
        );
    }
    let ids: BTreeSet<&str> = ev.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ev.windows(2)
            .all(|w| w[0].sequence_number < w[1].sequence_number)
    );

    let health = conn.health_check().await;
    assert!(health.healthy, "{:?}", health.details);
    assert!(health.latency_ms > 0.0);
    let d = &health.details;
    assert_eq!(d["flavor"], json!("mariadb"));
    assert_eq!(d["positioning"], json!("gtid"));
    assert!(
        d["server_position"]["gtid"]
            .as_str()
            .unwrap()
            .starts_with("0-1-")
    );
    assert!(
        d["server_position"]["file"]
            .as_str()
            .unwrap()
            .starts_with("binlog.")
    );
    assert_eq!(d["events_total"], json!(3));
    assert!(d.contains_key("lag_ms") && d.contains_key("lag_bytes"));
    conn.stop_binlog_cdc().await.unwrap();
    conn.close().await.unwrap();
    src.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_and_sync_in_key_order() {
    let mut src = Source::new(
        "CREATE TABLE items (shop INT, sku VARCHAR(20), qty INT, updated BIGINT, \
         PRIMARY KEY (shop, sku))",
    )
    .await;
    let mut values = Vec::new();
    for shop in (1..=5).rev() {
        for n in 0..500 {
            values.push(format!("({shop}, 'sku{n:04}', {n}, {})", shop * 1000 + n));
        }
    }
    src.exec(&format!("INSERT INTO items VALUES {}", values.join(",")))
        .await;
    let mut cfg = src.config(&["items"]);
    cfg.batch_size = 300;
    cfg.use_binlog = false;
    cfg.timestamp_column = Some("updated".into());
    let conn = src.connector("my-sync", cfg);
    let rows: Vec<_> = conn.sync().collect().await;
    let rows: Vec<_> = rows.into_iter().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 2500);
    let keys: Vec<i64> = rows
        .iter()
        .map(|r| r.data["updated"].as_i64().unwrap())
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "ordered by the sync column"
    );
    assert_eq!(
        rows[0].evidence_id,
        format!(
            "mysql:{}.items:{{\"shop\":1,\"sku\":\"sku0000\"}}",
            src.name
        )
    );
    assert!(rows[0].content.contains("sku: sku0000"));
    // Incremental: only rows past the high-water mark.
    src.exec("INSERT INTO items VALUES (9, 'new', 1, 999999)")
        .await;
    src.exec("UPDATE items SET updated = 1000000 WHERE shop = 1 AND sku = 'sku0001'")
        .await;
    let again: Vec<_> = conn.sync().collect().await;
    let skus: Vec<String> = again
        .into_iter()
        .map(|r| r.unwrap().data["sku"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skus, ["new", "sku0001"]);
    // Without binlog capture, start() says why.
    let err = conn.start().await.unwrap_err().to_string();
    assert!(err.contains("config.use_binlog"), "{err}");
    src.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_without_ack_redelivers_with_the_same_ids() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new(USERS).await;
    let store: Arc<MemoryCheckpoints> = Arc::new(MemoryCheckpoints::new());
    let mut cfg = src.config(&["users"]);
    cfg.batch_size = 10;
    let first = src
        .connector("my-resume", cfg.clone())
        .with_checkpoints(store.clone());
    let h1 = AckThenFail::new(10);
    first.add_change_handler(h1.clone());
    first.start().await.expect("start");
    streaming(&first).await;
    for i in 0..30 {
        src.exec(&format!(
            "INSERT INTO users (id, name) VALUES ({i}, 'u{i}')"
        ))
        .await;
    }
    wait_until("a refused batch", 30, || !h1.refused.lock().is_empty()).await;
    first.stop().await.unwrap();
    let acked: Vec<ChangeEvent> = h1.acked.lock().clone();
    let refused: Vec<ChangeEvent> = h1.refused.lock().clone();
    assert_eq!(acked.len(), 10);
    let cp = store.load("my-resume").await.unwrap().unwrap();
    let token = ResumeToken::parse(&cp.resume_token).unwrap();
    assert!(token.gtid.starts_with("0-1-"), "{}", cp.resume_token);
    assert_eq!(
        cp.sequence_number, 10,
        "only acknowledged events are checkpointed"
    );

    // More changes while stopped.
    for i in 30..40 {
        src.exec(&format!(
            "INSERT INTO users (id, name) VALUES ({i}, 'u{i}')"
        ))
        .await;
    }
    let second = src
        .connector("my-resume", cfg)
        .with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    second.add_change_handler(rec.clone());
    second.start().await.expect("restart");
    wait_until("the rest", 30, || rec.len() >= 30).await;
    let again = rec.snapshot();
    let ids: Vec<i64> = again
        .iter()
        .map(|e| e.data["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (10..40).collect::<Vec<_>>(),
        "nothing lost, nothing acked redelivered"
    );
    let by_row: HashMap<i64, &str> = again
        .iter()
        .map(|e| (e.data["id"].as_i64().unwrap(), e.id.as_str()))
        .collect();
    for e in &refused {
        assert_eq!(
            by_row[&e.data["id"].as_i64().unwrap()],
            e.id,
            "same id on redelivery"
        );
    }
    assert_eq!(again[0].sequence_number, 11);
    assert_eq!(
        second.health_check().await.details["positioning"],
        json!("gtid")
    );
    second.stop().await.unwrap();
    src.drop_db().await;
}

/// `use_gtid: false`: positioned by binlog file and offset, resumed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_position_fallback_resumes_without_loss() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))").await;
    let store: Arc<MemoryCheckpoints> = Arc::new(MemoryCheckpoints::new());
    let mut cfg = src.config(&["t"]);
    cfg.use_gtid = false;
    let c = src
        .connector("my-filepos", cfg.clone())
        .with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    streaming(&c).await;
    src.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await;
    wait_until("two events", 20, || rec.len() == 2).await;
    assert_eq!(
        c.health_check().await.details["positioning"],
        json!("file_position")
    );
    c.stop().await.unwrap();
    src.exec("FLUSH BINARY LOGS").await;
    src.exec("UPDATE t SET v = 'c' WHERE id = 2").await;
    let c = src
        .connector("my-filepos", cfg)
        .with_checkpoints(store.clone());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    wait_until("the update across a binlog rotation", 20, || rec.len() == 3).await;
    let ev = rec.snapshot();
    assert_eq!(ev[2].operation, ChangeOperation::Update);
    assert_eq!(ev[2].data["v"], json!("c"));
    assert_eq!(
        c.health_check().await.details["positioning"],
        json!("file_position")
    );
    let token = ResumeToken::parse(
        &store
            .load("my-filepos")
            .await
            .unwrap()
            .unwrap()
            .resume_token,
    )
    .unwrap();
    assert!(token.pos > 4, "{token:?}");
    c.stop().await.unwrap();
    src.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_transaction_in_pieces_survives_a_restart() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new("CREATE TABLE big (id INT PRIMARY KEY, payload VARCHAR(64))").await;
    let store: Arc<MemoryCheckpoints> = Arc::new(MemoryCheckpoints::new());
    let mut cfg = src.config(&["big"]);
    cfg.batch_size = 1000;
    let first = src
        .connector("my-big", cfg.clone())
        .with_checkpoints(store.clone());
    let h1 = AckThenFail::new(40_000);
    first.add_change_handler(h1.clone());
    first.start().await.unwrap();
    streaming(&first).await;
    src.exec("INSERT INTO big SELECT seq, CONCAT('row-', seq) FROM seq_1_to_100000")
        .await;
    wait_until("a refused piece", 120, || !h1.refused.lock().is_empty()).await;
    first.stop().await.unwrap();
    let acked = h1.acked.lock().clone();
    assert!(
        acked.len() >= 40_000 && acked.len() < 100_000,
        "{}",
        acked.len()
    );
    let cp = store.load("my-big").await.unwrap().unwrap();
    let token = ResumeToken::parse(&cp.resume_token).unwrap();
    let (txn, skip) = token
        .partial
        .clone()
        .expect("checkpoint inside the transaction");
    assert!(txn.starts_with("0-1-"));
    assert_eq!(skip as usize, acked.len());

    let second = src.connector("my-big", cfg).with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    second.add_change_handler(rec.clone());
    second.start().await.unwrap();
    let rest = 100_000 - acked.len();
    wait_until("the rest of the transaction", 120, || rec.len() >= rest).await;
    second.stop().await.unwrap();
    let again = rec.snapshot();
    assert_eq!(again.len(), rest);
    let mut all: Vec<i64> = acked
        .iter()
        .chain(again.iter())
        .map(|e| e.data["id"].as_i64().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=100_000).collect::<Vec<_>>(),
        "every row exactly once"
    );
    let ids: BTreeSet<&str> = acked
        .iter()
        .chain(again.iter())
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(ids.len(), 100_000);
    let cp = store.load("my-big").await.unwrap().unwrap();
    assert!(
        ResumeToken::parse(&cp.resume_token)
            .unwrap()
            .partial
            .is_none(),
        "past the commit"
    );
    src.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_purged_while_stopped_is_a_clear_error() {
    let mut src = Source::new("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let store: Arc<MemoryCheckpoints> = Arc::new(MemoryCheckpoints::new());
    let cfg = src.config(&["t"]);
    let c = src
        .connector("my-purge", cfg.clone())
        .with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    streaming(&c).await;
    src.exec("INSERT INTO t VALUES (1)").await;
    wait_until("one event", 20, || rec.len() == 1).await;
    c.stop().await.unwrap();
    {
        let _files = BINLOG_FILES.write().await;
        src.exec("INSERT INTO t VALUES (2)").await;
        src.exec("FLUSH BINARY LOGS").await;
        let file: String = src
            .conn
            .query_first::<mysql_async::Row, _>("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap()
            .get(0)
            .unwrap();
        // A dump thread of a connection that just closed may still hold the old file.
        let gone = aragora_testkit::eventually(Duration::from_secs(20), || {
            let (opts, _, _) = admin_opts(None);
            let file = file.clone();
            async move {
                let mut c = Conn::new(opts).await.ok()?;
                c.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
                    .await
                    .ok()?;
                let logs: Vec<mysql_async::Row> = c.query("SHOW BINARY LOGS").await.ok()?;
                let first: String = logs.first()?.get(0)?;
                (first == file).then_some(())
            }
        })
        .await;
        assert!(gone.is_some(), "older binlogs purged");
    }
    let again = src
        .connector("my-purge", cfg)
        .with_checkpoints(store.clone());
    again.add_change_handler(rec.clone());
    let err = again.start().await.unwrap_err().to_string();
    assert!(err.contains("resume position purged"), "{err}");
    assert!(err.contains("re-sync"), "names the way out: {err}");
    // The way out: forget the position; the next start copies the tables again (snapshot) and
    // streams from the binlog end.
    store.reset("my-purge").await.unwrap();
    again.start().await.expect("starts after a reset");
    wait_until("the snapshot", 20, || rec.len() == 3).await;
    src.exec("INSERT INTO t VALUES (3)").await;
    wait_until("the new row", 20, || rec.len() == 4).await;
    let ev = rec.snapshot();
    let snap: Vec<(&str, Value)> = ev[1..3]
        .iter()
        .map(|e| (e.resume_token.as_str(), e.data["id"].clone()))
        .collect();
    assert_eq!(snap, [("snapshot", json!(1)), ("snapshot", json!(2))]);
    assert_eq!(ev[3].data["id"], json!(3));
    let synced: Vec<_> = again.sync().collect().await;
    assert_eq!(synced.len(), 3);
    again.stop().await.unwrap();
    src.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_mid_stream_refreshes_the_columns() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new("CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(50))").await;
    let c = src.connector("my-alter", src.config(&["users"]));
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    streaming(&c).await;
    // Each row is read before the next ALTER: without `binlog_row_metadata = FULL` a row can only
    // be decoded while information_schema still has its shape (a later ALTER already applied is
    // reported as an error; `full_row_metadata_names_columns_of_old_rows` covers that case).
    src.exec("INSERT INTO users VALUES (1, 'Ann')").await;
    wait_until("the first row", 20, || rec.len() >= 1).await;
    src.exec("ALTER TABLE users ADD COLUMN email VARCHAR(80) AFTER id")
        .await;
    src.exec("INSERT INTO users VALUES (2, 'b@x', 'Bob')").await;
    wait_until("the row after the first ALTER", 20, || rec.len() >= 2).await;
    src.exec("ALTER TABLE users DROP COLUMN name").await;
    src.exec("UPDATE users SET email = 'a@x' WHERE id = 1")
        .await;
    wait_until("three events", 20, || rec.len() >= 3).await;
    let ev = rec.snapshot();
    assert_eq!(
        Value::Object(ev[0].data.clone()),
        json!({"id": 1, "name": "Ann"})
    );
    assert_eq!(
        Value::Object(ev[1].data.clone()),
        json!({"id": 2, "email": "b@x", "name": "Bob"})
    );
    assert_eq!(
        Value::Object(ev[2].data.clone()),
        json!({"id": 1, "email": "a@x"})
    );
    let h = c.health_check().await;
    assert_eq!(h.details["schema_changes"], json!(2));
    assert_eq!(h.details["last_schema_change"]["table"], json!("users"));
    assert!(
        h.details["last_schema_change"]["statement"]
            .as_str()
            .unwrap()
            .contains("DROP COLUMN name")
    );
    c.stop().await.unwrap();
    src.drop_db().await;
}

/// With `binlog_row_metadata = FULL` the binlog names its columns, so rows written before an
/// ALTER decode with the columns they had even when read after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_row_metadata_names_columns_of_old_rows() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new("CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(50))").await;
    src.exec("SET GLOBAL binlog_row_metadata = FULL").await;
    let store: Arc<MemoryCheckpoints> = Arc::new(MemoryCheckpoints::new());
    let mut cfg = src.config(&["users"]);
    // The rows must come from the binlog, not from a snapshot.
    cfg.snapshot = SnapshotMode::Never;
    let c = src
        .connector("my-full", cfg.clone())
        .with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    c.stop().await.unwrap();
    // Written and altered while the connector is down: information_schema already shows the
    // new shape when the old rows are read.
    src.exec("INSERT INTO users VALUES (1, 'Ann')").await;
    src.exec("ALTER TABLE users CHANGE name full_name VARCHAR(50), ADD COLUMN n INT")
        .await;
    src.exec("INSERT INTO users VALUES (2, 'Bob', 7)").await;
    let c = src.connector("my-full", cfg).with_checkpoints(store);
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    wait_until("two events", 20, || rec.len() >= 2).await;
    let ev = rec.snapshot();
    src.exec("SET GLOBAL binlog_row_metadata = NO_LOG").await;
    assert_eq!(
        Value::Object(ev[0].data.clone()),
        json!({"id": 1, "name": "Ann"})
    );
    assert_eq!(
        Value::Object(ev[1].data.clone()),
        json!({"id": 2, "full_name": "Bob", "n": 7})
    );
    c.stop().await.unwrap();
    src.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_refused_with_the_reason() {
    let _files = BINLOG_FILES.read().await;
    let mut src =
        Source::new("CREATE TABLE ok (id INT PRIMARY KEY); CREATE TABLE nokey (v INT)").await;
    let start_err = |cfg: MySqlConfig, user: &str, pw: Option<&str>| {
        let c = MySqlConnector::new(
            format!("my-bad-{}", &aragora_testkit::random_hex()[..16]),
            cfg,
            user,
            pw.map(String::from),
        )
        .unwrap();
        c.add_change_handler(Arc::new(Recorder::default()));
        async move { c.start().await.unwrap_err() }
    };
    let e = start_err(src.config(&["missing"]), "root", None)
        .await
        .to_string();
    assert!(
        e.starts_with("config.tables[0]") && e.contains("does not exist"),
        "{e}"
    );
    let e = start_err(src.config(&["ok", "nokey"]), "root", None)
        .await
        .to_string();
    assert!(
        e.starts_with("config.tables[1]") && e.contains("no primary key"),
        "{e}"
    );
    let mut cfg = src.config(&["ok"]);
    cfg.server_id = Some(1);
    let e = start_err(cfg, "root", None).await.to_string();
    assert!(
        e.starts_with("config.server_id") && e.contains("source's own"),
        "{e}"
    );
    // A user without replication grants.
    let user = format!("u{}", &aragora_testkit::random_hex()[..10]);
    src.exec(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'"
    ))
    .await;
    src.exec(&format!(
        "GRANT SELECT ON {}.* TO '{user}'@'127.0.0.1'",
        src.name
    ))
    .await;
    let e = start_err(src.config(&["ok"]), &user, Some("pw"))
        .await
        .to_string();
    assert!(
        e.contains("REPLICATION SLAVE") && e.contains("GRANT"),
        "{e}"
    );
    src.exec(&format!(
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'127.0.0.1'"
    ))
    .await;
    let ok = MySqlConnector::new(
        "my-bad-granted",
        src.config(&["ok"]),
        user.clone(),
        Some("pw".into()),
    )
    .unwrap();
    ok.add_change_handler(Arc::new(Recorder::default()));
    ok.start().await.expect("starts once granted");
    ok.stop().await.unwrap();
    let e = start_err(src.config(&["ok"]), &user, Some("wrong"))
        .await
        .to_string();
    assert!(e.contains("Access denied"), "{e}");
    // Nothing listening.
    let mut cfg = src.config(&["ok"]);
    cfg.port = 1;
    let e = start_err(cfg, "root", None).await.to_string();
    assert!(e.starts_with("source database: connecting"), "{e}");
    // Started twice / without a handler.
    let c = src.connector("my-bad-state", src.config(&["ok"]));
    assert!(
        c.start()
            .await
            .unwrap_err()
            .to_string()
            .contains("add a change handler")
    );
    src.exec(&format!("DROP USER '{user}'@'127.0.0.1'")).await;
    src.drop_db().await;
}

/// Holds every batch until released: the snapshot then waits (the pipeline's queue is full)
/// partway through the table, which gives a test a moment in the middle of it.
struct Gate {
    open: tokio::sync::Semaphore,
    rec: Recorder,
}

#[async_trait]
impl ChangeHandler for Gate {
    async fn handle(&self, _e: &ChangeEvent) -> Result<(), HandlerError> {
        unreachable!("batches only")
    }
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        let _ = self.open.acquire().await.expect("gate");
        self.rec.handle_batch(events).await
    }
}

/// Applies events in order: primary key `id` → row.
fn replay(events: &[ChangeEvent]) -> std::collections::BTreeMap<i64, Value> {
    let mut rows = std::collections::BTreeMap::new();
    for e in events {
        let id = e.primary_key["id"].as_i64().unwrap();
        match e.operation {
            ChangeOperation::Delete => {
                rows.remove(&id);
            }
            _ => {
                rows.insert(id, Value::Object(e.data.clone()));
            }
        }
    }
    rows
}

async fn table_rows(src: &mut Source, table: &str) -> std::collections::BTreeMap<i64, Value> {
    let rows: Vec<(i64, i64)> = src
        .conn
        .query(format!("SELECT id, v FROM {table} ORDER BY id"))
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, v)| (id, json!({"id": id, "v": v})))
        .collect()
}

/// `snapshot: initial` (the default): a first start copies the existing rows in primary-key
/// chunks as INSERT events (`resume_token` `snapshot`, ids from table and key), then streams from
/// the position recorded before the copy — changes made during the snapshot (to rows already
/// copied, not yet copied, deleted, new) are not lost. A restart after it does not copy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_snapshots_existing_rows_then_streams_without_a_gap() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new(
        "CREATE TABLE acc (id INT PRIMARY KEY, v INT NOT NULL);
         CREATE TABLE empty_one (id INT PRIMARY KEY, v INT)",
    )
    .await;
    src.exec("INSERT INTO acc SELECT seq, seq FROM seq_1_to_3000")
        .await;
    let store: Arc<MemoryCheckpoints> = Arc::new(MemoryCheckpoints::new());
    let mut cfg = src.config(&["acc", "empty_one"]);
    cfg.batch_size = 100;
    let c = src
        .connector("my-snap", cfg.clone())
        .with_checkpoints(store.clone());
    let gate = Arc::new(Gate {
        open: tokio::sync::Semaphore::new(0),
        rec: Recorder::default(),
    });
    c.add_change_handler(gate.clone());
    c.start().await.expect("start");
    // The first start saved the position before copying, marked as a snapshot not yet done.
    let cp = store.load("my-snap").await.unwrap().unwrap();
    assert!(!cp.snapshot_done, "{cp:?}");
    let start = ResumeToken::parse(&cp.resume_token).unwrap();
    wait_until("the snapshot under way", 20, || {
        c.status().details()["snapshot_rows"].as_u64().unwrap_or(0) >= 100
    })
    .await;
    assert_eq!(c.status().phase(), "snapshot");
    // Changes while the snapshot waits for the handler, partway through the table.
    src.exec("UPDATE acc SET v = -1 WHERE id = 1").await; // copied already
    src.exec("UPDATE acc SET v = -2 WHERE id = 2900").await; // not copied yet
    src.exec("DELETE FROM acc WHERE id = 2950").await;
    src.exec("INSERT INTO acc VALUES (5000, 5)").await;
    gate.open.add_permits(1_000_000);
    let expected = table_rows(&mut src, "acc").await;
    wait_until("the table reproduced", 60, || {
        replay(&gate.rec.snapshot()) == expected
    })
    .await;
    // And the last change arrives after the copy, from the binlog.
    src.exec("UPDATE acc SET v = 7 WHERE id = 3").await;
    wait_until("a change after the snapshot", 20, || {
        gate.rec
            .snapshot()
            .last()
            .is_some_and(|e| e.operation == ChangeOperation::Update && e.data["id"] == json!(3))
    })
    .await;
    let ev = gate.rec.snapshot();
    let snap: Vec<&ChangeEvent> = ev.iter().filter(|e| e.resume_token == "snapshot").collect();
    assert!(snap.len() >= 2998, "{}", snap.len());
    let mut last = 0;
    for e in &snap {
        assert_eq!(e.operation, ChangeOperation::Insert);
        assert_eq!(e.table, "acc");
        assert!(e.old_data.is_empty());
        let id = e.data["id"].as_i64().unwrap();
        assert!(id > last, "primary-key order");
        last = id;
        assert_eq!(
            e.id,
            aragora_cdc::event_id(
                "my-snap",
                &format!(
                    "snapshot:acc:{}:{}",
                    aragora_cdc::canonical_key(&e.primary_key),
                    aragora_cdc::canonical_key(&e.data)
                )
            ),
            "snapshot ids derive from table, primary key and the row as read"
        );
    }
    // The snapshot comes first, then the binlog from the recorded position.
    let first_streamed = ev
        .iter()
        .position(|e| e.resume_token != "snapshot")
        .unwrap();
    assert_eq!(first_streamed, snap.len());
    assert!(ev[first_streamed].resume_token.starts_with("0-1-"));
    assert!(
        ev.windows(2)
            .all(|w| w[0].sequence_number < w[1].sequence_number)
    );
    assert!(
        ev[first_streamed..]
            .iter()
            .any(|e| e.primary_key["id"] == json!(5000)),
        "the row inserted during the snapshot is streamed"
    );
    // The snapshot's end is persisted at once; the streamed changes after it at the interval.
    wait_until(
        "the snapshot marked done, then streamed changes persisted",
        20,
        || {
            c.status().last_checkpoint().is_some_and(|cp| {
                cp.snapshot_done && ResumeToken::parse(&cp.resume_token).unwrap().gtid != start.gtid
            })
        },
    )
    .await;
    let cp = store.load("my-snap").await.unwrap().unwrap();
    assert!(cp.snapshot_done);
    let h = c.health_check().await;
    assert_eq!(h.details["phase"], json!("streaming"));
    assert_eq!(h.details["snapshot"], json!("initial"));
    assert_eq!(h.details["snapshot_rows"], json!(snap.len()));
    assert_eq!(h.details["snapshot_done"], json!(true));
    assert!(ResumeToken::parse(&cp.resume_token).unwrap().gtid != start.gtid);
    c.stop().await.unwrap();

    // A restart after a finished snapshot streams only.
    src.exec("INSERT INTO acc VALUES (6000, 6)").await;
    let again = src
        .connector("my-snap", cfg)
        .with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    again.add_change_handler(rec.clone());
    again.start().await.unwrap();
    wait_until("the change made while stopped", 20, || rec.len() >= 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ev = rec.snapshot();
    assert_eq!(ev.len(), 1, "no second snapshot: {ev:?}");
    assert_eq!(ev[0].data["id"], json!(6000));
    assert_eq!(again.status().details()["snapshot_rows"], json!(0));
    again.stop().await.unwrap();
    src.drop_db().await;
}

/// `snapshot: never` streams only; a snapshot cut short goes on after the last acknowledged row
/// with the same ids (nothing skipped, nothing copied twice), and the stream then starts at the
/// position recorded before it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_never_skips_rows_and_an_interrupted_snapshot_goes_on_where_it_stopped() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL)").await;
    src.exec("INSERT INTO t SELECT seq, seq FROM seq_1_to_1000")
        .await;

    let mut never = src.config(&["t"]);
    never.snapshot = SnapshotMode::Never;
    let c = src.connector("my-never", never);
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    src.exec("INSERT INTO t VALUES (1001, 1)").await;
    wait_until("the new row", 20, || rec.len() >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ev = rec.snapshot();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].data["id"], json!(1001));
    assert_eq!(c.health_check().await.details["snapshot_rows"], json!(0));
    c.stop().await.unwrap();
    src.exec("DELETE FROM t WHERE id = 1001").await;

    // Interrupted: 300 rows acknowledged, then the handler refuses.
    let store: Arc<MemoryCheckpoints> = Arc::new(MemoryCheckpoints::new());
    let mut cfg = src.config(&["t"]);
    cfg.batch_size = 100;
    let first = src
        .connector("my-resnap", cfg.clone())
        .with_checkpoints(store.clone());
    let h1 = AckThenFail::new(300);
    first.add_change_handler(h1.clone());
    first.start().await.unwrap();
    wait_until("a refused batch", 30, || !h1.refused.lock().is_empty()).await;
    first.stop().await.unwrap();
    let cp = store.load("my-resnap").await.unwrap().unwrap();
    assert!(!cp.snapshot_done, "{cp:?}");
    assert_eq!(cp.sequence_number, 300);
    src.exec("UPDATE t SET v = -5 WHERE id = 5").await;

    let second = src
        .connector("my-resnap", cfg)
        .with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    second.add_change_handler(rec.clone());
    second.start().await.unwrap();
    let expected = table_rows(&mut src, "t").await;
    // What both attempts delivered, in order, reproduces the table.
    let delivered = || {
        let mut all = h1.acked.lock().clone();
        all.extend(rec.snapshot());
        all
    };
    wait_until("the table reproduced", 30, || {
        replay(&delivered()) == expected
    })
    .await;
    let ev = rec.snapshot();
    let snap: Vec<&ChangeEvent> = ev.iter().filter(|e| e.resume_token == "snapshot").collect();
    let copied: Vec<i64> = snap
        .iter()
        .map(|e| e.data["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        copied,
        (301..=1000).collect::<Vec<_>>(),
        "the rows not yet acknowledged, once"
    );
    // The rows the first attempt offered but could not deliver come again with the same ids.
    let ids: HashMap<i64, &str> = snap
        .iter()
        .map(|e| (e.data["id"].as_i64().unwrap(), e.id.as_str()))
        .collect();
    let refused = h1.refused.lock().clone();
    assert!(!refused.is_empty());
    for e in &refused {
        assert_eq!(ids[&e.data["id"].as_i64().unwrap()], e.id, "same ids");
    }
    // The update made after the first attempt began also streams (from the recorded position).
    wait_until("the update made after the first attempt began", 20, || {
        rec.snapshot()
            .iter()
            .any(|e| e.operation == ChangeOperation::Update && e.primary_key["id"] == json!(5))
    })
    .await;
    assert_eq!(ev[0].sequence_number, 301);
    wait_until("the snapshot marked done", 20, || {
        second
            .status()
            .last_checkpoint()
            .is_some_and(|c| c.snapshot_done)
    })
    .await;
    second.stop().await.unwrap();
    src.drop_db().await;
}

/// A snapshot stopped in its second table goes on in that table: the first is not copied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_snapshot_does_not_copy_finished_tables_again() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new(
        "CREATE TABLE a (id INT PRIMARY KEY, v INT NOT NULL);
         CREATE TABLE b (id INT PRIMARY KEY, v INT NOT NULL)",
    )
    .await;
    src.exec("INSERT INTO a SELECT seq, seq FROM seq_1_to_50")
        .await;
    src.exec("INSERT INTO b SELECT seq, seq FROM seq_1_to_300")
        .await;
    let store: Arc<MemoryCheckpoints> = Arc::new(MemoryCheckpoints::new());
    let mut cfg = src.config(&["a", "b"]);
    cfg.batch_size = 100;
    let first = src
        .connector("my-resnap2", cfg.clone())
        .with_checkpoints(store.clone());
    // Acknowledges table a (one batch of 50) and b's first 100 rows, then refuses.
    let h1 = AckThenFail::new(150);
    first.add_change_handler(h1.clone());
    first.start().await.unwrap();
    wait_until("a refused batch", 30, || !h1.refused.lock().is_empty()).await;
    first.stop().await.unwrap();
    assert_eq!(h1.acked.lock().len(), 150);

    let second = src
        .connector("my-resnap2", cfg)
        .with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    second.add_change_handler(rec.clone());
    second.start().await.unwrap();
    streaming(&second).await;
    let ev = rec.snapshot();
    let copied: Vec<(&str, i64)> = ev
        .iter()
        .filter(|e| e.resume_token == "snapshot")
        .map(|e| (e.table.as_str(), e.data["id"].as_i64().unwrap()))
        .collect();
    let want: Vec<(&str, i64)> = (101..=300).map(|i| ("b", i)).collect();
    assert_eq!(copied, want);
    second.stop().await.unwrap();
    src.drop_db().await;
}

/// Integer columns of every width keep their sign and range (a signed MEDIUMINT -1 once came out
/// as 16777215: the binlog parser did not sign-extend 24-bit values).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_of_every_width_keep_their_sign() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new(
        "CREATE TABLE n (id INT PRIMARY KEY, t TINYINT, tu TINYINT UNSIGNED, s SMALLINT,
                         m MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
                         b BIGINT, bu BIGINT UNSIGNED)",
    )
    .await;
    let mut cfg = src.config(&["n"]);
    cfg.snapshot = SnapshotMode::Never;
    let c = src.connector("my-ints", cfg);
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    src.exec(
        "INSERT INTO n VALUES
           (1, -1, 255, -1, -1, 16777215, -1, 4294967295, -1, 18446744073709551615),
           (2, -128, 0, -32768, -8388608, 0, -2147483648, 0, -9223372036854775808, 0),
           (3, 127, 1, 32767, 8388607, 8388608, 2147483647, 2147483648, 9223372036854775807,
            9223372036854775808)",
    )
    .await;
    wait_until("three rows", 20, || rec.len() == 3).await;
    let rows: Vec<Value> = rec
        .snapshot()
        .iter()
        .map(|e| Value::Object(e.data.clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "t": -1, "tu": 255, "s": -1, "m": -1, "mu": 16777215, "i": -1,
                   "iu": 4294967295u64, "b": -1, "bu": 18446744073709551615u64}),
            json!({"id": 2, "t": -128, "tu": 0, "s": -32768, "m": -8388608, "mu": 0,
                   "i": -2147483648i64, "iu": 0, "b": i64::MIN, "bu": 0}),
            json!({"id": 3, "t": 127, "tu": 1, "s": 32767, "m": 8388607, "mu": 8388608,
                   "i": 2147483647, "iu": 2147483648u64, "b": i64::MAX,
                   "bu": 9223372036854775808u64}),
        ]
    );
    c.stop().await.unwrap();
    src.drop_db().await;
}

/// A row streamed from the binlog has the values the snapshot and `sync()` read for the same row:
/// negative TIMEs with a fraction (once a panic in the binlog parser, then a restart loop), YEAR
/// 0000 (was 1900), the zero TIMESTAMP (was 1970-01-01), BINARY's trailing zero bytes (were
/// dropped), FLOAT in its shortest form (0.1, not 0.10000000149011612).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_values_equal_the_snapshot_and_sync_values() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new(
        "CREATE TABLE v (id INT PRIMARY KEY, t0 TIME, t1 TIME(1), t3 TIME(3), t6 TIME(6),
                         y YEAR, ts TIMESTAMP(3) NULL, bin BINARY(4), vb VARBINARY(4), ch CHAR(4),
                         f FLOAT, d DOUBLE, dt DATETIME(2), da DATE)",
    )
    .await;
    src.exec("SET SESSION sql_mode = ''").await;
    let rows = "(1, '-00:00:01', '-00:00:00.5', '-01:00:00.125', '-838:59:59.999999', 0,
                 '0000-00-00 00:00:00', 'ab', 'ab', 'ab', 0.1, 0.1, '0000-00-00 00:00:00', '0000-00-00'),
                (2, '838:59:59', '-00:00:01.5', '00:00:00.001', '-00:00:00.000001', 2155,
                 '2038-01-19 03:14:07.999', x'00000000', x'0000', '', -1.5, 1e300,
                 '2024-02-29 23:59:59.99', '2024-02-29'),
                (3, '00:00:00', '12:34:56.7', '-12:34:56.789', '12:34:56.123456', 1901,
                 '1970-01-01 00:00:01', x'61000062', x'6100', 'a b', 3.4e38, -0.0,
                 NULL, NULL)";
    src.exec(&format!("INSERT INTO v VALUES {rows}")).await;
    let c = src.connector("my-values", src.config(&["v"]));
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    wait_until("the snapshot", 20, || rec.len() == 3).await;
    // The same rows again, now through the binlog, under ids 101–103.
    src.exec(
        "INSERT INTO v SELECT id + 100, t0, t1, t3, t6, y, ts, bin, vb, ch, f, d, dt, da FROM v",
    )
    .await;
    wait_until("the streamed copies", 20, || rec.len() == 6).await;
    let events = rec.snapshot();
    let without_id = |e: &ChangeEvent| {
        let mut row = e.data.clone();
        row.remove("id");
        Value::Object(row)
    };
    for i in 0..3 {
        assert_eq!(events[i].resume_token, "snapshot");
        assert_ne!(events[i + 3].resume_token, "snapshot");
        assert_eq!(
            without_id(&events[i + 3]),
            without_id(&events[i]),
            "row {} streamed vs snapshot",
            i + 1
        );
    }
    let synced: Vec<_> = c.sync().collect().await;
    let synced: Vec<Value> = synced
        .into_iter()
        .map(|r| Value::Object(r.unwrap().data))
        .collect();
    for e in &events {
        let row = synced
            .iter()
            .find(|r| r["id"] == e.data["id"])
            .expect("synced");
        assert_eq!(
            row,
            &Value::Object(e.data.clone()),
            "sync() of id {}",
            e.data["id"]
        );
    }
    let first = &events[3].data;
    for (column, want) in [
        ("t0", json!("-00:00:01")),
        ("t1", json!("-00:00:00.500000")),
        ("t3", json!("-01:00:00.125000")),
        ("t6", json!("-838:59:59.999999")),
        ("y", json!(0)),
        ("ts", json!("0000-00-00 00:00:00")),
        ("bin", json!("\\x61620000")),
        ("vb", json!("\\x6162")),
        ("ch", json!("ab")),
        ("f", json!(0.1)),
        ("d", json!(0.1)),
    ] {
        assert_eq!(first[column], want, "{column}");
    }
    assert_eq!(events[4].data["t1"], json!("-00:00:01.500000"));
    assert_eq!(events[4].data["bin"], json!("\\x00000000"));
    assert_eq!(events[5].data["f"], json!(3.4e38));
    c.stop().await.unwrap();
    src.drop_db().await;
}

/// Table names MySQL accepts only quoted (`my-table`, `order lines`, a backquote) are captured:
/// snapshot, stream, DDL refresh and `sync()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_with_names_that_need_quoting_are_captured() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new(
        "CREATE TABLE `my-table` (id INT PRIMARY KEY, v VARCHAR(10));
         CREATE TABLE `order lines` (id INT PRIMARY KEY, v VARCHAR(10));
         CREATE TABLE `a``b` (id INT PRIMARY KEY, v VARCHAR(10));
         INSERT INTO `my-table` VALUES (1, 'old');
         INSERT INTO `order lines` VALUES (1, 'old');
         INSERT INTO `a``b` VALUES (1, 'old')",
    )
    .await;
    let tables = ["my-table", "order lines", "a`b"];
    let c = src.connector("my-quoted", src.config(&tables));
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    wait_until("the snapshot", 20, || rec.len() == 3).await;
    src.exec(
        "INSERT INTO `my-table` VALUES (2, 'new');
         ALTER TABLE `order lines` ADD COLUMN w INT;
         UPDATE `order lines` SET w = 7 WHERE id = 1;
         DELETE FROM `a``b` WHERE id = 1",
    )
    .await;
    wait_until("the streamed changes", 20, || rec.len() == 6).await;
    let events = rec.snapshot();
    let tables_seen: Vec<&str> = events.iter().map(|e| e.table.as_str()).collect();
    assert_eq!(
        tables_seen,
        [
            "my-table",
            "order lines",
            "a`b",
            "my-table",
            "order lines",
            "a`b"
        ]
    );
    assert_eq!(events[3].data["v"], json!("new"));
    assert_eq!(
        events[4].data["w"],
        json!(7),
        "the new column after the ALTER"
    );
    assert_eq!(events[5].operation, ChangeOperation::Delete);
    let synced: Vec<_> = c.sync().collect().await;
    let synced: Vec<(String, Value)> = synced
        .into_iter()
        .map(|r| r.unwrap())
        .map(|r| (r.table, Value::Object(r.data)))
        .collect();
    assert_eq!(synced.len(), 3, "{synced:?}");
    assert!(synced.contains(&("order lines".into(), json!({"id": 1, "v": "old", "w": 7}))));
    c.stop().await.unwrap();
    src.drop_db().await;
}

/// A table that does not exist (or has no primary key) makes the health probe unhealthy, naming
/// the table's config field, as a start would refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_a_missing_or_keyless_table() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT);
         CREATE TABLE nokey (v INT)",
    )
    .await;
    let ok = src.connector("my-health-ok", src.config(&["t"]));
    let report = ok.health_check().await;
    assert!(report.healthy, "{report:?}");
    assert!(!report.details.contains_key("tables_error"), "{report:?}");
    for (tables, field) in [
        (["t", "nope"], "config.tables[1]"),
        (["nokey", "t"], "config.tables[0]"),
    ] {
        let c = src.connector("my-health-bad", src.config(&tables));
        let report = c.health_check().await;
        assert!(!report.healthy, "{report:?}");
        let err = report.details["tables_error"].as_str().unwrap_or_default();
        assert!(err.starts_with(field), "{err}");
        assert!(
            !report.details.contains_key("source_unreachable"),
            "{report:?}"
        );
    }
    // The source's own server_id, which a start refuses.
    let own: u32 = src
        .conn
        .query_first("SELECT @@server_id")
        .await
        .unwrap()
        .unwrap();
    let mut cfg = src.config(&["t"]);
    cfg.server_id = Some(own);
    let report = src.connector("my-health-own-id", cfg).health_check().await;
    assert!(!report.healthy, "{report:?}");
    let err = report.details["server_id_error"]
        .as_str()
        .unwrap_or_default();
    assert!(err.starts_with("config.server_id"), "{report:?}");
    src.drop_db().await;
}

/// Once the stream is idle and acknowledged, `health_check()` reports the documented position
/// fields: `caught_up`, `lag_bytes` 0, `checkpoint`, `read_file`/`read_pos`,
/// `seconds_since_last_binlog_event`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_position_once_caught_up() {
    // No other test writes to the binlog meanwhile, so the source's end stays put.
    let _files = BINLOG_FILES.write().await;
    let mut src = Source::new("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    let c = src.connector("my-health", src.config(&["t"]));
    let rec = Arc::new(Recorder::default());
    c.add_change_handler(rec.clone());
    c.start().await.unwrap();
    // After the (empty) snapshot, so both rows come from the binlog.
    wait_until("streaming", 20, || c.status().phase() == "streaming").await;
    src.exec("INSERT INTO t VALUES (1, 1), (2, 2)").await;
    wait_until("two events", 20, || rec.len() == 2).await;
    let caught_up = aragora_testkit::eventually(Duration::from_secs(20), || {
        let c = &c;
        async move {
            let h = c.health_check().await;
            (h.details["caught_up"] == json!(true)).then_some(h)
        }
    })
    .await;
    let h = caught_up.expect("caught up");
    let d = &h.details;
    assert!(h.healthy, "{d:?}");
    assert_eq!(d["phase"], json!("streaming"));
    assert_eq!(d["lag_bytes"], json!(0), "{d:?}");
    assert_eq!(d["checkpoint"]["file"], d["server_position"]["file"]);
    assert_eq!(d["checkpoint"]["pos"], d["server_position"]["pos"]);
    assert_eq!(d["checkpoint"]["gtid"], d["server_position"]["gtid"]);
    assert_eq!(d["read_file"], d["server_position"]["file"], "{d:?}");
    assert_eq!(d["read_pos"], d["server_position"]["pos"], "{d:?}");
    assert!(d["seconds_since_last_binlog_event"].as_i64().unwrap() >= 0);
    assert!(d["last_binlog_event_at"].is_string());
    let token = ResumeToken::parse(d["resume_token"].as_str().unwrap()).unwrap();
    assert_eq!(json!(token.pos), d["checkpoint"]["pos"]);
    // The events' own resume_token is the row's position: `<GTID>:<row>`.
    let ev = rec.snapshot();
    assert_eq!(
        ev[1].resume_token,
        format!("{}:2", ev[0].resume_token.rsplit_once(':').unwrap().0)
    );
    // The running node's copy of the read position, which the server reports through probes.
    let status = c.status().details();
    assert_eq!(status["read_file"], d["read_file"]);
    assert!(status["read_pos"].is_u64());
    c.stop().await.unwrap();
    src.drop_db().await;
}

/// Two connectors with one `server_id`, as a user with exactly the guide's grants (which cannot
/// run `SHOW SLAVE HOSTS` on MariaDB ≥ 10.5.2, so `start()` cannot see the other): MariaDB lets
/// the newer registration in and disconnects the older one with error 4052. The disconnected
/// connector stops with the documented configuration error instead of reconnecting (which would
/// disconnect the other in turn, and so on); the other streams on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_server_id_is_a_configuration_error_without_reconnects() {
    let _files = BINLOG_FILES.read().await;
    let mut src = Source::new("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let user = format!("u{}", &aragora_testkit::random_hex()[..10]);
    src.exec(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'pw'"
    ))
    .await;
    src.exec(&format!(
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'127.0.0.1'"
    ))
    .await;
    src.exec(&format!(
        "GRANT SELECT ON {}.* TO '{user}'@'127.0.0.1'",
        src.name
    ))
    .await;
    let server_id = 3_000_000 + (rand_u32() % 1_000_000);
    let mut cfg = src.config(&["t"]);
    cfg.server_id = Some(server_id);
    let make =
        |id: &str| MySqlConnector::new(id, cfg.clone(), user.clone(), Some("pw".into())).unwrap();
    let first = make("my-dup-first");
    let rec1 = Arc::new(Recorder::default());
    first.add_change_handler(rec1.clone());
    first.start().await.unwrap();
    wait_until("the first streams", 20, || {
        first.status().phase() == "streaming"
    })
    .await;

    let second = make("my-dup-second");
    let rec2 = Arc::new(Recorder::default());
    second.add_change_handler(rec2.clone());
    second
        .start()
        .await
        .expect("this user cannot list the replicas, so start() cannot see the first");
    let ended = aragora_testkit::eventually(Duration::from_secs(20), || async {
        (!first.is_running().await).then_some(())
    })
    .await;
    assert!(ended.is_some(), "the disconnected connector stops");
    // Well past the first reconnect delays: no reconnect loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = first.health_check().await.details;
    assert!(!first.is_running().await);
    assert_eq!(d["phase"], json!("failed"), "{d:?}");
    assert_eq!(d["reconnects"], json!(0), "no reconnect loop: {d:?}");
    let err = d["source_error"].as_str().unwrap();
    assert!(
        err.starts_with(&format!(
            "config.server_id: {server_id} is already used by a replica of the source"
        )) && err.contains("4052")
            && err.contains("must be unique"),
        "{err}"
    );
    let d2 = second.status().details();
    assert_eq!(d2["phase"], json!("streaming"), "{d2:?}");
    assert_eq!(d2["reconnects"], json!(0), "{d2:?}");
    src.exec("INSERT INTO t VALUES (1)").await;
    wait_until("the remaining connector's event", 30, || rec2.len() == 1).await;
    assert_eq!(rec1.len(), 0);

    // With a user allowed to list the replicas, start() itself refuses the duplicate.
    let root = src.connector("my-dup-root", cfg.clone());
    root.add_change_handler(Arc::new(Recorder::default()));
    let e = root.start().await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("config.server_id: {server_id} is already used"))
            && e.contains("host `aragora-cdc-my-dup-second`"),
        "{e}"
    );
    assert_eq!(second.status().phase(), "streaming");
    second.stop().await.unwrap();
    src.exec(&format!("DROP USER '{user}'@'127.0.0.1'")).await;
    src.drop_db().await;
}

fn rand_u32() -> u32 {
    u32::from_str_radix(&aragora_testkit::random_hex()[..8], 16).unwrap()
}

// ---- MySQL-only paths, by fixtures -------------------------------------------------------------

/// `COM_BINLOG_DUMP_GTID` as MySQL documents it: command 0x1e, flags, server id, file name
/// length + name, position, then the GTID set: SID count, per SID 16 UUID bytes, interval count,
/// and half-open [start, end) intervals, all little-endian.
#[test]
fn mysql_gtid_sets_encode_for_com_binlog_dump_gtid() {
    use mysql_common::packets::ComBinlogDumpGtid;
    use mysql_common::proto::MySerialize;
    let set = MysqlGtidSet::parse(
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,\
         00000000-0000-0000-0000-000000000001:3",
    )
    .unwrap();
    let sids = set.to_sids();
    let mut cmd = Vec::new();
    ComBinlogDumpGtid::new(42)
        .with_sids(sids)
        .with_pos(4)
        .serialize(&mut cmd);
    let mut want = vec![0x1e];
    want.extend(4u16.to_le_bytes()); // flags: BINLOG_THROUGH_GTID
    want.extend(42u32.to_le_bytes()); // server id
    want.extend(0u32.to_le_bytes()); // file name length
    want.extend(4u64.to_le_bytes()); // position
    let mut data = Vec::new();
    data.extend(2u64.to_le_bytes());
    let mut uuid1 = [0u8; 16];
    uuid1[15] = 1;
    data.extend(uuid1);
    data.extend(1u64.to_le_bytes());
    data.extend(3u64.to_le_bytes());
    data.extend(4u64.to_le_bytes());
    data.extend([
        0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95,
        0x62,
    ]);
    data.extend(2u64.to_le_bytes());
    data.extend(1u64.to_le_bytes());
    data.extend(6u64.to_le_bytes());
    data.extend(7u64.to_le_bytes());
    data.extend(8u64.to_le_bytes());
    want.extend((data.len() as u32).to_le_bytes());
    want.extend(data);
    assert_eq!(cmd, want);
}

/// MySQL stores JSON columns in its binary format (MariaDB stores text); decoded to JSON values.
/// Fixture: `{"a": 1, "b": "x"}` as MySQL writes it (small object, inlined int16, string).
#[test]
fn mysql_binary_json_decodes() {
    use mysql_common::io::ParseBuf;
    let bytes: Vec<u8> = vec![
        0x00, // small object
        0x02, 0x00, 0x16, 0x00, // 2 members, 22 bytes
        0x12, 0x00, 0x01, 0x00, 0x13, 0x00, 0x01, 0x00, // keys at 18 and 19, length 1
        0x05, 0x01, 0x00, // "a": int16 1, inlined
        0x0c, 0x14, 0x00, // "b": string at 20
        b'a', b'b', 0x01, b'x',
    ];
    let v: mysql_async::binlog::jsonb::Value<'_> = ParseBuf(&bytes).parse(()).unwrap();
    let json = aragora_cdc::mysql::decode::jsonb_to_json(v).unwrap();
    assert_eq!(json, json!({"a": 1, "b": "x"}));
}
