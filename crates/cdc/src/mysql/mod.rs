//! The MySQL / MariaDB connector: row-based binlog streaming with GTIDs (`mysql_async`'s binlog
//! client), an initial snapshot of the tables on a first start (`snapshot: initial`), incremental
//! `sync()` in primary-key order.
//!
//! One connector serves both flavours, detected from the server: MySQL positions with
//! `COM_BINLOG_DUMP_GTID` and a GTID set, MariaDB with `@slave_connect_state` and a GTID list;
//! without GTIDs it falls back to binlog file and offset. The resume token (see
//! [`gtid::ResumeToken`]) moves only at transaction commits (XID, COMMIT, or a standalone DDL)
//! whose every row was acknowledged.

pub mod decode;
pub mod gtid;
mod rows;
pub mod scan;
pub mod stream;

pub use crate::connector::SnapshotMode;
use crate::connector::{Connector, HealthReport, SyncRow};
use crate::pipeline::{Dispatcher, Handlers, Status};
use crate::runner::TaskSlot;
use crate::{CdcError, CdcSourceType, ChangeHandler, CheckpointStore, MemoryCheckpoints};
use async_trait::async_trait;
use decode::{ColumnMeta, TableMeta};
use futures::StreamExt;
use futures::stream::BoxStream;
use gtid::{Flavor, MariaGtidList, MysqlGtidSet, ResumeToken};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of a MySQL/MariaDB connector (the `config` object of `POST /api/v1/connectors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub database: String,
    /// Table names in `database` (exact). Each needs a primary key.
    pub tables: Vec<String>,
    /// Stream the binlog (`start()`); when false only `sync()` is available.
    #[serde(default = "yes")]
    pub use_binlog: bool,
    /// Whether a first start copies the tables' existing rows (as INSERT events) before it
    /// streams the changes made since it began (`initial`, the default) or only streams
    /// (`never`).
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Replica id this connector registers with; unique among the source's replicas and
    /// different from the source's own `server_id`. Default: derived from the connector id.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// Position by GTID when the server has GTIDs (MariaDB always; MySQL with `gtid_mode=ON`);
    /// false forces binlog file/offset positioning.
    #[serde(default = "yes")]
    pub use_gtid: bool,
    /// Largest batch handed to handlers (also `sync()`'s chunk size).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// How often the acknowledged position is persisted, in ms.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
    /// Seconds between server heartbeats on an idle binlog stream; a stream silent for three
    /// of them is reconnected.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: f64,
    /// Column for incremental `sync()`: each call yields rows whose value is greater than the
    /// largest seen by the previous call.
    #[serde(default)]
    pub timestamp_column: Option<String>,
}

fn default_port() -> u16 {
    3306
}
fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    1000
}
fn default_checkpoint_ms() -> u64 {
    200
}
fn default_heartbeat() -> f64 {
    5.0
}

/// A name MySQL accepts for a database, table or column: 1 to 64 characters, no NUL, not ending
/// in a space. Any other character is allowed (`my-table`, `order lines`): names are always
/// quoted with [`quote_ident`] or bound as parameters.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= 64 && !s.contains('\0') && !s.ends_with(' ')
}

/// `` `name` `` with embedded backquotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

impl MySqlConfig {
    pub fn new<T: Into<String>>(
        host: impl Into<String>,
        database: impl Into<String>,
        tables: impl IntoIterator<Item = T>,
    ) -> Self {
        MySqlConfig {
            host: host.into(),
            port: default_port(),
            database: database.into(),
            tables: tables.into_iter().map(Into::into).collect(),
            use_binlog: true,
            snapshot: SnapshotMode::Initial,
            server_id: None,
            use_gtid: true,
            batch_size: default_batch(),
            checkpoint_interval_ms: default_checkpoint_ms(),
            heartbeat_seconds: default_heartbeat(),
            timestamp_column: None,
        }
    }

    /// Parses and validates the API's `config` object; errors name the field (`config.x`).
    pub fn from_json(v: &Value) -> Result<Self, CdcError> {
        let cfg: MySqlConfig = crate::error::parse_config(v)?;
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
                "must be a database name: 1 to 64 characters, no NUL, not ending in a space",
            ));
        }
        if self.tables.is_empty() {
            return Err(CdcError::config("config.tables", "name at least one table"));
        }
        for (i, t) in self.tables.iter().enumerate() {
            if !is_identifier(t) {
                return Err(CdcError::config(
                    &format!("config.tables[{i}]"),
                    "must be a table name of `database`: 1 to 64 characters, no NUL, not ending in \
                     a space",
                ));
            }
            if self.tables[..i].contains(t) {
                return Err(CdcError::config(
                    &format!("config.tables[{i}]"),
                    format!("{t} is listed twice"),
                ));
            }
        }
        if self.server_id == Some(0) {
            return Err(CdcError::config(
                "config.server_id",
                "must be 1 to 4294967295 (0 is not a valid replica id)",
            ));
        }
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(CdcError::config("config.batch_size", "must be 1 to 100000"));
        }
        if !(1..=600_000).contains(&self.checkpoint_interval_ms) {
            return Err(CdcError::config(
                "config.checkpoint_interval_ms",
                "must be 1 to 600000",
            ));
        }
        if !(self.heartbeat_seconds >= 0.1 && self.heartbeat_seconds <= 3600.0) {
            return Err(CdcError::config(
                "config.heartbeat_seconds",
                "must be 0.1 to 3600",
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

    /// The replica id: configured, or derived from the connector id (stable, in 1000..2^31).
    pub fn server_id_for(&self, connector_id: &str) -> u32 {
        self.server_id.unwrap_or_else(|| {
            let id = crate::event_id(connector_id, "server_id");
            let n = u32::from_str_radix(&id[4..12], 16).unwrap_or(0);
            1000 + n % (i32::MAX as u32 - 1000)
        })
    }

    pub(crate) fn opts(&self, user: &str, password: Option<&str>) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(user.to_string()))
            .pass(password.map(str::to_string))
            .db_name(Some(self.database.clone()))
            .prefer_socket(false)
            .into()
    }
}

/// What the source server is and how it is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: String,
    pub server_id: u32,
    pub log_bin: bool,
    pub binlog_format: String,
    pub binlog_row_image: String,
    pub binlog_row_metadata: Option<String>,
    /// MySQL `gtid_mode` is ON (MariaDB always has GTIDs).
    pub gtid_available: bool,
    /// `binlog_checksum` is not NONE: events carry a CRC32.
    pub checksum: bool,
}

pub(crate) async fn connect(opts: &Opts) -> Result<Conn, CdcError> {
    match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts.clone())).await {
        Ok(r) => r.map_err(|e| CdcError::Source(format!("connecting: {e}"))),
        Err(_) => Err(CdcError::Source("connecting: timed out after 10s".into())),
    }
}

async fn scalar(conn: &mut Conn, sql: &str) -> Result<Option<String>, CdcError> {
    let row: Option<Row> = conn.query_first(sql).await?;
    Ok(row.and_then(|r| {
        r.get_opt::<Option<String>, _>(0)
            .and_then(|v| v.ok())
            .flatten()
    }))
}

pub(crate) async fn server_info(conn: &mut Conn) -> Result<ServerInfo, CdcError> {
    let row: Row = conn
        .query_first(
            "SELECT VERSION(), @@GLOBAL.server_id, @@GLOBAL.log_bin, @@GLOBAL.binlog_format, \
             @@GLOBAL.binlog_row_image",
        )
        .await?
        .ok_or_else(|| CdcError::Source("server variables: no row".into()))?;
    let get = |i: usize| -> String {
        row.get_opt::<Option<String>, _>(i)
            .and_then(|v| v.ok())
            .flatten()
            .unwrap_or_default()
    };
    let version = get(0);
    let flavor = Flavor::detect(&version);
    let metadata = scalar(conn, "SELECT @@GLOBAL.binlog_row_metadata")
        .await
        .ok()
        .flatten();
    let checksum = scalar(conn, "SELECT @@GLOBAL.binlog_checksum")
        .await
        .ok()
        .flatten()
        .is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
    let gtid_available = match flavor {
        Flavor::Mariadb => true,
        Flavor::Mysql => scalar(conn, "SELECT @@GLOBAL.gtid_mode")
            .await
            .ok()
            .flatten()
            .is_some_and(|m| m.eq_ignore_ascii_case("ON")),
    };
    Ok(ServerInfo {
        flavor,
        server_id: get(1).parse().unwrap_or(0),
        log_bin: matches!(get(2).as_str(), "1" | "ON"),
        binlog_format: get(3),
        binlog_row_image: get(4),
        binlog_row_metadata: metadata,
        version,
        gtid_available,
        checksum,
    })
}

/// Start-up checks, each with the fix in its message.
pub(crate) async fn validate_source(
    conn: &mut Conn,
    info: &ServerInfo,
    server_id: u32,
    hostname: &str,
) -> Result<(), CdcError> {
    if !info.log_bin {
        return Err(CdcError::Source(
            "binary logging is off on the source: start it with --log-bin (and \
             --binlog-format=ROW --binlog-row-image=FULL)"
                .into(),
        ));
    }
    if !info.binlog_format.eq_ignore_ascii_case("ROW") {
        return Err(CdcError::Source(format!(
            "binlog_format is {} on the source; CDC needs row events: SET GLOBAL binlog_format = \
             'ROW' (and in the server configuration)",
            info.binlog_format
        )));
    }
    if !info.binlog_row_image.eq_ignore_ascii_case("FULL") {
        return Err(CdcError::Source(format!(
            "binlog_row_image is {} on the source; CDC needs whole rows: SET GLOBAL \
             binlog_row_image = 'FULL'",
            info.binlog_row_image
        )));
    }
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let global: Vec<String> = grants
        .iter()
        .map(|g| g.to_ascii_uppercase())
        .filter(|g| g.contains(" ON *.* "))
        .collect();
    let has = |p: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(p))
    };
    let mut missing = Vec::new();
    if !has("REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE");
    }
    if !(has("REPLICATION CLIENT") || has("BINLOG MONITOR") || has("SUPER")) {
        missing.push("REPLICATION CLIENT");
    }
    if !missing.is_empty() {
        return Err(CdcError::Source(format!(
            "the connector's user lacks {}: GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* \
             TO the user",
            missing.join(" and ")
        )));
    }
    if server_id == info.server_id {
        return Err(CdcError::config(
            "config.server_id",
            format!(
                "{server_id} is the source's own server_id; choose an id no server or replica uses"
            ),
        ));
    }
    // Another replica registered with our id would be disconnected by ours (and vice versa).
    // Our own earlier registration (same hostname tag) may linger for a moment after a stop.
    let hosts: Result<Vec<Row>, _> = conn.query("SHOW SLAVE HOSTS").await;
    if let Ok(hosts) = hosts {
        for h in hosts {
            let id: Option<u32> = h.get_opt(0).and_then(|v| v.ok());
            let host: String = h
                .get_opt::<Option<String>, _>(1)
                .and_then(|v| v.ok())
                .flatten()
                .unwrap_or_default();
            if id == Some(server_id) && host != hostname {
                return Err(duplicate_server_id(server_id, &format!("host `{host}`")));
            }
        }
    }
    // Without REPLICATION MASTER ADMIN (MariaDB ≥ 10.5.2) the list is refused; then a duplicate
    // shows when the source refuses the dump (`stream::dump_error`), and the session stops.
    Ok(())
}

/// The configuration error for a `server_id` another replica of the source uses.
pub(crate) fn duplicate_server_id(server_id: u32, detail: &str) -> CdcError {
    CdcError::config(
        "config.server_id",
        format!(
            "{server_id} is already used by a replica of the source ({detail}); server_id must \
             be unique: give this connector an id no other replica or connector of the source uses"
        ),
    )
}

/// The source's current end of binlog as a token (nothing acknowledged past it yet).
pub(crate) async fn current_position(
    conn: &mut Conn,
    info: &ServerInfo,
    use_gtid: bool,
) -> Result<ResumeToken, CdcError> {
    let status: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(r) => r,
        Err(_) => conn.query_first("SHOW BINARY LOG STATUS").await?,
    };
    let row = status.ok_or_else(|| {
        CdcError::Source("SHOW MASTER STATUS returned nothing: binary logging is off".into())
    })?;
    let file: String = row
        .get_opt(0)
        .and_then(|v| v.ok())
        .ok_or_else(|| CdcError::Source("SHOW MASTER STATUS: no file".into()))?;
    let pos: u64 = row
        .get_opt(1)
        .and_then(|v| v.ok())
        .ok_or_else(|| CdcError::Source("SHOW MASTER STATUS: no position".into()))?;
    let gtid = if !(use_gtid && info.gtid_available) {
        String::new()
    } else {
        match info.flavor {
            // The GTID state exactly at that file/offset.
            Flavor::Mariadb => {
                let row: Option<Row> = conn
                    .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), pos))
                    .await?;
                row.and_then(|r| r.get_opt::<Option<String>, _>(0).and_then(|v| v.ok()))
                    .flatten()
                    .unwrap_or_default()
            }
            // Executed_Gtid_Set of the same row.
            Flavor::Mysql => row
                .get_opt::<Option<String>, _>(4)
                .and_then(|v| v.ok())
                .flatten()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect(),
        }
    };
    Ok(ResumeToken {
        flavor: info.flavor,
        gtid,
        file,
        pos,
        partial: None,
        snapshot: None,
    })
}

/// The documented way out when the source no longer has what the checkpoint needs.
pub const RESYNC_HINT: &str = "the changes since the checkpoint are lost; re-sync: delete and \
     re-create the connector (from Rust: `CheckpointStore::reset`): its next start copies the \
     tables again (snapshot: initial) and streams from the current binlog end (with snapshot: \
     never, run sync() to re-read the tables)";

/// Fails when the binlog the token needs was purged.
pub(crate) async fn check_not_purged(conn: &mut Conn, token: &ResumeToken) -> Result<(), CdcError> {
    let logs: Vec<Row> = conn.query("SHOW BINARY LOGS").await?;
    let files: Vec<String> = logs
        .iter()
        .filter_map(|r| r.get_opt::<String, _>(0).and_then(|v| v.ok()))
        .collect();
    let purged = |what: String| {
        Err(CdcError::Source(format!(
            "resume position purged: {what}; {RESYNC_HINT}"
        )))
    };
    if token.flavor == Flavor::Mysql && !token.gtid.is_empty() {
        let purged_set = scalar(conn, "SELECT @@GLOBAL.gtid_purged")
            .await?
            .unwrap_or_default();
        let have = MysqlGtidSet::parse(&token.gtid).map_err(CdcError::Checkpoint)?;
        let gone = MysqlGtidSet::parse(&purged_set).map_err(CdcError::Source)?;
        if !have.is_superset(&gone) {
            return purged(format!(
                "the source purged GTIDs {gone} but the checkpoint has only {have}"
            ));
        }
        return Ok(());
    }
    if !files.contains(&token.file) {
        let first = files.first().cloned().unwrap_or_default();
        return purged(format!(
            "binlog file {} (checkpoint at offset {}) is no longer on the source (oldest is {first})",
            token.file, token.pos
        ));
    }
    if token.flavor == Flavor::Mariadb
        && !token.gtid.is_empty()
        && let Some(first) = files.first()
    {
        // The oldest binlog must not start past our GTID position in any domain.
        let start: Option<Row> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, 4)", (first.clone(),))
            .await?;
        let start = start
            .and_then(|r| r.get_opt::<Option<String>, _>(0).and_then(|v| v.ok()))
            .flatten()
            .unwrap_or_default();
        let start = MariaGtidList::parse(&start).map_err(CdcError::Source)?;
        let have = MariaGtidList::parse(&token.gtid).map_err(CdcError::Checkpoint)?;
        for (d, (_, seq)) in &start.domains {
            if have.domains.get(d).is_some_and(|(_, s)| s < seq) {
                return purged(format!(
                    "the oldest binlog {first} starts after GTID {d}-*-{seq}, past the checkpoint's {have}"
                ));
            }
        }
    }
    Ok(())
}

/// Columns and primary keys of `tables` from information_schema (current definitions).
pub(crate) async fn load_tables(
    conn: &mut Conn,
    database: &str,
    tables: &[String],
) -> Result<HashMap<String, Arc<TableMeta>>, CdcError> {
    let mut out = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        match load_table(conn, database, t).await? {
            Some(m) if m.primary_key.is_empty() => {
                return Err(CdcError::config(
                    &format!("config.tables[{i}]"),
                    format!("table {database}.{t} has no primary key; CDC keys rows by it"),
                ));
            }
            Some(m) => {
                out.insert(t.clone(), Arc::new(m));
            }
            None => {
                return Err(CdcError::config(
                    &format!("config.tables[{i}]"),
                    format!("table {database}.{t} does not exist (or the user cannot see it)"),
                ));
            }
        }
    }
    Ok(out)
}

pub(crate) async fn load_table(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<Option<TableMeta>, CdcError> {
    let cols: Vec<(String, String, String)> = conn
        .exec(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR), \
             CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await?;
    if cols.is_empty() {
        return Ok(None);
    }
    let pk: Vec<String> = conn
        .exec(
            "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
             ORDER BY SEQ_IN_INDEX",
            (database, table),
        )
        .await?;
    Ok(Some(TableMeta {
        name: table.to_string(),
        columns: cols
            .into_iter()
            .map(|(name, data_type, column_type)| ColumnMeta {
                labels: if data_type == "enum" || data_type == "set" {
                    decode::parse_labels(&column_type)
                } else {
                    Vec::new()
                },
                unsigned: column_type.to_ascii_lowercase().contains("unsigned"),
                name,
                data_type,
            })
            .collect(),
        primary_key: pk,
    }))
}

/// What the background task needs.
pub(crate) struct Ctx {
    pub id: String,
    pub config: MySqlConfig,
    pub opts: Opts,
    pub server_id: u32,
    pub handlers: Handlers,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub status: Arc<Status>,
    pub extra: Arc<Mutex<Extra>>,
}

/// MySQL-specific state shown by `health_check()`.
#[derive(Debug, Default, Clone)]
pub struct Extra {
    pub flavor: Option<Flavor>,
    pub version: Option<String>,
    pub positioning: Option<&'static str>,
    /// Position read up to (not necessarily acknowledged).
    pub read_file: Option<String>,
    pub read_pos: Option<u64>,
    pub last_schema_change: Option<Value>,
    /// Header time of the last binlog event read, Unix seconds.
    pub last_event_time: Option<i64>,
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

    /// The tag this connector registers with (`SHOW SLAVE HOSTS` shows it as the host).
    pub(crate) fn hostname(&self) -> String {
        let tail: String = self
            .id
            .chars()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("aragora-cdc-{tail}")
    }
}

/// The MySQL / MariaDB connector (the guide's `MySQLConnector`).
pub struct MySqlConnector {
    id: String,
    config: MySqlConfig,
    user: String,
    password: Option<String>,
    handlers: Handlers,
    checkpoints: RwLock<Arc<dyn CheckpointStore>>,
    status: Arc<Status>,
    extra: Arc<Mutex<Extra>>,
    task: TaskSlot,
    sync_marks: Mutex<Map<String, Value>>,
}

impl MySqlConnector {
    /// A connector with in-memory checkpoints (see [`with_checkpoints`](Self::with_checkpoints)).
    /// `user`/`password` are the guide's `credentials`.
    pub fn new(
        id: impl Into<String>,
        config: MySqlConfig,
        user: impl Into<String>,
        password: Option<String>,
    ) -> Result<Self, CdcError> {
        config.validate()?;
        let user = user.into();
        if user.is_empty() {
            return Err(CdcError::config(
                "credentials.username",
                "must not be empty",
            ));
        }
        Ok(MySqlConnector {
            id: id.into(),
            config,
            user,
            password,
            handlers: Arc::new(RwLock::new(Vec::new())),
            checkpoints: RwLock::new(Arc::new(MemoryCheckpoints::new())),
            status: Arc::new(Status::default()),
            extra: Arc::new(Mutex::new(Extra::default())),
            task: TaskSlot::new(),
            sync_marks: Mutex::new(Map::new()),
        })
    }

    /// Persists checkpoints in `store` instead of memory.
    pub fn with_checkpoints(self, store: Arc<dyn CheckpointStore>) -> Self {
        *self.checkpoints.write() = store;
        self
    }

    pub fn config(&self) -> &MySqlConfig {
        &self.config
    }

    fn opts(&self) -> Opts {
        self.config.opts(&self.user, self.password.as_deref())
    }

    fn ctx(&self) -> Arc<Ctx> {
        Arc::new(Ctx {
            id: self.id.clone(),
            config: self.config.clone(),
            opts: self.opts(),
            server_id: self.config.server_id_for(&self.id),
            handlers: self.handlers.clone(),
            checkpoints: self.checkpoints.read().clone(),
            status: self.status.clone(),
            extra: self.extra.clone(),
        })
    }

    /// The guide's `start_binlog_cdc()`.
    pub async fn start_binlog_cdc(&self) -> Result<(), CdcError> {
        self.start().await
    }

    /// The guide's `stop_binlog_cdc()`.
    pub async fn stop_binlog_cdc(&self) -> Result<(), CdcError> {
        self.stop().await
    }

    /// Waits until the background task ends (after a fatal error such as a lost lease, or stop).
    pub async fn finished(&self) {
        self.task.finished().await
    }
}

#[async_trait]
impl Connector for MySqlConnector {
    fn connector_id(&self) -> &str {
        &self.id
    }

    fn source_type(&self) -> CdcSourceType {
        CdcSourceType::Mysql
    }

    fn add_change_handler(&self, handler: Arc<dyn ChangeHandler>) {
        self.handlers.write().push(handler);
    }

    async fn start(&self) -> Result<(), CdcError> {
        if !self.config.use_binlog {
            return Err(CdcError::config(
                "config.use_binlog",
                "is false: binlog capture is off for this connector (only sync() is available)",
            ));
        }
        self.task
            .start(&self.handlers, &self.status, |stop| async move {
                let ctx = self.ctx();
                let prepared = stream::prepare(&ctx).await?;
                Ok(tokio::spawn(async move {
                    stream::run(ctx, prepared, stop).await
                }))
            })
            .await
    }

    async fn stop(&self) -> Result<(), CdcError> {
        self.task.stop(&self.status, |_| false).await;
        Ok(())
    }

    fn sync(&self) -> BoxStream<'_, Result<SyncRow, CdcError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let opts = self.opts();
        let cfg = self.config.clone();
        let marks = self.sync_marks.lock().clone();
        let task = tokio::spawn(async move { scan::sync_rows(opts, cfg, marks, tx).await });
        let stream = futures::stream::unfold((rx, Some(task)), |(mut rx, task)| async move {
            rx.recv().await.map(|item| (item, (rx, task)))
        });
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
        details.insert("database".into(), json!(self.config.database));
        details.insert("tables".into(), json!(self.config.tables));
        details.insert(
            "server_id".into(),
            json!(self.config.server_id_for(&self.id)),
        );
        details.insert("snapshot".into(), json!(self.config.snapshot));
        // What a session of this process read (fresher than the copy in the status details).
        // Left out when unknown here, so that the server's report of the node running the
        // connector shows through a probe's answer.
        let extra = self.extra.lock().clone();
        if let Some(f) = &extra.read_file {
            details.insert("read_file".into(), json!(f));
            details.insert("read_pos".into(), json!(extra.read_pos));
        }
        if let Some(c) = &extra.last_schema_change {
            details.insert("last_schema_change".into(), c.clone());
        }
        let store = self.checkpoints.read().clone();
        let stored = store.load(&self.id).await.ok().flatten();
        // The stored checkpoint, else the one this process last persisted.
        let checkpoint = stored
            .filter(|c| !c.resume_token.is_empty())
            .or_else(|| self.status.last_checkpoint());
        let snapshot_done = checkpoint.as_ref().is_some_and(|c| c.snapshot_done);
        if checkpoint.is_some() {
            details.insert("snapshot_done".into(), json!(snapshot_done));
        }
        let checkpoint = checkpoint.and_then(|c| ResumeToken::parse(&c.resume_token).ok());
        if let Some(t) = &checkpoint {
            details.insert(
                "checkpoint".into(),
                json!({"file": t.file, "pos": t.pos, "gtid": t.gtid}),
            );
        }
        let probe = async {
            let mut conn = connect(&self.opts()).await?;
            conn.query_drop("SELECT 1").await?;
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            let info = server_info(&mut conn).await?;
            let pos = current_position(&mut conn, &info, self.config.use_gtid).await?;
            // A table that is gone (or lost its primary key) stops a start: say so here too.
            let tables_error = load_tables(&mut conn, &self.config.database, &self.config.tables)
                .await
                .err()
                .map(|e| e.to_string());
            let _ = conn.disconnect().await;
            Ok::<_, CdcError>((latency, info, pos, tables_error))
        };
        let mut config_ok = true;
        let (reachable, latency_ms) =
            match tokio::time::timeout(Duration::from_secs(10), probe).await {
                Ok(Ok((latency, info, pos, tables_error))) => {
                    if let Some(e) = tables_error {
                        details.insert("tables_error".into(), json!(e));
                        config_ok = false;
                    }
                    // A start refuses the source's own server_id: say so here too.
                    let server_id = self.config.server_id_for(&self.id);
                    if server_id == info.server_id {
                        details.insert(
                            "server_id_error".into(),
                            json!(format!(
                                "config.server_id: {server_id} is the source's own server_id"
                            )),
                        );
                        config_ok = false;
                    }
                    // The running session's positioning; a probe (no session) reports what a
                    // session would use.
                    let positioning = extra.positioning.unwrap_or(
                        if self.config.use_gtid && info.gtid_available {
                            "gtid"
                        } else {
                            "file_position"
                        },
                    );
                    details.insert("positioning".into(), json!(positioning));
                    details.insert("flavor".into(), json!(info.flavor));
                    details.insert("server_version".into(), json!(info.version));
                    details.insert(
                        "binlog_row_metadata".into(),
                        json!(info.binlog_row_metadata),
                    );
                    details.insert(
                        "server_position".into(),
                        json!({"file": pos.file, "pos": pos.pos, "gtid": pos.gtid}),
                    );
                    // Bytes of binlog past the checkpoint (null when they are in different files).
                    let lag_bytes = checkpoint
                        .as_ref()
                        .and_then(|t| (t.file == pos.file).then(|| pos.pos.saturating_sub(t.pos)));
                    details.insert("lag_bytes".into(), json!(lag_bytes));
                    // Everything the source has written is acknowledged: the same offset in
                    // the same file, or the same GTID position, and the snapshot finished.
                    // A snapshot still being copied is not caught up, wherever its position.
                    let caught_up = snapshot_done
                        && checkpoint.as_ref().is_some_and(|t| {
                            t.partial.is_none()
                                && (lag_bytes == Some(0)
                                    || (!t.gtid.is_empty() && t.gtid == pos.gtid))
                        });
                    details.insert("caught_up".into(), json!(caught_up));
                    if let Some(ts) = extra.last_event_time {
                        let behind = (aragora_core::time::now_ms() / 1000 - ts).max(0);
                        details.insert("seconds_since_last_binlog_event".into(), json!(behind));
                        details.insert(
                            "last_binlog_event_at".into(),
                            json!(aragora_core::time::rfc3339(ts * 1000)),
                        );
                    }
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
            healthy: reachable && config_ok && self.status.healthy(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        let err = |v: Value| match MySqlConfig::from_json(&v) {
            Err(CdcError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let ok = json!({"host": "db", "database": "app", "tables": ["users"]});
        let cfg = MySqlConfig::from_json(&ok).unwrap();
        assert_eq!(cfg.port, 3306);
        assert!(cfg.use_binlog);
        assert_eq!(
            err(json!({"host": "db", "tables": ["t"]})),
            "config.database"
        );
        for bad in ["", "trailing ", "nul\u{0}", &"x".repeat(65)] {
            assert_eq!(
                err(json!({"host": "db", "database": "app", "tables": ["ok", bad]})),
                "config.tables[1]",
                "{bad:?}"
            );
        }
        // Names MySQL accepts when quoted are accepted.
        let cfg = MySqlConfig::from_json(
            &json!({"host": "db", "database": "my-app", "tables": ["my-table", "order lines", "a`b"]}),
        )
        .unwrap();
        assert_eq!(cfg.tables[2], "a`b");
        assert_eq!(
            err(json!({"host": "db", "database": "app", "tables": ["t"], "server_id": 0})),
            "config.server_id"
        );
        assert_eq!(
            err(json!({"host": "db", "database": "app", "tables": ["t"], "bogus": 1})),
            "config.bogus"
        );
        assert_eq!(
            err(json!({"host": "", "database": "app", "tables": ["t"]})),
            "config.host"
        );
        assert_eq!(
            err(json!({"host": "h", "database": "app", "tables": []})),
            "config.tables"
        );
        assert_eq!(cfg.snapshot, SnapshotMode::Initial, "snapshots by default");
        let never = MySqlConfig::from_json(
            &json!({"host": "db", "database": "app", "tables": ["t"], "snapshot": "never"}),
        )
        .unwrap();
        assert_eq!(never.snapshot, SnapshotMode::Never);
        assert_eq!(
            err(json!({"host": "db", "database": "app", "tables": ["t"], "snapshot": "always"})),
            "config.snapshot"
        );
    }

    #[test]
    fn same_server_id_errors_are_recognised() {
        assert!(stream::is_same_server_id_error(
            Some(4052),
            "A slave with the same server_uuid/server_id as this slave has already connected to \
             the master"
        ));
        // MySQL: 1236 with the same text.
        assert!(stream::is_same_server_id_error(
            Some(1236),
            "ERROR 1236 (HY000): A replica with the same server_uuid/server_id as this replica \
             has connected to the source; the first one will be disconnected"
        ));
        assert!(!stream::is_same_server_id_error(
            Some(1236),
            "Could not find first log file name in binary log index file"
        ));
        let e = duplicate_server_id(7, "host `x`").to_string();
        assert!(
            e.starts_with("config.server_id: 7 is already used by a replica of the source")
                && e.contains("must be unique"),
            "{e}"
        );
    }

    #[test]
    fn derived_server_ids_are_stable_and_in_range() {
        let c = MySqlConfig::new("h", "d", ["t"]);
        let a = c.server_id_for("conn-1");
        assert_eq!(a, c.server_id_for("conn-1"));
        assert_ne!(a, c.server_id_for("conn-2"));
        assert!(a >= 1000 && a < i32::MAX as u32);
        let mut c2 = c.clone();
        c2.server_id = Some(100);
        assert_eq!(c2.server_id_for("conn-1"), 100);
    }
}
