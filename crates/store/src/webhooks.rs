//! Webhooks: registrations, delivery receipts (one row per attempt), per-endpoint breaker rows,
//! idempotency keys for published events, and the fan-out that creates deliveries inside the
//! event's own transaction ([`fan_out_in`], called by `events::publish_in`).
//!
//! A delivery is a chain of receipts sharing `delivery_id` (the `webhook-id` header). The attempt
//! that is scheduled but not yet made is a `pending` receipt with a job in [`QUEUE`] whose payload
//! names it; the worker turns it into `succeeded`/`failed` and, when a retry follows, schedules the
//! next `pending` receipt and its job in the same transaction. Jobs therefore only carry a receipt
//! id: a stale or duplicated job finds its receipt no longer pending and does nothing.

use crate::{Dialect, Row, flag};
use aragora_core::ids::{new_id, prefix};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AssertSqlSafe};
use std::collections::HashSet;

/// Job queue of webhook deliveries.
pub const QUEUE: &str = "webhooks";
/// Job-level attempts. They only cover worker crashes and database errors; HTTP retries are new
/// receipts with their own jobs.
pub(crate) const JOB_MAX_ATTEMPTS: i64 = 20;
/// Rows per multi-row INSERT (keeps binds well under SQLite's limit).
const INSERT_CHUNK: usize = 400;

pub const TRIGGER_SCHEDULED: &str = "scheduled";
pub const TRIGGER_MANUAL: &str = "manual";
pub const TRIGGER_TEST: &str = "test";

pub const STATUS_PENDING: &str = "pending";
pub const STATUS_SUCCEEDED: &str = "succeeded";
pub const STATUS_FAILED: &str = "failed";

/// A rotated-out secret that still signs until `until` (ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub until: i64,
}

/// A webhook registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub workspace: String,
    pub url: String,
    pub secret: String,
    pub previous_secrets: Vec<PreviousSecret>,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// True when a webhook subscribed to `patterns` wants `event_type` (`*` means every type).
pub fn subscribes(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| p == "*" || p == event_type)
}

/// Previous secrets still inside their grace period at `now`.
pub fn live_previous(prev: &[PreviousSecret], now: i64) -> Vec<PreviousSecret> {
    prev.iter().filter(|p| p.until > now).cloned().collect()
}

const WEBHOOK_COLS: &str = "id, workspace, url, secret, previous_secrets, event_types, description, \
     enabled, disabled_reason, created_by, created_at, updated_at";

fn webhook_from_row(r: &sqlx::any::AnyRow) -> Result<Webhook, sqlx::Error> {
    Ok(Webhook {
        id: r.try_get("id")?,
        workspace: r.try_get("workspace")?,
        url: r.try_get("url")?,
        secret: r.try_get("secret")?,
        previous_secrets: serde_json::from_str(&r.try_get::<String, _>("previous_secrets")?)
            .unwrap_or_default(),
        event_types: serde_json::from_str(&r.try_get::<String, _>("event_types")?)
            .unwrap_or_default(),
        description: r.try_get("description")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        disabled_reason: r.try_get("disabled_reason")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A webhook to register (already validated).
/// `disabled_reason` of a webhook a user paused.
const DISABLED_BY_USER: &str = "disabled by a user";

#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub workspace: String,
    pub url: String,
    pub secret: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub created_by: String,
    /// `false` registers it paused (no deliveries until enabled).
    pub enabled: bool,
}

pub async fn create(db: &crate::Db, new: &NewWebhook) -> Result<Webhook, sqlx::Error> {
    let now = aragora_core::time::now_ms();
    let w = Webhook {
        id: new_id(prefix::WEBHOOK),
        workspace: new.workspace.clone(),
        url: new.url.clone(),
        secret: new.secret.clone(),
        previous_secrets: Vec::new(),
        event_types: new.event_types.clone(),
        description: new.description.clone(),
        enabled: new.enabled,
        disabled_reason: (!new.enabled).then(|| DISABLED_BY_USER.to_string()),
        created_by: new.created_by.clone(),
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO webhook_registrations (id, workspace, url, secret, previous_secrets, \
         event_types, description, enabled, disabled_reason, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, '[]', $5, $6, $9, $10, $7, $8, $8)",
    )
    .bind(&w.id)
    .bind(&w.workspace)
    .bind(&w.url)
    .bind(&w.secret)
    .bind(json(&w.event_types))
    .bind(&w.description)
    .bind(&w.created_by)
    .bind(now)
    .bind(crate::flag(w.enabled))
    .bind(&w.disabled_reason)
    .execute(db.writer())
    .await?;
    Ok(w)
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// A webhook of `workspace` by id.
pub async fn get(
    db: &crate::Db,
    workspace: &str,
    id: &str,
) -> Result<Option<Webhook>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLS} FROM webhook_registrations WHERE id = $1 AND workspace = $2"
    )))
    .bind(id)
    .bind(workspace)
    .fetch_optional(db.reader())
    .await?;
    row.as_ref().map(webhook_from_row).transpose()
}

