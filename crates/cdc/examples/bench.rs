//! CDC throughput benchmark (DESIGN.md §9): rows/s from PostgreSQL into a no-op handler and into
//! the Knowledge Mound, in both capture modes, next to `pg_recvlogical` reading the same WAL.
//!
//! ```sh
//! scripts/bench-cdc            # = cargo run --release -p aragora-cdc --example bench
//! ```
//! Environment: `ARAGORA_TEST_PG_URL` (default: the harness cluster, started if needed),
//! `BENCH_TXNS` (default 100) × 1000-row transactions per measurement, `BENCH_RUNS` (default 3),
//! `PG_RECVLOGICAL` (default /usr/lib/postgresql/15/bin/pg_recvlogical). Prints JSON; medians
//! are compared with /work/shared/TARGETS.md.
//!
//! - logical: the WAL is written first (connector stopped, slots holding it), then the connector
//!   and `pg_recvlogical` each read it from the same start LSN to the same end LSN.
//! - trigger: end to end — the writer runs while the connector streams; the clock runs from the
//!   first write to the last event acknowledged, so it includes the triggers' cost in the source.

use aragora_cdc::postgres::{PgMode, PostgresConfig, PostgresConnector, SnapshotMode};
use aragora_cdc::{
    ChangeEvent, ChangeHandler, Connector, HandlerError, KnowledgeMoundHandler, StoreKnowledgeSink,
};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

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

struct Cluster {
    host: String,
    port: u16,
    user: String,
    admin_url: String,
}

impl Cluster {
    fn from_env() -> Cluster {
        let url = aragora_testkit::pg_admin_url();
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
        let (user, hostpart) = rest.split_once('@').expect("user@host");
        let hostport = hostpart.split('/').next().unwrap();
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
        Cluster {
            host: host.into(),
            port: port.parse().unwrap(),
            user: user.split(':').next().unwrap().into(),
            admin_url: url.clone(),
        }
    }

    async fn client(&self, db: &str) -> Client {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(db);
        let (client, conn) = cfg.connect(NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    async fn create_db(&self, name: &str) {
        self.client("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }

    async fn drop_db(&self, name: &str) {
        let c = self.client("postgres").await;
        let _ = c
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
                &[&name],
            )
            .await;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .unwrap();
    }

    fn url(&self, db: &str) -> String {
        let base = self.admin_url.rsplit_once('/').unwrap().0;
        format!("{base}/{db}")
    }
}

fn name(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::random::<u32>())
}

async fn write_load(c: &Client, txns: usize, offset: usize) {
    for t in 0..txns {
        let start = offset + t * ROWS_PER_TXN + 1;
        c.batch_execute(&format!(
            "INSERT INTO t SELECT g, 'payload ' || g FROM generate_series({start}, {}) g",
            start + ROWS_PER_TXN - 1
        ))
        .await
        .unwrap();
    }
}

/// A migrated Aragora database for the mound: PostgreSQL (on the cluster) or SQLite.
async fn mound_db(
    cluster: &Cluster,
    kind: &str,
) -> (aragora_store::Db, Option<String>, Option<tempfile::TempDir>) {
    match kind {
        "postgres" => {
            let n = name("bench_km");
            cluster.create_db(&n).await;
            let db = aragora_store::Db::connect(&cluster.url(&n), &Default::default())
                .await
                .unwrap();
            aragora_store::migrate::run(&db).await.unwrap();
            (db, Some(n), None)
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
            (db, None, Some(dir))
        }
    }
}

fn connector(
    cluster: &Cluster,
    db: &str,
    mode: PgMode,
    handler: Arc<dyn ChangeHandler>,
) -> PostgresConnector {
    let mut cfg = PostgresConfig::new(cluster.host.clone(), db.to_string(), ["t"]);
    cfg.port = cluster.port;
    cfg.mode = mode;
    cfg.snapshot = SnapshotMode::Never;
    cfg.slot_name = Some(format!("{db}_c"));
    cfg.batch_size = 2000;
    cfg.poll_interval_seconds = 0.05;
    let c = PostgresConnector::new(format!("bench-{db}"), cfg, cluster.user.clone(), None).unwrap();
    c.add_change_handler(handler);
    c
}

async fn wait_for(count: &AtomicUsize, n: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while count.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// Logical mode: rows/s of the connector (no-op or mound) and of pg_recvlogical on the same WAL.
async fn logical_run(cluster: &Cluster, txns: usize, sink: Option<&str>) -> Value {
    let db = name("bench_lg");
    cluster.create_db(&db).await;
    let c = cluster.client(&db).await;
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, payload text NOT NULL)")
        .await
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (mound, mound_name, _dir) = match sink {
        Some(kind) => {
            let (db, n, d) = mound_db(cluster, kind).await;
            (Some(db), n, d)
        }
        None => (None, None, None),
    };
    let inner: Option<Arc<dyn ChangeHandler>> = mound.as_ref().map(|m| {
        Arc::new(KnowledgeMoundHandler::new(Arc::new(
            StoreKnowledgeSink::new(m.clone(), "bench"),
        ))) as Arc<dyn ChangeHandler>
    });
    let conn = connector(
        cluster,
        &db,
        PgMode::Logical,
        Arc::new(Counted(inner, count.clone())),
    );
    conn.start().await.unwrap(); // creates publication + slot
    conn.stop().await.unwrap();
    // pg_recvlogical's slot starts at the same point: nothing was written since.
    let recv_slot = format!("{db}_r");
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&recv_slot],
    )
    .await
    .unwrap();
    write_load(&c, txns, 0).await;
    let end: String = c
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let rows = txns * ROWS_PER_TXN;

