//! The background task: snapshot (first start), then the change stream into the dispatcher.

use super::event::{Mapped, map_event, parse_token, to_json_map, token_text};
use super::source::{ChangeCursor, ChangeSource, StreamError};
use super::{Ctx, MongoConfig, history_lost_message};
use crate::SnapshotMode;
use crate::connector::SyncRow;
use crate::pipeline::{Batch, take_events};
use crate::runner::{SessionError, supervise};
use crate::{CdcError, CdcSourceType, ChangeEvent, ChangeOperation, Checkpoint};
use ::mongodb::bson::{Bson, Document};
use futures::StreamExt;
use serde_json::Map;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Why a session ended.
pub(crate) enum Failure {
    HistoryLost(String),
    Cdc(CdcError),
}

impl From<CdcError> for Failure {
    fn from(e: CdcError) -> Self {
        Failure::Cdc(e)
    }
}

impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Self {
        match e {
            StreamError::HistoryLost(m) => Failure::HistoryLost(m),
            StreamError::Failed(m) => Failure::Cdc(CdcError::Source(m)),
        }
    }
}

/// Where the next session starts.
pub(crate) struct Prepared {
    /// Resume after this token.
    start: Document,
    /// Copy the collections first.
    snapshot: bool,
    /// The stream opened by `prepare` (so `start()` fails on a lost history or a server that has
    /// no change streams), when no snapshot comes first.
    cursor: Option<Box<dyn ChangeCursor>>,
}

fn checkpoint_token(cp: &Checkpoint) -> Result<Document, CdcError> {
    parse_token(&cp.resume_token).map_err(CdcError::Checkpoint)
}

/// Loads the position (or takes the stream's current one on a first start).
pub(crate) async fn prepare_inner(ctx: &Ctx) -> Result<Prepared, Failure> {
    let plan = ctx.config.plan();
    let want_snapshot = ctx.config.snapshot == SnapshotMode::Initial;
    if let Some(cp) = ctx.checkpoints.load(&ctx.id).await?
        && !cp.resume_token.is_empty()
    {
        let start = checkpoint_token(&cp)?;
        if cp.snapshot_done || !want_snapshot {
            let cursor = ctx.source.watch(&plan, Some(start.clone())).await?;
            return Ok(Prepared {
                start,
                snapshot: false,
                cursor: Some(cursor),
            });
        }
        // A snapshot that never finished: copy again, then stream from the position taken
        // before the first attempt (nothing since is lost; some changes come twice).
        return Ok(Prepared {
            start,
            snapshot: true,
            cursor: None,
        });
    }
    let cursor = ctx.source.watch(&plan, None).await?;
    let start = cursor.resume_token().ok_or_else(|| {
        CdcError::Source(
            "the server returned no resume token when the change stream opened \
             (postBatchResumeToken needs MongoDB 4.2 or later)"
                .into(),
        )
    })?;
    ctx.checkpoints
        .save(
            &ctx.id,
            &Checkpoint {
                resume_token: token_text(&start),
                sequence_number: 0,
                snapshot_done: !want_snapshot,
            },
            &[],
        )
        .await?;
    Ok(Prepared {
        start,
        snapshot: want_snapshot,
        // The snapshot may outlast an idle cursor: reopen with startAfter afterwards.
        cursor: (!want_snapshot).then_some(cursor),
    })
}

/// `prepare` for `start()`: a lost history becomes an error carrying the way out.
pub(crate) async fn prepare(ctx: &Ctx) -> Result<Prepared, CdcError> {
    match prepare_inner(ctx).await {
        Ok(p) => Ok(p),
        Err(Failure::HistoryLost(m)) => {
            let msg = history_lost_message(&m);
            mark_history_lost(ctx, &msg);
            Err(CdcError::Source(msg))
        }
        Err(Failure::Cdc(e)) => Err(e),
    }
}

fn mark_history_lost(ctx: &Ctx, msg: &str) {
    tracing::error!(connector = %ctx.id, "{msg}");
    ctx.state.lock().history_lost = true;
    ctx.status
        .set_detail("history_lost", serde_json::json!(true));
    ctx.status.set_source_error(Some(msg.to_string()));
    ctx.status.set_phase("history_lost");
}

