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
