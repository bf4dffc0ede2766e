//! The worker runtime: claims jobs of one queue, runs them concurrently through a [`JobHandler`],
//! keeps their leases alive, records outcomes, and shuts down gracefully.

use crate::queue::{ClaimedJob, Queue};
use aragora_core::ids::{new_id, prefix};
use aragora_core::time::now_ms;
use aragora_store::{AnyConnection, Db, Dialect, Row, sqlx};
use async_trait::async_trait;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How a job run failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Transient: retry with backoff until `max_attempts`.
    #[error("{0}")]
    Retry(String),
    /// Retrying cannot help (e.g. malformed payload): dead at once.
    #[error("{0}")]
    Permanent(String),
}

/// A job that has just gone `dead` after a failed run (see [`JobHandler::on_dead`]).
#[derive(Debug, Clone, Copy)]
pub struct DeadJob<'a> {
    pub job: &'a ClaimedJob,
    /// The error of the run that failed last.
    pub error: &'a str,
    /// That run failed with [`JobError::Permanent`]; otherwise the job's attempts are used up.
    pub permanent: bool,
}

#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    async fn handle(&self, job: ClaimedJob) -> Result<(), JobError>;

    /// Runs when a run of one of this handler's jobs fails for the last time (its attempts are
    /// used up, or the failure is permanent), inside the transaction that marks the job `dead`:
    /// what it writes on `conn` commits together with the job's death, or neither does (an error
    /// here rolls both back, and the worker records the failure again until it sticks, as for any
    /// database error). Use `conn` only: on SQLite this transaction holds the writer connection.
    /// Jobs the lease reaper buries (their worker stopped heartbeating on the last attempt) do not
    /// come through here; sweep for those. Default: nothing.
    async fn on_dead(
        &self,
        _conn: &mut AnyConnection,
        _dialect: Dialect,
        _dead: DeadJob<'_>,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// What the worker does, e.g. `webhook_delivery`, `batch_explainability`.
    pub kind: String,
    pub queue: String,
    pub max_concurrent: usize,
    /// Lease length; heartbeats renew it every third of it.
    pub lease: Duration,
    /// Longest wait between claim attempts when no wake-up arrives (delayed jobs, other processes).
    pub poll_interval: Duration,
    /// How long in-flight jobs may run on after shutdown starts before they are released.
    pub shutdown_deadline: Duration,
    /// Host/process name shown in worker status.
    pub node: String,
    /// The worker's id (`--worker-id`), taken with [`reserve_worker_id`] first; `None`: a fresh
    /// `wrk-…` id.
    pub id: Option<String>,
}

impl WorkerConfig {
    pub fn new(kind: &str, queue: &str, max_concurrent: usize) -> Self {
        WorkerConfig {
            kind: kind.to_string(),
            queue: queue.to_string(),
            max_concurrent: max_concurrent.max(1),
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            shutdown_deadline: Duration::from_secs(10),
            node: default_node(),
            id: None,
        }
    }
}

pub fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// A row of `GET /api/workers/status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WorkerInfo {
    pub id: String,
    pub kind: String,
    pub node: String,
    /// `running`, `stopping`, `stopped`, or `unresponsive` (running but no heartbeat for 3 leases).
    pub state: String,
    #[serde(with = "aragora_core::time::serde_ms")]
    pub started_at: i64,
    #[serde(with = "aragora_core::time::serde_ms")]
    pub last_heartbeat: i64,
    pub in_flight: i64,
    pub processed: i64,
    pub failed: i64,
}

