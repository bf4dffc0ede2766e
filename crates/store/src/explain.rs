//! Explainability storage: batch jobs and their per-debate results, stored explanations, and the
//! idempotency keys batch submissions are deduplicated with.
//!
//! A batch's results are keyed by `(batch_id, position)` and inserted with
//! `ON CONFLICT DO NOTHING … RETURNING status`: a worker that resumes after a crash (or races a
//! worker whose lease it took over) never writes a second result for a position, and the
//! counters are advanced by exactly the rows that were new, in the same transaction.

use crate::{Db, Row};
use aragora_core::time::now_ms;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use std::collections::HashMap;

/// A batch's phase: the fine lifecycle state, as stored (column `status`) and shown as `phase`
/// (and as the `status` label of the batch metrics).
pub mod phase {
    /// Submitted, no worker has started it.
    pub const PENDING: &str = "pending";
    /// A worker started it and it has not finished.
    pub const PROCESSING: &str = "processing";
    /// Finished, every debate explained.
    pub const COMPLETED: &str = "completed";
    /// Finished, some debates explained and some not (`error`/`not_found`, or never handled
    /// because the batch's job died: see [`Batch::error`](super::Batch::error)).
    pub const PARTIAL: &str = "partial";
    /// Finished, no debate explained.
    pub const FAILED: &str = "failed";
}

/// A batch's `status` as the guide names it: `processing` until every debate id has been handled
/// (or the batch's job died first), then `completed` whatever the outcome (the outcome is in the
/// phase, the counts and the batch's `error`).
pub mod status {
    pub const PROCESSING: &str = "processing";
    pub const COMPLETED: &str = "completed";
}

/// Per-debate result states.
pub mod outcome {
    pub const SUCCESS: &str = "success";
    pub const ERROR: &str = "error";
    pub const NOT_FOUND: &str = "not_found";
}

/// How long an `Idempotency-Key` is remembered; after that the key may be reused.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

/// Rows per multi-row INSERT (9 binds each stays far below both dialects' parameter limits).
const INSERT_ROWS: usize = 400;

/// A batch job without its (possibly long) id list.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: String,
    pub workspace: String,
    /// One of [`phase`] (column `status`).
    pub phase: String,
    pub total: i64,
    pub processed: i64,
    pub succeeded: i64,
    /// Results that are not `success` (`error` + `not_found`).
    pub failed: i64,
    pub not_found: i64,
    /// The options as submitted (JSON).
    pub options: String,
    pub idempotency_key: Option<String>,
    /// How many times a worker started (or resumed) the batch.
    pub runs: i64,
    pub created_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
    /// Why the batch ended before every debate id was handled (its queue job died: attempts used
    /// up, or a permanent failure); `None` otherwise.
    pub error: Option<String>,
}

impl Batch {
    /// True once every debate id has been handled, or the batch's job died first (the phase is
    /// `completed`, `partial` or `failed`); the batch will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.phase.as_str(),
            phase::COMPLETED | phase::PARTIAL | phase::FAILED
        )
    }

    /// The guide's `status`: one of [`status`].
    pub fn status(&self) -> &'static str {
        if self.is_terminal() {
            status::COMPLETED
        } else {
            status::PROCESSING
        }
    }
}

const BATCH_COLUMNS: &str = "id, workspace, status, total, processed, succeeded, failed, not_found, \
     options, idempotency_key, runs, created_by, created_at, started_at, completed_at, updated_at, error";

fn batch_from_row(r: &AnyRow) -> Result<Batch, sqlx::Error> {
    Ok(Batch {
        id: r.try_get("id")?,
        workspace: r.try_get("workspace")?,
        phase: r.try_get("status")?,
        total: r.try_get("total")?,
        processed: r.try_get("processed")?,
        succeeded: r.try_get("succeeded")?,
        failed: r.try_get("failed")?,
        not_found: r.try_get("not_found")?,
        options: r.try_get("options")?,
        idempotency_key: r.try_get("idempotency_key")?,
        runs: r.try_get("runs")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        completed_at: r.try_get("completed_at")?,
        updated_at: r.try_get("updated_at")?,
        error: r.try_get("error")?,
    })
}

/// A batch to create.
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    pub id: &'a str,
    pub workspace: &'a str,
    pub debate_ids: &'a [String],
    /// Options JSON as the worker will read it.
    pub options: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub created_by: &'a str,
    /// The id of the queue job that will run it.
    pub job_id: &'a str,
}

