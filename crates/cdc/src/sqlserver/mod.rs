//! The SQL Server connector, in the guide's two modes:
//!
//! - **CDC** (`use_cdc`): for each capture instance, `cdc.fn_cdc_get_all_changes_<instance>`
//!   between the instance's stored LSN (exclusive, via `sys.fn_cdc_increment_lsn`) and a window
//!   end at most `sys.fn_cdc_get_max_lsn()`; instances are merged in commit order
//!   (`__$start_lsn`, `__$seqval`, `__$operation`); `__$operation` 1/2/3+4 become
//!   DELETE/INSERT/UPDATE with `old_data`. The resume token holds one LSN per capture instance.
//!   When a table gets a second capture instance (after a schema change) the older one is read
//!   up to the newer one's `start_lsn` and the newer one from there, so no change is delivered
//!   twice. The connector refuses when a stored LSN is below `sys.fn_cdc_get_min_lsn` (cleanup
//!   removed changes it never delivered) or when the capture job is not running.
//! - **Change Tracking** (`use_change_tracking`): `CHANGETABLE(CHANGES t, @version)` joined to
//!   the table; the resume token is the `SYS_CHANGE_VERSION` reached, checked against
//!   `CHANGE_TRACKING_MIN_VALID_VERSION`. Change Tracking keeps only net changes: one event per
//!   changed row with its current values, no `old_data`, intermediate values never seen.
//!
//! Both snapshot the tables on a first start (`snapshot: initial`), then poll every
//! `poll_interval_seconds`.

pub mod lsn;
pub mod sim;
pub mod source;
pub mod sql;
pub mod tds;

use crate::connector::{Connector, HealthReport, SyncRow};
use crate::error::HISTORY_LOST;
use crate::pipeline::{Batch, Dispatcher, Handlers, Status, send_batch, take_events};
use crate::runner::TaskSlot;
use crate::runner::{SessionError, supervise};
use crate::{
    CdcError, CdcSourceType, ChangeEvent, ChangeHandler, ChangeOperation, Checkpoint,
    CheckpointStore, MemoryCheckpoints,
};
use async_trait::async_trait;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use lsn::Lsn;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use source::{CaptureInstance, CaptureJob, CdcRow, SqlServerSource, TableRef, TrackedTable};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use crate::connector::SnapshotMode;

/// The capture mechanism in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Cdc,
    ChangeTracking,
}

/// The guide's `credentials={"username": …, "password": …}`.
#[derive(Clone, PartialEq, Deserialize)]
pub struct Credentials {
    pub username: String,
    #[serde(default)]
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Settings of a SQL Server connector (the `config` object of `POST /api/v1/connectors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlServerConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Table names in `schema`; empty = every table with a capture instance (CDC) or with
    /// Change Tracking enabled.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Default: true unless `use_change_tracking` is set.
    #[serde(default)]
    pub use_cdc: Option<bool>,
    #[serde(default)]
    pub use_change_tracking: bool,
    #[serde(default = "default_poll")]
    pub poll_interval_seconds: f64,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Largest batch handed to handlers.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// CDC: most source transactions read per query window (bounds memory per poll).
    #[serde(default = "default_window")]
    pub max_transactions_per_poll: u32,
    /// TLS for the TDS session (default on).
    #[serde(default = "yes")]
    pub encrypt: bool,
    /// Accept the server's certificate without verification (self-signed dev servers).
    #[serde(default)]
    pub trust_server_certificate: bool,
    /// How often the acknowledged position is persisted, in ms.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
}

fn default_port() -> u16 {
    1433
}
fn default_schema() -> String {
    "dbo".into()
}
fn default_poll() -> f64 {
    5.0
}
fn default_batch() -> usize {
    1000
}
fn default_window() -> u32 {
    1000
}
fn default_checkpoint_ms() -> u64 {
    200
}
fn yes() -> bool {
    true
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '@' || c == '#')
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '@' | '#'))
}

impl SqlServerConfig {
    /// The guide's constructor arguments (other settings at their defaults).
    pub fn new<T: Into<String>>(
        host: impl Into<String>,
        database: impl Into<String>,
        tables: impl IntoIterator<Item = T>,
    ) -> Self {
        SqlServerConfig {
            host: host.into(),
            port: default_port(),
            database: database.into(),
            schema: default_schema(),
            tables: tables.into_iter().map(Into::into).collect(),
            use_cdc: None,
            use_change_tracking: false,
            poll_interval_seconds: default_poll(),
            snapshot: SnapshotMode::Initial,
            batch_size: default_batch(),
            max_transactions_per_poll: default_window(),
            encrypt: true,
            trust_server_certificate: false,
            checkpoint_interval_ms: default_checkpoint_ms(),
        }
    }

    pub fn mode(&self) -> Mode {
        if self.use_cdc.unwrap_or(!self.use_change_tracking) {
            Mode::Cdc
        } else {
            Mode::ChangeTracking
        }
    }

    /// Parses and validates the API's `config` object; errors name the field (`config.x`).
    pub fn from_json(v: &Value) -> Result<Self, CdcError> {
        let cfg: SqlServerConfig = crate::error::parse_config(v)?;
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
        if !is_name(&self.database) {
            return Err(CdcError::config(
                "config.database",
                "must be a database name of letters, digits, `_`, `$`, `@` or `#`",
            ));
        }
        if !is_name(&self.schema) {
            return Err(CdcError::config("config.schema", "must be a schema name"));
        }
        for (i, t) in self.tables.iter().enumerate() {
            if !is_name(t) {
                return Err(CdcError::config(
                    &format!("config.tables[{i}]"),
                    "must be a table name in `schema` (letters, digits, `_`, `$`, `@`, `#`)",
                ));
            }
        }
        match (self.use_cdc, self.use_change_tracking) {
            (Some(true), true) => {
                return Err(CdcError::config(
                    "config.use_change_tracking",
                    "choose one of use_cdc and use_change_tracking",
                ));
            }
            (Some(false), false) => {
                return Err(CdcError::config(
                    "config.use_cdc",
                    "set use_cdc or use_change_tracking to true",
                ));
            }
            _ => {}
        }
        if !(self.poll_interval_seconds > 0.0 && self.poll_interval_seconds <= 3600.0) {
            return Err(CdcError::config(
                "config.poll_interval_seconds",
                "must be more than 0 and at most 3600",
            ));
        }
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(CdcError::config("config.batch_size", "must be 1 to 100000"));
        }
        if !(1..=1_000_000).contains(&self.max_transactions_per_poll) {
            return Err(CdcError::config(
                "config.max_transactions_per_poll",
                "must be 1 to 1000000",
            ));
        }
        if !(1..=600_000).contains(&self.checkpoint_interval_ms) {
            return Err(CdcError::config(
                "config.checkpoint_interval_ms",
                "must be 1 to 600000",
            ));
        }
        Ok(())
    }

    /// The guide's setup SQL for this configuration's mode and tables.
    pub fn setup_sql(&self) -> String {
        let tables: Vec<TableRef> = self
            .tables
            .iter()
            .map(|t| TableRef::new(&self.schema, t))
            .collect();
        match self.mode() {
            Mode::Cdc => sql::cdc_setup(&self.database, &tables),
            Mode::ChangeTracking => sql::change_tracking_setup(&self.database, &tables),
        }
    }
}

