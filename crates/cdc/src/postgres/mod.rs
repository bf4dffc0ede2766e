//! The PostgreSQL connector, in two modes:
//!
//! - **trigger** (the guide's LISTEN/NOTIFY): triggers write every change (old row, new row,
//!   primary key) into a changelog table in the same transaction as the change; NOTIFY only wakes
//!   the reader. The resume token is the changelog id; acknowledged rows are pruned. Nothing is
//!   lost while the connector is down: the changelog keeps it.
//! - **logical**: a publication and a replication slot per connector, pgoutput decoded by
//!   [`pgoutput`]; the confirmed LSN advances only after acknowledgement.
//!
//! Both snapshot the tables first (`snapshot: initial`) with no gap before streaming.

pub mod logical;
pub mod pgoutput;
pub mod scan;
pub mod trigger;

use crate::connector::{Connector, HealthReport, SyncRow};
use crate::pipeline::{Dispatcher, Handlers, Status};
use crate::runner::TaskSlot;
use crate::{CdcError, CdcSourceType, ChangeHandler, CheckpointStore, MemoryCheckpoints};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// How changes are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PgMode {
    /// Triggers → durable changelog table, NOTIFY as a wake-up.
    #[default]
    Trigger,
    /// Logical replication (pgoutput), no triggers.
    Logical,
}

pub use crate::connector::SnapshotMode;

/// Settings of a PostgreSQL connector (the `config` object of `POST /api/v1/connectors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    /// Schema of unqualified table names.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// `table` or `schema.table`, exact (case-sensitive) names. Each needs a primary key.
    pub tables: Vec<String>,
    #[serde(default)]
    pub mode: PgMode,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Name of the replication slot (logical) or of the changelog objects (trigger); default
    /// `aragora_<connector id>`. Lower-case letters, digits and `_`, at most 40 characters.
    #[serde(default)]
    pub slot_name: Option<String>,
    /// Publication name (logical); default: the slot name.
    #[serde(default)]
    pub publication: Option<String>,
    /// Create triggers/changelog (trigger) or publication/slot (logical) on start when missing.
    /// When false, run `aragora cdc install` (or the SQL it prints) beforehand.
    #[serde(default = "yes")]
    pub install: bool,
    /// Logical mode: set `REPLICA IDENTITY FULL` on the tables during install, so UPDATE/DELETE
    /// carry the old row (and unchanged TOAST values can be filled in from it).
    #[serde(default = "yes")]
    pub replica_identity_full: bool,
    /// Largest batch handed to handlers.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Trigger mode: how often to look for changes when no NOTIFY arrives (NOTIFY is only a
    /// wake-up; this bounds the delay if one is missed).
    #[serde(default = "default_poll")]
    pub poll_interval_seconds: f64,
    /// Column for incremental `sync()`: each call yields rows whose value is greater than the
    /// largest seen by the previous call.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Extra `-c name=value` settings for the source sessions (e.g. `wal_sender_timeout`).
    #[serde(default)]
    pub options: Option<String>,
    /// How often the acknowledged position is persisted, in ms (default 200). Larger values
    /// write less but replay more after a crash.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
}

fn default_port() -> u16 {
    5432
}
fn default_schema() -> String {
    "public".into()
}
fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    1000
}
fn default_poll() -> f64 {
    1.0
}
fn default_checkpoint_ms() -> u64 {
    200
}

impl PostgresConfig {
    pub fn new<T: Into<String>>(
        host: impl Into<String>,
        database: impl Into<String>,
        tables: impl IntoIterator<Item = T>,
    ) -> Self {
        PostgresConfig {
            host: host.into(),
            port: 5432,
            database: database.into(),
            schema: default_schema(),
            tables: tables.into_iter().map(Into::into).collect(),
            mode: PgMode::Trigger,
            snapshot: SnapshotMode::Initial,
            slot_name: None,
            publication: None,
            install: true,
            replica_identity_full: true,
            batch_size: default_batch(),
            poll_interval_seconds: default_poll(),
            timestamp_column: None,
            options: None,
            checkpoint_interval_ms: default_checkpoint_ms(),
        }
    }

