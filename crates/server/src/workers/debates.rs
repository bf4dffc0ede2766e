//! The debates worker: runs debates started through `POST /api/v1/debates` as queue jobs.
//!
//! - The first run moves the debate `pending` → `running` and emits `debate.started` in one
//!   transaction. Every completed round is stored (with the `agent.error` events of agents that
//!   failed since the last store) in one transaction, so a run interrupted by a crash resumes from
//!   its last stored round (`aragora_debate::resume`) and each event is written exactly once.
//! - The finish stores the final record, `agent.error` for late failures, `debate.completed`
//!   (+ `consensus.reached`) and the Knowledge Mound item in one transaction with the status change.
//! - Every write is fenced by the job claim (`store::debates::Fence`): a worker that lost its
//!   lease changes nothing.
//! - Never stuck in `running`: a crash leaves the job leased until the lease expires, then the
//!   queue hands it out again and the debate resumes. After [`RUN_ATTEMPTS`] interrupted runs the
//!   next claim fails the debate instead; [`sweep_stranded`] fails debates whose job died anyway.

use aragora_core::debate::{Debate, DebateStatus};
use aragora_core::event::types;
use aragora_debate::{DebateObserver, DebateSpec, ProviderError, ProviderRegistry, RunReport};
use aragora_queue::{ClaimedJob, JobError, JobHandler, Queue};
use aragora_store::debates::{self, Fence, RunFacts};
use aragora_store::events::{NewEvent, publish_in};
use aragora_store::{AnyConnection, Db, Dialect, knowledge, sqlx};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The queue debates run on.
pub const QUEUE: &str = "debates";
/// Interrupted runs (crashes, lost leases) before a debate is failed rather than resumed again.
pub const RUN_ATTEMPTS: u32 = 3;
/// Queue attempts of a debate job: above [`RUN_ATTEMPTS`], so the run that gives up is a handler
/// run (which fails the debate and its events cleanly), not the queue burying the job.
pub const JOB_MAX_ATTEMPTS: u32 = 10;

/// The payload of a `debates` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DebateJob {
    pub workspace: String,
    pub debate_id: String,
    pub spec: DebateSpec,
}

/// `consensus`, `no_consensus` or `failed` (the `outcome` of `debate.completed`).
pub fn outcome(d: &Debate) -> &'static str {
    match d.status {
        DebateStatus::Completed if d.consensus_reached => "consensus",
        DebateStatus::Completed => "no_consensus",
        _ => "failed",
    }
}

fn event(workspace: &str, event_type: &str, data: Value) -> NewEvent {
    NewEvent {
        workspace: workspace.to_string(),
        event_type: event_type.to_string(),
        data,
    }
}

/// `debate.started` data.
pub fn started_event(workspace: &str, d: &Debate, rounds: u32) -> NewEvent {
    event(
        workspace,
        types::DEBATE_STARTED,
        json!({
            "debate_id": d.id,
            "task": d.task,
            "agents": d.agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            "rounds": rounds,
            "consensus_mode": d.consensus.mode.as_str(),
        }),
    )
}

/// Writes what a finished debate announces and contributes, inside the caller's transaction:
/// `debate.completed`, `consensus.reached` when reached, and the Knowledge Mound item of a
/// completed debate (its conclusion and winning reasoning).
pub async fn publish_outcome_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    workspace: &str,
    d: &Debate,
    failure: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut data = json!({
        "debate_id": d.id,
        "task": d.task,
        "outcome": outcome(d),
        "consensus_reached": d.consensus_reached,
        "consensus_strength": d.consensus_strength,
        "winner": d.winner,
        "confidence": d.confidence,
        "rounds_used": d.rounds_used,
    });
    if let Some(why) = failure {
        data["error"] = json!(why);
    }
    publish_in(
        &mut *conn,
        dialect,
        &event(workspace, types::DEBATE_COMPLETED, data),
    )
    .await?;
    if d.status == DebateStatus::Completed && d.consensus_reached {
        publish_in(
            &mut *conn,
            dialect,
            &event(
                workspace,
                types::CONSENSUS_REACHED,
                json!({
                    "debate_id": d.id,
                    "task": d.task,
                    "winner": d.winner,
                    "final_answer": d.final_answer,
                    "confidence": d.confidence,
                    "consensus_strength": d.consensus_strength,
                    "consensus_mode": d.consensus.mode.as_str(),
                }),
            ),
        )
        .await?;
    }
    if let Some(item) = aragora_knowledge::debate_item(d) {
        knowledge::upsert_in(&mut *conn, dialect, workspace, &item).await?;
    }
    Ok(())
}

