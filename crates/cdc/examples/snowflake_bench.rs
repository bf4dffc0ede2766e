//! Snowflake connector overhead: events/s from a loopback fake of the SQL API v2 (the one the
//! tests use: JWT checked on every request, result partitions) through the connector (window
//! planning, `CHANGES` statement, partitions, typed conversion, update pairing, event building,
//! dispatcher, checkpoints) into a no-op handler, next to a plain HTTP client reading the same
//! `CHANGES` statement's rows from the same fake in the same run. No Snowflake runs here, so
//! this measures the connector's own cost over loopback HTTP, not a warehouse's. Each run also
//! reads the same rows in stream mode (a new stream with `SHOW_INITIAL_ROWS`: consuming
//! transaction into the staging table, read back, dispatch, unstaging).
//!
//! ```sh
//! cargo run --release -p aragora-cdc --example snowflake_bench
//! ```
//! Environment: `BENCH_ROWS` (default 100,000 inserted rows in one window), `BENCH_PARTITION`
//! (rows per result partition, default 10,000), `BENCH_RUNS` (default 3, at least 3). Prints one
//! JSON object with every run and the medians.

#[path = "../tests/support/snowflake_fake.rs"]
mod sf_fake;

use aragora_cdc::snowflake::api::KeyPair;
use aragora_cdc::snowflake::{
    SnowflakeConfig, SnowflakeConnector, SnowflakeMode, WindowToken, changes_sql,
};
use aragora_cdc::{
    ChangeEvent, ChangeHandler, Checkpoint, CheckpointStore, Connector, HandlerError,
    MemoryCheckpoints,
};
use async_trait::async_trait;
use serde_json::{Value, json};
use sf_fake::{KEY, T, commit, fake, row};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Window the changes fall in: rows committed at `COMMIT_MS`, read over `[FROM_MS, TO_MS)`.
const FROM_MS: i64 = 950_000;
const COMMIT_MS: i64 = 960_000;
const TO_MS: i64 = 1_000_000;

/// Counts events and wakes the benchmark once `want` arrived; does nothing else.
struct Counting {
    seen: AtomicUsize,
    want: usize,
    done: Notify,
}

#[async_trait]
impl ChangeHandler for Counting {
    async fn handle(&self, _e: &ChangeEvent) -> Result<(), HandlerError> {
        self.add(1);
        Ok(())
    }
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        self.add(events.len());
        Ok(())
    }
}

impl Counting {
    fn add(&self, n: usize) {
        if self.seen.fetch_add(n, Ordering::Relaxed) + n >= self.want {
            self.done.notify_one();
        }
    }
}