/// The CDC resume token: the shared window end reached (`@`) and one LSN per capture instance,
/// rendered `cdc:@=0x…,dbo_users=0x…`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CdcToken {
    pub floor: Lsn,
    pub instances: BTreeMap<String, Lsn>,
}

impl CdcToken {
    pub fn parse(s: &str) -> Result<CdcToken, CdcError> {
        let body = s
            .strip_prefix("cdc:")
            .ok_or_else(|| CdcError::Source(format!("not a SQL Server CDC resume token: `{s}`")))?;
        let mut t = CdcToken::default();
        for part in body.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .rsplit_once('=')
                .ok_or_else(|| CdcError::Source(format!("bad resume token part `{part}`")))?;
            let lsn = Lsn::parse(v)?;
            if k == "@" {
                t.floor = lsn;
            } else {
                t.instances.insert(k.to_string(), lsn);
            }
        }
        Ok(t)
    }

    pub fn render(&self) -> String {
        let mut out = format!("cdc:@={}", self.floor);
        for (k, v) in &self.instances {
            out.push(',');
            out.push_str(k);
            out.push('=');
            out.push_str(&v.hex());
        }
        out
    }

    /// Where `instance` resumes: its own LSN, else the floor, never before its start.
    pub fn position(&self, instance: &CaptureInstance) -> Lsn {
        self.instances
            .get(&instance.name)
            .copied()
            .unwrap_or(self.floor)
            .max(instance.start_lsn.decrement())
    }
}

/// What one capture instance is read for in a window: `(after, to]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRange {
    pub instance: CaptureInstance,
    pub after: Lsn,
    pub to: Lsn,
}

/// Splits a window between capture instances: per table, each instance covers the LSNs from its
/// `start_lsn` up to the next instance's start, the newest one up to `to`.
pub fn plan_window(instances: &[CaptureInstance], token: &CdcToken, to: Lsn) -> Vec<InstanceRange> {
    let mut by_table: BTreeMap<&TableRef, Vec<&CaptureInstance>> = BTreeMap::new();
    for i in instances {
        by_table.entry(&i.table).or_default().push(i);
    }
    let mut out = Vec::new();
    for list in by_table.values_mut() {
        list.sort_by(|a, b| (a.start_lsn, &a.name).cmp(&(b.start_lsn, &b.name)));
        for (n, i) in list.iter().enumerate() {
            let hi = match list.get(n + 1) {
                Some(next) => to.min(next.start_lsn.decrement()),
                None => to,
            };
            let after = token.position(i);
            if hi > after {
                out.push(InstanceRange {
                    instance: (*i).clone(),
                    after,
                    to: hi,
                });
            }
        }
    }
    out
}

/// Merges instances' rows into commit order; ties (the same change in two instances cannot
/// happen after [`plan_window`]) break by instance position.
pub fn merge_rows(per_instance: Vec<Vec<CdcRow>>) -> Vec<(usize, CdcRow)> {
    let mut all: Vec<(usize, CdcRow)> = per_instance
        .into_iter()
        .enumerate()
        .flat_map(|(i, rows)| rows.into_iter().map(move |r| (i, r)))
        .collect();
    all.sort_by(|(ia, a), (ib, b)| {
        (a.start_lsn, a.seqval, *ia, a.operation).cmp(&(b.start_lsn, b.seqval, *ib, b.operation))
    });
    all
}