    let started = Instant::now();
    conn.start().await.unwrap();
    let ok = wait_for(&count, rows, Duration::from_secs(600)).await;
    let ours = started.elapsed().as_secs_f64();
    conn.stop().await.unwrap();
    assert!(ok, "connector did not deliver {rows} rows");

    let mut result = json!({"rows": rows, "connector_seconds": ours,
        "connector_rows_per_s": rows as f64 / ours});
    if sink.is_none() {
        let bin = std::env::var("PG_RECVLOGICAL")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_recvlogical".into());
        let publication = conn.config().publication_for(&format!("bench-{db}"));
        let started = Instant::now();
        let out = tokio::process::Command::new(&bin)
            .args([
                "-h",
                &cluster.host,
                "-p",
                &cluster.port.to_string(),
                "-U",
                &cluster.user,
            ])
            .args([
                "-d",
                &db,
                "--slot",
                &recv_slot,
                "--start",
                "--no-loop",
                "-E",
                &end,
            ])
            .args(["-o", "proto_version=1", "-o"])
            .arg(format!("publication_names={publication}"))
            .args(["-f", "/dev/null"])
            .output()
            .await
            .expect("run pg_recvlogical");
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "pg_recvlogical: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        result["pg_recvlogical_seconds"] = json!(secs);
        result["pg_recvlogical_rows_per_s"] = json!(rows as f64 / secs);
    }
    conn.teardown().await.unwrap();
    drop(c);
    cluster.drop_db(&db).await;
    if let Some(m) = mound {
        m.close().await;
    }
    if let Some(n) = mound_name {
        cluster.drop_db(&n).await;
    }
    result
}

