//! CDC connectors run by the server: `POST/GET /api/v1/connectors`,
//! `GET/DELETE /api/v1/connectors/{id}`, `GET …/{id}/health`, `POST …/{id}/start`,
//! `POST …/{id}/stop`, `GET …/{id}/events?limit=`.
//!
//! Credentials are references (`password_env`, `password_file`) resolved on the node that runs
//! the connector; a literal password is refused and nothing secret is ever echoed back.

use crate::auth::{Auth, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use aragora_cdc::managed;
use aragora_core::ids::{new_id, prefix};
use aragora_core::page::{Page, clamp_limit, decode_cursor, encode_cursor};
use aragora_core::time::{now_ms, rfc3339};
use aragora_store::connectors::{self, ConnectorRecord};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

/// Unknown fields are refused, as inside `config`: a misspelt `handlers` would otherwise
/// silently fall back to the default.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnector {
    /// Unique among the workspace's connectors, 1 to 100 characters (trimmed).
    #[schema(
        max_length = 100,
        pattern = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    name: String,
    /// `postgresql`, `mysql`, `mongodb`, `sqlserver` or `snowflake` (a type this build lacks is
    /// refused with 422).
    #[serde(rename = "type")]
    kind: String,
    /// host, port, database, schema, tables, mode (`trigger` | `logical`), snapshot
    /// (`initial` | `never`), slot_name, publication, install, replica_identity_full,
    /// batch_size, poll_interval_seconds, timestamp_column, options.
    #[schema(value_type = Object)]
    config: Value,
    /// `{"username": "…", "password_env": "VAR"}` (or `password_file`).
    #[serde(default)]
    #[schema(value_type = Object)]
    credentials: Value,
    /// `knowledge_mound` and/or `webhook` (default `["knowledge_mound"]`).
    #[serde(default)]
    handlers: Option<Vec<String>>,
    /// Start capturing at once (default true).
    #[serde(default)]
    start: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectorView {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    workspace: String,
    #[schema(value_type = Object)]
    config: Value,
    /// username and the reference to the password; never the password.
    #[schema(value_type = Object)]
    credentials: Value,
    handlers: Vec<String>,
    /// `running` or `stopped` (what was asked for), or `failed`: it stopped itself on an error
    /// retrying cannot get past (its health shows `phase` and `source_error`); `POST …/start`
    /// runs it again.
    #[schema(pattern = "^(running|stopped|failed)$")]
    state: String,
    /// The node holding the connector's lease, while one does.
    running_on: Option<String>,
    created_by: String,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct HealthView {
    healthy: bool,
    latency_ms: f64,
    #[schema(value_type = Object)]
    details: Map<String, Value>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// Page size (1 to 200, default 20).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct EventParams {
    /// How many of the newest acknowledged events (1 to 100, default 20).
    limit: Option<u32>,
    /// `next_cursor` of the previous page (older events).
    cursor: Option<String>,
}

fn view(r: ConnectorRecord, holder: Option<String>) -> ConnectorView {
    ConnectorView {
        id: r.id,
        name: r.name,
        kind: r.kind,
        workspace: r.workspace,
        config: r.config,
        credentials: r.credentials,
        handlers: r.handlers,
        state: r.desired_state,
        running_on: holder,
        created_by: r.created_by,
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

async fn live_holder(state: &AppState, id: &str) -> ApiResult<Option<String>> {
    Ok(connectors::lease(&state.db, id)
        .await?
        .filter(|l| l.expires_at >= now_ms())
        .map(|l| l.holder))
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_credentials(v: &Value) -> Result<Value, ApiError> {
    let obj = match v {
        Value::Null => {
            return Err(ApiError::invalid(
                "credentials",
                "give {\"username\", \"password_env\"}",
            ));
        }
        Value::Object(o) => o,
        _ => return Err(ApiError::invalid("credentials", "must be an object")),
    };
    let mut out = Map::new();
    for (k, val) in obj {
        match k.as_str() {
            "username" => {
                let u = val
                    .as_str()
                    .filter(|u| !u.is_empty() && u.len() <= 63)
                    .ok_or_else(|| {
                        ApiError::invalid("credentials.username", "must be 1 to 63 characters")
                    })?;
                out.insert(k.clone(), json!(u));
            }
            "password_env" => {
                let e = val.as_str().filter(|e| is_env_name(e)).ok_or_else(|| {
                    ApiError::invalid(
                        "credentials.password_env",
                        "must name an environment variable ([A-Za-z_][A-Za-z0-9_]*)",
                    )
                })?;
                out.insert(k.clone(), json!(e));
            }
            "password_file" => {
                let p = val.as_str().filter(|p| p.starts_with('/')).ok_or_else(|| {
                    ApiError::invalid("credentials.password_file", "must be an absolute path")
                })?;
                out.insert(k.clone(), json!(p));
            }
            "password" => {
                return Err(ApiError::invalid(
                    "credentials.password",
                    "literal passwords are not accepted: put it in an environment variable of \
                     the server and send password_env (or password_file)",
                ));
            }
            other => {
                return Err(ApiError::invalid(
                    &format!("credentials.{other}"),
                    "unknown field; expected username, password_env or password_file",
                ));
            }
        }
    }
    if !out.contains_key("username") {
        return Err(ApiError::invalid("credentials.username", "is required"));
    }
    if out.contains_key("password_env") && out.contains_key("password_file") {
        return Err(ApiError::invalid(
            "credentials.password_file",
            "give password_env or password_file, not both",
        ));
    }
    Ok(Value::Object(out))
}

fn cdc_error(e: aragora_cdc::CdcError) -> ApiError {
    match e {
        aragora_cdc::CdcError::Config { field, message } => ApiError::invalid(&field, message),
        other => ApiError::invalid("config", other.to_string()),
    }
}

/// Register a connector (and start it unless `start` is false).
#[utoipa::path(post, path = "/api/v1/connectors", tag = "connectors", request_body = CreateConnector,
    responses((status = 201, body = ConnectorView), (status = 409, description = "name taken"),
        (status = 422, description = "invalid field")),
    security(("bearer" = [])))]
pub async fn create(
    auth: Auth<perm::ConnectorsWrite>,
    State(state): State<AppState>,
    Json(body): Json<CreateConnector>,
) -> ApiResult<(StatusCode, axum::Json<ConnectorView>)> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
    }
    let id = new_id(prefix::CONNECTOR);
    // Validated for its type, with the names it creates in the source pinned to its id.
    let config = managed::prepare_config(&body.kind, &id, &body.config).map_err(cdc_error)?;
    let credentials = parse_credentials(&body.credentials)?;
    let handlers = body
        .handlers
        .unwrap_or_else(|| vec!["knowledge_mound".into()]);
    if handlers.is_empty() {
        return Err(ApiError::invalid("handlers", "name at least one handler"));
    }
    for (i, h) in handlers.iter().enumerate() {
        if !crate::cdc::HANDLERS.contains(&h.as_str()) {
            return Err(ApiError::invalid(
                &format!("handlers[{i}]"),
                format!("unknown handler `{h}`; expected knowledge_mound or webhook"),
            ));
        }
    }
    // Each handler once, in the order given (a handler listed twice would get every event twice).
    let mut handlers_dedup: Vec<String> = Vec::with_capacity(handlers.len());
    for h in handlers {
        if !handlers_dedup.contains(&h) {
            handlers_dedup.push(h);
        }
    }
    let now = now_ms();
    let record = ConnectorRecord {
        id,
        workspace: auth.workspace.clone(),
        name,
        kind: body.kind,
        config,
        credentials,
        handlers: handlers_dedup,
        desired_state: if body.start.unwrap_or(true) {
            "running"
        } else {
            "stopped"
        }
        .into(),
        created_by: auth.user.clone(),
        created_at: now,
        updated_at: now,
    };
    if !connectors::insert(&state.db, &record).await? {
        return Err(aragora_core::Error::Conflict(format!(
            "a connector named `{}` already exists in this workspace",
            record.name
        ))
        .into());
    }
    state.cdc_wake.notify_one();
    tracing::info!(connector = %record.id, by = %auth.user, "connector created");
    Ok((StatusCode::CREATED, axum::Json(view(record, None))))
}

/// List the workspace's connectors.
#[utoipa::path(get, path = "/api/v1/connectors", tag = "connectors", params(ListParams),
    responses((status = 200, body = Object)), security(("bearer" = [])))]
