//! The Snowflake connector: change tracking read with the `CHANGES` clause over Snowflake's SQL
//! API v2 ([`api`]).
//!
//! Each poll reads, per table, `CHANGES(INFORMATION => DEFAULT) AT(TIMESTAMP => start)
//! END(TIMESTAMP => end)` for one time window; the next window starts where this one ended and
//! the resume token is the window end. `DEFAULT` changes are a *net delta* between the two
//! table versions: a row inserted and deleted inside one window does not appear, a row updated
//! twice appears once. An update comes as a DELETE and an INSERT with `METADATA$ISUPDATE = TRUE`
//! and the same `METADATA$ROW_ID`; they are paired into one UPDATE with `old_data`.
//!
//! `config.mode: "stream"` reads Snowflake streams instead, consumed through a staging table
//! ([`stream`]). `config.snapshot` makes a first start deliver the current rows first: in
//! `changes` mode as of the first window's start (`AT(TIMESTAMP => T)`), in stream mode through
//! `SHOW_INITIAL_ROWS = TRUE`.

pub mod api;
pub mod stream;

use crate::connector::{Connector, HealthReport, SyncRow};
use crate::pipeline::{Batch, Dispatcher, Handlers, Status, send_batch, take_events};
use crate::runner::{SessionError, TaskSlot, supervise};
use crate::{
    CdcError, CdcSourceType, ChangeEvent, ChangeHandler, ChangeOperation, Checkpoint,
    CheckpointStore, MemoryCheckpoints,
};
use api::{KeyPair, ResultSet, Session, SqlApi, typed};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Settings of a Snowflake connector (the `config` object of `POST /api/v1/connectors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier (`myorg-myaccount`, or a locator such as `xy12345.us-east-1`).
    pub account: String,
    /// Base URL of the SQL API; default `https://<account>.snowflakecomputing.com`.
    #[serde(default)]
    pub base_url: Option<String>,
    pub database: String,
    #[serde(default = "default_schema")]
    pub schema: String,
    #[serde(default)]
    pub warehouse: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    /// Tables in `schema` with `CHANGE_TRACKING = TRUE`.
    pub tables: Vec<String>,
    /// Key columns per table (Snowflake does not enforce keys); without an entry, events are
    /// keyed by `METADATA$ROW_ID`.
    #[serde(default)]
    pub primary_keys: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_poll")]
    pub poll_interval_seconds: f64,
    /// How far behind the server clock a window ends, so commits in flight are not cut.
    #[serde(default = "default_lag")]
    pub window_lag_seconds: f64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_timeout")]
    pub statement_timeout_seconds: u64,
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
    /// `changes` (default): `CHANGES` over time windows; `stream`: a Snowflake stream per
    /// table consumed into a staging table ([`stream`]).
    #[serde(default)]
    pub mode: SnowflakeMode,
    /// Whether a first start delivers the tables' current rows (as INSERTs) before the changes
    /// (default: yes, as every connector does). `"initial"`/`"never"` (the other connectors'
    /// words) or `true`/`false`.
    #[serde(default = "default_snapshot", deserialize_with = "snapshot_flag")]
    pub snapshot: bool,
}

/// How changes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SnowflakeMode {
    /// `CHANGES(INFORMATION => DEFAULT)` over half-open time windows; token `sf:<window end>`.
    #[default]
    Changes,
    /// `CREATE STREAM` + consuming `INSERT … SELECT FROM stream` into a staging table; token
    /// `sfs:<batch>`.
    Stream,
}

fn snapshot_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s == "initial" => Ok(true),
        Value::String(s) if s == "never" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "snapshot must be \"initial\" or \"never\" (or true/false), not {other}"
        ))),
    }
}

fn default_snapshot() -> bool {
    true
}

fn default_schema() -> String {
    "PUBLIC".into()
}
fn default_poll() -> f64 {
    30.0
}
fn default_lag() -> f64 {
    1.0
}
fn default_batch() -> usize {
    1000
}
fn default_timeout() -> u64 {
    120
}
fn default_checkpoint_ms() -> u64 {
    200
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// `"NAME"` with quotes doubled. Unquoted names in the config are upper-cased first, the way
/// Snowflake resolves unquoted identifiers.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.to_ascii_uppercase().replace('"', "\"\""))
}

