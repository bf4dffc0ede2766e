//! Decision explainability over HTTP:
//! `GET /api/v1/debates/{debate_id}/explanation`, `GET /api/v1/explanations/{decision_id}`,
//! `POST /api/v1/explainability/batch`, `GET /api/v1/explainability/batch/{batch_id}/status`
//! and `…/results`. Formulas and formats: docs/explainability.md.

use crate::auth::{Auth, perm};
use crate::error::{ApiError, ApiResult};
use crate::explainability::{
    self, BatchOptions, BatchRequest, Format, Output, Visual, compute_with_html, unfinished,
};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use aragora_core::page::{clamp_limit, decode_cursor, encode_cursor};
use aragora_explain::ExplainOptions;
use aragora_store::explain::{self as repo, Batch, phase};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

/// Query of `GET /api/v1/debates/{debate_id}/explanation`. Parsed by hand so a bad value is a
/// 422 naming the parameter.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExplanationQuery {
    /// `json` (default), `summary` (text/plain), `detailed` (text/markdown) or `visual`.
    #[param(value_type = Option<Format>)]
    format: Option<String>,
    /// Compute the evidence chain and evidence ablations (default true).
    #[param(value_type = Option<bool>)]
    include_evidence: Option<String>,
    /// Compute counterfactuals (default true).
    #[param(value_type = Option<bool>)]
    include_counterfactuals: Option<String>,
    /// Compute vote pivots and pivotality (default true).
    #[param(value_type = Option<bool>)]
    include_vote_pivots: Option<String>,
    /// With `format=visual`: `html` (a standalone page), `svg` (image/svg+xml) or `mermaid`
    /// (text/plain) instead of the JSON object.
    render: Option<String>,
}

fn parse_bool(field: &str, v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None => Ok(true),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::invalid(
            field,
            format!("must be true or false, not {other:?}"),
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Render {
    Json,
    Html,
    Svg,
    Mermaid,
}

fn text(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn json_text(body: String) -> Response {
    text("application/json", body)
}

/// Explain a debate's decision.
///
/// Every number is recomputed from the debate record (see docs/explainability.md). The JSON
/// explanation is also stored, so `GET /api/v1/explanations/{decision_id}` returns it later.
#[utoipa::path(get, path = "/api/v1/debates/{debate_id}/explanation", tag = "explainability",
    params(("debate_id" = String, Path, description = "debate id"), ExplanationQuery),
    responses(
        (status = 200, description = "the explanation (format=json)", body = aragora_explain::Explanation<'static>),
        (status = 200, description = "format=summary", content_type = "text/plain", body = String),
        (status = 200, description = "format=detailed", content_type = "text/markdown", body = String),
        (status = 200, description = "format=visual", body = Visual),
        (status = 404, description = "no such debate in this workspace"),
        (status = 409, description = "the debate has not finished"),
        (status = 422, description = "bad query parameter")),
    security(("bearer" = [])))]
pub async fn explanation(
    auth: Auth<perm::ExplainabilityRead>,
    State(state): State<AppState>,
    Path(debate_id): Path<String>,
    Query(q): Query<ExplanationQuery>,
) -> ApiResult<Response> {
    let format = match q.format.as_deref() {
        None => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::invalid("format", format!("must be one of {}", Format::NAMES))
        })?,
    };
    let opts = ExplainOptions {
        include_evidence: parse_bool("include_evidence", q.include_evidence.as_deref())?,
        include_counterfactuals: parse_bool(
            "include_counterfactuals",
            q.include_counterfactuals.as_deref(),
        )?,
        include_vote_pivots: parse_bool("include_vote_pivots", q.include_vote_pivots.as_deref())?,
    };
    let render = match (q.render.as_deref(), format) {
        (None, _) => Render::Json,
        (Some(_), f) if f != Format::Visual => {
            return Err(ApiError::invalid("render", "only applies to format=visual"));
        }
        (Some("json"), _) => Render::Json,
        (Some("html"), _) => Render::Html,
        (Some("svg"), _) => Render::Svg,
        (Some("mermaid"), _) => Render::Mermaid,
        (Some(_), _) => {
            return Err(ApiError::invalid(
                "render",
                "must be one of json, html, svg, mermaid",
            ));
        }
    };
    let debate = aragora_store::debates::get(&state.db, &auth.workspace, &debate_id)
        .await?
        .ok_or_else(|| ApiError::not_found("debate"))?;
    if let Some(why) = unfinished(&debate) {
        return Err(aragora_core::Error::Conflict(why).into());
    }
    let rendered = tokio::task::spawn_blocking(move || {
        compute_with_html(&debate, &opts, format, render == Render::Html)
    })
    .await
    .map_err(|e| aragora_core::Error::internal(format!("explanation task failed: {e}")))?;
    let keep = explainability::stored(
        &rendered.decision_id,
        &debate_id,
        &opts,
        rendered.json.clone(),
    );
    repo::upsert_explanation(&state.db, &auth.workspace, &keep, "request").await?;
    Ok(match rendered.output {
        Output::Json => json_text(rendered.json),
        Output::Text(t) if format == Format::Summary => text("text/plain; charset=utf-8", t),
        Output::Text(t) => text("text/markdown; charset=utf-8", t),
        Output::Visual { mermaid, svg } => match render {
            Render::Html => text(
                "text/html; charset=utf-8",
                rendered.html.unwrap_or_default(),
            ),
            Render::Svg => text("image/svg+xml", svg),
            Render::Mermaid => text("text/plain; charset=utf-8", mermaid),
            Render::Json => json_text(
                serde_json::to_string(&Visual {
                    decision_id: &rendered.decision_id,
                    debate_id: &debate_id,
                    mermaid: &mermaid,
                    svg: &svg,
                })
                .expect("strings serialise"),
            ),
        },
    })
}