/// Inserts a batch in phase `pending` inside the caller's transaction (enqueue its job, `job_id`,
/// in the same one).
pub async fn insert_batch_in(
    conn: &mut AnyConnection,
    new: &NewBatch<'_>,
) -> Result<Batch, sqlx::Error> {
    let now = now_ms();
    let ids = serde_json::to_string(new.debate_ids).expect("strings serialise");
    let sql = format!(
        "INSERT INTO batch_explainability_jobs (id, workspace, status, total, debate_ids, options, \
         idempotency_key, created_by, created_at, updated_at, job_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) RETURNING {BATCH_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(new.id)
        .bind(new.workspace)
        .bind(phase::PENDING)
        .bind(new.debate_ids.len() as i64)
        .bind(ids)
        .bind(new.options)
        .bind(new.idempotency_key)
        .bind(new.created_by)
        .bind(now)
        .bind(new.job_id)
        .fetch_one(&mut *conn)
        .await?;
    batch_from_row(&row)
}

/// The batch `id` of `workspace` (`None` also for another workspace's batch).
pub async fn get_batch(db: &Db, workspace: &str, id: &str) -> Result<Option<Batch>, sqlx::Error> {
    let sql = format!(
        "SELECT {BATCH_COLUMNS} FROM batch_explainability_jobs WHERE workspace = $1 AND id = $2"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace)
        .bind(id)
        .fetch_optional(db.reader())
        .await?
        .as_ref()
        .map(batch_from_row)
        .transpose()
}

/// What a worker needs to run a batch.
#[derive(Debug, Clone)]
pub struct BatchWork {
    pub batch: Batch,
    pub debate_ids: Vec<String>,
}

/// Starts (or resumes) a run of batch `id`: counts the run, moves phase `pending` to
/// `processing` and sets `started_at` once. Terminal batches are returned unchanged. `None` if it does not exist.
pub async fn start_run(db: &Db, id: &str) -> Result<Option<BatchWork>, sqlx::Error> {
    let now = now_ms();
    let sql = format!(
        "UPDATE batch_explainability_jobs SET runs = runs + 1, \
         status = CASE WHEN status = $1 THEN $2 ELSE status END, \
         started_at = COALESCE(started_at, $3), updated_at = $3 \
         WHERE id = $4 AND status IN ($1, $2) RETURNING {BATCH_COLUMNS}, debate_ids"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(phase::PENDING)
        .bind(phase::PROCESSING)
        .bind(now)
        .bind(id)
        .fetch_optional(db.writer())
        .await?;
    let row = match row {
        Some(r) => r,
        None => {
            // Terminal (nothing to do) or missing.
            let sql =
                format!("SELECT {BATCH_COLUMNS} FROM batch_explainability_jobs WHERE id = $1");
            return sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(db.writer())
                .await?
                .map(|r| {
                    Ok(BatchWork {
                        batch: batch_from_row(&r)?,
                        debate_ids: Vec::new(),
                    })
                })
                .transpose();
        }
    };
    let ids: String = row.try_get("debate_ids")?;
    Ok(Some(BatchWork {
        batch: batch_from_row(&row)?,
        debate_ids: serde_json::from_str(&ids).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    }))
}

/// Positions of `batch_id` that already have a result.
pub async fn done_positions(db: &Db, batch_id: &str) -> Result<Vec<i64>, sqlx::Error> {
    let rows = sqlx::query("SELECT position FROM batch_explainability_results WHERE batch_id = $1")
        .bind(batch_id)
        .fetch_all(db.writer())
        .await?;
    rows.iter().map(|r| r.try_get::<i64, _>(0)).collect()
}

/// One debate's result.
#[derive(Debug, Clone)]
pub struct NewResult {
    pub position: i64,
    pub debate_id: String,
    /// One of [`outcome`].
    pub status: &'static str,
    /// JSON text (an object, or a string for text formats).
    pub explanation: Option<String>,
    pub error: Option<String>,
    pub processing_time_ms: f64,
    /// The run of the batch that computed it.
    pub attempt: i64,
}

/// An explanation to keep for `GET /api/v1/explanations/{decision_id}`.
#[derive(Debug, Clone)]
pub struct StoredExplanation {
    pub decision_id: String,
    pub debate_id: String,
    /// The options it was computed with (JSON).
    pub options: String,
    pub algorithm_version: String,
    /// The JSON explanation.
    pub explanation: String,
}

/// What one [`record_results`] call added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Added {
    pub processed: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub not_found: i64,
}

/// Persists results (positions that already have one are skipped), their explanations, and the
/// batch counters, in one transaction.
pub async fn record_results(
    db: &Db,
    batch_id: &str,
    workspace: &str,
    results: &[NewResult],
    explanations: &[StoredExplanation],
) -> Result<Added, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let mut added = Added::default();
    for chunk in results.chunks(INSERT_ROWS) {
        let mut sql = String::with_capacity(200 + chunk.len() * 48);
        sql.push_str(
            "INSERT INTO batch_explainability_results (batch_id, position, debate_id, status, \
             explanation, error, processing_time_ms, attempt, created_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 7 + 3;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "($1, ${b}, ${}, ${}, ${}, ${}, ${}, ${}, $2)",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
        }
        sql.push_str(" ON CONFLICT (batch_id, position) DO NOTHING RETURNING status");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(batch_id)
            .bind(now);
        for r in chunk {
            q = q
                .bind(r.position)
                .bind(&r.debate_id)
                .bind(r.status)
                .bind(r.explanation.as_deref())
                .bind(r.error.as_deref())
                .bind(r.processing_time_ms)
                .bind(r.attempt);
        }
        for row in q.fetch_all(&mut *tx).await? {
            let s: String = row.try_get(0)?;
            added.processed += 1;
            match s.as_str() {
                outcome::SUCCESS => added.succeeded += 1,
                outcome::NOT_FOUND => {
                    added.failed += 1;
                    added.not_found += 1;
                }
                _ => added.failed += 1,
            }
        }
    }
    upsert_explanations_in(
        &mut tx,
        workspace,
        explanations,
        &format!("batch:{batch_id}"),
    )
    .await?;
    if added.processed > 0 {
        sqlx::query(
            "UPDATE batch_explainability_jobs SET processed = processed + $1, \
             succeeded = succeeded + $2, failed = failed + $3, not_found = not_found + $4, \
             updated_at = $5 WHERE id = $6",
        )
        .bind(added.processed)
        .bind(added.succeeded)
        .bind(added.failed)
        .bind(added.not_found)
        .bind(now)
        .bind(batch_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Moves a fully processed batch to its final phase (`completed` when nothing failed, `failed`
/// when nothing succeeded, else `partial`; its `status` is `completed` in every case) inside the
/// caller's transaction. Returns the batch if this call made the transition (so the caller
/// publishes the completion event exactly once).
pub async fn finish_in(conn: &mut AnyConnection, id: &str) -> Result<Option<Batch>, sqlx::Error> {
    let now = now_ms();
    let sql = format!(
        "UPDATE batch_explainability_jobs SET \
         status = CASE WHEN failed = 0 THEN $1 WHEN succeeded = 0 THEN $2 ELSE $3 END, \
         completed_at = $4, updated_at = $4 \
         WHERE id = $5 AND status IN ($6, $7) AND processed >= total RETURNING {BATCH_COLUMNS}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(phase::COMPLETED)
        .bind(phase::FAILED)
        .bind(phase::PARTIAL)
        .bind(now)
        .bind(id)
        .bind(phase::PENDING)
        .bind(phase::PROCESSING)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(batch_from_row)
        .transpose()
}

/// Records that the rest of batch `id` now runs as queue job `job_id` (a graceful shutdown handed
/// it on), inside the transaction that enqueues that job.
pub async fn set_job_in(
    conn: &mut AnyConnection,
    id: &str,
    job_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE batch_explainability_jobs SET job_id = $1, updated_at = $2 WHERE id = $3")
        .bind(job_id)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

/// Ends an unfinished batch whose queue job `job_id` died (its attempts used up, or a permanent
/// failure), inside the caller's transaction (the one that marks the job dead, or a sweep's).
/// The phase follows [`finish_in`]'s rule over what was handled: when every id has a result, the
/// same phase [`finish_in`] would give (and no error); otherwise `partial` if some debate was
/// explained, else `failed`, with `error` set. Idempotent: a batch that is already terminal, or
/// whose current job is another one (the rest was handed on), is left alone. Returns the batch if
/// this call ended it (so the caller publishes the completion event exactly once).
pub async fn abandon_in(
    conn: &mut AnyConnection,
    id: &str,
    job_id: &str,
    error: &str,
) -> Result<Option<Batch>, sqlx::Error> {
    let now = now_ms();
    let sql = format!(
        "UPDATE batch_explainability_jobs SET \
         status = CASE WHEN processed >= total AND failed = 0 THEN $1 \
         WHEN succeeded = 0 THEN $2 ELSE $3 END, \
         error = CASE WHEN processed >= total THEN NULL ELSE $4 END, \
         completed_at = $5, updated_at = $5 \
         WHERE id = $6 AND status IN ($7, $8) AND (job_id IS NULL OR job_id = $9) \
         RETURNING {BATCH_COLUMNS}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(phase::COMPLETED)
        .bind(phase::FAILED)
        .bind(phase::PARTIAL)
        .bind(error)
        .bind(now)
        .bind(id)
        .bind(phase::PENDING)
        .bind(phase::PROCESSING)
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(batch_from_row)
        .transpose()
}

/// An unfinished batch whose current queue job is dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranded {
    pub id: String,
    pub workspace: String,
    pub job_id: String,
    /// Runs the job had.
    pub attempts: i64,
    /// The job's last error.
    pub last_error: Option<String>,
}

/// Unfinished batches whose current queue job is dead (buried without ending its batch, e.g. by
/// the lease reaper after its worker died on every attempt), oldest first.
pub async fn stranded(db: &Db, limit: u32) -> Result<Vec<Stranded>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT b.id, b.workspace, j.id, j.attempts, j.last_error \
         FROM batch_explainability_jobs b JOIN jobs j ON j.id = b.job_id \
         WHERE b.status IN ('pending', 'processing') AND j.status = 'dead' \
         ORDER BY b.created_at, b.id LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(db.writer())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Stranded {
                id: r.try_get(0)?,
                workspace: r.try_get(1)?,
                job_id: r.try_get(2)?,
                attempts: r.try_get(3)?,
                last_error: r.try_get(4)?,
            })
        })
        .collect()
}

/// A stored result.
#[derive(Debug, Clone)]
pub struct ResultRow {
    pub position: i64,
    pub debate_id: String,
    pub status: String,
    pub explanation: Option<String>,
    pub error: Option<String>,
    pub processing_time_ms: f64,
    pub attempt: i64,
    pub created_at: i64,
}

/// Results of `batch_id` after position `after` (exclusive), in position order, optionally of one
/// status, plus how many match in total.
pub async fn list_results(
    db: &Db,
    batch_id: &str,
    after: Option<i64>,
    limit: u32,
    status: Option<&str>,
) -> Result<(Vec<ResultRow>, i64), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT position, debate_id, status, explanation, error, processing_time_ms, attempt, \
         created_at FROM batch_explainability_results \
         WHERE batch_id = $1 AND position > $2 AND ($3 = '' OR status = $3) \
         ORDER BY position LIMIT $4",
    )
    .bind(batch_id)
    .bind(after.unwrap_or(-1))
    .bind(status.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    let total: i64 = sqlx::query(
        "SELECT COUNT(*) FROM batch_explainability_results \
         WHERE batch_id = $1 AND ($2 = '' OR status = $2)",
    )
    .bind(batch_id)
    .bind(status.unwrap_or(""))
    .fetch_one(db.reader())
    .await?
    .try_get(0)?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(ResultRow {
                position: r.try_get("position")?,
                debate_id: r.try_get("debate_id")?,
                status: r.try_get("status")?,
                explanation: r.try_get("explanation")?,
                error: r.try_get("error")?,
                processing_time_ms: r.try_get("processing_time_ms")?,
                attempt: r.try_get("attempt")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((items, total))
}

/// Unfinished batches over all workspaces by phase: `(pending, processing)` (both have `status`
/// `processing`). `pending` = submitted, no
/// worker has started it; `processing` = a worker started it and it has not finished (including
/// one handed back to the queue at shutdown or waiting for its lease to expire after a crash).
pub async fn count_unfinished(db: &Db) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN status = 'processing' THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM batch_explainability_jobs WHERE status IN ('pending', 'processing')",
    )
    .fetch_one(db.reader())
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Inserts or replaces stored explanations (the latest computation wins) inside the caller's
/// transaction. `source` says who computed them (`request`, `batch:<id>`).
pub async fn upsert_explanations_in(
    conn: &mut AnyConnection,
    workspace: &str,
    explanations: &[StoredExplanation],
    source: &str,
) -> Result<(), sqlx::Error> {
    if explanations.is_empty() {
        return Ok(());
    }
    // One statement may not touch a row twice (PostgreSQL refuses): keep the last per decision.
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(explanations.len());
    for (i, e) in explanations.iter().enumerate() {
        last.insert(e.decision_id.as_str(), i);
    }
    let mut unique: Vec<&StoredExplanation> = explanations
        .iter()
        .enumerate()
        .filter(|(i, e)| last[e.decision_id.as_str()] == *i)
        .map(|(_, e)| e)
        .collect();
    unique.sort_by(|a, b| a.decision_id.cmp(&b.decision_id));
    let now = now_ms();
    for chunk in unique.chunks(INSERT_ROWS) {
        let mut sql = String::with_capacity(300 + chunk.len() * 40);
        sql.push_str(
            "INSERT INTO explanations (workspace, source, created_at, updated_at, decision_id, \
             debate_id, options, algorithm_version, explanation) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 5 + 4;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "($1, $2, $3, $3, ${b}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4
            ));
        }
        sql.push_str(
            " ON CONFLICT (workspace, decision_id) DO UPDATE SET debate_id = excluded.debate_id, \
             options = excluded.options, algorithm_version = excluded.algorithm_version, \
             explanation = excluded.explanation, source = excluded.source, \
             updated_at = excluded.updated_at",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace)
            .bind(source)
            .bind(now);
        for e in chunk {
            q = q
                .bind(&e.decision_id)
                .bind(&e.debate_id)
                .bind(&e.options)
                .bind(&e.algorithm_version)
                .bind(&e.explanation);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Stores one explanation in its own transaction.
pub async fn upsert_explanation(
    db: &Db,
    workspace: &str,
    explanation: &StoredExplanation,
    source: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    upsert_explanations_in(
        &mut tx,
        workspace,
        std::slice::from_ref(explanation),
        source,
    )
    .await?;
    tx.commit().await
}

/// A stored explanation and where it came from.
#[derive(Debug, Clone)]
pub struct ExplanationRow {
    pub decision_id: String,
    pub debate_id: String,
    pub options: String,
    pub algorithm_version: String,
    pub explanation: String,
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The stored explanation of `decision_id` in `workspace`.
pub async fn get_explanation(
    db: &Db,
    workspace: &str,
    decision_id: &str,
) -> Result<Option<ExplanationRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT decision_id, debate_id, options, algorithm_version, explanation, source, \
         created_at, updated_at FROM explanations WHERE workspace = $1 AND decision_id = $2",
    )
    .bind(workspace)
    .bind(decision_id)
    .fetch_optional(db.reader())
    .await?;
    row.map(|r| {
        Ok(ExplanationRow {
            decision_id: r.try_get("decision_id")?,
            debate_id: r.try_get("debate_id")?,
            options: r.try_get("options")?,
            algorithm_version: r.try_get("algorithm_version")?,
            explanation: r.try_get("explanation")?,
            source: r.try_get("source")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    })
    .transpose()
}

/// The result of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new (or its earlier use expired): it now maps to this request.
    Claimed,
    /// The key was used within [`IDEMPOTENCY_TTL_MS`]: the earlier request's hash and response.
    Existing {
        request_hash: String,
        status_code: i64,
        response: String,
    },
}

/// Claims `key` for a request (by its hash) and records the response it gets, inside the
/// caller's transaction, so the key exists exactly when the work it names was committed. A
/// concurrent claim of the same key waits for this transaction (unique key) and then sees it.
pub async fn claim_idempotency_key_in(
    conn: &mut AnyConnection,
    workspace: &str,
    scope: &str,
    key: &str,
    request_hash: &str,
    status_code: i64,
    response: &str,
) -> Result<KeyClaim, sqlx::Error> {
    let now = now_ms();
    let res = sqlx::query(
        "INSERT INTO idempotency_keys (workspace, scope, key, request_hash, status_code, response, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (workspace, scope, key) DO UPDATE SET request_hash = excluded.request_hash, \
         status_code = excluded.status_code, response = excluded.response, \
         created_at = excluded.created_at WHERE idempotency_keys.created_at < $8",
    )
    .bind(workspace)
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .bind(status_code)
    .bind(response)
    .bind(now)
    .bind(now - IDEMPOTENCY_TTL_MS)
    .execute(&mut *conn)
    .await?;
    if res.rows_affected() > 0 {
        return Ok(KeyClaim::Claimed);
    }
    let row = sqlx::query(
        "SELECT request_hash, status_code, response FROM idempotency_keys \
         WHERE workspace = $1 AND scope = $2 AND key = $3",
    )
    .bind(workspace)
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(KeyClaim::Existing {
        request_hash: row.try_get(0)?,
        status_code: row.try_get(1)?,
        response: row.try_get(2)?,
    })
}
