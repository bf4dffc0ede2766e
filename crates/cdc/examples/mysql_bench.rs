//! MySQL/MariaDB CDC throughput: rows/s from the binlog into a no-op handler and into the
//! Knowledge Mound, next to `mariadb-binlog --read-from-remote-server` reading the same binlog
//! range in the same run.
//!
//! ```sh
//! scripts/bench-cdc-mysql      # = cargo run --release -p aragora-cdc --example mysql_bench
//! ```
//! Environment: `ARAGORA_TEST_MYSQL_URL` (default: the harness MariaDB, started if needed),
//! `ARAGORA_TEST_PG_URL` (for the PostgreSQL mound; default: the harness cluster), `BENCH_TXNS`
//! (default 200) × 1000-row transactions, `BENCH_RUNS` (default 3), `BENCH_SKIP_MOUND=1` (reader
//! and `mariadb-binlog` only, for profiling). Prints JSON with medians,
//! compared with the MariaDB row of /work/shared/TARGETS.md.
//!
//! The binlog is written once (FLUSH BINARY LOGS first, so the range is one file); every
//! measurement then reads that same range: the connector from a checkpoint at its start (the
//! clock runs from `start()` to the last event acknowledged), `mariadb-binlog` from the same
//! start offset to the same end offset, once as invoked plainly (events printed as base64
//! BINLOG statements) and once with `-v --base64-output=DECODE-ROWS` (rows decoded to text, the
//! work closest to ours). The initial snapshot of the same table (a first start) is timed next
//! to the `mariadb` client reading the same rows in key order (`--quick --batch`).

use aragora_cdc::mysql::gtid::{Flavor, ResumeToken};
use aragora_cdc::mysql::{MySqlConfig, MySqlConnector};
use aragora_cdc::{
    ChangeEvent, ChangeHandler, Checkpoint, CheckpointStore, Connector, HandlerError,
    KnowledgeMoundHandler, MemoryCheckpoints, StoreKnowledgeSink,
};
use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row};
use serde_json::json;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS_PER_TXN: usize = 1000;

struct Counted(Option<Arc<dyn ChangeHandler>>, Arc<AtomicUsize>);

#[async_trait]
impl ChangeHandler for Counted {
    async fn handle(&self, e: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(e)).await
    }
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        if let Some(h) = &self.0 {
            h.handle_batch(events).await?;
        }
        self.1.fetch_add(events.len(), Ordering::Relaxed);
        Ok(())
    }
}

fn rand_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

struct Source {
    opts: Opts,
    host: String,
    port: u16,
    db: String,
    file: String,
    start: u64,
    end: u64,
    gtid: String,
    rows: usize,
}

async fn prepare(txns: usize) -> Source {
    let url = aragora_testkit::mysql_url();
    let base = Opts::from_url(&url).expect("mysql url");
    let host = base.ip_or_hostname().to_string();
    let port = base.tcp_port();
    let opts: Opts = OptsBuilder::from_opts(base).prefer_socket(false).into();
    let mut c = Conn::new(opts.clone()).await.unwrap();
    let db = format!("bench_{}", rand_hex());
    c.query_drop(format!("CREATE DATABASE {db}")).await.unwrap();
    c.query_drop(format!(
        "CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, payload VARCHAR(100) NOT NULL, n INT NOT NULL)"
    ))
    .await
    .unwrap();
    c.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let status = |r: Row| -> (String, u64) { (r.get(0).unwrap(), r.get(1).unwrap()) };
    let (file, start) = status(
        c.query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .expect("binlog on"),
    );
    let gtid: Option<String> = c
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), start))
        .await
        .unwrap();
    let started = Instant::now();
    for t in 0..txns {
        let a = t * ROWS_PER_TXN + 1;
        let b = a + ROWS_PER_TXN - 1;
        c.query_drop(format!(
            "INSERT INTO {db}.t SELECT seq, CONCAT('payload number ', seq), seq % 1000 \
             FROM seq_{a}_to_{b}"
        ))
        .await
        .unwrap();
    }
    eprintln!(
        "wrote {} rows in {:.1}s",
        txns * ROWS_PER_TXN,
        started.elapsed().as_secs_f64()
    );
    let (file2, end) = status(c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap());
    assert_eq!(
        file, file2,
        "the binlog rotated during the load; lower BENCH_TXNS"
    );
    Source {
        opts,
        host,
        port,
        db,
        file,
        start,
        end,
        gtid: gtid.unwrap_or_default(),
        rows: txns * ROWS_PER_TXN,
    }
}

/// Drops a throwaway PostgreSQL database this benchmark created (each holds ~200 MB).
async fn drop_pg_db(name: &str) {
    let (client, conn) =
        tokio_postgres::connect(&aragora_testkit::pg_admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    if let Err(e) = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("could not drop {name}: {e}");
    }
}

