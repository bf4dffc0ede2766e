//! Template Marketplace (`/api/marketplace/…`): publish, version, search, download, rate, review.
//!
//! Anything the caller may not see (another workspace's `workspace`/`private` template, someone
//! else's private one, an unlisted one) answers 404 everywhere: lists, search, get, download,
//! versions and reviews. Permission checks (`Auth<perm::…>`) come first, so 403 precedes 404.

use crate::auth::{Auth, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;
use aragora_core::Error;
use aragora_core::auth::Principal;
use aragora_core::event::types::TEMPLATE_PUBLISHED;
use aragora_core::ids::{new_id, prefix};
use aragora_core::page::clamp_limit;
use aragora_core::time::{now_ms, rfc3339};
use aragora_marketplace::semver::{self, Version};
use aragora_marketplace::{ListRequest, RawList, Viewer, Visibility, rating, request, template};
use aragora_store::events::{self, NewEvent};
use aragora_store::marketplace::{self as store, Metadata, NewTemplate, Template, VersionRow};
use aragora_store::rate_limit::{self, Decision, Limit};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

// ---------------------------------------------------------------------------------------------
// Shapes

/// A template (DESIGN.md §10).
#[derive(Serialize, ToSchema)]
pub struct TemplateView {
    id: String,
    name: String,
    description: String,
    category: String,
    /// `public`, `workspace` or `private`.
    visibility: String,
    tags: Vec<String>,
    owner: String,
    workspace: String,
    /// The version served by default: the highest non-yanked stable version (else pre-release).
    latest_version: String,
    /// Unique downloads: one per user, version and UTC day.
    downloads: i64,
    /// Plain average of the ratings, two decimals (0 when unrated).
    rating_average: f64,
    rating_count: i64,
    /// Bayesian average used by `sort=rating`: (sum + 5·3) / (count + 5).
    rating_score: f64,
    created_at: String,
    updated_at: String,
}

impl From<&Template> for TemplateView {
    fn from(t: &Template) -> Self {
        TemplateView {
            id: t.id.clone(),
            name: t.name.clone(),
            description: t.description.clone(),
            category: t.category.clone(),
            visibility: t.visibility.as_str().to_string(),
            tags: t.tags.clone(),
            owner: t.owner.clone(),
            workspace: t.workspace.clone(),
            latest_version: t.latest_version.clone(),
            downloads: t.downloads,
            rating_average: rating::average(t.rating_sum, t.rating_count),
            rating_count: t.rating_count,
            rating_score: (t.rating_score as f64 / rating::SCALE as f64 * 1000.0).round() / 1000.0,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
        }
    }
}

/// A template with the graph of its default version.
#[derive(Serialize, ToSchema)]
pub struct TemplateDetail {
    #[serde(flatten)]
    template: TemplateView,
    /// The default version's graph; null when every version is yanked.
    #[schema(value_type = Option<Object>)]
    template_data: Option<Box<RawValue>>,
    /// `sha256:<hex>` of the canonical JSON of `template_data`.
    checksum: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TemplateList {
    items: Vec<TemplateView>,
    total: i64,
    next_cursor: Option<String>,
    page: u32,
    limit: u32,
}

#[derive(Serialize, ToSchema)]
pub struct VersionView {
    template_id: String,
    version: String,
    changelog: String,
    checksum: String,
    size_bytes: i64,
    downloads: i64,
    yanked: bool,
    published_by: String,
    created_at: String,
    yanked_at: Option<String>,
    /// Only when one version is requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    template_data: Option<Box<RawValue>>,
}

fn raw_json(text: String) -> ApiResult<Box<RawValue>> {
    RawValue::from_string(text)
        .map_err(|e| Error::internal(format!("stored template_data: {e}")).into())
}

impl VersionView {
    fn from_row(v: VersionRow) -> ApiResult<VersionView> {
        Ok(VersionView {
            template_data: v.template_data.map(raw_json).transpose()?,
            template_id: v.template_id,
            version: v.version,
            changelog: v.changelog,
            checksum: v.checksum,
            size_bytes: v.size_bytes,
            downloads: v.downloads,
            yanked: v.yanked,
            published_by: v.published_by,
            created_at: rfc3339(v.created_at),
            yanked_at: v.yanked_at.map(rfc3339),
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    items: Vec<VersionView>,
    total: i64,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Download {
    template_id: String,
    name: String,
    version: String,
    #[schema(value_type = Object)]
    template_data: Box<RawValue>,
    /// `sha256:<hex>` of the canonical JSON of `template_data` (keys sorted, no whitespace).
    checksum: String,
    yanked: bool,
    /// Whether this download counted (the first by this user for this version today).
    counted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RatingView {
    template_id: String,
    /// Your rating.
    rating: i64,
    rating_average: f64,
    rating_count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ReviewView {
    id: String,
    template_id: String,
    user: String,
    rating: i64,
    title: String,
    content: String,
    created_at: String,
    updated_at: String,
}

impl From<store::Review> for ReviewView {
    fn from(r: store::Review) -> Self {
        ReviewView {
            id: r.id,
            template_id: r.template_id,
            user: r.user,
            rating: r.rating,
            title: r.title.unwrap_or_default(),
            content: r.content.unwrap_or_default(),
            created_at: rfc3339(r.reviewed_at.unwrap_or(r.created_at)),
            updated_at: rfc3339(r.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReviewList {
    items: Vec<ReviewView>,
    total: i64,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CategoryCount {
    name: String,
    /// Listed templates in this category that you may see.
    count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct CategoryList {
    items: Vec<CategoryCount>,
    total: i64,
    next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct PublishBody {
    /// 1 to 100 characters (trimmed), one line.
    #[schema(
        max_length = 100,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    name: String,
    #[serde(default)]
    description: Option<String>,
    category: String,
    /// `public` (default), `workspace` or `private`.
    #[serde(default)]
    visibility: Option<String>,
    /// The workflow graph: `{"nodes": [{"id": …}, …], "edges": [{"source": …, "target": …}, …]}`.
    #[schema(value_type = Object)]
    template_data: Value,
    /// Absent or `null`: no tags.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Semantic version of this first version (default `1.0.0`).
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    changelog: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct PatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Refused (versions are immutable: publish a new version instead), so not documented.
    #[serde(default)]
    #[schema(ignore)]
    template_data: Option<Value>,
    /// Refused (see `POST …/versions`), so not documented.
    #[serde(default)]
    #[schema(ignore)]
    version: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct VersionBody {
    /// Semantic version, e.g. `1.1.0` or `2.0.0-rc.1`.
    version: String,
    #[serde(default)]
    changelog: Option<String>,
    #[schema(value_type = Object)]
    template_data: Value,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct DownloadBody {
    /// A specific version (yanked versions are served only when named).
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct DownloadQuery {
    /// Same as the body's `version`.
    version: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RateBody {
    /// 1 to 5.
    #[schema(minimum = 1, maximum = 5)]
    #[serde(deserialize_with = "crate::extract::whole_i64")]
    rating: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct ReviewBody {
    /// 1 to 5; this is also your rating of the template.
    #[schema(minimum = 1, maximum = 5)]
    #[serde(deserialize_with = "crate::extract::whole_i64")]
    rating: i64,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct ListParams {
    /// Only this category.
    category: Option<String>,
    /// Only this visibility (`public`, `workspace`, `private`).
    #[param(pattern = "^(|public|workspace|private)$")]
    visibility: Option<String>,
    /// Comma-separated tags; a template must carry all of them.
    tags: Option<String>,
    /// Search terms (name, tags, description).
    q: Option<String>,
    /// Minimum plain average rating (0–5).
    #[param(value_type = Option<f64>)]
    min_rating: Option<String>,
    /// `relevance` (default with `q`), `downloads` (default), `rating`, `newest`, `updated`.
    sort: Option<String>,
    /// Page number from 1 (up to the first 10,000 results; use `cursor` beyond).
    #[param(value_type = Option<u32>)]
    page: Option<String>,
    /// Page size, 1–200 (default 20).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// `next_cursor` of the previous page (same filters and sort).
    cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct PageParams {
    /// Page size, 1–200 (default 20).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl PageParams {
    fn limit(&self) -> ApiResult<u32> {
        // An empty `limit=` is a malformed number, as for every other list (not the default).
        match self.limit.as_deref().map(str::trim) {
            None => Ok(clamp_limit(None)),
            Some(s) => s.parse().map(|n| clamp_limit(Some(n))).map_err(|_| {
                ApiError::invalid("limit", format!("`{s}` is not a whole number from 1"))
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn viewer(p: &Principal) -> Viewer {
    Viewer {
        workspace: p.workspace.clone(),
        user: p.user.clone(),
        admin: p.is_admin(),
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("template")
}

/// The template if the caller may see it, else 404.
async fn visible(state: &AppState, who: &Viewer, id: &str) -> ApiResult<Template> {
    match store::get(&state.db, id).await? {
        Some(t) if !t.unlisted && who.can_see(t.visibility, &t.workspace, &t.owner) => Ok(t),
        _ => Err(not_found()),
    }
}

/// Re-reads the template inside a write transaction (locked on PostgreSQL) and re-checks it.
async fn visible_in(
    tx: &mut aragora_store::Tx,
    state: &AppState,
    who: &Viewer,
    id: &str,
) -> ApiResult<Template> {
    match store::get_for_update_in(tx, state.db.dialect(), id).await? {
        Some(t) if !t.unlisted && who.can_see(t.visibility, &t.workspace, &t.owner) => Ok(t),
        _ => Err(not_found()),
    }
}

fn require_owner(who: &Viewer, t: &Template) -> ApiResult<()> {
    if who.is_owner(&t.workspace, &t.owner) {
        Ok(())
    } else {
        Err(ApiError::forbidden("only the template's owner may do this"))
    }
}

fn require_moderator(who: &Viewer, t: &Template) -> ApiResult<()> {
    if who.can_moderate(&t.workspace, &t.owner) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only the template's owner or an admin may do this",
        ))
    }
}

async fn take_token(
    state: &AppState,
    action: &str,
    who: &Principal,
    limit: &Limit,
) -> ApiResult<()> {
    let bucket = format!("marketplace:{action}:{}/{}", who.workspace, who.user);
    match rate_limit::take(&state.db, &bucket, limit).await? {
        Decision::Allowed { .. } => Ok(()),
        d @ Decision::Limited { .. } => {
            metrics::counter!("aragora_marketplace_rate_limited_total", "action" => action.to_string())
                .increment(1);
            Err(Error::RateLimited {
                retry_after_secs: d.retry_after_secs().unwrap_or(1),
            }
            .into())
        }
    }
}

fn map_unique(e: aragora_store::sqlx::Error, what: String) -> ApiError {
    match &e {
        aragora_store::sqlx::Error::Database(d) if d.is_unique_violation() => {
            Error::Conflict(what).into()
        }
        _ => e.into(),
    }
}

fn publish_failed(e: &ApiError) {
    metrics::counter!("aragora_marketplace_publish_failures_total", "reason" => e.code)
        .increment(1);
}

fn parse_visibility(v: Option<&str>) -> ApiResult<Option<Visibility>> {
    v.map(|v| v.parse().map_err(|m| ApiError::invalid("visibility", m)))
        .transpose()
}

fn published_event(t: &Template, version: &str) -> NewEvent {
    NewEvent {
        workspace: t.workspace.clone(),
        event_type: TEMPLATE_PUBLISHED.to_string(),
        data: serde_json::json!({
            "template_id": t.id, "name": t.name, "version": version, "category": t.category,
            "visibility": t.visibility.as_str(), "owner": t.owner,
        }),
    }
}

/// The default version of a template given all its versions (yanked ones included).
fn latest_of(rows: &[VersionRow]) -> Option<String> {
    let parsed: Vec<(Version, bool)> = rows
        .iter()
        .filter_map(|r| Version::parse(&r.version).ok().map(|v| (v, r.yanked)))
        .collect();
    semver::default_version(parsed.iter().map(|(v, y)| (v, *y)))
        .or_else(|| parsed.iter().map(|(v, _)| v).max())
        .map(|v| v.to_string())
}

async fn detail(state: &AppState, t: &Template) -> ApiResult<TemplateDetail> {
    let v = store::version(&state.db, &t.id, &t.latest_version)
        .await?
        .filter(|v| !v.yanked);
    let (data, checksum) = match v {
        Some(v) => (
            Some(raw_json(v.template_data.unwrap_or_default())?),
            Some(v.checksum),
        ),
        None => (None, None),
    };
    Ok(TemplateDetail {
        template: t.into(),
        template_data: data,
        checksum,
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// List and search templates.
///
/// Without `q` the default order is `downloads`; with `q` it is `relevance`: an exact name match
/// first, then the field score (name 10 > tags 4 > description 1 per term), then downloads, then
/// id. Every order ends in the id, so `next_cursor` pages neither skip nor repeat items.
#[utoipa::path(get, path = "/api/marketplace/templates", tag = "marketplace", params(ListParams),
    responses((status = 200, body = TemplateList), (status = 422, description = "invalid parameter")),
    security(("bearer" = [])))]
pub async fn list(
    auth: Auth<perm::MarketplaceRead>,
    State(state): State<AppState>,
    RawQuery(raw_query): RawQuery,
    Query(p): Query<ListParams>,
) -> ApiResult<Response> {
    // The caller's scope decides which templates are visible, so it is part of the key.
    let key = format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}",
        auth.workspace,
        auth.user,
        auth.is_admin(),
        raw_query.unwrap_or_default()
    );
    let viewer = viewer(&auth);
    let db = state.db.clone();
    let body = state
        .marketplace_lists
        .get_or_compute(key, async move {
            let req = ListRequest::parse(&RawList {
                category: p.category,
                visibility: p.visibility,
                tags: p.tags,
                q: p.q,
                min_rating: p.min_rating,
                sort: p.sort,
                page: p.page,
                limit: p.limit,
                cursor: p.cursor,
            })?;
            let page = store::list(&db, &req, &viewer).await?;
            let list = TemplateList {
                items: page.items.iter().map(Into::into).collect(),
                total: page.total,
                next_cursor: page.next_key.map(|k| req.next_cursor(page.mode, k)),
                page: req.page,
                limit: req.limit,
            };
            serde_json::to_vec(&list).map(Bytes::from).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })
        })
        .await?;
    Ok(json_bytes(body))
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Route layer: any marketplace write (a non-GET request under `/api/marketplace/`) empties this
/// process's list cache once it has been handled, so nobody is served a page older than a write
/// this process acknowledged. Downloads are the exception: they are by far the most frequent
/// write and change only a counter, so list pages show new download counts (and the order by
/// them) within the cache's time-to-live, as registries update download counts periodically;
/// emptying the cache on each would leave it empty under any real traffic.
pub async fn invalidate_lists_after_writes(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    let write = req.method() != axum::http::Method::GET
        && req.method() != axum::http::Method::HEAD
        && path.starts_with("/api/marketplace/")
        && !(req.method() == axum::http::Method::POST && path.ends_with("/download"));
    let response = next.run(req).await;
    if write {
        state.marketplace_lists.invalidate();
    }
    response
}

/// Publish a template (its first version, `1.0.0` unless `version` is given).
#[utoipa::path(post, path = "/api/marketplace/templates", tag = "marketplace", request_body = PublishBody,
    responses((status = 201, body = TemplateDetail), (status = 422, description = "invalid field, e.g. `template_data.edges[3].target`"),
        (status = 429, description = "publish rate limit; see Retry-After")),
    security(("bearer" = [])))]
pub async fn publish(
    auth: Result<Auth<perm::MarketplacePublish>, ApiError>,
    State(state): State<AppState>,
    body: Result<Json<PublishBody>, ApiError>,
) -> ApiResult<Response> {
    // Refusals by the extractors (no permission, oversized or malformed body) count as failed
    // publishes too: the alert on this counter must see them.
    let result = async {
        let (auth, Json(body)) = (auth?, body?);
        publish_inner(&auth, &state, body).await
    }
    .await;
    if let Err(e) = &result {
        publish_failed(e);
    }
    result
}

async fn publish_inner(
    auth: &Principal,
    state: &AppState,
    body: PublishBody,
) -> ApiResult<Response> {
    let name = request::name(&body.name)?;
    let description = request::description(body.description.as_deref().unwrap_or(""))?;
    let category = request::category(&body.category)?;
    let visibility = parse_visibility(body.visibility.as_deref())?.unwrap_or(Visibility::Public);
    let tags = request::tags(body.tags.as_deref().unwrap_or_default())?;
    let version = request::version(body.version.as_deref().unwrap_or(request::DEFAULT_VERSION))?;
    let changelog = request::changelog(body.changelog.as_deref().unwrap_or(""))?;
    let data = template::validate(
        &body.template_data,
        &state.config.marketplace.template_limits,
    )?;
    take_token(
        state,
        "publish",
        auth,
        &state.config.marketplace.publish_limit,
    )
    .await?;

    let new = NewTemplate {
        id: new_id(prefix::TEMPLATE),
        workspace: auth.workspace.clone(),
        owner: auth.user.clone(),
        name,
        description,
        category,
        visibility,
        tags,
        version: version.to_string(),
        changelog,
        data,
        now: now_ms(),
    };
    let mut tx = state.db.begin().await?;
    store::insert_in(&mut tx, state.db.dialect(), &new).await?;
    let t = store::get_for_update_in(&mut tx, state.db.dialect(), &new.id)
        .await?
        .ok_or_else(|| Error::internal("template vanished after insert"))?;
    events::publish_in(
        &mut tx,
        state.db.dialect(),
        &published_event(&t, &new.version),
    )
    .await?;
    tx.commit().await?;
    let detail = TemplateDetail {
        template: (&t).into(),
        template_data: Some(raw_json(new.data.json)?),
        checksum: Some(new.data.checksum),
    };
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/marketplace/templates/{}", t.id),
        )],
        axum::Json(detail),
    )
        .into_response())
}

/// One template, with the graph of its default version.
#[utoipa::path(get, path = "/api/marketplace/templates/{template_id}", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…")),
    responses((status = 200, body = TemplateDetail), (status = 404)), security(("bearer" = [])))]
pub async fn get(
    auth: Auth<perm::MarketplaceRead>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
) -> ApiResult<axum::Json<TemplateDetail>> {
    let t = visible(&state, &viewer(&auth), &template_id).await?;
    Ok(axum::Json(detail(&state, &t).await?))
}

/// Change a template's metadata (owner only). The graph is immutable: publish a version.
#[utoipa::path(patch, path = "/api/marketplace/templates/{template_id}", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…")), request_body = PatchBody,
    responses((status = 200, body = TemplateDetail), (status = 403), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub async fn update(
    auth: Auth<perm::MarketplacePublish>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
    Json(body): Json<PatchBody>,
) -> ApiResult<axum::Json<TemplateDetail>> {
    let who = viewer(&auth);
    if body.template_data.is_some() {
        return Err(ApiError::invalid(
            "template_data",
            "versions are immutable: publish a new version with POST …/versions",
        ));
    }
    if body.version.is_some() {
        return Err(ApiError::invalid(
            "version",
            "publish a new version with POST …/versions",
        ));
    }
    let mut tx = state.db.begin().await?;
    let old = visible_in(&mut tx, &state, &who, &template_id).await?;
    require_owner(&who, &old)?;
    let new = Metadata {
        name: match &body.name {
            Some(n) => request::name(n)?,
            None => old.name.clone(),
        },
        description: match &body.description {
            Some(d) => request::description(d)?,
            None => old.description.clone(),
        },
        category: match &body.category {
            Some(c) => request::category(c)?,
            None => old.category.clone(),
        },
        visibility: parse_visibility(body.visibility.as_deref())?.unwrap_or(old.visibility),
        tags: match &body.tags {
            Some(t) => request::tags(t)?,
            None => old.tags.clone(),
        },
    };
    // Nothing to change (`{}`, or the values it has): no write, `updated_at` stays.
    if new != old.metadata() {
        store::update_metadata_in(&mut tx, state.db.dialect(), &old, &new, now_ms()).await?;
    }
    let t = store::get_for_update_in(&mut tx, state.db.dialect(), &template_id)
        .await?
        .ok_or_else(not_found)?;
    tx.commit().await?;
    Ok(axum::Json(detail(&state, &t).await?))
}

/// Unlist a template (owner or admin): it disappears from lists, search and downloads.
#[utoipa::path(delete, path = "/api/marketplace/templates/{template_id}", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…")),
    responses((status = 204), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn unlist(
    auth: Auth<perm::MarketplacePublish>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
) -> ApiResult<StatusCode> {
    let who = viewer(&auth);
    let mut tx = state.db.begin().await?;
    let t = visible_in(&mut tx, &state, &who, &template_id).await?;
    require_moderator(&who, &t)?;
    store::unlist_in(&mut tx, state.db.dialect(), &t, now_ms()).await?;
    tx.commit().await?;
    tracing::info!(template = %t.id, by = %auth.user, "template unlisted");
    Ok(StatusCode::NO_CONTENT)
}

/// Versions of a template, highest first (yanked ones included and marked).
#[utoipa::path(get, path = "/api/marketplace/templates/{template_id}/versions", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…"), PageParams),
    responses((status = 200, body = VersionList), (status = 404)), security(("bearer" = [])))]
pub async fn list_versions(
    auth: Auth<perm::MarketplaceRead>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<VersionList>> {
    let t = visible(&state, &viewer(&auth), &template_id).await?;
    let mut rows: Vec<(Version, VersionRow)> = store::versions(&state.db, &t.id)
        .await?
        .into_iter()
        .filter_map(|r| Version::parse(&r.version).ok().map(|v| (v, r)))
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    let total = rows.len() as i64;
    let limit = p.limit()? as usize;
    let start = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => {
            let after = aragora_core::page::decode_cursor(c)
                .and_then(|s| Version::parse(&s).ok())
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))?;
            rows.iter()
                .position(|(v, _)| *v < after)
                .unwrap_or(rows.len())
        }
        None => 0,
    };
    let end = (start + limit).min(rows.len());
    let next_cursor =
        (end < rows.len()).then(|| aragora_core::page::encode_cursor(&rows[end - 1].0.to_string()));
    let items = rows
        .drain(start..end)
        .map(|(_, r)| VersionView::from_row(r))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(axum::Json(VersionList {
        items,
        total,
        next_cursor,
    }))
}

/// Publish a new immutable version (owner only).
#[utoipa::path(post, path = "/api/marketplace/templates/{template_id}/versions", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…")), request_body = VersionBody,
    responses((status = 201, body = VersionView), (status = 409, description = "version exists"),
        (status = 422), (status = 429)),
    security(("bearer" = [])))]
pub async fn create_version(
    auth: Result<Auth<perm::MarketplacePublish>, ApiError>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
    body: Result<Json<VersionBody>, ApiError>,
) -> ApiResult<Response> {
    let result = async {
        let (auth, Json(body)) = (auth?, body?);
        create_version_inner(&auth, &state, &template_id, body).await
    }
    .await;
    if let Err(e) = &result {
        publish_failed(e);
    }
    result
}

async fn create_version_inner(
    auth: &Principal,
    state: &AppState,
    template_id: &str,
    body: VersionBody,
) -> ApiResult<Response> {
    let who = viewer(auth);
    // Cheap checks first, outside the transaction.
    let t = visible(state, &who, template_id).await?;
    require_owner(&who, &t)?;
    let version = request::version(&body.version)?;
    let changelog = request::changelog(body.changelog.as_deref().unwrap_or(""))?;
    let data = template::validate(
        &body.template_data,
        &state.config.marketplace.template_limits,
    )?;
    take_token(
        state,
        "publish",
        auth,
        &state.config.marketplace.publish_limit,
    )
    .await?;

    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let t = visible_in(&mut tx, state, &who, template_id).await?;
    let mut rows = store::versions_in(&mut tx, &t.id).await?;
    if let Some(same) = rows
        .iter()
        .find(|r| Version::parse(&r.version).is_ok_and(|v| v.precedence(&version).is_eq()))
    {
        return Err(Error::Conflict(format!(
            "version {} already exists (as {}); versions are immutable",
            version, same.version
        ))
        .into());
    }
    let new = store::NewVersion {
        template_id: t.id.clone(),
        version: version.to_string(),
        changelog,
        data,
        published_by: auth.user.clone(),
        now,
    };
    store::insert_version_in(&mut tx, &new)
        .await
        .map_err(|e| map_unique(e, format!("version {version} already exists")))?;
    rows.push(VersionRow {
        template_id: t.id.clone(),
        version: new.version.clone(),
        changelog: new.changelog.clone(),
        checksum: new.data.checksum.clone(),
        size_bytes: new.data.json.len() as i64,
        downloads: 0,
        yanked: false,
        published_by: new.published_by.clone(),
        created_at: now,
        yanked_at: None,
        template_data: None,
    });
    let latest = latest_of(&rows).unwrap_or_else(|| new.version.clone());
    store::set_latest_in(&mut tx, &t.id, &latest, now).await?;
    events::publish_in(
        &mut tx,
        state.db.dialect(),
        &published_event(&t, &new.version),
    )
    .await?;
    tx.commit().await?;
    let view = VersionView::from_row(VersionRow {
        template_data: Some(new.data.json),
        ..rows.pop().expect("just pushed")
    })?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!(
                "/api/marketplace/templates/{}/versions/{}",
                t.id, new.version
            ),
        )],
        axum::Json(view),
    )
        .into_response())
}

/// One version with its graph (yanked versions too, when named).
#[utoipa::path(get, path = "/api/marketplace/templates/{template_id}/versions/{version}", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…"), ("version" = String, Path, description = "e.g. 1.2.0")),
    responses((status = 200, body = VersionView), (status = 404)), security(("bearer" = [])))]
pub async fn get_version(
    auth: Auth<perm::MarketplaceRead>,
    State(state): State<AppState>,
    Path((template_id, version)): Path<(String, String)>,
) -> ApiResult<axum::Json<VersionView>> {
    let t = visible(&state, &viewer(&auth), &template_id).await?;
    let v = store::version(&state.db, &t.id, &version)
        .await?
        .ok_or_else(|| ApiError::not_found("version"))?;
    Ok(axum::Json(VersionView::from_row(v)?))
}

async fn set_yanked(
    auth: &Principal,
    state: &AppState,
    template_id: &str,
    version: &str,
    yanked: bool,
) -> ApiResult<axum::Json<VersionView>> {
    let who = viewer(auth);
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    let t = visible_in(&mut tx, state, &who, template_id).await?;
    require_moderator(&who, &t)?;
    if !store::set_yanked_in(&mut tx, &t.id, version, yanked, now).await? {
        return Err(ApiError::not_found("version"));
    }
    let rows = store::versions_in(&mut tx, &t.id).await?;
    if let Some(latest) = latest_of(&rows)
        && latest != t.latest_version
    {
        store::set_latest_in(&mut tx, &t.id, &latest, now).await?;
    }
    tx.commit().await?;
    let v = store::version(&state.db, &t.id, version)
        .await?
        .ok_or_else(|| ApiError::not_found("version"))?;
    Ok(axum::Json(VersionView::from_row(VersionRow {
        template_data: None,
        ..v
    })?))
}

/// Yank a version (owner or admin): no longer served by default, still downloadable by name.
#[utoipa::path(post, path = "/api/marketplace/templates/{template_id}/versions/{version}/yank", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…"), ("version" = String, Path, description = "e.g. 1.2.0")),
    responses((status = 200, body = VersionView), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn yank(
    auth: Auth<perm::MarketplacePublish>,
    State(state): State<AppState>,
    Path((template_id, version)): Path<(String, String)>,
) -> ApiResult<axum::Json<VersionView>> {
    set_yanked(&auth, &state, &template_id, &version, true).await
}

/// Undo a yank.
#[utoipa::path(post, path = "/api/marketplace/templates/{template_id}/versions/{version}/unyank", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…"), ("version" = String, Path, description = "e.g. 1.2.0")),
    responses((status = 200, body = VersionView), (status = 403), (status = 404)), security(("bearer" = [])))]
pub async fn unyank(
    auth: Auth<perm::MarketplacePublish>,
    State(state): State<AppState>,
    Path((template_id, version)): Path<(String, String)>,
) -> ApiResult<axum::Json<VersionView>> {
    set_yanked(&auth, &state, &template_id, &version, false).await
}

/// Download a template's graph: the default version, or `version` (body or query) if given.
/// Counts once per user, version and UTC day.
#[utoipa::path(post, path = "/api/marketplace/templates/{template_id}/download", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…"), DownloadQuery),
    request_body(content = Option<DownloadBody>, description = "optional"),
    responses((status = 200, body = Download), (status = 404)), security(("bearer" = [])))]
pub async fn download(
    auth: Auth<perm::MarketplaceRead>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<axum::Json<Download>> {
    let parsed: DownloadBody = if body.iter().all(u8::is_ascii_whitespace) {
        DownloadBody::default()
    } else {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ));
        }
        // The body is optional, so a JSON `null` means no body, as an absent one does.
        serde_json::from_slice::<Option<DownloadBody>>(&body)
            .map(Option::unwrap_or_default)
            .map_err(|e| {
                if e.is_data() {
                    ApiError::invalid("version", e.to_string())
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_json",
                        format!("malformed JSON body: {e}"),
                    )
                }
            })?
    };
    let who = viewer(&auth);
    let t = visible(&state, &who, &template_id).await?;
    let asked = parsed.version.or(q.version).filter(|v| !v.is_empty());
    if let Some(v) = &asked {
        // A version that cannot exist is bad input, not a missing version.
        semver::Version::parse(v).map_err(|m| ApiError::invalid("version", m))?;
    }
    let v = match &asked {
        Some(v) => store::version(&state.db, &t.id, v)
            .await?
            .ok_or_else(|| ApiError::not_found("version"))?,
        None => store::version(&state.db, &t.id, &t.latest_version)
            .await?
            .filter(|v| !v.yanked)
            .ok_or_else(|| {
                ApiError::not_found(
                    "unyanked version (every version is yanked; name one explicitly)",
                )
            })?,
    };
    let mut tx = state.db.begin().await?;
    let counted = store::record_download_in(
        &mut tx,
        &t.id,
        &v.version,
        &format!("{}/{}", auth.workspace, auth.user),
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    metrics::counter!("aragora_marketplace_downloads_total", "unique" => if counted { "true" } else { "false" })
        .increment(1);
    Ok(axum::Json(Download {
        template_id: t.id,
        name: t.name,
        template_data: raw_json(v.template_data.unwrap_or_default())?,
        version: v.version,
        checksum: v.checksum,
        yanked: v.yanked,
        counted,
    }))
}

