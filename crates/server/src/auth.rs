//! Authentication and RBAC as an extractor: a handler that takes `Auth<perm::X>` cannot run
//! without a valid token holding permission X. Every API route declares one (the route-walk test
//! proves none answers without a token), so no route can be added without a permission.
//!
//! Tokens arrive as `Authorization: Bearer ara_…` or `X-API-Key: ara_…`. No token → 401; a
//! token without the permission → 403 (checked before any object lookup, so 403 comes before 404).

use crate::error::ApiError;
use crate::state::AppState;
use aragora_core::auth::{Permission, Principal};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::marker::PhantomData;
use std::ops::Deref;
use std::time::{Duration, Instant};

/// A permission a route requires, as a type.
pub trait Requirement: Send + Sync + 'static {
    const PERMISSION: Permission;
}

/// Marker types, one per permission.
pub mod perm {
    use super::Requirement;
    use aragora_core::auth::Permission;

    macro_rules! requirement {
        ($($name:ident),* $(,)?) => {$(
            pub struct $name;
            impl Requirement for $name {
                const PERMISSION: Permission = Permission::$name;
            }
        )*};
    }

    requirement!(
        MarketplaceRead,
        MarketplacePublish,
        MarketplaceRate,
        ExplainabilityRead,
        ExplainabilityBatch,
        WebhooksRead,
        WebhooksWrite,
        WebhooksDelete,
        DebatesRead,
        DebatesWrite,
        KnowledgeRead,
        KnowledgeWrite,
        ConnectorsRead,
        ConnectorsWrite,
        Admin,
    );
}

/// The authenticated caller, proven to hold `R::PERMISSION`.
pub struct Auth<R: Requirement> {
    pub principal: Principal,
    _requirement: PhantomData<R>,
}

impl<R: Requirement> Deref for Auth<R> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.principal
    }
}

/// How long a verified token is trusted without asking the database again. Revocation through
/// this node takes effect at once; through another node within this time.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

fn presented_token(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim());
        }
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Resolves the caller's principal, or 401.
pub async fn authenticate(state: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    let Some(token) = presented_token(parts) else {
        return Err(ApiError::unauthorized(
            "missing API token: send `Authorization: Bearer ara_…` or `X-API-Key`",
        ));
    };
    let key = aragora_store::tokens::hash_token(token);
    if let Some(hit) = state.token_cache.get(&key)
        && hit.1.elapsed() < TOKEN_CACHE_TTL
    {
        return Ok(hit.0.clone());
    }
    match aragora_store::tokens::authenticate(&state.db, token).await? {
        Some(p) => {
            if state.token_cache.len() > 10_000 {
                state.token_cache.clear();
            }
            state.token_cache.insert(key, (p.clone(), Instant::now()));
            Ok(p)
        }
        None => Err(ApiError::unauthorized("invalid or revoked API token")),
    }
}

impl<S, R> FromRequestParts<S> for Auth<R>
where
    R: Requirement,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let principal = authenticate(&state, parts).await?;
        if !principal.has(R::PERMISSION) {
            return Err(ApiError::forbidden(format!(
                "this token lacks the `{}` permission",
                R::PERMISSION
            )));
        }
        Ok(Auth {
            principal,
            _requirement: PhantomData,
        })
    }
}