/// A stored explanation (the latest computed for this decision, by a request or a batch).
#[utoipa::path(get, path = "/api/v1/explanations/{decision_id}", tag = "explainability",
    params(("decision_id" = String, Path, description = "decision id (dec-…)")),
    responses(
        (status = 200, description = "the stored JSON explanation; `Last-Modified` says when it was computed, `X-Explanation-Source` by what (`request` or `batch:<id>`)", body = aragora_explain::Explanation<'static>),
        (status = 404, description = "nothing stored for this decision in this workspace")),
    security(("bearer" = [])))]
pub async fn stored(
    auth: Auth<perm::ExplainabilityRead>,
    State(state): State<AppState>,
    Path(decision_id): Path<String>,
) -> ApiResult<Response> {
    let row = repo::get_explanation(&state.db, &auth.workspace, &decision_id)
        .await?
        .ok_or_else(|| ApiError::not_found("explanation"))?;
    let mut resp = json_text(row.explanation);
    let h = resp.headers_mut();
    let modified = aragora_core::time::to_datetime(row.updated_at)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    if let Ok(v) = HeaderValue::from_str(&modified) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if let Ok(v) = HeaderValue::from_str(&row.source) {
        h.insert("x-explanation-source", v);
    }
    Ok(resp)
}

/// The guide's batch status: `processing` from submission until every debate id has been
/// handled, then `completed` — also when some or all debates could not be explained (see
/// `phase`, the counts and each result's own `status`), and when the batch's job gave up before
/// every id was handled (see `error`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    Processing,
    Completed,
}

/// The finer state behind `status`: `pending` (accepted, no worker has started it) and
/// `processing` (a worker started it) while the status is `processing`; `completed` (every debate
/// explained), `partial` (some explained, some `error`/`not_found`, or not handled because the
/// batch's job gave up: see `error`) or `failed` (none explained) once it is `completed`. The same
/// values label the batch metrics.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchPhase {
    Pending,
    Processing,
    Completed,
    Partial,
    Failed,
}

impl BatchState {
    fn of(b: &Batch) -> Self {
        if b.is_terminal() {
            BatchState::Completed
        } else {
            BatchState::Processing
        }
    }
}

