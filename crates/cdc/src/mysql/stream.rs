//! The binlog reader: positions the dump (GTID or file/offset), tracks table maps, turns row
//! events into [`ChangeEvent`]s and hands them to the dispatcher in batches that end at commits.
//!
//! A transaction larger than four batches is delivered in pieces; the checkpoint then names the
//! transaction and how many of its rows were acknowledged, and a restart replays it from its
//! start, skipping those rows (same event ids).

use super::decode::{self, ColumnMeta, MariaGtid, TableMeta};
use super::gtid::{Flavor, MariaGtidList, MysqlGtidSet, ResumeToken, format_uuid};
use super::rows::Plan;
use super::scan::{self, TableScan};
use super::{
    Ctx, RESYNC_HINT, ServerInfo, check_not_purged, connect, current_position, load_table,
    load_tables, server_info, validate_source,
};
use crate::SnapshotMode;
use crate::pipeline::{Batch, send_batch, take_events};
use crate::runner::{SessionError, supervise};
use crate::{CdcError, CdcSourceType, ChangeEvent, ChangeOperation, Checkpoint, EventIdPrefix};
use futures::StreamExt;
use mysql_async::binlog::EventFlags;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetaExtractor, RowsEventData, TableMapEvent,
};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub(crate) struct Prepared {
    info: ServerInfo,
    token: ResumeToken,
    tables: HashMap<String, Arc<TableMeta>>,
    /// Copy the tables first (`snapshot: initial` and no finished snapshot yet), then stream
    /// from `token`, the position taken before the copy began.
    snapshot: bool,
}

/// Runs in `start()` (and before every reconnect): checks the source, resolves the tables and
/// the position — the checkpoint (refused when purged) or, on a first start, the binlog's end,
/// saved at once (with `snapshot_done: false` when a snapshot follows) so that every change
/// committed after `start()` returns is delivered and a snapshot cut short is taken again.
pub(crate) async fn prepare(ctx: &Ctx) -> Result<Prepared, CdcError> {
    let mut conn = connect(&ctx.opts).await?;
    let info = server_info(&mut conn).await?;
    validate_source(&mut conn, &info, ctx.server_id, &ctx.hostname()).await?;
    let tables = load_tables(&mut conn, &ctx.config.database, &ctx.config.tables).await?;
    let want_snapshot = ctx.config.snapshot == SnapshotMode::Initial;
    let cp = ctx.checkpoints.load(&ctx.id).await?;
    let snapshot;
    let token = match cp.filter(|c| !c.resume_token.is_empty()) {
        Some(cp) => {
            // A snapshot that never finished goes on after the last acknowledged row (same
            // event ids), then the stream resumes from the position recorded before it began.
            snapshot = want_snapshot && !cp.snapshot_done;
            let t = ResumeToken::parse(&cp.resume_token)?;
            if t.flavor != info.flavor {
                return Err(CdcError::Source(format!(
                    "the checkpoint was taken on a {} server but the source is {}; {RESYNC_HINT}",
                    t.flavor.as_str(),
                    info.flavor.as_str()
                )));
            }
            check_not_purged(&mut conn, &t).await?;
            t
        }
        None => {
            let t = current_position(&mut conn, &info, ctx.config.use_gtid).await?;
            ctx.checkpoints
                .save(
                    &ctx.id,
                    &Checkpoint {
                        resume_token: t.render(),
                        sequence_number: 0,
                        snapshot_done: !want_snapshot,
                    },
                    &[],
                )
                .await?;
            snapshot = want_snapshot;
            t
        }
    };
    let _ = conn.disconnect().await;
    {
        let mut x = ctx.extra.lock();
        x.flavor = Some(info.flavor);
        x.version = Some(info.version.clone());
    }
    Ok(Prepared {
        info,
        token,
        tables,
        snapshot,
    })
}