    /// Parses and validates the API's `config` object; errors name the field (`config.x`).
    pub fn from_json(v: &Value) -> Result<Self, CdcError> {
        let cfg: PostgresConfig = crate::error::parse_config(v)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), CdcError> {
        if self.host.trim().is_empty() {
            return Err(CdcError::config("config.host", "must not be empty"));
        }
        if self.port == 0 {
            return Err(CdcError::config("config.port", "must be 1 to 65535"));
        }
        if !is_identifier(&self.database) {
            return Err(CdcError::config(
                "config.database",
                "must be a database name of letters, digits, `_` or `$`",
            ));
        }
        if !is_identifier(&self.schema) {
            return Err(CdcError::config("config.schema", "must be an identifier"));
        }
        if self.tables.is_empty() {
            return Err(CdcError::config("config.tables", "name at least one table"));
        }
        for (i, t) in self.tables.iter().enumerate() {
            let parts: Vec<&str> = t.split('.').collect();
            if parts.len() > 2 || !parts.iter().all(|p| is_identifier(p)) {
                return Err(CdcError::config(
                    &format!("config.tables[{i}]"),
                    "must be `table` or `schema.table` of letters, digits, `_` or `$`",
                ));
            }
        }
        for (field, v) in [
            ("config.slot_name", &self.slot_name),
            ("config.publication", &self.publication),
        ] {
            if let Some(s) = v
                && !is_slot_name(s)
            {
                return Err(CdcError::config(
                    field,
                    "must be 1 to 40 characters of lower-case letters, digits and `_`",
                ));
            }
        }
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(CdcError::config("config.batch_size", "must be 1 to 100000"));
        }
        if !(self.poll_interval_seconds > 0.0 && self.poll_interval_seconds <= 3600.0) {
            return Err(CdcError::config(
                "config.poll_interval_seconds",
                "must be more than 0 and at most 3600",
            ));
        }
        if !(1..=600_000).contains(&self.checkpoint_interval_ms) {
            return Err(CdcError::config(
                "config.checkpoint_interval_ms",
                "must be 1 to 600000",
            ));
        }
        if let Some(c) = &self.timestamp_column
            && !is_identifier(c)
        {
            return Err(CdcError::config(
                "config.timestamp_column",
                "must be a column name",
            ));
        }
        Ok(())
    }

    /// The slot / changelog name for a connector id: `aragora_` + the id's last 32 letters and
    /// digits, lower-cased (ids end in their random part).
    pub fn slot_for(&self, connector_id: &str) -> String {
        self.slot_name.clone().unwrap_or_else(|| {
            let clean: Vec<char> = connector_id
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let tail: String = clean[clean.len().saturating_sub(32)..].iter().collect();
            format!("aragora_{tail}")
        })
    }

    pub fn publication_for(&self, connector_id: &str) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| self.slot_for(connector_id))
    }

    pub(crate) fn pg_config(&self, user: &str, password: Option<&str>) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(user)
            .dbname(&self.database)
            .application_name("aragora-cdc")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(p) = password {
            c.password(p);
        }
        if let Some(o) = &self.options {
            c.options(o);
        }
        c
    }
}

pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

pub fn is_slot_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A captured table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub primary_key: Vec<String>,
}

impl TableInfo {
    /// `"schema"."table"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The name events carry in `table`: bare in `public`, else `schema.table`.
    pub fn display(&self) -> String {
        display_name(&self.schema, &self.name)
    }

    /// Picks the primary-key columns out of a row.
    pub fn key_of(&self, row: &Map<String, Value>) -> Map<String, Value> {
        self.primary_key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect()
    }
}

pub fn display_name(schema: &str, name: &str) -> String {
    if schema == "public" {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    }
}

/// How long opening a connection may take; the whole start-up handshake gets twice that.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a session; notifications (LISTEN) wake `wake`.
pub(crate) async fn connect(
    cfg: &tokio_postgres::Config,
    wake: Option<Arc<Notify>>,
) -> Result<Client, CdcError> {
    // The driver's connect timeout covers opening the socket only: a server that accepts and
    // never answers would hold the start (and the supervisor's lease) forever.
    let limit = 2 * cfg
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT);
    let (client, mut connection) = tokio::time::timeout(limit, cfg.connect(NoTls))
        .await
        .map_err(|_| {
            CdcError::Source(format!(
                "no answer from the server within {} s (it accepted the connection)",
                limit.as_secs()
            ))
        })??;
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(w) = &wake {
                        w.notify_one();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "source connection closed");
                    break;
                }
            }
        }
    });
    Ok(client)
}

/// Resolves configured tables with their primary keys; every table must exist and have one.
pub(crate) async fn resolve_tables(
    client: &Client,
    cfg: &PostgresConfig,
) -> Result<Vec<TableInfo>, CdcError> {
    let mut out = Vec::new();
    for (i, t) in cfg.tables.iter().enumerate() {
        let (schema, name) = match t.split_once('.') {
            Some((s, n)) => (s.to_string(), n.to_string()),
            None => (cfg.schema.clone(), t.clone()),
        };
        let row = client
            .query_opt(
                "SELECT c.oid, ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) \
                 WITH ORDINALITY AS k(attnum, ord) JOIN pg_attribute a ON a.attrelid = c.oid \
                 AND a.attnum = k.attnum ORDER BY k.ord) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&schema, &name],
            )
            .await?;
        let Some(row) = row else {
            return Err(CdcError::config(
                &format!("config.tables[{i}]"),
                format!("table {schema}.{name} does not exist in {}", cfg.database),
            ));
        };
        let pk: Vec<String> = row.get(1);
        if pk.is_empty() {
            return Err(CdcError::config(
                &format!("config.tables[{i}]"),
                format!("table {schema}.{name} has no primary key; CDC keys rows by it"),
            ));
        }
        out.push(TableInfo {
            oid: row.get(0),
            schema,
            name,
            primary_key: pk,
        });
    }
    Ok(out)
}