/// Every registered worker, live ones first. Stopped workers older than a day are omitted.
pub async fn list_workers(db: &Db) -> Result<Vec<WorkerInfo>, sqlx::Error> {
    let now = now_ms();
    let rows = sqlx::query(
        "SELECT id, kind, node, state, started_at, last_heartbeat, in_flight, processed, failed \
         FROM workers WHERE state <> 'stopped' OR last_heartbeat > $1 ORDER BY started_at DESC, id",
    )
    .bind(now - 86_400_000)
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            let mut state: String = r.try_get("state")?;
            let last: i64 = r.try_get("last_heartbeat")?;
            if state == "running" && now - last > 90_000 {
                state = "unresponsive".into();
            }
            Ok(WorkerInfo {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                node: r.try_get("node")?,
                state,
                started_at: r.try_get("started_at")?,
                last_heartbeat: last,
                in_flight: r.try_get("in_flight")?,
                processed: r.try_get("processed")?,
                failed: r.try_get("failed")?,
            })
        })
        .collect()
}

#[derive(Default)]
struct Counters {
    processed: AtomicU64,
    failed: AtomicU64,
}

/// A running worker. Cancel the token given to [`spawn_worker`], then `join` to wait until it
/// has finished or released every job.
pub struct WorkerHandle {
    pub id: String,
    join: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    pub async fn join(self) {
        let _ = self.join.await;
    }
}

/// Starts a worker for `config.queue`; it runs until `shutdown` is cancelled.
pub fn spawn_worker(
    queue: Queue,
    config: WorkerConfig,
    handler: Arc<dyn JobHandler>,
    shutdown: CancellationToken,
) -> WorkerHandle {
    let id = config.id.clone().unwrap_or_else(|| new_id(prefix::WORKER));
    let worker_id = id.clone();
    let join = tokio::spawn(async move {
        if let Err(e) = run(queue, config, handler, shutdown, worker_id).await {
            tracing::error!(error = %e, "worker stopped on a database error");
        }
    });
    WorkerHandle { id, join }
}

/// Why a chosen worker id cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error(
        "worker id `{id}` is held by a live worker on {node} (last heartbeat {age_secs} s ago): \
         stop it first or choose another id"
    )]
    InUse {
        id: String,
        node: String,
        age_secs: i64,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Takes the chosen id `id` for a worker of `cfg`'s kind. Refused while another live worker holds
/// it (state not `stopped` and a heartbeat within three leases), since jobs are fenced by worker
/// id. Otherwise the id is registered and the jobs a dead predecessor of that id still held go
/// back to `ready` at once: the new worker's heartbeats would otherwise renew their leases forever
/// without running them.
pub async fn reserve_worker_id(db: &Db, id: &str, cfg: &WorkerConfig) -> Result<(), ReserveError> {
    let now = now_ms();
    let live_since = now - 3 * i64::try_from(cfg.lease.as_millis()).unwrap_or(i64::MAX / 4);
    let taken = sqlx::query(
        "INSERT INTO workers (id, kind, node, state, started_at, last_heartbeat) \
         VALUES ($1, $2, $3, 'running', $4, $4) \
         ON CONFLICT (id) DO UPDATE SET kind = $2, node = $3, state = 'running', \
         started_at = $4, last_heartbeat = $4, in_flight = 0, processed = 0, failed = 0 \
         WHERE workers.state = 'stopped' OR workers.last_heartbeat < $5",
    )
    .bind(id)
    .bind(&cfg.kind)
    .bind(&cfg.node)
    .bind(now)
    .bind(live_since)
    .execute(db.writer())
    .await?
    .rows_affected();
    if taken == 0 {
        let row = sqlx::query("SELECT node, last_heartbeat FROM workers WHERE id = $1")
            .bind(id)
            .fetch_one(db.reader())
            .await?;
        return Err(ReserveError::InUse {
            id: id.to_string(),
            node: row.try_get(0)?,
            age_secs: (now - row.try_get::<i64, _>(1)?) / 1000,
        });
    }
    let released = sqlx::query(
        "UPDATE jobs SET status = 'ready', lease_until = NULL, worker_id = NULL, run_at = $1, \
         updated_at = $1, last_error = 'released: its worker id was taken by a new worker' \
         WHERE worker_id = $2 AND status = 'running'",
    )
    .bind(now)
    .bind(id)
    .execute(db.writer())
    .await?
    .rows_affected();
    if released > 0 {
        tracing::warn!(worker = %id, released, "released the jobs a previous worker with this id held");
    }
    Ok(())
}

async fn register(db: &Db, id: &str, cfg: &WorkerConfig, state: &str) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO workers (id, kind, node, state, started_at, last_heartbeat) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (id) DO UPDATE SET state = $4, last_heartbeat = $5",
    )
    .bind(id)
    .bind(&cfg.kind)
    .bind(&cfg.node)
    .bind(state)
    .bind(now)
    .execute(db.writer())
    .await
    .map(|_| ())
}

