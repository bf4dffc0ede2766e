//! Logical replication mode: a publication and a replication slot per connector, pgoutput
//! decoded by [`super::pgoutput`].
//!
//! First start: the slot is created with an exported snapshot; the tables are read inside that
//! snapshot (so the copy is exactly the state at the slot's consistent point) and streaming
//! starts at that point — no gap, no overlap. The confirmed LSN (the slot's
//! `confirmed_flush_lsn`) advances only to commits whose every event was acknowledged and
//! checkpointed; a transaction larger than a batch is delivered in pieces and, after a crash,
//! replayed from its start with the pieces already acknowledged skipped (same event ids).

use super::pgoutput::{self, Datum, Message, OldKind, Relation};
use super::{Ctx, SnapshotMode, TableInfo, connect, quote_ident, resolve_tables, scan};
use crate::pipeline::{Batch, send_batch, take_events};
use crate::runner::supervise;
use crate::{CdcError, CdcSourceType, ChangeEvent, ChangeOperation, Checkpoint};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// Resume token: `<start LSN>` (the end of the last fully acknowledged commit) or
/// `<start LSN>;<commit LSN>:<n>` while the first n events of the transaction committing at
/// `commit LSN` are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    start: u64,
    partial: Option<(u64, u64)>,
}

impl Token {
    fn parse(s: &str) -> Result<Token, CdcError> {
        let bad = || CdcError::Checkpoint(format!("malformed logical resume token `{s}`"));
        let (start, rest) = match s.split_once(';') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let start = Lsn::parse(start).map_err(|_| bad())?.as_u64();
        let partial = match rest {
            None => None,
            Some(r) => {
                let (lsn, n) = r.split_once(':').ok_or_else(bad)?;
                let lsn = Lsn::parse(lsn).map_err(|_| bad())?.as_u64();
                Some((lsn, n.parse().map_err(|_| bad())?))
            }
        };
        Ok(Token { start, partial })
    }

    fn render(&self) -> String {
        let start = Lsn::from_u64(self.start);
        match self.partial {
            Some((lsn, n)) => format!("{start};{}:{n}", Lsn::from_u64(lsn)),
            None => start.to_string(),
        }
    }
}

fn repl_config(ctx: &Ctx, start: u64) -> ReplicationConfig {
    let slot = ctx.config.slot_for(&ctx.id);
    let publication = ctx.config.publication_for(&ctx.id);
    let mut c = ReplicationConfig::new(
        ctx.config.host.clone(),
        ctx.user.clone(),
        ctx.password.clone().unwrap_or_default(),
        ctx.config.database.clone(),
        slot,
        publication,
    )
    .with_port(ctx.config.port)
    .with_start_lsn(Lsn::from_u64(start))
    .with_ack_lsn(Lsn::from_u64(start))
    .with_status_interval(Duration::from_secs(1))
    .with_wakeup_interval(Duration::from_secs(1))
    .with_buffer_size(16_384)
    .with_application_name("aragora-cdc");
    if let Some(o) = &ctx.config.options {
        c = c.with_options(o.clone());
    }
    c
}

