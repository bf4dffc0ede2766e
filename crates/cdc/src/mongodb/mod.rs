//! The MongoDB connector: change streams through the official driver.
//!
//! One database-level change stream per connector (filtered with `$match` to the listed
//! collections, or the whole database): `documentKey` → `primary_key`, `fullDocument` by update
//! lookup → `data`, pre-images (`fullDocumentBeforeChange`, where the collection has
//! `changeStreamPreAndPostImages` enabled) → `old_data`. The resume token is persisted only
//! after every handler acknowledged the events before it — including the post-batch token of a
//! quiet stream, so a connector idle for days does not fall off the oplog — and capture resumes
//! with `startAfter`. A lost history (error 286) stops capture with the way out (re-sync);
//! `drop`/`rename`/`dropDatabase`/`invalidate` become notices in `health_check()`.
//!
//! A first start snapshots the collections in `_id` order (`snapshot: initial`) after taking the
//! stream's position, then streams from that position: no gap (changes made during the copy may
//! arrive twice; handlers are idempotent).

pub mod event;
pub mod source;

/// The official driver, for callers that need it next to the connector (tests, benchmarks).
pub use ::mongodb as driver;
mod stream;

pub use event::{Change, Mapped, NoticeKind, map_event, parse_token, to_json_map, token_text};
pub use source::{
    ChangeCursor, ChangeSource, DriverSource, FullDocument, PreImages, StreamError, WatchPlan,
};

use crate::SnapshotMode;
use crate::connector::{Connector, HealthReport, SyncRow};
use crate::pipeline::{Dispatcher, Handlers, Status};
use crate::runner::TaskSlot;
use crate::{CdcError, CdcSourceType, ChangeHandler, CheckpointStore, MemoryCheckpoints};
use ::mongodb::bson::{Bson, Document};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of a MongoDB connector (the `config` object of `POST /api/v1/connectors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoConfig {
    /// `mongodb://host1,host2/?replicaSet=rs0` or `mongodb+srv://…`, without a password (put it
    /// in the connector's credentials). Change streams need a replica set or sharded cluster.
    pub uri: String,
    pub database: String,
    /// Collections to watch; empty: every collection of the database (also ones created later).
    #[serde(default)]
    pub collections: Vec<String>,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// `fullDocument` for updates: `updateLookup` (default), `whenAvailable`, `required`,
    /// `default`.
    #[serde(default)]
    pub full_document: FullDocument,
    /// `fullDocumentBeforeChange`: `whenAvailable` (default), `required`, `off`.
    #[serde(default)]
    pub full_document_before_change: PreImages,
    /// Largest batch handed to handlers (also the change stream's `batchSize`).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// How long one `getMore` waits for changes (ms): how often a quiet stream's position moves.
    #[serde(default = "default_max_await")]
    pub max_await_ms: u64,
    /// Documents per round trip of `sync()` and the snapshot.
    #[serde(default = "default_batch")]
    pub sync_chunk_size: usize,
    /// How often the acknowledged position is persisted, in ms.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
    /// How long to look for a usable server before an operation fails, in ms.
    #[serde(default = "default_selection_ms")]
    pub server_selection_timeout_ms: u64,
    /// Database holding the user's credentials (default: the URI's `authSource`, else `admin`).
    #[serde(default)]
    pub auth_source: Option<String>,
}

fn default_batch() -> usize {
    1000
}
fn default_max_await() -> u64 {
    1000
}
fn default_checkpoint_ms() -> u64 {
    200
}
fn default_selection_ms() -> u64 {
    10_000
}

/// MongoDB's rules for database names, less the platform-specific ones.
fn valid_database(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 64
        && !s
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
}

fn valid_collection(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with("system.")
        && !s.contains('$')
        && !s.contains('\0')
}

impl MongoConfig {
    pub fn new<T: Into<String>>(
        uri: impl Into<String>,
        database: impl Into<String>,
        collections: impl IntoIterator<Item = T>,
    ) -> Self {
        MongoConfig {
            uri: uri.into(),
            database: database.into(),
            collections: collections.into_iter().map(Into::into).collect(),
            snapshot: SnapshotMode::Initial,
            full_document: FullDocument::UpdateLookup,
            full_document_before_change: PreImages::WhenAvailable,
            batch_size: default_batch(),
            max_await_ms: default_max_await(),
            sync_chunk_size: default_batch(),
            checkpoint_interval_ms: default_checkpoint_ms(),
            server_selection_timeout_ms: default_selection_ms(),
            auth_source: None,
        }
    }

