//! The Snowflake connector against a loopback fake of the SQL API v2 that reproduces its
//! documented responses (200 result sets, 202 + status polling, result partitions, 429/503,
//! 401 for a bad JWT, 422 for statements that fail) and verifies every request's key-pair JWT
//! with an independent RSA check against a committed test key pair (`tests/data`, made with
//! openssl; the fingerprint file is openssl's). A live test runs when `SNOWFLAKE_ACCOUNT` is set.

use aragora_cdc::snowflake::api::KeyPair;
use aragora_cdc::snowflake::{
    ChangeRow, SnowflakeConfig, SnowflakeConnector, WindowToken, changes_sql, pair,
};
use aragora_cdc::{
    CallbackHandler, ChangeEvent, ChangeOperation, CheckpointStore, Connector, MemoryCheckpoints,
};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = include_str!("data/snowflake_test_key.p8");
const PUBLIC_PKCS1: &[u8] = include_bytes!("data/snowflake_test_key.pkcs1.der");
const FINGERPRINT: &str = include_str!("data/snowflake_test_key.fingerprint");
const ACCOUNT: &str = "TESTACCT";
const USER: &str = "CDC_USER";

type Row = BTreeMap<String, Value>;

#[derive(Default)]
struct FakeTable {
    tracked: bool,
    /// Table versions: (commit time ms, rows by row id).
    versions: Vec<(i64, BTreeMap<String, Row>)>,
}