pub async fn list(
    auth: Auth<perm::ConnectorsRead>,
    State(state): State<AppState>,
    Query(q): Query<ListParams>,
) -> ApiResult<axum::Json<Page<ConnectorView>>> {
    let limit = clamp_limit(q.limit);
    let after = match q.cursor.as_deref() {
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| ApiError::invalid("cursor", "not a cursor from this list"))?,
        ),
        None => None,
    };
    let (rows, total) =
        connectors::list(&state.db, &auth.workspace, after.as_deref(), limit + 1).await?;
    let more = rows.len() > limit as usize;
    let mut items = Vec::new();
    for r in rows.into_iter().take(limit as usize) {
        let holder = live_holder(&state, &r.id).await?;
        items.push(view(r, holder));
    }
    let next_cursor = if more {
        items.last().map(|v| encode_cursor(&v.id))
    } else {
        None
    };
    Ok(axum::Json(Page {
        items,
        total,
        next_cursor,
        page: None,
        limit: Some(limit),
    }))
}

async fn find(state: &AppState, workspace: &str, id: &str) -> ApiResult<ConnectorRecord> {
    connectors::get(&state.db, workspace, id)
        .await?
        .ok_or_else(|| ApiError::not_found("connector"))
}

/// One connector.
#[utoipa::path(get, path = "/api/v1/connectors/{connector_id}", tag = "connectors",
    params(("connector_id" = String, Path, description = "conn-…")),
    responses((status = 200, body = ConnectorView), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    auth: Auth<perm::ConnectorsRead>,
    State(state): State<AppState>,
    Path(connector_id): Path<String>,
) -> ApiResult<axum::Json<ConnectorView>> {
    let r = find(&state, &auth.workspace, &connector_id).await?;
    let holder = live_holder(&state, &r.id).await?;
    Ok(axum::Json(view(r, holder)))
}