    /// Parses and validates the API's `config` object; errors name the field (`config.x`).
    pub fn from_json(v: &Value) -> Result<Self, CdcError> {
        let cfg: MongoConfig = crate::error::parse_config(v)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), CdcError> {
        let uri = self.uri.trim();
        let Some(rest) = uri
            .strip_prefix("mongodb://")
            .or_else(|| uri.strip_prefix("mongodb+srv://"))
        else {
            return Err(CdcError::config(
                "config.uri",
                "must start with mongodb:// or mongodb+srv://",
            ));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.is_empty() {
            return Err(CdcError::config("config.uri", "names no host"));
        }
        let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        for host in hosts.split(',') {
            let port = if host.starts_with('[') {
                host.split_once("]:").map(|(_, p)| p)
            } else {
                host.rsplit_once(':').map(|(_, p)| p)
            };
            if host.is_empty() || port.is_some_and(|p| !matches!(p.parse::<u16>(), Ok(1..))) {
                return Err(CdcError::config(
                    "config.uri",
                    format!("`{host}` is not host or host:port (port 1 to 65535)"),
                ));
            }
        }
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(CdcError::config(
                "config.uri",
                "must not contain a password: put it in credentials (password_env or \
                 password_file) and the user in credentials.username",
            ));
        }
        if !valid_database(&self.database) {
            return Err(CdcError::config(
                "config.database",
                "must be a MongoDB database name (1 to 63 characters, none of / \\ . space \" $)",
            ));
        }
        for (i, c) in self.collections.iter().enumerate() {
            if !valid_collection(c) {
                return Err(CdcError::config(
                    &format!("config.collections[{i}]"),
                    "must be a collection name (not empty, no `$`, not system.*)",
                ));
            }
            if self.collections[..i].contains(c) {
                return Err(CdcError::config(
                    &format!("config.collections[{i}]"),
                    format!("`{c}` is listed twice"),
                ));
            }
        }
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(CdcError::config("config.batch_size", "must be 1 to 100000"));
        }
        if self.sync_chunk_size == 0 || self.sync_chunk_size > 100_000 {
            return Err(CdcError::config(
                "config.sync_chunk_size",
                "must be 1 to 100000",
            ));
        }
        if !(10..=60_000).contains(&self.max_await_ms) {
            return Err(CdcError::config(
                "config.max_await_ms",
                "must be 10 to 60000",
            ));
        }
        if !(1..=600_000).contains(&self.checkpoint_interval_ms) {
            return Err(CdcError::config(
                "config.checkpoint_interval_ms",
                "must be 1 to 600000",
            ));
        }
        if !(100..=300_000).contains(&self.server_selection_timeout_ms) {
            return Err(CdcError::config(
                "config.server_selection_timeout_ms",
                "must be 100 to 300000",
            ));
        }
        if let Some(a) = &self.auth_source
            && !valid_database(a)
        {
            return Err(CdcError::config(
                "config.auth_source",
                "must be a database name",
            ));
        }
        Ok(())
    }

    pub fn plan(&self) -> WatchPlan {
        WatchPlan {
            database: self.database.clone(),
            collections: self.collections.clone(),
            full_document: self.full_document,
            pre_images: self.full_document_before_change,
            batch_size: self.batch_size as u32,
            max_await: Duration::from_millis(self.max_await_ms),
        }
    }
}

/// A structural event seen on the stream (drop, rename, dropDatabase, invalidate).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub message: String,
    /// RFC 3339.
    pub at: String,
    pub resume_token: String,
}

/// How many notices health reports keep.
pub const NOTICES_KEPT: usize = 20;

/// Stream position and notices, beyond the shared [`Status`].
#[derive(Default)]
pub(crate) struct MongoState {
    notices: VecDeque<Notice>,
    last_cluster_time: Option<(u32, u32)>,
    last_event_time_ms: Option<i64>,
    history_lost: bool,
}

/// What the background task needs.
pub(crate) struct Ctx {
    pub id: String,
    pub config: MongoConfig,
    pub source: Arc<dyn ChangeSource>,
    pub handlers: Handlers,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub status: Arc<Status>,
    pub state: Arc<Mutex<MongoState>>,
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