/// Webhooks of a workspace in creation order after the id `after`; and how many there are.
pub async fn list(
    db: &crate::Db,
    workspace: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<Webhook>, i64), sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLS} FROM webhook_registrations WHERE workspace = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    )))
    .bind(workspace)
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    let total: i64 = sqlx::query("SELECT COUNT(*) FROM webhook_registrations WHERE workspace = $1")
        .bind(workspace)
        .fetch_one(db.reader())
        .await?
        .try_get(0)?;
    let items = rows
        .iter()
        .map(webhook_from_row)
        .collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// Changes to a webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// Applies `u`; re-enabling clears the disabled reason. `None` when there is no such webhook.
pub async fn update(
    db: &crate::Db,
    workspace: &str,
    id: &str,
    u: &WebhookUpdate,
) -> Result<Option<Webhook>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLS} FROM webhook_registrations WHERE id = $1 AND workspace = $2"
    )))
    .bind(id)
    .bind(workspace)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(mut w) = row.as_ref().map(webhook_from_row).transpose()? else {
        return Ok(None);
    };
    if let Some(url) = &u.url {
        w.url = url.clone();
    }
    if let Some(t) = &u.event_types {
        w.event_types = t.clone();
    }
    if let Some(d) = &u.description {
        w.description = d.clone();
    }
    if let Some(e) = u.enabled {
        if e && !w.enabled {
            w.disabled_reason = None;
        }
        if !e && w.enabled {
            w.disabled_reason = Some(DISABLED_BY_USER.into());
        }
        w.enabled = e;
    }
    w.updated_at = aragora_core::time::now_ms();
    sqlx::query(
        "UPDATE webhook_registrations SET url = $1, event_types = $2, description = $3, \
         enabled = $4, disabled_reason = $5, updated_at = $6 WHERE id = $7",
    )
    .bind(&w.url)
    .bind(json(&w.event_types))
    .bind(&w.description)
    .bind(flag(w.enabled))
    .bind(&w.disabled_reason)
    .bind(w.updated_at)
    .bind(&w.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(w))
}

/// Replaces the secret; the old one keeps signing (as an extra `webhook-signature` entry) until
/// `grace_until` ms. Secrets whose grace period is over are dropped.
pub async fn rotate_secret(
    db: &crate::Db,
    workspace: &str,
    id: &str,
    new_secret: &str,
    grace_until: i64,
) -> Result<Option<Webhook>, sqlx::Error> {
    let now = aragora_core::time::now_ms();
    let mut tx = db.begin().await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLS} FROM webhook_registrations WHERE id = $1 AND workspace = $2"
    )))
    .bind(id)
    .bind(workspace)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(mut w) = row.as_ref().map(webhook_from_row).transpose()? else {
        return Ok(None);
    };
    let mut prev = live_previous(&w.previous_secrets, now);
    if grace_until > now && w.secret != new_secret {
        prev.insert(
            0,
            PreviousSecret {
                secret: w.secret.clone(),
                until: grace_until,
            },
        );
    }
    prev.retain(|p| p.secret != new_secret);
    prev.truncate(5);
    w.secret = new_secret.to_string();
    w.previous_secrets = prev;
    w.updated_at = now;
    sqlx::query(
        "UPDATE webhook_registrations SET secret = $1, previous_secrets = $2, updated_at = $3 \
         WHERE id = $4",
    )
    .bind(&w.secret)
    .bind(json(&w.previous_secrets))
    .bind(now)
    .bind(&w.id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(w))
}

/// Deletes a webhook with its receipts and breaker. Jobs still queued for it find no receipt and
/// finish without sending.
pub async fn delete(db: &crate::Db, workspace: &str, id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let gone = sqlx::query("DELETE FROM webhook_registrations WHERE id = $1 AND workspace = $2")
        .bind(id)
        .bind(workspace)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if gone == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM webhook_delivery_receipts WHERE webhook_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhook_breakers WHERE webhook_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Disables a webhook (e.g. after `410 Gone`), inside the caller's transaction.
pub async fn disable_in(
    conn: &mut AnyConnection,
    webhook_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_registrations SET enabled = 0, disabled_reason = $1, updated_at = $2 \
         WHERE id = $3 AND enabled = 1",
    )
    .bind(reason)
    .bind(now)
    .bind(webhook_id)
    .execute(conn)
    .await
    .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Scheduling attempts
// ---------------------------------------------------------------------------------------------

/// One attempt to schedule: a `pending` receipt plus its job.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub receipt_id: String,
    pub webhook_id: String,
    pub workspace: String,
    pub delivery_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub trigger: &'static str,
    pub run_at: i64,
}