/// Wakes local webhook workers after a commit that may have queued deliveries (PostgreSQL's
/// NOTIFY does this by itself; on SQLite they would otherwise wait for their next poll).
pub fn wake_webhooks(queue: &Queue) {
    queue.notify_local(aragora_store::webhooks::QUEUE);
}

/// Runs debate jobs.
pub struct DebateWorker {
    db: Db,
    queue: Queue,
    providers: ProviderRegistry,
}

impl DebateWorker {
    pub fn new(db: Db, queue: Queue, providers: ProviderRegistry) -> Self {
        DebateWorker {
            db,
            queue,
            providers,
        }
    }
}

fn retry(e: impl std::fmt::Display) -> JobError {
    JobError::Retry(e.to_string())
}

#[async_trait]
impl JobHandler for DebateWorker {
    async fn handle(&self, job: ClaimedJob) -> Result<(), JobError> {
        let payload: DebateJob = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::Permanent(format!("malformed debates job payload: {e}")))?;
        let fence = Fence {
            job_id: &job.id,
            attempt: job.attempt,
        };
        let ws = payload.workspace.as_str();
        let Some(row) = debates::get_row(&self.db, ws, &payload.debate_id)
            .await
            .map_err(retry)?
        else {
            return Ok(());
        };
        let debate = row.debate;
        match debate.status {
            DebateStatus::Completed | DebateStatus::Failed => return Ok(()),
            DebateStatus::Pending | DebateStatus::Running => {}
        }
        if job.attempt > RUN_ATTEMPTS {
            let mut d = debate;
            d.status = DebateStatus::Failed;
            d.rounds_used = d.rounds.len() as u32;
            let why = format!(
                "the run was interrupted {} times (crash or lost lease); giving up",
                job.attempt - 1
            );
            tracing::warn!(debate_id = %d.id, attempts = job.attempt, "failing a debate that keeps being interrupted");
            self.finish(ws, &d, None, Some(why), Vec::new(), fence)
                .await?;
            return Ok(());
        }

        let lost = CancellationToken::new();
        let mut observer = Persist {
            db: self.db.clone(),
            queue: self.queue.clone(),
            workspace: ws.to_string(),
            debate_id: debate.id.clone(),
            task: debate.task.clone(),
            job_id: job.id.clone(),
            attempt: job.attempt,
            pending_errors: Vec::new(),
            lost: lost.clone(),
        };
        let mut spec = payload.spec;
        spec.id = Some(debate.id.clone());
        let started = std::time::Instant::now();
        let run = async {
            if debate.status == DebateStatus::Pending {
                let mut d = debate.clone();
                d.status = DebateStatus::Running;
                let mut tx = self.db.begin().await.map_err(retry)?;
                if !debates::start_in(&mut tx, ws, &d, fence)
                    .await
                    .map_err(retry)?
                {
                    tx.rollback().await.map_err(retry)?;
                    return Ok(None);
                }
                publish_in(
                    &mut tx,
                    self.db.dialect(),
                    &started_event(ws, &d, spec.rounds),
                )
                .await
                .map_err(retry)?;
                tx.commit().await.map_err(retry)?;
                wake_webhooks(&self.queue);
                metrics::counter!("aragora_debates_started_total").increment(1);
                Ok(Some(
                    aragora_debate::run_with_report(spec, &self.providers, &mut observer).await,
                ))
            } else {
                tracing::info!(debate_id = %debate.id, rounds = debate.rounds.len(), attempt = job.attempt, "resuming an interrupted debate");
                metrics::counter!("aragora_debates_resumed_total").increment(1);
                Ok(Some(
                    aragora_debate::resume(spec, debate.clone(), &self.providers, &mut observer)
                        .await,
                ))
            }
        };
        let report: Option<RunReport> = tokio::select! {
            r = run => r?,
            _ = lost.cancelled() => None,
        };
        let Some(report) = report else {
            // Someone else holds the job now (or the debate moved on): leave it to them.
            return Ok(());
        };
        let facts = RunFacts {
            usage: Some(serde_json::to_value(&report.usage).unwrap_or(Value::Null)),
            calls: Some(report.calls),
            failure: report.failure.clone(),
        };
        let errors = std::mem::take(&mut observer.pending_errors);
        self.finish(
            ws,
            &report.debate,
            Some(facts),
            report.failure.clone(),
            errors,
            fence,
        )
        .await?;
        metrics::histogram!("aragora_debate_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("aragora_debates_total", "outcome" => outcome(&report.debate))
            .increment(1);
        Ok(())
    }
}

