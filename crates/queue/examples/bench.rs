//! Queue benchmark: jobs/s for enqueue → claim → complete with 1 and 4 workers on SQLite and
//! PostgreSQL, and the median claim latency (enqueue commit → claimed) of an idle queue.
//!
//! Run: `cargo run --release -p aragora-queue --example bench` (starts the throwaway PostgreSQL via
//! scripts/test-services if ARAGORA_TEST_PG_URL is unset). Prints one JSON object per line.

use aragora_queue::{ClaimedJob, JobError, JobHandler, NewJob, Queue, WorkerConfig, spawn_worker};
use aragora_store::{Db, DbOptions, Row, migrate, sqlx};
use aragora_testkit::{Backend, fresh_database};
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const JOBS: u64 = 20_000;
const ENQUEUE_BATCH: usize = 100;
const RUNS: usize = 3;

struct Counting {
    done: AtomicU64,
    last_handled: std::sync::Mutex<Option<Instant>>,
    target: u64,
    finished: Notify,
}

#[async_trait]
impl JobHandler for Counting {
    async fn handle(&self, _job: ClaimedJob) -> Result<(), JobError> {
        *self.last_handled.lock().unwrap() = Some(Instant::now());
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.finished.notify_one();
        }
        Ok(())
    }
}

async fn remaining(q: &Queue) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM jobs")
        .fetch_one(q.db().reader())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

fn config(max: usize) -> WorkerConfig {
    let mut c = WorkerConfig::new("bench", "bench", max);
    c.poll_interval = Duration::from_millis(200);
    c
}

/// Producer and workers run together; the clock stops when the last job is deleted.
async fn throughput(backend: Backend, workers: usize) -> f64 {
    let t = fresh_database(backend).await;
    let db = Db::connect(
        &t.url,
        &DbOptions {
            max_connections: 16,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    migrate::run(&db).await.unwrap();
    let q = Queue::new(db.clone());
    let stop = CancellationToken::new();
    q.spawn_pg_listener(stop.clone());
    let handler = Arc::new(Counting {
        done: AtomicU64::new(0),
        last_handled: Default::default(),
        target: JOBS,
        finished: Notify::new(),
    });
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            spawn_worker(
                Queue::new(db.clone()),
                config(64),
                handler.clone(),
                stop.clone(),
            )
        })
        .collect();
    let started = Instant::now();
    let producer = {
        let q = q.clone();
        tokio::spawn(async move {
            let batch: Vec<NewJob> = (0..ENQUEUE_BATCH)
                .map(|i| NewJob::new("bench", json!({ "i": i })))
                .collect();
            for _ in 0..(JOBS as usize / ENQUEUE_BATCH) {
                q.enqueue_many(&batch).await.unwrap();
            }
        })
    };
    producer.await.unwrap();
    handler.finished.notified().await;
    while remaining(&q).await > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    for h in handles {
        h.join().await;
    }
    db.close().await;
    JOBS as f64 / secs
}

/// Idle queue: one job at a time, measuring from the start of the enqueue call (so the commit is
/// included) to the moment the handler runs — an upper bound on the claim latency.
async fn claim_latency(backend: Backend) -> f64 {
    let t = fresh_database(backend).await;
    let db = Db::connect(&t.url, &DbOptions::default()).await.unwrap();
    migrate::run(&db).await.unwrap();
    let q = Queue::new(db.clone());
    let stop = CancellationToken::new();
    q.spawn_pg_listener(stop.clone());
    let handler = Arc::new(Counting {
        done: AtomicU64::new(0),
        last_handled: Default::default(),
        target: 200,
        finished: Notify::new(),
    });
    let w = spawn_worker(
        Queue::new(db.clone()),
        config(4),
        handler.clone(),
        stop.clone(),
    );
    let mut samples = Vec::new();
    for i in 0..200u64 {
        let before = Instant::now();
        q.enqueue(&NewJob::new("bench", json!({}))).await.unwrap();
        while handler.done.load(Ordering::Relaxed) <= i {
            tokio::task::yield_now().await;
        }
        let handled = handler.last_handled.lock().unwrap().expect("handled");
        samples.push(handled.duration_since(before).as_secs_f64() * 1000.0);
    }
    stop.cancel();
    w.join().await;
    db.close().await;
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let name = if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        };
        for workers in [1usize, 4] {
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                runs.push(throughput(backend, workers).await);
            }
            let target = match (backend, workers) {
                (Backend::Sqlite, _) => 5_000.0,
                (Backend::Postgres, 4) => 10_000.0,
                _ => 0.0,
            };
            let m = median(runs.clone());
            println!(
                "{}",
                json!({"bench": "queue_throughput", "backend": name, "workers": workers, "jobs": JOBS,
                       "enqueue_batch": ENQUEUE_BATCH, "jobs_per_sec_median": m.round(), "runs": runs.iter().map(|r| r.round()).collect::<Vec<_>>(),
                       "target_jobs_per_sec": target, "pass": target == 0.0 || m >= target})
            );
        }
        let mut lats = Vec::new();
        for _ in 0..RUNS {
            lats.push(claim_latency(backend).await);
        }
        let m = median(lats.clone());
        println!(
            "{}",
            json!({"bench": "queue_claim_latency_idle", "backend": name, "median_ms": (m * 1000.0).round() / 1000.0,
                   "runs_ms": lats.iter().map(|l| (l * 1000.0).round() / 1000.0).collect::<Vec<_>>(), "target_ms": 5.0, "pass": m < 5.0})
        );
    }
}