    pub(crate) fn notice(&self, kind: NoticeKind, message: String, token: &Document) {
        tracing::warn!(connector = %self.id, kind = kind.as_str(), "{message}");
        metrics::counter!("aragora_cdc_notices_total", "connector" => self.id.clone(), "kind" => kind.as_str())
            .increment(1);
        if matches!(kind, NoticeKind::Drop | NoticeKind::Rename) {
            self.status.schema_changed();
        }
        let mut s = self.state.lock();
        if s.notices.len() == NOTICES_KEPT {
            s.notices.pop_front();
        }
        s.notices.push_back(Notice {
            kind,
            message,
            at: aragora_core::time::rfc3339(aragora_core::time::now_ms()),
            resume_token: token_text(token),
        });
        self.status.set_detail(
            "notices",
            serde_json::to_value(&s.notices).unwrap_or(Value::Null),
        );
    }

    /// Shows the position of the last change in the status details.
    pub(crate) fn publish_position(&self) {
        let s = self.state.lock();
        self.status.set_detail("stream_position", position_json(&s));
    }
}

fn position_json(s: &MongoState) -> Value {
    json!({
        "cluster_time": s.last_cluster_time.map(|(t, i)| json!({"t": t, "i": i})),
        "last_event_time": s.last_event_time_ms.map(aragora_core::time::rfc3339),
    })
}

/// The runtime details this connector adds to the shared status, at their initial values.
fn init_details(status: &Status, state: &MongoState) {
    status.set_detail("history_lost", json!(state.history_lost));
    status.set_detail("stream_position", position_json(state));
    status.set_detail(
        "notices",
        serde_json::to_value(&state.notices).unwrap_or(Value::Null),
    );
}

/// The message shown when the resume point fell off the oplog.
pub fn history_lost_message(detail: &str) -> String {
    format!(
        "change stream history lost (MongoDB error 286 ChangeStreamHistoryLost): the stored resume \
         token is older than the oldest oplog entry, so the changes made since the last checkpoint \
         cannot be recovered. Capture has stopped. Way out: re-sync — delete and re-create the \
         connector (or call resync() and start it again), which copies the collections again \
         (snapshot: initial) and streams from now; to avoid a repeat, enlarge the oplog \
         (replSetResizeOplog) or keep the connector from stopping for longer than the oplog \
         window. Server said: {detail}"
    )
}

/// The MongoDB connector.
pub struct MongoConnector {
    id: String,
    config: MongoConfig,
    source: Arc<dyn ChangeSource>,
    handlers: Handlers,
    checkpoints: RwLock<Arc<dyn CheckpointStore>>,
    status: Arc<Status>,
    state: Arc<Mutex<MongoState>>,
    task: TaskSlot,
}

impl MongoConnector {
    /// A connector on the official driver, with in-memory checkpoints (see
    /// [`with_checkpoints`](Self::with_checkpoints)). Does not contact the server.
    pub fn new(
        id: impl Into<String>,
        config: MongoConfig,
        username: Option<String>,
        password: Option<String>,
    ) -> Result<Self, CdcError> {
        config.validate()?;
        let source = DriverSource::new(
            &config.uri,
            username,
            password,
            config.auth_source.clone(),
            Duration::from_millis(config.server_selection_timeout_ms),
        );
        Ok(Self::with_source(id, config, Arc::new(source)))
    }

    /// A connector over any [`ChangeSource`] (tests script one).
    pub fn with_source(
        id: impl Into<String>,
        config: MongoConfig,
        source: Arc<dyn ChangeSource>,
    ) -> Self {
        let status = Arc::new(Status::default());
        let state = MongoState::default();
        init_details(&status, &state);
        MongoConnector {
            id: id.into(),
            config,
            source,
            handlers: Arc::new(RwLock::new(Vec::new())),
            checkpoints: RwLock::new(Arc::new(MemoryCheckpoints::new())),
            status,
            state: Arc::new(Mutex::new(state)),
            task: TaskSlot::new(),
        }
    }

    /// Persists checkpoints in `store` instead of memory.
    pub fn with_checkpoints(self, store: Arc<dyn CheckpointStore>) -> Self {
        *self.checkpoints.write() = store;
        self
    }

    pub fn config(&self) -> &MongoConfig {
        &self.config
    }

    /// The newest notices (drop, rename, dropDatabase, invalidate), oldest first.
    pub fn notices(&self) -> Vec<Notice> {
        self.state.lock().notices.iter().cloned().collect()
    }