/// Starts `c` with a counting handler and returns the seconds until all `n` events arrived
/// (checking none arrived twice), after stopping it.
async fn deliver_all(c: &SnowflakeConnector, n: usize) -> f64 {
    let h = Arc::new(Counting {
        seen: AtomicUsize::new(0),
        want: n,
        done: Notify::new(),
    });
    c.add_change_handler(h.clone());
    let t0 = Instant::now();
    c.start().await.unwrap();
    h.done.notified().await;
    let secs = t0.elapsed().as_secs_f64();
    c.stop().await.unwrap();
    assert_eq!(h.seen.load(Ordering::Relaxed), n, "no duplicates");
    secs
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

async fn json_of(req: reqwest::RequestBuilder) -> Value {
    let res = req.send().await.unwrap().error_for_status().unwrap();
    res.json().await.unwrap()
}

/// The plain client: one `CHANGES` statement, then every further partition, counting rows. The
/// JWT is signed once (a client may reuse it for an hour); the connector signs per request.
async fn raw_read(http: &reqwest::Client, base: &str, jwt: &str) -> usize {
    let auth = |r: reqwest::RequestBuilder| {
        r.bearer_auth(jwt)
            .header("X-Snowflake-Authorization-Token-Type", "KEYPAIR_JWT")
            .header("Accept", "application/json")
    };
    let statement = json!({"statement": changes_sql(T, FROM_MS, TO_MS), "timeout": 120});
    let url = format!(
        "{base}/api/v2/statements?requestId={}",
        uuid::Uuid::new_v4()
    );
    let first = json_of(auth(http.post(url)).json(&statement)).await;
    let handle = first["statementHandle"].as_str().unwrap().to_string();
    let partitions = first["resultSetMetaData"]["partitionInfo"]
        .as_array()
        .unwrap()
        .len();
    let mut rows = first["data"].as_array().unwrap().len();
    for p in 1..partitions {
        let url = format!("{base}/api/v2/statements/{handle}?partition={p}");
        rows += json_of(auth(http.get(url))).await["data"]
            .as_array()
            .unwrap()
            .len();
    }
    rows
}

#[tokio::main]
async fn main() {
    let n = env("BENCH_ROWS", 100_000);
    let partition = env("BENCH_PARTITION", 10_000);
    let runs = env("BENCH_RUNS", 3).max(3);

    let (fake, base) = fake().await;
    commit(&fake, FROM_MS - 1, |_| {});
    commit(&fake, COMMIT_MS, |rows| {
        for i in 0..n as i64 {
            rows.insert(format!("r{i}"), row(i, &format!("user {i}")));
        }
    });
    {
        let mut f = fake.lock();
        f.tables.get_mut(T).unwrap().tracked = true;
        f.partition_size = partition;
        f.clock = TO_MS;
    }

    let http = reqwest::Client::new();
    let jwt = KeyPair::from_pem(KEY)
        .unwrap()
        .jwt("testacct", "cdc_user", aragora_core::time::now_ms() / 1000)
        .unwrap();
    let (mut raw, mut conn, mut stream) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t0 = Instant::now();
        let got = raw_read(&http, &base, &jwt).await;
        assert_eq!(got, n, "the plain client read every change");
        raw.push(n as f64 / t0.elapsed().as_secs_f64());
        // Finished statements' results are kept by the fake; drop them so runs start alike.
        fake.lock().handles.clear();

        // Resume from before the commit, as after a stop.
        let cps = Arc::new(MemoryCheckpoints::new());
        let from = Checkpoint {
            resume_token: WindowToken {
                start: FROM_MS,
                end: None,
            }
            .render(),
            sequence_number: 0,
            snapshot_done: true,
        };
        cps.save("bench", &from, &[]).await.unwrap();
        let mut cfg = SnowflakeConfig::new("testacct", "app", ["users"]);
        cfg.base_url = Some(base.clone());
        cfg.poll_interval_seconds = 0.01;
        cfg.window_lag_seconds = 0.0;
        cfg.primary_keys.insert("users".into(), vec!["id".into()]);
        let mut c = SnowflakeConnector::new("bench", cfg, "cdc_user", KEY)
            .unwrap()
            .with_checkpoints(cps.clone());
        c.api_mut().unwrap().poll = Duration::from_millis(5);
        conn.push(n as f64 / deliver_all(&c, n).await);
        fake.lock().handles.clear();

        // Stream mode: a new stream with SHOW_INITIAL_ROWS holds all n rows; one consuming
        // transaction stages them, then they are read back, dispatched and unstaged.
        let id = format!("bench-stream-{}", stream.len());
        let mut cfg = SnowflakeConfig::new("testacct", "app", ["users"]);
        cfg.base_url = Some(base.clone());
        cfg.poll_interval_seconds = 0.01;
        cfg.primary_keys.insert("users".into(), vec!["id".into()]);
        cfg.mode = SnowflakeMode::Stream;
        cfg.snapshot = true;
        let mut c = SnowflakeConnector::new(&id, cfg, "cdc_user", KEY)
            .unwrap()
            .with_checkpoints(Arc::new(MemoryCheckpoints::new()));
        c.api_mut().unwrap().poll = Duration::from_millis(5);
        stream.push(n as f64 / deliver_all(&c, n).await);
        c.teardown().await.unwrap();
        let mut f = fake.lock();
        f.handles.clear();
        f.log.clear();
    }
    assert_eq!(fake.lock().jwt_rejections, 0);
    let (r, c, s) = (
        median(raw.clone()),
        median(conn.clone()),
        median(stream.clone()),
    );
    let out = json!({
        "benchmark": "snowflake_cdc_connector_vs_plain_http_client",
        "source": "loopback fake of the SQL API v2 (no Snowflake)",
        "events": n,
        "rows_per_partition": partition,
        "runs": runs,
        "plain_client_rows_per_s": r.round(),
        "connector_noop_events_per_s": c.round(),
        "connector_share_of_plain_client": (c / r * 1000.0).round() / 1000.0,
        "plain_client_runs": raw.iter().map(|v| v.round()).collect::<Vec<_>>(),
        "connector_runs": conn.iter().map(|v| v.round()).collect::<Vec<_>>(),
        "stream_mode_noop_events_per_s": s.round(),
        "stream_mode_share_of_plain_client": (s / r * 1000.0).round() / 1000.0,
        "stream_mode_runs": stream.iter().map(|v| v.round()).collect::<Vec<_>>(),
        "target": "none in TARGETS.md for Snowflake; reported as the connector's share of the plain client",
    });
    println!("{out}");
}