impl SnowflakeConfig {
    pub fn new<T: Into<String>>(
        account: impl Into<String>,
        database: impl Into<String>,
        tables: impl IntoIterator<Item = T>,
    ) -> Self {
        SnowflakeConfig {
            account: account.into(),
            base_url: None,
            database: database.into(),
            schema: default_schema(),
            warehouse: None,
            role: None,
            tables: tables.into_iter().map(Into::into).collect(),
            primary_keys: BTreeMap::new(),
            poll_interval_seconds: default_poll(),
            window_lag_seconds: default_lag(),
            batch_size: default_batch(),
            statement_timeout_seconds: default_timeout(),
            checkpoint_interval_ms: default_checkpoint_ms(),
            mode: SnowflakeMode::Changes,
            snapshot: default_snapshot(),
        }
    }

    pub fn from_json(v: &Value) -> Result<Self, CdcError> {
        // Checked first so the error names the field (serde's enum errors do not).
        if let Some(m) = v.get("mode")
            && !matches!(m.as_str(), Some("changes" | "stream"))
        {
            return Err(CdcError::config(
                "config.mode",
                format!("must be \"changes\" (the default) or \"stream\", not {m}"),
            ));
        }
        if let Some(s) = v.get("snapshot")
            && !(s.is_boolean() || matches!(s.as_str(), Some("initial" | "never")))
        {
            return Err(CdcError::config(
                "config.snapshot",
                format!("must be \"initial\" (the default) or \"never\" (or true/false), not {s}"),
            ));
        }
        let cfg: SnowflakeConfig = crate::error::parse_config(v)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), CdcError> {
        let acct_ok = !self.account.is_empty()
            && self
                .account
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !acct_ok {
            return Err(CdcError::config(
                "config.account",
                "must be an account identifier (letters, digits, `-`, `_`, `.`)",
            ));
        }
        if let Some(u) = &self.base_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(CdcError::config(
                "config.base_url",
                "must be an http(s) URL",
            ));
        }
        for (field, v) in [
            ("config.database", Some(&self.database)),
            ("config.schema", Some(&self.schema)),
            ("config.warehouse", self.warehouse.as_ref()),
            ("config.role", self.role.as_ref()),
        ] {
            if let Some(v) = v
                && !is_name(v)
            {
                return Err(CdcError::config(field, "must be an unquoted identifier"));
            }
        }
        if self.tables.is_empty() {
            return Err(CdcError::config("config.tables", "name at least one table"));
        }
        for (i, t) in self.tables.iter().enumerate() {
            if !is_name(t) {
                return Err(CdcError::config(
                    &format!("config.tables[{i}]"),
                    "must be an unquoted table name in `schema`",
                ));
            }
        }
        for (t, cols) in &self.primary_keys {
            if !self.tables.iter().any(|x| x.eq_ignore_ascii_case(t))
                || cols.is_empty()
                || !cols.iter().all(|c| is_name(c))
            {
                return Err(CdcError::config(
                    &format!("config.primary_keys.{t}"),
                    "must map a configured table to its key column names",
                ));
            }
        }
        if !(self.poll_interval_seconds > 0.0 && self.poll_interval_seconds <= 86_400.0) {
            return Err(CdcError::config(
                "config.poll_interval_seconds",
                "must be more than 0 and at most 86400",
            ));
        }
        if !(0.0..=3600.0).contains(&self.window_lag_seconds) {
            return Err(CdcError::config(
                "config.window_lag_seconds",
                "must be 0 to 3600",
            ));
        }
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(CdcError::config("config.batch_size", "must be 1 to 100000"));
        }
        if !(1..=172_800).contains(&self.statement_timeout_seconds) {
            return Err(CdcError::config(
                "config.statement_timeout_seconds",
                "must be 1 to 172800",
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

    pub fn base(&self) -> String {
        self.base_url
            .clone()
            .unwrap_or_else(|| format!("https://{}.snowflakecomputing.com", self.account))
    }

    fn qualified(&self, table: &str) -> String {
        format!(
            "{}.{}.{}",
            quote(&self.database),
            quote(&self.schema),
            quote(table)
        )
    }

    fn keys(&self, table: &str) -> Option<&Vec<String>> {
        self.primary_keys
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(table))
            .map(|(_, v)| v)
    }
}

/// The server clock in epoch milliseconds.
pub const NOW_SQL: &str = "SELECT DATE_PART(EPOCH_MILLISECOND, CURRENT_TIMESTAMP())";

/// The net changes of `table` between two instants (epoch ms).
pub fn changes_sql(qualified_table: &str, start_ms: i64, end_ms: i64) -> String {
    format!(
        "SELECT * FROM {qualified_table} CHANGES(INFORMATION => DEFAULT) \
         AT(TIMESTAMP => TO_TIMESTAMP_LTZ({start_ms}, 3)) \
         END(TIMESTAMP => TO_TIMESTAMP_LTZ({end_ms}, 3))"
    )
}

/// The rows of `table` as of an instant (epoch ms), ordered by `keys` when given (the initial
/// snapshot of `changes` mode).
pub fn snapshot_sql(qualified_table: &str, at_ms: i64, keys: Option<&[String]>) -> String {
    let mut s =
        format!("SELECT * FROM {qualified_table} AT(TIMESTAMP => TO_TIMESTAMP_LTZ({at_ms}, 3))");
    if let Some(k) = keys.filter(|k| !k.is_empty()) {
        let cols: Vec<String> = k.iter().map(|c| quote(c)).collect();
        s.push_str(&format!(" ORDER BY {}", cols.join(", ")));
    }
    s
}

/// A change row of the `CHANGES` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub action: String,
    pub is_update: bool,
    pub row_id: String,
    pub row: Map<String, Value>,
}