/// The background task: sessions until stopped, reconnecting after failures with backoff.
pub(crate) async fn run(ctx: Arc<Ctx>, prepared: Prepared, stop: CancellationToken) {
    let mut prepared = Some(prepared);
    let (ctx, stop) = (&ctx, &stop);
    supervise(&ctx.id, &ctx.status, "change stream", stop, || {
        let prepared = prepared.take();
        async move {
            let res = match prepared {
                Some(p) => session(ctx, p, stop).await,
                None => match prepare_inner(ctx).await {
                    Ok(p) => session(ctx, p, stop).await,
                    Err(e) => Err(e),
                },
            };
            res.map_err(|e| match e {
                Failure::HistoryLost(m) => {
                    // Sets the phase, the source error and the `history_lost` detail.
                    mark_history_lost(ctx, &history_lost_message(&m));
                    SessionError::Fatal {
                        phase: "history_lost",
                        error: None,
                    }
                }
                Failure::Cdc(e) => e.into(),
            })
        }
    })
    .await
}

async fn session(
    ctx: &Arc<Ctx>,
    prepared: Prepared,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    let cp = ctx.checkpoints.load(&ctx.id).await?.unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Batch>(4);
    let (rel_tx, _rel_rx) = watch::channel(0u64);
    let dispatcher = tokio::spawn(ctx.dispatcher().run(rx, rel_tx, stop.clone()));
    let read = stream(ctx, prepared, cp.sequence_number, tx, stop).await;
    crate::pipeline::join_dispatcher(dispatcher).await?;
    read
}

/// What the reader task hands the batcher.
enum Item {
    /// A change-stream document and the token to resume after it.
    Doc(Document, Document),
    /// An empty batch: caught up; the post-batch token.
    Idle(Option<Document>),
    Err(StreamError),
}

