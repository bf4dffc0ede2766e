//! Debate records, scoped by workspace.
//!
//! The record (`aragora_core::debate::Debate`) is stored whole as JSON; the columns beside it are
//! what lists filter and sort on, plus run facts the record has no field for (token usage, calls,
//! failure reason, start/finish times, the queue job that runs it).
//!
//! Writes made by the debates worker carry a [`Fence`]: they apply only while the worker's claim
//! on the job is still current (the job is `running` under the attempt it claimed). A worker
//! that lost its lease (it stalled and another worker re-claimed the job) can no longer change
//! the debate or publish its events.

use crate::{Db, Row};
use aragora_core::debate::{Debate, DebateStatus};
use aragora_core::time::now_ms;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

fn encode(d: &Debate) -> String {
    serde_json::to_string(d).expect("a debate always serialises")
}

fn decode(text: &str) -> Result<Debate, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn parse_status(s: &str) -> DebateStatus {
    match s {
        "running" => DebateStatus::Running,
        "completed" => DebateStatus::Completed,
        "failed" => DebateStatus::Failed,
        _ => DebateStatus::Pending,
    }
}

/// How a debate came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Started through `POST /api/v1/debates`, run by the debates worker.
    Run,
    /// A finished transcript from `POST /api/v1/debates/import` (or written directly).
    Import,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Run => "run",
            Origin::Import => "import",
        }
    }
}

/// The worker's claim on the job that runs a debate (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    pub job_id: &'a str,
    pub attempt: u32,
}

/// The fence condition with its two placeholders numbered from `n`.
fn fence_sql(n: usize) -> String {
    format!(
        "EXISTS (SELECT 1 FROM jobs WHERE jobs.id = ${n} AND jobs.status = 'running' \
         AND jobs.attempts = ${})",
        n + 1
    )
}

/// Inserts a debate (origin `import`); fails with a unique violation if the id exists in the
/// workspace.
pub async fn insert_in(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
    created_by: &str,
) -> Result<(), sqlx::Error> {
    insert_row(conn, workspace, debate, created_by, Origin::Import, None).await
}

/// Inserts a debate the worker will run through queue job `job_id` (status `pending`).
pub async fn insert_run_in(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
    created_by: &str,
    job_id: &str,
) -> Result<(), sqlx::Error> {
    insert_row(
        conn,
        workspace,
        debate,
        created_by,
        Origin::Run,
        Some(job_id),
    )
    .await
}

async fn insert_row(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
    created_by: &str,
    origin: Origin,
    job_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let finished = matches!(
        debate.status,
        DebateStatus::Completed | DebateStatus::Failed
    );
    sqlx::query(
        "INSERT INTO debates (workspace, id, task, status, consensus_mode, winner, consensus_reached, \
         confidence, consensus_strength, rounds_used, record, origin, job_id, created_by, \
         created_at, updated_at, completed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16)",
    )
    .bind(workspace)
    .bind(&debate.id)
    .bind(&debate.task)
    .bind(debate.status.as_str())
    .bind(debate.consensus.mode.as_str())
    .bind(debate.winner.as_deref())
    .bind(crate::flag(debate.consensus_reached))
    .bind(debate.confidence)
    .bind(debate.consensus_strength)
    .bind(i64::from(debate.rounds_used))
    .bind(encode(debate))
    .bind(origin.as_str())
    .bind(job_id)
    .bind(created_by)
    .bind(now)
    .bind(finished.then_some(now))
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Replaces a debate's record (progress or completion). Returns false if it does not exist.
pub async fn update_in(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "UPDATE debates SET task = $1, status = $2, winner = $3, consensus_reached = $4, \
         confidence = $5, consensus_strength = $6, rounds_used = $7, record = $8, updated_at = $9 \
         WHERE workspace = $10 AND id = $11",
    )
    .bind(&debate.task)
    .bind(debate.status.as_str())
    .bind(debate.winner.as_deref())
    .bind(crate::flag(debate.consensus_reached))
    .bind(debate.confidence)
    .bind(debate.consensus_strength)
    .bind(i64::from(debate.rounds_used))
    .bind(encode(debate))
    .bind(now_ms())
    .bind(workspace)
    .bind(&debate.id)
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() > 0)
}

