//! CDC connectors run by the server: settings, fenced checkpoints, leases and the recent-events
//! ring. A lease row per connector (with a fencing token that grows on every takeover) makes
//! exactly one node run each connector; checkpoints are written only under the current token.

use crate::{Db, Dialect, Row};
use aragora_core::time::now_ms;
use serde_json::Value;
use sqlx::any::AnyRow;

/// A connector as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorRecord {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub kind: String,
    pub config: Value,
    /// `{"username", "password_env" | "password_file"}`: references, never secrets.
    pub credentials: Value,
    pub handlers: Vec<String>,
    /// `running`, `stopped` or `deleting`.
    pub desired_state: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, workspace, name, kind, config, credentials, handlers, desired_state, \
                       created_by, created_at, updated_at";

fn record(r: &AnyRow) -> Result<ConnectorRecord, sqlx::Error> {
    let json = |c: &str| -> Result<Value, sqlx::Error> {
        Ok(serde_json::from_str(&r.try_get::<String, _>(c)?).unwrap_or(Value::Null))
    };
    Ok(ConnectorRecord {
        id: r.try_get("id")?,
        workspace: r.try_get("workspace")?,
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        config: json("config")?,
        credentials: json("credentials")?,
        handlers: serde_json::from_str(&r.try_get::<String, _>("handlers")?).unwrap_or_default(),
        desired_state: r.try_get("desired_state")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Inserts a connector. A live connector with the same name in the workspace → `Ok(false)`.
pub async fn insert(db: &Db, c: &ConnectorRecord) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "INSERT INTO connectors (id, workspace, name, kind, config, credentials, handlers, \
         desired_state, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&c.id)
    .bind(&c.workspace)
    .bind(&c.name)
    .bind(&c.kind)
    .bind(c.config.to_string())
    .bind(c.credentials.to_string())
    .bind(serde_json::to_string(&c.handlers).unwrap_or_else(|_| "[]".into()))
    .bind(&c.desired_state)
    .bind(&c.created_by)
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(db.writer())
    .await;
    match res {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

/// A live (not being deleted) connector of `workspace`.
pub async fn get(
    db: &Db,
    workspace: &str,
    id: &str,
) -> Result<Option<ConnectorRecord>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM connectors WHERE workspace = $1 AND id = $2 AND desired_state <> 'deleting'"
    )))
    .bind(workspace)
    .bind(id)
    .fetch_optional(db.reader())
    .await?;
    row.as_ref().map(record).transpose()
}

/// Any connector by id, whatever its workspace or state (for the supervisor).
pub async fn get_any(db: &Db, id: &str) -> Result<Option<ConnectorRecord>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM connectors WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db.writer())
    .await?;
    row.as_ref().map(record).transpose()
}

/// Live connectors of a workspace in id (= creation) order after `after`; and their total.
pub async fn list(
    db: &Db,
    workspace: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<ConnectorRecord>, i64), sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM connectors WHERE workspace = $1 AND desired_state <> 'deleting' \
         AND id > $2 ORDER BY id LIMIT $3"
    )))
    .bind(workspace)
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    let total: i64 = sqlx::query(
        "SELECT COUNT(*) FROM connectors WHERE workspace = $1 AND desired_state <> 'deleting'",
    )
    .bind(workspace)
    .fetch_one(db.reader())
    .await?
    .try_get(0)?;
    Ok((rows.iter().map(record).collect::<Result<_, _>>()?, total))
}

/// Connectors some node must act on: those wanted running and those being deleted.
pub async fn list_active(db: &Db) -> Result<Vec<ConnectorRecord>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM connectors WHERE desired_state IN ('running', 'deleting') ORDER BY id"
    )))
    .fetch_all(db.writer())
    .await?;
    rows.iter().map(record).collect()
}

/// Sets `running`/`stopped`/`deleting` on a live connector of `workspace`; false when absent.
pub async fn set_desired_state(
    db: &Db,
    workspace: &str,
    id: &str,
    state: &str,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "UPDATE connectors SET desired_state = $1, updated_at = $2 \
         WHERE workspace = $3 AND id = $4 AND desired_state <> 'deleting'",
    )
    .bind(state)
    .bind(now_ms())
    .bind(workspace)
    .bind(id)
    .execute(db.writer())
    .await?;
    Ok(res.rows_affected() == 1)
}

