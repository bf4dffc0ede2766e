//! Webhooks over HTTP: registration (`/api/webhooks…`, the guide's paths), test delivery,
//! receipts, resend, recovery, secret rotation, per-endpoint stats, and `POST /api/v1/events`
//! (publish a custom event through the outbox).

use crate::auth::{Auth, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use aragora_core::event::is_valid_event_type;
use aragora_core::page::{Page, clamp_limit, decode_cursor, encode_cursor};
use aragora_core::time::{now_ms, parse_rfc3339, rfc3339};
use aragora_store::events::{NewEvent, publish_counted_in};
use aragora_store::webhooks::{self as store, NewWebhook, Receipt, Webhook, WebhookUpdate};
use aragora_webhooks::resolve::validate_url_resolved;
use aragora_webhooks::{BreakerState, SystemResolver};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// A webhook as the API shows it. `secret` appears only in the create and rotate responses.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Why the webhook is disabled (e.g. the endpoint answered 410 Gone).
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// While a rotated-out secret still signs (`webhook-signature` carries both), its end.
    pub previous_secret_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookView {
    fn of(w: Webhook, with_secret: bool) -> Self {
        let now = now_ms();
        let grace = store::live_previous(&w.previous_secrets, now)
            .iter()
            .map(|p| p.until)
            .max();
        WebhookView {
            secret: with_secret.then(|| w.secret.clone()),
            id: w.id,
            url: w.url,
            event_types: w.event_types,
            description: w.description,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
            previous_secret_expires_at: grace.map(rfc3339),
        }
    }
}

/// One delivery attempt (DESIGN.md §10 Receipt, plus what was dialled and answered).
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptView {
    pub id: String,
    pub webhook_id: String,
    /// The `webhook-id` header: the same on every attempt of one delivery.
    pub delivery_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i64,
    /// `scheduled`, `manual` or `test`.
    pub trigger: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub status_code: Option<i64>,
    /// `dns`, `blocked`, `connect`, `tls`, `timeout`, `http`, `body_too_large`, `disabled`.
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: String,
    pub attempted_at: Option<String>,
    /// Pending: when the attempt is due. Failed: when the retry is due (null = no retry).
    pub next_attempt_at: Option<String>,
    /// The address the connection went to.
    pub dialled_address: Option<String>,
    #[schema(value_type = Object)]
    pub response_headers: serde_json::Value,
    /// The first KiB of the response body.
    pub response_body: Option<String>,
    /// This is the newest attempt of its delivery.
    pub latest: bool,
}

impl From<Receipt> for ReceiptView {
    fn from(r: Receipt) -> Self {
        ReceiptView {
            id: r.id,
            webhook_id: r.webhook_id,
            delivery_id: r.delivery_id,
            event_id: r.event_id,
            event_type: r.event_type,
            attempt: r.attempt,
            trigger: r.trigger,
            status: r.status,
            status_code: r.status_code,
            error_class: r.error_class,
            error_message: r.error_message,
            duration_ms: r.duration_ms,
            created_at: rfc3339(r.created_at),
            attempted_at: r.attempted_at.map(rfc3339),
            next_attempt_at: r.next_attempt_at.map(rfc3339),
            dialled_address: r.dialled_addr,
            response_headers: r
                .response_headers
                .and_then(|h| serde_json::from_str(&h).ok())
                .unwrap_or(serde_json::Value::Null),
            response_body: r.response_body,
            latest: r.latest,
        }
    }
}

/// Unknown fields are refused: a misspelt `event_types` would otherwise subscribe to every event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// http(s) URL of a public endpoint (checked against the SSRF policy).
    pub url: String,
    /// HMAC secret; when absent the server generates a `whsec_…` secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// Event types to receive, e.g. `debate.completed`; `*` for all (the default).
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
    /// `false` registers it paused: nothing is delivered until `PUT {"enabled": true}`.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Unknown fields are refused (a misspelt `enabled` would otherwise change nothing), except the
/// read-only ones of the webhook as GET shows it, so that representation can be sent back whole.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    #[serde(default, rename = "id")]
    #[schema(ignore)]
    _id: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "disabled_reason")]
    #[schema(ignore)]
    _disabled_reason: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "created_at")]
    #[schema(ignore)]
    _created_at: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "updated_at")]
    #[schema(ignore)]
    _updated_at: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "previous_secret_expires_at")]
    #[schema(ignore)]
    _previous_secret_expires_at: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// 1..=200 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ReceiptParams {
    /// `pending`, `succeeded` or `failed`.
    #[param(pattern = "^(|pending|succeeded|failed)$")]
    pub status: Option<String>,
    /// 1..=200 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecoverBody {
    /// RFC 3339: deliveries whose latest attempt failed at or after this time are sent again.
    #[schema(format = DateTime)]
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    pub recovered: usize,
}

