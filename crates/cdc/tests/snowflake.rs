//! The Snowflake connector against a loopback fake of the SQL API v2 that reproduces its
//! documented responses (200 result sets, 202 + status polling, result partitions, 429/503,
//! 401 for a bad JWT, 422 for statements that fail) and verifies every request's key-pair JWT
//! with an independent RSA check against a committed test key pair (`tests/data`, made with
//! openssl; the fingerprint file is openssl's). A live test runs when `SNOWFLAKE_ACCOUNT` is set.
//! Stream mode runs against the fake's streams (offset = table version, consumption only when a
//! `BEGIN … COMMIT` request that reads the stream commits) and staging tables.

use aragora_cdc::snowflake::api::KeyPair;
use aragora_cdc::snowflake::{
    ChangeRow, SnowflakeConfig, SnowflakeConnector, SnowflakeMode, WindowToken, changes_sql, pair,
    snapshot_sql, stream,
};
use aragora_cdc::{
    CallbackHandler, ChangeEvent, ChangeHandler, ChangeOperation, CheckpointStore, Connector,
    HandlerError, MemoryCheckpoints,
};
use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[path = "support/snowflake_fake.rs"]
mod sf_fake;
use sf_fake::{ACCOUNT, FINGERPRINT, KEY, T, USER, commit, fake, row};

fn config(base: &str) -> SnowflakeConfig {
    let mut c = SnowflakeConfig::new("testacct", "app", ["users"]);
    c.base_url = Some(base.to_string());
    c.poll_interval_seconds = 0.01;
    c.window_lag_seconds = 0.0;
    c.checkpoint_interval_ms = 1;
    c.primary_keys.insert("users".into(), vec!["id".into()]);
    // Changes only; the snapshot tests turn it on (it is the default).
    c.snapshot = false;
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
    connector_with(config(base), cps)
}

fn connector_with(cfg: SnowflakeConfig, cps: &Arc<MemoryCheckpoints>) -> SnowflakeConnector {
    let mut c = SnowflakeConnector::new("sf-1", cfg, "cdc_user", KEY)
        .unwrap()
        .with_checkpoints(cps.clone());
    c.api_mut().unwrap().poll = Duration::from_millis(5);
    c
}

fn stream_config(base: &str, snapshot: bool) -> SnowflakeConfig {
    let mut c = config(base);
    c.mode = SnowflakeMode::Stream;
    c.snapshot = snapshot;
    c
}

/// The stream and staging table of USERS for connector `sf-1`, as the fake names them.
const STREAM: &str = "\"APP\".\"PUBLIC\".\"ARAGORA_SF_1_USERS_STREAM\"";
const STAGE: &str = "\"APP\".\"PUBLIC\".\"ARAGORA_SF_1_USERS_STAGE\"";

fn staged_batches(fake: &sf_fake::Shared) -> Vec<u64> {
    let f = fake.lock();
    let mut b: Vec<u64> = f
        .stages
        .get(STAGE)
        .map(|s| s.rows.iter().map(|r| r.0).collect())
        .unwrap_or_default();
    b.dedup();
    b
}

async fn token(cps: &MemoryCheckpoints) -> String {
    cps.load("sf-1")
        .await
        .unwrap()
        .map(|c| c.resume_token)
        .unwrap_or_default()
}

/// Records every batch it is offered and refuses it while `failing` is set or when it holds a
/// row whose `ID` is at least `fail_from_id` (when that is above 0).
#[derive(Default)]
struct Flaky {
    failing: AtomicBool,
    fail_from_id: std::sync::atomic::AtomicI64,
    seen: Mutex<Vec<ChangeEvent>>,
}