/// Delete a connector: it stops, its triggers/changelog or slot/publication are removed from the
/// source, then its records go, with the knowledge items it indexed.
#[utoipa::path(delete, path = "/api/v1/connectors/{connector_id}", tag = "connectors",
    params(("connector_id" = String, Path, description = "conn-…")),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn delete(
    auth: Auth<perm::ConnectorsWrite>,
    State(state): State<AppState>,
    Path(connector_id): Path<String>,
) -> ApiResult<StatusCode> {
    if !connectors::set_desired_state(&state.db, &auth.workspace, &connector_id, "deleting").await?
    {
        return Err(ApiError::not_found("connector"));
    }
    state.cdc_wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

async fn set_state(
    state: &AppState,
    workspace: &str,
    id: &str,
    desired: &str,
) -> ApiResult<axum::Json<ConnectorView>> {
    if !connectors::set_desired_state(&state.db, workspace, id, desired).await? {
        return Err(ApiError::not_found("connector"));
    }
    state.cdc_wake.notify_one();
    let r = find(state, workspace, id).await?;
    let holder = live_holder(state, &r.id).await?;
    Ok(axum::Json(view(r, holder)))
}

/// Start capturing (the supervisor of some node picks it up).
#[utoipa::path(post, path = "/api/v1/connectors/{connector_id}/start", tag = "connectors",
    params(("connector_id" = String, Path, description = "conn-…")),
    responses((status = 200, body = ConnectorView), (status = 404)), security(("bearer" = [])))]
pub async fn start(
    auth: Auth<perm::ConnectorsWrite>,
    State(state): State<AppState>,
    Path(connector_id): Path<String>,
) -> ApiResult<axum::Json<ConnectorView>> {
    set_state(&state, &auth.workspace, &connector_id, "running").await
}

/// Stop capturing; the position is kept, and changes made meanwhile are delivered on start.
#[utoipa::path(post, path = "/api/v1/connectors/{connector_id}/stop", tag = "connectors",
    params(("connector_id" = String, Path, description = "conn-…")),
    responses((status = 200, body = ConnectorView), (status = 404)), security(("bearer" = [])))]
pub async fn stop(
    auth: Auth<perm::ConnectorsWrite>,
    State(state): State<AppState>,
    Path(connector_id): Path<String>,
) -> ApiResult<axum::Json<ConnectorView>> {
    set_state(&state, &auth.workspace, &connector_id, "stopped").await
}

/// `5` for whole seconds, `2.5` otherwise.
fn seconds(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        d.as_secs_f64().to_string()
    }
}

/// Health: `{"healthy", "latency_ms", "details"}` — the source probed from this node, plus what
/// the node running the connector last reported (events, handler errors, lag, slot lag…).
/// A source that has not answered within the probe timeout (`--cdc-health-timeout-secs`,
/// default 5 s) is reported as `healthy: false` with `details.source_unreachable`, and
/// `latency_ms` is the time waited.
#[utoipa::path(get, path = "/api/v1/connectors/{connector_id}/health", tag = "connectors",
    params(("connector_id" = String, Path, description = "conn-…")),
    responses((status = 200, body = HealthView), (status = 404)), security(("bearer" = [])))]