/// Read by `rotate_body` (an empty body is allowed); unknown fields are refused there.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RotateBody {
    /// The new secret; generated (`whsec_…`) when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// How long the old secret keeps signing (0..=604800 s, default 86400).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_period_secs: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatsParams {
    /// Window in seconds (60..=2592000, default 86400).
    #[param(minimum = 60, maximum = 2592000)]
    pub window_secs: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LatencyView {
    pub avg: Option<f64>,
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub p99: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerView {
    /// `closed`, `open` or `half_open`.
    pub state: String,
    pub open_until: Option<String>,
    pub open_count: Option<u32>,
    pub consecutive_failures: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    pub webhook_id: String,
    pub window_secs: u64,
    pub attempts: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Attempts scheduled and not yet made.
    pub pending: i64,
    /// succeeded / attempts in the window (null without attempts).
    pub success_rate: Option<f64>,
    /// Attempt durations in ms (percentiles over the latest 1000 attempts in the window).
    pub latency_ms: LatencyView,
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub breaker: BreakerView,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PublishEvent {
    /// Dotted lowercase words, e.g. `order.created`.
    #[schema(
        max_length = 128,
        pattern = "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*){0,7}$"
    )]
    pub event_type: String,
    /// Any JSON value (default `{}`), up to the configured size.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Published {
    pub event_type: String,
    pub event_id: String,
    pub timestamp: String,
    /// Webhook deliveries created for the event.
    pub deliveries: usize,
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

async fn checked_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let policy = state.webhooks.policy();
    let resolved = tokio::time::timeout(
        Duration::from_secs(5),
        validate_url_resolved(url.trim(), policy, &SystemResolver),
    )
    .await;
    match resolved {
        Ok(Ok(v)) => Ok(v.as_str().to_string()),
        Ok(Err(e)) => {
            if let Some(reason) = e.reason() {
                tracing::info!(
                    reason = reason.as_str(),
                    "webhook URL refused by the SSRF policy"
                );
            }
            Err(aragora_core::Error::from(e).into())
        }
        // A resolver that does not answer in time is treated like a name that does not resolve:
        // accepted on the static checks; every send resolves and vets again.
        Err(_) => aragora_webhooks::validate_url(url.trim(), policy)
            .map(|v| v.as_str().to_string())
            .map_err(|e| aragora_core::Error::from(e).into()),
    }
}

