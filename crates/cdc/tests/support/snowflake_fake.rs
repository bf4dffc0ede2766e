//! A loopback fake of the Snowflake SQL API v2 (`/api/v2/statements`) that reproduces its
//! documented responses — 200 result sets, 202 + status polling, result partitions, 429/503,
//! 401 for a bad JWT, 422 for statements that fail — and verifies every request's key-pair JWT
//! with an independent RSA check against a committed test key pair (`tests/data`). Shared by
//! `tests/snowflake.rs` and `examples/snowflake_bench.rs` (included with `#[path]`).
//!
//! Beyond `CHANGES` it models what stream mode relies on: streams whose offset is a table
//! version (`SHOW_INITIAL_ROWS` makes the first consumption start from an empty table), reading a
//! stream without consuming it, consumption only when a transaction that ran
//! `INSERT … SELECT … FROM <stream>` commits (a multi-statement request that fails before its
//! `COMMIT` changes nothing), staging tables (`CREATE TABLE … AS SELECT … LIMIT 0`, `INSERT`,
//! `SELECT … WHERE "ARAGORA_BATCH" …`, `DELETE`), `DROP`, `AT(TIMESTAMP => …)` selects, stale
//! streams, and `MULTI_STATEMENT_COUNT` (a request whose statement count differs is refused).

// Each includer uses a different part of the fake.
#![allow(dead_code)]

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

pub const KEY: &str = include_str!("../data/snowflake_test_key.p8");
pub const PUBLIC_PKCS1: &[u8] = include_bytes!("../data/snowflake_test_key.pkcs1.der");
pub const FINGERPRINT: &str = include_str!("../data/snowflake_test_key.fingerprint");
pub const ACCOUNT: &str = "TESTACCT";
pub const USER: &str = "CDC_USER";

pub type Row = BTreeMap<String, Value>;

#[derive(Default)]
pub struct FakeTable {
    pub tracked: bool,
    /// Table versions: (commit time ms, rows by row id).
    pub versions: Vec<(i64, BTreeMap<String, Row>)>,
}

impl FakeTable {
    pub fn at(&self, t: i64) -> BTreeMap<String, Row> {
        self.versions
            .iter()
            .rev()
            .find(|(ts, _)| *ts <= t)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub struct Fake {
    pub clock: i64,
    /// Time travel reaches back to here.
    pub retention_start: i64,
    pub tables: HashMap<String, FakeTable>,
    pub async_polls: usize,
    pub partition_size: usize,
    pub fail_next: VecDeque<u16>,
    /// (requestId, retry flag) of every POST.
    pub posts: Vec<(String, bool)>,
    /// Results by handle: (polls left, pages).
    pub handles: HashMap<String, (usize, Value, Vec<Value>)>,
    pub jwt_rejections: usize,
    pub next_handle: u64,
    pub streams: HashMap<String, FakeStream>,
    pub stages: HashMap<String, FakeStage>,
    /// A statement containing this text fails (once) with a 422, as a failing statement in the
    /// middle of a request would.
    pub fail_statement: Option<String>,
    /// Multi-statement requests whose open transaction was rolled back by a failure.
    pub rollbacks: usize,
    /// Every statement executed, in order (multi-statement requests split).
    pub log: Vec<String>,
}

pub struct FakeStream {
    pub table: String,
    /// The table version (number of visible commits) the stream's offset points at.
    pub offset: usize,
    /// `SHOW_INITIAL_ROWS = TRUE` and not yet consumed: the delta starts from an empty table.
    pub initial: bool,
    pub stale: bool,
}

/// A staged row: batch number, data, METADATA$ACTION, METADATA$ISUPDATE, METADATA$ROW_ID.
pub type Staged = (u64, Row, String, bool, String);

#[derive(Default)]
pub struct FakeStage {
    pub rows: Vec<Staged>,
}

/// What a statement changes, applied at once (autocommit) or at `COMMIT`.
pub enum Effect {
    Stage(String, Vec<Staged>),
    Unstage(String, u64),
    Advance(String, usize),
}

impl Fake {
    /// The number of commits of `table` visible at the fake's clock.
    pub fn version(&self, table: &str) -> usize {
        self.tables
            .get(table)
            .map(|t| {
                t.versions
                    .iter()
                    .filter(|(ts, _)| *ts <= self.clock)
                    .count()
            })
            .unwrap_or(0)
    }

    fn rows_at_version(&self, table: &str, v: usize) -> BTreeMap<String, Row> {
        match v {
            0 => BTreeMap::new(),
            v => self.tables[table].versions[v - 1].1.clone(),
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Stage(t, rows) => self.stages.entry(t).or_default().rows.extend(rows),
                Effect::Unstage(t, upto) => {
                    if let Some(s) = self.stages.get_mut(&t) {
                        s.rows.retain(|r| r.0 > upto);
                    }
                }
                Effect::Advance(s, v) => {
                    if let Some(s) = self.streams.get_mut(&s) {
                        s.offset = v;
                        s.initial = false;
                    }
                }
            }
        }
    }
}

pub type Shared = Arc<Mutex<Fake>>;

pub fn err(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"code": code, "message": message, "sqlState": "02000",
                          "statementHandle": "01b2c3d4-0000-0000-0000-000000000000"}),
        ),
    )
        .into_response()
}

