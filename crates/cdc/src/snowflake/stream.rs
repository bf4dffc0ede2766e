//! Stream mode (`config.mode: "stream"`): a Snowflake stream per table, consumed crash-safely
//! through a staging table.
//!
//! A stream's offset advances only when a DML statement that reads it commits, and the SQL API
//! is sessionless, so each poll runs, per table, one multi-statement request
//!
//! ```sql
//! BEGIN;
//! DELETE FROM <staging> WHERE "ARAGORA_BATCH" <= <acknowledged batch>;   -- when one is due
//! INSERT INTO <staging> SELECT <n>, s.* FROM <stream> s;
//! COMMIT;
//! ```
//!
//! which moves the stream's rows into the staging table under batch number `n` and advances the
//! offset in the same transaction: the changes are either staged (offset advanced) or still in
//! the stream (offset not advanced), never neither. The batch is then read back, paired like the
//! `CHANGES` path and dispatched; its staged rows are deleted only once the dispatcher persisted
//! the checkpoint `sfs:<n>` (the next consuming transaction does it). A restart first delivers the
//! batches staged after the checkpoint, oldest first, with the same event ids (table, batch,
//! `METADATA$ROW_ID`).

use super::{
    Chunks, Ctx, Paired, SnowflakeMode, api::ResultSet, explain, pair, quote, rows_with_meta,
};
use crate::pipeline::Batch;
use crate::{CdcError, Checkpoint};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Resume tokens of stream mode start with this: `sfs:<n>` = batches up to `n` acknowledged.
pub const TOKEN_PREFIX: &str = "sfs:";

/// The batch-number column of a staging table.
pub const BATCH: &str = "ARAGORA_BATCH";
/// The stream's `METADATA$ACTION`, `METADATA$ISUPDATE` and `METADATA$ROW_ID` as staged.
pub const STAGED_META: [&str; 3] = ["ARAGORA_ACTION", "ARAGORA_ISUPDATE", "ARAGORA_ROW_ID"];

/// `sfs:<n>`.
pub fn render_token(batch: u64) -> String {
    format!("{TOKEN_PREFIX}{batch}")
}

/// The batch number of a `sfs:<n>` token (an empty token is 0).
pub fn parse_token(s: &str) -> Result<u64, CdcError> {
    if s.is_empty() {
        return Ok(0);
    }
    s.strip_prefix(TOKEN_PREFIX)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| CdcError::Source(format!("not a Snowflake stream-mode resume token: `{s}`")))
}

/// The error for a checkpoint written by the other mode.
pub fn other_mode(stored: &str, configured: &str) -> CdcError {
    CdcError::config(
        "config.mode",
        format!(
            "the stored checkpoint was written in `{stored}` mode and the connector is \
             configured for `{configured}`; reset the checkpoint (or delete and recreate the \
             connector) to switch modes"
        ),
    )
}

/// The stream and staging table names (unquoted, upper case) of `table` for a connector:
/// `ARAGORA_<ID>_<TABLE>_STREAM` and `ARAGORA_<ID>_<TABLE>_STAGE`, where `<ID>` is the connector
/// id upper-cased with every character other than a letter, digit or `_` replaced by `_`.
pub fn object_names(connector_id: &str, table: &str) -> (String, String) {
    let id: String = connector_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let base = format!("ARAGORA_{id}_{}", table.to_ascii_uppercase());
    (format!("{base}_STREAM"), format!("{base}_STAGE"))
}

/// `CREATE STREAM IF NOT EXISTS … ON TABLE …` (with `SHOW_INITIAL_ROWS = TRUE` for a snapshot:
/// the first consumption then returns the rows present when the stream was created).
pub fn create_stream_sql(stream: &str, table: &str, initial_rows: bool) -> String {
    let mut s = format!("CREATE STREAM IF NOT EXISTS {stream} ON TABLE {table}");
    if initial_rows {
        s.push_str(" SHOW_INITIAL_ROWS = TRUE");
    }
    s
}

/// The staging table: the batch number, the table's columns, then the stream's metadata
/// columns under legal names (in the order `SELECT <n>, s.*` of a stream yields them).
pub fn create_stage_sql(stage: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {stage} AS SELECT CAST(NULL AS NUMBER(38, 0)) AS \"{BATCH}\", \
         t.*, CAST(NULL AS VARCHAR) AS \"{}\", CAST(NULL AS BOOLEAN) AS \"{}\", \
         CAST(NULL AS VARCHAR) AS \"{}\" FROM {table} t LIMIT 0",
        STAGED_META[0], STAGED_META[1], STAGED_META[2]
    )
}

