//! The domain error every service returns; the server maps it onto HTTP and the one JSON error
//! shape `{"error": {"code", "message", "details"}}` (DESIGN.md §5).

use serde_json::Value;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Bad value in a named field (HTTP 422).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Malformed request that names no single field (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or another workspace's private object (HTTP 404).
    #[error("{0} not found")]
    NotFound(String),
    /// The caller may not do this to an object they can see (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// State conflict, e.g. a duplicate version (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// Too many requests; retry after this many seconds (HTTP 429).
    #[error("rate limit exceeded, retry after {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    /// Request body too large (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// A dependency (database, remote) is unavailable (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// The database has no space left (SQLite `SQLITE_FULL`, PostgreSQL `53100 disk_full`):
    /// writes are refused until space is freed, reads keep working (HTTP 507).
    #[error("{0}")]
    StorageFull(String),
    /// Anything else; the message is logged, never shown to the client (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound(what.into())
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }

    /// Machine-readable code for the JSON error shape.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "validation_failed",
            Error::BadRequest(_) => "bad_request",
            Error::NotFound(_) => "not_found",
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) => "conflict",
            Error::RateLimited { .. } => "rate_limited",
            Error::TooLarge(_) => "payload_too_large",
            Error::Unavailable(_) => "unavailable",
            Error::StorageFull(_) => "storage_full",
            Error::Internal(_) => "internal",
        }
    }

    /// Extra structured detail for the JSON error shape.
    pub fn details(&self) -> Value {
        match self {
            Error::Invalid { field, .. } => serde_json::json!({ "field": field }),
            Error::RateLimited { retry_after_secs } => {
                serde_json::json!({ "retry_after_secs": retry_after_secs })
            }
            _ => Value::Null,
        }
    }
}
