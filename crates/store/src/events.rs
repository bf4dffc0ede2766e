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

/// Events of a workspace in id (= time) order after `after` (an event id), optionally of one type.
pub async fn list(
    db: &crate::Db,
    workspace: &str,
    event_type: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Event>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, event_type, data, created_at FROM events WHERE workspace = $1 \
         AND ($2 = '' OR event_type = $2) AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind(workspace)
    .bind(event_type.unwrap_or(""))
    .bind(after.unwrap_or(""))
    .bind(i64::from(limit))
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Event {
                event_id: r.try_get("id")?,
                event_type: r.try_get("event_type")?,
                data: serde_json::from_str(&r.try_get::<String, _>("data")?)
                    .unwrap_or(serde_json::Value::Null),
                timestamp: rfc3339(r.try_get("created_at")?),
            })
        })
        .collect()
}