/// Creates or updates the publication (and replica identity); returns the SQL it ran.
pub(crate) async fn install_publication(
    client: &Client,
    ctx: &Ctx,
    tables: &[TableInfo],
) -> Result<String, CdcError> {
    let publication = ctx.config.publication_for(&ctx.id);
    let have: HashSet<(String, String)> = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_some();
    let want: HashSet<(String, String)> = tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let list: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
    let mut sql = String::new();
    if !exists {
        sql.push_str(&format!(
            "CREATE PUBLICATION {} FOR TABLE {};\n",
            quote_ident(&publication),
            list.join(", ")
        ));
    } else if have != want {
        sql.push_str(&format!(
            "ALTER PUBLICATION {} SET TABLE {};\n",
            quote_ident(&publication),
            list.join(", ")
        ));
    }
    if ctx.config.replica_identity_full {
        for t in tables {
            let ident: i8 = client
                .query_one(
                    "SELECT relreplident FROM pg_class WHERE oid = $1",
                    &[&t.oid],
                )
                .await?
                .get(0);
            if ident as u8 != b'f' {
                sql.push_str(&format!(
                    "ALTER TABLE {} REPLICA IDENTITY FULL;\n",
                    t.qualified()
                ));
            }
        }
    }
    if !sql.is_empty() {
        client
            .batch_execute(&format!("BEGIN;\n{sql}COMMIT;"))
            .await
            .map_err(|e| {
                CdcError::Source(format!(
                    "creating the publication failed ({}); the user needs ownership of the \
                     tables (or run `aragora cdc install` as one that has)",
                    crate::error::pg_error_text(&e)
                ))
            })?;
    }
    Ok(sql)
}

/// What install does, as SQL for review (the slot itself is created by the connector's first
/// start, with the snapshot it exports).
pub(crate) fn install_sql(ctx: &Ctx, tables: &[TableInfo]) -> String {
    let publication = quote_ident(&ctx.config.publication_for(&ctx.id));
    let list: Vec<String> = tables.iter().map(|t| t.qualified()).collect();
    let mut sql = format!(
        "-- or, if it exists: ALTER PUBLICATION {publication} SET TABLE {list};\n\
         CREATE PUBLICATION {publication} FOR TABLE {list};\n",
        list = list.join(", ")
    );
    if ctx.config.replica_identity_full {
        for t in tables {
            sql.push_str(&format!(
                "ALTER TABLE {} REPLICA IDENTITY FULL;\n",
                t.qualified()
            ));
        }
    }
    sql
}

pub(crate) fn uninstall_sql(ctx: &Ctx) -> String {
    let slot = ctx.config.slot_for(&ctx.id);
    format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}';\n\
         DROP PUBLICATION IF EXISTS {};\n",
        quote_ident(&ctx.config.publication_for(&ctx.id))
    )
}

/// Drops the slot and the publication.
pub(crate) async fn uninstall(client: &Client, ctx: &Ctx) -> Result<(), CdcError> {
    let slot = ctx.config.slot_for(&ctx.id);
    // Right after stop() the server's walsender may not have noticed the disconnect yet and
    // still holds the slot (55006 object_in_use): give it a few seconds to let go.
    let mut tries = 0;
    loop {
        let dropped = client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match dropped {
            Err(e)
                if tries < 50
                    && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => {
                other?;
                break;
            }
        }
    }
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&ctx.config.publication_for(&ctx.id))
        ))
        .await?;
    Ok(())
}

/// A session whose transaction imported the slot's exported snapshot.
pub(crate) struct SnapshotSource {
    client: Client,
    start: u64,
}

pub(crate) struct Prepared {
    tables: Vec<TableInfo>,
    snapshot: Option<SnapshotSource>,
}