/// Verifies the key-pair JWT as Snowflake does: token type header, RS256 signature by the
/// user's registered public key, `iss`/`sub` naming account, user and key fingerprint.
pub fn check_jwt(headers: &HeaderMap, now_s: i64) -> Result<(), String> {
    if headers
        .get("X-Snowflake-Authorization-Token-Type")
        .and_then(|v| v.to_str().ok())
        != Some("KEYPAIR_JWT")
    {
        return Err("missing X-Snowflake-Authorization-Token-Type: KEYPAIR_JWT".into());
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("no bearer token")?;
    let parts: Vec<&str> = auth.split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWT".into());
    }
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[0])
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if header["alg"] != json!("RS256") {
        return Err("alg must be RS256".into());
    }
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[1])
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let sig = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|e| e.to_string())?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        PUBLIC_PKCS1,
    )
    .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
    .map_err(|_| "bad signature".to_string())?;
    let want_iss = format!("{ACCOUNT}.{USER}.SHA256:{}", FINGERPRINT.trim());
    if claims["iss"] != json!(want_iss) {
        return Err(format!("iss {} is not {want_iss}", claims["iss"]));
    }
    if claims["sub"] != json!(format!("{ACCOUNT}.{USER}")) {
        return Err("bad sub".into());
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    if !(iat <= now_s + 60 && exp > now_s && exp - iat <= 3600) {
        return Err("token not valid now (iat/exp)".into());
    }
    Ok(())
}

pub fn result_set(
    columns: &[(&str, &str)],
    rows: Vec<Vec<Value>>,
    partition_size: usize,
) -> (Value, Vec<Value>) {
    let size = partition_size.max(1);
    let pages: Vec<Value> = if rows.is_empty() {
        vec![json!([])]
    } else {
        rows.chunks(size).map(|c| json!(c)).collect()
    };
    let first = json!({
        "resultSetMetaData": {
            "numRows": rows.len(),
            "format": "jsonv2",
            "rowType": columns.iter().map(|(n, t)| json!({"name": n, "type": t, "nullable": true})).collect::<Vec<_>>(),
            "partitionInfo": pages.iter().map(|p| json!({"rowCount": p.as_array().unwrap().len(), "uncompressedSize": 100})).collect::<Vec<_>>(),
        },
        "data": pages[0],
        "code": "090001",
        "statementStatusUrl": "",
        "sqlState": "00000",
        "message": "Statement executed successfully.",
        "createdOn": 0,
    });
    (first, pages)
}

pub fn cell(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}

pub const COLUMNS: [(&str, &str); 3] = [("ID", "fixed"), ("NAME", "text"), ("ACTIVE", "boolean")];

