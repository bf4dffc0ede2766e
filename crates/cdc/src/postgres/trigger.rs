//! Trigger mode: row triggers write each change (old row, new row, primary key) into a changelog
//! table in the same transaction; a statement trigger NOTIFYs, which only wakes the reader.
//!
//! Reading in id order is safe only up to a *horizon*: changelog ids are taken when a row is
//! written, but transactions commit in another order, so a smaller id can become visible after a
//! larger one. The reader therefore reads the sequence's high-water mark M, then waits until every
//! transaction that held the changelog open at that moment has ended (the way `CREATE INDEX
//! CONCURRENTLY` waits for lockers); after that no row with id ≤ M can still appear, and rows up
//! to M are read in id order. The resume token is the changelog id; acknowledged rows are pruned.

use super::{Ctx, TableInfo, connect, display_name, quote_ident, resolve_tables, scan};
use crate::pipeline::{Batch, Status};
use crate::runner::supervise;
use crate::{CdcError, CdcSourceType, ChangeEvent, ChangeOperation, Checkpoint};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;

pub const SCHEMA: &str = "aragora_cdc";

pub fn log_table(slot: &str) -> String {
    format!("{SCHEMA}.{}", quote_ident(&format!("{slot}_log")))
}

fn capture_fn(slot: &str) -> String {
    format!("{SCHEMA}.{}", quote_ident(&format!("{slot}_capture")))
}

fn wake_fn(slot: &str) -> String {
    format!("{SCHEMA}.{}", quote_ident(&format!("{slot}_wake")))
}

pub fn channel(slot: &str) -> String {
    format!("aragora_cdc_{slot}")
}

fn row_trigger(slot: &str) -> String {
    format!("aragora_cdc_{slot}")
}

