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

/// Message of [`aragora_core::Error::StorageFull`], shown to API clients.
pub const STORAGE_FULL_MESSAGE: &str = "storage full: the database has no space left; writes are refused until space is freed \
     (reads keep working)";

/// True for "the database cannot grow": SQLite `SQLITE_FULL` (result code 13, also what
/// `PRAGMA max_page_count` produces) and PostgreSQL SQLSTATE `53100 disk_full`.
pub fn is_storage_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("53100") => true,
            // SQLite reports the (extended) result code; the primary code is its low byte.
            Some(c) => c.parse::<u32>().is_ok_and(|n| n & 0xff == 13),
            None => false,
        },
        _ => false,
    }
}

/// Counts (`aragora_storage_full_errors_total{site}`) and logs a storage-full error; the log
/// line is written at most once per 10 s so a full disk under load does not flood the log.
/// Returns whether `e` was one.
pub fn note_storage_full(e: &sqlx::Error, site: &'static str) -> bool {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_LOG_MS: AtomicI64 = AtomicI64::new(0);
    if !is_storage_full(e) {
        return false;
    }
    metrics::counter!("aragora_storage_full_errors_total", "site" => site).increment(1);
    let now = aragora_core::time::now_ms();
    let last = LAST_LOG_MS.load(Ordering::Relaxed);
    if now - last >= 10_000
        && LAST_LOG_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(error = %e, site, "storage full: the database cannot grow; writes fail until space is freed");
    }
    true
}

/// Maps a database error onto the domain error: pool exhaustion and lost connections are
/// `Unavailable` (503, retryable); a full disk is `StorageFull` (507); everything else is
/// internal.
pub fn sqlx_to_core(e: sqlx::Error) -> aragora_core::Error {
    if note_storage_full(&e, "request") {
        return aragora_core::Error::StorageFull(STORAGE_FULL_MESSAGE.into());
    }
    match e {
        sqlx::Error::RowNotFound => aragora_core::Error::NotFound("record".into()),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            aragora_core::Error::Unavailable("database unavailable".into())
        }
        // PostgreSQL refuses U+0000 in text (SQLSTATE 22021); bad input, not a server fault.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => {
            aragora_core::Error::BadRequest(
                "text values must not contain the NUL character (U+0000)".into(),
            )
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
    /// SQLite only: `PRAGMA max_page_count` on the writer connection, so the database file
    /// cannot grow past this many pages and writes fail with `SQLITE_FULL` exactly as on a full
    /// disk. For fault tests (`ARAGORA_SQLITE_MAX_PAGE_COUNT`); `None` in production.
    pub sqlite_max_page_count: Option<u64>,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            sqlite_max_page_count: None,
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
        let sqlite_pool = |max: u32, cache_kib: u32, max_pages: Option<u64>| {
            let limit = max_pages
                .map(|n| format!(" PRAGMA max_page_count = {n};"))
                .unwrap_or_default();
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(opts.acquire_timeout)
                .after_connect(move |conn, _meta| {
                    let limit = limit.clone();
                    Box::pin(async move {
                        conn.execute(sqlx::AssertSqlSafe(format!(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -{cache_kib};{limit}"
                        )))
                        .await?;
                        Ok(())
                    })
                })
        };
        let writer = sqlite_pool(1, 16_000, opts.sqlite_max_page_count)
            // After SQLITE_FULL (or IOERR, NOMEM) SQLite may roll the whole transaction back by
            // itself; sqlx's own ROLLBACK then fails and its transaction depth stays above zero,
            // so the connection's next `begin` would open a SAVEPOINT, and a later ROLLBACK TO
            // leaves a transaction open that silently swallows every "committed" write after
            // it. Such a connection is closed, not reused. The ping lets the queued rollback of
            // a dropped transaction run first.
            .after_release(|conn, _meta| {
                Box::pin(async move {
                    use sqlx::Connection;
                    conn.ping().await?;
                    let clean = !conn.is_in_transaction();
                    if !clean {
                        tracing::warn!("closing the SQLite writer connection: a failed statement left its transaction state unknown");
                    }
                    Ok(clean)
                })
            })
            .connect(&url)
            .await?;
        let reader = sqlite_pool(opts.max_connections.max(2), 4_000, None)
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