/// `pending` → `running` under `fence`, storing `debate` (status `running`) and the start time.
/// Returns false when the debate is not pending any more or the fence no longer holds.
pub async fn start_in(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
    fence: Fence<'_>,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let sql = format!(
        "UPDATE debates SET status = 'running', record = $1, started_at = $2, updated_at = $2 \
         WHERE workspace = $3 AND id = $4 AND status = 'pending' AND {}",
        fence_sql(5)
    );
    let res = bind_fence(
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(encode(debate))
            .bind(now)
            .bind(workspace)
            .bind(&debate.id),
        fence,
    )
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() > 0)
}

/// Stores the progress of a running debate under `fence`. Returns false when the debate is not
/// running or the fence no longer holds.
pub async fn progress_in(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
    fence: Fence<'_>,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "UPDATE debates SET record = $1, rounds_used = $2, updated_at = $3 \
         WHERE workspace = $4 AND id = $5 AND status = 'running' AND {}",
        fence_sql(6)
    );
    let res = bind_fence(
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(encode(debate))
            .bind(debate.rounds.len() as i64)
            .bind(now_ms())
            .bind(workspace)
            .bind(&debate.id),
        fence,
    )
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() > 0)
}

/// What a run reports beyond the record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFacts {
    /// Token usage per agent as JSON (`{"agent": {"input_tokens", "output_tokens"}}`).
    pub usage: Option<serde_json::Value>,
    pub calls: Option<u32>,
    /// Why the run failed (status `failed`).
    pub failure: Option<String>,
}

/// Stores the finished `debate` (status `completed` or `failed`) if it is still unfinished, under
/// `fence` when given (the recovery sweep finishes debates whose job is gone, without one).
/// Returns false when it was already finished or the fence no longer holds, so the caller can
/// roll back whatever it meant to publish with it.
pub async fn finish_in(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
    facts: &RunFacts,
    fence: Option<Fence<'_>>,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let fence_sql = if fence.is_some() {
        format!(" AND {}", fence_sql(15))
    } else {
        String::new()
    };
    let sql = format!(
        "UPDATE debates SET status = $1, task = $2, winner = $3, consensus_reached = $4, \
         confidence = $5, consensus_strength = $6, rounds_used = $7, record = $8, usage = $9, \
         calls = $10, failure = $11, completed_at = $12, updated_at = $12, \
         started_at = COALESCE(started_at, $12) \
         WHERE workspace = $13 AND id = $14 AND status IN ('pending', 'running'){fence_sql}"
    );
    let q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(debate.status.as_str())
        .bind(&debate.task)
        .bind(debate.winner.as_deref())
        .bind(crate::flag(debate.consensus_reached))
        .bind(debate.confidence)
        .bind(debate.consensus_strength)
        .bind(i64::from(debate.rounds_used))
        .bind(encode(debate))
        .bind(facts.usage.as_ref().map(|u| u.to_string()))
        .bind(facts.calls.map(i64::from))
        .bind(facts.failure.as_deref())
        .bind(now)
        .bind(workspace)
        .bind(&debate.id);
    let q = match fence {
        Some(f) => bind_fence(q, f),
        None => q,
    };
    Ok(q.execute(&mut *conn).await?.rows_affected() > 0)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_fence<'q>(q: AnyQuery<'q>, fence: Fence<'q>) -> AnyQuery<'q> {
    q.bind(fence.job_id).bind(i64::from(fence.attempt))
}

/// The debate `id` of `workspace`, or `None` (also for another workspace's debate).
pub async fn get(db: &Db, workspace: &str, id: &str) -> Result<Option<Debate>, sqlx::Error> {
    let row = sqlx::query("SELECT record FROM debates WHERE workspace = $1 AND id = $2")
        .bind(workspace)
        .bind(id)
        .fetch_optional(db.reader())
        .await?;
    row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
}

/// Several debates of `workspace` by id in one query; missing ids are simply absent.
pub async fn get_many(
    db: &Db,
    workspace: &str,
    ids: &[String],
) -> Result<Vec<Debate>, sqlx::Error> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let placeholders = (0..chunk.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(",");
        let sql =
            format!("SELECT record FROM debates WHERE workspace = $1 AND id IN ({placeholders})");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(workspace);
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.fetch_all(db.reader()).await? {
            out.push(decode(&r.try_get::<String, _>(0)?)?);
        }
    }
    Ok(out)
}

/// A debate with its run facts and times (ms since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct DebateRow {
    pub debate: Debate,
    pub origin: String,
    pub job_id: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub usage: Option<serde_json::Value>,
    pub calls: Option<i64>,
    pub failure: Option<String>,
}