/// Writes pending receipts and their jobs inside the caller's transaction (multi-row inserts).
/// On PostgreSQL the queue's wake-up NOTIFY fires on commit; on SQLite the caller should call
/// `Queue::notify_local(QUEUE)` after committing.
pub async fn schedule_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    attempts: &[NewAttempt],
    now: i64,
) -> Result<(), sqlx::Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    for chunk in attempts.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO webhook_delivery_receipts (id, webhook_id, workspace, delivery_id, \
             event_id, event_type, attempt, trigger, status, latest, created_at, next_attempt_at) \
             VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 10;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},${},${},${},${},${},${},${},'pending',1,${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9,
                b + 10
            ));
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in chunk {
            q = q
                .bind(&a.receipt_id)
                .bind(&a.webhook_id)
                .bind(&a.workspace)
                .bind(&a.delivery_id)
                .bind(&a.event_id)
                .bind(&a.event_type)
                .bind(i64::from(a.attempt))
                .bind(a.trigger)
                .bind(now)
                .bind(a.run_at);
        }
        q.execute(&mut *conn).await?;
    }
    let jobs: Vec<(&str, i64)> = attempts
        .iter()
        .map(|a| (a.receipt_id.as_str(), a.run_at))
        .collect();
    insert_jobs_in(conn, dialect, &jobs, now).await
}

/// Inserts delivery jobs `(receipt id, run at)` into the shared job queue (same rows as
/// `aragora_queue::enqueue_in` writes; that crate depends on this one, so it cannot be called).
async fn insert_jobs_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    jobs: &[(&str, i64)],
    now: i64,
) -> Result<(), sqlx::Error> {
    for chunk in jobs.chunks(INSERT_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO jobs (id, queue, payload, status, attempts, max_attempts, run_at, \
             created_at, updated_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 3;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${},'{QUEUE}',${},'ready',0,{JOB_MAX_ATTEMPTS},${},${n},${n})",
                b + 1,
                b + 2,
                b + 3,
                n = chunk.len() * 3 + 1
            ));
        }
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (receipt_id, run_at) in chunk {
            q = q
                .bind(new_id(prefix::JOB))
                .bind(job_payload(receipt_id))
                .bind(*run_at);
        }
        q.bind(now).execute(&mut *conn).await?;
    }
    if dialect == Dialect::Postgres && !jobs.is_empty() {
        sqlx::query("SELECT pg_notify('aragora_jobs', $1)")
            .bind(QUEUE)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The payload of a delivery job.
pub fn job_payload(receipt_id: &str) -> String {
    format!(r#"{{"receipt_id":"{receipt_id}"}}"#)
}

/// Enabled webhooks of a workspace with the event types they subscribe to.
pub async fn subscriptions_in(
    conn: &mut AnyConnection,
    workspace: &str,
) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, event_types FROM webhook_registrations WHERE workspace = $1 AND enabled = 1",
    )
    .bind(workspace)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                serde_json::from_str(&r.try_get::<String, _>("event_types")?).unwrap_or_default(),
            ))
        })
        .collect()
}

/// The first attempts of one event to every subscribed webhook in `subs`.
pub fn first_attempts(
    subs: &[(String, Vec<String>)],
    workspace: &str,
    event_id: &str,
    event_type: &str,
    now: i64,
) -> Vec<NewAttempt> {
    subs.iter()
        .filter(|(_, types)| subscribes(types, event_type))
        .map(|(webhook_id, _)| NewAttempt {
            receipt_id: new_id(prefix::RECEIPT),
            webhook_id: webhook_id.clone(),
            workspace: workspace.to_string(),
            delivery_id: new_id(prefix::DELIVERY),
            event_id: event_id.to_string(),
            event_type: event_type.to_string(),
            attempt: 1,
            trigger: TRIGGER_SCHEDULED,
            run_at: now,
        })
        .collect()
}

/// Creates a delivery for every enabled webhook of `workspace` subscribed to `event_type` (or
/// `*`), inside the event's transaction. Returns how many deliveries were created.
pub async fn fan_out_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    workspace: &str,
    event_id: &str,
    event_type: &str,
    now: i64,
) -> Result<usize, sqlx::Error> {
    let subs = subscriptions_in(conn, workspace).await?;
    let attempts = first_attempts(&subs, workspace, event_id, event_type, now);
    schedule_in(conn, dialect, &attempts, now).await?;
    Ok(attempts.len())
}

// ---------------------------------------------------------------------------------------------
// The delivery worker's reads and writes
// ---------------------------------------------------------------------------------------------

/// Everything one attempt needs, read in one query.
#[derive(Debug, Clone)]
pub struct DeliveryTask {
    pub receipt_id: String,
    pub webhook_id: String,
    pub workspace: String,
    pub delivery_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub trigger: String,
    pub status: String,
    pub url: String,
    pub secret: String,
    pub previous_secrets: Vec<PreviousSecret>,
    pub enabled: bool,
    /// The event's `data` as stored (JSON text).
    pub event_data: String,
    pub event_created_at: i64,
    /// Breaker row: state JSON and version (0 = no row yet, i.e. closed).
    pub breaker_state: Option<String>,
    pub breaker_version: i64,
}