    /// True after capture stopped because the oplog no longer holds the resume point.
    pub fn history_lost(&self) -> bool {
        self.state.lock().history_lost
    }

    /// The way out of a lost history: forgets the position (the connector must be stopped), so
    /// the next start snapshots again (with `snapshot: initial`) and streams from then on.
    pub async fn resync(&self) -> Result<(), CdcError> {
        if self.is_running().await {
            return Err(CdcError::State(
                "stop the connector before re-syncing".into(),
            ));
        }
        let store = self.checkpoints.read().clone();
        store.reset(&self.id).await?;
        self.state.lock().history_lost = false;
        self.status.set_detail("history_lost", json!(false));
        self.status.set_source_error(None);
        Ok(())
    }

    fn ctx(&self) -> Arc<Ctx> {
        Arc::new(Ctx {
            id: self.id.clone(),
            config: self.config.clone(),
            source: self.source.clone(),
            handlers: self.handlers.clone(),
            checkpoints: self.checkpoints.read().clone(),
            status: self.status.clone(),
            state: self.state.clone(),
        })
    }

    /// Waits until the background task ends (after a fatal error such as a lost history or a
    /// lost lease, or stop).
    pub async fn finished(&self) {
        self.task.finished().await
    }
}

#[async_trait]
impl Connector for MongoConnector {
    fn connector_id(&self) -> &str {
        &self.id
    }

    fn source_type(&self) -> CdcSourceType {
        CdcSourceType::Mongodb
    }

    fn add_change_handler(&self, handler: Arc<dyn ChangeHandler>) {
        self.handlers.write().push(handler);
    }

    async fn start(&self) -> Result<(), CdcError> {
        self.task
            .start(&self.handlers, &self.status, |stop| async move {
                let ctx = self.ctx();
                let prepared = match stream::prepare(&ctx).await {
                    Ok(p) => p,
                    Err(e) => {
                        if !self.history_lost() {
                            ctx.status.set_phase("stopped");
                        }
                        if let CdcError::Source(m) = &e {
                            ctx.status.set_source_error(Some(m.clone()));
                        }
                        return Err(e);
                    }
                };
                Ok(tokio::spawn(async move {
                    stream::run(ctx, prepared, stop).await
                }))
            })
            .await
    }

    async fn stop(&self) -> Result<(), CdcError> {
        self.task.stop(&self.status, |_| self.history_lost()).await;
        Ok(())
    }