/// A running connector that stopped itself on an error it cannot retry past becomes `failed`: no
/// node starts it again until someone starts it (`desired_state` back to `running`). Returns
/// whether it was still wanted running (a concurrent stop or delete wins).
pub async fn mark_failed(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "UPDATE connectors SET desired_state = 'failed', updated_at = $1 \
         WHERE id = $2 AND desired_state = 'running'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(db.writer())
    .await?;
    Ok(res.rows_affected() == 1)
}

/// `source_type` of the knowledge items CDC handlers write (`aragora_cdc::knowledge::SOURCE_TYPE`);
/// their source keys begin with `<connector id>/`.
pub const KNOWLEDGE_SOURCE_TYPE: &str = "cdc";

/// Removes every row of a connector, with the knowledge items it indexed (source type `cdc`,
/// source key `<id>/…`, in its workspace), in one transaction.
pub async fn purge(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let workspace: Option<String> = sqlx::query("SELECT workspace FROM connectors WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get::<String, _>(0))
        .transpose()?;
    if let Some(workspace) = workspace {
        crate::knowledge::delete_by_source_prefix_in(
            &mut tx,
            &workspace,
            KNOWLEDGE_SOURCE_TYPE,
            &format!("{id}/"),
        )
        .await?;
    }
    for table in [
        "connector_events",
        "connector_checkpoints",
        "connector_leases",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE connector_id = $1"
        )))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("DELETE FROM connectors WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub resume_token: String,
    pub sequence_number: i64,
    pub snapshot_done: bool,
    pub fencing_token: i64,
    pub updated_at: i64,
}

pub async fn load_checkpoint(db: &Db, id: &str) -> Result<Option<StoredCheckpoint>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT resume_token, sequence_number, snapshot_done, fencing_token, updated_at \
         FROM connector_checkpoints WHERE connector_id = $1",
    )
    .bind(id)
    .fetch_optional(db.writer())
    .await?;
    row.map(|r| {
        Ok(StoredCheckpoint {
            resume_token: r.try_get("resume_token")?,
            sequence_number: r.try_get("sequence_number")?,
            snapshot_done: r.try_get::<i64, _>("snapshot_done")? != 0,
            fencing_token: r.try_get("fencing_token")?,
            updated_at: r.try_get("updated_at")?,
        })
    })
    .transpose()
}

pub async fn reset_checkpoint(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM connector_checkpoints WHERE connector_id = $1")
        .bind(id)
        .execute(db.writer())
        .await?;
    Ok(())
}

/// A checkpoint to save under a lease.
pub struct SaveCheckpoint<'a> {
    pub connector_id: &'a str,
    pub holder: &'a str,
    pub fencing_token: i64,
    pub resume_token: &'a str,
    pub sequence_number: i64,
    pub snapshot_done: bool,
    /// Newest acknowledged events as (sequence_number, JSON, time ms), oldest first.
    pub recent: &'a [(i64, String, i64)],
    /// How many recent events to keep.
    pub keep_recent: i64,
}

/// Saves the checkpoint and the recent events in one transaction, only while `holder` still holds
/// the lease with `fencing_token`. Returns false (nothing written) when fenced.
pub async fn save_checkpoint(db: &Db, c: &SaveCheckpoint<'_>) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let lock = match db.dialect() {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let current = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT holder, fencing_token FROM connector_leases WHERE connector_id = $1{lock}"
    )))
    .bind(c.connector_id)
    .fetch_optional(&mut *tx)
    .await?;
    let owned = match current {
        Some(r) => {
            r.try_get::<String, _>("holder")? == c.holder
                && r.try_get::<i64, _>("fencing_token")? == c.fencing_token
        }
        None => false,
    };
    if !owned {
        tx.rollback().await?;
        return Ok(false);
    }
    let now = now_ms();
    sqlx::query(
        "INSERT INTO connector_checkpoints (connector_id, resume_token, sequence_number, \
         snapshot_done, fencing_token, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (connector_id) DO UPDATE SET resume_token = excluded.resume_token, \
         sequence_number = excluded.sequence_number, snapshot_done = excluded.snapshot_done, \
         fencing_token = excluded.fencing_token, updated_at = excluded.updated_at",
    )
    .bind(c.connector_id)
    .bind(c.resume_token)
    .bind(c.sequence_number)
    .bind(crate::flag(c.snapshot_done))
    .bind(c.fencing_token)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let keep = c.keep_recent.max(1) as usize;
    let start = c.recent.len().saturating_sub(keep);
    for (seq, event, at) in &c.recent[start..] {
        sqlx::query(
            "INSERT INTO connector_events (connector_id, sequence_number, event, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (connector_id, sequence_number) \
             DO UPDATE SET event = excluded.event, created_at = excluded.created_at",
        )
        .bind(c.connector_id)
        .bind(seq)
        .bind(event)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    }
    if let Some((last, _, _)) = c.recent.last() {
        sqlx::query(
            "DELETE FROM connector_events WHERE connector_id = $1 AND sequence_number <= $2",
        )
        .bind(c.connector_id)
        .bind(last - c.keep_recent)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The acknowledged events the ring keeps (JSON, with their sequence numbers), newest first,
/// those before `before_sequence` when given; and how many the ring holds.
pub async fn recent_events(
    db: &Db,
    id: &str,
    before_sequence: Option<i64>,
    limit: u32,
) -> Result<(Vec<(i64, Value)>, i64), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT sequence_number, event FROM connector_events WHERE connector_id = $1 \
         AND sequence_number < $2 ORDER BY sequence_number DESC LIMIT $3",
    )
    .bind(id)
    .bind(before_sequence.unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    let total: i64 = sqlx::query("SELECT COUNT(*) FROM connector_events WHERE connector_id = $1")
        .bind(id)
        .fetch_one(db.reader())
        .await?
        .try_get(0)?;
    let items = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("sequence_number")?,
                serde_json::from_str(&r.try_get::<String, _>("event")?).unwrap_or(Value::Null),
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok((items, total))
}