/// The statements of one consuming request: delete the acknowledged batches (if any are due),
/// move the stream's rows into the staging table as batch `batch`, all in one transaction.
pub fn consume_statements(
    stage: &str,
    stream: &str,
    batch: u64,
    delete_upto: Option<u64>,
) -> Vec<String> {
    let mut v = vec!["BEGIN".to_string()];
    if let Some(d) = delete_upto {
        v.push(delete_sql(stage, d));
    }
    v.push(format!(
        "INSERT INTO {stage} SELECT {batch}, s.* FROM {stream} s"
    ));
    v.push("COMMIT".to_string());
    v
}

/// `DELETE FROM <staging> WHERE "ARAGORA_BATCH" <= n`.
pub fn delete_sql(stage: &str, upto: u64) -> String {
    format!("DELETE FROM {stage} WHERE \"{BATCH}\" <= {upto}")
}

/// The staged rows of batch `batch`.
pub fn batch_sql(stage: &str, batch: u64) -> String {
    format!("SELECT * FROM {stage} WHERE \"{BATCH}\" = {batch}")
}

/// The staged rows of every batch after `after`, oldest batch first (left by a crash).
pub fn leftover_sql(stage: &str, after: u64) -> String {
    format!("SELECT * FROM {stage} WHERE \"{BATCH}\" > {after} ORDER BY \"{BATCH}\"")
}

/// Turns a stream error into what to do about it: a stale stream lost changes for good.
pub fn explain_stream(table: &str, stream: &str, e: CdcError) -> CdcError {
    let CdcError::Source(m) = &e else { return e };
    if m.to_ascii_lowercase().contains("stale") {
        return CdcError::Source(format!(
            "{}: stream {stream} on {table} is stale: its offset fell outside the table's data \
             retention, so the changes since are gone. Recreate the stream and resync: delete \
             the connector (its teardown drops the stream and staging table) or DROP STREAM \
             {stream}, then start again with `snapshot: true`; raise \
             MAX_DATA_EXTENSION_TIME_IN_DAYS / DATA_RETENTION_TIME_IN_DAYS so it does not recur \
             ({m})",
            crate::error::HISTORY_LOST
        ));
    }
    explain(table, e)
}

struct Objects {
    table: String,
    qualified: String,
    stream: String,
    stage: String,
}

fn objects(ctx: &Ctx) -> Vec<Objects> {
    let q = |n: &str| {
        format!(
            "{}.{}.{}",
            quote(&ctx.config.database),
            quote(&ctx.config.schema),
            quote(n)
        )
    };
    ctx.config
        .tables
        .iter()
        .map(|t| {
            let (s, st) = object_names(&ctx.id, t);
            Objects {
                table: t.clone(),
                qualified: ctx.config.qualified(t),
                stream: q(&s),
                stage: q(&st),
            }
        })
        .collect()
}

/// `start()` in stream mode: checks the stored checkpoint's mode (or saves `sfs:0`), creates
/// the streams and staging tables if missing, and refuses a stale stream.
pub(super) async fn prepare(ctx: &Ctx) -> Result<(), CdcError> {
    match ctx.checkpoints.load(&ctx.id).await? {
        Some(c) if !c.resume_token.is_empty() => {
            if !c.resume_token.starts_with(TOKEN_PREFIX) {
                return Err(other_mode("changes", "stream"));
            }
            parse_token(&c.resume_token)?;
        }
        _ => {
            let first = Checkpoint {
                resume_token: render_token(0),
                sequence_number: 0,
                snapshot_done: true,
            };
            ctx.checkpoints.save(&ctx.id, &first, &[]).await?;
        }
    }
    for o in objects(ctx) {
        let why = |e| explain_stream(&o.qualified, &o.stream, e);
        ctx.api
            .query(&create_stream_sql(
                &o.stream,
                &o.qualified,
                ctx.config.snapshot,
            ))
            .await
            .map_err(why)?;
        ctx.api
            .query(&create_stage_sql(&o.stage, &o.qualified))
            .await
            .map_err(why)?;
        // Reading a stale stream fails: refuse it now rather than on the first poll.
        ctx.api
            .query(&format!("SELECT * FROM {} LIMIT 0", o.stream))
            .await
            .map_err(why)?;
    }
    Ok(())
}

/// Drops every table's stream and staging table.
pub(super) async fn teardown(ctx: &Ctx) -> Result<(), CdcError> {
    for o in objects(ctx) {
        ctx.api
            .query(&format!("DROP STREAM IF EXISTS {}", o.stream))
            .await?;
        ctx.api
            .query(&format!("DROP TABLE IF EXISTS {}", o.stage))
            .await?;
    }
    Ok(())
}