/// [`get`] with run facts and times.
pub async fn get_row(db: &Db, workspace: &str, id: &str) -> Result<Option<DebateRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT record, origin, job_id, created_by, created_at, updated_at, started_at, \
         completed_at, usage, calls, failure FROM debates WHERE workspace = $1 AND id = $2",
    )
    .bind(workspace)
    .bind(id)
    .fetch_optional(db.reader())
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(DebateRow {
        debate: decode(&r.try_get::<String, _>("record")?)?,
        origin: r.try_get("origin")?,
        job_id: r.try_get("job_id")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        started_at: r.try_get("started_at")?,
        completed_at: r.try_get("completed_at")?,
        usage: r
            .try_get::<Option<String>, _>("usage")?
            .and_then(|u| serde_json::from_str(&u).ok()),
        calls: r.try_get("calls")?,
        failure: r.try_get("failure")?,
    }))
}

/// One row of a debate list.
#[derive(Debug, Clone, PartialEq)]
pub struct DebateSummary {
    pub id: String,
    pub task: String,
    pub status: DebateStatus,
    pub consensus_mode: String,
    pub winner: Option<String>,
    pub consensus_reached: bool,
    pub confidence: f64,
    pub consensus_strength: f64,
    pub rounds_used: i64,
    pub origin: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
}

/// Filters and position of a debate list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<DebateStatus>,
    /// Continue after this `(created_at, id)` (exclusive), in the list's order.
    pub after: Option<(i64, String)>,
    pub limit: u32,
}

fn summary(r: &AnyRow) -> Result<DebateSummary, sqlx::Error> {
    Ok(DebateSummary {
        id: r.try_get("id")?,
        task: r.try_get("task")?,
        status: parse_status(&r.try_get::<String, _>("status")?),
        consensus_mode: r.try_get("consensus_mode")?,
        winner: r.try_get("winner")?,
        consensus_reached: r.try_get::<i64, _>("consensus_reached")? != 0,
        confidence: r.try_get("confidence")?,
        consensus_strength: r.try_get("consensus_strength")?,
        rounds_used: r.try_get("rounds_used")?,
        origin: r.try_get("origin")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        completed_at: r.try_get("completed_at")?,
    })
}

/// Debates of `workspace`, newest first (`created_at` desc, then `id` desc), and how many match
/// the filter in total.
pub async fn list(
    db: &Db,
    workspace: &str,
    filter: &ListFilter,
) -> Result<(Vec<DebateSummary>, i64), sqlx::Error> {
    let status = filter.status.map(|s| s.as_str()).unwrap_or("");
    let after_clause = if filter.after.is_some() {
        "AND (created_at < $4 OR (created_at = $4 AND id < $5))"
    } else {
        ""
    };
    let sql = format!(
        "SELECT id, task, status, consensus_mode, winner, consensus_reached, confidence, \
         consensus_strength, rounds_used, origin, created_at, updated_at, completed_at \
         FROM debates WHERE workspace = $1 AND ($2 = '' OR status = $2) {after_clause} \
         ORDER BY created_at DESC, id DESC LIMIT $3"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace)
        .bind(status)
        .bind(i64::from(filter.limit));
    if let Some((ts, id)) = &filter.after {
        q = q.bind(*ts).bind(id.as_str());
    }
    let rows = q.fetch_all(db.reader()).await?;
    let items = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
    let total: i64 = sqlx::query(
        "SELECT COUNT(*) FROM debates WHERE workspace = $1 AND ($2 = '' OR status = $2)",
    )
    .bind(workspace)
    .bind(status)
    .fetch_one(db.reader())
    .await?
    .try_get(0)?;
    Ok((items, total))
}

/// Unfinished debates that can no longer progress: started through the API, still `pending` or
/// `running`, but their queue job is gone or dead (its attempts ran out). `(workspace, id)`.
pub async fn stranded(db: &Db, limit: u32) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT d.workspace, d.id FROM debates d WHERE d.status IN ('pending', 'running') \
         AND d.origin = 'run' AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = d.job_id \
         AND j.status IN ('ready', 'running')) ORDER BY d.created_at LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(db.writer())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// The status column of a debate (the authority on whether it is finished).
pub async fn status(
    db: &Db,
    workspace: &str,
    id: &str,
) -> Result<Option<DebateStatus>, sqlx::Error> {
    let row = sqlx::query("SELECT status FROM debates WHERE workspace = $1 AND id = $2")
        .bind(workspace)
        .bind(id)
        .fetch_optional(db.writer())
        .await?;
    row.map(|r| Ok(parse_status(&r.try_get::<String, _>(0)?)))
        .transpose()
}

/// True for a unique-key violation (a duplicate id on insert).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
