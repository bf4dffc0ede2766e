//! `GET /api/v1/events`: the workspace's event log (the outbox), in commit order.

use crate::auth::{Auth, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use aragora_core::event::{Event, is_valid_event_type};
use aragora_core::page::clamp_limit;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventParams {
    /// Only events of this type, e.g. `debate.completed`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Events after this event id (exclusive): pass the previous page's `next_cursor`, or the
    /// last `event_id` you processed.
    pub after: Option<String>,
    /// Same as `after`.
    pub cursor: Option<String>,
    /// 1..=200 (default 20).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// `{"event_type", "event_id", "timestamp", "data"}`, oldest first.
    pub items: Vec<Event>,
    /// Events of the workspace (of the requested type).
    pub total: i64,
    /// The page's last event id (pass it as `after`) while more events follow; null when caught
    /// up (then poll again with the last `event_id` you processed as `after`).
    pub next_cursor: Option<String>,
}

/// Read the workspace's event log, oldest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventParams),
    responses((status = 200, body = EventList), (status = 422, description = "bad type or unknown `after`")),
    security(("bearer" = [])))]
pub async fn list(
    auth: Auth<perm::DebatesRead>,
    State(state): State<AppState>,
    Query(params): Query<EventParams>,
) -> ApiResult<axum::Json<EventList>> {
    let event_type = params.event_type.as_deref().filter(|t| !t.is_empty());
    if let Some(t) = event_type
        && !is_valid_event_type(t)
    {
        return Err(ApiError::invalid(
            "type",
            "must be dotted lowercase words, e.g. debate.completed",
        ));
    }
    let (field, after) = match (params.after.as_deref(), params.cursor.as_deref()) {
        (Some(a), _) if !a.is_empty() => ("after", Some(a)),
        (_, Some(c)) if !c.is_empty() => ("cursor", Some(c)),
        _ => ("after", None),
    };
    let limit = clamp_limit(params.limit);
    // One event more than the page tells whether more follow already (null when caught up).
    let mut page =
        aragora_store::events::list(&state.db, &auth.workspace, event_type, after, limit + 1)
            .await?
            .ok_or_else(|| ApiError::invalid(field, "not an event id of this workspace"))?;
    let next_cursor = if page.events.len() > limit as usize {
        page.events.truncate(limit as usize);
        page.events.last().map(|e| e.event_id.clone())
    } else {
        None
    };
    Ok(axum::Json(EventList {
        items: page.events,
        total: page.total,
        next_cursor,
    }))
}