fn checked_event_types(types: Vec<String>) -> Result<Vec<String>, ApiError> {
    if types.is_empty() {
        return Err(ApiError::invalid(
            "event_types",
            "give at least one event type, or `*` for all",
        ));
    }
    if types.len() > 100 {
        return Err(ApiError::invalid("event_types", "at most 100 event types"));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for (i, t) in types.into_iter().enumerate() {
        if t != "*" && !is_valid_event_type(&t) {
            return Err(ApiError::invalid(
                &format!("event_types[{i}]"),
                "must be `*` or dotted lowercase words, e.g. debate.completed",
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

fn checked_description(d: Option<String>) -> Result<String, ApiError> {
    let d = d.unwrap_or_default();
    if d.chars().count() > 1000 {
        return Err(ApiError::invalid("description", "at most 1000 characters"));
    }
    Ok(d)
}

fn checked_secret(secret: Option<String>) -> Result<String, ApiError> {
    match secret {
        None => Ok(aragora_webhooks::signing::generate_secret()),
        Some(s) => {
            aragora_webhooks::signing::validate_secret(&s)
                .map_err(|e| ApiError::invalid("secret", e.to_string()))?;
            Ok(s)
        }
    }
}

async fn owned(state: &AppState, workspace: &str, id: &str) -> Result<Webhook, ApiError> {
    store::get(&state.db, workspace, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

/// Register a webhook.
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookView, description = "created; `secret` is shown only here and on rotation"),
              (status = 422, description = "invalid field (e.g. `url` refused by the SSRF policy)")),
    security(("bearer" = [])))]
pub async fn create_webhook(
    auth: Auth<perm::WebhooksWrite>,
    State(state): State<AppState>,
    Json(body): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, axum::Json<WebhookView>)> {
    let event_types = checked_event_types(body.event_types.unwrap_or_else(|| vec!["*".into()]))?;
    let description = checked_description(body.description)?;
    let secret = checked_secret(body.secret)?;
    let url = checked_url(&state, &body.url).await?;
    let w = store::create(
        &state.db,
        &NewWebhook {
            workspace: auth.workspace.clone(),
            url,
            secret,
            event_types,
            description,
            created_by: auth.user.clone(),
            enabled: body.enabled.unwrap_or(true),
        },
    )
    .await?;
    tracing::info!(webhook = %w.id, by = %auth.user, "webhook registered");
    Ok((StatusCode::CREATED, axum::Json(WebhookView::of(w, true))))
}

/// List the workspace's webhooks (oldest first).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks", params(ListParams),
    responses((status = 200, body = Page<WebhookView>)), security(("bearer" = [])))]
pub async fn list_webhooks(
    auth: Auth<perm::WebhooksRead>,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<Page<WebhookView>>> {
    let limit = clamp_limit(params.limit);
    let after = cursor(params.cursor.as_deref())?;
    // One row more than the page tells whether another page follows.
    let (mut items, total) =
        store::list(&state.db, &auth.workspace, after.as_deref(), limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|w| encode_cursor(&w.id))
    } else {
        None
    };
    Ok(axum::Json(Page {
        items: items
            .into_iter()
            .map(|w| WebhookView::of(w, false))
            .collect(),
        total,
        next_cursor,
        page: None,
        limit: Some(limit),
    }))
}

fn cursor(c: Option<&str>) -> Result<Option<String>, ApiError> {
    match c.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => decode_cursor(c)
            .filter(|k| aragora_core::ids::is_valid_external_id(k))
            .map(Some)
            .ok_or_else(|| ApiError::invalid("cursor", "not a cursor returned by this list")),
    }
}

/// Get one webhook.
#[utoipa::path(get, path = "/api/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)")),
    responses((status = 200, body = WebhookView), (status = 404)), security(("bearer" = [])))]
pub async fn get_webhook(
    auth: Auth<perm::WebhooksRead>,
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
) -> ApiResult<axum::Json<WebhookView>> {
    let w = owned(&state, &auth.workspace, &webhook_id).await?;
    Ok(axum::Json(WebhookView::of(w, false)))
}

/// Update a webhook: any of `url`, `event_types`, `description`, `enabled`.
#[utoipa::path(put, path = "/api/webhooks/{webhook_id}", tag = "webhooks", request_body = UpdateWebhook,
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)")),
    responses((status = 200, body = WebhookView), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub async fn update_webhook(
    auth: Auth<perm::WebhooksWrite>,
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    Json(body): Json<UpdateWebhook>,
) -> ApiResult<axum::Json<WebhookView>> {
    let url = match body.url {
        Some(u) => Some(checked_url(&state, &u).await?),
        None => None,
    };
    let event_types = body.event_types.map(checked_event_types).transpose()?;
    let description = body
        .description
        .map(|d| checked_description(Some(d)))
        .transpose()?;
    let w = store::update(
        &state.db,
        &auth.workspace,
        &webhook_id,
        &WebhookUpdate {
            url,
            event_types,
            description,
            enabled: body.enabled,
        },
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(axum::Json(WebhookView::of(w, false)))
}

/// Delete a webhook with its receipts.
#[utoipa::path(delete, path = "/api/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)")),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn delete_webhook(
    auth: Auth<perm::WebhooksDelete>,
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
) -> ApiResult<StatusCode> {
    if store::delete(&state.db, &auth.workspace, &webhook_id).await? {
        tracing::info!(webhook = %webhook_id, by = %auth.user, "webhook deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook"))
    }
}