const TASK_SELECT: &str = "SELECT r.id, r.webhook_id, r.workspace, r.delivery_id, r.event_id, \
     r.event_type, r.attempt, r.trigger, r.status, w.url, w.secret, w.previous_secrets, w.enabled, \
     e.data, e.created_at AS event_created_at, b.state AS breaker_state, \
     b.version AS breaker_version \
     FROM webhook_delivery_receipts r \
     JOIN webhook_registrations w ON w.id = r.webhook_id \
     JOIN events e ON e.id = r.event_id \
     LEFT JOIN webhook_breakers b ON b.webhook_id = r.webhook_id";

fn task_from_row(r: &sqlx::any::AnyRow) -> Result<DeliveryTask, sqlx::Error> {
    Ok(DeliveryTask {
        receipt_id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        workspace: r.try_get("workspace")?,
        delivery_id: r.try_get("delivery_id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        attempt: r
            .try_get::<i64, _>("attempt")?
            .clamp(1, i64::from(u32::MAX)) as u32,
        trigger: r.try_get("trigger")?,
        status: r.try_get("status")?,
        url: r.try_get("url")?,
        secret: r.try_get("secret")?,
        previous_secrets: serde_json::from_str(&r.try_get::<String, _>("previous_secrets")?)
            .unwrap_or_default(),
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        event_data: r.try_get("data")?,
        event_created_at: r.try_get("event_created_at")?,
        breaker_state: r.try_get("breaker_state")?,
        breaker_version: r.try_get::<Option<i64>, _>("breaker_version")?.unwrap_or(0),
    })
}

/// Loads the attempt a job points at; `None` when the receipt (or its webhook) is gone.
pub async fn load_task(
    db: &crate::Db,
    receipt_id: &str,
) -> Result<Option<DeliveryTask>, sqlx::Error> {
    Ok(load_tasks(db, &[receipt_id]).await?.pop())
}

/// Loads many attempts in one query (receipts or webhooks that are gone are missing from the
/// result).
pub async fn load_tasks(
    db: &crate::Db,
    receipt_ids: &[&str],
) -> Result<Vec<DeliveryTask>, sqlx::Error> {
    let mut out = Vec::with_capacity(receipt_ids.len());
    for chunk in receipt_ids.chunks(INSERT_CHUNK) {
        let placeholders = (1..=chunk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "{TASK_SELECT} WHERE r.id IN ({placeholders})"
        )));
        for id in chunk {
            q = q.bind(*id);
        }
        for r in q.fetch_all(db.reader()).await? {
            out.push(task_from_row(&r)?);
        }
    }
    Ok(out)
}

/// The facts of one finished attempt (or of a pending receipt resolved without dialling).
#[derive(Debug, Clone, Default)]
pub struct AttemptResult {
    pub receipt_id: String,
    /// `succeeded` or `failed`.
    pub status: &'static str,
    /// False when a retry follows (the next receipt becomes the delivery's latest).
    pub latest: bool,
    pub status_code: Option<i64>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub dialled_addr: Option<String>,
    pub duration_ms: Option<i64>,
    /// JSON object of the first response headers.
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub attempted_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
}

/// Records attempts on their pending receipts, many in one statement. Returns the receipt ids
/// that were still pending and are now recorded (a receipt recorded already, by another run of
/// the same job, is left alone).
pub async fn record_attempts_in(
    conn: &mut AnyConnection,
    attempts: &[&AttemptResult],
) -> Result<Vec<String>, sqlx::Error> {
    let mut recorded = Vec::with_capacity(attempts.len());
    for chunk in attempts.chunks(200) {
        let mut sql = String::from(
            "WITH v (id, status, latest, status_code, error_class, error_message, dialled_addr, \
             duration_ms, response_headers, response_body, attempted_at, next_attempt_at) AS (VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 12;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(CAST(${} AS TEXT), CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), \
                 CAST(${} AS TEXT), CAST(${} AS TEXT), CAST(${} AS TEXT), CAST(${} AS BIGINT), \
                 CAST(${} AS TEXT), CAST(${} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9,
                b + 10,
                b + 11,
                b + 12
            ));
        }
        sql.push_str(
            ") UPDATE webhook_delivery_receipts SET status = v.status, latest = v.latest, \
             status_code = v.status_code, error_class = v.error_class, \
             error_message = v.error_message, dialled_addr = v.dialled_addr, \
             duration_ms = v.duration_ms, response_headers = v.response_headers, \
             response_body = v.response_body, attempted_at = v.attempted_at, \
             next_attempt_at = v.next_attempt_at FROM v \
             WHERE webhook_delivery_receipts.id = v.id AND webhook_delivery_receipts.status = 'pending' \
             RETURNING webhook_delivery_receipts.id",
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in chunk {
            q = q
                .bind(&a.receipt_id)
                .bind(a.status)
                .bind(flag(a.latest))
                .bind(a.status_code)
                .bind(&a.error_class)
                .bind(&a.error_message)
                .bind(&a.dialled_addr)
                .bind(a.duration_ms)
                .bind(&a.response_headers)
                .bind(&a.response_body)
                .bind(a.attempted_at)
                .bind(a.next_attempt_at);
        }
        for r in q.fetch_all(&mut *conn).await? {
            recorded.push(r.try_get(0)?);
        }
    }
    Ok(recorded)
}