impl FakeTable {
    fn at(&self, t: i64) -> BTreeMap<String, Row> {
        self.versions
            .iter()
            .rev()
            .find(|(ts, _)| *ts <= t)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Fake {
    clock: i64,
    /// Time travel reaches back to here.
    retention_start: i64,
    tables: HashMap<String, FakeTable>,
    async_polls: usize,
    partition_size: usize,
    fail_next: VecDeque<u16>,
    /// (requestId, retry flag) of every POST.
    posts: Vec<(String, bool)>,
    /// Results by handle: (polls left, pages).
    handles: HashMap<String, (usize, Value, Vec<Value>)>,
    jwt_rejections: usize,
    next_handle: u64,
}

type Shared = Arc<Mutex<Fake>>;

fn err(status: StatusCode, code: &str, message: &str) -> Response {
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
fn check_jwt(headers: &HeaderMap, now_s: i64) -> Result<(), String> {
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

fn result_set(
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

fn cell(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) => json!(s),
        other => json!(other.to_string()),
    }
}

const COLUMNS: [(&str, &str); 3] = [("ID", "fixed"), ("NAME", "text"), ("ACTIVE", "boolean")];

#[allow(clippy::result_large_err)]
fn execute(f: &mut Fake, statement: &str) -> Result<(Value, Vec<Value>), Response> {
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

async fn post_statement(
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

async fn get_statement(
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

async fn fake() -> (Shared, String) {
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

const T: &str = "\"APP\".\"PUBLIC\".\"USERS\"";

/// Commits a new version of USERS at `ts` by applying `f` to the current rows.
fn commit(fake: &Shared, ts: i64, f: impl FnOnce(&mut BTreeMap<String, Row>)) {
    let mut g = fake.lock();
    let t = g.tables.entry(T.into()).or_default();
    let mut rows = t.versions.last().map(|v| v.1.clone()).unwrap_or_default();
    f(&mut rows);
    t.versions.push((ts, rows));
}

fn row(id: i64, name: &str) -> Row {
    [
        ("ID", json!(id)),
        ("NAME", json!(name)),
        ("ACTIVE", json!(true)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn config(base: &str) -> SnowflakeConfig {
    let mut c = SnowflakeConfig::new("testacct", "app", ["users"]);
    c.base_url = Some(base.to_string());
    c.poll_interval_seconds = 0.01;
    c.window_lag_seconds = 0.0;
    c.checkpoint_interval_ms = 1;
    c.primary_keys.insert("users".into(), vec!["id".into()]);
    c
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<ChangeEvent>>>);

impl Seen {
    fn handler(&self) -> Arc<CallbackHandler> {
        let s = self.0.clone();
        Arc::new(CallbackHandler::new(move |e| {
            let s = s.clone();
            async move { s.lock().push(e) }
        }))
    }
    fn all(&self) -> Vec<ChangeEvent> {
        self.0.lock().clone()
    }
}

async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn connector(base: &str, cps: &Arc<MemoryCheckpoints>) -> SnowflakeConnector {
    let mut c = SnowflakeConnector::new("sf-1", config(base), "cdc_user", KEY)
        .unwrap()
        .with_checkpoints(cps.clone());
    c.api_mut().unwrap().poll = Duration::from_millis(5);
    c
}

#[test]
fn key_fingerprint_matches_openssl() {
    let k = KeyPair::from_pem(KEY).unwrap();
    assert_eq!(k.fingerprint(), format!("SHA256:{}", FINGERPRINT.trim()));
    assert!(
        KeyPair::from_pem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----"
        )
        .is_err()
    );
    assert!(KeyPair::from_pem("not a key").is_err());
}

#[test]
fn golden_changes_sql_and_tokens() {
    assert_eq!(
        changes_sql(T, 1000, 2000),
        "SELECT * FROM \"APP\".\"PUBLIC\".\"USERS\" CHANGES(INFORMATION => DEFAULT) AT(TIMESTAMP => \
         TO_TIMESTAMP_LTZ(1000, 3)) END(TIMESTAMP => TO_TIMESTAMP_LTZ(2000, 3))"
    );
    let t = WindowToken::parse("sf:10-20").unwrap();
    assert_eq!((t.start, t.end), (10, Some(20)));
    assert_eq!(t.render(), "sf:10-20");
    assert_eq!(WindowToken::parse("sf:10").unwrap().end, None);
    assert!(WindowToken::parse("cdc:1").is_err());
}

#[test]
fn update_halves_pair_by_row_id() {
    let r = |action: &str, upd: bool, id: &str, name: &str| ChangeRow {
        action: action.into(),
        is_update: upd,
        row_id: id.into(),
        row: [("NAME".to_string(), json!(name))]
            .into_iter()
            .collect::<Map<_, _>>(),
    };
    let out = pair(vec![
        r("INSERT", true, "b", "new"),
        r("INSERT", false, "c", "fresh"),
        r("DELETE", true, "b", "old"),
        r("DELETE", false, "a", "gone"),
    ])
    .unwrap();
    let got: Vec<(ChangeOperation, Value, Value)> = out
        .into_iter()
        .map(|(op, d, o, _)| (op, json!(d), json!(o)))
        .collect();
    assert_eq!(
        got,
        vec![
            (ChangeOperation::Delete, json!({}), json!({"NAME": "gone"})),
            (
                ChangeOperation::Update,
                json!({"NAME": "new"}),
                json!({"NAME": "old"})
            ),
            (ChangeOperation::Insert, json!({"NAME": "fresh"}), json!({})),
        ]
    );
}

#[test]
fn config_errors_name_the_field() {
    let field = |v: Value| match SnowflakeConfig::from_json(&v) {
        Err(aragora_cdc::CdcError::Config { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(json!({"account": "a b", "database": "d", "tables": ["t"]})),
        "config.account"
    );
    assert_eq!(
        field(json!({"account": "a", "database": "d", "tables": []})),
        "config.tables"
    );
    assert_eq!(
        field(
            json!({"account": "a", "database": "d", "tables": ["t"], "primary_keys": {"x": ["id"]}})
        ),
        "config.primary_keys.x"
    );
    assert_eq!(
        field(json!({"account": "a", "database": "d"})),
        "config.tables"
    );
}

#[tokio::test]
async fn windows_deliver_net_changes_with_updates_paired() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |rows| {
        rows.insert("r1".into(), row(1, "ann"));
    });
    fake.lock().tables.get_mut(T).unwrap().tracked = true;
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector(&base, &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    // Window 1: an insert, and a row inserted and deleted again (nets out).
    commit(&fake, 1_000_100, |rows| {
        rows.insert("r2".into(), row(2, "bob"));
        rows.insert("r3".into(), row(3, "tmp"));
    });
    commit(&fake, 1_000_200, |rows| {
        rows.remove("r3");
    });
    fake.lock().clock = 1_000_500;
    eventually("the insert", || seen.all().len() == 1).await;
    // Window 2: an update and a delete.
    commit(&fake, 1_000_600, |rows| {
        rows.get_mut("r1")
            .unwrap()
            .insert("NAME".into(), json!("anna"));
        rows.remove("r2");
    });
    fake.lock().clock = 1_001_000;
    eventually("update and delete", || seen.all().len() == 3).await;
    c.stop().await.unwrap();
    let ev = seen.all();
    assert_eq!(ev[0].operation, ChangeOperation::Insert);
    assert_eq!(
        json!(ev[0].data),
        json!({"ID": 2, "NAME": "bob", "ACTIVE": true})
    );
    assert_eq!(json!(ev[0].primary_key), json!({"ID": 2}));
    assert_eq!(ev[1].operation, ChangeOperation::Update);
    assert_eq!(ev[1].old_data["NAME"], json!("ann"));
    assert_eq!(ev[1].data["NAME"], json!("anna"));
    assert_eq!(ev[2].operation, ChangeOperation::Delete);
    assert_eq!(ev[2].old_data["ID"], json!(2));
    assert_eq!(ev[0].table, "PUBLIC.USERS");
    assert_eq!(ev[0].source_type.as_str(), "snowflake");
    let cp = cps.load("sf-1").await.unwrap().unwrap();
    assert_eq!(cp.resume_token, "sf:1001000");
    assert_eq!(cp.sequence_number, 3);
    assert_eq!(fake.lock().jwt_rejections, 0);
}

#[tokio::test]
async fn async_statements_partitions_and_retries() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |_| {});
    {
        let mut f = fake.lock();
        f.tables.get_mut(T).unwrap().tracked = true;
        f.async_polls = 2;
        f.partition_size = 2;
    }
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector(&base, &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    commit(&fake, 1_000_100, |rows| {
        for i in 0..5 {
            rows.insert(format!("r{i}"), row(i, "x"));
        }
    });
    {
        let mut f = fake.lock();
        f.fail_next.extend([429, 503]);
        f.clock = 1_000_500;
    }
    eventually("five inserts over three partitions", || {
        seen.all().len() == 5
    })
    .await;
    c.stop().await.unwrap();
    let mut ids: Vec<i64> = seen
        .all()
        .iter()
        .map(|e| e.data["ID"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    // The retried POST carried the same requestId with retry=true.
    let posts = fake.lock().posts.clone();
    let retried: Vec<&(String, bool)> = posts.iter().filter(|p| p.1).collect();
    assert!(!retried.is_empty(), "{posts:?}");
    for r in retried {
        assert!(
            posts.iter().any(|p| p.0 == r.0 && !p.1),
            "retry of an unknown request {r:?}"
        );
    }
}

#[tokio::test]
async fn missing_change_tracking_is_refused_with_the_fix() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |_| {});
    let c = connector(&base, &Arc::new(MemoryCheckpoints::new()));
    c.add_change_handler(Seen::default().handler());
    match c.start().await.unwrap_err() {
        aragora_cdc::CdcError::Config { field, message } => {
            assert_eq!(field, "config.tables");
            assert!(message.contains("SET CHANGE_TRACKING = TRUE"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert!(!c.is_running().await);
}

#[tokio::test]
async fn a_position_beyond_time_travel_is_history_lost() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |_| {});
    fake.lock().tables.get_mut(T).unwrap().tracked = true;
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector(&base, &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    c.stop().await.unwrap();
    fake.lock().retention_start = 2_000_000;
    let err = c.start().await.unwrap_err().to_string();
    assert!(err.contains("history lost"), "{err}");
    assert!(err.contains("DATA_RETENTION_TIME_IN_DAYS"), "{err}");
}

#[tokio::test]
async fn a_jwt_for_another_account_is_rejected_clearly() {
    let (fake, base) = fake().await;
    let mut cfg = config(&base);
    cfg.account = "otheracct".into();
    let c = SnowflakeConnector::new("sf-x", cfg, "cdc_user", KEY).unwrap();
    c.add_change_handler(Seen::default().handler());
    let err = c.start().await.unwrap_err().to_string();
    assert!(err.contains("refused the key-pair JWT"), "{err}");
    assert!(fake.lock().jwt_rejections >= 1);
    let h = c.health_check().await;
    assert!(!h.healthy);
    assert!(
        h.details["source_unreachable"]
            .as_str()
            .unwrap()
            .contains("390144")
    );
}

#[tokio::test]
async fn sync_reads_current_rows() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |rows| {
        rows.insert("a".into(), row(1, "ann"));
        rows.insert("b".into(), row(2, "bob"));
    });
    fake.lock().partition_size = 1;
    let c = connector(&base, &Arc::new(MemoryCheckpoints::new()));
    let rows: Vec<_> = c.sync().collect().await;
    let ids: Vec<String> = rows.into_iter().map(|r| r.unwrap().evidence_id).collect();
    assert_eq!(
        ids,
        vec![
            r#"snowflake:APP.PUBLIC.USERS:{"ID":1}"#,
            r#"snowflake:APP.PUBLIC.USERS:{"ID":2}"#
        ]
    );
}

/// Runs only with `SNOWFLAKE_ACCOUNT`, `SNOWFLAKE_USER`, `SNOWFLAKE_PRIVATE_KEY_PATH`,
/// `SNOWFLAKE_DATABASE` and `SNOWFLAKE_TABLE` (a table with CHANGE_TRACKING = TRUE in PUBLIC;
/// `SNOWFLAKE_WAREHOUSE` optional): authenticates, reads the table and one change window.
#[tokio::test]
async fn live_snowflake_when_configured() {
    let Ok(account) = std::env::var("SNOWFLAKE_ACCOUNT") else {
        eprintln!("SNOWFLAKE_ACCOUNT not set: the live Snowflake test did not run");
        return;
    };
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} must be set with SNOWFLAKE_ACCOUNT"))
    };
    let pem = std::fs::read_to_string(var("SNOWFLAKE_PRIVATE_KEY_PATH")).unwrap();
    let mut cfg =
        SnowflakeConfig::new(account, var("SNOWFLAKE_DATABASE"), [var("SNOWFLAKE_TABLE")]);
    cfg.warehouse = std::env::var("SNOWFLAKE_WAREHOUSE").ok();
    cfg.poll_interval_seconds = 1.0;
    let c = SnowflakeConnector::new("sf-live", cfg, &var("SNOWFLAKE_USER"), &pem).unwrap();
    let h = c.health_check().await;
    assert!(h.healthy, "{:?}", h.details);
    let rows: Vec<_> = c.sync().collect().await;
    assert!(rows.iter().all(|r| r.is_ok()), "{rows:?}");
    c.add_change_handler(Seen::default().handler());
    c.start()
        .await
        .expect("change tracking readable on the live table");
    c.close().await.unwrap();
}