/// The metadata columns of a `CHANGES` or stream result.
pub const CHANGE_META: [&str; 3] = ["METADATA$ACTION", "METADATA$ISUPDATE", "METADATA$ROW_ID"];

/// Splits a `CHANGES` result into rows and their metadata columns.
pub fn change_rows(rs: &ResultSet) -> Result<Vec<ChangeRow>, CdcError> {
    rows_with_meta(&rs.columns, &rs.rows, CHANGE_META, |c| {
        c.starts_with("METADATA$")
    })
}

/// Splits rows into data and the three metadata columns named by `meta` (action, is-update,
/// row id); columns for which `skip` holds are left out of the data.
pub fn rows_with_meta(
    columns: &[(String, String)],
    rows: &[Vec<Option<String>>],
    meta: [&str; 3],
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<ChangeRow>, CdcError> {
    let idx = |name: &str| {
        columns
            .iter()
            .position(|(c, _)| c.eq_ignore_ascii_case(name))
            .ok_or_else(|| CdcError::Source(format!("change result without {name}")))
    };
    let (a, u, r) = (idx(meta[0])?, idx(meta[1])?, idx(meta[2])?);
    Ok(rows
        .iter()
        .map(|cells| {
            let mut row = Map::new();
            for (i, (name, kind)) in columns.iter().enumerate() {
                if i != a && i != u && i != r && !skip(name) {
                    row.insert(
                        name.clone(),
                        typed(kind, cells.get(i).and_then(|c| c.as_deref())),
                    );
                }
            }
            let get = |i: usize| cells.get(i).cloned().flatten().unwrap_or_default();
            ChangeRow {
                action: get(a).to_ascii_uppercase(),
                is_update: get(u).eq_ignore_ascii_case("true"),
                row_id: get(r),
                row,
            }
        })
        .collect())
}

/// A change after pairing: operation, new row, old row, row id.
pub type Paired = (
    ChangeOperation,
    Map<String, Value>,
    Map<String, Value>,
    String,
);

/// Pairs `METADATA$ISUPDATE` DELETE/INSERT rows by `METADATA$ROW_ID` into UPDATEs with
/// `old_data`; other rows stay INSERT or DELETE. Order: by row id, so a replayed window gives
/// the same sequence.
pub fn pair(rows: Vec<ChangeRow>) -> Result<Vec<Paired>, CdcError> {
    let mut by_id: BTreeMap<String, (Option<ChangeRow>, Option<ChangeRow>)> = BTreeMap::new();
    let mut plain: Vec<ChangeRow> = Vec::new();
    for r in rows {
        if r.is_update {
            let e = by_id.entry(r.row_id.clone()).or_default();
            match r.action.as_str() {
                "DELETE" => e.0 = Some(r),
                "INSERT" => e.1 = Some(r),
                other => return Err(CdcError::Source(format!("METADATA$ACTION {other}"))),
            }
        } else {
            plain.push(r);
        }
    }
    let mut out: Vec<Paired> = Vec::new();
    for (id, (old, new)) in by_id {
        match (old, new) {
            (Some(o), Some(n)) => out.push((ChangeOperation::Update, n.row, o.row, id)),
            (Some(o), None) => out.push((ChangeOperation::Delete, Map::new(), o.row, id)),
            (None, Some(n)) => out.push((ChangeOperation::Insert, n.row, Map::new(), id)),
            (None, None) => {}
        }
    }
    for r in plain {
        match r.action.as_str() {
            "INSERT" => out.push((ChangeOperation::Insert, r.row, Map::new(), r.row_id)),
            "DELETE" => out.push((ChangeOperation::Delete, Map::new(), r.row, r.row_id)),
            other => return Err(CdcError::Source(format!("METADATA$ACTION {other}"))),
        }
    }
    out.sort_by(|a, b| a.3.cmp(&b.3));
    Ok(out)
}

/// Resume token: `sf:<end>` (windows up to `end` delivered) or `sf:<start>-<end>` (that window
/// is being delivered; a restart replays exactly it, so event ids repeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowToken {
    pub start: i64,
    pub end: Option<i64>,
}