/// A connector's lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub holder: String,
    pub fencing_token: i64,
    pub expires_at: i64,
    pub acquired_at: i64,
    pub status: Value,
    pub status_at: i64,
}

/// Takes the lease when it is free or expired; returns the new fencing token.
pub async fn acquire_lease(
    db: &Db,
    id: &str,
    holder: &str,
    ttl_ms: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let now = now_ms();
    let row = sqlx::query(
        "INSERT INTO connector_leases (connector_id, holder, fencing_token, expires_at, \
         acquired_at, status, status_at) VALUES ($1, $2, 1, $3, $4, '{}', $4) \
         ON CONFLICT (connector_id) DO UPDATE SET holder = excluded.holder, \
         fencing_token = connector_leases.fencing_token + 1, expires_at = excluded.expires_at, \
         acquired_at = excluded.acquired_at, status = '{}', status_at = excluded.status_at \
         WHERE connector_leases.expires_at < $4 \
         RETURNING fencing_token",
    )
    .bind(id)
    .bind(holder)
    .bind(now + ttl_ms)
    .bind(now)
    .fetch_optional(db.writer())
    .await?;
    row.map(|r| r.try_get::<i64, _>(0)).transpose()
}

/// Extends a held lease and records the holder's status; false when the lease was lost.
pub async fn renew_lease(
    db: &Db,
    id: &str,
    holder: &str,
    fencing_token: i64,
    ttl_ms: i64,
    status: &Value,
) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let res = sqlx::query(
        "UPDATE connector_leases SET expires_at = $1, status = $2, status_at = $3 \
         WHERE connector_id = $4 AND holder = $5 AND fencing_token = $6 AND expires_at >= $3",
    )
    .bind(now + ttl_ms)
    .bind(status.to_string())
    .bind(now)
    .bind(id)
    .bind(holder)
    .bind(fencing_token)
    .execute(db.writer())
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Gives the lease up at once (graceful stop), keeping the token so it keeps growing.
pub async fn release_lease(
    db: &Db,
    id: &str,
    holder: &str,
    fencing_token: i64,
    status: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE connector_leases SET expires_at = 0, status = $1, status_at = $2 \
         WHERE connector_id = $3 AND holder = $4 AND fencing_token = $5",
    )
    .bind(status.to_string())
    .bind(now_ms())
    .bind(id)
    .bind(holder)
    .bind(fencing_token)
    .execute(db.writer())
    .await?;
    Ok(())
}

pub async fn lease(db: &Db, id: &str) -> Result<Option<Lease>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT holder, fencing_token, expires_at, acquired_at, status, status_at \
         FROM connector_leases WHERE connector_id = $1",
    )
    .bind(id)
    .fetch_optional(db.reader())
    .await?;
    row.map(|r| {
        Ok(Lease {
            holder: r.try_get("holder")?,
            fencing_token: r.try_get("fencing_token")?,
            expires_at: r.try_get("expires_at")?,
            acquired_at: r.try_get("acquired_at")?,
            status: serde_json::from_str(&r.try_get::<String, _>("status")?).unwrap_or(Value::Null),
            status_at: r.try_get("status_at")?,
        })
    })
    .transpose()
}
