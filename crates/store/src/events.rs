//! The event log and outbox. [`publish_in`] writes an event inside the caller's transaction, so an
//! event exists exactly when the change that caused it commits; webhook deliveries for it are
//! created in that same transaction (see `webhooks::fan_out_in`), so nothing is lost between
//! commit and queue.

use crate::{Dialect, Row};
use aragora_core::event::Event;
use aragora_core::ids::{new_id, prefix};
use aragora_core::time::{now_ms, rfc3339};
use sqlx::AnyConnection;

/// An event to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub workspace: String,
    pub event_type: String,
    pub data: serde_json::Value,
}

/// Writes the event (and its webhook deliveries) inside the caller's transaction and returns it
/// in the guide's shape. Deliveries are queued in the same transaction: on SQLite, call
/// `Queue::notify_local(webhooks::QUEUE)` after committing so local workers wake at once
/// (PostgreSQL's NOTIFY fires on commit by itself).
pub async fn publish_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    new: &NewEvent,
) -> Result<Event, sqlx::Error> {
    publish_counted_in(conn, dialect, new).await.map(|(e, _)| e)
}

/// [`publish_in`], also returning how many webhook deliveries were created.
pub async fn publish_counted_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    new: &NewEvent,
) -> Result<(Event, usize), sqlx::Error> {
    let now = now_ms();
    let event = Event {
        event_type: new.event_type.clone(),
        event_id: new_id(prefix::EVENT),
        timestamp: rfc3339(now),
        data: new.data.clone(),
    };
    sqlx::query(
        "INSERT INTO events (id, workspace, event_type, data, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&event.event_id)
    .bind(&new.workspace)
    .bind(&event.event_type)
    .bind(event.data.to_string())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let deliveries = crate::webhooks::fan_out_in(
        conn,
        dialect,
        &new.workspace,
        &event.event_id,
        &event.event_type,
        now,
    )
    .await?;
    Ok((event, deliveries))
}

/// Publishes several events in the caller's transaction: one subscription lookup per
/// workspace, then multi-row inserts (on PostgreSQL a single statement with data-modifying CTEs,
/// so the batch costs few round trips). Returns each event with its number of deliveries, in
/// input order.
pub async fn publish_many_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    new: &[NewEvent],
) -> Result<Vec<(Event, usize)>, sqlx::Error> {
    let now = now_ms();
    let mut subs: std::collections::HashMap<&str, Vec<(String, Vec<String>)>> =
        std::collections::HashMap::new();
    for n in new {
        if !subs.contains_key(n.workspace.as_str()) {
            let s = crate::webhooks::subscriptions_in(conn, &n.workspace).await?;
            subs.insert(n.workspace.as_str(), s);
        }
    }
    let mut attempts = Vec::new();
    let mut out = Vec::with_capacity(new.len());
    for n in new {
        let e = Event {
            event_type: n.event_type.clone(),
            event_id: new_id(prefix::EVENT),
            timestamp: rfc3339(now),
            data: n.data.clone(),
        };
        let a = crate::webhooks::first_attempts(
            &subs[n.workspace.as_str()],
            &n.workspace,
            &e.event_id,
            &e.event_type,
            now,
        );
        out.push((e, a.len()));
        attempts.extend(a);
    }
    let params = new.len() * 4 + attempts.len() * 12 + 1;
    if dialect == Dialect::Postgres && params <= 60_000 {
        insert_all_pg(conn, new, &out, &attempts, now).await?;
        return Ok(out);
    }
    let rows: Vec<(&NewEvent, &Event)> = new.iter().zip(out.iter().map(|(e, _)| e)).collect();
    for chunk in rows.chunks(400) {
        let mut sql = String::from(
            "INSERT INTO events (id, workspace, event_type, data, created_at) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push(',');
            }
            let b = i * 4;
            sql.push_str(&format!(
                "(${},${},${},${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                chunk.len() * 4 + 1
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (n, e) in chunk {
            q = q
                .bind(&e.event_id)
                .bind(&n.workspace)
                .bind(&e.event_type)
                .bind(e.data.to_string());
        }
        q.bind(now).execute(&mut *conn).await?;
    }
    crate::webhooks::schedule_in(conn, dialect, &attempts, now).await?;
    Ok(out)
}

/// Events, their pending receipts, their jobs and the queue wake-up in one PostgreSQL statement.
async fn insert_all_pg(
    conn: &mut AnyConnection,
    new: &[NewEvent],
    events: &[(Event, usize)],
    attempts: &[crate::webhooks::NewAttempt],
    now: i64,
) -> Result<(), sqlx::Error> {
    use std::fmt::Write;
    let mut n = 1; // $1 is `now`
    let mut next = || {
        n += 1;
        n
    };
    let mut sql = String::from(
        "WITH e AS (INSERT INTO events (id, workspace, event_type, data, created_at) VALUES ",
    );
    for i in 0..new.len() {
        let _ = write!(
            sql,
            "{}(${},${},${},${},$1)",
            if i > 0 { "," } else { "" },
            next(),
            next(),
            next(),
            next()
        );
    }
    sql.push(')');
    if !attempts.is_empty() {
        sql.push_str(
            ", r AS (INSERT INTO webhook_delivery_receipts (id, webhook_id, workspace, \
             delivery_id, event_id, event_type, attempt, trigger, status, latest, created_at, \
             next_attempt_at) VALUES ",
        );
        for i in 0..attempts.len() {
            let _ = write!(
                sql,
                "{}(${},${},${},${},${},${},${},${},'pending',1,$1,${})",
                if i > 0 { "," } else { "" },
                next(),
                next(),
                next(),
                next(),
                next(),
                next(),
                next(),
                next(),
                next()
            );
        }
        sql.push_str(
            "), j AS (INSERT INTO jobs (id, queue, payload, status, attempts, max_attempts, \
             run_at, created_at, updated_at) VALUES ",
        );
        for i in 0..attempts.len() {
            let _ = write!(
                sql,
                "{}(${},'{}',${},'ready',0,{},${},$1,$1)",
                if i > 0 { "," } else { "" },
                next(),
                crate::webhooks::QUEUE,
                next(),
                crate::webhooks::JOB_MAX_ATTEMPTS,
                next()
            );
        }
        sql.push_str(") SELECT pg_notify('aragora_jobs', '");
        sql.push_str(crate::webhooks::QUEUE);
        sql.push_str("')");
    } else {
        sql.push_str(" SELECT 1");
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
    for (ne, (e, _)) in new.iter().zip(events) {
        q = q
            .bind(&e.event_id)
            .bind(&ne.workspace)
            .bind(&e.event_type)
            .bind(e.data.to_string());
    }
    for a in attempts {
        q = q
            .bind(&a.receipt_id)
            .bind(&a.webhook_id)
            .bind(&a.workspace)
            .bind(&a.delivery_id)
            .bind(&a.event_id)
            .bind(&a.event_type)
            .bind(i64::from(a.attempt))
            .bind(a.trigger)
            .bind(a.run_at);
    }
    for a in attempts {
        q = q
            .bind(new_id(prefix::JOB))
            .bind(crate::webhooks::job_payload(&a.receipt_id))
            .bind(a.run_at);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// A page of a workspace's event feed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Events of the workspace (of the requested type) in total.
    pub total: i64,
}

/// A workspace's events in commit order, after the event `after` (exclusive), optionally of one
/// type. `Ok(None)` when `after` is not an event of this workspace.
///
/// Commit order, not id order: ids (and sequences) are assigned before commit, so concurrent
/// transactions can commit out of id order and a reader paging by id could step over an event
/// that commits late. On SQLite the single writer assigns rowids in commit order. On PostgreSQL
/// events are ordered by the id of the transaction that wrote them, and only transactions older
/// than every transaction still in progress are shown, so a page never skips an event that
/// commits later (an event appears once its transaction and every older one have finished).
pub async fn list(
    db: &crate::Db,
    workspace: &str,
    event_type: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Option<EventPage>, sqlx::Error> {
    let event_type = event_type.unwrap_or("");
    let rows = match db.dialect() {
        Dialect::Sqlite => {
            let after_pos: i64 = match after {
                Some(id) => {
                    match sqlx::query("SELECT rowid FROM events WHERE workspace = $1 AND id = $2")
                        .bind(workspace)
                        .bind(id)
                        .fetch_optional(db.reader())
                        .await?
                    {
                        Some(r) => r.try_get(0)?,
                        None => return Ok(None),
                    }
                }
                None => 0,
            };
            sqlx::query(
                "SELECT id, event_type, data, created_at FROM events WHERE workspace = $1 \
                 AND ($2 = '' OR event_type = $2) AND rowid > $3 ORDER BY rowid LIMIT $4",
            )
            .bind(workspace)
            .bind(event_type)
            .bind(after_pos)
            .bind(i64::from(limit))
            .fetch_all(db.reader())
            .await?
        }
        Dialect::Postgres => {
            let (after_tx, after_id): (i64, String) = match after {
                Some(id) => match sqlx::query(
                    "SELECT txid, id FROM events WHERE workspace = $1 AND id = $2",
                )
                .bind(workspace)
                .bind(id)
                .fetch_optional(db.reader())
                .await?
                {
                    Some(r) => (r.try_get(0)?, r.try_get(1)?),
                    None => return Ok(None),
                },
                None => (-1, String::new()),
            };
            sqlx::query(
                "SELECT id, event_type, data, created_at FROM events WHERE workspace = $1 \
                 AND ($2 = '' OR event_type = $2) AND (txid, id) > ($3, $4) \
                 AND txid < CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT) \
                 ORDER BY txid, id LIMIT $5",
            )
            .bind(workspace)
            .bind(event_type)
            .bind(after_tx)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(db.reader())
            .await?
        }
    };
    let events = rows
        .iter()
        .map(|r| {
            Ok(Event {
                event_id: r.try_get("id")?,
                event_type: r.try_get("event_type")?,
                data: serde_json::from_str(&r.try_get::<String, _>("data")?)
                    .unwrap_or(serde_json::Value::Null),
                timestamp: rfc3339(r.try_get("created_at")?),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let total: i64 = sqlx::query(
        "SELECT COUNT(*) FROM events WHERE workspace = $1 AND ($2 = '' OR event_type = $2)",
    )
    .bind(workspace)
    .bind(event_type)
    .fetch_one(db.reader())
    .await?
    .try_get(0)?;
    Ok(Some(EventPage { events, total }))
}