/// Rate a template 1–5. One rating per user: a second call replaces it. Owners cannot rate
/// their own templates. A review's rating is the same rating.
#[utoipa::path(post, path = "/api/marketplace/templates/{template_id}/rate", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…")), request_body = RateBody,
    responses((status = 200, body = RatingView), (status = 403, description = "own template"), (status = 404),
        (status = 422), (status = 429)),
    security(("bearer" = [])))]
pub async fn rate(
    auth: Auth<perm::MarketplaceRate>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
    Json(body): Json<RateBody>,
) -> ApiResult<axum::Json<RatingView>> {
    rating::check(body.rating)?;
    let who = viewer(&auth);
    let t = visible(&state, &who, &template_id).await?;
    if who.is_owner(&t.workspace, &t.owner) {
        return Err(ApiError::forbidden(
            "owners cannot rate their own templates",
        ));
    }
    take_token(&state, "rate", &auth, &state.config.marketplace.rate_limit).await?;
    let mut tx = state.db.begin().await?;
    let t = visible_in(&mut tx, &state, &who, &template_id).await?;
    let out = store::rate_in(
        &mut tx,
        state.db.dialect(),
        &t.id,
        &auth.workspace,
        &auth.user,
        body.rating,
        None,
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    metrics::histogram!("aragora_marketplace_ratings_distribution").record(body.rating as f64);
    Ok(axum::Json(RatingView {
        template_id: t.id,
        rating: body.rating,
        rating_average: rating::average(out.rating_sum, out.rating_count),
        rating_count: out.rating_count,
    }))
}

/// Review a template (rating 1–5 plus title and/or content). One review per user: a second call
/// replaces it (200); the first answers 201. The review's rating is the user's rating.
#[utoipa::path(post, path = "/api/marketplace/templates/{template_id}/reviews", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…")), request_body = ReviewBody,
    responses((status = 201, body = ReviewView), (status = 200, body = ReviewView, description = "replaced"),
        (status = 403, description = "own template"), (status = 404), (status = 422), (status = 429)),
    security(("bearer" = [])))]