/// Moves pending attempts `(receipt id, run at)` to a later time without making them (breaker
/// open, endpoint busy): each receipt keeps its attempt number and gets a new job. Receipts no
/// longer pending are skipped. Returns how many were deferred.
pub async fn defer_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    defers: &[(&str, i64)],
    now: i64,
) -> Result<usize, sqlx::Error> {
    let mut done: Vec<(&str, i64)> = Vec::with_capacity(defers.len());
    for chunk in defers.chunks(INSERT_CHUNK) {
        let values = (0..chunk.len())
            .map(|i| {
                format!(
                    "(CAST(${} AS TEXT), CAST(${} AS BIGINT))",
                    2 * i + 1,
                    2 * i + 2
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "WITH v (id, run_at) AS (VALUES {values}) UPDATE webhook_delivery_receipts \
             SET next_attempt_at = v.run_at FROM v WHERE webhook_delivery_receipts.id = v.id \
             AND webhook_delivery_receipts.status = 'pending' RETURNING webhook_delivery_receipts.id"
        )));
        for (id, run_at) in chunk {
            q = q.bind(*id).bind(*run_at);
        }
        let ids: HashSet<String> = q
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        done.extend(chunk.iter().filter(|(id, _)| ids.contains(*id)));
    }
    insert_jobs_in(conn, dialect, &done, now).await?;
    Ok(done.len())
}

/// A breaker row: state JSON and version; `None` when the endpoint has none yet (closed).
pub async fn breaker_get_in(
    conn: &mut AnyConnection,
    webhook_id: &str,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    let row = sqlx::query("SELECT state, version FROM webhook_breakers WHERE webhook_id = $1")
        .bind(webhook_id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

/// The breaker row of a webhook, outside a transaction.
pub async fn breaker_get(
    db: &crate::Db,
    webhook_id: &str,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    let mut conn = db.reader().acquire().await?;
    breaker_get_in(&mut conn, webhook_id).await
}

/// Compare-and-swap of a breaker row: writes `state` only if the row is still at
/// `expected_version` (0 = no row yet). Returns whether the swap happened.
pub async fn breaker_cas_in(
    conn: &mut AnyConnection,
    webhook_id: &str,
    expected_version: i64,
    state: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let n = if expected_version == 0 {
        sqlx::query(
            "INSERT INTO webhook_breakers (webhook_id, state, version, updated_at) \
             VALUES ($1, $2, 1, $3) ON CONFLICT (webhook_id) DO NOTHING",
        )
        .bind(webhook_id)
        .bind(state)
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected()
    } else {
        sqlx::query(
            "UPDATE webhook_breakers SET state = $1, version = version + 1, updated_at = $2 \
             WHERE webhook_id = $3 AND version = $4",
        )
        .bind(state)
        .bind(now)
        .bind(webhook_id)
        .bind(expected_version)
        .execute(conn)
        .await?
        .rows_affected()
    };
    Ok(n > 0)
}

/// Breaker state of every enabled webhook (for the scrape-time gauge), at most `limit`:
/// `None` for an endpoint that never tripped (closed).
pub async fn breaker_states(
    db: &crate::Db,
    limit: u32,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT w.id, b.state FROM webhook_registrations w \
         LEFT JOIN webhook_breakers b ON b.webhook_id = w.id WHERE w.enabled = 1 \
         ORDER BY w.id LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------------------------------

/// A receipt row.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub id: String,
    pub webhook_id: String,
    pub delivery_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i64,
    pub trigger: String,
    pub status: String,
    pub latest: bool,
    pub status_code: Option<i64>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub dialled_addr: Option<String>,
    pub duration_ms: Option<i64>,
    pub response_headers: Option<String>,
    pub response_body: Option<String>,
    pub created_at: i64,
    pub attempted_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
}

const RECEIPT_COLS: &str = "id, webhook_id, delivery_id, event_id, event_type, attempt, trigger, \
     status, latest, status_code, error_class, error_message, dialled_addr, duration_ms, \
     response_headers, response_body, created_at, attempted_at, next_attempt_at";

fn receipt_from_row(r: &sqlx::any::AnyRow) -> Result<Receipt, sqlx::Error> {
    Ok(Receipt {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        delivery_id: r.try_get("delivery_id")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        attempt: r.try_get("attempt")?,
        trigger: r.try_get("trigger")?,
        status: r.try_get("status")?,
        latest: r.try_get::<i64, _>("latest")? != 0,
        status_code: r.try_get("status_code")?,
        error_class: r.try_get("error_class")?,
        error_message: r.try_get("error_message")?,
        dialled_addr: r.try_get("dialled_addr")?,
        duration_ms: r.try_get("duration_ms")?,
        response_headers: r.try_get("response_headers")?,
        response_body: r.try_get("response_body")?,
        created_at: r.try_get("created_at")?,
        attempted_at: r.try_get("attempted_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
    })
}

/// Receipts of a webhook, newest first, before the receipt id `before`, optionally of one
/// status; and how many match in total.
pub async fn list_receipts(
    db: &crate::Db,
    webhook_id: &str,
    status: Option<&str>,
    before: Option<&str>,
    limit: u32,
) -> Result<(Vec<Receipt>, i64), sqlx::Error> {
    let status = status.unwrap_or("");
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RECEIPT_COLS} FROM webhook_delivery_receipts WHERE webhook_id = $1 \
         AND ($2 = '' OR status = $2) AND ($3 = '' OR id < $3) ORDER BY id DESC LIMIT $4"
    )))
    .bind(webhook_id)
    .bind(status)
    .bind(before.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    let total: i64 = sqlx::query(
        "SELECT COUNT(*) FROM webhook_delivery_receipts WHERE webhook_id = $1 \
         AND ($2 = '' OR status = $2)",
    )
    .bind(webhook_id)
    .bind(status)
    .fetch_one(db.reader())
    .await?
    .try_get(0)?;
    let items = rows
        .iter()
        .map(receipt_from_row)
        .collect::<Result<_, _>>()?;
    Ok((items, total))
}