impl WindowToken {
    pub fn parse(s: &str) -> Result<WindowToken, CdcError> {
        let bad = || CdcError::Source(format!("not a Snowflake resume token: `{s}`"));
        let body = s.strip_prefix("sf:").ok_or_else(bad)?;
        match body.split_once('-') {
            Some((a, b)) => Ok(WindowToken {
                start: a.parse().map_err(|_| bad())?,
                end: Some(b.parse().map_err(|_| bad())?),
            }),
            None => Ok(WindowToken {
                start: body.parse().map_err(|_| bad())?,
                end: None,
            }),
        }
    }

    pub fn render(&self) -> String {
        match self.end {
            Some(e) => format!("sf:{}-{e}", self.start),
            None => format!("sf:{}", self.start),
        }
    }
}

/// Turns Snowflake's errors for the `CHANGES` clause into what to do about them.
pub fn explain(table: &str, e: CdcError) -> CdcError {
    let CdcError::Source(m) = &e else { return e };
    let lower = m.to_ascii_lowercase();
    if lower.contains("change tracking is not enabled") {
        CdcError::config(
            "config.tables",
            format!(
                "change tracking is not enabled on {table} (or not for the whole window): run \
                 ALTER TABLE {table} SET CHANGE_TRACKING = TRUE ({m})"
            ),
        )
    } else if lower.contains("retention")
        || lower.contains("stale")
        || lower.contains("time travel data is not available")
    {
        CdcError::Source(format!(
            "{}: the window is outside {table}'s time travel retention; the changes are gone. \
             Reset the connector's checkpoint (and raise DATA_RETENTION_TIME_IN_DAYS) ({m})",
            crate::error::HISTORY_LOST
        ))
    } else {
        e
    }
}

struct Ctx {
    id: String,
    config: SnowflakeConfig,
    api: Arc<SqlApi>,
    handlers: Handlers,
    checkpoints: Arc<dyn CheckpointStore>,
    status: Arc<Status>,
}

/// The Snowflake connector.
pub struct SnowflakeConnector {
    id: String,
    config: SnowflakeConfig,
    api: Arc<SqlApi>,
    handlers: Handlers,
    checkpoints: RwLock<Arc<dyn CheckpointStore>>,
    status: Arc<Status>,
    task: TaskSlot,
}

async fn server_now(api: &SqlApi) -> Result<i64, CdcError> {
    let rs = api.query(NOW_SQL).await?;
    rs.rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|s| s.parse::<f64>().ok())
        .map(|f| f as i64)
        .ok_or_else(|| CdcError::Source("CURRENT_TIMESTAMP() gave no value".into()))
}

impl SnowflakeConnector {
    /// `user` and the PEM of the private key whose public key is set on the user
    /// (`ALTER USER … SET RSA_PUBLIC_KEY = …`).
    pub fn new(
        id: impl Into<String>,
        config: SnowflakeConfig,
        user: &str,
        private_key_pem: &str,
    ) -> Result<Self, CdcError> {
        config.validate()?;
        if user.trim().is_empty() {
            return Err(CdcError::config(
                "credentials.username",
                "the Snowflake user is required",
            ));
        }
        let key = KeyPair::from_pem(private_key_pem)?;
        let session = Session {
            database: config.database.to_ascii_uppercase(),
            schema: config.schema.to_ascii_uppercase(),
            warehouse: config.warehouse.as_ref().map(|w| w.to_ascii_uppercase()),
            role: config.role.as_ref().map(|r| r.to_ascii_uppercase()),
            timeout_seconds: config.statement_timeout_seconds,
        };
        let api = SqlApi::new(config.base(), &config.account, user, key, session)?;
        Ok(SnowflakeConnector {
            id: id.into(),
            config,
            api: Arc::new(api),
            handlers: Arc::new(RwLock::new(Vec::new())),
            checkpoints: RwLock::new(Arc::new(MemoryCheckpoints::new())),
            status: Arc::new(Status::default()),
            task: TaskSlot::new(),
        })
    }