/// What the background task needs.
pub(crate) struct Ctx {
    pub id: String,
    pub config: PostgresConfig,
    pub pg: tokio_postgres::Config,
    pub user: String,
    pub password: Option<String>,
    pub handlers: Handlers,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub status: Arc<Status>,
}

impl Ctx {
    pub(crate) fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            connector_id: self.id.clone(),
            handlers: self.handlers.clone(),
            checkpoints: self.checkpoints.clone(),
            status: self.status.clone(),
            checkpoint_interval: Duration::from_millis(self.config.checkpoint_interval_ms),
        }
    }
}

/// The PostgreSQL connector.
pub struct PostgresConnector {
    id: String,
    config: PostgresConfig,
    user: String,
    password: Option<String>,
    handlers: Handlers,
    checkpoints: RwLock<Arc<dyn CheckpointStore>>,
    status: Arc<Status>,
    task: TaskSlot,
    sync_marks: Mutex<Map<String, Value>>,
}

impl PostgresConnector {
    /// A connector with in-memory checkpoints (see [`with_checkpoints`](Self::with_checkpoints)).
    pub fn new(
        id: impl Into<String>,
        config: PostgresConfig,
        user: impl Into<String>,
        password: Option<String>,
    ) -> Result<Self, CdcError> {
        config.validate()?;
        Ok(PostgresConnector {
            id: id.into(),
            config,
            user: user.into(),
            password,
            handlers: Arc::new(RwLock::new(Vec::new())),
            checkpoints: RwLock::new(Arc::new(MemoryCheckpoints::new())),
            status: Arc::new(Status::default()),
            task: TaskSlot::new(),
            sync_marks: Mutex::new(Map::new()),
        })
    }

    /// Persists checkpoints in `store` instead of memory.
    pub fn with_checkpoints(self, store: Arc<dyn CheckpointStore>) -> Self {
        *self.checkpoints.write() = store;
        self
    }

    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    fn pg(&self) -> tokio_postgres::Config {
        self.config.pg_config(&self.user, self.password.as_deref())
    }

    fn ctx(&self) -> Arc<Ctx> {
        Arc::new(Ctx {
            id: self.id.clone(),
            config: self.config.clone(),
            pg: self.pg(),
            user: self.user.clone(),
            password: self.password.clone(),
            handlers: self.handlers.clone(),
            checkpoints: self.checkpoints.read().clone(),
            status: self.status.clone(),
        })
    }

    /// SQL that sets capture up for this connector (what `aragora cdc install` runs).
    pub async fn install(&self) -> Result<String, CdcError> {
        let client = connect(&self.pg(), None).await?;
        let tables = resolve_tables(&client, &self.config).await?;
        match self.config.mode {
            PgMode::Trigger => {
                let slot = self.config.slot_for(&self.id);
                trigger::install(&client, &slot, &tables).await
            }
            PgMode::Logical => logical::install_publication(&client, &self.ctx(), &tables).await,
        }
    }

    /// The SQL [`install`](Self::install) would run (for review by a DBA).
    pub async fn install_sql(&self) -> Result<String, CdcError> {
        let client = connect(&self.pg(), None).await?;
        let tables = resolve_tables(&client, &self.config).await?;
        let slot = self.config.slot_for(&self.id);
        Ok(match self.config.mode {
            PgMode::Trigger => format!("BEGIN;\n{}COMMIT;\n", trigger::install_sql(&slot, &tables)),
            PgMode::Logical => logical::install_sql(&self.ctx(), &tables),
        })
    }

    /// The SQL that removes capture.
    pub fn uninstall_sql(&self) -> String {
        let slot = self.config.slot_for(&self.id);
        match self.config.mode {
            PgMode::Trigger => trigger::uninstall_sql(&slot),
            PgMode::Logical => logical::uninstall_sql(&self.ctx()),
        }
    }

    /// Waits until the background task ends (after a fatal error such as a lost lease, or stop).
    pub async fn finished(&self) {
        self.task.finished().await
    }
}