pub async fn create_review(
    auth: Auth<perm::MarketplaceRate>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
    Json(body): Json<ReviewBody>,
) -> ApiResult<(StatusCode, axum::Json<ReviewView>)> {
    rating::check(body.rating)?;
    let (title, content) = request::review(body.title.as_deref(), body.content.as_deref())?;
    let who = viewer(&auth);
    let t = visible(&state, &who, &template_id).await?;
    if who.is_owner(&t.workspace, &t.owner) {
        return Err(ApiError::forbidden(
            "owners cannot review their own templates",
        ));
    }
    take_token(
        &state,
        "review",
        &auth,
        &state.config.marketplace.review_limit,
    )
    .await?;
    let mut tx = state.db.begin().await?;
    let t = visible_in(&mut tx, &state, &who, &template_id).await?;
    let out = store::rate_in(
        &mut tx,
        state.db.dialect(),
        &t.id,
        &auth.workspace,
        &auth.user,
        body.rating,
        Some((&title, &content)),
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    metrics::histogram!("aragora_marketplace_ratings_distribution").record(body.rating as f64);
    let status = if out.first_review {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(out.review.into())))
}

/// Reviews of a template, newest first.
#[utoipa::path(get, path = "/api/marketplace/templates/{template_id}/reviews", tag = "marketplace",
    params(("template_id" = String, Path, description = "tmpl-…"), PageParams),
    responses((status = 200, body = ReviewList), (status = 404)), security(("bearer" = [])))]
