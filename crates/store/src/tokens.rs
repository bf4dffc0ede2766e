//! API tokens: `ara_<48 hex>`, stored as SHA-256 hashes. Tokens carry 192 random bits, so a fast
//! hash is enough (no password stretching needed) and lookups stay O(1).

use crate::{Db, StoreError};
use aragora_core::auth::{Permission, Principal, Role};
use aragora_core::ids::{new_id, prefix};
use aragora_core::time::now_ms;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::BTreeSet;

pub const TOKEN_PREFIX: &str = "ara_";

#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// First characters of the token, for recognising it in lists (`ara_1a2b…`).
    pub token_prefix: String,
    pub workspace: String,
    pub user: String,
    pub role: Option<String>,
    pub permissions: Vec<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub workspace: String,
    /// The user the token acts for; defaults to `name`.
    pub user: Option<String>,
    pub role: Option<Role>,
    /// Explicit permissions, added to the role's.
    pub permissions: Vec<Permission>,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn generate_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

fn permissions_of(role: Option<Role>, extra: &[Permission]) -> BTreeSet<Permission> {
    let mut set = role.map(Role::permissions).unwrap_or_default();
    set.extend(extra.iter().copied());
    set
}

fn join(perms: &BTreeSet<Permission>) -> String {
    perms
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn split(perms: &str) -> BTreeSet<Permission> {
    perms.split(',').filter_map(|p| p.parse().ok()).collect()
}

/// Creates a token; returns its info and the secret token (shown once, never stored).
pub async fn create(db: &Db, new: &NewToken) -> Result<(TokenInfo, String), StoreError> {
    let perms = permissions_of(new.role, &new.permissions);
    if perms.is_empty() {
        return Err(StoreError::Other(
            "a token needs a role or permissions".into(),
        ));
    }
    let token = generate_token();
    let info = TokenInfo {
        id: new_id(prefix::TOKEN),
        name: new.name.clone(),
        token_prefix: token[..12].to_string(),
        workspace: new.workspace.clone(),
        user: new.user.clone().unwrap_or_else(|| new.name.clone()),
        role: new.role.map(|r| format!("{r:?}").to_lowercase()),
        permissions: perms.iter().map(|p| p.as_str().to_string()).collect(),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&info.workspace)
    .bind(info.created_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO api_tokens (id, name, token_hash, token_prefix, workspace, user_name, role, \
         permissions, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&info.id)
    .bind(&info.name)
    .bind(hash_token(&token))
    .bind(&info.token_prefix)
    .bind(&info.workspace)
    .bind(&info.user)
    .bind(info.role.as_deref())
    .bind(join(&perms))
    .bind(info.created_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((info, token))
}

const COLUMNS: &str = "id, name, token_prefix, workspace, user_name, role, permissions, created_at, \
                       last_used_at, revoked_at";

fn info_from_row(r: &sqlx::any::AnyRow) -> Result<TokenInfo, sqlx::Error> {
    Ok(TokenInfo {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        token_prefix: r.try_get("token_prefix")?,
        workspace: r.try_get("workspace")?,
        user: r.try_get("user_name")?,
        role: r.try_get("role")?,
        permissions: r
            .try_get::<String, _>("permissions")?
            .split(',')
            .map(str::to_string)
            .collect(),
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Every token, newest first; `workspace` narrows the list.
pub async fn list(db: &Db, workspace: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = match workspace {
        Some(ws) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM api_tokens WHERE workspace = $1 ORDER BY id DESC"
            )))
            .bind(ws)
            .fetch_all(db.reader())
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM api_tokens ORDER BY id DESC"
            )))
            .fetch_all(db.reader())
            .await?
        }
    };
    Ok(rows.iter().map(info_from_row).collect::<Result<_, _>>()?)
}

/// Revokes the live token with exactly this id (never one that is merely named so); returns false
/// when there is none.
pub async fn revoke_id(db: &Db, id: &str) -> Result<bool, StoreError> {
    let res =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(id)
            .execute(db.writer())
            .await?;
    Ok(res.rows_affected() > 0)
}

/// The principal for a presented token, or `None` if unknown or revoked.
pub async fn authenticate(db: &Db, token: &str) -> Result<Option<Principal>, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, workspace, user_name, permissions FROM api_tokens \
         WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash_token(token))
    .fetch_optional(db.reader())
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(Principal {
        token_id: r.try_get("id")?,
        user: r.try_get("user_name")?,
        workspace: r.try_get("workspace")?,
        permissions: split(&r.try_get::<String, _>("permissions")?),
    }))
}

/// True when no token exists yet (first start).
pub async fn none_exist(db: &Db) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM api_tokens")
        .fetch_one(db.reader())
        .await?
        .try_get(0)?;
    Ok(n == 0)
}