impl DebateWorker {
    /// The finishing transaction (see the module doc). Returns `Ok` also when the fence no longer
    /// holds: then nothing was written and the job's new owner finishes it.
    async fn finish(
        &self,
        ws: &str,
        d: &Debate,
        facts: Option<RunFacts>,
        failure: Option<String>,
        errors: Vec<NewEvent>,
        fence: Fence<'_>,
    ) -> Result<(), JobError> {
        let facts = facts.unwrap_or(RunFacts {
            failure: failure.clone(),
            ..Default::default()
        });
        let dialect = self.db.dialect();
        let mut tx = self.db.begin().await.map_err(retry)?;
        if !debates::finish_in(&mut tx, ws, d, &facts, Some(fence))
            .await
            .map_err(retry)?
        {
            tx.rollback().await.map_err(retry)?;
            return Ok(());
        }
        for e in &errors {
            publish_in(&mut tx, dialect, e).await.map_err(retry)?;
        }
        publish_outcome_in(&mut tx, dialect, ws, d, failure.as_deref())
            .await
            .map_err(retry)?;
        tx.commit().await.map_err(retry)?;
        wake_webhooks(&self.queue);
        Ok(())
    }
}

/// Stores progress as rounds complete; buffers `agent.error` events until the next store, so an
/// event is committed together with the failure it reports.
struct Persist {
    db: Db,
    queue: Queue,
    workspace: String,
    debate_id: String,
    task: String,
    job_id: String,
    attempt: u32,
    pending_errors: Vec<NewEvent>,
    lost: CancellationToken,
}

impl DebateObserver for Persist {
    async fn on_round_complete(&mut self, debate: &Debate, round: u32) {
        let fence = Fence {
            job_id: &self.job_id,
            attempt: self.attempt,
        };
        let dialect = self.db.dialect();
        let res: Result<bool, sqlx::Error> = async {
            let mut tx = self.db.begin().await?;
            if !debates::progress_in(&mut tx, &self.workspace, debate, fence).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            for e in &self.pending_errors {
                publish_in(&mut tx, dialect, e).await?;
            }
            tx.commit().await?;
            Ok(true)
        }
        .await;
        match res {
            Ok(true) => {
                if !self.pending_errors.is_empty() {
                    wake_webhooks(&self.queue);
                }
                self.pending_errors.clear()
            }
            Ok(false) => {
                tracing::warn!(debate_id = %debate.id, round, "lost the claim on a running debate; stopping this run");
                self.lost.cancel();
            }
            // Keep the events: the next store (or the finish) writes them with the state.
            Err(e) => {
                tracing::warn!(debate_id = %debate.id, round, error = %e, "could not store debate progress")
            }
        }
    }

    async fn on_agent_error(&mut self, agent: &str, round: u32, error: &ProviderError) {
        metrics::counter!("aragora_debate_agent_errors_total", "kind" => error.kind()).increment(1);
        self.pending_errors.push(NewEvent {
            workspace: self.workspace.clone(),
            event_type: types::AGENT_ERROR.into(),
            data: json!({
                "debate_id": self.debate_id,
                "task": self.task,
                "agent": agent,
                "round": round,
                "error_kind": error.kind(),
                "error": error.to_string(),
            }),
        });
    }
}

/// Fails debates that can no longer progress (their job is gone or dead), with their events.
/// Returns how many were failed. (Webhook workers pick their deliveries up at their next poll.)
pub async fn sweep_stranded(db: &Db) -> Result<u64, sqlx::Error> {
    let mut failed = 0;
    for (ws, id) in debates::stranded(db, 100).await? {
        let Some(row) = debates::get_row(db, &ws, &id).await? else {
            continue;
        };
        let mut d = row.debate;
        d.status = DebateStatus::Failed;
        d.rounds_used = d.rounds.len() as u32;
        let why = "the debate's queue job died (its attempts ran out); the run was abandoned";
        let facts = RunFacts {
            failure: Some(why.into()),
            ..Default::default()
        };
        let mut tx = db.begin().await?;
        if debates::finish_in(&mut tx, &ws, &d, &facts, None).await? {
            publish_outcome_in(&mut tx, db.dialect(), &ws, &d, Some(why)).await?;
            tx.commit().await?;
            failed += 1;
        } else {
            tx.rollback().await?;
        }
    }
    Ok(failed)
}

/// Runs [`sweep_stranded`] now and then every `every`, until `stop`.
pub async fn sweep_loop(db: Db, every: Duration, stop: CancellationToken) {
    loop {
        match sweep_stranded(&db).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(failed = n, "failed debates whose queue job died"),
            Err(e) => tracing::warn!(error = %e, "debate sweep failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