#[async_trait]
impl ChangeHandler for Flaky {
    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event)).await
    }

    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        self.seen.lock().extend(events.iter().cloned());
        let from = self.fail_from_id.load(Ordering::SeqCst);
        let refused = events
            .iter()
            .any(|e| from > 0 && e.data["ID"].as_i64().is_some_and(|id| id >= from));
        if self.failing.load(Ordering::SeqCst) || refused {
            return Err(HandlerError::new("downstream is down"));
        }
        Ok(())
    }
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
    assert_eq!(
        field(json!({"account": "a", "database": "d", "tables": ["t"], "mode": "cdc"})),
        "config.mode"
    );
    assert_eq!(
        field(json!({"account": "a", "database": "d", "tables": ["t"], "mode": 1})),
        "config.mode"
    );
    assert_eq!(
        field(json!({"account": "a", "database": "d", "tables": ["t"], "snapshot": "yes"})),
        "config.snapshot"
    );
    let ok = |v: Value| SnowflakeConfig::from_json(&v).unwrap();
    let d = ok(json!({"account": "a", "database": "d", "tables": ["t"]}));
    assert_eq!(
        (d.mode, d.snapshot),
        (SnowflakeMode::Changes, true),
        "a first start snapshots by default (DESIGN §8)"
    );
    let never = ok(json!({"account": "a", "database": "d", "tables": ["t"], "snapshot": "never"}));
    assert!(!never.snapshot);
    let s = ok(
        json!({"account": "a", "database": "d", "tables": ["t"], "mode": "stream",
                      "snapshot": "initial"}),
    );
    assert_eq!((s.mode, s.snapshot), (SnowflakeMode::Stream, true));
    assert_eq!(
        serde_json::to_value(&s).unwrap()["mode"],
        json!("stream"),
        "the managed API stores and echoes the mode"
    );
}

#[test]
fn golden_stream_and_snapshot_sql() {
    assert_eq!(
        stream::object_names("conn-7f", "users"),
        (
            "ARAGORA_CONN_7F_USERS_STREAM".to_string(),
            "ARAGORA_CONN_7F_USERS_STAGE".to_string()
        )
    );
    assert_eq!(
        stream::consume_statements("S", "ST", 4, Some(3)),
        vec![
            "BEGIN",
            "DELETE FROM S WHERE \"ARAGORA_BATCH\" <= 3",
            "INSERT INTO S SELECT 4, s.* FROM ST s",
            "COMMIT"
        ]
    );
    assert_eq!(stream::consume_statements("S", "ST", 1, None).len(), 3);
    assert_eq!(
        stream::create_stream_sql("ST", "T", true),
        "CREATE STREAM IF NOT EXISTS ST ON TABLE T SHOW_INITIAL_ROWS = TRUE"
    );
    assert_eq!(stream::parse_token("sfs:12").unwrap(), 12);
    assert_eq!(stream::parse_token("").unwrap(), 0);
    assert!(stream::parse_token("sf:12").is_err());
    assert_eq!(
        snapshot_sql(T, 5, Some(&["id".to_string()])),
        "SELECT * FROM \"APP\".\"PUBLIC\".\"USERS\" AT(TIMESTAMP => TO_TIMESTAMP_LTZ(5, 3)) \
         ORDER BY \"ID\""
    );
}

/// Commits an insert of row 2 (plus row 3 inserted and deleted again, which nets out) and lets
/// one poll see it, then an update of row 1 and the delete of row 2 and a second poll.
async fn insert_then_update_and_delete(fake: &sf_fake::Shared, seen: &Seen) {
    commit(fake, 1_000_100, |rows| {
        rows.insert("r2".into(), row(2, "bob"));
        rows.insert("r3".into(), row(3, "tmp"));
    });
    commit(fake, 1_000_200, |rows| {
        rows.remove("r3");
    });
    fake.lock().clock = 1_000_500;
    eventually("the insert", || seen.all().len() == 1).await;
    commit(fake, 1_000_600, |rows| {
        rows.get_mut("r1")
            .unwrap()
            .insert("NAME".into(), json!("anna"));
        rows.remove("r2");
    });
    fake.lock().clock = 1_001_000;
    eventually("update and delete", || seen.all().len() == 3).await;
}

