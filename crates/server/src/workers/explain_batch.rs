//! `BatchExplainabilityWorker`: runs the jobs `POST /api/v1/explainability/batch` enqueues.
//!
//! A batch is processed in chunks of positions that have no result yet. For each chunk the
//! debates are bulk-loaded (`debates::get_many`, workspace-scoped: another workspace's id is
//! `not_found`), explained on blocking threads — at most `max_concurrent_debates` debates at once
//! across every batch this worker runs — and persisted in one transaction while the next chunk is
//! being computed. Because finished positions are skipped and results are inserted with
//! `ON CONFLICT DO NOTHING`, a worker that resumes after a crash recomputes only the chunk that
//! was in flight and never writes a duplicate. On shutdown the worker stops at a chunk boundary,
//! flushes, and hands the rest of the batch to a new job (so no attempt is burned). The final
//! phase and the `explainability.batch.completed` event are written in one transaction by
//! whichever run completes the batch, exactly once.
//!
//! A batch never outlives its job: when the job dies (its attempts used up, e.g. on repeated
//! database errors, or a permanent failure) [`JobHandler::on_dead`] ends the batch — `status`
//! `completed`, `phase` `partial` or `failed`, `error` saying why — with its completion event, in
//! the transaction that marks the job dead. A job buried by the lease reaper instead (its worker
//! died on every attempt) is caught by [`sweep_stranded`], which every worker process runs at
//! start and then every minute.

use crate::explainability::{
    BATCH_COMPLETED_EVENT, BATCH_JOB_ATTEMPTS, BATCH_KIND, BATCH_QUEUE, BatchOptions, compute,
    stored, unfinished,
};
use crate::state::AppState;
use aragora_core::debate::Debate;
use aragora_core::time::rfc3339;
use aragora_queue::{
    ClaimedJob, DeadJob, JobError, JobHandler, NewJob, Queue, WorkerConfig, enqueue_in,
};
use aragora_store::events::{NewEvent, publish_in};
use aragora_store::explain::{
    self as repo, Added, Batch, NewResult, StoredExplanation, outcome, phase,
};
use aragora_store::{AnyConnection, Db, Dialect, sqlx};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Positions per chunk: one bulk load and one write transaction each.
const CHUNK: usize = 250;
/// Batches one worker runs at once (they share the debate permits).
const MAX_CONCURRENT_BATCHES: usize = 4;
/// Short lease, so a batch whose worker was killed is picked up again within seconds.
const LEASE: Duration = Duration::from_secs(10);

pub struct BatchExplainabilityWorker {
    db: Db,
    queue: Queue,
    max_concurrent_debates: usize,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
}

fn retry(e: impl std::fmt::Display) -> JobError {
    JobError::Retry(e.to_string())
}

impl BatchExplainabilityWorker {
    pub fn new(
        state: &AppState,
        max_concurrent_debates: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let max = max_concurrent_debates.max(1);
        // Make the series visible from the start.
        for s in [phase::COMPLETED, phase::PARTIAL, phase::FAILED] {
            metrics::counter!("aragora_explainability_batch_jobs_total", "status" => s)
                .increment(0);
        }
        BatchExplainabilityWorker {
            db: state.db.clone(),
            queue: state.queue.clone(),
            max_concurrent_debates: max,
            permits: Arc::new(Semaphore::new(max)),
            shutdown,
        }
    }

    pub fn config() -> WorkerConfig {
        let mut cfg = WorkerConfig::new(BATCH_KIND, BATCH_QUEUE, MAX_CONCURRENT_BATCHES);
        cfg.lease = LEASE;
        cfg
    }

