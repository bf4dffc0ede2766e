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