/// One receipt of a webhook.
pub async fn get_receipt(
    db: &crate::Db,
    webhook_id: &str,
    receipt_id: &str,
) -> Result<Option<Receipt>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RECEIPT_COLS} FROM webhook_delivery_receipts WHERE id = $1 AND webhook_id = $2"
    )))
    .bind(receipt_id)
    .bind(webhook_id)
    .fetch_optional(db.reader())
    .await?;
    row.as_ref().map(receipt_from_row).transpose()
}

/// Why a resend was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResendError {
    NotFound,
    /// The delivery already has an attempt waiting.
    AlreadyPending,
}

/// Schedules one more attempt (trigger `manual`, same `webhook-id`) of the delivery a receipt
/// belongs to. Returns the new pending receipt.
pub async fn resend(
    db: &crate::Db,
    webhook_id: &str,
    receipt_id: &str,
) -> Result<Result<Receipt, ResendError>, sqlx::Error> {
    let now = aragora_core::time::now_ms();
    let mut tx = db.begin().await?;
    let row = sqlx::query(
        "SELECT workspace, delivery_id, event_id, event_type FROM webhook_delivery_receipts \
         WHERE id = $1 AND webhook_id = $2",
    )
    .bind(receipt_id)
    .bind(webhook_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(r) = row else {
        return Ok(Err(ResendError::NotFound));
    };
    let delivery_id: String = r.try_get("delivery_id")?;
    let head = sqlx::query(
        "SELECT CAST(MAX(attempt) AS BIGINT), \
         CAST(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS BIGINT) \
         FROM webhook_delivery_receipts WHERE delivery_id = $1",
    )
    .bind(&delivery_id)
    .fetch_one(&mut *tx)
    .await?;
    if head.try_get::<Option<i64>, _>(1)?.unwrap_or(0) > 0 {
        return Ok(Err(ResendError::AlreadyPending));
    }
    let attempt = head.try_get::<Option<i64>, _>(0)?.unwrap_or(0) + 1;
    sqlx::query(
        "UPDATE webhook_delivery_receipts SET latest = 0 WHERE delivery_id = $1 AND latest = 1",
    )
    .bind(&delivery_id)
    .execute(&mut *tx)
    .await?;
    let new = NewAttempt {
        receipt_id: new_id(prefix::RECEIPT),
        webhook_id: webhook_id.to_string(),
        workspace: r.try_get("workspace")?,
        delivery_id,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        attempt: attempt.clamp(1, i64::from(u32::MAX)) as u32,
        trigger: TRIGGER_MANUAL,
        run_at: now,
    };
    schedule_in(&mut tx, db.dialect(), std::slice::from_ref(&new), now).await?;
    // Read before commit: a worker may run the attempt the moment it is committed, and the
    // caller is told what was accepted (the pending attempt), not how far it already got.
    let created = sqlx::query(AssertSqlSafe(format!(
        "SELECT {RECEIPT_COLS} FROM webhook_delivery_receipts WHERE id = $1"
    )))
    .bind(&new.receipt_id)
    .fetch_one(&mut *tx)
    .await?;
    let created = receipt_from_row(&created)?;
    tx.commit().await?;
    Ok(Ok(created))
}

/// Schedules a manual attempt for every delivery of the webhook whose latest attempt failed at or
/// after `since` ms (test deliveries excepted), at most `limit`. Returns how many.
pub async fn recover_failed_since(
    db: &crate::Db,
    webhook_id: &str,
    since: i64,
    limit: u32,
) -> Result<usize, sqlx::Error> {
    let now = aragora_core::time::now_ms();
    let mut tx = db.begin().await?;
    let rows = sqlx::query(
        "SELECT workspace, delivery_id, event_id, event_type, attempt FROM webhook_delivery_receipts \
         WHERE webhook_id = $1 AND status = 'failed' AND latest = 1 AND trigger <> 'test' \
         AND COALESCE(attempted_at, created_at) >= $2 ORDER BY id LIMIT $3",
    )
    .bind(webhook_id)
    .bind(since)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let mut attempts = Vec::with_capacity(rows.len());
    for r in &rows {
        attempts.push(NewAttempt {
            receipt_id: new_id(prefix::RECEIPT),
            webhook_id: webhook_id.to_string(),
            workspace: r.try_get("workspace")?,
            delivery_id: r.try_get("delivery_id")?,
            event_id: r.try_get("event_id")?,
            event_type: r.try_get("event_type")?,
            attempt: (r.try_get::<i64, _>("attempt")? + 1).clamp(1, i64::from(u32::MAX)) as u32,
            trigger: TRIGGER_MANUAL,
            run_at: now,
        });
    }
    for chunk in attempts.chunks(INSERT_CHUNK) {
        let placeholders = (0..chunk.len())
            .map(|i| format!("${}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "UPDATE webhook_delivery_receipts SET latest = 0 WHERE latest = 1 \
             AND delivery_id IN ({placeholders})"
        )));
        for a in chunk {
            q = q.bind(&a.delivery_id);
        }
        q.execute(&mut *tx).await?;
    }
    schedule_in(&mut tx, db.dialect(), &attempts, now).await?;
    tx.commit().await?;
    Ok(attempts.len())
}