    /// Runs (or resumes) batch `id` to completion, or until shutdown.
    pub async fn run_batch(&self, id: &str) -> Result<(), JobError> {
        let Some(work) = repo::start_run(&self.db, id).await.map_err(retry)? else {
            return Err(JobError::Permanent(format!("batch {id} does not exist")));
        };
        let batch = work.batch;
        if batch.is_terminal() {
            return Ok(());
        }
        let options: BatchOptions = serde_json::from_str(&batch.options)
            .map_err(|e| JobError::Permanent(format!("batch {id} has unreadable options: {e}")))?;
        let ids = Arc::new(work.debate_ids);
        let done: HashSet<i64> = repo::done_positions(&self.db, id)
            .await
            .map_err(retry)?
            .into_iter()
            .collect();
        let todo: Vec<usize> = (0..ids.len())
            .filter(|p| !done.contains(&(*p as i64)))
            .collect();
        tracing::debug!(batch = %id, run = batch.runs, todo = todo.len(), done = done.len(), "batch run");

        let mut writer: Option<JoinHandle<Result<Added, sqlx::Error>>> = None;
        let run = async {
            for chunk in todo.chunks(CHUNK) {
                if self.shutdown.is_cancelled() {
                    return Ok(true);
                }
                let mut wanted: Vec<String> = chunk.iter().map(|&p| ids[p].clone()).collect();
                wanted.sort_unstable();
                wanted.dedup();
                let debates: HashMap<String, Debate> =
                    aragora_store::debates::get_many(&self.db, &batch.workspace, &wanted)
                        .await
                        .map_err(retry)?
                        .into_iter()
                        .map(|d| (d.id.clone(), d))
                        .collect();
                let (results, explanations) = self
                    .compute_chunk(chunk, &ids, Arc::new(debates), options, batch.runs)
                    .await?;
                record_per_debate_latency(&results);
                if let Some(w) = writer.take() {
                    w.await.map_err(retry)?.map_err(retry)?;
                }
                let (db, batch_id, ws) = (self.db.clone(), id.to_string(), batch.workspace.clone());
                writer = Some(tokio::spawn(async move {
                    repo::record_results(&db, &batch_id, &ws, &results, &explanations).await
                }));
            }
            Ok::<bool, JobError>(false)
        };
        let run = run.await;
        // The chunk still being written is waited for also when the run failed: a failure may be
        // the job's last (its batch then ends), and nothing may change the batch after that.
        let flushed = match writer.take() {
            Some(w) => w
                .await
                .map_err(retry)
                .and_then(|r| r.map_err(retry))
                .map(|_| ()),
            None => Ok(()),
        };
        let interrupted = run?;
        flushed?;
        if interrupted {
            return self.hand_off(id).await;
        }
        self.finish(id, &batch.workspace).await
    }

    /// Explains the debates at `positions`, spreading them over blocking tasks that each hold one
    /// of the worker's debate permits.
    async fn compute_chunk(
        &self,
        positions: &[usize],
        ids: &Arc<Vec<String>>,
        debates: Arc<HashMap<String, Debate>>,
        options: BatchOptions,
        run: i64,
    ) -> Result<(Vec<NewResult>, Vec<StoredExplanation>), JobError> {
        let parts = self.max_concurrent_debates.min(positions.len()).max(1);
        let per = positions.len().div_ceil(parts);
        let mut tasks = Vec::with_capacity(parts);
        for part in positions.chunks(per) {
            let permit = self.permits.clone().acquire_owned().await.map_err(retry)?;
            let part = part.to_vec();
            let ids = ids.clone();
            let debates = debates.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let out: Vec<_> = part
                    .iter()
                    .map(|&p| explain_one(p, &ids[p], debates.get(&ids[p]), options, run))
                    .collect();
                drop(permit);
                out
            }));
        }
        let mut results = Vec::with_capacity(positions.len());
        let mut explanations = Vec::with_capacity(positions.len());
        for t in tasks {
            for (r, e) in t.await.map_err(retry)? {
                results.push(r);
                explanations.extend(e);
            }
        }
        Ok((results, explanations))
    }

    /// Shutdown: the rest of the batch continues as a new job (this one completes).
    async fn hand_off(&self, id: &str) -> Result<(), JobError> {
        let mut tx = self.db.begin().await.map_err(retry)?;
        let job_id = enqueue_in(
            &mut tx,
            self.db.dialect(),
            &NewJob::new(BATCH_QUEUE, serde_json::json!({"batch_id": id}))
                .max_attempts(BATCH_JOB_ATTEMPTS),
        )
        .await
        .map_err(retry)?;
        repo::set_job_in(&mut tx, id, &job_id)
            .await
            .map_err(retry)?;
        tx.commit().await.map_err(retry)?;
        self.queue.notify_local(BATCH_QUEUE);
        tracing::info!(batch = %id, "shutting down: batch progress saved, the rest is re-queued");
        Ok(())
    }

    /// Final phase + completion event in one transaction, once.
    async fn finish(&self, id: &str, workspace: &str) -> Result<(), JobError> {
        let mut tx = self.db.begin().await.map_err(retry)?;
        let Some(b) = repo::finish_in(&mut tx, id).await.map_err(retry)? else {
            tx.rollback().await.map_err(retry)?;
            // Someone else finished it, or results are missing (then run again).
            return match repo::get_batch(&self.db, workspace, id)
                .await
                .map_err(retry)?
            {
                Some(b) if b.is_terminal() => Ok(()),
                _ => Err(JobError::Retry(format!(
                    "batch {id} is not fully processed yet; running it again"
                ))),
            };
        };
        publish_completed_in(&mut tx, self.db.dialect(), &b)
            .await
            .map_err(retry)?;
        tx.commit().await.map_err(retry)?;
        count_finished(&b);
        tracing::info!(batch = %b.id, phase = %b.phase, total = b.total, succeeded = b.succeeded, "explainability batch finished");
        Ok(())
    }
}