    pub fn with_checkpoints(self, store: Arc<dyn CheckpointStore>) -> Self {
        *self.checkpoints.write() = store;
        self
    }

    /// The SQL API client (poll interval and retry limits are adjustable).
    pub fn api_mut(&mut self) -> Option<&mut SqlApi> {
        Arc::get_mut(&mut self.api)
    }

    pub fn config(&self) -> &SnowflakeConfig {
        &self.config
    }

    fn ctx(&self) -> Arc<Ctx> {
        Arc::new(Ctx {
            id: self.id.clone(),
            config: self.config.clone(),
            api: self.api.clone(),
            handlers: self.handlers.clone(),
            checkpoints: self.checkpoints.read().clone(),
            status: self.status.clone(),
        })
    }
}

impl Ctx {
    /// `SCHEMA.TABLE` as events name it.
    fn display(&self, table: &str) -> String {
        format!(
            "{}.{}",
            self.config.schema.to_ascii_uppercase(),
            table.to_ascii_uppercase()
        )
    }

    /// The key of a row: the configured key columns, else `fallback` (`METADATA$ROW_ID`).
    fn key(
        &self,
        table: &str,
        source: &Map<String, Value>,
        fallback: (&str, Value),
    ) -> Map<String, Value> {
        match self.config.keys(table) {
            Some(cols) => cols
                .iter()
                .map(|c| {
                    let c = c.to_ascii_uppercase();
                    let v = source.get(&c).cloned().unwrap_or(Value::Null);
                    (c, v)
                })
                .collect(),
            None => [(fallback.0.to_string(), fallback.1)].into_iter().collect(),
        }
    }

    /// A change of `table` (`position` makes the event id; it must repeat on a replay).
    fn event(
        &self,
        table: &str,
        (op, data, old, row_id): Paired,
        position: &str,
        at_ms: i64,
        resume_token: String,
        seq: i64,
    ) -> ChangeEvent {
        let source = if data.is_empty() { &old } else { &data };
        let key = self.key(table, source, ("METADATA$ROW_ID", json!(row_id)));
        ChangeEvent {
            id: crate::event_id(&self.id, position),
            source_type: CdcSourceType::Snowflake,
            connector_id: self.id.clone(),
            operation: op,
            timestamp: aragora_core::time::rfc3339(at_ms),
            database: self.config.database.to_ascii_uppercase(),
            table: self.display(table),
            data,
            old_data: old,
            primary_key: key,
            resume_token,
            sequence_number: seq,
        }
    }

    fn dispatcher(&self) -> Dispatcher {
        Dispatcher {
            connector_id: self.id.clone(),
            handlers: self.handlers.clone(),
            checkpoints: self.checkpoints.clone(),
            status: self.status.clone(),
            checkpoint_interval: Duration::from_millis(self.config.checkpoint_interval_ms),
        }
    }
}

async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let (ctx, stop) = (&ctx, &stop);
    supervise(
        &ctx.id,
        &ctx.status,
        "Snowflake poll",
        stop,
        || async move {
            let res = match ctx.config.mode {
                SnowflakeMode::Changes => session(ctx, stop).await,
                SnowflakeMode::Stream => stream::session(ctx, stop).await,
            };
            res.map_err(|e| match e {
                e @ CdcError::Config { .. } => SessionError::failed(e),
                CdcError::Source(m) if m.starts_with(crate::error::HISTORY_LOST) => {
                    SessionError::failed(m)
                }
                e => e.into(),
            })
        },
    )
    .await
}

