use crate::runtime::{DeadJob, JobHandler};
use aragora_core::ids::{new_id, prefix};
use aragora_core::time::now_ms;
use aragora_store::{AnyConnection, Db, Dialect, Row, sqlx};
use dashmap::DashMap;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// PostgreSQL NOTIFY channel; the payload is the queue name.
pub const JOB_CHANNEL: &str = "aragora_jobs";

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub payload: serde_json::Value,
    /// Earliest run time (ms since epoch); `None` = now.
    pub run_at: Option<i64>,
    pub max_attempts: u32,
    /// Caller-chosen id (e.g. to make enqueueing idempotent); `None` = a fresh `job-…` id.
    pub id: Option<String>,
}

impl NewJob {
    pub fn new(queue: &str, payload: serde_json::Value) -> Self {
        NewJob {
            queue: queue.to_string(),
            payload,
            run_at: None,
            max_attempts: 5,
            id: None,
        }
    }

    pub fn run_at(mut self, ms: i64) -> Self {
        self.run_at = Some(ms);
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// A job this worker holds a lease on.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub queue: String,
    pub payload: serde_json::Value,
    /// 1 on the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    pub run_at: i64,
    pub created_at: i64,
    pub claimed_at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QueueDepth {
    pub queue: String,
    pub ready: i64,
    pub delayed: i64,
    pub running: i64,
    pub dead: i64,
}

/// Inserts a job inside the caller's transaction (so it exists iff the caller commits).
/// On PostgreSQL the wake-up NOTIFY is part of the same transaction and fires on commit;
/// on SQLite call [`Queue::notify_local`] after committing.
pub async fn enqueue_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    job: &NewJob,
) -> Result<String, sqlx::Error> {
    let id = job.id.clone().unwrap_or_else(|| new_id(prefix::JOB));
    let now = now_ms();
    sqlx::query(
        "INSERT INTO jobs (id, queue, payload, status, attempts, max_attempts, run_at, created_at, \
         updated_at) VALUES ($1, $2, $3, 'ready', 0, $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(&job.queue)
    .bind(job.payload.to_string())
    .bind(i64::from(job.max_attempts))
    .bind(job.run_at.unwrap_or(now))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(JOB_CHANNEL)
            .bind(&job.queue)
            .execute(&mut *conn)
            .await?;
    }
    Ok(id)
}

/// Backoff before retry `attempt` (1-based): 1 s × 2^(attempt-1), capped at 1 h, with ±20 % jitter
/// so failed jobs do not retry in lockstep.
pub fn backoff_delay(attempt: u32) -> Duration {
    let base = 1000u64.saturating_mul(1 << attempt.saturating_sub(1).min(12));
    let capped = base.min(3_600_000) as f64;
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    Duration::from_millis((capped * jitter) as u64)
}

/// Handle on the queue. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    db: Db,
    wakeups: Wakeups,
}

/// Wake-up notifiers are shared by every `Queue` on the same database in this process, so an
/// enqueue through one handle wakes workers holding another.
type Wakeups = Arc<DashMap<String, Arc<Notify>>>;

fn shared_wakeups(url: &str) -> Wakeups {
    static BY_DATABASE: std::sync::OnceLock<DashMap<String, Wakeups>> = std::sync::OnceLock::new();
    BY_DATABASE
        .get_or_init(DashMap::new)
        .entry(url.to_string())
        .or_default()
        .clone()
}