impl BatchPhase {
    fn of(b: &Batch) -> Self {
        match b.phase.as_str() {
            phase::PENDING => BatchPhase::Pending,
            phase::COMPLETED => BatchPhase::Completed,
            phase::PARTIAL => BatchPhase::Partial,
            phase::FAILED => BatchPhase::Failed,
            _ => BatchPhase::Processing,
        }
    }
}

/// `202` body of a batch submission.
#[derive(Serialize, ToSchema)]
pub struct BatchCreated {
    batch_id: String,
    /// `processing` (an idempotent replay of a finished batch shows `completed`).
    status: BatchState,
    /// `pending` on creation (the current phase when an idempotent request is replayed).
    phase: BatchPhase,
    total: i64,
}

/// Submit a batch of debates to explain in the background.
///
/// At most 10,000 debate ids. With an `Idempotency-Key` header (1–255 visible ASCII characters,
/// remembered for 24 hours per workspace) a repeated identical request returns the same batch
/// (`Idempotent-Replayed: true`) and the same key with a different body is a 422.
#[utoipa::path(post, path = "/api/v1/explainability/batch", tag = "explainability",
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe", pattern = "^[\\x21-\\x7e]{1,255}$")),
    responses(
        (status = 202, body = BatchCreated),
        (status = 422, description = "empty or too long `debate_ids`, a bad id, a bad option, or a reused idempotency key")),
    security(("bearer" = [])))]
pub async fn create_batch(
    auth: Auth<perm::ExplainabilityBatch>,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<BatchRequest>,
) -> ApiResult<Response> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid("Idempotency-Key", "must be visible ASCII characters")
        })?),
    };
    let submitted = explainability::submit_batch(&state, &auth, &body, key).await?;
    let b = submitted.batch;
    let mut resp = (
        StatusCode::ACCEPTED,
        axum::Json(BatchCreated {
            batch_id: b.id.clone(),
            status: BatchState::of(&b),
            phase: BatchPhase::of(&b),
            total: b.total,
        }),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/explainability/batch/{}/status", b.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if submitted.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Progress of a batch.
#[derive(Serialize, ToSchema)]
pub struct BatchStatus {
    batch_id: String,
    /// `processing` until every debate id has been handled, then `completed` (also when some or
    /// all debates failed: see `phase` and the counts; and when the batch's job gave up first:
    /// see `error`).
    status: BatchState,
    phase: BatchPhase,
    /// Why the batch ended before every debate id was handled: its background job failed on
    /// every attempt (or could not run at all), so `processed` < `total`, ids without a result
    /// were not explained, and `phase` is `partial` (some explained) or `failed`. `null`
    /// otherwise.
    error: Option<String>,
    total: i64,
    processed: i64,
    succeeded: i64,
    /// Results that are not `success` (`error` + `not_found`).
    failed: i64,
    not_found: i64,
    /// processed ÷ total × 100, one decimal.
    progress_percent: f64,
    options: BatchOptions,
    /// Times a worker started or resumed the batch (more than 1 after a crash or a restart).
    runs: i64,
    created_by: String,
    #[serde(with = "aragora_core::time::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    created_at: i64,
    #[serde(with = "aragora_core::time::serde_ms::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    started_at: Option<i64>,
    #[serde(with = "aragora_core::time::serde_ms::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    completed_at: Option<i64>,
    #[serde(with = "aragora_core::time::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: i64,
}

impl From<Batch> for BatchStatus {
    fn from(b: Batch) -> Self {
        let progress = if b.total > 0 {
            (b.processed as f64 * 1000.0 / b.total as f64).floor() / 10.0
        } else {
            100.0
        };
        BatchStatus {
            options: serde_json::from_str(&b.options).unwrap_or_default(),
            status: BatchState::of(&b),
            phase: BatchPhase::of(&b),
            batch_id: b.id,
            error: b.error,
            total: b.total,
            processed: b.processed,
            succeeded: b.succeeded,
            failed: b.failed,
            not_found: b.not_found,
            progress_percent: progress,
            runs: b.runs,
            created_by: b.created_by,
            created_at: b.created_at,
            started_at: b.started_at,
            completed_at: b.completed_at,
            updated_at: b.updated_at,
        }
    }
}

async fn load_batch(state: &AppState, workspace: &str, id: &str) -> ApiResult<Batch> {
    repo::get_batch(&state.db, workspace, id)
        .await?
        .ok_or_else(|| ApiError::not_found("batch"))
}

/// Status and progress of a batch.
#[utoipa::path(get, path = "/api/v1/explainability/batch/{batch_id}/status", tag = "explainability",
    params(("batch_id" = String, Path, description = "batch id (batch-…)")),
    responses((status = 200, body = BatchStatus), (status = 404)),
    security(("bearer" = [])))]