/// The three events of [`insert_then_update_and_delete`], in either mode.
fn assert_insert_update_delete(ev: &[ChangeEvent]) {
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_eq!(ev[0].operation, ChangeOperation::Insert);
    assert_eq!(
        json!(ev[0].data),
        json!({"ID": 2, "NAME": "bob", "ACTIVE": true})
    );
    assert_eq!(json!(ev[0].primary_key), json!({"ID": 2}));
    assert_eq!(ev[1].operation, ChangeOperation::Update);
    assert_eq!(ev[1].old_data["NAME"], json!("ann"));
    assert_eq!(ev[1].data["NAME"], json!("anna"));
    assert_eq!(json!(ev[1].primary_key), json!({"ID": 1}));
    assert_eq!(ev[2].operation, ChangeOperation::Delete);
    assert_eq!(
        json!(ev[2].old_data),
        json!({"ID": 2, "NAME": "bob", "ACTIVE": true})
    );
    assert_eq!(ev[0].table, "PUBLIC.USERS");
}

#[tokio::test]
async fn the_fake_enforces_multi_statement_count() {
    let (fake, base) = fake().await;
    let jwt = KeyPair::from_pem(KEY)
        .unwrap()
        .jwt(ACCOUNT, USER, chrono_now_s())
        .unwrap();
    let post = |count: Option<&str>| {
        let mut params = json!({"TIMEZONE": "UTC"});
        if let Some(c) = count {
            params["MULTI_STATEMENT_COUNT"] = json!(c);
        }
        reqwest::Client::new()
            .post(format!("{base}/api/v2/statements?requestId=x"))
            .bearer_auth(&jwt)
            .header("X-Snowflake-Authorization-Token-Type", "KEYPAIR_JWT")
            .json(&json!({"statement": "BEGIN;\nCOMMIT", "parameters": params}))
            .send()
    };
    for bad in [None, Some("1"), Some("3")] {
        let r = post(bad).await.unwrap();
        assert_eq!(r.status(), 422, "{bad:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "000008", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Actual statement count 2 did not match"),
            "{body}"
        );
    }
    let r = post(Some("2")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["statementHandles"].as_array().unwrap().len(), 2);
    assert_eq!(fake.lock().jwt_rejections, 0);
}

fn chrono_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn stream_mode_delivers_inserts_updates_and_deletes_with_old_data() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |rows| {
        rows.insert("r1".into(), row(1, "ann"));
    });
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector_with(stream_config(&base, false), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    {
        let f = fake.lock();
        assert!(
            f.tables[T].tracked,
            "creating the stream turned change tracking on"
        );
        assert_eq!(
            f.streams[STREAM].offset, 1,
            "the stream starts at the current version"
        );
        assert!(f.stages.contains_key(STAGE));
    }
    let h = c.health_check().await;
    assert_eq!(h.details["mode"], "stream");
    assert_eq!(
        h.details["stream_objects"][0]["stream"],
        "ARAGORA_SF_1_USERS_STREAM"
    );
    // Batch 1: an insert (and a row that nets out); batch 2: an update and a delete.
    insert_then_update_and_delete(&fake, &seen).await;
    // Acknowledged batches leave the staging table (with the next consuming request).
    eventually("the staging table emptied", || {
        staged_batches(&fake).is_empty()
    })
    .await;
    c.stop().await.unwrap();
    let ev = seen.all();
    assert_insert_update_delete(&ev);
    assert_eq!(ev[0].resume_token, "sfs:1");
    assert_eq!(ev[2].resume_token, "sfs:2");
    let cp = cps.load("sf-1").await.unwrap().unwrap();
    assert_eq!((cp.resume_token.as_str(), cp.sequence_number), ("sfs:2", 3));
    {
        let f = fake.lock();
        assert_eq!(
            f.streams[STREAM].offset, 4,
            "consumed up to the last commit"
        );
        assert_eq!(f.jwt_rejections, 0);
        let consumes = f
            .log
            .iter()
            .filter(|s| s.starts_with(&format!("INSERT INTO {STAGE} SELECT ")))
            .count();
        assert!(consumes >= 2, "{:?}", f.log);
    }
    // Switching the mode under a stored checkpoint is refused, naming the field.
    let other = connector(&base, &cps);
    other.add_change_handler(Seen::default().handler());
    match other.start().await.unwrap_err() {
        aragora_cdc::CdcError::Config { field, message } => {
            assert_eq!(field, "config.mode");
            assert!(message.contains("`stream` mode"), "{message}");
        }
        e => panic!("{e}"),
    }
    // Teardown drops the stream and the staging table.
    c.teardown().await.unwrap();
    let f = fake.lock();
    assert!(f.streams.is_empty() && f.stages.is_empty());
}