    fn sync(&self) -> BoxStream<'_, Result<SyncRow, CdcError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let source = self.source.clone();
        let config = self.config.clone();
        let task = tokio::spawn(async move { stream::sync_rows(source, config, tx).await });
        futures::stream::unfold((rx, task), |(mut rx, task)| async move {
            rx.recv().await.map(|item| (item, (rx, task)))
        })
        .boxed()
    }

    async fn health_check(&self) -> HealthReport {
        let started = Instant::now();
        let mut details = self.status.details();
        details.insert("database".into(), json!(self.config.database));
        details.insert(
            "collections".into(),
            if self.config.collections.is_empty() {
                json!("*")
            } else {
                json!(self.config.collections)
            },
        );
        details.insert("full_document".into(), json!(self.config.full_document));
        details.insert(
            "full_document_before_change".into(),
            json!(self.config.full_document_before_change),
        );
        let probe = async {
            self.source.ping().await?;
            let latency = started.elapsed().as_secs_f64() * 1000.0;
            let hello = self.source.hello().await?;
            Ok::<_, StreamError>((latency, hello))
        };
        let timeout = Duration::from_millis(self.config.server_selection_timeout_ms.max(1000));
        let reachable = match tokio::time::timeout(timeout, probe).await {
            Ok(Ok((latency, hello))) => {
                details.extend(server_details(&hello));
                Some(latency)
            }
            Ok(Err(e)) => {
                details.insert("source_unreachable".into(), json!(e.to_string()));
                None
            }
            Err(_) => {
                details.insert(
                    "source_unreachable".into(),
                    json!(format!("timed out after {}ms", timeout.as_millis())),
                );
                None
            }
        };
        let latency_ms = reachable.unwrap_or_else(|| started.elapsed().as_secs_f64() * 1000.0);
        HealthReport {
            healthy: reachable.is_some() && self.status.healthy() && !self.history_lost(),
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

/// The parts of `hello` worth showing: topology, and whether change streams can work there.
fn server_details(hello: &Document) -> Map<String, Value> {
    let mut m = Map::new();
    let set = hello.get_str("setName").ok();
    let mongos = hello.get_str("msg").ok() == Some("isdbgrid");
    m.insert("replica_set".into(), json!(set));
    m.insert(
        "topology".into(),
        json!(if mongos {
            "sharded"
        } else if set.is_some() {
            "replica_set"
        } else {
            "standalone"
        }),
    );
    m.insert(
        "change_streams_supported".into(),
        json!(set.is_some() || mongos),
    );
    if let Ok(lw) = hello.get_document("lastWrite")
        && let Some(Bson::DateTime(t)) = lw.get("lastWriteDate")
    {
        m.insert(
            "last_write_at".into(),
            json!(aragora_core::time::rfc3339(t.timestamp_millis())),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Value {
        json!({"uri": "mongodb://db1:27017/?replicaSet=rs0", "database": "app", "collections": ["users"]})
    }

    fn field_of(v: Value) -> String {
        match MongoConfig::from_json(&v).unwrap_err() {
            CdcError::Config { field, .. } => field,
            e => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_and_plan() {
        let c = MongoConfig::from_json(&cfg()).unwrap();
        assert_eq!(c.full_document, FullDocument::UpdateLookup);
        assert_eq!(c.full_document_before_change, PreImages::WhenAvailable);
        assert_eq!(c.snapshot, SnapshotMode::Initial);
        assert_eq!(c.plan().pipeline().len(), 1);
        let mut whole = c.clone();
        whole.collections.clear();
        assert!(whole.plan().pipeline().is_empty());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let with = |k: &str, v: Value| {
            let mut c = cfg();
            c[k] = v;
            c
        };
        assert_eq!(field_of(with("uri", json!("postgres://x"))), "config.uri");
        assert_eq!(
            field_of(with("uri", json!("mongodb://u:pw@h/"))),
            "config.uri"
        );
        assert_eq!(field_of(with("uri", json!("mongodb:///db"))), "config.uri");
        assert_eq!(
            field_of(with("uri", json!("mongodb://h:99999/"))),
            "config.uri"
        );
        assert_eq!(
            field_of(with("uri", json!("mongodb://a:1,,b"))),
            "config.uri"
        );
        for ok in [
            "mongodb://[::1]:27017/",
            "mongodb://[::1]/",
            "mongodb://a,b:27018/?replicaSet=x",
        ] {
            MongoConfig::from_json(&with("uri", json!(ok))).unwrap();
        }
        assert_eq!(field_of(with("database", json!("a.b"))), "config.database");
        assert_eq!(field_of(with("database", json!(""))), "config.database");
        assert_eq!(
            field_of(with("collections", json!(["ok", "$bad"]))),
            "config.collections[1]"
        );
        assert_eq!(
            field_of(with("collections", json!(["a", "a"]))),
            "config.collections[1]"
        );
        assert_eq!(
            field_of(with("collections", json!(["system.profile"]))),
            "config.collections[0]"
        );
        assert_eq!(field_of(with("batch_size", json!(0))), "config.batch_size");
        assert_eq!(
            field_of(with("max_await_ms", json!(1))),
            "config.max_await_ms"
        );
        assert_eq!(field_of(with("bogus", json!(1))), "config.bogus");
        assert_eq!(field_of(json!({"database": "app"})), "config.uri");
        assert_eq!(
            field_of(with("full_document", json!("sometimes"))),
            "config.full_document"
        );
        // A user name alone in the URI is fine (the password comes from credentials).
        MongoConfig::from_json(&with("uri", json!("mongodb://cdc@h1,h2/?replicaSet=rs0"))).unwrap();
    }

    #[test]
    fn server_details_tell_topologies_apart() {
        use ::mongodb::bson::doc;
        let rs = server_details(&doc! { "setName": "rs0" });
        assert_eq!(rs["topology"], json!("replica_set"));
        assert_eq!(rs["change_streams_supported"], json!(true));
        let standalone = server_details(&doc! { "isWritablePrimary": true });
        assert_eq!(standalone["change_streams_supported"], json!(false));
        let mongos = server_details(&doc! { "msg": "isdbgrid" });
        assert_eq!(mongos["topology"], json!("sharded"));
    }
}