/// Rotate the secret. The old secret keeps signing (a second `webhook-signature` entry) for the
/// grace period; the new secret is returned once.
#[utoipa::path(post, path = "/api/webhooks/{webhook_id}/rotate-secret", tag = "webhooks",
    request_body = RotateBody,
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)")),
    responses((status = 200, body = WebhookView), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    auth: Auth<perm::WebhooksWrite>,
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    raw: axum::body::Bytes,
) -> ApiResult<axum::Json<WebhookView>> {
    let body = rotate_body(&raw)?;
    let grace = body.grace_period_secs.unwrap_or(86_400);
    if grace > 7 * 86_400 {
        return Err(ApiError::invalid(
            "grace_period_secs",
            "at most 604800 (7 days)",
        ));
    }
    let secret = checked_secret(body.secret)?;
    let until = now_ms() + (grace as i64) * 1000;
    let w = store::rotate_secret(&state.db, &auth.workspace, &webhook_id, &secret, until)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    tracing::info!(webhook = %w.id, by = %auth.user, grace, "webhook secret rotated");
    Ok(axum::Json(WebhookView::of(w, true)))
}

/// The rotation body is optional (an empty body generates a secret with the default grace).
fn rotate_body(raw: &[u8]) -> Result<RotateBody, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(RotateBody::default());
    }
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("malformed JSON body: {e}"),
        )
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))?;
    // A misspelt grace period must not rotate with the default one.
    if let Some(unknown) = obj
        .keys()
        .find(|k| !["secret", "grace_period_secs"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            unknown,
            "unknown field; expected `secret` or `grace_period_secs`",
        ));
    }
    let secret = match obj.get("secret") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::invalid("secret", "must be a string")),
    };
    let grace_period_secs = match obj.get("grace_period_secs") {
        None | Some(serde_json::Value::Null) => None,
        Some(g) => Some(whole_number(g).ok_or_else(|| {
            ApiError::invalid("grace_period_secs", "must be a whole number of seconds")
        })?),
    };
    Ok(RotateBody {
        secret,
        grace_period_secs,
    })
}

/// A non-negative integer as JSON Schema counts them: `321` and `321.0` alike.
fn whole_number(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
            .map(|f| f as u64)
    })
}

// ---------------------------------------------------------------------------------------------
// Deliveries
// ---------------------------------------------------------------------------------------------

/// Send a signed `webhook.test` event now and return its receipt.
#[utoipa::path(post, path = "/api/webhooks/{webhook_id}/test", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)")),
    responses((status = 200, body = ReceiptView, description = "the attempt's receipt; `status` is succeeded or failed"),
              (status = 404)),
    security(("bearer" = [])))]
pub async fn test_webhook(
    auth: Auth<perm::WebhooksWrite>,
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
) -> ApiResult<axum::Json<ReceiptView>> {
    let w = owned(&state, &auth.workspace, &webhook_id).await?;
    let r = state.webhooks.send_test(&w).await?;
    Ok(axum::Json(r.into()))
}

/// A webhook's delivery receipts (one per attempt), newest first.
#[utoipa::path(get, path = "/api/webhooks/{webhook_id}/receipts", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)"), ReceiptParams),
    responses((status = 200, body = Page<ReceiptView>), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub async fn list_receipts(
    auth: Auth<perm::WebhooksRead>,
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    Query(params): Query<ReceiptParams>,
) -> ApiResult<axum::Json<Page<ReceiptView>>> {
    let status = params.status.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = status
        && ![
            store::STATUS_PENDING,
            store::STATUS_SUCCEEDED,
            store::STATUS_FAILED,
        ]
        .contains(&s)
    {
        return Err(ApiError::invalid(
            "status",
            "must be pending, succeeded or failed",
        ));
    }
    let limit = clamp_limit(params.limit);
    let before = cursor(params.cursor.as_deref())?;
    owned(&state, &auth.workspace, &webhook_id).await?;
    // One row more than the page tells whether another page follows.
    let (mut items, total) =
        store::list_receipts(&state.db, &webhook_id, status, before.as_deref(), limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|r| encode_cursor(&r.id))
    } else {
        None
    };
    Ok(axum::Json(Page {
        items: items.into_iter().map(Into::into).collect(),
        total,
        next_cursor,
        page: None,
        limit: Some(limit),
    }))
}

/// Send a receipt's delivery again (same `webhook-id`, trigger `manual`, one attempt).
#[utoipa::path(post, path = "/api/webhooks/{webhook_id}/receipts/{receipt_id}/resend", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)"),
           ("receipt_id" = String, Path, description = "receipt id (rcpt-…)")),
    responses((status = 202, body = ReceiptView, description = "the new pending attempt"),
              (status = 404), (status = 409, description = "the delivery already has an attempt pending")),
    security(("bearer" = [])))]
