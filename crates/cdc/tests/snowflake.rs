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
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

#[path = "support/snowflake_fake.rs"]
mod sf_fake;
use sf_fake::{FINGERPRINT, KEY, T, commit, fake, row};

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