#[tokio::test]
async fn stream_mode_crash_before_the_staged_batch_is_deleted_redelivers_it() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |rows| {
        rows.insert("r1".into(), row(1, "ann"));
    });
    let cps = Arc::new(MemoryCheckpoints::new());
    let flaky = Arc::new(Flaky::default());
    flaky.failing.store(true, Ordering::SeqCst);
    let c = connector_with(stream_config(&base, false), &cps);
    c.add_change_handler(flaky.clone());
    c.start().await.unwrap();
    commit(&fake, 1_000_100, |rows| {
        rows.insert("r2".into(), row(2, "bob"));
        rows.get_mut("r1")
            .unwrap()
            .insert("NAME".into(), json!("anna"));
    });
    fake.lock().clock = 1_000_500;
    eventually("the batch offered twice", || flaky.seen.lock().len() >= 4).await;
    // Consumed (offset advanced, rows staged) but never acknowledged: the process dies.
    assert_eq!(fake.lock().streams[STREAM].offset, 2);
    assert_eq!(staged_batches(&fake), vec![1]);
    c.stop().await.unwrap();
    drop(c);
    assert_eq!(token(&cps).await, "sfs:0");
    let first: Vec<(String, ChangeOperation)> = flaky
        .seen
        .lock()
        .iter()
        .take(2)
        .map(|e| (e.id.clone(), e.operation))
        .collect();
    // A change committed while the connector is down.
    commit(&fake, 1_000_600, |rows| {
        rows.insert("r3".into(), row(3, "cy"));
    });
    fake.lock().clock = 1_001_000;
    let seen = Seen::default();
    let c = connector_with(stream_config(&base, false), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    eventually("the staged batch and the new change", || {
        seen.all().len() == 3
    })
    .await;
    eventually("checkpoint sfs:2", || {
        fake.lock().stages[STAGE].rows.iter().all(|r| r.0 > 1)
    })
    .await;
    c.stop().await.unwrap();
    let ev = seen.all();
    let again: Vec<(String, ChangeOperation)> = ev
        .iter()
        .take(2)
        .map(|e| (e.id.clone(), e.operation))
        .collect();
    assert_eq!(
        again, first,
        "the staged batch came again with the same event ids"
    );
    assert_eq!(ev[0].data["NAME"], json!("anna"));
    assert_eq!(ev[0].old_data["NAME"], json!("ann"));
    assert_eq!(ev[1].data["NAME"], json!("bob"));
    assert_eq!(
        (ev[2].operation, ev[2].data["ID"].clone()),
        (ChangeOperation::Insert, json!(3))
    );
    assert_eq!(ev[2].resume_token, "sfs:2");
    let mut ids: Vec<&String> = ev.iter().map(|e| &e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        3,
        "nothing delivered twice by the second process"
    );
    assert_eq!(token(&cps).await, "sfs:2");
}