pub async fn resend_receipt(
    auth: Auth<perm::WebhooksWrite>,
    State(state): State<AppState>,
    Path((webhook_id, receipt_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, axum::Json<ReceiptView>)> {
    owned(&state, &auth.workspace, &webhook_id).await?;
    let created = match store::resend(&state.db, &webhook_id, &receipt_id).await? {
        Ok(r) => r,
        Err(store::ResendError::NotFound) => return Err(ApiError::not_found("receipt")),
        Err(store::ResendError::AlreadyPending) => {
            return Err(aragora_core::Error::Conflict(
                "this delivery already has an attempt pending".into(),
            )
            .into());
        }
    };
    state.queue.notify_local(store::QUEUE);
    Ok((StatusCode::ACCEPTED, axum::Json(created.into())))
}

/// Send again every delivery whose latest attempt failed at or after `since`.
#[utoipa::path(post, path = "/api/webhooks/{webhook_id}/recover", tag = "webhooks",
    request_body = RecoverBody,
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)")),
    responses((status = 202, body = Recovered), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub async fn recover_failed(
    auth: Auth<perm::WebhooksWrite>,
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    Json(body): Json<RecoverBody>,
) -> ApiResult<(StatusCode, axum::Json<Recovered>)> {
    let since = parse_rfc3339(&body.since)
        .ok_or_else(|| ApiError::invalid("since", "must be an RFC 3339 time"))?;
    owned(&state, &auth.workspace, &webhook_id).await?;
    let n = store::recover_failed_since(&state.db, &webhook_id, since, 10_000).await?;
    if n > 0 {
        state.queue.notify_local(store::QUEUE);
    }
    Ok((StatusCode::ACCEPTED, axum::Json(Recovered { recovered: n })))
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx.min(sorted.len() - 1)).copied()
}

/// Per-endpoint numbers: success rate, latency, breaker state.
#[utoipa::path(get, path = "/api/webhooks/{webhook_id}/stats", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "webhook id (wh-…)"), StatsParams),
    responses((status = 200, body = StatsView), (status = 404)), security(("bearer" = [])))]
pub async fn webhook_stats(
    auth: Auth<perm::WebhooksRead>,
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
    Query(params): Query<StatsParams>,
) -> ApiResult<axum::Json<StatsView>> {
    let window = params.window_secs.unwrap_or(86_400);
    if !(60..=30 * 86_400).contains(&window) {
        return Err(ApiError::invalid("window_secs", "must be 60..=2592000"));
    }
    owned(&state, &auth.workspace, &webhook_id).await?;
    let s = store::stats(&state.db, &webhook_id, now_ms() - window as i64 * 1000).await?;
    let mut d = s.recent_durations_ms.clone();
    d.sort_unstable();
    let breaker: BreakerState = store::breaker_get(&state.db, &webhook_id)
        .await?
        .and_then(|(json, _)| serde_json::from_str(&json).ok())
        .unwrap_or_default();
    let open_count = Some(breaker.open_count(now_ms(), state.webhooks.breaker_config()));
    let breaker = match &breaker {
        BreakerState::Closed {
            consecutive_failures,
            ..
        } => BreakerView {
            state: breaker.name().into(),
            open_until: None,
            open_count,
            consecutive_failures: Some(*consecutive_failures),
        },
        BreakerState::Open { until_ms, .. } => BreakerView {
            state: breaker.name().into(),
            open_until: Some(rfc3339(*until_ms)),
            open_count,
            consecutive_failures: None,
        },
        BreakerState::HalfOpen { .. } => BreakerView {
            state: breaker.name().into(),
            open_until: None,
            open_count,
            consecutive_failures: None,
        },
    };
    Ok(axum::Json(StatsView {
        webhook_id,
        window_secs: window,
        attempts: s.attempts,
        succeeded: s.succeeded,
        failed: s.failed,
        pending: s.pending,
        success_rate: (s.attempts > 0).then(|| s.succeeded as f64 / s.attempts as f64),
        latency_ms: LatencyView {
            avg: s.avg_duration_ms,
            p50: percentile(&d, 0.50),
            p95: percentile(&d, 0.95),
            p99: percentile(&d, 0.99),
        },
        last_success_at: s.last_success_at.map(rfc3339),
        last_failure_at: s.last_failure_at.map(rfc3339),
        breaker,
    }))
}