/// Staged rows of one table, by batch number, as change rows.
fn staged(rs: &ResultSet) -> Result<BTreeMap<u64, Vec<super::ChangeRow>>, CdcError> {
    let b = rs
        .columns
        .iter()
        .position(|(c, _)| c.eq_ignore_ascii_case(BATCH))
        .ok_or_else(|| CdcError::Source(format!("staging table without {BATCH}")))?;
    let rows = rows_with_meta(&rs.columns, &rs.rows, STAGED_META, |c| {
        c.eq_ignore_ascii_case(BATCH)
    })?;
    let mut out: BTreeMap<u64, Vec<super::ChangeRow>> = BTreeMap::new();
    for (cells, row) in rs.rows.iter().zip(rows) {
        let n = cells
            .get(b)
            .cloned()
            .flatten()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| CdcError::Source(format!("staged row without {BATCH}")))?;
        out.entry(n as u64).or_default().push(row);
    }
    Ok(out)
}

/// Dispatches batch `n` (the paired changes of each table, in config order); the checkpoint
/// moves from `sfs:<prev>` to `sfs:<n>` with the last chunk, which also lets the staged rows of
/// `n` go. `false` when stopping.
async fn deliver_batch(
    ctx: &Ctx,
    n: u64,
    prev: u64,
    tables: Vec<(String, Vec<Paired>)>,
    seq: &mut i64,
    tx: &mpsc::Sender<Batch>,
    stop: &CancellationToken,
) -> Result<bool, CdcError> {
    let before = Checkpoint {
        resume_token: render_token(prev),
        sequence_number: *seq,
        snapshot_done: true,
    };
    let at = aragora_core::time::now_ms();
    let mut chunks = Chunks::new(ctx, before, tx, stop);
    for (t, paired) in tables {
        let display = ctx.display(&t);
        for p in paired {
            *seq += 1;
            let position = format!("sfs:{display}:{n}:{}", p.3);
            let e = ctx.event(&t, p, &position, at, render_token(n), *seq);
            if !chunks.push(e).await {
                return Ok(false);
            }
        }
    }
    let after = Checkpoint {
        resume_token: render_token(n),
        sequence_number: *seq,
        snapshot_done: true,
    };
    Ok(chunks.finish(after, Some(n)).await)
}

pub(super) async fn session(ctx: &Arc<Ctx>, stop: &CancellationToken) -> Result<(), CdcError> {
    debug_assert_eq!(ctx.config.mode, SnowflakeMode::Stream);
    let cp = ctx.checkpoints.load(&ctx.id).await?.unwrap_or_default();
    let done = parse_token(&cp.resume_token)?;
    let mut seq = cp.sequence_number;
    let (tx, rx) = mpsc::channel::<Batch>(4);
    // The dispatcher reports here the batch whose checkpoint is durable.
    let (rel_tx, rel_rx) = watch::channel(done);
    let dispatcher = tokio::spawn(ctx.dispatcher().run(rx, rel_tx, stop.clone()));
    ctx.status.set_phase("streaming");
    let objects = objects(ctx);
    let read = async {
        // Batches staged after the checkpoint (a crash came between consuming and
        // acknowledging): deliver them again, oldest first.
        let mut leftovers: BTreeMap<u64, Vec<(String, Vec<Paired>)>> = BTreeMap::new();
        for o in &objects {
            let rs = ctx
                .api
                .query(&leftover_sql(&o.stage, done))
                .await
                .map_err(|e| explain_stream(&o.qualified, &o.stream, e))?;
            for (n, rows) in staged(&rs)? {
                leftovers
                    .entry(n)
                    .or_default()
                    .push((o.table.clone(), pair(rows)?));
            }
        }
        let mut sent = done;
        for (n, tables) in leftovers {
            if !deliver_batch(ctx, n, sent, tables, &mut seq, &tx, stop).await? {
                return Ok(());
            }
            sent = n;
        }
        // Staged rows up to here may still be there (deleted by the next consuming request).
        let mut deleted = 0u64;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let released = *rel_rx.borrow();
            let delete = (released > deleted).then_some(released);
            let n = sent + 1;
            let mut tables = Vec::new();
            let mut any = false;
            for o in &objects {
                let why = |e| explain_stream(&o.qualified, &o.stream, e);
                ctx.api
                    .execute_all(&consume_statements(&o.stage, &o.stream, n, delete))
                    .await
                    .map_err(why)?;
                let rs = ctx.api.query(&batch_sql(&o.stage, n)).await.map_err(why)?;
                let rows = staged(&rs)?.remove(&n).unwrap_or_default();
                any |= !rows.is_empty();
                tables.push((o.table.clone(), pair(rows)?));
            }
            if let Some(d) = delete {
                deleted = d;
            }
            if any {
                if !deliver_batch(ctx, n, sent, tables, &mut seq, &tx, stop).await? {
                    return Ok(());
                }
                sent = n;
            }
            ctx.status.set_source_error(None);
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
