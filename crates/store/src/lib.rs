//! Database access: one sqlx `Any` pool over SQLite (embedded default) or PostgreSQL (scale-out),
//! embedded migrations per dialect, and repositories.
//!
//! SQL is written once with `$1` placeholders (both drivers accept them) wherever the dialects
//! agree; where they differ, code branches on [`Dialect`]. Times are `BIGINT` milliseconds, JSON is
//! `TEXT`, so every value maps onto the `Any` driver's types.

pub mod connectors;
pub mod debates;
pub mod events;
pub mod explain;
pub mod knowledge;
pub mod marketplace;
pub mod migrate;
pub mod rate_limit;
pub mod tokens;
pub mod webhooks;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::path::Path;
use std::time::Duration;

pub use sqlx;
pub use sqlx::{Any, AnyConnection, Row, Transaction};

pub type Tx = sqlx::Transaction<'static, Any>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported DATABASE_URL `{0}`: expected sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Other(String),
}

impl From<StoreError> for aragora_core::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Sqlx(e) => sqlx_to_core(e),
            other => aragora_core::Error::Internal(other.to_string()),
        }
    }
}

/// Maps a database error onto the domain error: pool exhaustion and lost connections are
/// `Unavailable` (503, retryable); everything else is internal.
pub fn sqlx_to_core(e: sqlx::Error) -> aragora_core::Error {
    match e {
        sqlx::Error::RowNotFound => aragora_core::Error::NotFound("record".into()),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            aragora_core::Error::Unavailable("database unavailable".into())
        }
        other => aragora_core::Error::Internal(other.to_string()),
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Connections for PostgreSQL, or SQLite readers (SQLite always has one writer).
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The database handle every repository takes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    writer: AnyPool,
    reader: AnyPool,
    dialect: Dialect,
    url: String,
}

impl Db {
    /// Opens `url` (`sqlite://path` or `postgres://…`). SQLite files are created if missing and put
    /// in WAL mode; SQLite gets one writer connection (so our own writers never hit SQLITE_BUSY)
    /// and a pool of readers.
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Db, StoreError> {
        install_default_drivers();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect(url)
                .await?;
            return Ok(Db {
                writer: pool.clone(),
                reader: pool,
                dialect: Dialect::Postgres,
                url: url.to_string(),
            });
        }
        let Some(path) = url.strip_prefix("sqlite://") else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let path = path.split('?').next().unwrap_or(path);
        let url = format!("sqlite://{path}?mode=rwc");
        // Page caches are per connection, so they are kept small for the reader pool (the OS
        // page cache serves the rest). No mmap: every connection maps the file separately and
        // each mapping's touched pages count again in the process's RSS.
        let sqlite_pool = |max: u32, cache_kib: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(opts.acquire_timeout)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{cache_kib};"
                        )))
                        .await?;
                        Ok(())
                    })
                })
        };
        let writer = sqlite_pool(1, 16_000).connect(&url).await?;
        let reader = sqlite_pool(opts.max_connections.max(2), 4_000)
            .connect(&url)
            .await?;
        Ok(Db {
            writer,
            reader,
            dialect: Dialect::Sqlite,
            url,
        })
    }

    /// SQLite database file under `data_dir`.
    pub fn sqlite_url_in(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("aragora.db").display())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Pool for statements that write (and, on PostgreSQL, for everything).
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// Pool for read-only statements.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Begins a write transaction.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.writer.begin().await
    }

    /// `SELECT 1` on the writer, for readiness checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.writer)
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Encodes a bool for a `BIGINT`/`INTEGER` flag column (portable across both dialects).
pub fn flag(b: bool) -> i64 {
    i64::from(b)
}