/// Builds a connection to the source (the real one over TDS, or a simulator in tests).
pub type SourceFactory =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn SqlServerSource>, CdcError>> + Send + Sync>;

struct Ctx {
    id: String,
    config: SqlServerConfig,
    factory: SourceFactory,
    handlers: Handlers,
    checkpoints: Arc<dyn CheckpointStore>,
    status: Arc<Status>,
}

impl Ctx {
    fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            connector_id: self.id.clone(),
            handlers: self.handlers.clone(),
            checkpoints: self.checkpoints.clone(),
            status: self.status.clone(),
            checkpoint_interval: Duration::from_millis(self.config.checkpoint_interval_ms),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        operation: ChangeOperation,
        table: &TableRef,
        key: Map<String, Value>,
        data: Map<String, Value>,
        old_data: Map<String, Value>,
        at_ms: i64,
        position: &str,
        resume_token: String,
        seq: i64,
    ) -> ChangeEvent {
        ChangeEvent {
            id: crate::event_id(&self.id, position),
            source_type: CdcSourceType::Sqlserver,
            connector_id: self.id.clone(),
            operation,
            timestamp: aragora_core::time::rfc3339(at_ms),
            database: self.config.database.clone(),
            table: table.display(),
            data,
            old_data,
            primary_key: key,
            resume_token,
            sequence_number: seq,
        }
    }
}

