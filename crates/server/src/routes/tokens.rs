//! API tokens over HTTP (admin only): `POST/GET /api/v1/tokens`, `DELETE /api/v1/tokens/{id}`.

use crate::auth::{Auth, perm};
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::extract::Path;
use crate::state::AppState;
use aragora_core::auth::{Permission, Role};
use aragora_store::tokens::{self, NewToken, TokenInfo};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
pub struct CreateToken {
    /// A label, unique enough to recognise the token later (1 to 100 characters, trimmed).
    #[schema(
        max_length = 100,
        pattern = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    name: String,
    /// Workspace the token belongs to (created on first use). Default `default`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    workspace: Option<String>,
    /// The user the token acts for; defaults to `name`.
    #[serde(default)]
    user: Option<String>,
    /// `viewer`, `member` or `admin`.
    #[serde(default)]
    #[schema(pattern = "^(viewer|member|admin)$")]
    role: Option<String>,
    /// Explicit permissions such as `webhooks:read` (added to the role's).
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    id: String,
    name: String,
    token_prefix: String,
    workspace: String,
    user: String,
    role: Option<String>,
    permissions: Vec<String>,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            token_prefix: t.token_prefix,
            workspace: t.workspace,
            user: t.user,
            role: t.role,
            permissions: t.permissions,
            created_at: aragora_core::time::rfc3339(t.created_at),
            revoked_at: t.revoked_at.map(aragora_core::time::rfc3339),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    info: TokenView,
    /// The secret token. Shown only in this response.
    token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    items: Vec<TokenView>,
    total: i64,
    next_cursor: Option<String>,
}

/// Validates a create-token body into a `NewToken`.
pub fn parse_new_token(body: CreateToken) -> Result<NewToken, ApiError> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "must be 1 to 100 characters"));
    }
    let workspace = body.workspace.unwrap_or_else(|| "default".into());
    if !aragora_core::ids::is_valid_external_id(&workspace) {
        return Err(ApiError::invalid(
            "workspace",
            "must be 1 to 128 characters of [A-Za-z0-9._:-]",
        ));
    }
    let role = body
        .role
        .as_deref()
        .map(str::parse::<Role>)
        .transpose()
        .map_err(|e| ApiError::invalid("role", e))?;
    let permissions = body
        .permissions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.parse::<Permission>()
                .map_err(|e| ApiError::invalid(&format!("permissions[{i}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if role.is_none() && permissions.is_empty() {
        return Err(ApiError::invalid(
            "role",
            "give a role (viewer, member, admin) or permissions",
        ));
    }
    if body.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err(ApiError::invalid("user", "must not be empty"));
    }
    Ok(NewToken {
        name,
        workspace,
        user: body.user,
        role,
        permissions,
    })
}

/// Create an API token (returned once).
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 422, description = "invalid field")),
    security(("bearer" = [])))]
pub async fn create(
    auth: Auth<perm::Admin>,
    State(state): State<AppState>,
    Json(body): Json<CreateToken>,
) -> ApiResult<(StatusCode, axum::Json<CreatedToken>)> {
    let new = parse_new_token(body)?;
    let (info, token) = tokens::create(&state.db, &new).await?;
    tracing::info!(by = %auth.user, token = %info.id, workspace = %info.workspace, "token created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            info: info.into(),
            token,
        }),
    ))
}

/// List API tokens (never their secrets).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList)), security(("bearer" = [])))]
pub async fn list(
    _auth: Auth<perm::Admin>,
    State(state): State<AppState>,
) -> ApiResult<axum::Json<TokenList>> {
    let items: Vec<TokenView> = tokens::list(&state.db, None)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(axum::Json(TokenList {
        total: items.len() as i64,
        items,
        next_cursor: None,
    }))
}

/// Revoke an API token by id.
#[utoipa::path(delete, path = "/api/v1/tokens/{token_id}", tag = "tokens",
    params(("token_id" = String, Path, description = "token id (tok-…)")),
    responses((status = 204), (status = 404)), security(("bearer" = [])))]
pub async fn revoke(
    _auth: Auth<perm::Admin>,
    State(state): State<AppState>,
    Path(token_id): Path<String>,
) -> ApiResult<StatusCode> {
    // By id only: a token merely named like the id is not touched.
    if tokens::revoke_id(&state.db, &token_id).await? {
        state.token_cache.clear();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token"))
    }
}