async fn session(ctx: &Arc<Ctx>, stop: &CancellationToken) -> Result<(), CdcError> {
    let cp = ctx.checkpoints.load(&ctx.id).await?.unwrap_or_default();
    let mut token = WindowToken::parse(&cp.resume_token)?;
    let mut seq = cp.sequence_number;
    let (tx, rx) = mpsc::channel::<Batch>(4);
    let (rel_tx, _rel_rx) = watch::channel(0u64);
    let dispatcher = tokio::spawn(ctx.dispatcher().run(rx, rel_tx, stop.clone()));
    ctx.status.set_phase("streaming");
    let read = async {
        // A first start with `snapshot`: the rows as of the first window's start, then the
        // windows from there. A snapshot cut short is taken again at the same instant.
        if !cp.snapshot_done && ctx.config.snapshot && token.end.is_none() {
            ctx.status.set_phase("snapshotting");
            if !deliver_snapshot(ctx, token.start, &mut seq, &tx, stop).await? {
                return Ok(());
            }
            ctx.status.set_phase("streaming");
        }
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let end = match token.end {
                Some(e) => e,
                None => {
                    let now = server_now(&ctx.api).await?;
                    now - (ctx.config.window_lag_seconds * 1000.0) as i64
                }
            };
            if end > token.start {
                let window = WindowToken {
                    start: token.start,
                    end: Some(end),
                };
                if !deliver_window(ctx, window, &mut seq, &tx, stop).await? {
                    return Ok(());
                }
                token = WindowToken {
                    start: end,
                    end: None,
                };
                ctx.status.set_source_error(None);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(ctx.config.poll_interval_seconds)) => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }
    .await;
    drop(tx);
    crate::pipeline::join_dispatcher(dispatcher).await?;
    read
}

/// Delivers every table's rows as of `at` (epoch ms) as INSERT events, partition by partition
/// in `batch_size` chunks; `false` when stopping. The checkpoint stays `sf:<at>` with
/// `snapshot_done: false` until the last row is acknowledged, so a restart takes the snapshot
/// again at the same instant (same event ids) and the windows then start at `at`: the snapshot
/// holds every commit up to `at`, the first window every commit after it.
async fn deliver_snapshot(
    ctx: &Ctx,
    at: i64,
    seq: &mut i64,
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<bool, CdcError> {
    let token = WindowToken {
        start: at,
        end: None,
    }
    .render();
    let before = Checkpoint {
        resume_token: token.clone(),
        sequence_number: *seq,
        snapshot_done: false,
    };
    let mut chunks = Chunks::new(ctx, before, tx, stop);
    for t in &ctx.config.tables {
        let q = ctx.config.qualified(t);
        let display = ctx.display(t);
        let keys = ctx.config.keys(t).map(Vec::as_slice);
        let mut pages = ctx
            .api
            .open(&snapshot_sql(&q, at, keys))
            .await
            .map_err(|e| explain(&q, e))?;
        // Without key columns a row is known by its content (and which copy of it it is).
        let mut copies: BTreeMap<String, u64> = BTreeMap::new();
        while let Some(page) = ctx.api.next_page(&mut pages).await? {
            for cells in page {
                let row: Map<String, Value> = pages
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, (c, k))| {
                        (c.clone(), typed(k, cells.get(i).and_then(|c| c.as_deref())))
                    })
                    .collect();
                let (key, pos) = match keys {
                    Some(_) => {
                        let key = ctx.key(t, &row, ("", Value::Null));
                        let pos = crate::canonical_key(&key);
                        (key, pos)
                    }
                    None => {
                        let digest = sha2::Sha256::digest(
                            aragora_core::json::canonical_object(&row).as_bytes(),
                        );
                        let h = hex::encode(&digest[..16]);
                        let n = copies.entry(h.clone()).or_insert(0);
                        *n += 1;
                        let pos = format!("{h}#{n}");
                        (
                            [("ROW_HASH".to_string(), json!(h))].into_iter().collect(),
                            pos,
                        )
                    }
                };
                *seq += 1;
                let mut e = ctx.event(
                    t,
                    (ChangeOperation::Insert, row, Map::new(), String::new()),
                    &format!("sf:{display}:snapshot:{at}:{pos}"),
                    at,
                    token.clone(),
                    *seq,
                );
                e.primary_key = key;
                ctx.status.add_snapshot_rows(1);
                if !chunks.push(e).await {
                    return Ok(false);
                }
            }
        }
    }
    let after = Checkpoint {
        resume_token: token,
        sequence_number: *seq,
        snapshot_done: true,
    };
    Ok(chunks.finish(after, None).await)
}