/// The `explainability.batch.completed` event of a batch that just ended, in the transaction that
/// ended it.
async fn publish_completed_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    b: &Batch,
) -> Result<(), sqlx::Error> {
    publish_in(
        conn,
        dialect,
        &NewEvent {
            workspace: b.workspace.clone(),
            event_type: BATCH_COMPLETED_EVENT.to_string(),
            data: serde_json::json!({
                "batch_id": b.id,
                "status": b.status(),
                "phase": b.phase,
                "total": b.total,
                "processed": b.processed,
                "succeeded": b.succeeded,
                "failed": b.failed,
                "not_found": b.not_found,
                "error": b.error,
                "created_at": rfc3339(b.created_at),
                "completed_at": b.completed_at.map(rfc3339),
            }),
        },
    )
    .await
    .map(|_| ())
}

/// Counts a batch that ended in the batch metrics.
fn count_finished(b: &Batch) {
    // The metric's `status` label is the batch's phase (completed, partial or failed).
    let label: &'static str = match b.phase.as_str() {
        phase::COMPLETED => phase::COMPLETED,
        phase::PARTIAL => phase::PARTIAL,
        _ => phase::FAILED,
    };
    metrics::counter!("aragora_explainability_batch_jobs_total", "status" => label).increment(1);
    if let Some(done) = b.completed_at {
        // Turnaround as the submitter sees it: submitted → finished, queue wait included.
        metrics::histogram!("aragora_explainability_batch_duration_seconds")
            .record((done - b.created_at).max(0) as f64 / 1000.0);
    }
}

/// What a batch whose job died says in its `error`. The job's own error is not shown: it is a
/// worker-side failure (a database error, say) whose text belongs in the logs, not the API —
/// except a permanent failure, which the worker words for the submitter.
fn stopped_message(attempts: i64, permanent: Option<&str>) -> String {
    let rest = "debate ids without a result were not explained; submit them in a new batch to \
                try again";
    match permanent {
        Some(why) => format!("the batch cannot be processed ({why}); {rest}"),
        None => format!(
            "the batch was given up after {attempts} failed attempt{} (the errors are in the \
             worker logs); {rest}",
            if attempts == 1 { "" } else { "s" }
        ),
    }
}

/// Ends the batch of dead job `job_id` (see [`repo::abandon_in`]) and publishes its completion
/// event, inside the caller's transaction. Returns the batch if this call ended it.
async fn abandon_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    batch_id: &str,
    job_id: &str,
    error: &str,
) -> Result<Option<Batch>, sqlx::Error> {
    let Some(b) = repo::abandon_in(conn, batch_id, job_id, error).await? else {
        return Ok(None);
    };
    publish_completed_in(conn, dialect, &b).await?;
    Ok(Some(b))
}

