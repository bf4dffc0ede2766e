//! The Knowledge Mound over HTTP (workspace-scoped): full-text search, read an item, manual ingest,
//! delete (by id, or by source: what a client-side connector retracts).

use crate::auth::{Auth, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use aragora_core::Error;
use aragora_core::ids::{new_id, prefix};
use aragora_knowledge::{
    Item, NewItem, SearchHit, SearchQuery, check_client_source_type, source, validate_source,
};
use aragora_store::knowledge;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchParams {
    /// Words to find; items must contain all of them. Exact-phrase matches rank first.
    // At least one letter or digit of any script. Regex dialects disagree on what `\w` covers
    // beyond ASCII, so the schema admits an ASCII letter or digit or any non-ASCII character, and
    // a query with no letter or digit is a 422 naming `q`.
    #[param(
        required = true,
        max_length = 500,
        pattern = "[^\\x00-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7f]"
    )]
    pub q: Option<String>,
    /// Only items of this source type (`debate`, `cdc`, `manual`, …).
    #[param(pattern = "^\\s*([a-z][a-z0-9_.-]{0,31})?\\s*$")]
    pub source_type: Option<String>,
    /// 1..=50 (default 10). May change from page to page.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (same `q` and `source_type`).
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    /// Best first: exact-phrase matches, then the rest, each by `score`.
    pub items: Vec<SearchHit>,
    /// Hits on this page (not a count of every match).
    pub total: i64,
    /// Pass as `cursor` (with the same `q` and `source_type`) for the next page; null on the
    /// last page.
    pub next_cursor: Option<String>,
}

/// Full-text search with ranking and highlighted snippets, paged with `limit` and `cursor`.
#[utoipa::path(get, path = "/api/v1/knowledge/search", tag = "knowledge", params(SearchParams),
    responses((status = 200, body = SearchResults), (status = 422, description = "missing or bad q / source_type, or a cursor not issued for this search")),
    security(("bearer" = [])))]
pub async fn search(
    auth: Auth<perm::KnowledgeRead>,
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
) -> ApiResult<axum::Json<SearchResults>> {
    let query = SearchQuery::new(
        params.q.as_deref().unwrap_or(""),
        params.source_type.as_deref(),
        params.limit,
    )?
    .after_cursor(params.cursor.as_deref())?;
    let started = std::time::Instant::now();
    let page = knowledge::search_page(&state.db, &auth.workspace, &query).await?;
    metrics::histogram!("aragora_knowledge_search_seconds").record(started.elapsed().as_secs_f64());
    Ok(axum::Json(SearchResults {
        total: page.hits.len() as i64,
        next_cursor: page.more.then(|| query.next_cursor()),
        items: page.hits,
    }))
}

/// One knowledge item.
#[utoipa::path(get, path = "/api/v1/knowledge/items/{item_id}", tag = "knowledge",
    params(("item_id" = String, Path, description = "item id (km-…)")),
    responses((status = 200, body = Item), (status = 404)), security(("bearer" = [])))]
pub async fn get_item(
    auth: Auth<perm::KnowledgeRead>,
    State(state): State<AppState>,
    Path(item_id): Path<String>,
) -> ApiResult<axum::Json<Item>> {
    knowledge::get(&state.db, &auth.workspace, &item_id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("knowledge item"))
}

/// Body of `POST /api/v1/knowledge/items`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct IngestItem {
    /// The searchable text (at most 200,000 characters).
    #[schema(
        max_length = 200000,
        pattern = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    pub content: String,
    /// Default `manual`. `debate` and `cdc` are written by the system only.
    #[serde(default)]
    #[schema(pattern = "^(?!(debate|cdc)$)[a-z][a-z0-9_.-]{0,31}$")]
    pub source_type: Option<String>,
    /// Ingesting the same (source_type, source_key) again updates that item. Default: a new key.
    #[serde(default)]
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,1024}$")]
    pub source_key: Option<String>,
    /// Any JSON object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// 0 to 1 (default 1).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1)]
    pub confidence: Option<f64>,
}

/// Ingest an item by hand: 201 when new, 200 when it updated the item with the same source key.
#[utoipa::path(post, path = "/api/v1/knowledge/items", tag = "knowledge", request_body = IngestItem,
    responses((status = 201, body = Item), (status = 200, body = Item, description = "updated the item with this source key"),
        (status = 422, description = "invalid field")),
    security(("bearer" = [])))]
pub async fn create_item(
    auth: Auth<perm::KnowledgeWrite>,
    State(state): State<AppState>,
    Json(body): Json<IngestItem>,
) -> ApiResult<(StatusCode, axum::Json<Item>)> {
    let source_type = body.source_type.unwrap_or_else(|| source::MANUAL.into());
    check_client_source_type(&source_type)?;
    let item = NewItem {
        source_type,
        source_key: body.source_key.unwrap_or_else(|| new_id(prefix::KNOWLEDGE)),
        content: body.content,
        metadata: body
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default())),
        confidence: body.confidence.unwrap_or(1.0),
    };
    item.validate()?;
    let mut tx = state.db.begin().await?;
    let existed = knowledge::exists_in(
        &mut tx,
        &auth.workspace,
        &item.source_type,
        &item.source_key,
    )
    .await?;
    let stored = knowledge::upsert_in(&mut tx, state.db.dialect(), &auth.workspace, &item).await?;
    tx.commit().await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(stored)))
}

/// Delete one item.
#[utoipa::path(delete, path = "/api/v1/knowledge/items/{item_id}", tag = "knowledge",
    params(("item_id" = String, Path, description = "item id (km-…)")),
    responses((status = 204, description = "deleted"),
        (status = 404, description = "no such item in this workspace")),
    security(("bearer" = [])))]
pub async fn delete_item(
    auth: Auth<perm::KnowledgeWrite>,
    State(state): State<AppState>,
    Path(item_id): Path<String>,
) -> ApiResult<StatusCode> {
    if knowledge::delete(&state.db, &auth.workspace, &item_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("knowledge item"))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SourceParams {
    /// The item's source type, as ingested (`debate` and `cdc` belong to the system).
    #[param(required = true, pattern = "^(?!(debate|cdc)$)[a-z][a-z0-9_.-]{0,31}$")]
    pub source_type: Option<String>,
    /// The item's source key, as ingested.
    #[param(
        required = true,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,1024}$"
    )]
    pub source_key: Option<String>,
}

/// Delete the item of a source, e.g. a row a client-side connector saw deleted.
#[utoipa::path(delete, path = "/api/v1/knowledge/items", tag = "knowledge", params(SourceParams),
    responses((status = 204, description = "deleted"),
        (status = 404, description = "no item of this source in this workspace"),
        (status = 422, description = "missing or invalid source_type / source_key")),
    security(("bearer" = [])))]
pub async fn delete_by_source(
    auth: Auth<perm::KnowledgeWrite>,
    State(state): State<AppState>,
    Query(params): Query<SourceParams>,
) -> ApiResult<StatusCode> {
    let required = |value: Option<String>, field: &'static str| match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(Error::invalid(field, "required")),
    };
    let source_type = required(params.source_type, "source_type")?;
    let source_key = required(params.source_key, "source_key")?;
    check_client_source_type(&source_type)?;
    validate_source(&source_type, &source_key)?;
    if knowledge::delete_by_source(&state.db, &auth.workspace, &source_type, &source_key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("knowledge item"))
    }
}