pub async fn batch_status(
    auth: Auth<perm::ExplainabilityRead>,
    State(state): State<AppState>,
    Path(batch_id): Path<String>,
) -> ApiResult<axum::Json<BatchStatus>> {
    Ok(axum::Json(
        load_batch(&state, &auth.workspace, &batch_id).await?.into(),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 20).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// Only results of this status: `success`, `error` or `not_found`.
    status: Option<String>,
}

/// One debate's result.
#[derive(Serialize, ToSchema)]
pub struct BatchResultItem {
    /// Index of the debate in the submitted `debate_ids`.
    position: i64,
    debate_id: String,
    /// `success`, `error` or `not_found` (missing, or another workspace's).
    status: String,
    /// The explanation in the batch's format (an object for `json` and `visual`, a string for
    /// `summary` and `detailed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    explanation: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Time spent computing and rendering this explanation.
    processing_time_ms: f64,
    /// The run of the batch that computed it (see the status's `runs`).
    attempt: i64,
    #[serde(with = "aragora_core::time::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    created_at: i64,
}

/// A page of results.
#[derive(Serialize, ToSchema)]
pub struct BatchResults {
    items: Vec<BatchResultItem>,
    /// Results stored so far (matching `status` if given).
    total: i64,
    next_cursor: Option<String>,
    batch_id: String,
    /// The batch's status: the results are complete once it is `completed`.
    batch_status: BatchState,
    /// The batch's phase (see the status endpoint).
    batch_phase: BatchPhase,
}

/// Per-debate results of a batch, in submission order; available as they are computed.
#[utoipa::path(get, path = "/api/v1/explainability/batch/{batch_id}/results", tag = "explainability",
    params(("batch_id" = String, Path, description = "batch id (batch-…)"), ResultsQuery),
    responses((status = 200, body = BatchResults), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub async fn batch_results(
    auth: Auth<perm::ExplainabilityRead>,
    State(state): State<AppState>,
    Path(batch_id): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> ApiResult<axum::Json<BatchResults>> {
    let limit = match q.limit.as_deref() {
        None => clamp_limit(None),
        Some(l) => clamp_limit(Some(l.parse::<u32>().map_err(|_| {
            ApiError::invalid(
                "limit",
                "must be a whole number (0 and values above 200 are clamped to 1 and 200)",
            )
        })?)),
    };
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            decode_cursor(c)
                .and_then(|k| k.parse::<i64>().ok())
                .filter(|position| *position >= 0)
                .ok_or_else(|| ApiError::invalid("cursor", "not a cursor of this list"))?,
        ),
    };
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s @ ("success" | "error" | "not_found")) => Some(s),
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "must be one of success, error, not_found",
            ));
        }
    };
    let batch = load_batch(&state, &auth.workspace, &batch_id).await?;
    // One row more than the page tells whether another page follows.
    let (mut rows, total) =
        repo::list_results(&state.db, &batch.id, after, limit + 1, status).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_cursor(&r.position.to_string()))
    } else {
        None
    };
    let items = rows
        .into_iter()
        .map(|r| BatchResultItem {
            position: r.position,
            debate_id: r.debate_id,
            status: r.status,
            explanation: r.explanation.and_then(|t| RawValue::from_string(t).ok()),
            error: r.error,
            processing_time_ms: r.processing_time_ms,
            attempt: r.attempt,
            created_at: r.created_at,
        })
        .collect();
    Ok(axum::Json(BatchResults {
        items,
        total,
        next_cursor,
        batch_status: BatchState::of(&batch),
        batch_phase: BatchPhase::of(&batch),
        batch_id: batch.id,
    }))
}