/// Runs in `start()` (and again after a failure before the snapshot finished): publication in
/// place, slot in place, and — on a first start — the snapshot transaction open.
pub(crate) async fn prepare(ctx: &Ctx) -> Result<Prepared, CdcError> {
    let client = connect(&ctx.pg, None).await?;
    let tables = resolve_tables(&client, &ctx.config).await?;
    let publication = ctx.config.publication_for(&ctx.id);
    if ctx.config.install {
        install_publication(&client, ctx, &tables).await?;
    } else if client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await?
        .is_none()
    {
        return Err(CdcError::config(
            "config.install",
            format!(
                "publication {publication} does not exist and install is false: run `aragora cdc install` first"
            ),
        ));
    }
    let slot = ctx.config.slot_for(&ctx.id);
    let existing: Option<bool> = client
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .map(|r| r.get(0));
    let cp = ctx.checkpoints.load(&ctx.id).await?;
    if let Some(cp) = &cp
        && cp.snapshot_done
    {
        return match existing {
            Some(_) => Ok(Prepared {
                tables,
                snapshot: None,
            }),
            None => Err(CdcError::Source(format!(
                "replication slot {slot} is missing, so the changes since the checkpoint cannot \
                 be recovered; delete and re-create the connector to snapshot again"
            ))),
        };
    }
    let want_snapshot = ctx.config.snapshot == SnapshotMode::Initial;
    // A snapshot that never finished: part of it may be downstream already, so keep the slot
    // (it holds every change since its consistent point, deletes included), copy the tables
    // again and replay the slot from that point.
    if let (Some(cp), Some(false), true) = (&cp, existing, want_snapshot)
        && !cp.resume_token.is_empty()
    {
        let start = Token::parse(&cp.resume_token)?.start;
        let snap = connect(&ctx.pg, None).await?;
        snap.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
            .await?;
        return Ok(Prepared {
            tables,
            snapshot: Some(SnapshotSource {
                client: snap,
                start,
            }),
        });
    }
    // First start: a fresh slot and its snapshot.
    match existing {
        Some(true) => {
            return Err(CdcError::Source(format!(
                "replication slot {slot} is in use by another session"
            )));
        }
        Some(false) => {
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await?;
        }
        None => {}
    }
    let mut gated = ReplicationClient::connect_gated(repl_config(ctx, 0)).await?;
    let rows = gated
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT '{}')",
            if want_snapshot { "export" } else { "nothing" }
        ))
        .await?;
    let text = |i: usize| -> Option<String> {
        rows.first()
            .and_then(|r| r.get(i).cloned().flatten())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let start = text(1)
        .and_then(|l| Lsn::parse(&l).ok())
        .ok_or_else(|| CdcError::Source("CREATE_REPLICATION_SLOT returned no LSN".into()))?
        .as_u64();
    if !want_snapshot {
        drop(gated);
        ctx.checkpoints
            .save(
                &ctx.id,
                &Checkpoint {
                    resume_token: Token {
                        start,
                        partial: None,
                    }
                    .render(),
                    sequence_number: 0,
                    snapshot_done: true,
                },
                &[],
            )
            .await?;
        return Ok(Prepared {
            tables,
            snapshot: None,
        });
    }
    let name = text(2).ok_or_else(|| CdcError::Source("slot exported no snapshot".into()))?;
    // Marks the attempt, so a crash during the snapshot is followed by a full replay.
    ctx.checkpoints
        .save(
            &ctx.id,
            &Checkpoint {
                resume_token: Token {
                    start,
                    partial: None,
                }
                .render(),
                sequence_number: 0,
                snapshot_done: false,
            },
            &[],
        )
        .await?;
    let snap = connect(&ctx.pg, None).await?;
    snap.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        name.replace('\'', "''")
    ))
    .await?;
    // The importing transaction now holds the snapshot; the exporting session may end.
    drop(gated);
    Ok(Prepared {
        tables,
        snapshot: Some(SnapshotSource {
            client: snap,
            start,
        }),
    })
}

/// The background task.
pub(crate) async fn run(ctx: Arc<Ctx>, prepared: Prepared, stop: CancellationToken) {
    let mut prepared = Some(prepared);
    let (ctx, stop) = (&ctx, &stop);
    supervise(&ctx.id, &ctx.status, "replication session", stop, || {
        let prepared = prepared.take();
        async move {
            let p = match prepared {
                Some(p) => p,
                None => prepare(ctx).await?,
            };
            Ok(session(ctx, p, stop).await?)
        }
    })
    .await
}

async fn session(
    ctx: &Arc<Ctx>,
    prepared: Prepared,
    stop: &CancellationToken,
) -> Result<(), CdcError> {
    let cp = ctx.checkpoints.load(&ctx.id).await?.unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Batch>(4);
    let (rel_tx, rel_rx) = watch::channel(0u64);
    let dispatcher = tokio::spawn(ctx.dispatcher().run(rx, rel_tx, stop.clone()));
    let read = stream(ctx, prepared, cp, tx, rel_rx, stop).await;
    crate::pipeline::join_dispatcher(dispatcher).await?;
    read
}