/// Ends unfinished batches whose queue job is dead without having ended them (buried by the lease
/// reaper, or by a version without [`JobHandler::on_dead`]), with their completion events.
/// Idempotent. Returns how many were ended.
pub async fn sweep_stranded(db: &Db) -> Result<u64, sqlx::Error> {
    let mut ended = 0;
    for s in repo::stranded(db, 100).await? {
        let error = stopped_message(s.attempts, None);
        let mut tx = db.begin().await?;
        match abandon_in(&mut tx, db.dialect(), &s.id, &s.job_id, &error).await? {
            Some(b) => {
                tx.commit().await?;
                count_finished(&b);
                tracing::warn!(batch = %b.id, job = %s.job_id, attempts = s.attempts, last_error = ?s.last_error, phase = %b.phase, "explainability batch ended: its queue job is dead");
                ended += 1;
            }
            None => tx.rollback().await?,
        }
    }
    Ok(ended)
}

/// Runs [`sweep_stranded`] now and then every `every`, until `stop`.
pub async fn sweep_loop(db: Db, every: Duration, stop: CancellationToken) {
    loop {
        if let Err(e) = sweep_stranded(&db).await {
            tracing::warn!(error = %e, "explainability batch sweep failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Observes each explained debate's processing time (debates that were not found cost nothing
/// and would drag the quantiles down). One handle per chunk, one atomic push per debate.
fn record_per_debate_latency(results: &[NewResult]) {
    let h = metrics::histogram!("aragora_explainability_batch_processing_latency_seconds");
    for r in results.iter().filter(|r| r.status != outcome::NOT_FOUND) {
        h.record(r.processing_time_ms / 1000.0);
    }
}

/// One position: explain the debate (or say why not), timed.
fn explain_one(
    position: usize,
    debate_id: &str,
    debate: Option<&Debate>,
    options: BatchOptions,
    run: i64,
) -> (NewResult, Option<StoredExplanation>) {
    let started = Instant::now();
    let opts = options.explain_options();
    let mut keep = None;
    let (status, explanation, error) = match debate {
        None => (
            outcome::NOT_FOUND,
            None,
            Some(format!("debate {debate_id} not found")),
        ),
        Some(d) => match unfinished(d) {
            Some(why) => (outcome::ERROR, None, Some(why)),
            None => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                compute(d, &opts, options.format)
            })) {
                Ok(r) => {
                    let decision_id = r.decision_id.clone();
                    let (result, json) = r.into_result_json(debate_id);
                    keep = Some(stored(&decision_id, debate_id, &opts, json));
                    (outcome::SUCCESS, Some(result), None)
                }
                Err(_) => (
                    outcome::ERROR,
                    None,
                    Some("internal error while computing the explanation".to_string()),
                ),
            },
        },
    };
    (
        NewResult {
            position: position as i64,
            debate_id: debate_id.to_string(),
            status,
            explanation,
            error,
            processing_time_ms: started.elapsed().as_secs_f64() * 1000.0,
            attempt: run,
        },
        keep,
    )
}

#[async_trait]
impl JobHandler for BatchExplainabilityWorker {
    async fn handle(&self, job: ClaimedJob) -> Result<(), JobError> {
        let Some(id) = job.payload["batch_id"].as_str() else {
            return Err(JobError::Permanent(
                "job payload has no batch_id".to_string(),
            ));
        };
        self.run_batch(id).await
    }

    /// The job's last attempt failed: end its batch in the same transaction.
    async fn on_dead(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        dead: DeadJob<'_>,
    ) -> Result<(), sqlx::Error> {
        let job = dead.job;
        let Some(batch_id) = job.payload["batch_id"].as_str() else {
            return Ok(());
        };
        let error = stopped_message(i64::from(job.attempt), dead.permanent.then_some(dead.error));
        if let Some(b) = abandon_in(conn, dialect, batch_id, &job.id, &error).await? {
            // Counted before the commit: the transaction may still roll back, and the failure is
            // then recorded (and counted) again; a rare double count beats a lost one.
            count_finished(&b);
            tracing::warn!(batch = %b.id, job = %job.id, attempts = job.attempt, permanent = dead.permanent, last_error = %dead.error, phase = %b.phase, "explainability batch ended: its queue job died");
        }
        Ok(())
    }
}
