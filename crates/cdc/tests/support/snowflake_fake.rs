//! A loopback fake of the Snowflake SQL API v2 (`/api/v2/statements`) that reproduces its
//! documented responses — 200 result sets, 202 + status polling, result partitions, 429/503,
//! 401 for a bad JWT, 422 for statements that fail — and verifies every request's key-pair JWT
//! with an independent RSA check against a committed test key pair (`tests/data`). Shared by
//! `tests/snowflake.rs` and `examples/snowflake_bench.rs` (included with `#[path]`).

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

#[allow(clippy::result_large_err)]
pub fn execute(f: &mut Fake, statement: &str) -> Result<(Value, Vec<Value>), Response> {
    if statement == aragora_cdc::snowflake::NOW_SQL {
        return Ok(result_set(
            &[("NOW", "fixed")],
            vec![vec![json!(f.clock.to_string())]],
            f.partition_size,
        ));
    }
    let table_of = |s: &str| -> Option<String> {
        let rest = s.strip_prefix("SELECT * FROM ")?;
        Some(rest.split(' ').next()?.to_string())
    };
    let Some(name) = table_of(statement) else {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "001003",
            "SQL compilation error: syntax error",
        ));
    };
    let Some(table) = f.tables.get(&name) else {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "002003",
            &format!("SQL compilation error:\nObject '{name}' does not exist or not authorized."),
        ));
    };
    if !statement.contains(" CHANGES(") {
        let rows = table
            .at(f.clock)
            .values()
            .map(|r| COLUMNS.iter().map(|(c, _)| cell(&r[*c])).collect())
            .collect();
        return Ok(result_set(&COLUMNS, rows, f.partition_size));
    }
    let nums: Vec<i64> = statement
        .split("TO_TIMESTAMP_LTZ(")
        .skip(1)
        .filter_map(|p| p.split(',').next()?.trim().parse().ok())
        .collect();
    let (start, end) = (nums[0], nums[1]);
    if !table.tracked {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "000904",
            &format!(
                "Change tracking is not enabled or has been missing for the time range requested on table '{name}'."
            ),
        ));
    }
    if start < f.retention_start {
        return Err(err(
            StatusCode::UNPROCESSABLE_ENTITY,
            "000707",
            &format!(
                "Time travel data is not available for table {name}. The requested time is either beyond the allowed time travel period or before the object creation time."
            ),
        ));
    }
    // DEFAULT information: the row-level delta between the two table versions.
    let (before, after) = (table.at(start), table.at(end));
    let mut rows = Vec::new();
    let meta = |action: &str, upd: bool, id: &str| {
        vec![
            json!(action),
            json!(if upd { "true" } else { "false" }),
            json!(id),
        ]
    };
    let mut ids: Vec<&String> = before.keys().chain(after.keys()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let data = |r: &Row| {
            COLUMNS
                .iter()
                .map(|(c, _)| cell(&r[*c]))
                .collect::<Vec<_>>()
        };
        match (before.get(id), after.get(id)) {
            (Some(b), Some(a)) if a != b => {
                rows.push([data(b), meta("DELETE", true, id)].concat());
                rows.push([data(a), meta("INSERT", true, id)].concat());
            }
            (None, Some(a)) => rows.push([data(a), meta("INSERT", false, id)].concat()),
            (Some(b), None) => rows.push([data(b), meta("DELETE", false, id)].concat()),
            _ => {}
        }
    }
    if statement.ends_with("LIMIT 0") {
        rows.clear();
    }
    let mut cols = COLUMNS.to_vec();
    cols.extend([
        ("METADATA$ACTION", "text"),
        ("METADATA$ISUPDATE", "boolean"),
        ("METADATA$ROW_ID", "text"),
    ]);
    Ok(result_set(&cols, rows, f.partition_size))
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
    let (first, pages) = match execute(&mut f, &statement) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    f.next_handle += 1;
    let handle = format!("01b2c3d4-0000-{:04}-0000-000000000000", f.next_handle);
    let mut first = first;
    first["statementHandle"] = json!(handle);
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