fn key_of(columns: &[String], row: &Map<String, Value>) -> Map<String, Value> {
    columns
        .iter()
        .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// The SQL Server connector.
pub struct SqlServerConnector {
    id: String,
    config: SqlServerConfig,
    factory: SourceFactory,
    handlers: Handlers,
    checkpoints: RwLock<Arc<dyn CheckpointStore>>,
    status: Arc<Status>,
    task: TaskSlot,
}

impl SqlServerConnector {
    /// The guide's `SQLServerConnector(host, port, database, schema, tables, use_cdc,
    /// use_change_tracking, poll_interval_seconds, credentials)`: connects over TDS (tiberius).
    pub fn new(
        id: impl Into<String>,
        config: SqlServerConfig,
        credentials: Credentials,
    ) -> Result<Self, CdcError> {
        config.validate()?;
        let cfg = config.clone();
        let factory: SourceFactory = Arc::new(move || {
            let cfg = cfg.clone();
            let creds = credentials.clone();
            Box::pin(async move {
                let s = tds::TdsSource::connect(&cfg, &creds.username, &creds.password).await?;
                Ok(Arc::new(s) as Arc<dyn SqlServerSource>)
            })
        });
        Self::with_source(id, config, factory)
    }

    /// A connector reading from any [`SqlServerSource`] (the simulator in tests).
    pub fn with_source(
        id: impl Into<String>,
        config: SqlServerConfig,
        factory: SourceFactory,
    ) -> Result<Self, CdcError> {
        config.validate()?;
        Ok(SqlServerConnector {
            id: id.into(),
            config,
            factory,
            handlers: Arc::new(RwLock::new(Vec::new())),
            checkpoints: RwLock::new(Arc::new(MemoryCheckpoints::new())),
            status: Arc::new(Status::default()),
            task: TaskSlot::new(),
        })
    }

    /// A connector on a shared source object (every "connection" is the same one).
    pub fn with_shared_source(
        id: impl Into<String>,
        config: SqlServerConfig,
        source: Arc<dyn SqlServerSource>,
    ) -> Result<Self, CdcError> {
        let factory: SourceFactory = Arc::new(move || {
            let s = source.clone();
            Box::pin(async move { Ok(s) })
        });
        Self::with_source(id, config, factory)
    }

    /// Persists checkpoints in `store` instead of memory.
    pub fn with_checkpoints(self, store: Arc<dyn CheckpointStore>) -> Self {
        *self.checkpoints.write() = store;
        self
    }

    pub fn config(&self) -> &SqlServerConfig {
        &self.config
    }

    fn ctx(&self) -> Arc<Ctx> {
        Arc::new(Ctx {
            id: self.id.clone(),
            config: self.config.clone(),
            factory: self.factory.clone(),
            handlers: self.handlers.clone(),
            checkpoints: self.checkpoints.read().clone(),
            status: self.status.clone(),
        })
    }

    /// The guide's `start_cdc_polling()`: starts a connector configured with `use_cdc`.
    pub async fn start_cdc_polling(&self) -> Result<(), CdcError> {
        if self.config.mode() != Mode::Cdc {
            return Err(CdcError::State(
                "this connector uses Change Tracking: call start_change_tracking_polling".into(),
            ));
        }
        self.start().await
    }

    /// The guide's `start_change_tracking_polling()`.
    pub async fn start_change_tracking_polling(&self) -> Result<(), CdcError> {
        if self.config.mode() != Mode::ChangeTracking {
            return Err(CdcError::State(
                "this connector uses CDC: call start_cdc_polling".into(),
            ));
        }
        self.start().await
    }

    /// The guide's `stop_cdc_polling()` (stops either mode).
    pub async fn stop_cdc_polling(&self) -> Result<(), CdcError> {
        self.stop().await
    }

    /// Waits until the background task ends (stop, a lost lease or lost history).
    pub async fn finished(&self) {
        self.task.finished().await
    }
}

/// Checks the source can serve this connector; run by `start()` so that misconfiguration is an
/// error there and not a retry loop.
async fn preflight(ctx: &Ctx, src: &dyn SqlServerSource) -> Result<(), CdcError> {
    let cfg = &ctx.config;
    let (cdc_on, ct_on) = src.database_flags().await?;
    let stored = ctx.checkpoints.load(&ctx.id).await?;
    match cfg.mode() {
        Mode::Cdc => {
            if !cdc_on {
                return Err(CdcError::config(
                    "config.use_cdc",
                    format!(
                        "CDC is not enabled on database {}: run EXEC sys.sp_cdc_enable_db",
                        cfg.database
                    ),
                ));
            }
            let instances = src.capture_instances(&cfg.schema, &cfg.tables).await?;
            for (i, t) in cfg.tables.iter().enumerate() {
                if !instances.iter().any(|x| &x.table.name == t) {
                    return Err(CdcError::config(
                        &format!("config.tables[{i}]"),
                        format!(
                            "{}.{t} has no CDC capture instance: run EXEC sys.sp_cdc_enable_table \
                             @source_schema = N'{}', @source_name = N'{t}', @role_name = NULL",
                            cfg.schema, cfg.schema
                        ),
                    ));
                }
            }
            if instances.is_empty() {
                return Err(CdcError::config(
                    "config.tables",
                    format!(
                        "no table in schema {} has a CDC capture instance",
                        cfg.schema
                    ),
                ));
            }
            if let CaptureJob::NotRunning(why) = src.capture_job().await? {
                return Err(CdcError::Source(format!(
                    "refusing to start: {why}; no change would be captured"
                )));
            }
            match stored.filter(|c| !c.resume_token.is_empty()) {
                Some(cp) if cp.snapshot_done => {
                    let token = CdcToken::parse(&cp.resume_token)?;
                    check_cdc_history(src, &instances, &token).await?;
                }
                Some(_) => {}
                None => {
                    // Fixed before start() returns: every later commit is delivered.
                    let t = initial_cdc_token(src, &instances).await?;
                    let first = Checkpoint {
                        resume_token: t.render(),
                        sequence_number: 0,
                        snapshot_done: cfg.snapshot == SnapshotMode::Never,
                    };
                    ctx.checkpoints.save(&ctx.id, &first, &[]).await?;
                }
            }
        }
        Mode::ChangeTracking => {
            if !ct_on {
                return Err(CdcError::config(
                    "config.use_change_tracking",
                    format!(
                        "Change Tracking is not enabled on database {}: ALTER DATABASE … SET \
                         CHANGE_TRACKING = ON",
                        cfg.database
                    ),
                ));
            }
            let tables = src.tracked_tables(&cfg.schema, &cfg.tables).await?;
            if tables.is_empty() {
                return Err(CdcError::config(
                    "config.tables",
                    format!(
                        "no table in schema {} has Change Tracking enabled",
                        cfg.schema
                    ),
                ));
            }
            for t in &tables {
                let field = match cfg.tables.iter().position(|n| n == &t.table.name) {
                    Some(i) => format!("config.tables[{i}]"),
                    None => "config.tables".to_string(),
                };
                if t.key_columns.is_empty() {
                    return Err(CdcError::config(
                        &field,
                        format!(
                            "{} has no primary key; Change Tracking requires one",
                            t.table.display()
                        ),
                    ));
                }
                if src.ct_min_valid_version(&t.table).await?.is_none() {
                    return Err(CdcError::config(
                        &field,
                        format!(
                            "Change Tracking is not enabled on {}: ALTER TABLE {} ENABLE \
                             CHANGE_TRACKING",
                            t.table.display(),
                            t.table.quoted()
                        ),
                    ));
                }
            }
            match stored.filter(|c| !c.resume_token.is_empty()) {
                Some(cp) if cp.snapshot_done => {
                    let v = parse_ct_token(&cp.resume_token)?;
                    check_ct_history(src, &tables, v).await?;
                }
                Some(_) => {}
                None => {
                    let v = src.ct_current_version().await?.ok_or_else(|| {
                        CdcError::Source("Change Tracking is not enabled on the database".into())
                    })?;
                    let first = Checkpoint {
                        resume_token: format!("ct:{v}"),
                        sequence_number: 0,
                        snapshot_done: cfg.snapshot == SnapshotMode::Never,
                    };
                    ctx.checkpoints.save(&ctx.id, &first, &[]).await?;
                }
            }
        }
    }
    Ok(())
}

/// Refuses when cleanup removed changes an instance still had to deliver.
async fn check_cdc_history(
    src: &dyn SqlServerSource,
    instances: &[CaptureInstance],
    token: &CdcToken,
) -> Result<(), CdcError> {
    for r in plan_window(instances, token, Lsn::MAX) {
        let min = src.min_lsn(&r.instance.name).await?;
        if r.after.increment() < min {
            return Err(CdcError::Source(format!(
                "{HISTORY_LOST}: capture instance {} was cleaned up to {min} but this connector \
                 stopped at {}; the changes between are gone. Reset the connector's checkpoint \
                 to snapshot again (or raise the cleanup job's retention)",
                r.instance.name, r.after
            )));
        }
    }
    Ok(())
}

fn parse_ct_token(s: &str) -> Result<i64, CdcError> {
    s.strip_prefix("ct:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CdcError::Source(format!("not a Change Tracking resume token: `{s}`")))
}

async fn check_ct_history(
    src: &dyn SqlServerSource,
    tables: &[TrackedTable],
    version: i64,
) -> Result<(), CdcError> {
    for t in tables {
        match src.ct_min_valid_version(&t.table).await? {
            Some(min) if version < min => {
                return Err(CdcError::Source(format!(
                    "{HISTORY_LOST}: Change Tracking on {} only has changes after version {min} \
                     but this connector stopped at {version}. Reset the connector's checkpoint to \
                     snapshot again (or raise CHANGE_RETENTION)",
                    t.table.display()
                )));
            }
            Some(_) => {}
            None => {
                return Err(CdcError::Source(format!(
                    "Change Tracking was disabled on {}",
                    t.table.display()
                )));
            }
        }
    }
    Ok(())
}

async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let (ctx, stop) = (&ctx, &stop);
    supervise(
        &ctx.id,
        &ctx.status,
        "SQL Server session",
        stop,
        || async move {
            session(ctx, stop).await.map_err(|e| match e {
                CdcError::Source(m) if m.starts_with(HISTORY_LOST) => SessionError::failed(m),
                e => e.into(),
            })
        },
    )
    .await
}

async fn session(ctx: &Arc<Ctx>, stop: &CancellationToken) -> Result<(), CdcError> {
    let src = (ctx.factory)().await?;
    let cp = ctx.checkpoints.load(&ctx.id).await?.unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Batch>(4);
    let (rel_tx, _rel_rx) = watch::channel(0u64);
    let dispatcher = tokio::spawn(ctx.dispatcher().run(rx, rel_tx, stop.clone()));
    let read = match ctx.config.mode() {
        Mode::Cdc => cdc_loop(ctx, src.as_ref(), cp, &tx, stop).await,
        Mode::ChangeTracking => ct_loop(ctx, src.as_ref(), cp, &tx, stop).await,
    };
    drop(tx);
    crate::pipeline::join_dispatcher(dispatcher).await?;
    read
}

/// Sends a batch; `false` when stopping.
/// Sends every row of `tables` as INSERT events; the last batch carries `done`. `false` when
/// stopping.
async fn snapshot(
    ctx: &Ctx,
    src: &dyn SqlServerSource,
    tables: &[(TableRef, Vec<String>)],
    tx: &mpsc::Sender<Batch>,
    token: &str,
    stop: &CancellationToken,
) -> Result<Option<i64>, CdcError> {
    ctx.status.set_phase("snapshot");
    let mut seq = 0i64;
    let page = ctx.config.batch_size as u32;
    let now = aragora_core::time::now_ms();
    for (table, keys) in tables {
        let mut offset = 0u64;
        loop {
            let rows = src.scan(table, keys, offset, page).await?;
            let n = rows.len();
            offset += n as u64;
            ctx.status.add_snapshot_rows(n as u64);
            let events: Vec<ChangeEvent> = rows
                .into_iter()
                .map(|row| {
                    seq += 1;
                    let key = key_of(keys, &row);
                    let text = crate::canonical_key(&key);
                    ctx.event(
                        ChangeOperation::Insert,
                        table,
                        key,
                        row,
                        Map::new(),
                        now,
                        &format!("snapshot:{token}:{}:{text}", table.display()),
                        "snapshot".into(),
                        seq,
                    )
                })
                .collect();
            if !events.is_empty() {
                let batch = Batch {
                    events,
                    checkpoint: Checkpoint {
                        resume_token: token.to_string(),
                        sequence_number: seq,
                        snapshot_done: false,
                    },
                    release: None,
                };
                if !send_batch(tx, batch, stop).await {
                    return Ok(None);
                }
            }
            if n < page as usize {
                break;
            }
        }
    }
    Ok(Some(seq))
}

/// The first position: everything committed from now on is delivered.
async fn initial_cdc_token(
    src: &dyn SqlServerSource,
    instances: &[CaptureInstance],
) -> Result<CdcToken, CdcError> {
    let max = src.max_lsn().await?;
    let mut t = CdcToken {
        floor: max,
        instances: BTreeMap::new(),
    };
    for i in instances {
        t.instances.insert(i.name.clone(), t.position(i));
    }
    Ok(t)
}

async fn cdc_loop(
    ctx: &Arc<Ctx>,
    src: &dyn SqlServerSource,
    cp: Checkpoint,
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<(), CdcError> {
    let cfg = &ctx.config;
    let mut seq = cp.sequence_number;
    // start() stored the first position.
    let mut token = CdcToken::parse(&cp.resume_token)?;
    if !cp.snapshot_done && cfg.snapshot == SnapshotMode::Initial {
        let instances = src.capture_instances(&cfg.schema, &cfg.tables).await?;
        let mut tables: Vec<(TableRef, Vec<String>)> = Vec::new();
        for i in &instances {
            if !tables.iter().any(|(t, _)| t == &i.table) {
                tables.push((i.table.clone(), i.key_columns.clone()));
            }
        }
        let rendered = token.render();
        match snapshot(ctx, src, &tables, tx, &rendered, stop).await? {
            Some(last) => seq = last,
            None => return Ok(()),
        }
        let done = Batch {
            events: Vec::new(),
            checkpoint: Checkpoint {
                resume_token: rendered,
                sequence_number: seq,
                snapshot_done: true,
            },
            release: None,
        };
        if !send_batch(tx, done, stop).await {
            return Ok(());
        }
    }
    ctx.status.set_phase("streaming");
    let poll = Duration::from_secs_f64(cfg.poll_interval_seconds);
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        match src.capture_job().await? {
            CaptureJob::NotRunning(why) => ctx
                .status
                .set_source_error(Some(format!("{why}; changes are not being captured"))),
            _ => ctx.status.set_source_error(None),
        }
        let instances = src.capture_instances(&cfg.schema, &cfg.tables).await?;
        // Instances that no longer exist need no position.
        token
            .instances
            .retain(|name, _| instances.iter().any(|i| &i.name == name));
        let max = src.max_lsn().await?;
        let mut progressed = false;
        if max > token.floor {
            let to = src
                .window_end(token.floor, max, cfg.max_transactions_per_poll)
                .await?;
            let ranges = plan_window(&instances, &token, to);
            check_cdc_history(src, &instances, &token).await?;
            let mut per = Vec::with_capacity(ranges.len());
            for r in &ranges {
                per.push(src.cdc_changes(&r.instance, r.after, r.to).await?);
            }
            let merged = merge_rows(per);
            if !deliver_cdc(ctx, &ranges, merged, &mut token, to, &mut seq, tx, stop).await? {
                return Ok(());
            }
            progressed = to < max;
        }
        if progressed {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// Turns one window's merged rows into batches. A batch's checkpoint is the last LSN all of
/// whose rows were delivered, so a batch that ends inside a transaction does not move the
/// position past it. Returns `false` when stopping.
#[allow(clippy::too_many_arguments)]
async fn deliver_cdc(
    ctx: &Ctx,
    ranges: &[InstanceRange],
    merged: Vec<(usize, CdcRow)>,
    token: &mut CdcToken,
    to: Lsn,
    seq: &mut i64,
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<bool, CdcError> {
    let advance = |token: &CdcToken, upto: Lsn| {
        let mut t = token.clone();
        for r in ranges {
            let p = r.after.max(upto.min(r.to));
            t.instances.insert(r.instance.name.clone(), p);
        }
        t.floor = t.floor.max(upto);
        t
    };
    let mut complete = (token.clone(), *seq);
    let mut events: Vec<ChangeEvent> = Vec::new();
    let mut pending_old: Option<(usize, CdcRow)> = None;
    let mut iter = merged.into_iter().peekable();
    while let Some((idx, row)) = iter.next() {
        let inst = &ranges[idx].instance;
        let lsn_hex = row.start_lsn.hex();
        let position = format!("cdc:{}:{}:{}", inst.name, lsn_hex, row.seqval.hex());
        let at = row.commit_ms.unwrap_or_else(aragora_core::time::now_ms);
        let ev = match row.operation {
            3 => {
                pending_old = Some((idx, row.clone()));
                None
            }
            1 | 2 | 4 => {
                let (op, data, old) = match row.operation {
                    1 => (ChangeOperation::Delete, Map::new(), row.row.clone()),
                    2 => (ChangeOperation::Insert, row.row.clone(), Map::new()),
                    _ => {
                        let old = match pending_old.take() {
                            Some((i, o)) if i == idx && o.seqval == row.seqval => o.row,
                            _ => Map::new(),
                        };
                        (ChangeOperation::Update, row.row.clone(), old)
                    }
                };
                *seq += 1;
                let key = key_of(
                    &inst.key_columns,
                    if data.is_empty() { &old } else { &data },
                );
                Some(ctx.event(
                    op,
                    &inst.table,
                    key,
                    data,
                    old,
                    at,
                    &position,
                    lsn_hex.clone(),
                    *seq,
                ))
            }
            other => {
                return Err(CdcError::Source(format!(
                    "capture instance {}: unknown __$operation {other}",
                    inst.name
                )));
            }
        };
        if let Some(e) = ev {
            events.push(e);
        }
        let boundary = iter
            .peek()
            .is_none_or(|(_, next)| next.start_lsn != row.start_lsn);
        if boundary {
            complete = (advance(token, row.start_lsn), *seq);
        }
        if events.len() >= ctx.config.batch_size && iter.peek().is_some() {
            let batch = Batch {
                events: take_events(&mut events),
                checkpoint: Checkpoint {
                    resume_token: complete.0.render(),
                    sequence_number: complete.1,
                    snapshot_done: true,
                },
                release: None,
            };
            if !send_batch(tx, batch, stop).await {
                return Ok(false);
            }
        }
    }
    *token = advance(token, to);
    let batch = Batch {
        events,
        checkpoint: Checkpoint {
            resume_token: token.render(),
            sequence_number: *seq,
            snapshot_done: true,
        },
        release: None,
    };
    Ok(send_batch(tx, batch, stop).await)
}

async fn ct_loop(
    ctx: &Arc<Ctx>,
    src: &dyn SqlServerSource,
    cp: Checkpoint,
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<(), CdcError> {
    let cfg = &ctx.config;
    let tables = src.tracked_tables(&cfg.schema, &cfg.tables).await?;
    let mut seq = cp.sequence_number;
    let mut version = parse_ct_token(&cp.resume_token)?;
    if !cp.snapshot_done && cfg.snapshot == SnapshotMode::Initial {
        let list: Vec<(TableRef, Vec<String>)> = tables
            .iter()
            .map(|t| (t.table.clone(), t.key_columns.clone()))
            .collect();
        let rendered = format!("ct:{version}");
        match snapshot(ctx, src, &list, tx, &rendered, stop).await? {
            Some(last) => seq = last,
            None => return Ok(()),
        }
        let done = Batch {
            events: Vec::new(),
            checkpoint: Checkpoint {
                resume_token: rendered,
                sequence_number: seq,
                snapshot_done: true,
            },
            release: None,
        };
        if !send_batch(tx, done, stop).await {
            return Ok(());
        }
    }
    ctx.status.set_phase("streaming");
    let poll = Duration::from_secs_f64(cfg.poll_interval_seconds);
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let current = src.ct_current_version().await?.ok_or_else(|| {
            CdcError::Source("Change Tracking was disabled on the database".into())
        })?;
        if current > version {
            check_ct_history(src, &tables, version).await?;
            let mut rows = Vec::new();
            for (i, t) in tables.iter().enumerate() {
                for r in src.ct_changes(t, version, current).await? {
                    rows.push((i, r));
                }
            }
            rows.sort_by(|(ia, a), (ib, b)| {
                (a.version, *ia, crate::canonical_key(&a.key)).cmp(&(
                    b.version,
                    *ib,
                    crate::canonical_key(&b.key),
                ))
            });
            let now = aragora_core::time::now_ms();
            let mut events = Vec::new();
            let mut complete = (version, seq);
            let mut iter = rows.into_iter().peekable();
            while let Some((i, r)) = iter.next() {
                let t = &tables[i];
                let (op, data) = match (r.operation, r.row) {
                    ('D', _) => (Some(ChangeOperation::Delete), Map::new()),
                    ('I', Some(row)) => (Some(ChangeOperation::Insert), row),
                    ('U', Some(row)) => (Some(ChangeOperation::Update), row),
                    // Gone since: its DELETE comes with a later version.
                    (_, None) => (None, Map::new()),
                    (other, _) => {
                        return Err(CdcError::Source(format!(
                            "unknown SYS_CHANGE_OPERATION {other}"
                        )));
                    }
                };
                if let Some(op) = op {
                    seq += 1;
                    let text = crate::canonical_key(&r.key);
                    events.push(ctx.event(
                        op,
                        &t.table,
                        r.key,
                        data,
                        Map::new(),
                        now,
                        &format!("ct:{}:{}:{text}", t.table.display(), r.version),
                        format!("ct:{}", r.version),
                        seq,
                    ));
                }
                if iter.peek().is_none_or(|(_, n)| n.version != r.version) {
                    complete = (r.version, seq);
                }
                if events.len() >= cfg.batch_size && iter.peek().is_some() {
                    let batch = Batch {
                        events: take_events(&mut events),
                        checkpoint: Checkpoint {
                            resume_token: format!("ct:{}", complete.0),
                            sequence_number: complete.1,
                            snapshot_done: true,
                        },
                        release: None,
                    };
                    if !send_batch(tx, batch, stop).await {
                        return Ok(());
                    }
                }
            }
            version = current;
            let batch = Batch {
                events,
                checkpoint: Checkpoint {
                    resume_token: format!("ct:{version}"),
                    sequence_number: seq,
                    snapshot_done: true,
                },
                release: None,
            };
            if !send_batch(tx, batch, stop).await {
                return Ok(());
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// The tables `sync()` reads, with their key columns.
async fn sync_tables(
    cfg: &SqlServerConfig,
    src: &dyn SqlServerSource,
) -> Result<Vec<(TableRef, Vec<String>)>, CdcError> {
    let mut out: Vec<(TableRef, Vec<String>)> = Vec::new();
    if cfg.tables.is_empty() {
        match cfg.mode() {
            Mode::Cdc => {
                for i in src.capture_instances(&cfg.schema, &[]).await? {
                    if !out.iter().any(|(t, _)| t == &i.table) {
                        out.push((i.table.clone(), i.key_columns.clone()));
                    }
                }
            }
            Mode::ChangeTracking => {
                for t in src.tracked_tables(&cfg.schema, &[]).await? {
                    out.push((t.table, t.key_columns));
                }
            }
        }
    } else {
        for (i, name) in cfg.tables.iter().enumerate() {
            let t = TableRef::new(&cfg.schema, name);
            let keys = src.primary_key(&t).await?;
            if keys.is_empty() {
                return Err(CdcError::config(
                    &format!("config.tables[{i}]"),
                    format!("{} has no primary key (or does not exist)", t.display()),
                ));
            }
            out.push((t, keys));
        }
    }
    Ok(out)
}

#[async_trait]
impl Connector for SqlServerConnector {
    fn connector_id(&self) -> &str {
        &self.id
    }

    fn source_type(&self) -> CdcSourceType {
        CdcSourceType::Sqlserver
    }

    fn add_change_handler(&self, handler: Arc<dyn ChangeHandler>) {
        self.handlers.write().push(handler);
    }

    async fn start(&self) -> Result<(), CdcError> {
        self.task
            .start(&self.handlers, &self.status, |stop| async move {
                let ctx = self.ctx();
                let src = (ctx.factory)().await?;
                if let Err(e) = preflight(&ctx, src.as_ref()).await {
                    ctx.status.set_phase("stopped");
                    ctx.status.set_source_error(Some(e.to_string()));
                    return Err(e);
                }
                drop(src);
                Ok(tokio::spawn(async move { run(ctx, stop).await }))
            })
            .await
    }

    async fn stop(&self) -> Result<(), CdcError> {
        self.task
            .stop(&self.status, |s| s.phase() == "failed")
            .await;
        Ok(())
    }

    fn sync(&self) -> BoxStream<'_, Result<SyncRow, CdcError>> {
        let cfg = self.config.clone();
        let factory = self.factory.clone();
        let (tx, rx) = mpsc::channel::<Result<SyncRow, CdcError>>(256);
        tokio::spawn(async move {
            let res = async {
                let src = factory().await?;
                let tables = sync_tables(&cfg, src.as_ref()).await?;
                let page = cfg.batch_size as u32;
                for (t, keys) in tables {
                    let mut offset = 0u64;
                    loop {
                        let rows = src.scan(&t, &keys, offset, page).await?;
                        let n = rows.len();
                        offset += n as u64;
                        for row in rows {
                            let key = key_of(&keys, &row);
                            let r = SyncRow {
                                evidence_id: format!(
                                    "sqlserver:{}.{}.{}:{}",
                                    cfg.database,
                                    t.schema,
                                    t.name,
                                    crate::canonical_key(&key)
                                ),
                                table: t.display(),
                                content: crate::render_row(&t.display(), &key, &row),
                                primary_key: key,
                                data: row,
                            };
                            if tx.send(Ok(r)).await.is_err() {
                                return Ok(());
                            }
                        }
                        if n < page as usize {
                            break;
                        }
                    }
                }
                Ok::<(), CdcError>(())
            }
            .await;
            if let Err(e) = res {
                let _ = tx.send(Err(e)).await;
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .boxed()
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        let mut details = self.status.details();
        let cfg = &self.config;
        details.insert("mode".into(), json!(cfg.mode()));
        details.insert("database".into(), json!(cfg.database));
        details.insert("schema".into(), json!(cfg.schema));
        details.insert("tables".into(), json!(cfg.tables));
        let probe = async {
            let src = (self.factory)().await?;
            src.ping().await?;
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            let mut extra = Map::new();
            let store = self.checkpoints.read().clone();
            let stored = match self.status.last_checkpoint() {
                Some(c) => c.resume_token,
                None => store
                    .load(&self.id)
                    .await?
                    .map(|c| c.resume_token)
                    .unwrap_or_default(),
            };
            match cfg.mode() {
                Mode::Cdc => {
                    let job = src.capture_job().await?;
                    let max = src.max_lsn().await?;
                    extra.insert(
                        "capture_job".into(),
                        match &job {
                            CaptureJob::Running => json!("running"),
                            CaptureJob::NotRunning(w) => json!(format!("not running: {w}")),
                            CaptureJob::Unknown(w) => json!(format!("unknown: {w}")),
                        },
                    );
                    extra.insert("max_lsn".into(), json!(max.hex()));
                    let token = CdcToken::parse(&stored).ok();
                    let mut list = Vec::new();
                    for i in src.capture_instances(&cfg.schema, &cfg.tables).await? {
                        let min = src.min_lsn(&i.name).await?;
                        let pos = token.as_ref().map(|t| t.position(&i));
                        list.push(json!({
                            "capture_instance": i.name,
                            "table": i.table.display(),
                            "start_lsn": i.start_lsn.hex(),
                            "min_lsn": min.hex(),
                            "position": pos.map(|p| p.hex()),
                            "history_lost": pos.is_some_and(|p| p.increment() < min),
                        }));
                    }
                    extra.insert("capture_instances".into(), json!(list));
                    Ok::<_, CdcError>((latency, extra, !matches!(job, CaptureJob::NotRunning(_))))
                }
                Mode::ChangeTracking => {
                    let cur = src.ct_current_version().await?;
                    extra.insert("current_version".into(), json!(cur));
                    let pos = parse_ct_token(&stored).ok();
                    extra.insert("position".into(), json!(pos));
                    let mut list = Vec::new();
                    let mut ok = cur.is_some();
                    for t in src.tracked_tables(&cfg.schema, &cfg.tables).await? {
                        let min = src.ct_min_valid_version(&t.table).await?;
                        let lost = matches!((pos, min), (Some(p), Some(m)) if p < m);
                        ok &= min.is_some() && !lost;
                        list.push(json!({
                            "table": t.table.display(),
                            "min_valid_version": min,
                            "history_lost": lost,
                        }));
                    }
                    extra.insert("tracked_tables".into(), json!(list));
                    Ok((latency, extra, ok))
                }
            }
        };
        let (healthy_source, latency_ms) =
            match tokio::time::timeout(Duration::from_secs(10), probe).await {
                Ok(Ok((latency, extra, ok))) => {
                    details.extend(extra);
                    (ok, latency)
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
            healthy: healthy_source && self.status.healthy() && self.status.phase() != "failed",
            latency_ms: (latency_ms * 100.0).round() / 100.0,
            details,
        }
    }

    fn status(&self) -> &Arc<Status> {
        &self.status
    }

    async fn is_running(&self) -> bool {
        self.task.is_running().await
    }

    async fn close(&self) -> Result<(), CdcError> {
        self.stop().await
    }
}