/// The background task: sessions with reconnects and backoff until stopped or fenced.
pub(crate) async fn run(ctx: Arc<Ctx>, prepared: Prepared, stop: CancellationToken) {
    let mut prepared = Some(prepared);
    let (ctx, stop) = (&ctx, &stop);
    supervise(&ctx.id, &ctx.status, "binlog session", stop, || {
        let prepared = prepared.take();
        async move {
            let res = match prepared {
                Some(p) => session(ctx, p, stop).await,
                None => match prepare(ctx).await {
                    Ok(p) => session(ctx, p, stop).await,
                    Err(e) => Err(e),
                },
            };
            res.map_err(|e| match e {
                // Another replica streams with our server_id: every attempt of ours would cut it
                // off (and it us), so stop instead of reconnecting; the fix is configuration.
                e @ CdcError::Config { .. } if is_duplicate_server_id(&e) => {
                    SessionError::failed(e)
                }
                e => e.into(),
            })
        }
    })
    .await
}

fn is_duplicate_server_id(e: &CdcError) -> bool {
    matches!(e, CdcError::Config { field, message }
        if field == "config.server_id" && message.contains("already used by a replica"))
}

async fn session(
    ctx: &Arc<Ctx>,
    prepared: Prepared,
    stop: &CancellationToken,
) -> Result<(), CdcError> {
    let cp = ctx.checkpoints.load(&ctx.id).await?.unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Batch>(4);
    let (rel_tx, _rel_rx) = watch::channel(0u64);
    // The session's own stop: ends the dispatcher when the reader fails, so a reconnect never
    // runs two dispatchers.
    let session_stop = stop.child_token();
    let dispatcher = tokio::spawn(ctx.dispatcher().run(rx, rel_tx, session_stop.clone()));
    let read = async {
        let mut seq = cp.sequence_number;
        if prepared.snapshot {
            match snapshot(ctx, &prepared, seq, &tx, stop).await? {
                Some(last) => seq = last,
                None => return Ok(()),
            }
        }
        read(ctx, prepared, seq, tx, stop).await
    }
    .await;
    if read.is_err() {
        // Whatever was queued but not delivered is replayed from the checkpoint.
        session_stop.cancel();
    }
    crate::pipeline::join_dispatcher(dispatcher).await?;
    read
}

/// The open transaction.
struct Txn {
    /// GTID, or `file:offset` of its first event when the server has none.
    id: String,
    gtid: Option<Gtid>,
    /// Rows of captured tables seen so far.
    n: u64,
    timestamp: String,
    /// Opened by BEGIN (or a non-standalone MariaDB GTID): ends at XID/COMMIT. Otherwise the
    /// next statement is the whole transaction (DDL).
    began: bool,
    /// Event ids of its rows: `event_id(connector, "<id>:<n>")` with the prefix hashed once.
    ids: EventIdPrefix,
}

impl Txn {
    fn new(connector_id: &str, id: String, gtid: Option<Gtid>, at: u32, began: bool) -> Txn {
        let ids = EventIdPrefix::new(connector_id, &format!("{id}:"));
        Txn {
            id,
            gtid,
            n: 0,
            timestamp: ts_of(at),
            began,
            ids,
        }
    }
}

#[derive(Clone, Copy)]
enum Gtid {
    Maria(MariaGtid),
    Mysql([u8; 16], u64),
}

/// A table map resolved to captured-table metadata.
struct Mapped {
    meta: Arc<TableMeta>,
    plan: Plan,
    primary_key: Vec<String>,
    columns_count: u64,
}

/// The GTID position as it advances.
enum Position {
    Maria(MariaGtidList),
    Mysql(MysqlGtidSet),
}

impl Position {
    fn apply(&mut self, g: Gtid) {
        match (self, g) {
            (Position::Maria(l), Gtid::Maria(m)) => l.update(m.domain, m.server, m.seq),
            (Position::Mysql(s), Gtid::Mysql(u, n)) => s.add(u, n),
            _ => {}
        }
    }

    fn render(&self) -> String {
        match self {
            Position::Maria(l) => l.to_string(),
            Position::Mysql(s) => s.to_string(),
        }
    }
}

/// Whether the source refused a binlog dump because a replica with the same `server_id` is
/// connected: MariaDB's `ER_SLAVE_SAME_ID` (4052), MySQL's error 1236 with the same text.
pub fn is_same_server_id_error(code: Option<u16>, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == Some(4052)
        || m.contains("same server_uuid/server_id")
        || m.contains("same server_id")
        || (m.contains("4052") && m.contains("server_id"))
}

