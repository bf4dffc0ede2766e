//! Table scans: `sync()` and the initial snapshot. Rows are read through a portal in chunks, so
//! memory stays bounded whatever the table size.

use super::{Ctx, PostgresConfig, TableInfo, connect, quote_ident, resolve_tables};
use crate::connector::SyncRow;
use crate::pipeline::Batch;
use crate::{CdcError, CdcSourceType, ChangeEvent, ChangeOperation, Checkpoint};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel};

const CHUNK: i32 = 1000;

pub enum SyncItem {
    Row(SyncRow),
    /// Largest timestamp-column value seen for a table.
    Mark(String, Value),
}

fn parse_row(text: &str) -> Result<Map<String, Value>, CdcError> {
    serde_json::from_str(text).map_err(|e| CdcError::Source(format!("row is not JSON: {e}")))
}

pub(crate) async fn sync_rows(
    pg: tokio_postgres::Config,
    cfg: PostgresConfig,
    marks: Map<String, Value>,
    tx: mpsc::Sender<Result<SyncItem, CdcError>>,
) {
    let res = async {
        let mut client = connect(&pg, None).await?;
        let tables = resolve_tables(&client, &cfg).await?;
        let txn = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        for t in &tables {
            let display = t.display();
            let pk_order: Vec<String> = t
                .primary_key
                .iter()
                .map(|k| format!("t.{}", quote_ident(k)))
                .collect();
            let mark = cfg
                .timestamp_column
                .as_ref()
                .and_then(|_| marks.get(&display))
                .map(|m| m.to_string());
            let sql = match &cfg.timestamp_column {
                Some(col) => {
                    let c = quote_ident(col);
                    let filter = if mark.is_some() {
                        format!(
                            " WHERE t.{c} > (SELECT r.{c} FROM jsonb_populate_record(NULL::{q}, \
                             jsonb_build_object('{col}', $1::text::jsonb)) r)",
                            q = t.qualified(),
                            col = col.replace('\'', "''"),
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "SELECT to_jsonb(t)::text FROM {} t{filter} ORDER BY t.{c}, {}",
                        t.qualified(),
                        pk_order.join(", ")
                    )
                }
                None => format!(
                    "SELECT to_jsonb(t)::text FROM {} t ORDER BY {}",
                    t.qualified(),
                    pk_order.join(", ")
                ),
            };
            let stmt = txn.prepare(&sql).await?;
            let params: Vec<&(dyn ToSql + Sync)> = match &mark {
                Some(m) => vec![m],
                None => vec![],
            };
            let portal = txn.bind(&stmt, &params).await?;
            let mut last: Option<Value> = None;
            loop {
                let rows = txn.query_portal(&portal, CHUNK).await?;
                if rows.is_empty() {
                    break;
                }
                for r in rows {
                    let data = parse_row(r.get(0))?;
                    let primary_key = t.key_of(&data);
                    if let Some(col) = &cfg.timestamp_column {
                        last = data.get(col).cloned();
                    }
                    let row = SyncRow {
                        evidence_id: format!(
                            "postgresql:{}.{}.{}:{}",
                            cfg.database,
                            t.schema,
                            t.name,
                            crate::canonical_key(&primary_key)
                        ),
                        table: display.clone(),
                        content: crate::render_row(&display, &primary_key, &data),
                        primary_key,
                        data,
                    };
                    if tx.send(Ok(SyncItem::Row(row))).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if let Some(v) = last.filter(|v| !v.is_null()) {
                let _ = tx.send(Ok(SyncItem::Mark(display, v))).await;
            }
        }
        txn.commit().await?;
        Ok::<(), CdcError>(())
    }
    .await;
    if let Err(e) = res {
        let _ = tx.send(Err(e)).await;
    }
}

/// Sends every row of `tables`, as read by the transaction open on `client` (a snapshot), as
/// INSERT events in batches. The last batch carries `done` (the checkpoint that ends the snapshot)
/// and `release`. Returns the last sequence number, or `None` when the dispatcher went away.
pub(crate) async fn snapshot(
    ctx: &Ctx,
    client: &Client,
    tables: &[TableInfo],
    tx: &mpsc::Sender<Batch>,
    mut seq: i64,
    done: impl FnOnce(i64) -> Checkpoint,
    release: Option<u64>,
) -> Result<Option<i64>, CdcError> {
    let timestamp = aragora_core::time::rfc3339(aragora_core::time::now_ms());
    let batch_size = ctx.config.batch_size;
    let mut events = Vec::with_capacity(batch_size);
    for (n, t) in tables.iter().enumerate() {
        let display = t.display();
        let cursor = format!("aragora_snapshot_{n}");
        client
            .batch_execute(&format!(
                "DECLARE {cursor} NO SCROLL CURSOR FOR SELECT to_jsonb(t)::text FROM {} t",
                t.qualified()
            ))
            .await?;
        let fetch = client
            .prepare(&format!("FETCH {CHUNK} FROM {cursor}"))
            .await?;
        loop {
            let rows = client.query(&fetch, &[]).await?;
            if rows.is_empty() {
                break;
            }
            ctx.status.add_snapshot_rows(rows.len() as u64);
            for r in rows {
                let text: &str = r.get(0);
                let data = parse_row(text)?;
                seq += 1;
                events.push(ChangeEvent {
                    id: crate::event_id(&ctx.id, &format!("snapshot:{display}:{text}")),
                    source_type: CdcSourceType::Postgresql,
                    connector_id: ctx.id.clone(),
                    operation: ChangeOperation::Insert,
                    timestamp: timestamp.clone(),
                    database: ctx.config.database.clone(),
                    table: display.clone(),
                    primary_key: t.key_of(&data),
                    data,
                    old_data: Map::new(),
                    resume_token: "snapshot".into(),
                    sequence_number: seq,
                });
                if events.len() >= batch_size {
                    let batch = Batch {
                        events: std::mem::replace(&mut events, Vec::with_capacity(batch_size)),
                        checkpoint: Checkpoint {
                            resume_token: String::new(),
                            sequence_number: seq,
                            snapshot_done: false,
                        },
                        release: None,
                    };
                    if tx.send(batch).await.is_err() {
                        return Ok(None);
                    }
                }
            }
        }
        client.batch_execute(&format!("CLOSE {cursor}")).await?;
    }
    let batch = Batch {
        events,
        checkpoint: done(seq),
        release,
    };
    Ok(tx.send(batch).await.is_ok().then_some(seq))
}