/// Trigger mode, end to end: writes (through the triggers) while the connector streams.
async fn trigger_run(cluster: &Cluster, txns: usize, sink: Option<&str>) -> Value {
    let db = name("bench_tr");
    cluster.create_db(&db).await;
    let c = cluster.client(&db).await;
    c.batch_execute("CREATE TABLE t (id bigint PRIMARY KEY, payload text NOT NULL)")
        .await
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (mound, mound_name, _dir) = match sink {
        Some(kind) => {
            let (db, n, d) = mound_db(cluster, kind).await;
            (Some(db), n, d)
        }
        None => (None, None, None),
    };
    let inner: Option<Arc<dyn ChangeHandler>> = mound.as_ref().map(|m| {
        Arc::new(KnowledgeMoundHandler::new(Arc::new(
            StoreKnowledgeSink::new(m.clone(), "bench"),
        ))) as Arc<dyn ChangeHandler>
    });
    let conn = connector(
        cluster,
        &db,
        PgMode::Trigger,
        Arc::new(Counted(inner, count.clone())),
    );
    conn.start().await.unwrap();
    let rows = txns * ROWS_PER_TXN;
    let started = Instant::now();
    write_load(&c, txns, 0).await;
    let writer_secs = started.elapsed().as_secs_f64();
    let ok = wait_for(&count, rows, Duration::from_secs(600)).await;
    let total = started.elapsed().as_secs_f64();
    assert!(ok, "connector did not deliver {rows} rows");
    conn.stop().await.unwrap();
    conn.teardown().await.unwrap();
    drop(c);
    cluster.drop_db(&db).await;
    if let Some(m) = mound {
        m.close().await;
    }
    if let Some(n) = mound_name {
        cluster.drop_db(&n).await;
    }
    json!({"rows": rows, "end_to_end_seconds": total, "rows_per_s": rows as f64 / total,
           "writer_seconds": writer_secs, "writer_rows_per_s": rows as f64 / writer_secs})
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let txns: usize = std::env::var("BENCH_TXNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let cluster = Cluster::from_env();
    let pick =
        |runs: &[Value], key: &str| median(runs.iter().map(|r| r[key].as_f64().unwrap()).collect());

    let mut lg_noop = Vec::new();
    let mut lg_km_pg = Vec::new();
    let mut lg_km_sqlite = Vec::new();
    let mut tr_noop = Vec::new();
    let mut tr_km_pg = Vec::new();
    let mut tr_km_sqlite = Vec::new();
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        lg_noop.push(logical_run(&cluster, txns, None).await);
        lg_km_pg.push(logical_run(&cluster, txns, Some("postgres")).await);
        lg_km_sqlite.push(logical_run(&cluster, txns, Some("sqlite")).await);
        tr_noop.push(trigger_run(&cluster, txns, None).await);
        tr_km_pg.push(trigger_run(&cluster, txns, Some("postgres")).await);
        tr_km_sqlite.push(trigger_run(&cluster, txns, Some("sqlite")).await);
    }
    let ratios: Vec<f64> = lg_noop
        .iter()
        .map(|r| {
            r["connector_rows_per_s"].as_f64().unwrap()
                / r["pg_recvlogical_rows_per_s"].as_f64().unwrap()
        })
        .collect();
    let ratio = median(ratios);
    let lg_noop_rate = pick(&lg_noop, "connector_rows_per_s");
    let lg_km_rate = pick(&lg_km_pg, "connector_rows_per_s");
    let tr_km_rate = pick(&tr_km_pg, "rows_per_s");
    let out = json!({
        "benchmark": "cdc_postgres",
        "rows_per_transaction": ROWS_PER_TXN,
        "rows_per_measurement": txns * ROWS_PER_TXN,
        "runs": runs,
        "logical": {
            "noop_rows_per_s": lg_noop_rate,
            "pg_recvlogical_rows_per_s": pick(&lg_noop, "pg_recvlogical_rows_per_s"),
            "ratio_to_pg_recvlogical": ratio,
            "knowledge_mound_postgres_rows_per_s": lg_km_rate,
            "knowledge_mound_sqlite_rows_per_s": pick(&lg_km_sqlite, "connector_rows_per_s"),
            "target": {"ratio_to_pg_recvlogical": 0.8, "knowledge_mound_rows_per_s": 30000},
            "pass": {"ratio": ratio >= 0.8, "knowledge_mound": lg_km_rate >= 30000.0},
            "runs": {"noop": lg_noop, "knowledge_mound_postgres": lg_km_pg, "knowledge_mound_sqlite": lg_km_sqlite},
        },
        "trigger": {
            "noop_rows_per_s": pick(&tr_noop, "rows_per_s"),
            "writer_rows_per_s": pick(&tr_noop, "writer_rows_per_s"),
            "knowledge_mound_postgres_rows_per_s": tr_km_rate,
            "knowledge_mound_sqlite_rows_per_s": pick(&tr_km_sqlite, "rows_per_s"),
            "target": {"knowledge_mound_rows_per_s": 20000},
            "pass": {"knowledge_mound": tr_km_rate >= 20000.0},
            "runs": {"noop": tr_noop, "knowledge_mound_postgres": tr_km_pg, "knowledge_mound_sqlite": tr_km_sqlite},
        },
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