/// Pulls from the cursor in its own task, so a `getMore` waiting on the server never delays a
/// flush. Reopens after an invalidate with `startAfter` its token.
async fn read_loop(
    mut cursor: Box<dyn ChangeCursor>,
    source: Arc<dyn ChangeSource>,
    ctx_plan: super::WatchPlan,
    tx: mpsc::Sender<Item>,
) {
    loop {
        let item = match cursor.next_if_any().await {
            Ok(Some(doc)) => {
                let own = match doc.get("_id") {
                    Some(Bson::Document(t)) => Some(t.clone()),
                    _ => None,
                };
                if doc.get_str("operationType").ok() == Some("invalidate") {
                    let Some(token) = own else {
                        let _ = tx
                            .send(Item::Err(StreamError::Failed(
                                "invalidate event without a token".into(),
                            )))
                            .await;
                        return;
                    };
                    if tx.send(Item::Doc(doc, token.clone())).await.is_err() {
                        return;
                    }
                    match source.watch(&ctx_plan, Some(token)).await {
                        Ok(c) => cursor = c,
                        Err(e) => {
                            let _ = tx.send(Item::Err(e)).await;
                            return;
                        }
                    }
                    continue;
                }
                match cursor.resume_token().or(own) {
                    Some(after) => Item::Doc(doc, after),
                    None => Item::Err(StreamError::Failed(
                        "change event without a resume token".into(),
                    )),
                }
            }
            Ok(None) => Item::Idle(cursor.resume_token()),
            Err(e) => Item::Err(e),
        };
        let last = matches!(item, Item::Err(_));
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

/// How long acknowledged-ready events wait for more before they are handed over.
const FLUSH_AFTER: Duration = Duration::from_millis(20);

async fn stream(
    ctx: &Arc<Ctx>,
    prepared: Prepared,
    mut seq: i64,
    tx: mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    let Prepared {
        start,
        snapshot: snap,
        cursor,
    } = prepared;
    let plan = ctx.config.plan();
    if snap {
        ctx.status.set_phase("snapshot");
        match snapshot(ctx, &tx, &start, stop).await? {
            Some(last) => seq = last,
            None => return Ok(()),
        }
    }
    let cursor = match cursor {
        Some(c) => c,
        None => ctx.source.watch(&plan, Some(start.clone())).await?,
    };
    ctx.status.set_phase("streaming");
    ctx.status.set_source_error(None);
    let batch_size = ctx.config.batch_size;
    let (itx, mut irx) = mpsc::channel::<Item>(batch_size.max(16));
    let reader = tokio::spawn(read_loop(cursor, ctx.source.clone(), plan, itx));
    let _abort = AbortOnDrop(reader);
    let mut events: Vec<ChangeEvent> = Vec::with_capacity(batch_size);
    let mut first_pending: Option<Instant> = None;
    let mut token = start;
    let mut sent_token = token.clone();
    loop {
        let item = match first_pending {
            Some(since) => {
                let left = FLUSH_AFTER.saturating_sub(since.elapsed());
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return Ok(()),
                    i = irx.recv() => i,
                    _ = tokio::time::sleep(left) => {
                        if !flush(&tx, &mut events, &token, seq).await { return Ok(()); }
                        ctx.publish_position();
                        first_pending = None;
                        sent_token = token.clone();
                        continue;
                    }
                }
            }
            None => tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                i = irx.recv() => i,
            },
        };
        let Some(item) = item else {
            return Err(CdcError::Source("change stream reader ended".into()).into());
        };
        match item {
            Item::Doc(doc, after) => {
                match map_event(&doc) {
                    Ok(Mapped::Change(c)) => {
                        seq += 1;
                        let now = aragora_core::time::now_ms();
                        {
                            let mut s = ctx.state.lock();
                            if c.cluster_time.is_some() {
                                s.last_cluster_time = c.cluster_time;
                            }
                            s.last_event_time_ms = c.time_ms.or(Some(now));
                        }
                        let resume_token = token_text(&c.token);
                        events.push(ChangeEvent {
                            id: crate::event_id(&ctx.id, &resume_token),
                            source_type: CdcSourceType::Mongodb,
                            connector_id: ctx.id.clone(),
                            operation: c.operation,
                            timestamp: aragora_core::time::rfc3339(c.time_ms.unwrap_or(now)),
                            database: c.database,
                            table: c.collection,
                            data: c.data,
                            old_data: c.old_data,
                            primary_key: c.primary_key,
                            resume_token,
                            sequence_number: seq,
                        });
                        first_pending.get_or_insert_with(Instant::now);
                    }
                    Ok(Mapped::Notice {
                        kind,
                        message,
                        token,
                    }) => {
                        ctx.notice(kind, message, &token);
                        first_pending.get_or_insert_with(Instant::now);
                    }
                    Ok(Mapped::Skip(op)) => {
                        tracing::debug!(connector = %ctx.id, op, "change-stream event skipped");
                    }
                    Err(e) => {
                        tracing::warn!(connector = %ctx.id, error = %e, "unreadable change-stream event skipped");
                    }
                }
                token = after;
                if events.len() >= batch_size {
                    if !flush(&tx, &mut events, &token, seq).await {
                        return Ok(());
                    }
                    ctx.publish_position();
                    first_pending = None;
                    sent_token = token.clone();
                }
            }
            Item::Idle(post_batch) => {
                if let Some(t) = post_batch {
                    token = t;
                }
                // Caught up: hand over what is pending, and a moved position even with no
                // events (a quiet stream's post-batch token).
                if !events.is_empty() || token != sent_token {
                    if !flush(&tx, &mut events, &token, seq).await {
                        return Ok(());
                    }
                    ctx.publish_position();
                    first_pending = None;
                    sent_token = token.clone();
                }
            }
            Item::Err(e) => {
                if !events.is_empty() || token != sent_token {
                    flush(&tx, &mut events, &token, seq).await;
                }
                return Err(e.into());
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends the pending events with the position after them; `false` when the dispatcher is gone.
async fn flush(
    tx: &mpsc::Sender<Batch>,
    events: &mut Vec<ChangeEvent>,
    token: &Document,
    seq: i64,
) -> bool {
    let batch = Batch {
        events: take_events(events),
        checkpoint: Checkpoint {
            resume_token: token_text(token),
            sequence_number: seq,
            snapshot_done: true,
        },
        release: None,
    };
    tx.send(batch).await.is_ok()
}

async fn collections(
    source: &dyn ChangeSource,
    cfg: &MongoConfig,
) -> Result<Vec<String>, StreamError> {
    if cfg.collections.is_empty() {
        source.collections(&cfg.database).await
    } else {
        Ok(cfg.collections.clone())
    }
}

fn key_of(doc: &Document) -> Map<String, serde_json::Value> {
    let mut key = Document::new();
    key.insert("_id", doc.get("_id").cloned().unwrap_or(Bson::Null));
    to_json_map(&key)
}

/// Sends every document as INSERT events; the last batch ends the snapshot. Returns the last
/// sequence number, or `None` when stopped first.
async fn snapshot(
    ctx: &Ctx,
    tx: &mpsc::Sender<Batch>,
    start: &Document,
    stop: &CancellationToken,
) -> Result<Option<i64>, Failure> {
    let cfg = &ctx.config;
    let start_text = token_text(start);
    let timestamp = aragora_core::time::rfc3339(aragora_core::time::now_ms());
    let batch_size = cfg.batch_size;
    let mut seq = 0i64;
    let mut events = Vec::with_capacity(batch_size);
    for coll in collections(ctx.source.as_ref(), cfg).await? {
        let mut docs = ctx
            .source
            .scan(&cfg.database, &coll, cfg.sync_chunk_size as u32)
            .await?;
        while let Some(doc) = docs.next().await {
            let doc = doc?;
            let primary_key = key_of(&doc);
            seq += 1;
            ctx.status.add_snapshot_rows(1);
            events.push(ChangeEvent {
                id: crate::event_id(
                    &ctx.id,
                    &format!("snapshot:{coll}:{}", crate::canonical_key(&primary_key)),
                ),
                source_type: CdcSourceType::Mongodb,
                connector_id: ctx.id.clone(),
                operation: ChangeOperation::Insert,
                timestamp: timestamp.clone(),
                database: cfg.database.clone(),
                table: coll.clone(),
                data: to_json_map(&doc),
                old_data: Map::new(),
                primary_key,
                resume_token: "snapshot".into(),
                sequence_number: seq,
            });
            if events.len() >= batch_size {
                let batch = Batch {
                    events: std::mem::replace(&mut events, Vec::with_capacity(batch_size)),
                    checkpoint: Checkpoint {
                        resume_token: start_text.clone(),
                        sequence_number: seq,
                        snapshot_done: false,
                    },
                    release: None,
                };
                if stop.is_cancelled() || tx.send(batch).await.is_err() {
                    return Ok(None);
                }
            }
        }
    }
    let batch = Batch {
        events,
        checkpoint: Checkpoint {
            resume_token: start_text,
            sequence_number: seq,
            snapshot_done: true,
        },
        release: None,
    };
    Ok(tx.send(batch).await.is_ok().then_some(seq))
}

/// `sync()`: every document of the collections in `_id` order, in chunks.
pub(crate) async fn sync_rows(
    source: Arc<dyn ChangeSource>,
    cfg: MongoConfig,
    tx: mpsc::Sender<Result<SyncRow, CdcError>>,
) {
    let res = async {
        for coll in collections(source.as_ref(), &cfg).await? {
            let mut docs = source
                .scan(&cfg.database, &coll, cfg.sync_chunk_size as u32)
                .await?;
            while let Some(doc) = docs.next().await {
                let doc = doc?;
                let primary_key = key_of(&doc);
                let data = to_json_map(&doc);
                let row = SyncRow {
                    evidence_id: format!(
                        "mongodb:{}.{}:{}",
                        cfg.database,
                        coll,
                        crate::canonical_key(&primary_key)
                    ),
                    table: coll.clone(),
                    content: crate::render_row(&coll, &primary_key, &data),
                    primary_key,
                    data,
                };
                if tx.send(Ok(row)).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok::<(), StreamError>(())
    }
    .await;
    if let Err(e) = res {
        let e = match e {
            StreamError::HistoryLost(m) | StreamError::Failed(m) => CdcError::Source(m),
        };
        let _ = tx.send(Err(e)).await;
    }
}