/// A migrated Aragora database for the mound (and the PostgreSQL database's name, to drop).
async fn mound_db(kind: &str) -> (aragora_store::Db, Option<tempfile::TempDir>, Option<String>) {
    match kind {
        "postgres" => {
            let admin = aragora_testkit::pg_admin_url();
            let name = format!("bench_km_{}", rand_hex());
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
            let db = aragora_store::Db::connect(&url, &Default::default())
                .await
                .unwrap();
            aragora_store::migrate::run(&db).await.unwrap();
            (db, None, Some(name))
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let db = aragora_store::Db::connect(
                &aragora_store::Db::sqlite_url_in(dir.path()),
                &Default::default(),
            )
            .await
            .unwrap();
            aragora_store::migrate::run(&db).await.unwrap();
            (db, Some(dir), None)
        }
    }
}

/// PostgreSQL alone writing the same number of mound items (the content and metadata shapes the
/// connector writes for these rows) with one `INSERT … SELECT` into a fresh, migrated
/// `knowledge_items`: the server's own cost (tsvector, GIN and B-tree upkeep), no client at all.
async fn pg_floor(rows: usize) -> f64 {
    let admin = aragora_testkit::pg_admin_url();
    let name = format!("bench_floor_{}", rand_hex());
    let (admin_client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    admin_client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    {
        let db = aragora_store::Db::connect(&url, &Default::default())
            .await
            .unwrap();
        aragora_store::migrate::run(&db).await.unwrap();
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let sql = format!(
        "INSERT INTO knowledge_items (id, workspace, source_type, source_key, content, metadata, \
         confidence, created_at, updated_at) \
         SELECT 'kn-' || md5(g::text), 'bench', 'cdc', 'bench-0123456789ab/t/{{\"id\":' || g || '}}', \
         E'table: t\\nid: ' || g || E'\\nn: ' || (g % 1000) || E'\\npayload: payload number ' || g || E'\\n', \
         '{{\"title\":\"t ' || g || '\",\"connector_id\":\"bench-0123456789ab\",\"source\":\"mysql\",\
         \"database\":\"bench_0123456789ab\",\"table\":\"t\",\"primary_key\":{{\"id\":' || g || '}},\
         \"operation\":\"INSERT\",\"event_id\":\"chg-' || md5(g::text) || '\",\"sequence_number\":' || g || ',\
         \"timestamp\":\"2026-11-26T16:00:00Z\",\"data\":{{\"id\":' || g || ',\"n\":' || (g % 1000) || ',\
         \"payload\":\"payload number ' || g || '\"}}}}', 1, 0, 0 FROM generate_series(1, {rows}) g"
    );
    let started = Instant::now();
    client.batch_execute(&sql).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    drop(client);
    let _ = task.await;
    drop_pg_db(&name).await;
    rows as f64 / secs
}

/// The connector reading the range: rows/s from `start()` to the last acknowledgement, and this
/// process's CPU time per row over the same span (steadier than wall time on a shared machine;
/// `mariadb-binlog` and the databases are other processes).
async fn connector_run(src: &Source, mound: Option<&str>) -> (f64, f64) {
    let count = Arc::new(AtomicUsize::new(0));
    let (db, _dir, pg_name) = match mound {
        Some(kind) => {
            let (db, dir, name) = mound_db(kind).await;
            (Some(db), dir, name)
        }
        None => (None, None, None),
    };
    let inner: Option<Arc<dyn ChangeHandler>> = db.as_ref().map(|m| {
        Arc::new(KnowledgeMoundHandler::new(Arc::new(
            StoreKnowledgeSink::new(m.clone(), "bench"),
        ))) as Arc<dyn ChangeHandler>
    });
    let id = format!("bench-{}", rand_hex());
    let store = Arc::new(MemoryCheckpoints::new());
    store
        .save(
            &id,
            &Checkpoint {
                resume_token: ResumeToken {
                    flavor: Flavor::Mariadb,
                    gtid: src.gtid.clone(),
                    file: src.file.clone(),
                    pos: src.start,
                    partial: None,
                    snapshot: None,
                }
                .render(),
                sequence_number: 0,
                snapshot_done: true,
            },
            &[],
        )
        .await
        .unwrap();
    let mut cfg = MySqlConfig::new(src.host.clone(), src.db.clone(), ["t"]);
    cfg.port = src.port;
    cfg.batch_size = 1000;
    let conn = MySqlConnector::new(id, cfg, src.opts.user().unwrap_or("root"), None)
        .unwrap()
        .with_checkpoints(store);
    conn.add_change_handler(Arc::new(Counted(inner, count.clone())));
    let (started, cpu0) = (Instant::now(), aragora_testkit::process_cpu_time());
    conn.start().await.unwrap();
    while count.load(Ordering::Relaxed) < src.rows {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "stalled at {} rows",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_per_row =
        (aragora_testkit::process_cpu_time() - cpu0).as_nanos() as f64 / src.rows as f64;
    conn.stop().await.unwrap();
    assert_eq!(count.load(Ordering::Relaxed), src.rows);
    drop(conn);
    if let Some(db) = db {
        db.writer().close().await;
        db.reader().close().await;
    }
    if let Some(name) = pg_name {
        drop_pg_db(&name).await;
    }
    (src.rows as f64 / secs, cpu_per_row)
}

/// The initial snapshot of the same table (a first start, `snapshot: initial`) into a no-op
/// handler: rows/s from `start()` until every row is acknowledged.
async fn snapshot_run(src: &Source) -> f64 {
    let count = Arc::new(AtomicUsize::new(0));
    let mut cfg = MySqlConfig::new(src.host.clone(), src.db.clone(), ["t"]);
    cfg.port = src.port;
    cfg.batch_size = 1000;
    let conn = MySqlConnector::new(
        format!("bench-snap-{}", rand_hex()),
        cfg,
        src.opts.user().unwrap_or("root"),
        None,
    )
    .unwrap()
    .with_checkpoints(Arc::new(MemoryCheckpoints::new()));
    conn.add_change_handler(Arc::new(Counted(None, count.clone())));
    let started = Instant::now();
    conn.start().await.unwrap();
    while count.load(Ordering::Relaxed) < src.rows {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "snapshot stalled"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    conn.stop().await.unwrap();
    src.rows as f64 / secs
}

/// The `mariadb` client reading the same rows in the same order (`--quick`, tab-separated text
/// to /dev/null): rows/s.
fn select_peer_run(src: &Source) -> f64 {
    let started = Instant::now();
    let out = std::process::Command::new("mariadb")
        .args([
            "--no-defaults",
            "--quick",
            "--batch",
            "--skip-column-names",
            &format!("--host={}", src.host),
            &format!("--port={}", src.port),
            "--user=root",
            "-e",
            &format!("SELECT id, payload, n FROM {}.t ORDER BY id", src.db),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run mariadb");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "mariadb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    src.rows as f64 / secs
}

/// `mariadb-binlog --read-from-remote-server` over the same range: rows/s.
fn peer_run(src: &Source, decode_rows: bool) -> f64 {
    let mut cmd = std::process::Command::new("mariadb-binlog");
    cmd.args([
        "--no-defaults",
        "--read-from-remote-server",
        &format!("--host={}", src.host),
        &format!("--port={}", src.port),
        "--user=root",
        &format!("--start-position={}", src.start),
        &format!("--stop-position={}", src.end),
    ]);
    if decode_rows {
        cmd.args(["-v", "--base64-output=DECODE-ROWS"]);
    }
    cmd.arg(&src.file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd.output().expect("run mariadb-binlog");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "mariadb-binlog: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    src.rows as f64 / secs
}

/// NaN (null in the JSON) when nothing was measured.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The cost of only building and dropping the guide's `ChangeEvent` for this table's rows, as the
/// connector builds them (id from the transaction's hashed prefix, the row and key maps, the
/// shared strings copied per event), from values already decoded: no socket, no binlog parsing,
/// no handler. Nanoseconds per row on one thread; whatever the reader does costs at least this.
fn event_build_floor(rows: usize) -> f64 {
    use aragora_cdc::{CdcSourceType, ChangeOperation, EventIdPrefix};
    use serde_json::{Map, Value};
    use std::fmt::Write;
    let columns = ["id".to_string(), "payload".to_string(), "n".to_string()];
    let (connector, database, table) =
        ("bench".to_string(), "bench_db".to_string(), "t".to_string());
    let (timestamp, txn) = ("2026-11-27T00:00:00Z".to_string(), "0-1-123456".to_string());
    let ids = EventIdPrefix::new(&connector, &format!("{txn}:"));
    let payload = std::hint::black_box("payload number 123456");
    let mut batch: Vec<ChangeEvent> = Vec::with_capacity(ROWS_PER_TXN);
    let (mut n, mut position) = (String::new(), String::new());
    let started = Instant::now();
    for i in 0..rows {
        let mut data = Map::new();
        data.insert(columns[0].clone(), Value::from(i as i64));
        data.insert(columns[1].clone(), Value::String(payload.to_string()));
        data.insert(columns[2].clone(), Value::from((i % 1000) as i64));
        let mut primary_key = Map::new();
        primary_key.insert(
            columns[0].clone(),
            data.get("id").cloned().unwrap_or(Value::Null),
        );
        n.clear();
        let _ = write!(n, "{}", i + 1);
        position.clear();
        position.push_str(&txn);
        position.push(':');
        position.push_str(&n);
        batch.push(ChangeEvent {
            id: ids.id(&n),
            source_type: CdcSourceType::Mysql,
            connector_id: connector.clone(),
            operation: ChangeOperation::Insert,
            timestamp: timestamp.clone(),
            database: database.clone(),
            table: table.clone(),
            data,
            old_data: Map::new(),
            primary_key,
            resume_token: position.clone(),
            sequence_number: i as i64,
        });
        if batch.len() == ROWS_PER_TXN {
            std::hint::black_box(&batch);
            batch.clear();
        }
    }
    drop(batch);
    started.elapsed().as_nanos() as f64 / rows as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let txns: usize = std::env::var("BENCH_TXNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // For profiling the reader alone.
    let skip_mound = std::env::var("BENCH_SKIP_MOUND").is_ok_and(|v| v == "1");
    let src = prepare(txns).await;
    let (mut noop, mut peer, mut peer_decoded, mut ratios) = (vec![], vec![], vec![], vec![]);
    let (mut noop_cpu, mut build_floor) = (vec![], vec![]);
    let (mut snap, mut select_peer) = (vec![], vec![]);
    let (mut km_sqlite, mut km_pg, mut pg_floor_runs) = (vec![], vec![], vec![]);
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        let (ours, cpu) = connector_run(&src, None).await;
        noop_cpu.push(cpu);
        build_floor.push(event_build_floor(src.rows));
        let theirs = peer_run(&src, false);
        noop.push(ours);
        peer.push(theirs);
        ratios.push(ours / theirs);
        peer_decoded.push(peer_run(&src, true));
        snap.push(snapshot_run(&src).await);
        select_peer.push(select_peer_run(&src));
        if skip_mound {
            continue;
        }
        km_sqlite.push(connector_run(&src, Some("sqlite")).await.0);
        km_pg.push(connector_run(&src, Some("postgres")).await.0);
        pg_floor_runs.push(pg_floor(src.rows).await);
    }
    let ratio = median(ratios.clone());
    let out = json!({
        "benchmark": "cdc_mysql",
        "server": "MariaDB (scripts/test-services)",
        "rows_per_transaction": ROWS_PER_TXN,
        "rows_per_measurement": src.rows,
        "binlog_bytes": src.end - src.start,
        "runs": runs,
        "noop_rows_per_s": median(noop.clone()),
        "noop_cpu_ns_per_row": median(noop_cpu.clone()),
        "event_build_floor_ns_per_row": median(build_floor.clone()),
        // The best ratio a reader could reach on one core if building the events were all it did.
        "ratio_ceiling_of_event_build_alone": 1e9 / median(build_floor.clone()) / median(peer.clone()),
        "mariadb_binlog_rows_per_s": median(peer.clone()),
        "ratio_to_mariadb_binlog": ratio,
        "mariadb_binlog_decode_rows_rows_per_s": median(peer_decoded.clone()),
        "ratio_to_mariadb_binlog_decode_rows": median(noop.clone()) / median(peer_decoded.clone()),
        "snapshot_noop_rows_per_s": median(snap.clone()),
        "mariadb_select_rows_per_s": median(select_peer.clone()),
        "snapshot_ratio_to_mariadb_select": median(snap.clone()) / median(select_peer.clone()),
        "knowledge_mound_sqlite_rows_per_s": median(km_sqlite.clone()),
        "knowledge_mound_postgres_rows_per_s": median(km_pg.clone()),
        "postgres_alone_insert_select_rows_per_s": median(pg_floor_runs.clone()),
        "target": {"ratio_to_mariadb_binlog": 0.5, "knowledge_mound_rows_per_s": 30000},
        "pass": {"ratio": ratio >= 0.5,
                 "knowledge_mound_sqlite": median(km_sqlite.clone()) >= 30000.0,
                 "knowledge_mound_postgres": median(km_pg.clone()) >= 30000.0},
        "samples": {"noop": noop, "noop_cpu_ns_per_row": noop_cpu, "event_build_floor_ns_per_row": build_floor, "mariadb_binlog": peer, "mariadb_binlog_decode_rows": peer_decoded,
                    "ratio": ratios, "snapshot_noop": snap, "mariadb_select": select_peer,
                    "knowledge_mound_sqlite": km_sqlite,
                    "knowledge_mound_postgres": km_pg,
                    "postgres_alone_insert_select": pg_floor_runs},
    });
    let mut c = Conn::new(src.opts.clone()).await.unwrap();
    let _ = c.query_drop(format!("DROP DATABASE {}", src.db)).await;
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