#[async_trait]
impl Connector for PostgresConnector {
    fn connector_id(&self) -> &str {
        &self.id
    }

    fn source_type(&self) -> CdcSourceType {
        CdcSourceType::Postgresql
    }

    fn add_change_handler(&self, handler: Arc<dyn ChangeHandler>) {
        self.handlers.write().push(handler);
    }

    async fn start(&self) -> Result<(), CdcError> {
        self.task
            .start(&self.handlers, &self.status, |stop| async move {
                let ctx = self.ctx();
                let task = match self.config.mode {
                    PgMode::Trigger => {
                        let prepared = trigger::prepare(&ctx).await?;
                        tokio::spawn(async move { trigger::run(ctx, prepared, stop).await })
                    }
                    PgMode::Logical => {
                        let prepared = logical::prepare(&ctx).await?;
                        tokio::spawn(async move { logical::run(ctx, prepared, stop).await })
                    }
                };
                Ok(task)
            })
            .await
    }

    async fn stop(&self) -> Result<(), CdcError> {
        self.task.stop(&self.status, |_| false).await;
        Ok(())
    }

    fn sync(&self) -> BoxStream<'_, Result<SyncRow, CdcError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let pg = self.pg();
        let cfg = self.config.clone();
        let marks = self.sync_marks.lock().clone();
        let task = tokio::spawn(async move { scan::sync_rows(pg, cfg, marks, tx).await });
        let stream = futures::stream::unfold((rx, Some(task)), |(mut rx, task)| async move {
            rx.recv().await.map(|item| (item, (rx, task)))
        });
        // Record the high-water marks once the scan finished.
        let marks = &self.sync_marks;
        stream
            .map(move |item| {
                if let Ok(scan::SyncItem::Mark(table, v)) = &item {
                    marks.lock().insert(table.clone(), v.clone());
                }
                item
            })
            .filter_map(|item| async move {
                match item {
                    Ok(scan::SyncItem::Row(r)) => Some(Ok(r)),
                    Ok(scan::SyncItem::Mark(..)) => None,
                    Err(e) => Some(Err(e)),
                }
            })
            .boxed()
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        let mut details = self.status.details();
        details.insert("mode".into(), json!(self.config.mode));
        details.insert("database".into(), json!(self.config.database));
        details.insert("tables".into(), json!(self.config.tables));
        let slot = self.config.slot_for(&self.id);
        details.insert("slot_name".into(), json!(slot));
        let probe = async {
            let client = connect(&self.pg(), None).await?;
            client.simple_query("SELECT 1").await?;
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            let extra = match self.config.mode {
                PgMode::Trigger => trigger::health(&client, &slot, &self.status).await?,
                PgMode::Logical => logical::health(&client, &slot).await?,
            };
            Ok::<_, CdcError>((latency, extra))
        };
        let (reachable, latency_ms) =
            match tokio::time::timeout(Duration::from_secs(10), probe).await {
                Ok(Ok((latency, extra))) => {
                    details.extend(extra);
                    (true, latency)
                }
                Ok(Err(e)) => {
                    details.insert("source_unreachable".into(), json!(e.to_string()));
                    (false, started.elapsed().as_secs_f64() * 1000.0)
                }
                Err(_) => {
                    details.insert("source_unreachable".into(), json!("timed out after 10s"));
                    (false, started.elapsed().as_secs_f64() * 1000.0)
                }
            };
        HealthReport {
            healthy: reachable && self.status.healthy(),
            latency_ms: (latency_ms * 100.0).round() / 100.0,
            details,
        }
    }

    async fn close(&self) -> Result<(), CdcError> {
        self.stop().await
    }

    fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// True while the background task runs.
    async fn is_running(&self) -> bool {
        self.task.is_running().await
    }

    /// Removes everything capture created in the source (triggers, changelog, slot,
    /// publication). The connector must be stopped.
    async fn teardown(&self) -> Result<(), CdcError> {
        let client = connect(&self.pg(), None).await?;
        let slot = self.config.slot_for(&self.id);
        match self.config.mode {
            PgMode::Trigger => trigger::uninstall(&client, &slot).await,
            PgMode::Logical => logical::uninstall(&client, &self.ctx()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts the connection and never answers the start-up handshake.
    #[tokio::test]
    async fn a_server_that_never_answers_is_given_up_on() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                open.push(sock);
            }
        });
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user("u")
            .dbname("d")
            .connect_timeout(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let err = match connect(&cfg, None).await {
            Ok(_) => panic!("connected to a silent server"),
            Err(e) => e.to_string(),
        };
        assert!(started.elapsed() < Duration::from_secs(5), "{err}");
        assert!(err.contains("no answer"), "{err}");
        held.abort();
    }
}