pub async fn health(
    auth: Auth<perm::ConnectorsRead>,
    State(state): State<AppState>,
    Path(connector_id): Path<String>,
) -> ApiResult<axum::Json<HealthView>> {
    let r = find(&state, &auth.workspace, &connector_id).await?;
    let lease = connectors::lease(&state.db, &r.id).await?;
    let now = now_ms();
    let mut details = Map::new();
    let (probe_ok, latency_ms) = match crate::cdc::build(&state.db, &r, None) {
        Ok(conn) => {
            // A source that does not answer (a blackholed host, a port nothing answers behind a
            // firewall) would hold the probe for the drivers' connect timeouts (10 s and more).
            let limit = state.config.cdc.health_probe_timeout;
            let began = std::time::Instant::now();
            match tokio::time::timeout(limit, conn.health_check()).await {
                Ok(report) => {
                    let reachable = !report.details.contains_key("source_unreachable");
                    // The probe's own runtime counters are empty (the running node reports
                    // those); keep only what it saw at the source.
                    // (`status()` of the probe also names source-specific runtime details.)
                    let runtime = conn.status().details();
                    for (k, v) in report.details {
                        if !runtime.contains_key(&k) {
                            details.insert(k, v);
                        }
                    }
                    (reachable, report.latency_ms)
                }
                Err(_) => {
                    details.insert(
                        "source_unreachable".into(),
                        json!(format!(
                            "no answer from the source within {} s",
                            seconds(limit)
                        )),
                    );
                    let waited = began.elapsed().as_secs_f64() * 1000.0;
                    (false, (waited * 100.0).round() / 100.0)
                }
            }
        }
        Err(e) => {
            details.insert("source_unreachable".into(), json!(e));
            (false, 0.0)
        }
    };
    let running = lease.as_ref().is_some_and(|l| l.expires_at >= now);
    let mut runtime_ok = true;
    if let Some(l) = &lease {
        if let Some(d) = l.status.get("details").and_then(Value::as_object) {
            for (k, v) in d {
                details.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        runtime_ok = l
            .status
            .get("healthy")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        details.insert("reported_at".into(), json!(rfc3339(l.status_at)));
        details.insert("fencing_token".into(), json!(l.fencing_token));
    }
    details.insert("state".into(), json!(r.desired_state));
    details.insert("running".into(), json!(running));
    details.insert(
        "running_on".into(),
        json!(lease.filter(|_| running).map(|l| l.holder)),
    );
    let healthy = probe_ok
        && match r.desired_state.as_str() {
            "running" => running && runtime_ok,
            "failed" => false,
            _ => true,
        };
    Ok(axum::Json(HealthView {
        healthy,
        latency_ms,
        details,
    }))
}

/// The newest acknowledged events (the ring keeps the last 100), newest first; `total` is how
/// many the ring holds, `next_cursor` pages to older ones.
#[utoipa::path(get, path = "/api/v1/connectors/{connector_id}/events", tag = "connectors",
    params(("connector_id" = String, Path, description = "conn-…"), EventParams),
    responses((status = 200, body = Object), (status = 404)), security(("bearer" = [])))]
pub async fn events(
    auth: Auth<perm::ConnectorsRead>,
    State(state): State<AppState>,
    Path(connector_id): Path<String>,
    Query(q): Query<EventParams>,
) -> ApiResult<axum::Json<Page<Value>>> {
    let r = find(&state, &auth.workspace, &connector_id).await?;
    let limit = q
        .limit
        .unwrap_or(20)
        .clamp(1, aragora_cdc::checkpoint::RECENT_EVENTS as u32);
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            aragora_core::page::decode_cursor(c)
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this list issued"))?,
        ),
        None => None,
    };
    let (mut rows, total) = connectors::recent_events(&state.db, &r.id, before, limit + 1).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|(seq, _)| aragora_core::page::encode_cursor(&seq.to_string()))
    } else {
        None
    };
    Ok(axum::Json(Page {
        total,
        items: rows.into_iter().map(|(_, e)| e).collect(),
        next_cursor,
        page: None,
        limit: Some(limit),
    }))
}