#[tokio::test]
async fn stream_mode_failing_handler_holds_the_staged_batch() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |_| {});
    let cps = Arc::new(MemoryCheckpoints::new());
    let flaky = Arc::new(Flaky::default());
    flaky.failing.store(true, Ordering::SeqCst);
    let c = connector_with(stream_config(&base, false), &cps);
    c.add_change_handler(flaky.clone());
    c.start().await.unwrap();
    commit(&fake, 1_000_100, |rows| {
        rows.insert("r1".into(), row(1, "ann"));
    });
    fake.lock().clock = 1_000_500;
    eventually("three failed attempts", || flaky.seen.lock().len() >= 3).await;
    // Held: nothing acknowledged, the batch stays staged, later polls do not consume more.
    assert_eq!(token(&cps).await, "sfs:0");
    assert_eq!(staged_batches(&fake), vec![1]);
    assert!(c.status().handler_errors_total.load(Ordering::Relaxed) >= 2);
    flaky.failing.store(false, Ordering::SeqCst);
    eventually("the checkpoint moved", || {
        flaky
            .seen
            .lock()
            .last()
            .is_some_and(|e| e.data["ID"] == json!(1))
            && fake.lock().stages[STAGE].rows.is_empty()
    })
    .await;
    c.stop().await.unwrap();
    assert_eq!(token(&cps).await, "sfs:1");
    let seen = flaky.seen.lock();
    assert!(
        seen.iter().all(|e| e.id == seen[0].id),
        "one event, retried"
    );
}

#[tokio::test]
async fn stream_mode_a_request_failing_before_commit_does_not_advance_the_stream() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |_| {});
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector_with(stream_config(&base, false), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    commit(&fake, 1_000_100, |rows| {
        rows.insert("r1".into(), row(1, "ann"));
    });
    {
        let mut f = fake.lock();
        f.fail_statement = Some("COMMIT".into());
        f.clock = 1_000_500;
    }
    eventually("the insert after the retry", || seen.all().len() == 1).await;
    c.stop().await.unwrap();
    let f = fake.lock();
    assert_eq!(
        f.rollbacks, 1,
        "the first consuming transaction was rolled back"
    );
    assert_eq!(f.streams[STREAM].offset, 2);
    let ev = seen.all();
    assert_eq!(
        (ev[0].operation, ev[0].data["ID"].clone()),
        (ChangeOperation::Insert, json!(1))
    );
    assert_eq!(ev[0].resume_token, "sfs:1");
}

#[tokio::test]
async fn a_stale_stream_is_history_lost_with_the_way_out() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |_| {});
    let cps = Arc::new(MemoryCheckpoints::new());
    let c = connector_with(stream_config(&base, false), &cps);
    c.add_change_handler(Seen::default().handler());
    c.start().await.unwrap();
    fake.lock().streams.get_mut(STREAM).unwrap().stale = true;
    eventually("the running connector failed", || {
        c.status().phase() == "failed"
    })
    .await;
    let running = c.status().source_error().unwrap();
    assert!(running.starts_with("history lost"), "{running}");
    c.stop().await.unwrap();
    let err = c.start().await.unwrap_err().to_string();
    assert!(err.contains("history lost"), "{err}");
    assert!(err.contains("is stale"), "{err}");
    assert!(err.contains("snapshot: true"), "{err}");
    assert!(err.contains("DROP STREAM"), "{err}");
    assert!(!c.is_running().await);
}

#[tokio::test]
async fn stream_mode_snapshot_then_changes_without_gap_or_duplicate() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |rows| {
        rows.insert("r1".into(), row(1, "ann"));
        rows.insert("r2".into(), row(2, "bob"));
    });
    // Committed after the stream was created; visible once the clock passes it.
    commit(&fake, 1_000_100, |rows| {
        rows.get_mut("r2")
            .unwrap()
            .insert("NAME".into(), json!("bobby"));
        rows.insert("r3".into(), row(3, "cy"));
    });
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector_with(stream_config(&base, true), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    assert!(fake.lock().streams[STREAM].initial);
    eventually("the initial rows", || seen.all().len() == 2).await;
    fake.lock().clock = 1_000_500;
    eventually("the changes after", || seen.all().len() == 4).await;
    c.stop().await.unwrap();
    let ev = seen.all();
    let got: Vec<(ChangeOperation, Value, Value)> = ev
        .iter()
        .map(|e| {
            (
                e.operation,
                e.data["NAME"].clone(),
                json!(e.old_data.get("NAME")),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ChangeOperation::Insert, json!("ann"), Value::Null),
            (ChangeOperation::Insert, json!("bob"), Value::Null),
            (ChangeOperation::Update, json!("bobby"), json!("bob")),
            (ChangeOperation::Insert, json!("cy"), Value::Null),
        ]
    );
    assert_eq!(ev[1].resume_token, "sfs:1");
    assert_eq!(ev[3].resume_token, "sfs:2");
}