struct Txn {
    final_lsn: u64,
    n: u64,
    timestamp: String,
}

struct Rel {
    relation: Relation,
    table: Option<TableInfo>,
}

async fn stream(
    ctx: &Arc<Ctx>,
    prepared: Prepared,
    cp: Checkpoint,
    tx: mpsc::Sender<Batch>,
    mut rel_rx: watch::Receiver<u64>,
    stop: &CancellationToken,
) -> Result<(), CdcError> {
    let Prepared { tables, snapshot } = prepared;
    let mut seq = cp.sequence_number;
    let mut token = match snapshot {
        Some(src) => {
            ctx.status.set_phase("snapshot");
            let after = Token {
                start: src.start,
                partial: None,
            };
            let rendered = after.render();
            let done = move |seq| Checkpoint {
                resume_token: rendered,
                sequence_number: seq,
                snapshot_done: true,
            };
            match scan::snapshot(ctx, &src.client, &tables, &tx, 0, done, None).await? {
                Some(last) => seq = last,
                None => return Ok(()),
            }
            src.client.batch_execute("COMMIT").await?;
            after
        }
        None => Token::parse(&cp.resume_token)?,
    };
    ctx.status.set_phase("streaming");
    ctx.status.set_source_error(None);
    let by_name: HashMap<(String, String), TableInfo> = tables
        .into_iter()
        .map(|t| ((t.schema.clone(), t.name.clone()), t))
        .collect();
    let mut relations: HashMap<u32, Rel> = HashMap::new();
    let mut repl = ReplicationClient::connect(repl_config(ctx, token.start)).await?;
    repl.wait_started().await?;
    let batch_size = ctx.config.batch_size;
    let max_pending = batch_size.saturating_mul(4).max(1);
    let flush_after = Duration::from_millis(20);
    let mut txn: Option<Txn> = None;
    let mut events: Vec<ChangeEvent> = Vec::with_capacity(batch_size);
    let mut first_pending: Option<Instant> = None;
    let mut last_commit = token.start;
    let mut released = token.start;
    let mut applied = token.start;
    let result = loop {
        let acked = *rel_rx.borrow_and_update();
        if acked > applied {
            applied = acked;
            repl.update_applied_lsn(Lsn::from_u64(acked));
        }
        // Committed events waiting: flush them when nothing more arrives soon.
        let ev = match first_pending.filter(|_| txn.is_none()) {
            Some(since) => {
                let left = flush_after.saturating_sub(since.elapsed());
                tokio::select! {
                    r = repl.recv() => r,
                    _ = tokio::time::sleep(left) => {
                        if !send(&tx, &mut events, &mut first_pending, Token { start: last_commit, partial: None }, seq, Some(last_commit), stop).await {
                            break Ok(());
                        }
                        released = last_commit;
                        continue;
                    }
                    _ = stop.cancelled() => break Ok(()),
                }
            }
            None => tokio::select! {
                r = repl.recv() => r,
                _ = stop.cancelled() => break Ok(()),
                r = rel_rx.changed() => {
                    if r.is_err() { break Ok(()); }
                    continue;
                }
            },
        };
        let ev = match ev {
            Ok(Some(ev)) => ev,
            Ok(None) => break Err(CdcError::Source("replication stream ended".into())),
            Err(e) => break Err(e.into()),
        };
        match ev {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                txn = Some(Txn {
                    final_lsn: final_lsn.as_u64(),
                    n: 0,
                    timestamp: aragora_core::time::rfc3339(commit_time_micros / 1000 + PG_EPOCH_MS),
                });
            }
            ReplicationEvent::XLogData { data, .. } => {
                let msg = match pgoutput::decode(&data) {
                    Ok(m) => m,
                    Err(e) => break Err(CdcError::Source(e.to_string())),
                };
                match msg {
                    Message::Relation(r) => {
                        if let Some(old) = relations.get(&r.id)
                            && old.relation.columns != r.columns
                        {
                            tracing::info!(connector = %ctx.id, table = %r.name, "relation changed");
                            ctx.status.schema_changed();
                        }
                        let table = by_name.get(&(r.namespace.clone(), r.name.clone())).cloned();
                        relations.insert(r.id, Rel { relation: r, table });
                    }
                    Message::Insert { relation, .. }
                    | Message::Update { relation, .. }
                    | Message::Delete { relation, .. } => {
                        let Some(t) = txn.as_mut() else {
                            break Err(CdcError::Source("change outside a transaction".into()));
                        };
                        t.n += 1;
                        if let Some((lsn, n)) = token.partial
                            && lsn == t.final_lsn
                            && t.n <= n
                        {
                            continue; // acknowledged before a restart
                        }
                        let Some(rel) = relations.get(&relation) else {
                            break Err(CdcError::Source(format!(
                                "change for relation {relation} before its Relation message"
                            )));
                        };
                        let Some(table) = &rel.table else { continue };
                        seq += 1;
                        let event = match to_event(ctx, &rel.relation, table, msg, t, seq) {
                            Ok(e) => e,
                            Err(e) => break Err(e),
                        };
                        events.push(event);
                        if events.len() >= max_pending {
                            let at = Token {
                                start: last_commit,
                                partial: Some((t.final_lsn, t.n)),
                            };
                            if !send(&tx, &mut events, &mut first_pending, at, seq, None, stop)
                                .await
                            {
                                break Ok(());
                            }
                        }
                    }
                    Message::Truncate {
                        relations: rels, ..
                    } => {
                        for r in rels {
                            if relations.get(&r).is_some_and(|r| r.table.is_some()) {
                                tracing::warn!(connector = %ctx.id, relation = r, "TRUNCATE is not a row change; ignored");
                                ctx.status.truncate_ignored();
                            }
                        }
                    }
                    Message::Type { .. } | Message::Origin { .. } | Message::Other(_) => {}
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                txn = None;
                last_commit = end_lsn.as_u64();
                token.partial = None;
                if events.is_empty() {
                    first_pending.get_or_insert_with(Instant::now);
                } else if events.len() >= batch_size {
                    if !send(
                        &tx,
                        &mut events,
                        &mut first_pending,
                        Token {
                            start: last_commit,
                            partial: None,
                        },
                        seq,
                        Some(last_commit),
                        stop,
                    )
                    .await
                    {
                        break Ok(());
                    }
                    released = last_commit;
                } else {
                    first_pending.get_or_insert_with(Instant::now);
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                // Idle and everything delivered: confirm the server's position so the slot
                // does not hold WAL that has nothing for us.
                let end = wal_end.as_u64();
                if txn.is_none() && events.is_empty() && end > released.max(last_commit) {
                    last_commit = end;
                    if !send(
                        &tx,
                        &mut events,
                        &mut first_pending,
                        Token {
                            start: end,
                            partial: None,
                        },
                        seq,
                        Some(end),
                        stop,
                    )
                    .await
                    {
                        break Ok(());
                    }
                    released = end;
                }
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
    };
    repl.stop();
    let _ = tokio::time::timeout(Duration::from_secs(5), repl.shutdown()).await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn send(
    tx: &mpsc::Sender<Batch>,
    events: &mut Vec<ChangeEvent>,
    first_pending: &mut Option<Instant>,
    at: Token,
    seq: i64,
    release: Option<u64>,
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
        release,
    };
    send_batch(tx, batch, stop).await
}

fn key_only(relation: &Relation, tuple: &[Datum]) -> Vec<Datum> {
    relation
        .columns
        .iter()
        .zip(tuple)
        .map(|(c, d)| {
            if c.identity {
                d.clone()
            } else {
                Datum::UnchangedToast
            }
        })
        .collect()
}

fn old_map(
    relation: &Relation,
    old: &(OldKind, Vec<Datum>),
) -> Result<Map<String, Value>, CdcError> {
    let tuple = match old.0 {
        OldKind::Full => old.1.clone(),
        // Only key columns are real; the nulls the server sends for the rest are not values.
        OldKind::Key => key_only(relation, &old.1),
    };
    pgoutput::tuple_to_map(relation, &tuple, None).map_err(|e| CdcError::Source(e.to_string()))
}

fn to_event(
    ctx: &Ctx,
    relation: &Relation,
    table: &TableInfo,
    msg: Message,
    t: &Txn,
    seq: i64,
) -> Result<ChangeEvent, CdcError> {
    let conv = |e: pgoutput::DecodeError| CdcError::Source(e.to_string());
    let (operation, data, old_data) = match msg {
        Message::Insert { new, .. } => (
            ChangeOperation::Insert,
            pgoutput::tuple_to_map(relation, &new, None).map_err(conv)?,
            Map::new(),
        ),
        Message::Update { old, new, .. } => {
            let old = old.as_ref().map(|o| old_map(relation, o)).transpose()?;
            let data = pgoutput::tuple_to_map(relation, &new, old.as_ref()).map_err(conv)?;
            (ChangeOperation::Update, data, old.unwrap_or_default())
        }
        Message::Delete { old, .. } => (
            ChangeOperation::Delete,
            Map::new(),
            old_map(relation, &old)?,
        ),
        _ => return Err(CdcError::Source("not a row change".into())),
    };
    let primary_key = if operation == ChangeOperation::Delete {
        table.key_of(&old_data)
    } else {
        table.key_of(&data)
    };
    let at = Lsn::from_u64(t.final_lsn);
    Ok(ChangeEvent {
        id: crate::event_id(&ctx.id, &format!("lsn:{at}:{}", t.n)),
        source_type: CdcSourceType::Postgresql,
        connector_id: ctx.id.clone(),
        operation,
        timestamp: t.timestamp.clone(),
        database: ctx.config.database.clone(),
        table: table.display(),
        data,
        old_data,
        primary_key,
        resume_token: format!("{at}:{}", t.n),
        sequence_number: seq,
    })
}

/// Slot lag and retained WAL.
pub(crate) async fn health(client: &Client, slot: &str) -> Result<Map<String, Value>, CdcError> {
    let row = client
        .query_opt(
            "SELECT active, (pg_current_wal_lsn() - confirmed_flush_lsn)::int8, \
             (pg_current_wal_lsn() - restart_lsn)::int8, confirmed_flush_lsn::text, \
             wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    let mut out = Map::new();
    match row {
        Some(r) => {
            out.insert("slot_exists".into(), json!(true));
            out.insert("slot_active".into(), json!(r.get::<_, bool>(0)));
            out.insert("slot_lag_bytes".into(), json!(r.get::<_, Option<i64>>(1)));
            out.insert(
                "retained_wal_bytes".into(),
                json!(r.get::<_, Option<i64>>(2)),
            );
            out.insert(
                "confirmed_flush_lsn".into(),
                json!(r.get::<_, Option<String>>(3)),
            );
            out.insert("wal_status".into(), json!(r.get::<_, Option<String>>(4)));
        }
        None => {
            out.insert("slot_exists".into(), json!(false));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = Token::parse("0/16B3748").unwrap();
        assert_eq!(t.partial, None);
        assert_eq!(t.render(), "0/16B3748");
        let t = Token::parse("0/16B3748;0/16B4000:5").unwrap();
        assert_eq!(t.partial, Some((0x16B4000, 5)));
        assert_eq!(t.render(), "0/16B3748;0/16B4000:5");
        assert!(Token::parse("nope").is_err());
        assert!(Token::parse("0/1;0/2").is_err());
    }
}
