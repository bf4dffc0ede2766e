//! Errors of the CDC layer.

#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    /// Bad configuration; `field` names the setting (e.g. `config.tables[1]`).
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    /// The source database refused or failed.
    #[error("source database: {0}")]
    Source(String),
    /// The checkpoint store failed.
    #[error("checkpoint store: {0}")]
    Checkpoint(String),
    /// Another node took this connector's lease: this node must stop at once.
    #[error("lease lost: another node now runs this connector")]
    Fenced,
    /// The connector is in the wrong state for the call (e.g. started twice).
    #[error("{0}")]
    State(String),
}

impl CdcError {
    pub fn config(field: &str, message: impl Into<String>) -> Self {
        CdcError::Config {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// The prefix of source errors after which a connector cannot continue without a re-sync (the
/// changes since its position are gone at the source).
pub const HISTORY_LOST: &str = "history lost";

/// Deserializes a connector's `config` object. Errors name the setting: `config.x` for an
/// unknown or missing field and for a value of the wrong type (`config.tables[1]`).
pub fn parse_config<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, CdcError> {
    if !v.is_object() {
        return Err(CdcError::config("config", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let msg = e.inner().to_string();
        let named = named_field(&msg);
        let path = e.path().to_string();
        // An unknown field's path ends in it; a missing field's path is its parent.
        let field = match (named, path.as_str()) {
            (Some(f), ".") => format!("config.{f}"),
            (Some(f), p) if p.ends_with(f) => format!("config.{p}"),
            (Some(f), p) => format!("config.{p}.{f}"),
            (None, ".") => "config".to_string(),
            (None, p) => format!("config.{p}"),
        };
        CdcError::config(&field, msg)
    })
}

/// The field serde names in an "unknown field `x`" or "missing field `x`" message.
pub fn named_field(message: &str) -> Option<&str> {
    message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("unknown field") || message.starts_with("missing field"))
}

impl From<tokio_postgres::Error> for CdcError {
    fn from(e: tokio_postgres::Error) -> Self {
        CdcError::Source(pg_error_text(&e))
    }
}

impl From<pgwire_replication::PgWireError> for CdcError {
    fn from(e: pgwire_replication::PgWireError) -> Self {
        CdcError::Source(format!("replication: {e}"))
    }
}

impl From<aragora_store::sqlx::Error> for CdcError {
    fn from(e: aragora_store::sqlx::Error) -> Self {
        CdcError::Checkpoint(e.to_string())
    }
}

/// tokio-postgres' Display says only "db error"; the server's message is what helps.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                text.push_str(": ");
                text.push_str(&s.to_string());
                src = s.source();
            }
            text
        }
    }
}

impl From<mysql_async::Error> for CdcError {
    fn from(e: mysql_async::Error) -> Self {
        CdcError::Source(e.to_string())
    }
}

#[cfg(test)]
mod parse_config_tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        host: String,
        #[serde(default)]
        tables: Vec<String>,
        #[serde(default)]
        port: u16,
    }

    fn field(v: serde_json::Value) -> String {
        match parse_config::<Cfg>(&v).unwrap_err() {
            CdcError::Config { field, .. } => field,
            e => panic!("not a config error: {e}"),
        }
    }

    #[test]
    fn errors_name_the_setting() {
        assert_eq!(field(json!({"host": "h", "colour": 1})), "config.colour");
        assert_eq!(field(json!({"tables": []})), "config.host");
        assert_eq!(field(json!({"host": "h", "port": "x"})), "config.port");
        assert_eq!(
            field(json!({"host": "h", "tables": ["a", 2]})),
            "config.tables[1]"
        );
        assert_eq!(field(json!([1])), "config");
        assert_eq!(
            parse_config::<Cfg>(&json!({"host": "h"})).unwrap().host,
            "h"
        );
    }
}