/// The error a failed binlog dump ends in: a duplicate `server_id` is a configuration error, a
/// position the source cannot serve (1236) a purged-binlog error, anything else the stream's.
fn dump_error(e: mysql_async::Error, server_id: u32) -> CdcError {
    let code = match &e {
        mysql_async::Error::Server(se) => Some(se.code),
        _ => None,
    };
    let text = e.to_string();
    if is_same_server_id_error(code, &text) {
        return super::duplicate_server_id(
            server_id,
            &format!("the source ended this connector's binlog dump: {text}"),
        );
    }
    if code == Some(1236) || text.contains("1236") {
        CdcError::Source(format!(
            "the source cannot stream from the resume position ({text}); {RESYNC_HINT}"
        ))
    } else {
        CdcError::Source(format!("binlog stream: {text}"))
    }
}

/// MariaDB and MySQL heartbeat event type.
const HEARTBEAT_EVENT: u8 = 0x1b;

/// How often the read position is copied into the status details (besides every heartbeat).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Copies how far the stream has read into the status details, which the server reports for
/// the node running the connector (its `health_check()` reads them live).
fn publish_read_state(ctx: &Ctx) {
    let x = ctx.extra.lock().clone();
    let status = &ctx.status;
    status.set_detail("read_file", json!(x.read_file));
    status.set_detail("read_pos", json!(x.read_pos));
    if let Some(ts) = x.last_event_time {
        status.set_detail(
            "last_binlog_event_at",
            json!(aragora_core::time::rfc3339(ts * 1000)),
        );
        status.set_detail(
            "seconds_since_last_binlog_event",
            json!((aragora_core::time::now_ms() / 1000 - ts).max(0)),
        );
    }
}

fn ts_of(secs: u32) -> String {
    aragora_core::time::rfc3339(i64::from(secs) * 1000)
}

/// Whether a statement is DDL that changes `table`'s definition (word match on the name).
pub fn ddl_touches(sql: &str, table: &str) -> bool {
    let lower = sql.trim_start().to_ascii_lowercase();
    let is_ddl = ["alter ", "create ", "drop ", "rename ", "truncate "]
        .iter()
        .any(|p| lower.starts_with(p));
    if !is_ddl {
        return false;
    }
    let t = table.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
    let mut from = 0;
    while let Some(i) = lower[from..].find(&t) {
        let at = from + i;
        let end = at + t.len();
        let before_ok = at == 0 || !ident(bytes[at - 1]);
        let after_ok = end >= bytes.len() || !ident(bytes[end]);
        if before_ok && after_ok {
            return true;
        }
        from = at + 1;
    }
    false
}