async fn report(
    db: &Db,
    id: &str,
    state: &str,
    in_flight: usize,
    c: &Counters,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE workers SET state = $1, last_heartbeat = $2, in_flight = $3, processed = $4, \
         failed = $5 WHERE id = $6",
    )
    .bind(state)
    .bind(now_ms())
    .bind(in_flight as i64)
    .bind(c.processed.load(Ordering::Relaxed) as i64)
    .bind(c.failed.load(Ordering::Relaxed) as i64)
    .bind(id)
    .execute(db.writer())
    .await
    .map(|_| ())
}

type InFlight = Arc<parking_lot_free::Mutex<HashSet<String>>>;

mod parking_lot_free {
    /// std mutex with poisoning ignored: the guarded set stays consistent across panics.
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn new(t: T) -> Self {
            Mutex(std::sync::Mutex::new(t))
        }
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}

/// Runs `op` (recording a job's outcome) until it succeeds or shutdown starts. An outcome that is
/// never recorded would leave the job `running` under this worker's heartbeat, so it would
/// neither finish nor run again while this process lives (seen with a full disk).
async fn until_recorded<T, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut op: F,
) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        // A full disk is counted and logged (rate-limited) by the store.
        if !aragora_store::note_storage_full(&e, "queue") {
            tracing::warn!(error = %e, "could not record {what}; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(e),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

async fn run(
    queue: Queue,
    cfg: WorkerConfig,
    handler: Arc<dyn JobHandler>,
    shutdown: CancellationToken,
    worker_id: String,
) -> Result<(), sqlx::Error> {
    let db = queue.db().clone();
    register(&db, &worker_id, &cfg, "running").await?;
    tracing::info!(worker = %worker_id, kind = %cfg.kind, queue = %cfg.queue, "worker started");
    let counters = Arc::new(Counters::default());
    let in_flight: InFlight = Arc::new(parking_lot_free::Mutex::new(HashSet::new()));
    let permits = Arc::new(Semaphore::new(cfg.max_concurrent));
    let wakeup = queue.wakeup(&cfg.queue);

    // Completions are flushed in batches: one DELETE for every job finished since the last flush.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let completer = {
        let queue = queue.clone();
        let shutdown = shutdown.clone();
        let worker_id = worker_id.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            while let Some(id) = done_rx.recv().await {
                batch.push(id);
                while batch.len() < 512 {
                    match done_rx.try_recv() {
                        Ok(id) => batch.push(id),
                        Err(_) => break,
                    }
                }
                let recorded = until_recorded(&shutdown, "completed jobs", || {
                    queue.complete(&worker_id, &batch)
                })
                .await;
                let mut set = in_flight.lock();
                for id in batch.drain(..) {
                    // Unrecorded at shutdown: stays in flight, so it is released below.
                    if recorded.is_ok() {
                        set.remove(&id);
                    }
                }
            }
        })
    };

    // Heartbeats: renew leases, publish counters, recover jobs of dead workers.
    let heartbeat = {
        let queue = queue.clone();
        let db = db.clone();
        let worker_id = worker_id.clone();
        let counters = counters.clone();
        let in_flight = in_flight.clone();
        let lease = cfg.lease;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let n = in_flight.lock().len();
                let res = async {
                    queue.heartbeat(&worker_id, lease).await?;
                    let recovered = queue.reap_expired().await?;
                    if recovered > 0 {
                        tracing::warn!(
                            recovered,
                            "recovered jobs whose worker stopped heartbeating"
                        );
                    }
                    report(&db, &worker_id, "running", n, &counters).await
                }
                .await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "worker heartbeat failed");
                }
            }
        })
    };

    let mut tasks = JoinSet::new();
    let mut claim_error_backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        while tasks.try_join_next().is_some() {}
        let available = permits.available_permits();
        if available == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => drop(p),
            }
            continue;
        }
        // Register interest before claiming, so a wake-up that lands during the claim is not lost.
        let notified = wakeup.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let claimed = match queue
            .claim(&cfg.queue, &worker_id, available.min(256) as u32, cfg.lease)
            .await
        {
            Ok(jobs) => {
                claim_error_backoff = Duration::from_millis(100);
                jobs
            }
            Err(e) => {
                // A full disk is counted and logged (rate-limited) by the store.
                if !aragora_store::note_storage_full(&e, "queue") {
                    tracing::warn!(error = %e, "claim failed; retrying");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(claim_error_backoff) => {}
                }
                claim_error_backoff = (claim_error_backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut notified => {}
                _ = tokio::time::sleep(cfg.poll_interval) => {}
            }
            continue;
        }
        for job in claimed {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // More rows than free slots must never take the worker down: hand it back.
                tracing::warn!(job = %job.id, "claimed more jobs than free slots; releasing one");
                let _ = until_recorded(&shutdown, "a surplus job's release", || {
                    queue.release(&worker_id, &job.id)
                })
                .await;
                continue;
            };
            in_flight.lock().insert(job.id.clone());
            metrics::histogram!("aragora_queue_claim_delay_seconds", "queue" => cfg.queue.clone())
                .record((job.claimed_at - job.run_at.max(job.created_at)).max(0) as f64 / 1000.0);
            let handler = handler.clone();
            let queue = queue.clone();
            let worker_id = worker_id.clone();
            let counters = counters.clone();
            let done_tx = done_tx.clone();
            let in_flight = in_flight.clone();
            let queue_name = cfg.queue.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let id = job.id.clone();
                let outcome = handler.handle(job.clone()).await;
                metrics::histogram!("aragora_job_duration_seconds", "queue" => queue_name.clone())
                    .record(started.elapsed().as_secs_f64());
                match outcome {
                    Ok(()) => {
                        counters.processed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("aragora_jobs_total", "queue" => queue_name, "outcome" => "completed").increment(1);
                        let _ = done_tx.send(id);
                    }
                    Err(e) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let permanent = matches!(e, JobError::Permanent(_));
                        let error = e.to_string();
                        let status = until_recorded(&shutdown, "a job failure", || {
                            queue.fail(&worker_id, &job, &error, permanent, Some(&*handler))
                        })
                        .await;
                        let outcome = match status {
                            Ok(Some("dead")) => "dead",
                            _ => "retried",
                        };
                        metrics::counter!("aragora_jobs_total", "queue" => queue_name, "outcome" => outcome).increment(1);
                        // Unrecorded at shutdown: stays in flight, so it is released below.
                        if status.is_ok() {
                            in_flight.lock().remove(&id);
                        }
                    }
                }
                drop(permit);
            });
        }
    }

    // Graceful shutdown: no more claims; in-flight jobs get until the deadline, then are released.
    let n = in_flight.lock().len();
    let _ = report(&db, &worker_id, "stopping", n, &counters).await;
    let deadline = tokio::time::sleep(cfg.shutdown_deadline);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut deadline => {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    drop(done_tx);
    let _ = completer.await;
    heartbeat.abort();
    let unfinished: Vec<String> = in_flight.lock().drain().collect();
    for id in &unfinished {
        if let Err(e) = queue.release(&worker_id, id).await {
            tracing::warn!(error = %e, job = %id, "could not release job; its lease will expire");
        }
    }
    if !unfinished.is_empty() {
        tracing::info!(
            released = unfinished.len(),
            "released unfinished jobs at shutdown"
        );
    }
    report(&db, &worker_id, "stopped", 0, &counters).await?;
    tracing::info!(worker = %worker_id, "worker stopped");
    Ok(())
}