/// Records a test delivery that was made synchronously: its event and its (final) receipt.
pub async fn record_test_delivery(
    db: &crate::Db,
    webhook: &Webhook,
    event: &aragora_core::event::Event,
    event_created_at: i64,
    delivery_id: &str,
    result: &AttemptResult,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO events (id, workspace, event_type, data, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&event.event_id)
    .bind(&webhook.workspace)
    .bind(&event.event_type)
    .bind(event.data.to_string())
    .bind(event_created_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_delivery_receipts (id, webhook_id, workspace, delivery_id, event_id, \
         event_type, attempt, trigger, status, latest, status_code, error_class, error_message, \
         dialled_addr, duration_ms, response_headers, response_body, created_at, attempted_at, \
         next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 1, 'test', $7, 1, $8, $9, $10, $11, \
         $12, $13, $14, $15, $15, NULL)",
    )
    .bind(&result.receipt_id)
    .bind(&webhook.id)
    .bind(&webhook.workspace)
    .bind(delivery_id)
    .bind(&event.event_id)
    .bind(&event.event_type)
    .bind(result.status)
    .bind(result.status_code)
    .bind(&result.error_class)
    .bind(&result.error_message)
    .bind(&result.dialled_addr)
    .bind(result.duration_ms)
    .bind(&result.response_headers)
    .bind(&result.response_body)
    .bind(result.attempted_at.unwrap_or(event_created_at))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Per-endpoint numbers over a time window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub attempts: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Attempts scheduled and not yet made (whole history, not only the window).
    pub pending: i64,
    pub avg_duration_ms: Option<f64>,
    /// Durations of the most recent attempts in the window (at most 1000), for percentiles.
    pub recent_durations_ms: Vec<i64>,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
}

/// The lowest receipt id created at or after `ms` (ids are UUIDv7: time first).
fn receipt_id_floor(ms: i64) -> String {
    format!("{}-{:012x}", prefix::RECEIPT, ms.max(0))
}