/// The initial snapshot: every captured table read in primary-key chunks without locks
/// ([`TableScan`]: plain non-locking reads), as INSERT events with `resume_token` `snapshot` and
/// ids derived from the table, the primary key and the row as read (a row copied again unchanged
/// gets the same id).
/// Its batches checkpoint the position recorded before it with `snapshot_done: false` and how
/// far it got (table and last key), so a restart goes on after the last acknowledged row; the
/// last batch marks it done. Changes committed meanwhile are streamed afterwards from that
/// position (handlers upsert, so the rows converge). Returns the last sequence number, or `None`
/// when stopped.
async fn snapshot(
    ctx: &Ctx,
    prepared: &Prepared,
    mut seq: i64,
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<Option<i64>, CdcError> {
    let cfg = &ctx.config;
    ctx.status.set_phase("snapshot");
    ctx.status.set_source_error(None);
    let position = ResumeToken {
        partial: None,
        snapshot: None,
        ..prepared.token.clone()
    };
    let checkpoint = |seq: i64, progress: Option<(String, Value)>| Checkpoint {
        resume_token: ResumeToken {
            snapshot: progress.clone(),
            ..position.clone()
        }
        .render(),
        sequence_number: seq,
        snapshot_done: progress.is_none(),
    };
    // Where an earlier attempt stopped: tables listed before it are copied. A table no longer
    // listed (the configuration changed) means starting over.
    let (first_table, mut resume_key) = match &prepared.token.snapshot {
        Some((table, key)) => match cfg.tables.iter().position(|t| t == table) {
            Some(i) => match scan::decode_key(key) {
                Some(k) => (i, Some(k)),
                None => {
                    tracing::warn!(connector = %ctx.id, "snapshot progress unreadable; copying the tables again");
                    (0, None)
                }
            },
            None => (0, None),
        },
        None => (0, None),
    };
    let mut conn = connect(&ctx.opts).await?;
    // Timestamps read in UTC, as the binlog carries them (the same values as streamed rows).
    conn.query_drop("SET SESSION time_zone = '+00:00'").await?;
    let timestamp = aragora_core::time::rfc3339(aragora_core::time::now_ms());
    let mut copied = 0u64;
    tracing::info!(connector = %ctx.id, position = %position.render(), from_table = first_table, resumed = resume_key.is_some(), "snapshot: copying the tables, then streaming from the position taken before");
    for name in &cfg.tables[first_table..] {
        let Some(meta) = prepared.tables.get(name) else {
            continue;
        };
        let ids = EventIdPrefix::new(&ctx.id, &format!("snapshot:{name}:"));
        let mut scan = TableScan::new(&cfg.database, meta, None, None, cfg.batch_size)?;
        if let Some(key) = resume_key.take() {
            scan = scan.after(key);
        }
        loop {
            let rows = tokio::select! {
                r = scan.next(&mut conn) => r?,
                _ = stop.cancelled() => return Ok(None),
            };
            let Some(rows) = rows else { break };
            ctx.status.add_snapshot_rows(rows.len() as u64);
            copied += rows.len() as u64;
            let mut events = Vec::with_capacity(rows.len());
            for data in rows {
                let primary_key = meta.key_of(&data);
                seq += 1;
                events.push(ChangeEvent {
                    // The row as read is part of the id: a row copied again unchanged keeps its
                    // id, one that changed in between is a different change.
                    id: ids.id(&format!(
                        "{}:{}",
                        crate::canonical_key(&primary_key),
                        crate::canonical_key(&data)
                    )),
                    source_type: CdcSourceType::Mysql,
                    connector_id: ctx.id.clone(),
                    operation: ChangeOperation::Insert,
                    timestamp: timestamp.clone(),
                    database: cfg.database.clone(),
                    table: name.clone(),
                    data,
                    old_data: Map::new(),
                    primary_key,
                    resume_token: "snapshot".into(),
                    sequence_number: seq,
                });
            }
            let progress = scan.last_key().map(|k| (name.clone(), scan::encode_key(k)));
            let batch = Batch {
                events,
                checkpoint: checkpoint(seq, progress),
                release: None,
            };
            if !send_batch(tx, batch, stop).await {
                return Ok(None);
            }
        }
    }
    let _ = conn.disconnect().await;
    let done = Batch {
        events: Vec::new(),
        checkpoint: checkpoint(seq, None),
        release: None,
    };
    if !send_batch(tx, done, stop).await {
        return Ok(None);
    }
    tracing::info!(connector = %ctx.id, rows = copied, "snapshot delivered; streaming");
    Ok(Some(seq))
}

async fn read(
    ctx: &Arc<Ctx>,
    prepared: Prepared,
    mut seq: i64,
    tx: mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<(), CdcError> {
    let Prepared {
        info,
        token,
        mut tables,
        ..
    } = prepared;
    let cfg = &ctx.config;
    let mut meta_conn = connect(&ctx.opts).await?;
    let mut conn = connect(&ctx.opts).await?;
    let heartbeat = Duration::from_secs_f64(cfg.heartbeat_seconds);
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {}",
        heartbeat.as_nanos()
    ))
    .await?;
    let by_gtid = cfg.use_gtid && info.gtid_available && !token.gtid.is_empty();
    let mut position = match info.flavor {
        Flavor::Mariadb => {
            Position::Maria(MariaGtidList::parse(&token.gtid).map_err(CdcError::Checkpoint)?)
        }
        Flavor::Mysql => {
            Position::Mysql(MysqlGtidSet::parse(&token.gtid).map_err(CdcError::Checkpoint)?)
        }
    };
    if info.flavor == Flavor::Mariadb {
        // Capability 4 (GTID): the server sends its GTID events instead of dummies.
        conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        if by_gtid {
            // The token's list was validated (digits, '-' and ','), so it is safe to inline.
            conn.query_drop(format!("SET @slave_connect_state = '{}'", token.gtid))
                .await?;
            conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
            conn.query_drop("SET @slave_gtid_ignore_duplicates = 0")
                .await?;
        }
    }
    let hostname = ctx.hostname();
    let sids = match &position {
        Position::Mysql(s) => s.to_sids(),
        Position::Maria(_) => Vec::new(),
    };
    let mut request = BinlogStreamRequest::new(ctx.server_id).with_hostname(hostname.as_bytes());
    request = match (info.flavor, by_gtid) {
        (Flavor::Mysql, true) => request.with_gtid().with_gtid_set(sids).with_pos(4),
        (Flavor::Mariadb, true) => request.with_pos(4),
        (_, false) => request
            .with_filename(token.file.as_bytes())
            .with_pos(token.pos),
    };
    let mut binlog = conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| dump_error(e, ctx.server_id))?;
    {
        let mut x = ctx.extra.lock();
        x.positioning = Some(if by_gtid { "gtid" } else { "file_position" });
    }
    ctx.status.set_phase("streaming");
    ctx.status.set_source_error(None);

    let batch_size = cfg.batch_size;
    let max_pending = batch_size.saturating_mul(4).max(1);
    let flush_after = Duration::from_millis(20);
    let idle_limit = heartbeat * 3 + Duration::from_secs(2);
    let mut file = token.file.clone();
    let mut committed = ResumeToken {
        partial: None,
        snapshot: None,
        ..token.clone()
    };
    let mut skip = token.partial.clone();
    let mut txn: Option<Txn> = None;
    let mut mapped: HashMap<u64, Option<Arc<Mapped>>> = HashMap::new();
    let mut events: Vec<ChangeEvent> = Vec::with_capacity(batch_size);
    let mut first_pending: Option<Instant> = None;
    let mut fde_seen = false;
    {
        let mut x = ctx.extra.lock();
        x.read_file = Some(token.file.clone());
        x.read_pos = Some(token.pos);
    }
    publish_read_state(ctx);
    let mut published = Instant::now();

    let result: Result<(), CdcError> = loop {
        let next = match first_pending.filter(|_| txn.is_none()) {
            Some(since) => {
                let left = flush_after.saturating_sub(since.elapsed());
                tokio::select! {
                    r = tokio::time::timeout(idle_limit, binlog.next()) => r,
                    _ = tokio::time::sleep(left) => {
                        if !send(&tx, &mut events, &mut first_pending, &committed, seq, stop).await {
                            break Ok(());
                        }
                        continue;
                    }
                    _ = stop.cancelled() => break Ok(()),
                }
            }
            None => tokio::select! {
                r = tokio::time::timeout(idle_limit, binlog.next()) => r,
                _ = stop.cancelled() => break Ok(()),
            },
        };
        let ev: Event = match next {
            Err(_) => {
                break Err(CdcError::Source(format!(
                    "binlog stream silent for {}s (no event or heartbeat)",
                    idle_limit.as_secs()
                )));
            }
            Ok(None) => break Err(CdcError::Source("binlog stream ended".into())),
            Ok(Some(Err(e))) => break Err(dump_error(e, ctx.server_id)),
            Ok(Some(Ok(ev))) => ev,
        };
        let header = ev.header();
        let log_pos = u64::from(header.log_pos());
        let start_pos = log_pos.saturating_sub(u64::from(header.event_size()));
        let raw = header.event_type_raw();
        let heartbeat = raw == HEARTBEAT_EVENT;
        // Events the server made up for the dump (its opening rotate and format description)
        // say nothing about how far the binlog was read; heartbeats carry the sender's offset.
        if !header.flags().contains(EventFlags::LOG_EVENT_ARTIFICIAL_F)
            && (log_pos > 0 || header.timestamp() > 0)
        {
            let mut x = ctx.extra.lock();
            // Format description, rotate and MariaDB's GTID-list and binlog-checkpoint events
            // open every dump with the time the file was started.
            if header.timestamp() > 0 && !heartbeat && !matches!(raw, 0x04 | 0x0f | 0xa1 | 0xa3) {
                x.last_event_time = Some(i64::from(header.timestamp()));
            }
            if log_pos > 0 {
                x.read_file = Some(file.clone());
                x.read_pos = Some(log_pos);
            }
        }
        if heartbeat || published.elapsed() >= PUBLISH_EVERY {
            publish_read_state(ctx);
            published = Instant::now();
        }
        if raw == decode::MARIA_GTID_EVENT {
            let g = match decode::parse_maria_gtid_event(ev.data(), header.server_id()) {
                Ok(g) => g,
                Err(e) => break Err(CdcError::Source(e)),
            };
            txn = Some(Txn::new(
                &ctx.id,
                format!("{}-{}-{}", g.domain, g.server, g.seq),
                Some(Gtid::Maria(g)),
                header.timestamp(),
                !g.standalone,
            ));
            continue;
        }
        if raw == decode::MARIA_START_ENCRYPTION_EVENT {
            break Err(CdcError::Source(
                "the source encrypts its binlog (encrypt_binlog=ON); binlog CDC needs it off"
                    .into(),
            ));
        }
        let data = match ev.read_data() {
            Ok(Some(d)) => d,
            Ok(None) => continue, // MariaDB-only events (annotate, checkpoint, GTID list)
            Err(e) => break Err(CdcError::Source(format!("binlog event: {e}"))),
        };
        let mut commit = false;
        match data {
            EventData::RotateEvent(r) => {
                let mut name = r.name_raw().to_vec();
                // The fake rotate that opens a dump comes before the format description, so
                // the reader cannot know it ends in a checksum.
                if !fde_seen && info.checksum && name.len() > 4 {
                    name.truncate(name.len() - 4);
                }
                file = String::from_utf8_lossy(&name).into_owned();
                {
                    let mut x = ctx.extra.lock();
                    if x.read_file.as_deref() != Some(file.as_str()) {
                        x.read_file = Some(file.clone());
                        x.read_pos = Some(r.position());
                    }
                }
                if txn.is_none() && r.position() >= 4 {
                    committed.file = file.clone();
                    committed.pos = r.position();
                }
            }
            EventData::GtidEvent(g) => {
                txn = Some(Txn::new(
                    &ctx.id,
                    format!("{}:{}", format_uuid(&g.sid()), g.gno()),
                    Some(Gtid::Mysql(g.sid(), g.gno())),
                    header.timestamp(),
                    false,
                ));
            }
            EventData::AnonymousGtidEvent(_) => {
                txn = Some(Txn::new(
                    &ctx.id,
                    format!("{file}:{start_pos}"),
                    None,
                    header.timestamp(),
                    false,
                ));
            }
            EventData::QueryEvent(q) => {
                let sql = q.query();
                let sql = sql.trim();
                if sql.eq_ignore_ascii_case("BEGIN") {
                    match txn.as_mut() {
                        Some(t) => t.began = true,
                        None => {
                            txn = Some(Txn::new(
                                &ctx.id,
                                format!("{file}:{start_pos}"),
                                None,
                                header.timestamp(),
                                true,
                            ))
                        }
                    }
                } else if sql.eq_ignore_ascii_case("COMMIT") {
                    commit = true;
                } else {
                    let schema = q.schema();
                    let db = if schema.is_empty() {
                        cfg.database.as_str()
                    } else {
                        schema.as_ref()
                    };
                    if db.eq_ignore_ascii_case(&cfg.database)
                        || sql
                            .to_ascii_lowercase()
                            .contains(&cfg.database.to_ascii_lowercase())
                    {
                        for t in &cfg.tables {
                            if !ddl_touches(sql, t) {
                                continue;
                            }
                            if sql.to_ascii_lowercase().starts_with("truncate") {
                                tracing::warn!(connector = %ctx.id, table = %t, "TRUNCATE is not a row change; ignored");
                                ctx.status.truncate_ignored();
                            }
                            match load_table(&mut meta_conn, &cfg.database, t).await {
                                Ok(Some(m)) => {
                                    tables.insert(t.clone(), Arc::new(m));
                                }
                                Ok(None) => {
                                    tables.remove(t);
                                }
                                Err(e) => {
                                    tracing::warn!(connector = %ctx.id, table = %t, error = %e, "metadata refresh failed; the next table map retries");
                                    tables.remove(t);
                                }
                            }
                            mapped.retain(|_, m| m.as_ref().is_none_or(|m| m.meta.name != *t));
                            ctx.status.schema_changed();
                            let notice = json!({
                                "table": t,
                                "statement": sql.chars().take(500).collect::<String>(),
                                "file": file,
                                "pos": log_pos,
                                "at": ts_of(header.timestamp()),
                            });
                            tracing::info!(connector = %ctx.id, table = %t, statement = %sql, "schema change: table metadata refreshed");
                            ctx.status.set_detail("last_schema_change", notice.clone());
                            ctx.extra.lock().last_schema_change = Some(notice);
                        }
                    }
                    if txn.as_ref().is_none_or(|t| !t.began) {
                        commit = true;
                    }
                }
            }
            EventData::TableMapEvent(tme) => {
                let id = tme.table_id();
                // A map naming the same table id with other column types (rare: servers
                // usually give a changed table a new id) gets a new decoding plan.
                let reuse = mapped.get(&id).is_some_and(|m| {
                    m.as_ref().is_none_or(|m| {
                        m.columns_count == tme.columns_count() && m.plan.matches(&tme)
                    })
                });
                if !reuse {
                    match map_table(ctx, &tme, &mut tables, &mut meta_conn).await {
                        Ok(m) => {
                            mapped.insert(id, m.map(Arc::new));
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
            EventData::RowsEvent(re) => {
                let Some(Some(m)) = mapped.get(&re.table_id()).cloned() else {
                    continue;
                };
                let Some(t) = txn.as_mut() else {
                    break Err(CdcError::Source("row event outside a transaction".into()));
                };
                let op = match &re {
                    RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => {
                        ChangeOperation::Insert
                    }
                    RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => {
                        ChangeOperation::Delete
                    }
                    _ => ChangeOperation::Update,
                };
                if let Err(e) = rows_to_events(ctx, &re, &m, op, t, &skip, &mut seq, &mut events) {
                    break Err(e);
                }
                if events.len() >= max_pending {
                    let at = ResumeToken {
                        partial: Some((t.id.clone(), t.n)),
                        ..committed.clone()
                    };
                    if !send(&tx, &mut events, &mut first_pending, &at, seq, stop).await {
                        break Ok(());
                    }
                }
            }
            EventData::XidEvent(_) => commit = true,
            EventData::FormatDescriptionEvent(_) => fde_seen = true,
            _ => {}
        }
        if commit {
            if let Some(t) = txn.take() {
                if let Some(g) = t.gtid {
                    position.apply(g);
                }
                if skip.as_ref().is_some_and(|(id, _)| *id == t.id) {
                    skip = None;
                }
            }
            committed = ResumeToken {
                flavor: info.flavor,
                gtid: if info.gtid_available {
                    position.render()
                } else {
                    String::new()
                },
                file: file.clone(),
                pos: log_pos,
                partial: None,
                snapshot: None,
            };
            if events.len() >= batch_size {
                if !send(&tx, &mut events, &mut first_pending, &committed, seq, stop).await {
                    break Ok(());
                }
            } else {
                first_pending.get_or_insert_with(Instant::now);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), binlog.close()).await;
    let _ = meta_conn.disconnect().await;
    result
}

/// Resolves a table map: `None` for tables not captured. Column names come from the map itself
/// (`binlog_row_metadata=FULL`) or else from information_schema, refreshed when the shapes
/// disagree.
async fn map_table(
    ctx: &Ctx,
    tme: &TableMapEvent<'_>,
    tables: &mut HashMap<String, Arc<TableMeta>>,
    meta_conn: &mut Conn,
) -> Result<Option<Mapped>, CdcError> {
    let db = tme.database_name();
    let name = tme.table_name().into_owned();
    if db != ctx.config.database || !ctx.config.tables.contains(&name) {
        return Ok(None);
    }
    let count = tme.columns_count() as usize;
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map_err(|e| CdcError::Source(format!("table map of {name}: {e}")))?;
    let names_in_map: Vec<String> = extractor
        .iter_column_name()
        .filter_map(|n| n.ok().map(|n| n.name().into_owned()))
        .collect();
    let pk_in_map: Vec<u64> = extractor
        .iter_primary_key()
        .filter_map(Result::ok)
        .collect();
    let mut meta = tables.get(&name).cloned();
    let fits = |m: &TableMeta| {
        if names_in_map.len() == count {
            names_in_map.iter().all(|n| m.column(n).is_some())
        } else {
            m.columns.len() == count
        }
    };
    if !meta.as_deref().is_some_and(fits)
        && let Some(m) = load_table(meta_conn, &ctx.config.database, &name).await?
    {
        let m = Arc::new(m);
        tables.insert(name.clone(), m.clone());
        meta = Some(m);
    }
    let Some(meta) = meta else {
        return Err(CdcError::Source(format!(
            "table {name} is in the binlog but no longer in information_schema"
        )));
    };
    let names: Vec<String> = if names_in_map.len() == count {
        names_in_map
    } else if meta.columns.len() == count {
        meta.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        return Err(CdcError::Source(format!(
            "table {name} has {count} columns in the binlog but {} now: it changed since the \
             event was written; set binlog_row_metadata = FULL on the source so the binlog \
             names its columns",
            meta.columns.len()
        )));
    };
    let cols: Vec<Option<ColumnMeta>> = names.iter().map(|n| meta.column(n).cloned()).collect();
    let primary_key = if pk_in_map.is_empty() {
        meta.primary_key.clone()
    } else {
        pk_in_map
            .iter()
            .filter_map(|i| names.get(*i as usize).cloned())
            .collect()
    };
    let plan = Plan::new(tme, &names, &cols)
        .map_err(|e| CdcError::Source(format!("table map of {name}: {e}")))?;
    Ok(Some(Mapped {
        meta,
        plan,
        primary_key,
        columns_count: count as u64,
    }))
}

#[allow(clippy::too_many_arguments)]
fn rows_to_events(
    ctx: &Ctx,
    re: &RowsEventData<'_>,
    m: &Mapped,
    op: ChangeOperation,
    t: &mut Txn,
    skip: &Option<(String, u64)>,
    seq: &mut i64,
    events: &mut Vec<ChangeEvent>,
) -> Result<(), CdcError> {
    let table = &m.meta.name;
    let skip_to = match skip {
        Some((id, n)) if *id == t.id => *n,
        _ => 0,
    };
    let mut position = String::with_capacity(t.id.len() + 12);
    // The row number as text, formatted into one reused buffer.
    let mut n = String::with_capacity(20);
    m.plan.for_each_row(
        re,
        |(before, after)| {
            t.n += 1;
            if t.n <= skip_to {
                return Ok(()); // acknowledged before a restart
            }
            let old_data = before.unwrap_or_default();
            let data = match (after, op) {
                (_, ChangeOperation::Delete) | (None, _) => Map::new(),
                (Some(r), _) => r,
            };
            let keyed = if op == ChangeOperation::Delete {
                &old_data
            } else {
                &data
            };
            // Inserted one by one: collecting into a map sorts through a temporary vector.
            let mut primary_key = Map::new();
            for k in &m.primary_key {
                primary_key.insert(k.clone(), keyed.get(k).cloned().unwrap_or(Value::Null));
            }
            position.clear();
            position.push_str(&t.id);
            position.push(':');
            n.clear();
            let _ = write!(n, "{}", t.n);
            position.push_str(&n);
            *seq += 1;
            events.push(ChangeEvent {
                id: t.ids.id(&n),
                source_type: CdcSourceType::Mysql,
                connector_id: ctx.id.clone(),
                operation: op,
                timestamp: t.timestamp.clone(),
                database: ctx.config.database.clone(),
                table: table.clone(),
                data,
                old_data,
                primary_key,
                resume_token: position.clone(),
                sequence_number: *seq,
            });
            Ok(())
        },
        |e| CdcError::Source(format!("row of {table}: {e}")),
    )
}

async fn send(
    tx: &mpsc::Sender<Batch>,
    events: &mut Vec<ChangeEvent>,
    first_pending: &mut Option<Instant>,
    at: &ResumeToken,
    seq: i64,
    stop: &CancellationToken,
) -> bool {
    *first_pending = None;
    let batch = Batch {
        events: take_events(events),
        checkpoint: Checkpoint {
            resume_token: at.render(),
            sequence_number: seq,
            snapshot_done: true,
        },
        release: None,
    };
    send_batch(tx, batch, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_matching_is_by_word() {
        assert!(ddl_touches("ALTER TABLE users ADD COLUMN x INT", "users"));
        assert!(ddl_touches("alter table `app`.`users` drop x", "users"));
        assert!(ddl_touches("RENAME TABLE users TO people", "users"));
        assert!(!ddl_touches("ALTER TABLE users_archive ADD x INT", "users"));
        assert!(!ddl_touches("INSERT INTO users VALUES (1)", "users"));
        assert!(!ddl_touches("ALTER TABLE orders ADD x INT", "users"));
    }
}