/// Reads and delivers one window of every table; `false` when stopping.
async fn deliver_window(
    ctx: &Ctx,
    window: WindowToken,
    seq: &mut i64,
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<bool, CdcError> {
    let (start, end) = (window.start, window.end.unwrap_or(window.start));
    let before = Checkpoint {
        resume_token: window.render(),
        sequence_number: *seq,
        snapshot_done: true,
    };
    let mut chunks = Chunks::new(ctx, before, tx, stop);
    for t in &ctx.config.tables {
        let q = ctx.config.qualified(t);
        let rs = ctx
            .api
            .query(&changes_sql(&q, start, end))
            .await
            .map_err(|e| explain(&q, e))?;
        let paired = pair(change_rows(&rs)?)?;
        let display = ctx.display(t);
        for p in paired {
            *seq += 1;
            let position = format!("sf:{display}:{start}-{end}:{}", p.3);
            let e = ctx.event(t, p, &position, end, format!("sf:{end}"), *seq);
            if !chunks.push(e).await {
                return Ok(false);
            }
        }
    }
    let after = Checkpoint {
        resume_token: WindowToken {
            start: end,
            end: None,
        }
        .render(),
        sequence_number: *seq,
        snapshot_done: true,
    };
    Ok(chunks.finish(after, None).await)
}

/// The events of one delivery (a snapshot, a window, a staged batch) handed to the dispatcher in
/// `batch_size` chunks. Every chunk but the last carries the checkpoint from before the delivery,
/// so a restart repeats the whole delivery with the same ids; the last carries the one after it.
struct Chunks<'a> {
    events: Vec<ChangeEvent>,
    size: usize,
    before: Checkpoint,
    tx: &'a mpsc::Sender<Batch>,
    stop: &'a CancellationToken,
}

impl<'a> Chunks<'a> {
    fn new(
        ctx: &Ctx,
        before: Checkpoint,
        tx: &'a mpsc::Sender<Batch>,
        stop: &'a CancellationToken,
    ) -> Self {
        Chunks {
            events: Vec::new(),
            size: ctx.config.batch_size,
            before,
            tx,
            stop,
        }
    }

    /// Adds an event, handing over a full chunk; `false` when stopping.
    async fn push(&mut self, e: ChangeEvent) -> bool {
        self.events.push(e);
        if self.events.len() < self.size {
            return true;
        }
        let batch = Batch {
            events: take_events(&mut self.events),
            checkpoint: self.before.clone(),
            release: None,
        };
        send_batch(self.tx, batch, self.stop).await
    }

    /// Hands over the rest with the checkpoint `after` (and `release`); `false` when stopping.
    async fn finish(self, after: Checkpoint, release: Option<u64>) -> bool {
        let batch = Batch {
            events: self.events,
            checkpoint: after,
            release,
        };
        send_batch(self.tx, batch, self.stop).await
    }
}

#[async_trait]
impl Connector for SnowflakeConnector {
    fn connector_id(&self) -> &str {
        &self.id
    }

    fn source_type(&self) -> CdcSourceType {
        CdcSourceType::Snowflake
    }

    fn add_change_handler(&self, handler: Arc<dyn ChangeHandler>) {
        self.handlers.write().push(handler);
    }