fn wake_trigger(slot: &str) -> String {
    format!("aragora_cdc_{slot}_wake")
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The SQL that installs capture for `tables` (idempotent; run it in one transaction).
pub fn install_sql(slot: &str, tables: &[TableInfo]) -> String {
    let log = log_table(slot);
    let mut sql = format!(
        "SELECT pg_advisory_xact_lock(hashtext('aragora_cdc_install'));\n\
         CREATE SCHEMA IF NOT EXISTS {SCHEMA};\n\
         CREATE TABLE IF NOT EXISTS {log} (\n\
         \x20   id           BIGSERIAL PRIMARY KEY,\n\
         \x20   op           TEXT NOT NULL,\n\
         \x20   schema_name  TEXT NOT NULL,\n\
         \x20   table_name   TEXT NOT NULL,\n\
         \x20   pk           JSONB NOT NULL,\n\
         \x20   old_row      JSONB,\n\
         \x20   new_row      JSONB,\n\
         \x20   xid          XID8 NOT NULL DEFAULT pg_current_xact_id(),\n\
         \x20   captured_at  TIMESTAMPTZ NOT NULL DEFAULT now()\n\
         );\n\
         CREATE OR REPLACE FUNCTION {capture}() RETURNS trigger LANGUAGE plpgsql AS $aragora$\n\
         DECLARE n jsonb; o jsonb; k jsonb := '{{}}'::jsonb; c text;\n\
         BEGIN\n\
         \x20 IF TG_OP <> 'DELETE' THEN n := to_jsonb(NEW); END IF;\n\
         \x20 IF TG_OP <> 'INSERT' THEN o := to_jsonb(OLD); END IF;\n\
         \x20 FOREACH c IN ARRAY TG_ARGV LOOP k := k || jsonb_build_object(c, coalesce(n, o) -> c); END LOOP;\n\
         \x20 INSERT INTO {log} (op, schema_name, table_name, pk, old_row, new_row)\n\
         \x20 VALUES (left(TG_OP, 1), TG_TABLE_SCHEMA, TG_TABLE_NAME, k, o, n);\n\
         \x20 RETURN NULL;\n\
         END\n\
         $aragora$;\n\
         CREATE OR REPLACE FUNCTION {wake}() RETURNS trigger LANGUAGE plpgsql AS $aragora$\n\
         BEGIN PERFORM pg_notify({chan}, ''); RETURN NULL; END\n\
         $aragora$;\n",
        capture = capture_fn(slot),
        wake = wake_fn(slot),
        chan = literal(&channel(slot)),
    );
    for t in tables {
        let args: Vec<String> = t.primary_key.iter().map(|k| literal(k)).collect();
        sql.push_str(&format!(
            "DROP TRIGGER IF EXISTS {rt} ON {q};\n\
             CREATE TRIGGER {rt} AFTER INSERT OR UPDATE OR DELETE ON {q} FOR EACH ROW \
             EXECUTE FUNCTION {capture}({args});\n\
             DROP TRIGGER IF EXISTS {wt} ON {q};\n\
             CREATE TRIGGER {wt} AFTER INSERT OR UPDATE OR DELETE ON {q} FOR EACH STATEMENT \
             EXECUTE FUNCTION {wake}();\n",
            rt = quote_ident(&row_trigger(slot)),
            wt = quote_ident(&wake_trigger(slot)),
            q = t.qualified(),
            capture = capture_fn(slot),
            wake = wake_fn(slot),
            args = args.join(", "),
        ));
    }
    sql
}

/// The SQL that removes capture (triggers go with their functions).
pub fn uninstall_sql(slot: &str) -> String {
    format!(
        "DROP FUNCTION IF EXISTS {}() CASCADE;\nDROP FUNCTION IF EXISTS {}() CASCADE;\n\
         DROP TABLE IF EXISTS {};\n",
        capture_fn(slot),
        wake_fn(slot),
        log_table(slot)
    )
}

/// Installs (or updates) capture in one transaction; drops the triggers of tables no longer
/// configured. Returns the SQL it ran.
pub async fn install(
    client: &Client,
    slot: &str,
    tables: &[TableInfo],
) -> Result<String, CdcError> {
    let mut sql = install_sql(slot, tables);
    let wanted: HashSet<u32> = tables.iter().map(|t| t.oid).collect();
    let stale = client
        .query(
            "SELECT tgrelid, tgrelid::regclass::text FROM pg_trigger WHERE tgname = $1",
            &[&row_trigger(slot)],
        )
        .await?;
    for r in stale {
        let oid: u32 = r.get(0);
        if !wanted.contains(&oid) {
            let rel: String = r.get(1);
            sql.push_str(&format!(
                "DROP TRIGGER IF EXISTS {} ON {rel};\nDROP TRIGGER IF EXISTS {} ON {rel};\n",
                quote_ident(&row_trigger(slot)),
                quote_ident(&wake_trigger(slot)),
            ));
        }
    }
    client
        .batch_execute(&format!("BEGIN;\n{sql}COMMIT;"))
        .await
        .map_err(|e| {
            CdcError::Source(format!(
                "installing capture failed ({}); the connecting user needs CREATE on the \
                 database and ownership of the tables, or run `aragora cdc install` as one that has",
                crate::error::pg_error_text(&e)
            ))
        })?;
    Ok(sql)
}

pub async fn uninstall(client: &Client, slot: &str) -> Result<(), CdcError> {
    client
        .batch_execute(&format!("BEGIN;\n{}COMMIT;", uninstall_sql(slot)))
        .await?;
    Ok(())
}

/// True when the changelog exists and exactly the configured tables carry the triggers.
async fn installed(client: &Client, slot: &str, tables: &[TableInfo]) -> Result<bool, CdcError> {
    let log: Option<u32> = client
        .query_one("SELECT to_regclass($1)::oid", &[&log_table(slot)])
        .await?
        .get(0);
    if log.is_none() {
        return Ok(false);
    }
    let rows = client
        .query(
            "SELECT tgrelid FROM pg_trigger WHERE tgname = $1",
            &[&row_trigger(slot)],
        )
        .await?;
    let have: HashSet<u32> = rows.iter().map(|r| r.get(0)).collect();
    let want: HashSet<u32> = tables.iter().map(|t| t.oid).collect();
    Ok(have == want)
}

pub(crate) struct Prepared {
    tables: Vec<TableInfo>,
}

/// Runs in `start()`: capture must be in place when it returns.
pub(crate) async fn prepare(ctx: &Ctx) -> Result<Prepared, CdcError> {
    let client = connect(&ctx.pg, None).await?;
    let tables = resolve_tables(&client, &ctx.config).await?;
    let slot = ctx.config.slot_for(&ctx.id);
    if !installed(&client, &slot, &tables).await? {
        if !ctx.config.install {
            return Err(CdcError::config(
                "config.install",
                format!(
                    "capture is not installed for {slot} on these tables and install is false: \
                     run `aragora cdc install` first"
                ),
            ));
        }
        install(&client, &slot, &tables).await?;
    }
    Ok(Prepared { tables })
}

/// The background task: sessions with reconnect and backoff until stopped or fenced.
pub(crate) async fn run(ctx: Arc<Ctx>, prepared: Prepared, stop: CancellationToken) {
    let mut tables = Some(prepared.tables);
    let (ctx, stop) = (&ctx, &stop);
    supervise(&ctx.id, &ctx.status, "trigger session", stop, || {
        let tables = tables.take();
        async move { Ok(session(ctx, tables, stop).await?) }
    })
    .await
}

/// Parsed trigger-mode resume token: `<id>` or `<id>;<V>;<snapshot>` while changelog rows up to V
/// that the initial snapshot already saw are still to be skipped.
#[derive(Debug, Clone, PartialEq)]
struct Token {
    pos: i64,
    skip: Option<(i64, String)>,
}

impl Token {
    fn parse(s: &str) -> Token {
        let mut parts = s.splitn(3, ';');
        let pos = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let skip = match (parts.next().and_then(|v| v.parse().ok()), parts.next()) {
            (Some(v), Some(snap)) => Some((v, snap.to_string())),
            _ => None,
        };
        Token { pos, skip }
    }

    fn render(&self) -> String {
        match &self.skip {
            Some((v, s)) => format!("{};{v};{s}", self.pos),
            None => self.pos.to_string(),
        }
    }
}

struct Log {
    table: String,
    oid: u32,
    horizon: Statement,
    lockers: Statement,
    waiting: Statement,
    read: Statement,
    read_skip: Statement,
}

impl Log {
    async fn open(client: &Client, slot: &str) -> Result<Log, CdcError> {
        let table = log_table(slot);
        let row = client
            .query_one(
                "SELECT to_regclass($1)::oid, pg_get_serial_sequence($1, 'id')",
                &[&table],
            )
            .await?;
        let (Some(oid), Some(seq)) = (
            row.get::<_, Option<u32>>(0),
            row.get::<_, Option<String>>(1),
        ) else {
            return Err(CdcError::Source(format!(
                "changelog {table} is missing: run `aragora cdc install`"
            )));
        };
        let cols = "SELECT id, op, schema_name, table_name, pk::text, old_row::text, \
                    new_row::text, (extract(epoch FROM captured_at) * 1000)::int8";
        Ok(Log {
            horizon: client
                .prepare(&format!(
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq}"
                ))
                .await?,
            lockers: client
                .prepare(
                    "SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}') FROM pg_locks \
                     WHERE locktype = 'relation' AND relation = $1 AND mode = 'RowExclusiveLock' \
                     AND granted AND pid IS DISTINCT FROM pg_backend_pid()",
                )
                .await?,
            waiting: client
                .prepare(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'virtualxid' \
                     AND virtualxid = ANY($1)",
                )
                .await?,
            read: client
                .prepare(&format!(
                    "{cols} FROM {table} WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3"
                ))
                .await?,
            read_skip: client
                .prepare(&format!(
                    "{cols} FROM {table} WHERE id > $1 AND id <= $2 AND NOT (id <= $4 AND \
                     pg_visible_in_snapshot(xid, $5::text::pg_snapshot)) ORDER BY id LIMIT $3"
                ))
                .await?,
            table,
            oid,
        })
    }

    /// The largest id below which no new row can appear any more.
    async fn horizon(&self, client: &Client, stop: &CancellationToken) -> Result<i64, CdcError> {
        let m: i64 = client.query_one(&self.horizon, &[]).await?.get(0);
        let lockers: Vec<String> = client.query_one(&self.lockers, &[&self.oid]).await?.get(0);
        if lockers.is_empty() {
            return Ok(m);
        }
        let mut wait = Duration::from_micros(500);
        loop {
            let n: i64 = client.query_one(&self.waiting, &[&lockers]).await?.get(0);
            if n == 0 {
                return Ok(m);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return Ok(m.min(0)),
            }
            wait = (wait * 2).min(Duration::from_millis(50));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    ctx: &Arc<Ctx>,
    tables: Option<Vec<TableInfo>>,
    stop: &CancellationToken,
) -> Result<(), CdcError> {
    let wake = Arc::new(Notify::new());
    let client = connect(&ctx.pg, Some(wake.clone())).await?;
    let tables = match tables {
        Some(t) => t,
        None => resolve_tables(&client, &ctx.config).await?,
    };
    let slot = ctx.config.slot_for(&ctx.id);
    let log = Log::open(&client, &slot).await?;
    client
        .batch_execute(&format!("LISTEN {}", quote_ident(&channel(&slot))))
        .await?;
    let loaded = ctx.checkpoints.load(&ctx.id).await?;
    let retried = loaded.is_some();
    let cp = loaded.unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Batch>(4);
    let (rel_tx, rel_rx) = watch::channel(0u64);
    let dispatcher = tokio::spawn(ctx.dispatcher().run(rx, rel_tx, stop.clone()));
    ctx.status.set_source_error(None);
    let read = read_loop(
        ctx, &client, &tables, &log, cp, retried, tx, rel_rx, wake, stop,
    )
    .await;
    crate::pipeline::join_dispatcher(dispatcher).await?;
    read
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    ctx: &Arc<Ctx>,
    client: &Client,
    tables: &[TableInfo],
    log: &Log,
    cp: Checkpoint,
    retried: bool,
    tx: mpsc::Sender<Batch>,
    mut rel_rx: watch::Receiver<u64>,
    wake: Arc<Notify>,
    stop: &CancellationToken,
) -> Result<(), CdcError> {
    let mut seq = cp.sequence_number;
    let mut token = Token::parse(&cp.resume_token);
    if !cp.snapshot_done {
        match ctx.config.snapshot {
            super::SnapshotMode::Initial => {
                // An earlier attempt may have delivered part of a snapshot: then every changelog
                // row is replayed after this one (rows it deleted must be deleted downstream);
                // on a first attempt rows the snapshot already reflects are skipped.
                let earlier_attempt = retried;
                ctx.checkpoints
                    .save(&ctx.id, &Checkpoint::default(), &[])
                    .await?;
                ctx.status.set_phase("snapshot");
                client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                let row = client
                    .query_one(
                        &format!(
                            "SELECT pg_current_snapshot()::text, coalesce(max(id), 0) FROM {}",
                            log.table
                        ),
                        &[],
                    )
                    .await?;
                let snap: String = row.get(0);
                let visible: i64 = row.get(1);
                let after = Token {
                    pos: 0,
                    skip: (visible > 0 && !earlier_attempt).then(|| (visible, snap.clone())),
                };
                let rendered = after.render();
                let done = move |seq| Checkpoint {
                    resume_token: rendered,
                    sequence_number: seq,
                    snapshot_done: true,
                };
                match scan::snapshot(ctx, client, tables, &tx, 0, done, None).await? {
                    Some(last) => seq = last,
                    None => return Ok(()),
                }
                client.batch_execute("COMMIT").await?;
                token = after;
            }
            super::SnapshotMode::Never => {
                // Everything the changelog captured since install is delivered.
                token = Token { pos: 0, skip: None };
                seq = 0;
            }
        }
    }
    ctx.status.set_phase("streaming");
    let wanted: HashSet<(String, String)> = tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let poll = Duration::from_secs_f64(ctx.config.poll_interval_seconds);
    let batch_size = ctx.config.batch_size as i64;
    let mut pruned: i64 = 0;
    let mut last_prune = Instant::now();
    let mut first = !cp.snapshot_done && ctx.config.snapshot == super::SnapshotMode::Never;
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let released = *rel_rx.borrow_and_update() as i64;
        if released > pruned
            && (last_prune.elapsed() >= Duration::from_millis(500) || released - pruned >= 50_000)
        {
            client
                .execute(
                    &format!("DELETE FROM {} WHERE id <= $1", log.table),
                    &[&released],
                )
                .await?;
            pruned = released;
            last_prune = Instant::now();
        }
        let horizon = log.horizon(client, stop).await?;
        if horizon > token.pos || first {
            first = false;
            loop {
                let rows = match &token.skip {
                    Some((v, snap)) if *v > token.pos => {
                        client
                            .query(
                                &log.read_skip,
                                &[&token.pos, &horizon, &batch_size, v, snap],
                            )
                            .await?
                    }
                    _ => {
                        client
                            .query(&log.read, &[&token.pos, &horizon, &batch_size])
                            .await?
                    }
                };
                let full = rows.len() as i64 == batch_size;
                let mut events = Vec::with_capacity(rows.len());
                let mut last_id = token.pos;
                for r in &rows {
                    let id: i64 = r.get(0);
                    last_id = id;
                    let schema: String = r.get(2);
                    let table: String = r.get(3);
                    if !wanted.contains(&(schema.clone(), table.clone())) {
                        continue;
                    }
                    seq += 1;
                    events.push(event_from_row(ctx, log.oid, r, &schema, &table, seq)?);
                }
                token.pos = if full { last_id } else { horizon };
                if token.skip.as_ref().is_some_and(|(v, _)| token.pos >= *v) {
                    token.skip = None;
                }
                let batch = Batch {
                    events,
                    checkpoint: Checkpoint {
                        resume_token: token.render(),
                        sequence_number: seq,
                        snapshot_done: true,
                    },
                    release: Some(token.pos as u64),
                };
                tokio::select! {
                    r = tx.send(batch) => if r.is_err() { return Ok(()) },
                    _ = stop.cancelled() => return Ok(()),
                }
                if !full {
                    break;
                }
            }
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            r = rel_rx.changed() => if r.is_err() { return Ok(()) },
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

fn json_map(text: Option<&str>) -> Result<Map<String, Value>, CdcError> {
    match text {
        None => Ok(Map::new()),
        Some(t) => serde_json::from_str(t)
            .map_err(|e| CdcError::Source(format!("changelog row is not JSON: {e}"))),
    }
}

fn event_from_row(
    ctx: &Ctx,
    log_oid: u32,
    r: &tokio_postgres::Row,
    schema: &str,
    table: &str,
    seq: i64,
) -> Result<ChangeEvent, CdcError> {
    let id: i64 = r.get(0);
    let op: &str = r.get(1);
    let operation = match op {
        "I" => ChangeOperation::Insert,
        "U" => ChangeOperation::Update,
        "D" => ChangeOperation::Delete,
        other => {
            return Err(CdcError::Source(format!(
                "changelog row {id}: unknown op {other}"
            )));
        }
    };
    let at: i64 = r.get(7);
    Ok(ChangeEvent {
        id: crate::event_id(&ctx.id, &format!("log:{log_oid}:{id}")),
        source_type: CdcSourceType::Postgresql,
        connector_id: ctx.id.clone(),
        operation,
        timestamp: aragora_core::time::rfc3339(at),
        database: ctx.config.database.clone(),
        table: display_name(schema, table),
        primary_key: json_map(r.get(4))?,
        old_data: json_map(r.get(5))?,
        data: json_map(r.get(6))?,
        resume_token: id.to_string(),
        sequence_number: seq,
    })
}

/// Trigger-specific health details.
pub(crate) async fn health(
    client: &Client,
    slot: &str,
    status: &Status,
) -> Result<Map<String, Value>, CdcError> {
    let table = log_table(slot);
    let exists: Option<u32> = client
        .query_one("SELECT to_regclass($1)::oid", &[&table])
        .await?
        .get(0);
    let mut out = Map::new();
    out.insert("changelog".into(), json!(table));
    out.insert("changelog_installed".into(), json!(exists.is_some()));
    if exists.is_some() {
        let max: i64 = client
            .query_one(&format!("SELECT coalesce(max(id), 0) FROM {table}"), &[])
            .await?
            .get(0);
        let pos = status
            .last_checkpoint()
            .map(|c| Token::parse(&c.resume_token).pos)
            .unwrap_or(0);
        out.insert("changelog_backlog".into(), json!((max - pos).max(0)));
    }
    let triggers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname = $1",
            &[&row_trigger(slot)],
        )
        .await?
        .get(0);
    out.insert("tables_with_triggers".into(), json!(triggers));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = Token::parse("42");
        assert_eq!(
            t,
            Token {
                pos: 42,
                skip: None
            }
        );
        let t = Token::parse("0;17;100:105:101,103");
        assert_eq!(t.pos, 0);
        assert_eq!(t.skip, Some((17, "100:105:101,103".into())));
        assert_eq!(t.render(), "0;17;100:105:101,103");
        assert_eq!(Token::parse("").pos, 0);
    }

    #[test]
    fn install_sql_quotes_names_and_passes_key_columns() {
        let t = TableInfo {
            oid: 1,
            schema: "public".into(),
            name: "we\"ird".into(),
            primary_key: vec!["a".into(), "b'c".into()],
        };
        let sql = install_sql("s1", &[t]);
        assert!(sql.contains("ON \"public\".\"we\"\"ird\""), "{sql}");
        assert!(sql.contains("\"s1_capture\"('a', 'b''c')"), "{sql}");
        assert!(sql.contains("pg_notify('aragora_cdc_s1', '')"));
    }
}