pub async fn list_reviews(
    auth: Auth<perm::MarketplaceRead>,
    State(state): State<AppState>,
    Path(template_id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<ReviewList>> {
    let t = visible(&state, &viewer(&auth), &template_id).await?;
    let limit = p.limit()?;
    let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            aragora_core::page::decode_cursor(c)
                .and_then(|s| {
                    let (at, id) = s.split_once('|')?;
                    Some((at.parse::<i64>().ok()?, id.to_string()))
                })
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))?,
        ),
        None => None,
    };
    let (mut items, total) = store::reviews(&state.db, &t.id, after, limit).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|r| {
            aragora_core::page::encode_cursor(&format!(
                "{}|{}",
                r.reviewed_at.unwrap_or(r.created_at),
                r.id
            ))
        })
    } else {
        None
    };
    Ok(axum::Json(ReviewList {
        items: items.into_iter().map(Into::into).collect(),
        total,
        next_cursor,
    }))
}

/// Categories with the number of listed templates you may see, by name (cursor pages).
#[utoipa::path(get, path = "/api/marketplace/categories", tag = "marketplace", params(PageParams),
    responses((status = 200, body = CategoryList)), security(("bearer" = [])))]
pub async fn categories(
    auth: Auth<perm::MarketplaceRead>,
    State(state): State<AppState>,
    Query(p): Query<PageParams>,
) -> ApiResult<axum::Json<CategoryList>> {
    let limit = p.limit()? as usize;
    let after = match p.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            aragora_core::page::decode_cursor(c)
                .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))?,
        ),
        None => None,
    };
    let all: Vec<CategoryCount> = store::categories(&state.db, &viewer(&auth))
        .await?
        .into_iter()
        .map(|(name, count)| CategoryCount { name, count })
        .collect();
    let total = all.len() as i64;
    let mut items: Vec<CategoryCount> = all
        .into_iter()
        .filter(|c| after.as_ref().is_none_or(|a| c.name > *a))
        .take(limit + 1)
        .collect();
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items
            .last()
            .map(|c| aragora_core::page::encode_cursor(&c.name))
    } else {
        None
    };
    Ok(axum::Json(CategoryList {
        total,
        items,
        next_cursor,
    }))
}