    async fn start(&self) -> Result<(), CdcError> {
        self.task
            .start(&self.handlers, &self.status, |stop| async move {
                let ctx = self.ctx();
                let fail = |e: CdcError| {
                    ctx.status.set_phase("stopped");
                    ctx.status.set_source_error(Some(e.to_string()));
                    e
                };
                let now = server_now(&ctx.api).await.map_err(fail)?;
                if ctx.config.mode == SnowflakeMode::Stream {
                    stream::prepare(&ctx).await.map_err(fail)?;
                    return Ok(tokio::spawn(async move { run(ctx, stop).await }));
                }
                let stored = ctx.checkpoints.load(&ctx.id).await?;
                let start = match stored.filter(|c| !c.resume_token.is_empty()) {
                    Some(c) if c.resume_token.starts_with(stream::TOKEN_PREFIX) => {
                        return Err(fail(stream::other_mode("stream", "changes")));
                    }
                    Some(c) => WindowToken::parse(&c.resume_token)?.start,
                    None => {
                        let first = Checkpoint {
                            resume_token: WindowToken {
                                start: now,
                                end: None,
                            }
                            .render(),
                            sequence_number: 0,
                            snapshot_done: !ctx.config.snapshot,
                        };
                        ctx.checkpoints.save(&ctx.id, &first, &[]).await?;
                        now
                    }
                };
                // Change tracking must cover every table from the stored position on.
                for t in &self.config.tables {
                    let q = self.config.qualified(t);
                    ctx.api
                        .query(&format!("{} LIMIT 0", changes_sql(&q, start, start)))
                        .await
                        .map_err(|e| fail(explain(&q, e)))?;
                }
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

    /// Stream mode: drops the streams and staging tables (staged rows not yet delivered are
    /// lost with them). `changes` mode creates nothing.
    async fn teardown(&self) -> Result<(), CdcError> {
        if self.config.mode == SnowflakeMode::Stream {
            stream::teardown(&self.ctx()).await?;
        }
        Ok(())
    }

    fn sync(&self) -> BoxStream<'_, Result<SyncRow, CdcError>> {
        let api = self.api.clone();
        let cfg = self.config.clone();
        let (tx, rx) = mpsc::channel::<Result<SyncRow, CdcError>>(256);
        tokio::spawn(async move {
            for t in &cfg.tables {
                let q = cfg.qualified(t);
                let rs = match api.query(&format!("SELECT * FROM {q}")).await {
                    Ok(rs) => rs,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let display = format!(
                    "{}.{}",
                    cfg.schema.to_ascii_uppercase(),
                    t.to_ascii_uppercase()
                );
                for (n, cells) in rs.rows.iter().enumerate() {
                    let row: Map<String, Value> = rs
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, (c, k))| {
                            (c.clone(), typed(k, cells.get(i).and_then(|c| c.as_deref())))
                        })
                        .collect();
                    let key: Map<String, Value> = match cfg.keys(t) {
                        Some(cols) => cols
                            .iter()
                            .map(|c| {
                                let c = c.to_ascii_uppercase();
                                (c.clone(), row.get(&c).cloned().unwrap_or(Value::Null))
                            })
                            .collect(),
                        None => [("row".to_string(), json!(n))].into_iter().collect(),
                    };
                    let r = SyncRow {
                        evidence_id: format!(
                            "snowflake:{}.{}:{}",
                            cfg.database.to_ascii_uppercase(),
                            display,
                            crate::canonical_key(&key)
                        ),
                        table: display.clone(),
                        content: crate::render_row(&display, &key, &row),
                        primary_key: key,
                        data: row,
                    };
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
            .boxed()
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        let mut details = self.status.details();
        details.insert("account".into(), json!(self.config.account));
        details.insert("database".into(), json!(self.config.database));
        details.insert("tables".into(), json!(self.config.tables));
        details.insert("key_fingerprint".into(), json!(self.api.fingerprint()));
        details.insert("mode".into(), json!(self.config.mode));
        if self.config.mode == SnowflakeMode::Stream {
            let objects: Vec<Value> = self
                .config
                .tables
                .iter()
                .map(|t| {
                    let (s, st) = stream::object_names(&self.id, t);
                    json!({"table": t.to_ascii_uppercase(), "stream": s, "staging_table": st})
                })
                .collect();
            details.insert("stream_objects".into(), json!(objects));
        }
        let probe = tokio::time::timeout(Duration::from_secs(30), server_now(&self.api)).await;
        let (ok, latency) = match probe {
            Ok(Ok(now)) => {
                let store = self.checkpoints.read().clone();
                let stored = store
                    .load(&self.id)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|c| WindowToken::parse(&c.resume_token).ok());
                if let Some(t) = stored {
                    details.insert(
                        "window_start".into(),
                        json!(aragora_core::time::rfc3339(t.start)),
                    );
                    details.insert("behind_ms".into(), json!((now - t.start).max(0)));
                }
                (true, started.elapsed().as_secs_f64() * 1000.0)
            }
            Ok(Err(e)) => {
                details.insert("source_unreachable".into(), json!(e.to_string()));
                (false, started.elapsed().as_secs_f64() * 1000.0)
            }
            Err(_) => {
                details.insert("source_unreachable".into(), json!("timed out after 30s"));
                (false, started.elapsed().as_secs_f64() * 1000.0)
            }
        };
        HealthReport {
            healthy: ok && self.status.healthy() && self.status.phase() != "failed",
            latency_ms: (latency * 100.0).round() / 100.0,
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
