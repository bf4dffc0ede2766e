//! `GET /api/workers/status`: every worker and the depth of every queue.

use crate::auth::{Auth, perm};
use crate::error::ApiResult;
use crate::state::AppState;
use aragora_queue::{QueueDepth, WorkerInfo};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct WorkerStatus {
    /// id, kind, node, state, started_at, last_heartbeat, in_flight, processed, failed
    #[schema(value_type = Vec<Object>)]
    workers: Vec<WorkerInfo>,
    /// queue, ready, delayed, running, dead
    #[schema(value_type = Vec<Object>)]
    queues: Vec<QueueDepth>,
}

/// Worker and queue status (admin).
#[utoipa::path(get, path = "/api/workers/status", tag = "workers",
    responses((status = 200, body = WorkerStatus)), security(("bearer" = [])))]
pub async fn status(
    _auth: Auth<perm::Admin>,
    State(state): State<AppState>,
) -> ApiResult<Json<WorkerStatus>> {
    // Finished jobs are deleted, so an idle queue has no rows: the server's own queues are listed
    // with zeros rather than left out.
    let mut queues = state.queue.depths().await?;
    for known in crate::observe::KNOWN_QUEUES {
        if !queues.iter().any(|q| q.queue == known) {
            queues.push(QueueDepth {
                queue: known.to_string(),
                ready: 0,
                delayed: 0,
                running: 0,
                dead: 0,
            });
        }
    }
    queues.sort_by(|a, b| a.queue.cmp(&b.queue));
    Ok(Json(WorkerStatus {
        workers: aragora_queue::list_workers(&state.db).await?,
        queues,
    }))
}