impl Queue {
    pub fn new(db: Db) -> Self {
        Queue {
            wakeups: shared_wakeups(db.url()),
            db,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The notifier workers of `queue` wait on.
    pub fn wakeup(&self, queue: &str) -> Arc<Notify> {
        self.wakeups
            .entry(queue.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wakes this process's workers of `queue` (call after committing an enqueue).
    pub fn notify_local(&self, queue: &str) {
        self.wakeup(queue).notify_waiters();
        self.wakeup(queue).notify_one();
    }

    /// Forwards PostgreSQL NOTIFYs on [`JOB_CHANNEL`] to local workers, so workers in other
    /// processes wake as soon as a job is committed. Reconnects on error. No-op on SQLite.
    pub fn spawn_pg_listener(&self, shutdown: tokio_util::sync::CancellationToken) {
        if self.db.dialect() != Dialect::Postgres {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let run = async {
                    let mut listener = sqlx::postgres::PgListener::connect(this.db.url()).await?;
                    listener.listen(JOB_CHANNEL).await?;
                    loop {
                        let n = listener.recv().await?;
                        this.notify_local(n.payload());
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    res = run => {
                        if let Err(e) = res {
                            tracing::warn!(error = %e, "job listener lost its connection; reconnecting");
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }

    /// Enqueues one job in its own transaction and wakes local workers.
    pub async fn enqueue(&self, job: &NewJob) -> Result<String, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        let id = enqueue_in(&mut tx, self.db.dialect(), job).await?;
        tx.commit().await?;
        self.notify_local(&job.queue);
        Ok(id)
    }

    /// Enqueues many jobs in one transaction, with multi-row inserts and one wake-up per queue.
    pub async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<String>, sqlx::Error> {
        let now = now_ms();
        let ids: Vec<String> = jobs
            .iter()
            .map(|j| j.id.clone().unwrap_or_else(|| new_id(prefix::JOB)))
            .collect();
        let mut tx = self.db.begin().await?;
        // 7 parameters a row; stay far below both dialects' parameter limits.
        for (chunk_jobs, chunk_ids) in jobs.chunks(500).zip(ids.chunks(500)) {
            let values = (0..chunk_jobs.len())
                .map(|i| {
                    let b = i * 7;
                    format!(
                        "(${}, ${}, ${}, 'ready', 0, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "INSERT INTO jobs (id, queue, payload, status, attempts, max_attempts, run_at, \
                 created_at, updated_at) VALUES {values}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (job, id) in chunk_jobs.iter().zip(chunk_ids) {
                q = q
                    .bind(id)
                    .bind(&job.queue)
                    .bind(job.payload.to_string())
                    .bind(i64::from(job.max_attempts))
                    .bind(job.run_at.unwrap_or(now))
                    .bind(now)
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        let mut queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        if self.db.dialect() == Dialect::Postgres {
            for q in &queues {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(JOB_CHANNEL)
                    .bind(*q)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        for q in queues {
            self.notify_local(q);
        }
        Ok(ids)
    }

    /// Claims up to `max` ready jobs of `queue` for `worker_id`, leased for `lease`.
    pub async fn claim(
        &self,
        queue: &str,
        worker_id: &str,
        max: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        let now = now_ms();
        let sql = match self.db.dialect() {
            // A materialized CTE runs the LIMIT … SKIP LOCKED pick exactly once: as an `IN (…)`
            // subquery PostgreSQL may rescan it and claim more than `max` rows (seen under load:
            // a worker got more jobs than it had free slots).
            Dialect::Postgres => {
                "WITH picked AS MATERIALIZED (SELECT id FROM jobs WHERE queue = $4 AND \
                 status = 'ready' AND run_at <= $3 ORDER BY run_at, id LIMIT $5 \
                 FOR UPDATE SKIP LOCKED) \
                 UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = $1, \
                 worker_id = $2, updated_at = $3 FROM picked WHERE jobs.id = picked.id \
                 RETURNING jobs.id, jobs.queue, jobs.payload, jobs.attempts, jobs.max_attempts, \
                 jobs.run_at, jobs.created_at"
            }
            Dialect::Sqlite => {
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = $1, \
                 worker_id = $2, updated_at = $3 \
                 WHERE id IN (SELECT id FROM jobs WHERE queue = $4 AND status = 'ready' \
                 AND run_at <= $3 ORDER BY run_at, id LIMIT $5) \
                 RETURNING id, queue, payload, attempts, max_attempts, run_at, created_at"
            }
        };
        let rows = sqlx::query(sql)
            .bind(now + lease.as_millis() as i64)
            .bind(worker_id)
            .bind(now)
            .bind(queue)
            .bind(i64::from(max))
            .fetch_all(self.db.writer())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedJob {
                    id: r.try_get("id")?,
                    queue: r.try_get("queue")?,
                    payload: serde_json::from_str(&r.try_get::<String, _>("payload")?)
                        .unwrap_or(serde_json::Value::Null),
                    attempt: r.try_get::<i64, _>("attempts")? as u32,
                    max_attempts: r.try_get::<i64, _>("max_attempts")? as u32,
                    run_at: r.try_get("run_at")?,
                    created_at: r.try_get("created_at")?,
                    claimed_at: now,
                })
            })
            .collect()
    }

    /// Removes finished jobs held by `worker_id`; returns how many were still ours.
    pub async fn complete(&self, worker_id: &str, job_ids: &[String]) -> Result<u64, sqlx::Error> {
        if job_ids.is_empty() {
            return Ok(0);
        }
        let placeholders = (0..job_ids.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "DELETE FROM jobs WHERE worker_id = $1 AND status = 'running' AND id IN ({placeholders})"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(worker_id);
        for id in job_ids {
            q = q.bind(id);
        }
        Ok(q.execute(self.db.writer()).await?.rows_affected())
    }

    /// Records a failed run: back to `ready` after a backoff, or `dead` when attempts are used up
    /// (or `permanent`). A job that goes `dead` runs `on_dead`'s [`JobHandler::on_dead`] in the
    /// same transaction. Returns the new status, or `None` if the job was no longer ours.
    pub async fn fail(
        &self,
        worker_id: &str,
        job: &ClaimedJob,
        error: &str,
        permanent: bool,
        on_dead: Option<&dyn JobHandler>,
    ) -> Result<Option<&'static str>, sqlx::Error> {
        let now = now_ms();
        let dead = permanent || job.attempt >= job.max_attempts;
        let status = if dead { "dead" } else { "ready" };
        let run_at = if dead {
            now
        } else {
            now + backoff_delay(job.attempt).as_millis() as i64
        };
        let update = sqlx::query(
            "UPDATE jobs SET status = $1, run_at = $2, lease_until = NULL, worker_id = NULL, \
             last_error = $3, updated_at = $4 WHERE id = $5 AND worker_id = $6 AND status = 'running'",
        )
        .bind(status)
        .bind(run_at)
        .bind(truncate(error, 2000))
        .bind(now)
        .bind(&job.id)
        .bind(worker_id);
        let Some(handler) = on_dead.filter(|_| dead) else {
            let res = update.execute(self.db.writer()).await?;
            return Ok((res.rows_affected() > 0).then_some(status));
        };
        let mut tx = self.db.begin().await?;
        if update.execute(&mut *tx).await?.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        handler
            .on_dead(
                &mut tx,
                self.db.dialect(),
                DeadJob {
                    job,
                    error,
                    permanent,
                },
            )
            .await?;
        tx.commit().await?;
        Ok(Some(status))
    }

    /// Hands an unfinished job back (graceful shutdown): `ready` now, this attempt not counted.
    pub async fn release(&self, worker_id: &str, job_id: &str) -> Result<bool, sqlx::Error> {
        let res = sqlx::query(
            "UPDATE jobs SET status = 'ready', attempts = attempts - 1, lease_until = NULL, \
             worker_id = NULL, updated_at = $1 WHERE id = $2 AND worker_id = $3 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(job_id)
        .bind(worker_id)
        .execute(self.db.writer())
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Extends the lease of every job `worker_id` runs.
    pub async fn heartbeat(&self, worker_id: &str, lease: Duration) -> Result<u64, sqlx::Error> {
        let now = now_ms();
        // PostgreSQL: skip rows another statement holds (a batch completion deleting them), so
        // a heartbeat never waits on — or deadlocks with — this worker's own completions.
        let sql = match self.db.dialect() {
            Dialect::Postgres => {
                "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE id IN (SELECT id FROM jobs \
                 WHERE worker_id = $3 AND status = 'running' FOR UPDATE SKIP LOCKED)"
            }
            Dialect::Sqlite => {
                "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE worker_id = $3 AND status = 'running'"
            }
        };
        let res = sqlx::query(sql)
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .bind(worker_id)
            .execute(self.db.writer())
            .await?;
        Ok(res.rows_affected())
    }

    /// Puts jobs whose lease expired (their worker died) back to `ready`, or `dead` when their
    /// attempts are used up. Returns how many were recovered.
    pub async fn reap_expired(&self) -> Result<u64, sqlx::Error> {
        let now = now_ms();
        let res = sqlx::query(
            "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'ready' END, \
             lease_until = NULL, worker_id = NULL, run_at = $1, updated_at = $1, \
             last_error = 'lease expired: the worker stopped heartbeating' \
             WHERE status = 'running' AND lease_until < $1",
        )
        .bind(now)
        .execute(self.db.writer())
        .await?;
        Ok(res.rows_affected())
    }

    /// Jobs per queue and state (`delayed` = ready but not yet due).
    pub async fn depths(&self) -> Result<Vec<QueueDepth>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT queue, \
             CAST(SUM(CASE WHEN status = 'ready' AND run_at <= $1 THEN 1 ELSE 0 END) AS BIGINT) AS ready, \
             CAST(SUM(CASE WHEN status = 'ready' AND run_at > $1 THEN 1 ELSE 0 END) AS BIGINT) AS delayed, \
             CAST(SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS BIGINT) AS running, \
             CAST(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END) AS BIGINT) AS dead \
             FROM jobs GROUP BY queue ORDER BY queue",
        )
        .bind(now_ms())
        .fetch_all(self.db.reader())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueueDepth {
                    queue: r.try_get("queue")?,
                    ready: r.try_get("ready")?,
                    delayed: r.try_get("delayed")?,
                    running: r.try_get("running")?,
                    dead: r.try_get("dead")?,
                })
            })
            .collect()
    }

    /// Dead jobs of `queue`, newest first: (id, attempts, last_error).
    pub async fn dead_jobs(
        &self,
        queue: &str,
        limit: u32,
    ) -> Result<Vec<(String, i64, Option<String>)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, attempts, last_error FROM jobs WHERE queue = $1 AND status = 'dead' \
             ORDER BY updated_at DESC, id DESC LIMIT $2",
        )
        .bind(queue)
        .bind(i64::from(limit))
        .fetch_all(self.db.reader())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