#[tokio::test]
async fn changes_mode_snapshot_then_windows_without_gap_or_duplicate() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |rows| {
        rows.insert("r2".into(), row(2, "bob"));
        rows.insert("r1".into(), row(1, "ann"));
    });
    // Exactly at T (the server clock at start): in the snapshot, not in the first window.
    commit(&fake, 1_000_000, |rows| {
        rows.insert("r3".into(), row(3, "cy"));
    });
    // Just after T: in the first window, not in the snapshot.
    commit(&fake, 1_000_001, |rows| {
        rows.get_mut("r1")
            .unwrap()
            .insert("NAME".into(), json!("anna"));
        rows.remove("r2");
        rows.insert("r4".into(), row(4, "dee"));
    });
    {
        let mut f = fake.lock();
        f.tables.get_mut(T).unwrap().tracked = true;
        f.partition_size = 1;
    }
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let mut cfg = config(&base);
    cfg.snapshot = true;
    cfg.batch_size = 2;
    let c = connector_with(cfg, &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    eventually("the snapshot", || seen.all().len() == 3).await;
    fake.lock().clock = 1_000_500;
    eventually("the first window", || seen.all().len() == 6).await;
    c.stop().await.unwrap();
    let ev = seen.all();
    let got: Vec<(ChangeOperation, i64, Value)> = ev
        .iter()
        .map(|e| {
            (
                e.operation,
                e.primary_key["ID"].as_i64().unwrap(),
                e.data.get("NAME").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ChangeOperation::Insert, 1, json!("ann")),
            (ChangeOperation::Insert, 2, json!("bob")),
            (ChangeOperation::Insert, 3, json!("cy")),
            (ChangeOperation::Update, 1, json!("anna")),
            (ChangeOperation::Delete, 2, Value::Null),
            (ChangeOperation::Insert, 4, json!("dee")),
        ]
    );
    assert_eq!(ev[0].resume_token, "sf:1000000");
    assert_eq!(ev[0].timestamp, ev[2].timestamp);
    assert_eq!(ev[3].old_data["NAME"], json!("ann"));
    let cp = cps.load("sf-1").await.unwrap().unwrap();
    assert!(cp.snapshot_done);
    assert_eq!(
        (cp.resume_token.as_str(), cp.sequence_number),
        ("sf:1000500", 6)
    );
    let log = fake.lock().log.clone();
    assert!(
        log.iter().any(|s| s
            == "SELECT * FROM \"APP\".\"PUBLIC\".\"USERS\" AT(TIMESTAMP => TO_TIMESTAMP_LTZ(1000000, 3)) ORDER BY \"ID\""),
        "{log:?}"
    );
}