pub async fn stats(db: &crate::Db, webhook_id: &str, since: i64) -> Result<Stats, sqlx::Error> {
    let floor = receipt_id_floor(since);
    let row = sqlx::query(
        "SELECT CAST(SUM(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT) AS ok, \
         CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS bad, \
         CAST(SUM(CASE WHEN status <> 'pending' THEN duration_ms ELSE 0 END) AS BIGINT) AS dur, \
         CAST(SUM(CASE WHEN status <> 'pending' AND duration_ms IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS timed, \
         CAST(MAX(CASE WHEN status = 'succeeded' THEN attempted_at END) AS BIGINT) AS last_ok, \
         CAST(MAX(CASE WHEN status = 'failed' THEN attempted_at END) AS BIGINT) AS last_bad \
         FROM webhook_delivery_receipts WHERE webhook_id = $1 AND id >= $2",
    )
    .bind(webhook_id)
    .bind(&floor)
    .fetch_one(db.reader())
    .await?;
    let ok = row.try_get::<Option<i64>, _>("ok")?.unwrap_or(0);
    let bad = row.try_get::<Option<i64>, _>("bad")?.unwrap_or(0);
    let dur = row.try_get::<Option<i64>, _>("dur")?.unwrap_or(0);
    let timed = row.try_get::<Option<i64>, _>("timed")?.unwrap_or(0);
    let pending: i64 = sqlx::query(
        "SELECT COUNT(*) FROM webhook_delivery_receipts WHERE webhook_id = $1 AND status = 'pending'",
    )
    .bind(webhook_id)
    .fetch_one(db.reader())
    .await?
    .try_get(0)?;
    let recent = sqlx::query(
        "SELECT duration_ms FROM webhook_delivery_receipts WHERE webhook_id = $1 AND id >= $2 \
         AND status <> 'pending' AND duration_ms IS NOT NULL ORDER BY id DESC LIMIT 1000",
    )
    .bind(webhook_id)
    .bind(&floor)
    .fetch_all(db.reader())
    .await?
    .iter()
    .map(|r| r.try_get::<i64, _>(0))
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Stats {
        attempts: ok + bad,
        succeeded: ok,
        failed: bad,
        pending,
        avg_duration_ms: (timed > 0).then(|| dur as f64 / timed as f64),
        recent_durations_ms: recent,
        last_success_at: row.try_get("last_ok")?,
        last_failure_at: row.try_get("last_bad")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Idempotency keys
// ---------------------------------------------------------------------------------------------

/// A stored response for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: String,
    pub status_code: i64,
    pub response: String,
}

/// Claims `key` for this request inside the caller's transaction (a key older than `expired_before`
/// ms is forgotten first). True when the key is new and the caller should proceed and then call
/// [`idempotency_finish_in`]; false when a response is already stored (read it with
/// [`idempotency_get`] after rolling back). On PostgreSQL a concurrent holder of the same key
/// makes this wait until that transaction ends.
pub async fn idempotency_claim_in(
    conn: &mut AnyConnection,
    workspace: &str,
    scope: &str,
    key: &str,
    request_hash: &str,
    now: i64,
    expired_before: i64,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE workspace = $1 AND scope = $2 AND key = $3 \
         AND created_at < $4",
    )
    .bind(workspace)
    .bind(scope)
    .bind(key)
    .bind(expired_before)
    .execute(&mut *conn)
    .await?;
    let n = sqlx::query(
        "INSERT INTO idempotency_keys (workspace, scope, key, request_hash, status_code, response, \
         created_at) VALUES ($1, $2, $3, $4, 0, '', $5) \
         ON CONFLICT (workspace, scope, key) DO NOTHING",
    )
    .bind(workspace)
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// Stores the response for a key claimed with [`idempotency_claim_in`], in the same transaction.
pub async fn idempotency_finish_in(
    conn: &mut AnyConnection,
    workspace: &str,
    scope: &str,
    key: &str,
    status_code: u16,
    response: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status_code = $1, response = $2 \
         WHERE workspace = $3 AND scope = $4 AND key = $5",
    )
    .bind(i64::from(status_code))
    .bind(response)
    .bind(workspace)
    .bind(scope)
    .bind(key)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The stored response of a key.
pub async fn idempotency_get(
    db: &crate::Db,
    workspace: &str,
    scope: &str,
    key: &str,
) -> Result<Option<StoredResponse>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT request_hash, status_code, response FROM idempotency_keys \
         WHERE workspace = $1 AND scope = $2 AND key = $3",
    )
    .bind(workspace)
    .bind(scope)
    .bind(key)
    .fetch_optional(db.writer())
    .await?;
    row.map(|r| {
        Ok(StoredResponse {
            request_hash: r.try_get(0)?,
            status_code: r.try_get(1)?,
            response: r.try_get(2)?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_match_exact_types_and_star() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(subscribes(&s(&["debate.completed"]), "debate.completed"));
        assert!(!subscribes(&s(&["debate.completed"]), "debate.started"));
        assert!(subscribes(&s(&["*"]), "order.created"));
        assert!(!subscribes(&[], "order.created"));
    }

    #[test]
    fn receipt_id_floor_orders_with_real_ids() {
        let before = receipt_id_floor(aragora_core::time::now_ms() - 1);
        let id = new_id(prefix::RECEIPT);
        let after = receipt_id_floor(aragora_core::time::now_ms() + 10);
        assert!(before <= id && id < after, "{before} {id} {after}");
    }

    #[test]
    fn previous_secrets_expire() {
        let p = vec![
            PreviousSecret {
                secret: "a".into(),
                until: 10,
            },
            PreviousSecret {
                secret: "b".into(),
                until: 30,
            },
        ];
        assert_eq!(live_previous(&p, 20), vec![p[1].clone()]);
    }
}