// ---------------------------------------------------------------------------------------------
// Publishing custom events
// ---------------------------------------------------------------------------------------------

const IDEMPOTENCY_SCOPE: &str = "events.publish";
const IDEMPOTENCY_TTL_MS: i64 = 24 * 3600 * 1000;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "must be 1..=255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_string()))
}

fn replay(stored: store::StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status_code as u16).unwrap_or(StatusCode::ACCEPTED);
    let body: serde_json::Value =
        serde_json::from_str(&stored.response).unwrap_or(serde_json::Value::Null);
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    resp
}

/// Publish a custom event to the workspace's webhooks (through the outbox). With an
/// `Idempotency-Key` header, repeating the request within 24 h returns the first response (same
/// `event_id`) without publishing again.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = PublishEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries of this request safe for 24 h", pattern = "^[\\x21-\\x7e]{1,255}$")),
    responses((status = 202, body = Published, description = "stored; deliveries are queued"),
              (status = 413, description = "`data` is larger than the configured limit"),
              (status = 422, description = "invalid `event_type` or reused Idempotency-Key")),
    security(("bearer" = [])))]
pub async fn publish_event(
    auth: Auth<perm::WebhooksWrite>,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<PublishEvent>,
) -> ApiResult<Response> {
    if !is_valid_event_type(&body.event_type) {
        return Err(ApiError::invalid(
            "event_type",
            "must be 1..=8 dotted lowercase words (a-z, 0-9, _), each starting with a letter, at most 128 characters",
        ));
    }
    let data = body.data.unwrap_or_else(|| serde_json::json!({}));
    let data_text = data.to_string();
    let max = state.webhooks.settings().max_event_bytes;
    if data_text.len() > max {
        return Err(aragora_core::Error::TooLarge(format!(
            "data: serialises to {} bytes; the limit is {max}",
            data_text.len()
        ))
        .into());
    }
    let key = idempotency_key(&headers)?;
    let request_hash = key.as_ref().map(|_| {
        let mut h = Sha256::new();
        h.update(body.event_type.as_bytes());
        h.update([0]);
        // Canonical, so a retry whose keys come in another order is still the same request.
        h.update(aragora_core::json::canonical_json(&data).as_bytes());
        hex::encode(h.finalize())
    });

    let new = NewEvent {
        workspace: auth.workspace.clone(),
        event_type: body.event_type,
        data,
    };
    let (Some(key), Some(hash)) = (key, request_hash) else {
        // No key: group-committed with concurrent publishes.
        let (event, deliveries) = state.webhooks.publish(new).await?;
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(Published {
                event_type: event.event_type,
                event_id: event.event_id,
                timestamp: event.timestamp,
                deliveries,
            }),
        )
            .into_response());
    };
    let (key, hash) = (&key, &hash);
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let fresh = store::idempotency_claim_in(
        &mut tx,
        &auth.workspace,
        IDEMPOTENCY_SCOPE,
        key,
        hash,
        now,
        now - IDEMPOTENCY_TTL_MS,
    )
    .await?;
    if !fresh {
        tx.rollback().await?;
        let stored = store::idempotency_get(&state.db, &auth.workspace, IDEMPOTENCY_SCOPE, key)
            .await?
            .ok_or_else(|| aragora_core::Error::Unavailable("idempotency key busy".into()))?;
        if &stored.request_hash != hash {
            return Err(ApiError::invalid(
                "Idempotency-Key",
                "was already used with a different request",
            ));
        }
        return Ok(replay(stored));
    }
    let (event, deliveries) = publish_counted_in(&mut tx, state.db.dialect(), &new).await?;
    let out = Published {
        event_type: event.event_type,
        event_id: event.event_id,
        timestamp: event.timestamp,
        deliveries,
    };
    let json = serde_json::to_string(&out).map_err(aragora_core::Error::internal)?;
    store::idempotency_finish_in(
        &mut tx,
        &auth.workspace,
        IDEMPOTENCY_SCOPE,
        key,
        StatusCode::ACCEPTED.as_u16(),
        &json,
    )
    .await?;
    tx.commit().await?;
    if deliveries > 0 {
        state.queue.notify_local(store::QUEUE);
    }
    Ok((StatusCode::ACCEPTED, axum::Json(out)).into_response())
}
