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

/// Publishes several events in the caller's transaction: multi-row inserts, one subscription
/// lookup per workspace. Returns each event with its number of deliveries, in input order.
pub async fn publish_many_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    new: &[NewEvent],
) -> Result<Vec<(Event, usize)>, sqlx::Error> {
    let now = now_ms();
    let events: Vec<Event> = new
        .iter()
        .map(|n| Event {
            event_type: n.event_type.clone(),
            event_id: new_id(prefix::EVENT),
            timestamp: rfc3339(now),
            data: n.data.clone(),
        })
        .collect();
    for chunk in new.iter().zip(&events).collect::<Vec<_>>().chunks(400) {
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
    let mut subs: std::collections::HashMap<&str, Vec<(String, Vec<String>)>> =
        std::collections::HashMap::new();
    let mut attempts = Vec::new();
    let mut out = Vec::with_capacity(events.len());
    for (n, e) in new.iter().zip(events) {
        if !subs.contains_key(n.workspace.as_str()) {
            let s = crate::webhooks::subscriptions_in(conn, &n.workspace).await?;
            subs.insert(n.workspace.as_str(), s);
        }
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
    crate::webhooks::schedule_in(conn, dialect, &attempts, now).await?;
    Ok(out)
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