fn unprocessable(code: &str, message: &str) -> Response {
    err(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn syntax_error() -> Response {
    unprocessable("001003", "SQL compilation error: syntax error")
}

fn data_cells(r: &Row) -> Vec<Value> {
    COLUMNS.iter().map(|(c, _)| cell(&r[*c])).collect()
}

/// A change row: (row, METADATA$ACTION, METADATA$ISUPDATE, METADATA$ROW_ID).
pub type Change = (Row, String, bool, String);

/// The net row-level delta between two table versions, as `CHANGES(INFORMATION => DEFAULT)`
/// and standard streams return it: (row, METADATA$ACTION, METADATA$ISUPDATE, METADATA$ROW_ID).
pub fn delta(before: &BTreeMap<String, Row>, after: &BTreeMap<String, Row>) -> Vec<Change> {
    let mut ids: Vec<&String> = before.keys().chain(after.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        match (before.get(id), after.get(id)) {
            (Some(b), Some(a)) if a != b => {
                out.push((b.clone(), "DELETE".into(), true, id.clone()));
                out.push((a.clone(), "INSERT".into(), true, id.clone()));
            }
            (None, Some(a)) => out.push((a.clone(), "INSERT".into(), false, id.clone())),
            (Some(b), None) => out.push((b.clone(), "DELETE".into(), false, id.clone())),
            _ => {}
        }
    }
    out
}

fn meta_cells(action: &str, upd: bool, id: &str) -> Vec<Value> {
    vec![
        json!(action),
        json!(if upd { "true" } else { "false" }),
        json!(id),
    ]
}

const META_COLUMNS: [(&str, &str); 3] = [
    ("METADATA$ACTION", "text"),
    ("METADATA$ISUPDATE", "boolean"),
    ("METADATA$ROW_ID", "text"),
];

/// The stream's current contents (not consuming it) and the version they reach.
#[allow(clippy::result_large_err)]
fn stream_contents(f: &Fake, name: &str) -> Result<(Vec<Change>, usize), Response> {
    let s = &f.streams[name];
    if s.stale {
        return Err(unprocessable(
            "091901",
            &format!(
                "SQL execution error: Stream {name} has become stale. The stream's offset is \
                 outside the data retention period of its source table; recreate the stream."
            ),
        ));
    }
    let now = f.version(&s.table);
    let before = if s.initial {
        BTreeMap::new()
    } else {
        f.rows_at_version(&s.table, s.offset)
    };
    let after = f.rows_at_version(&s.table, now);
    Ok((delta(&before, &after), now))
}

/// The first number after `marker` in `s`.
fn number_after(s: &str, marker: &str) -> Option<i64> {
    let rest = s.split(marker).nth(1)?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Runs one statement; data changes are returned as effects (applied by the caller at once or
/// at `COMMIT`).
#[allow(clippy::result_large_err)]
pub fn execute(
    f: &mut Fake,
    statement: &str,
    effects: &mut Vec<Effect>,
) -> Result<(Value, Vec<Value>), Response> {
    f.log.push(statement.to_string());
    if let Some(bad) = f.fail_statement.clone()
        && statement.contains(&bad)
    {
        f.fail_statement = None;
        return Err(unprocessable(
            "000603",
            "SQL execution internal error: Processing aborted due to error 300010:391167117.",
        ));
    }
    let done = |f: &Fake| {
        result_set(
            &[("status", "text")],
            vec![vec![json!("Statement executed successfully.")]],
            f.partition_size,
        )
    };
    if statement == aragora_cdc::snowflake::NOW_SQL {
        return Ok(result_set(
            &[("NOW", "fixed")],
            vec![vec![json!(f.clock.to_string())]],
            f.partition_size,
        ));
    }
    let missing = |name: &str| {
        unprocessable(
            "002003",
            &format!("SQL compilation error:\nObject '{name}' does not exist or not authorized."),
        )
    };
    if let Some(rest) = statement.strip_prefix("CREATE STREAM IF NOT EXISTS ") {
        // CREATE STREAM IF NOT EXISTS <s> ON TABLE <t> [SHOW_INITIAL_ROWS = TRUE]
        let w: Vec<&str> = rest.split_whitespace().collect();
        let (name, table) = (
            w[0].to_string(),
            w.get(3).ok_or_else(syntax_error)?.to_string(),
        );
        if !f.tables.contains_key(&table) {
            return Err(missing(&table));
        }
        if !f.streams.contains_key(&name) {
            // The table owner creating the first stream turns change tracking on.
            f.tables.get_mut(&table).unwrap().tracked = true;
            let offset = f.version(&table);
            f.streams.insert(
                name,
                FakeStream {
                    table,
                    offset,
                    initial: rest.contains("SHOW_INITIAL_ROWS = TRUE"),
                    stale: false,
                },
            );
        }
        return Ok(done(f));
    }
    if let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
        // CREATE TABLE IF NOT EXISTS <stage> AS SELECT … FROM <t> t LIMIT 0
        let name = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let table = rest
            .rsplit(" FROM ")
            .next()
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default();
        if !rest.contains(" AS SELECT CAST(NULL AS NUMBER(38, 0)) AS \"ARAGORA_BATCH\", t.*,")
            || !rest.ends_with("LIMIT 0")
        {
            return Err(syntax_error());
        }
        if !f.tables.contains_key(table) {
            return Err(missing(table));
        }
        f.stages.entry(name).or_default();
        return Ok(done(f));
    }
    if let Some(rest) = statement.strip_prefix("DROP STREAM IF EXISTS ") {
        f.streams.remove(rest.trim());
        return Ok(done(f));
    }
    if let Some(rest) = statement.strip_prefix("DROP TABLE IF EXISTS ") {
        f.stages.remove(rest.trim());
        return Ok(done(f));
    }
    if let Some(rest) = statement.strip_prefix("DELETE FROM ") {
        let name = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let upto = number_after(rest, "\"ARAGORA_BATCH\" <=").ok_or_else(syntax_error)?;
        let Some(stage) = f.stages.get(&name) else {
            return Err(missing(&name));
        };
        let n = stage.rows.iter().filter(|r| r.0 as i64 <= upto).count();
        effects.push(Effect::Unstage(name, upto as u64));
        return Ok(result_set(
            &[("number of rows deleted", "fixed")],
            vec![vec![json!(n.to_string())]],
            f.partition_size,
        ));
    }
    if let Some(rest) = statement.strip_prefix("INSERT INTO ") {
        // INSERT INTO <stage> SELECT <n>, s.* FROM <stream> s
        let name = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let (Some(batch), Some(stream)) = (
            number_after(rest, " SELECT "),
            rest.split(" FROM ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()),
        ) else {
            return Err(syntax_error());
        };
        if !f.stages.contains_key(&name) {
            return Err(missing(&name));
        }
        if !f.streams.contains_key(stream) {
            return Err(missing(stream));
        }
        let (rows, version) = stream_contents(f, stream)?;
        let n = rows.len();
        effects.push(Effect::Stage(
            name,
            rows.into_iter()
                .map(|(r, a, u, id)| (batch as u64, r, a, u, id))
                .collect(),
        ));
        // DML reading a stream moves its offset to the version it read (when it commits).
        effects.push(Effect::Advance(stream.to_string(), version));
        return Ok(result_set(
            &[("number of rows inserted", "fixed")],
            vec![vec![json!(n.to_string())]],
            f.partition_size,
        ));
    }
    let table_of = |s: &str| -> Option<String> {
        let rest = s.strip_prefix("SELECT * FROM ")?;
        Some(rest.split(' ').next()?.to_string())
    };
    let Some(name) = table_of(statement) else {
        return Err(syntax_error());
    };
    if let Some(stage) = f.stages.get(&name) {
        // SELECT * FROM <stage> WHERE "ARAGORA_BATCH" = n | > n ORDER BY "ARAGORA_BATCH"
        let keep: Box<dyn Fn(u64) -> bool> =
            if let Some(n) = number_after(statement, "\"ARAGORA_BATCH\" = ") {
                Box::new(move |b| b as i64 == n)
            } else if let Some(n) = number_after(statement, "\"ARAGORA_BATCH\" > ") {
                Box::new(move |b| b as i64 > n)
            } else {
                Box::new(|_| true)
            };
        let mut rows: Vec<&Staged> = stage.rows.iter().filter(|r| keep(r.0)).collect();
        rows.sort_by_key(|r| r.0);
        let rows = rows
            .into_iter()
            .map(|(b, r, a, u, id)| {
                [
                    vec![json!(b.to_string())],
                    data_cells(r),
                    meta_cells(a, *u, id),
                ]
                .concat()
            })
            .collect();
        let mut cols = vec![("ARAGORA_BATCH", "fixed")];
        cols.extend(COLUMNS);
        cols.extend([
            ("ARAGORA_ACTION", "text"),
            ("ARAGORA_ISUPDATE", "boolean"),
            ("ARAGORA_ROW_ID", "text"),
        ]);
        return Ok(result_set(&cols, rows, f.partition_size));
    }
    if f.streams.contains_key(&name) {
        // Selecting from a stream shows its contents without consuming them.
        let (mut rows, _) = stream_contents(f, &name)?;
        if statement.ends_with("LIMIT 0") {
            rows.clear();
        }
        let mut cols = COLUMNS.to_vec();
        cols.extend(META_COLUMNS);
        let rows = rows
            .iter()
            .map(|(r, a, u, id)| [data_cells(r), meta_cells(a, *u, id)].concat())
            .collect();
        return Ok(result_set(&cols, rows, f.partition_size));
    }
    let Some(table) = f.tables.get(&name) else {
        return Err(missing(&name));
    };
    if !statement.contains(" CHANGES(") {
        // SELECT * FROM <t> [AT(TIMESTAMP => TO_TIMESTAMP_LTZ(<ms>, 3))] [ORDER BY "ID"]
        let at = number_after(statement, "AT(TIMESTAMP => TO_TIMESTAMP_LTZ(");
        if let Some(at) = at
            && at < f.retention_start
        {
            return Err(unprocessable(
                "000707",
                &format!(
                    "Time travel data is not available for table {name}. The requested time is either beyond the allowed time travel period or before the object creation time."
                ),
            ));
        }
        let mut rows: Vec<Row> = table.at(at.unwrap_or(f.clock)).into_values().collect();
        if statement.ends_with("ORDER BY \"ID\"") {
            rows.sort_by_key(|r| r["ID"].as_i64());
        }
        let rows = rows.iter().map(data_cells).collect();
        return Ok(result_set(&COLUMNS, rows, f.partition_size));
    }
    let nums: Vec<i64> = statement
        .split("TO_TIMESTAMP_LTZ(")
        .skip(1)
        .filter_map(|p| p.split(',').next()?.trim().parse().ok())
        .collect();
    let (start, end) = (nums[0], nums[1]);
    if !table.tracked {
        return Err(unprocessable(
            "000904",
            &format!(
                "Change tracking is not enabled or has been missing for the time range requested on table '{name}'."
            ),
        ));
    }
    if start < f.retention_start {
        return Err(unprocessable(
            "000707",
            &format!(
                "Time travel data is not available for table {name}. The requested time is either beyond the allowed time travel period or before the object creation time."
            ),
        ));
    }
    // DEFAULT information: the row-level delta between the two table versions.
    let mut rows: Vec<Vec<Value>> = delta(&table.at(start), &table.at(end))
        .iter()
        .map(|(r, a, u, id)| [data_cells(r), meta_cells(a, *u, id)].concat())
        .collect();
    if statement.ends_with("LIMIT 0") {
        rows.clear();
    }
    let mut cols = COLUMNS.to_vec();
    cols.extend(META_COLUMNS);
    Ok(result_set(&cols, rows, f.partition_size))
}

/// Runs a request's statements. One statement autocommits. Several need
/// `MULTI_STATEMENT_COUNT` equal to their number (0 = any); `BEGIN` opens a transaction whose
/// effects apply at `COMMIT`, and a failing statement ends the request and rolls it back.
#[allow(clippy::result_large_err)]
pub fn execute_request(
    f: &mut Fake,
    text: &str,
    count: Option<usize>,
) -> Result<(Value, Vec<Value>, Vec<String>), Response> {
    let statements: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let want = count.unwrap_or(1);
    if want != 0 && want != statements.len() {
        return Err(unprocessable(
            "000008",
            &format!(
                "Actual statement count {} did not match the desired statement count {want}.",
                statements.len()
            ),
        ));
    }
    if statements.len() == 1 && count.is_none_or(|c| c == 1) {
        let mut effects = Vec::new();
        let r = execute(f, statements[0], &mut effects)?;
        f.apply(effects);
        return Ok((r.0, r.1, Vec::new()));
    }
    let mut open: Option<Vec<Effect>> = None;
    let mut handles = Vec::new();
    for st in &statements {
        f.next_handle += 1;
        handles.push(format!(
            "01b2c3d4-0000-{:04}-0000-000000000001",
            f.next_handle
        ));
        match st.to_ascii_uppercase().as_str() {
            "BEGIN" | "BEGIN TRANSACTION" => {
                f.log.push(st.to_string());
                open.get_or_insert_with(Vec::new);
                continue;
            }
            "COMMIT" => {
                f.log.push(st.to_string());
                if let Some(bad) = f.fail_statement.clone()
                    && st.contains(&bad)
                {
                    f.fail_statement = None;
                    if open.take().is_some() {
                        f.rollbacks += 1;
                    }
                    return Err(unprocessable(
                        "000603",
                        "SQL execution internal error: Processing aborted due to error 300010:391167117.",
                    ));
                }
                if let Some(effects) = open.take() {
                    f.apply(effects);
                }
                continue;
            }
            _ => {}
        }
        let mut effects = Vec::new();
        if let Err(e) = execute(f, st, &mut effects) {
            if open.take().is_some() {
                f.rollbacks += 1;
            }
            return Err(e);
        }
        match open.as_mut() {
            Some(tx) => tx.extend(effects),
            None => f.apply(effects),
        }
    }
    if open.take().is_some() {
        // A request that ends with its transaction open: Snowflake rolls it back.
        f.rollbacks += 1;
    }
    let (first, pages) = result_set(
        &[("multiple statement execution", "text")],
        vec![vec![json!("Multiple statements executed successfully.")]],
        f.partition_size,
    );
    Ok((first, pages, handles))
}

pub async fn post_statement(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut f = fake.lock();
    let request_id = q.get("requestId").cloned().unwrap_or_default();
    f.posts
        .push((request_id, q.get("retry").is_some_and(|r| r == "true")));
    if let Some(code) = f.fail_next.pop_front() {
        return StatusCode::from_u16(code).unwrap().into_response();
    }
    if let Err(e) = check_jwt(&headers, aragora_core::time::now_ms() / 1000) {
        f.jwt_rejections += 1;
        return err(
            StatusCode::UNAUTHORIZED,
            "390144",
            &format!("JWT token is invalid. {e}"),
        );
    }
    let statement = body["statement"].as_str().unwrap_or_default().to_string();
    let count = match &body["parameters"]["MULTI_STATEMENT_COUNT"] {
        Value::Null => None,
        Value::String(s) => s.parse::<usize>().ok(),
        v => v.as_u64().map(|n| n as usize),
    };
    let (first, pages, children) = match execute_request(&mut f, &statement, count) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    f.next_handle += 1;
    let handle = format!("01b2c3d4-0000-{:04}-0000-000000000000", f.next_handle);
    let mut first = first;
    first["statementHandle"] = json!(handle);
    if !children.is_empty() {
        first["statementHandles"] = json!(children);
    }
    if f.async_polls > 0 {
        let polls = f.async_polls;
        f.handles.insert(handle.clone(), (polls, first, pages));
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "code": "333334",
                "message": "Asynchronous execution in progress. Use provided query id to perform query monitoring and management.",
                "statementHandle": handle,
                "statementStatusUrl": format!("/api/v2/statements/{handle}"),
            })),
        )
            .into_response();
    }
    f.handles.insert(handle, (0, first.clone(), pages));
    axum::Json(first).into_response()
}