#[tokio::test]
async fn changes_mode_snapshot_cut_short_is_taken_again_at_the_same_instant() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |rows| {
        for i in 1..=3 {
            rows.insert(format!("r{i}"), row(i, "x"));
        }
    });
    fake.lock().tables.get_mut(T).unwrap().tracked = true;
    let cps = Arc::new(MemoryCheckpoints::new());
    let flaky = Arc::new(Flaky::default());
    // Accepts the first chunk (ids 1, 2) and refuses the second (id 3).
    flaky.fail_from_id.store(3, Ordering::SeqCst);
    let mut cfg = config(&base);
    cfg.snapshot = true;
    cfg.batch_size = 2;
    let c = connector_with(cfg.clone(), &cps);
    c.add_change_handler(flaky.clone());
    c.start().await.unwrap();
    eventually("the second chunk refused", || flaky.seen.lock().len() >= 4).await;
    c.stop().await.unwrap();
    drop(c);
    let cp = cps.load("sf-1").await.unwrap().unwrap();
    assert_eq!(cp.resume_token, "sf:1000000");
    assert!(!cp.snapshot_done, "the snapshot did not finish");
    // A row deleted meanwhile is still in the snapshot taken at the same instant.
    commit(&fake, 1_000_100, |rows| {
        rows.remove("r1");
    });
    fake.lock().clock = 1_000_500;
    let seen = Seen::default();
    let c = connector_with(cfg, &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    eventually("the snapshot again and the window", || {
        seen.all().len() == 4
    })
    .await;
    c.stop().await.unwrap();
    let ev = seen.all();
    let first_ids: Vec<String> = flaky
        .seen
        .lock()
        .iter()
        .take(2)
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(
        vec![ev[0].id.clone(), ev[1].id.clone()],
        first_ids,
        "the same rows at the same instant have the same ids"
    );
    let ops: Vec<(ChangeOperation, i64)> = ev
        .iter()
        .map(|e| (e.operation, e.primary_key["ID"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        ops,
        vec![
            (ChangeOperation::Insert, 1),
            (ChangeOperation::Insert, 2),
            (ChangeOperation::Insert, 3),
            (ChangeOperation::Delete, 1),
        ]
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
    // Window 1: an insert (and a row that nets out); window 2: an update and a delete.
    insert_then_update_and_delete(&fake, &seen).await;
    c.stop().await.unwrap();
    let ev = seen.all();
    assert_insert_update_delete(&ev);
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

#[tokio::test]
async fn changes_mode_snapshot_of_a_table_without_key_columns() {
    let (fake, base) = fake().await;
    commit(&fake, 900_000, |rows| {
        // Two identical rows: one key (the content hash), two events with different ids.
        rows.insert("r1".into(), row(7, "same"));
        rows.insert("r2".into(), row(7, "same"));
        rows.insert("r3".into(), row(8, "other"));
    });
    fake.lock().tables.get_mut(T).unwrap().tracked = true;
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let mut cfg = config(&base);
    cfg.primary_keys.clear();
    cfg.snapshot = true;
    let c = connector_with(cfg.clone(), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    eventually("the snapshot", || seen.all().len() == 3).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cps.load("sf-1").await.unwrap().unwrap().snapshot_done {
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshot never done"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(c.status().details()["snapshot_rows"], json!(3));
    c.stop().await.unwrap();
    let ev = seen.all();
    let mut by_key: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for e in &ev {
        assert_eq!(e.operation, ChangeOperation::Insert);
        let h = e.primary_key["ROW_HASH"].as_str().unwrap().to_string();
        assert_eq!(h.len(), 32, "{h}");
        by_key.entry(h).or_default().push(e.id.clone());
    }
    let mut sizes: Vec<usize> = by_key.values().map(Vec::len).collect();
    sizes.sort();
    assert_eq!(sizes, vec![1, 2], "identical rows share the content key");
    let mut ids: Vec<&String> = ev.iter().map(|e| &e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "but not the event id");
    assert!(
        !fake.lock().log.iter().any(|s| s.contains("ORDER BY")),
        "no key columns, no order"
    );
}

#[tokio::test]
async fn an_unreachable_account_is_reported_with_its_cause() {
    // A port nothing listens on: the health report names the address and the refusal.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let cps = Arc::new(MemoryCheckpoints::new());
    let mut c = connector(&base, &cps);
    c.api_mut().unwrap().max_attempts = 2;
    let h = c.health_check().await;
    assert!(!h.healthy);
    let why = h.details["source_unreachable"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains(&base) && why.contains("no answer") && why.to_lowercase().contains("refused"),
        "{why}"
    );
}