pub async fn get_statement(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Path(handle): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut f = fake.lock();
    if let Some(code) = f.fail_next.pop_front() {
        return StatusCode::from_u16(code).unwrap().into_response();
    }
    if let Err(e) = check_jwt(&headers, aragora_core::time::now_ms() / 1000) {
        f.jwt_rejections += 1;
        return err(
            StatusCode::UNAUTHORIZED,
            "390144",
            &format!("JWT token is invalid. {e}"),
        );
    }
    let Some(entry) = f.handles.get_mut(&handle) else {
        return err(StatusCode::NOT_FOUND, "000709", "Statement not found.");
    };
    if entry.0 > 0 {
        entry.0 -= 1;
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({"code": "333334", "message": "Asynchronous execution in progress.", "statementHandle": handle})),
        )
            .into_response();
    }
    match q.get("partition").and_then(|p| p.parse::<usize>().ok()) {
        Some(p) if p > 0 => match entry.2.get(p) {
            Some(page) => axum::Json(json!({"data": page})).into_response(),
            None => err(
                StatusCode::UNPROCESSABLE_ENTITY,
                "000001",
                "partition out of range",
            ),
        },
        _ => axum::Json(entry.1.clone()).into_response(),
    }
}

pub async fn fake() -> (Shared, String) {
    let shared: Shared = Arc::new(Mutex::new(Fake {
        clock: 1_000_000,
        ..Fake::default()
    }));
    let app = axum::Router::new()
        .route("/api/v2/statements", post(post_statement))
        .route("/api/v2/statements/{handle}", get(get_statement))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (shared, format!("http://{addr}"))
}

pub const T: &str = "\"APP\".\"PUBLIC\".\"USERS\"";

/// Commits a new version of USERS at `ts` by applying `f` to the current rows.
pub fn commit(fake: &Shared, ts: i64, f: impl FnOnce(&mut BTreeMap<String, Row>)) {
    let mut g = fake.lock();
    let t = g.tables.entry(T.into()).or_default();
    let mut rows = t.versions.last().map(|v| v.1.clone()).unwrap_or_default();
    f(&mut rows);
    t.versions.push((ts, rows));
}

pub fn row(id: i64, name: &str) -> Row {
    [
        ("ID", json!(id)),
        ("NAME", json!(name)),
        ("ACTIVE", json!(true)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
