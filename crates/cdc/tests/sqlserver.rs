//! The SQL Server connector against the deterministic simulator (capture instances, the capture
//! job, cleanup, Change Tracking), golden tests of the SQL it sends, LSN encoding, property tests
//! of ordering and crash-resume, and a live test that runs when `MSSQL_URL` names a server.

use aragora_cdc::sqlserver::lsn::Lsn;
use aragora_cdc::sqlserver::sim::{SimOp, Simulator};
use aragora_cdc::sqlserver::source::{CaptureInstance, TableRef};
use aragora_cdc::sqlserver::{
    CdcToken, Credentials, Mode, SnapshotMode, SqlServerConfig, SqlServerConnector, merge_rows,
    plan_window, sql,
};
use aragora_cdc::{
    CallbackHandler, ChangeEvent, ChangeOperation, Checkpoint, CheckpointStore, Connector,
    HandlerError, MemoryCheckpoints,
};
use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

fn users() -> TableRef {
    TableRef::new("dbo", "users")
}
fn orders() -> TableRef {
    TableRef::new("dbo", "orders")
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn ins(t: TableRef, v: Value) -> SimOp {
    SimOp::Insert(t, obj(v))
}
fn upd(t: TableRef, k: Value, set: Value) -> SimOp {
    SimOp::Update(t, obj(k), obj(set))
}
fn del(t: TableRef, k: Value) -> SimOp {
    SimOp::Delete(t, obj(k))
}

/// A database with `users(id, name)` and `orders(id, user_id, total)` under CDC.
fn cdc_db() -> Arc<Simulator> {
    let sim = Arc::new(Simulator::new());
    sim.create_table(users(), &["id"], &["id", "name"]);
    sim.create_table(orders(), &["id"], &["id", "user_id", "total"]);
    sim.enable_cdc(&users(), "dbo_users");
    sim.enable_cdc(&orders(), "dbo_orders");
    sim
}

fn config(mode: Mode) -> SqlServerConfig {
    let mut c = SqlServerConfig::new("sim", "myapp", ["users", "orders"]);
    match mode {
        Mode::Cdc => c.use_cdc = Some(true),
        Mode::ChangeTracking => c.use_change_tracking = true,
    }
    c.poll_interval_seconds = 0.01;
    c.snapshot = SnapshotMode::Never;
    c.checkpoint_interval_ms = 1;
    c
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<ChangeEvent>>>);

impl Seen {
    fn handler(&self) -> Arc<CallbackHandler> {
        let s = self.0.clone();
        Arc::new(CallbackHandler::new(move |e| {
            let s = s.clone();
            async move {
                s.lock().push(e);
            }
        }))
    }
    fn len(&self) -> usize {
        self.0.lock().len()
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

fn connector(
    sim: &Arc<Simulator>,
    cfg: SqlServerConfig,
    cps: &Arc<MemoryCheckpoints>,
) -> SqlServerConnector {
    SqlServerConnector::with_shared_source("mssql-1", cfg, sim.clone())
        .unwrap()
        .with_checkpoints(cps.clone())
}

// ---------------------------------------------------------------- LSN encoding

#[test]
fn lsn_hex_round_trips_and_orders_bytewise() {
    let l = Lsn::parse("0x0000002A000001F00003").unwrap();
    assert_eq!(l.0, [0, 0, 0, 0x2a, 0, 0, 0x01, 0xf0, 0, 0x03]);
    assert_eq!(l.hex(), "0x0000002A000001F00003");
    assert_eq!(Lsn::parse("0000002a000001f00003").unwrap(), l);
    assert_eq!(Lsn::from_bytes(&l.0).unwrap(), l);
    assert_eq!(Lsn::from_u128(l.to_u128()), l);
    // Comparison is that of binary(10): byte by byte, most significant first.
    let a = Lsn::parse("0x00000029FFFFFFFFFFFF").unwrap();
    assert!(a < l);
    assert!(Lsn::ZERO < a && l < Lsn::MAX);
}

#[test]
fn lsn_increment_and_decrement_carry_like_the_server_functions() {
    let a = Lsn::parse("0x0000002A00000FFFFFFF").unwrap();
    assert_eq!(a.increment().hex(), "0x0000002A000010000000");
    assert_eq!(a.increment().decrement(), a);
    assert_eq!(Lsn::ZERO.decrement(), Lsn::ZERO);
    assert_eq!(Lsn::MAX.increment(), Lsn::MAX);
}

#[test]
fn lsn_rejects_wrong_lengths() {
    assert!(Lsn::from_bytes(&[0u8; 9]).is_err());
    assert!(Lsn::from_bytes(&[0u8; 11]).is_err());
    assert!(Lsn::parse("0x00").is_err());
    assert!(Lsn::parse("0xZZ00002A000001F00003").is_err());
}

#[test]
fn resume_tokens_round_trip() {
    let mut t = CdcToken {
        floor: Lsn::parse("0x0000002A000001F00003").unwrap(),
        ..Default::default()
    };
    t.instances.insert(
        "dbo_users".into(),
        Lsn::parse("0x0000002A000001F00001").unwrap(),
    );
    t.instances.insert(
        "dbo_orders".into(),
        Lsn::parse("0x0000002A000001F00003").unwrap(),
    );
    let s = t.render();
    assert_eq!(
        s,
        "cdc:@=0x0000002A000001F00003,dbo_orders=0x0000002A000001F00003,dbo_users=0x0000002A000001F00001"
    );
    assert_eq!(CdcToken::parse(&s).unwrap(), t);
    assert!(CdcToken::parse("ct:5").is_err());
    assert!(CdcToken::parse("cdc:@=0x01").is_err());
}

// ---------------------------------------------------------------- golden SQL

#[test]
fn golden_all_changes_sql() {
    assert_eq!(
        sql::all_changes("dbo_users"),
        "SELECT c.*, DATEDIFF_BIG(millisecond, '19700101', DATEADD(minute, DATEDIFF(minute, \
         SYSDATETIME(), SYSUTCDATETIME()), sys.fn_cdc_map_lsn_to_time(c.__$start_lsn))) AS \
         [__$aragora_commit_ms] FROM cdc.[fn_cdc_get_all_changes_dbo_users](sys.fn_cdc_increment_lsn(@P1), \
         @P2, N'all update old') AS c ORDER BY c.__$start_lsn, c.__$seqval, c.__$operation"
    );
    // A `]` in a name cannot end the quoted identifier.
    assert!(sql::all_changes("a]b").contains("[fn_cdc_get_all_changes_a]]b]"));
}

#[test]
fn golden_lsn_window_sql() {
    assert_eq!(sql::MAX_LSN, "SELECT sys.fn_cdc_get_max_lsn()");
    assert_eq!(sql::MIN_LSN, "SELECT sys.fn_cdc_get_min_lsn(@P1)");
    assert_eq!(
        sql::window_end(500),
        "SELECT MAX(w.start_lsn) FROM (SELECT TOP (500) m.start_lsn FROM cdc.lsn_time_mapping m \
         WHERE m.start_lsn > @P1 AND m.start_lsn <= @P2 ORDER BY m.start_lsn) AS w"
    );
}

#[test]
fn golden_change_tracking_sql() {
    let t = TableRef::new("dbo", "order lines");
    assert_eq!(
        sql::ct_changes(&t, &["order_id".into(), "line".into()]),
        "SELECT ct.SYS_CHANGE_VERSION AS [__$version], ct.SYS_CHANGE_OPERATION AS [__$operation], \
         ct.[order_id] AS [__$key_0], ct.[line] AS [__$key_1], t.* FROM CHANGETABLE(CHANGES \
         [dbo].[order lines], @P1) AS ct LEFT OUTER JOIN [dbo].[order lines] AS t ON \
         t.[order_id] = ct.[order_id] AND t.[line] = ct.[line] WHERE ct.SYS_CHANGE_VERSION <= @P2 \
         ORDER BY ct.SYS_CHANGE_VERSION, ct.[order_id], ct.[line]"
    );
    assert_eq!(
        sql::CT_MIN_VALID_VERSION,
        "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1))"
    );
    assert_eq!(
        sql::CT_CURRENT_VERSION,
        "SELECT CHANGE_TRACKING_CURRENT_VERSION()"
    );
    assert_eq!(
        sql::scan(&users(), &["id".into()]),
        "SELECT * FROM [dbo].[users] ORDER BY [id] OFFSET @P1 ROWS FETCH NEXT @P2 ROWS ONLY"
    );
}

#[test]
fn golden_setup_sql_is_the_guides() {
    let mut c = SqlServerConfig::new("h", "myapp", ["users"]);
    assert_eq!(
        c.setup_sql(),
        "USE [myapp];\nEXEC sys.sp_cdc_enable_db;\nEXEC sys.sp_cdc_enable_table\n    \
         @source_schema = N'dbo',\n    @source_name = N'users',\n    @role_name = NULL,\n    \
         @supports_net_changes = 1;\n"
    );
    c.use_change_tracking = true;
    assert_eq!(
        c.setup_sql(),
        "ALTER DATABASE [myapp] SET CHANGE_TRACKING = ON\n    (CHANGE_RETENTION = 2 DAYS, \
         AUTO_CLEANUP = ON);\nALTER TABLE [dbo].[users] ENABLE CHANGE_TRACKING\n    WITH \
         (TRACK_COLUMNS_UPDATED = ON);\n"
    );
}

// ---------------------------------------------------------------- configuration

#[test]
fn config_parses_the_guides_arguments_and_names_bad_fields() {
    let c = SqlServerConfig::from_json(&json!({
        "host": "localhost", "port": 1433, "database": "myapp", "schema": "dbo",
        "tables": ["users", "orders"], "use_cdc": true, "poll_interval_seconds": 5
    }))
    .unwrap();
    assert_eq!(c.mode(), Mode::Cdc);
    let ct = SqlServerConfig::from_json(&json!({
        "host": "localhost", "database": "myapp", "use_change_tracking": true
    }))
    .unwrap();
    assert_eq!(ct.mode(), Mode::ChangeTracking);
    assert_eq!((ct.port, ct.schema.as_str()), (1433, "dbo"));
    let err = |v: Value| match SqlServerConfig::from_json(&v) {
        Err(aragora_cdc::CdcError::Config { field, .. }) => field,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(err(json!({"database": "d"})), "config.host");
    assert_eq!(
        err(json!({"host": "h", "database": "d", "tables": ["ok", "no;pe"]})),
        "config.tables[1]"
    );
    assert_eq!(
        err(json!({"host": "h", "database": "d", "use_cdc": true, "use_change_tracking": true})),
        "config.use_change_tracking"
    );
    assert_eq!(
        err(json!({"host": "h", "database": "d", "use_cdc": false})),
        "config.use_cdc"
    );
    assert_eq!(
        err(json!({"host": "h", "database": "d", "poll_interval_seconds": 0})),
        "config.poll_interval_seconds"
    );
    assert_eq!(
        err(json!({"host": "h", "database": "d", "bogus": 1})),
        "config.bogus"
    );
}

#[test]
fn credentials_never_print_the_password() {
    let c = Credentials {
        username: "sa".into(),
        password: "secret".into(),
    };
    assert!(!format!("{c:?}").contains("secret"));
}

// ---------------------------------------------------------------- window planning

fn inst(name: &str, table: TableRef, start: u128) -> CaptureInstance {
    CaptureInstance {
        name: name.into(),
        table,
        start_lsn: Lsn::from_u128(start),
        key_columns: vec!["id".into()],
        captured_columns: vec!["id".into()],
    }
}

#[test]
fn windows_split_between_old_and_new_capture_instances() {
    let old = inst("dbo_users", users(), 100);
    let new = inst("dbo_users_v2", users(), 500);
    let ord = inst("dbo_orders", orders(), 100);
    let token = CdcToken {
        floor: Lsn::from_u128(300),
        ..Default::default()
    };
    let plan = plan_window(
        &[old.clone(), new.clone(), ord.clone()],
        &token,
        Lsn::from_u128(900),
    );
    let got: Vec<(String, u128, u128)> = plan
        .iter()
        .map(|r| (r.instance.name.clone(), r.after.to_u128(), r.to.to_u128()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("dbo_orders".into(), 300, 900),
            ("dbo_users".into(), 300, 499),
            ("dbo_users_v2".into(), 499, 900),
        ]
    );
    // Once past the new instance's start, the old one is not read again.
    let mut later = token.clone();
    later.floor = Lsn::from_u128(900);
    later
        .instances
        .insert("dbo_users".into(), Lsn::from_u128(499));
    let plan = plan_window(&[old, new, ord], &later, Lsn::from_u128(950));
    assert!(plan.iter().all(|r| r.instance.name != "dbo_users"));
}

// ---------------------------------------------------------------- CDC through the connector

#[tokio::test]
async fn cdc_delivers_inserts_updates_deletes_in_commit_order_across_tables() {
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let c = connector(&sim, config(Mode::Cdc), &cps);
    let seen = Seen::default();
    c.add_change_handler(seen.handler());
    c.start_cdc_polling().await.unwrap();
    sim.transaction(vec![
        ins(users(), json!({"id": 1, "name": "Ann"})),
        ins(orders(), json!({"id": 10, "user_id": 1, "total": 5})),
    ]);
    sim.transaction(vec![upd(
        users(),
        json!({"id": 1}),
        json!({"name": "Anna"}),
    )]);
    sim.transaction(vec![
        del(orders(), json!({"id": 10})),
        ins(users(), json!({"id": 2, "name": "Bob"})),
    ]);
    eventually("5 events", || seen.len() >= 5).await;
    c.stop_cdc_polling().await.unwrap();
    let ev = seen.all();
    let summary: Vec<(ChangeOperation, String, Value)> = ev
        .iter()
        .map(|e| (e.operation, e.table.clone(), json!(e.primary_key)))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                ChangeOperation::Insert,
                "dbo.users".into(),
                json!({"id": 1})
            ),
            (
                ChangeOperation::Insert,
                "dbo.orders".into(),
                json!({"id": 10})
            ),
            (
                ChangeOperation::Update,
                "dbo.users".into(),
                json!({"id": 1})
            ),
            (
                ChangeOperation::Delete,
                "dbo.orders".into(),
                json!({"id": 10})
            ),
            (
                ChangeOperation::Insert,
                "dbo.users".into(),
                json!({"id": 2})
            ),
        ]
    );
    let update = &ev[2];
    assert_eq!(json!(update.old_data), json!({"id": 1, "name": "Ann"}));
    assert_eq!(json!(update.data), json!({"id": 1, "name": "Anna"}));
    assert_eq!(
        json!(ev[3].old_data),
        json!({"id": 10, "user_id": 1, "total": 5})
    );
    assert!(ev[3].data.is_empty());
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e.sequence_number, i as i64 + 1);
        assert_eq!(e.database, "myapp");
        assert_eq!(e.source_type.as_str(), "sqlserver");
        assert!(e.resume_token.starts_with("0x"), "{}", e.resume_token);
        assert!(e.timestamp.starts_with("2026-01-01T"), "{}", e.timestamp);
    }
    // Commit order: LSNs never go down.
    let lsns: Vec<Lsn> = ev
        .iter()
        .map(|e| Lsn::parse(&e.resume_token).unwrap())
        .collect();
    assert!(lsns.windows(2).all(|w| w[0] <= w[1]));
    let cp = cps.load("mssql-1").await.unwrap().unwrap();
    let token = CdcToken::parse(&cp.resume_token).unwrap();
    assert_eq!(token.floor, sim.last_lsn());
    assert_eq!(token.instances.len(), 2);
    assert_eq!(cp.sequence_number, 5);
}

#[tokio::test]
async fn cdc_resumes_after_restart_without_loss_or_repeats() {
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector(&sim, config(Mode::Cdc), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    sim.transaction(vec![ins(users(), json!({"id": 1, "name": "a"}))]);
    eventually("first", || seen.len() == 1).await;
    c.close().await.unwrap();
    // Changes while stopped wait in the change tables.
    sim.transaction(vec![ins(users(), json!({"id": 2, "name": "b"}))]);
    sim.transaction(vec![upd(users(), json!({"id": 1}), json!({"name": "a2"}))]);
    let c2 = connector(&sim, config(Mode::Cdc), &cps);
    c2.add_change_handler(seen.handler());
    c2.start().await.unwrap();
    eventually("the two changes made while stopped", || seen.len() == 3).await;
    c2.close().await.unwrap();
    let ids: HashSet<String> = seen.all().iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        seen.all()
            .iter()
            .map(|e| e.sequence_number)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[tokio::test]
async fn cdc_follows_a_second_capture_instance_after_a_schema_change() {
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector(&sim, config(Mode::Cdc), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    sim.transaction(vec![ins(users(), json!({"id": 1, "name": "a"}))]);
    eventually("first", || seen.len() == 1).await;
    // ALTER TABLE adds a column; the DBA creates a second capture instance for it.
    sim.add_column(&users(), "email");
    sim.transaction(vec![upd(
        users(),
        json!({"id": 1}),
        json!({"email": "x@y"}),
    )]);
    sim.enable_cdc(&users(), "dbo_users_v2");
    sim.transaction(vec![upd(users(), json!({"id": 1}), json!({"name": "b"}))]);
    sim.transaction(vec![ins(
        users(),
        json!({"id": 2, "name": "c", "email": "c@y"}),
    )]);
    eventually("all four changes", || seen.len() >= 4).await;
    // The old instance is dropped once the connector moved past it.
    sim.drop_instance("dbo_users");
    sim.transaction(vec![del(users(), json!({"id": 2}))]);
    eventually("the delete", || seen.len() >= 5).await;
    c.stop().await.unwrap();
    let ev = seen.all();
    assert_eq!(ev.len(), 5, "no change delivered twice: {ev:#?}");
    // Before the new instance: the old one, without the new column.
    assert_eq!(json!(ev[1].data), json!({"id": 1, "name": "a"}));
    // From the new instance on: the new column.
    assert_eq!(
        json!(ev[2].data),
        json!({"id": 1, "name": "b", "email": "x@y"})
    );
    assert_eq!(
        json!(ev[2].old_data),
        json!({"id": 1, "name": "a", "email": "x@y"})
    );
    assert_eq!(
        json!(ev[3].data),
        json!({"id": 2, "name": "c", "email": "c@y"})
    );
    assert_eq!(ev[4].operation, ChangeOperation::Delete);
    let token = CdcToken::parse(&cps.load("mssql-1").await.unwrap().unwrap().resume_token).unwrap();
    assert!(!token.instances.contains_key("dbo_users"));
    assert!(token.instances.contains_key("dbo_users_v2"));
}

#[tokio::test]
async fn cdc_refuses_when_cleanup_removed_undelivered_changes() {
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector(&sim, config(Mode::Cdc), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    sim.transaction(vec![ins(users(), json!({"id": 1, "name": "a"}))]);
    eventually("first", || seen.len() == 1).await;
    c.stop().await.unwrap();
    sim.transaction(vec![ins(users(), json!({"id": 2, "name": "b"}))]);
    let last = sim.transaction(vec![ins(users(), json!({"id": 3, "name": "c"}))]);
    // Retention ran while the connector was down: id 2's change is gone.
    sim.cleanup_cdc(last);
    let c2 = connector(&sim, config(Mode::Cdc), &cps);
    c2.add_change_handler(seen.handler());
    let err = c2.start().await.unwrap_err().to_string();
    assert!(err.contains("history lost"), "{err}");
    assert!(err.contains("capture instance dbo_"), "{err}");
    assert!(err.contains("Reset the connector"), "{err}");
    let health = c2.health_check().await;
    assert!(!health.healthy);
    let lost: Vec<&Value> = health.details["capture_instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["capture_instance"] == json!("dbo_users"))
        .map(|i| &i["history_lost"])
        .collect();
    assert_eq!(lost, vec![&json!(true)], "{:?}", health.details);
    // Cleanup that removed only delivered changes is harmless.
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let c = connector(&sim, config(Mode::Cdc), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    let l = sim.transaction(vec![ins(users(), json!({"id": 1, "name": "a"}))]);
    eventually("delivered", || seen.len() == 2).await;
    c.stop().await.unwrap();
    sim.cleanup_cdc(l.increment());
    let c2 = connector(&sim, config(Mode::Cdc), &cps);
    c2.add_change_handler(seen.handler());
    c2.start().await.unwrap();
    c2.stop().await.unwrap();
}

#[tokio::test]
async fn cdc_stops_with_history_lost_when_cleanup_overtakes_a_running_connector() {
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let gate = Arc::new(AtomicBool::new(false));
    let seen = Seen::default();
    let c = connector(&sim, config(Mode::Cdc), &cps);
    let (g, s) = (gate.clone(), seen.0.clone());
    // A handler that fails until the gate opens keeps the connector at its first change.
    c.add_change_handler(Arc::new(CallbackHandler::new(move |e| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            if !g.load(Ordering::SeqCst) {
                return Err(HandlerError::new("downstream unavailable"));
            }
            s.lock().push(e);
            Ok(())
        }
    })));
    c.start().await.unwrap();
    sim.transaction(vec![ins(users(), json!({"id": 1, "name": "a"}))]);
    eventually("a handler failure", || {
        c.status().handler_errors_total.load(Ordering::Relaxed) > 0
    })
    .await;
    c.stop().await.unwrap();
    let last = sim.transaction(vec![ins(users(), json!({"id": 2, "name": "b"}))]);
    sim.cleanup_cdc(last.increment());
    gate.store(true, Ordering::SeqCst);
    let err = c.start().await.unwrap_err().to_string();
    assert!(err.starts_with("source database: history lost"), "{err}");
    assert!(seen.len() == 0);
}

#[tokio::test]
async fn cdc_refuses_to_start_without_a_running_capture_job_and_reports_it_while_running() {
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    sim.set_capture_job(false);
    let seen = Seen::default();
    let c = connector(&sim, config(Mode::Cdc), &cps);
    c.add_change_handler(seen.handler());
    let err = c.start().await.unwrap_err().to_string();
    assert!(err.contains("capture job is not executing"), "{err}");
    assert!(!c.is_running().await);

    sim.set_capture_job(true);
    c.start().await.unwrap();
    sim.set_capture_job(false);
    // Written while the job is down: in the log, not yet in the change tables.
    sim.transaction(vec![ins(users(), json!({"id": 1, "name": "a"}))]);
    eventually("the stopped job to show", || {
        c.status()
            .source_error()
            .is_some_and(|e| e.contains("not being captured"))
    })
    .await;
    let h = c.health_check().await;
    assert!(!h.healthy);
    assert!(
        h.details["capture_job"]
            .as_str()
            .unwrap()
            .starts_with("not running")
    );
    assert_eq!(seen.len(), 0);
    sim.set_capture_job(true);
    eventually("the change once the job ran", || seen.len() == 1).await;
    eventually("health to recover", || c.status().source_error().is_none()).await;
    assert!(c.health_check().await.healthy);
    c.stop().await.unwrap();
}

#[tokio::test]
async fn cdc_reports_missing_setup_by_field() {
    let sim = Arc::new(Simulator::new());
    sim.create_table(users(), &["id"], &["id", "name"]);
    sim.create_table(orders(), &["id"], &["id", "total"]);
    let cps = Arc::new(MemoryCheckpoints::new());
    let c = connector(&sim, config(Mode::Cdc), &cps);
    c.add_change_handler(Seen::default().handler());
    let e = c.start().await.unwrap_err();
    assert!(
        matches!(&e, aragora_cdc::CdcError::Config { field, .. } if field == "config.use_cdc"),
        "{e}"
    );
    sim.enable_cdc(&users(), "dbo_users");
    let e = c.start().await.unwrap_err();
    match e {
        aragora_cdc::CdcError::Config { field, message } => {
            assert_eq!(field, "config.tables[1]");
            assert!(message.contains("sp_cdc_enable_table"), "{message}");
        }
        other => panic!("{other}"),
    }
    let ct = connector(&sim, config(Mode::Cdc), &cps);
    assert!(ct.start_change_tracking_polling().await.is_err());
}

#[tokio::test]
async fn cdc_snapshots_existing_rows_then_streams() {
    let sim = cdc_db();
    for i in 0..25 {
        sim.transaction(vec![ins(
            users(),
            json!({"id": i, "name": format!("u{i}")}),
        )]);
    }
    let cps = Arc::new(MemoryCheckpoints::new());
    let mut cfg = config(Mode::Cdc);
    cfg.snapshot = SnapshotMode::Initial;
    cfg.batch_size = 7;
    let seen = Seen::default();
    let c = connector(&sim, cfg, &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    eventually("the snapshot", || seen.len() == 25).await;
    sim.transaction(vec![upd(users(), json!({"id": 3}), json!({"name": "x"}))]);
    eventually("the update", || seen.len() == 26).await;
    c.stop().await.unwrap();
    let ev = seen.all();
    assert!(
        ev[..25]
            .iter()
            .all(|e| e.operation == ChangeOperation::Insert)
    );
    assert_eq!(ev[25].operation, ChangeOperation::Update);
    assert!(cps.load("mssql-1").await.unwrap().unwrap().snapshot_done);
    assert_eq!(c.status().details()["snapshot_rows"], json!(25));
}

#[tokio::test]
async fn cdc_reconnects_after_source_errors_without_losing_changes() {
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector(&sim, config(Mode::Cdc), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    sim.transaction(vec![ins(users(), json!({"id": 1, "name": "a"}))]);
    eventually("first", || seen.len() == 1).await;
    sim.fail_next(3, "error 10054: connection reset by peer");
    sim.transaction(vec![ins(users(), json!({"id": 2, "name": "b"}))]);
    eventually("the change after reconnecting", || seen.len() == 2).await;
    assert!(c.status().reconnects.load(Ordering::Relaxed) >= 1);
    c.stop().await.unwrap();
}

#[tokio::test]
async fn sync_scans_tables_in_key_order() {
    let sim = cdc_db();
    for i in [5, 1, 3] {
        sim.transaction(vec![ins(
            users(),
            json!({"id": i, "name": format!("u{i}")}),
        )]);
    }
    sim.transaction(vec![ins(
        orders(),
        json!({"id": 9, "user_id": 1, "total": 2}),
    )]);
    let mut cfg = config(Mode::Cdc);
    cfg.batch_size = 2;
    let c = connector(&sim, cfg, &Arc::new(MemoryCheckpoints::new()));
    let rows: Vec<_> = c.sync().collect().await;
    let rows: Vec<_> = rows.into_iter().map(|r| r.unwrap()).collect();
    let ids: Vec<String> = rows.iter().map(|r| r.evidence_id.clone()).collect();
    assert_eq!(
        ids,
        vec![
            r#"sqlserver:myapp.dbo.users:{"id":1}"#,
            r#"sqlserver:myapp.dbo.users:{"id":3}"#,
            r#"sqlserver:myapp.dbo.users:{"id":5}"#,
            r#"sqlserver:myapp.dbo.orders:{"id":9}"#,
        ]
    );
    assert_eq!(rows[0].content, "table: dbo.users\nid: 1\nname: u1\n");
}

// ---------------------------------------------------------------- Change Tracking

fn ct_db() -> Arc<Simulator> {
    let sim = Arc::new(Simulator::new());
    sim.create_table(users(), &["id"], &["id", "name"]);
    sim.create_table(orders(), &["id"], &["id", "user_id", "total"]);
    sim.enable_change_tracking(&users());
    sim.enable_change_tracking(&orders());
    sim
}

#[tokio::test]
async fn change_tracking_delivers_net_changes() {
    let sim = ct_db();
    sim.transaction(vec![ins(users(), json!({"id": 1, "name": "old"}))]);
    let cps = Arc::new(MemoryCheckpoints::new());
    let mut cfg = config(Mode::ChangeTracking);
    cfg.poll_interval_seconds = 3600.0;
    let seen = Seen::default();
    let c = connector(&sim, cfg.clone(), &cps);
    c.add_change_handler(seen.handler());
    c.start_change_tracking_polling().await.unwrap();
    c.stop_cdc_polling().await.unwrap();
    // Several changes between two polls collapse to one net change per row.
    sim.transaction(vec![ins(users(), json!({"id": 2, "name": "b"}))]);
    sim.transaction(vec![upd(users(), json!({"id": 2}), json!({"name": "b2"}))]);
    sim.transaction(vec![upd(users(), json!({"id": 1}), json!({"name": "new"}))]);
    sim.transaction(vec![ins(
        orders(),
        json!({"id": 7, "user_id": 2, "total": 1}),
    )]);
    sim.transaction(vec![del(orders(), json!({"id": 7}))]);
    let c = connector(&sim, cfg, &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    eventually("three net changes", || seen.len() == 3).await;
    c.stop().await.unwrap();
    let ev = seen.all();
    let got: Vec<(ChangeOperation, String, Value, Value)> = ev
        .iter()
        .map(|e| {
            (
                e.operation,
                e.table.clone(),
                json!(e.primary_key),
                json!(e.data),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                ChangeOperation::Insert,
                "dbo.users".into(),
                json!({"id": 2}),
                json!({"id": 2, "name": "b2"})
            ),
            (
                ChangeOperation::Update,
                "dbo.users".into(),
                json!({"id": 1}),
                json!({"id": 1, "name": "new"})
            ),
            (
                ChangeOperation::Delete,
                "dbo.orders".into(),
                json!({"id": 7}),
                json!({})
            ),
        ]
    );
    assert!(ev.iter().all(|e| e.old_data.is_empty()));
    assert_eq!(
        cps.load("mssql-1").await.unwrap().unwrap().resume_token,
        "ct:6"
    );
}

#[tokio::test]
async fn change_tracking_refuses_below_the_minimum_valid_version() {
    let sim = ct_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let seen = Seen::default();
    let c = connector(&sim, config(Mode::ChangeTracking), &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    sim.transaction(vec![ins(users(), json!({"id": 1, "name": "a"}))]);
    eventually("first", || seen.len() == 1).await;
    c.stop().await.unwrap();
    sim.transaction(vec![ins(users(), json!({"id": 2, "name": "b"}))]);
    sim.transaction(vec![ins(users(), json!({"id": 3, "name": "c"}))]);
    sim.cleanup_change_tracking(2);
    let err = c.start().await.unwrap_err().to_string();
    assert!(err.contains("history lost"), "{err}");
    assert!(err.contains("CHANGE_RETENTION"), "{err}");
    let h = c.health_check().await;
    assert!(!h.healthy);
    assert_eq!(h.details["position"], json!(1));
}

#[tokio::test]
async fn change_tracking_requires_it_on_every_table() {
    let sim = Arc::new(Simulator::new());
    sim.create_table(users(), &["id"], &["id"]);
    sim.create_table(orders(), &["id"], &["id"]);
    sim.enable_change_tracking(&users());
    let c = connector(
        &sim,
        config(Mode::ChangeTracking),
        &Arc::new(MemoryCheckpoints::new()),
    );
    c.add_change_handler(Seen::default().handler());
    match c.start().await.unwrap_err() {
        aragora_cdc::CdcError::Config { field, message } => {
            assert_eq!(field, "config.tables[1]");
            assert!(message.contains("ENABLE CHANGE_TRACKING"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert!(c.start_cdc_polling().await.is_err());
}

// ---------------------------------------------------------------- properties

#[derive(Debug, Clone)]
enum Step {
    Txn(Vec<(bool, u8, u8)>),
    SchemaChange,
    Restart { crash: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => prop::collection::vec((any::<bool>(), 0u8..3, 0u8..6), 1..5).prop_map(Step::Txn),
        1 => Just(Step::SchemaChange),
        2 => any::<bool>().prop_map(|crash| Step::Restart { crash }),
    ]
}

/// A checkpoint store that can "crash": while frozen, saves are acknowledged but not kept, as
/// when the process dies between acknowledging and persisting.
#[derive(Default)]
struct CrashyCheckpoints {
    inner: MemoryCheckpoints,
    frozen: AtomicBool,
}

#[async_trait]
impl CheckpointStore for CrashyCheckpoints {
    async fn load(&self, id: &str) -> Result<Option<Checkpoint>, aragora_cdc::CdcError> {
        self.inner.load(id).await
    }
    async fn save(
        &self,
        id: &str,
        cp: &Checkpoint,
        recent: &[ChangeEvent],
    ) -> Result<(), aragora_cdc::CdcError> {
        if self.frozen.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.save(id, cp, recent).await
    }
    async fn reset(&self, id: &str) -> Result<(), aragora_cdc::CdcError> {
        self.inner.reset(id).await
    }
}

/// Applies a generated transaction; returns the expected (table, op, key) changes.
fn apply(sim: &Simulator, ops: &[(bool, u8, u8)]) -> Vec<(String, ChangeOperation, i64)> {
    let mut out = Vec::new();
    let mut sim_ops = Vec::new();
    let mut present: Vec<HashSet<i64>> = [users(), orders()]
        .iter()
        .map(|t| {
            sim.rows(t)
                .iter()
                .map(|r| r["id"].as_i64().unwrap())
                .collect()
        })
        .collect();
    for (is_users, kind, key) in ops {
        let t = if *is_users { users() } else { orders() };
        let set = &mut present[usize::from(!*is_users)];
        let key = i64::from(*key);
        let op = match (kind, set.contains(&key)) {
            (_, false) => {
                set.insert(key);
                let mut row = json!({"id": key});
                row[if *is_users { "name" } else { "total" }] = json!(format!("v{key}"));
                sim_ops.push(ins(t.clone(), row));
                ChangeOperation::Insert
            }
            (0 | 1, true) => {
                let col = if *is_users { "name" } else { "total" };
                sim_ops.push(upd(
                    t.clone(),
                    json!({"id": key}),
                    json!({col: format!("w{}", out.len())}),
                ));
                ChangeOperation::Update
            }
            _ => {
                set.remove(&key);
                sim_ops.push(del(t.clone(), json!({"id": key})));
                ChangeOperation::Delete
            }
        };
        out.push((t.display(), op, key));
    }
    sim.transaction(sim_ops);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Whatever the transactions, schema changes, batch sizes, restarts and crashes: every change
    /// is delivered, in commit order, and replays reuse the same event ids.
    #[test]
    fn cdc_delivers_every_change_once_per_id_in_commit_order(
        steps in prop::collection::vec(step(), 1..14),
        batch_size in 1usize..6,
        window in 1u32..4,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let sim = cdc_db();
            let store = Arc::new(CrashyCheckpoints::default());
            let seen = Seen::default();
            let mut cfg = config(Mode::Cdc);
            cfg.batch_size = batch_size;
            cfg.max_transactions_per_poll = window;
            let make = || {
                let c = SqlServerConnector::with_shared_source("mssql-p", cfg.clone(), sim.clone())
                    .unwrap()
                    .with_checkpoints(store.clone());
                c.add_change_handler(seen.handler());
                c
            };
            let mut c = make();
            c.start().await.unwrap();
            let mut expected = Vec::new();
            let mut versions = 1;
            for s in &steps {
                match s {
                    Step::Txn(ops) => expected.extend(apply(&sim, ops)),
                    Step::SchemaChange => {
                        versions += 1;
                        let col = format!("c{versions}");
                        sim.add_column(&users(), &col);
                        sim.enable_cdc(&users(), &format!("dbo_users_v{versions}"));
                    }
                    Step::Restart { crash } => {
                        store.frozen.store(*crash, Ordering::SeqCst);
                        let want = expected.len();
                        eventually("progress before a restart", || {
                            seen.all().iter().map(|e| e.id.clone()).collect::<HashSet<_>>().len() >= want
                        }).await;
                        c.stop().await.unwrap();
                        store.frozen.store(false, Ordering::SeqCst);
                        c = make();
                        c.start().await.unwrap();
                    }
                }
            }
            let want = expected.len();
            eventually("every change", || {
                seen.all().iter().map(|e| e.id.clone()).collect::<HashSet<_>>().len() >= want
            }).await;
            c.stop().await.unwrap();
            let all = seen.all();
            let mut first = Vec::new();
            let mut ids = HashSet::new();
            for e in &all {
                if ids.insert(e.id.clone()) {
                    first.push((e.table.clone(), e.operation, e.primary_key["id"].as_i64().unwrap()));
                }
            }
            prop_assert_eq!(&first, &expected);
            // Each delivery run is in commit order; a replay starts over from an earlier LSN.
            let replays = all
                .windows(2)
                .filter(|w| Lsn::parse(&w[1].resume_token).unwrap() < Lsn::parse(&w[0].resume_token).unwrap())
                .count();
            let restarts = steps.iter().filter(|s| matches!(s, Step::Restart { crash: true })).count();
            prop_assert!(replays <= restarts, "{} out-of-order points, {} crashes", replays, restarts);
            // A replayed event is identical to its first delivery.
            let mut by_id = std::collections::HashMap::new();
            for e in &all {
                let prev = by_id.entry(e.id.clone()).or_insert_with(|| e.clone());
                prop_assert_eq!(&prev.data, &e.data);
                prop_assert_eq!(&prev.old_data, &e.old_data);
            }
            Ok(())
        })?;
    }

    /// The merge of capture instances is a sort by (start_lsn, seqval, operation).
    #[test]
    fn merge_orders_by_lsn_seqval_operation(
        rows in prop::collection::vec(prop::collection::vec((0u128..20, 0u128..4, 1u8..5), 0..12), 1..4)
    ) {
        let per: Vec<Vec<aragora_cdc::sqlserver::source::CdcRow>> = rows
            .iter()
            .map(|list| {
                let mut v: Vec<_> = list
                    .iter()
                    .map(|(l, s, op)| aragora_cdc::sqlserver::source::CdcRow {
                        start_lsn: Lsn::from_u128(*l),
                        seqval: Lsn::from_u128(l * 16 + s),
                        operation: *op,
                        commit_ms: None,
                        row: Map::new(),
                    })
                    .collect();
                v.sort_by_key(|r| (r.start_lsn, r.seqval, r.operation));
                v
            })
            .collect();
        let total: usize = per.iter().map(Vec::len).sum();
        let merged = merge_rows(per);
        prop_assert_eq!(merged.len(), total);
        for w in merged.windows(2) {
            let a = (w[0].1.start_lsn, w[0].1.seqval);
            let b = (w[1].1.start_lsn, w[1].1.seqval);
            prop_assert!(a <= b);
        }
    }
}

#[tokio::test]
async fn many_changes_in_large_transactions_arrive_in_order() {
    let sim = cdc_db();
    let cps = Arc::new(MemoryCheckpoints::new());
    let mut cfg = config(Mode::Cdc);
    cfg.batch_size = 64;
    cfg.max_transactions_per_poll = 3;
    let seen = Seen::default();
    let count = Arc::new(AtomicUsize::new(0));
    let c = connector(&sim, cfg, &cps);
    c.add_change_handler(seen.handler());
    c.start().await.unwrap();
    for t in 0..20 {
        let ops = (0..50)
            .map(|i| ins(users(), json!({"id": t * 50 + i, "name": "x"})))
            .collect();
        sim.transaction(ops);
        count.fetch_add(50, Ordering::Relaxed);
    }
    eventually("1000 inserts", || seen.len() == 1000).await;
    c.stop().await.unwrap();
    let keys: Vec<i64> = seen
        .all()
        .iter()
        .map(|e| e.primary_key["id"].as_i64().unwrap())
        .collect();
    assert_eq!(keys, (0..1000).collect::<Vec<_>>());
}

// ---------------------------------------------------------------- live server

/// Runs only when `MSSQL_URL` (`mssql://user:password@host:port/database`) names a server where
/// the user may enable CDC (db_owner) and SQL Server Agent runs; otherwise it says it did not run.
#[tokio::test]
async fn live_sql_server_when_configured() {
    let Ok(url) = std::env::var("MSSQL_URL") else {
        eprintln!("MSSQL_URL not set: the live SQL Server test did not run");
        return;
    };
    let rest = url
        .strip_prefix("mssql://")
        .expect("mssql://user:pass@host:port/db");
    let (auth, hostpart) = rest.rsplit_once('@').expect("user:pass@");
    let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, db) = hostpart.split_once('/').expect("/database");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "1433"));
    let mut cfg = SqlServerConfig::new(host, db, ["aragora_cdc_probe"]);
    cfg.port = port.parse().unwrap();
    cfg.use_cdc = Some(true);
    cfg.poll_interval_seconds = 0.5;
    cfg.trust_server_certificate = true;
    cfg.snapshot = SnapshotMode::Never;
    let admin = aragora_cdc::sqlserver::tds::TdsSource::connect(&cfg, user, pass)
        .await
        .expect("connect to MSSQL_URL");
    admin
        .execute_batch(
            "IF (SELECT is_cdc_enabled FROM sys.databases WHERE database_id = DB_ID()) = 0 \
             EXEC sys.sp_cdc_enable_db; \
             IF OBJECT_ID(N'dbo.aragora_cdc_probe') IS NULL BEGIN \
             CREATE TABLE dbo.aragora_cdc_probe (id int PRIMARY KEY, name nvarchar(50)); \
             EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', \
             @source_name = N'aragora_cdc_probe', @role_name = NULL; END",
        )
        .await
        .expect("set up CDC on dbo.aragora_cdc_probe");
    let seen = Seen::default();
    let c = SqlServerConnector::new(
        "mssql-live",
        cfg,
        Credentials {
            username: user.into(),
            password: pass.into(),
        },
    )
    .unwrap();
    c.add_change_handler(seen.handler());
    c.start_cdc_polling()
        .await
        .expect("start against the live server");
    let id = (aragora_core::time::now_ms() % 1_000_000_000) as i32;
    admin
        .execute_batch(&format!(
            "INSERT INTO dbo.aragora_cdc_probe VALUES ({id}, N'a'); \
             UPDATE dbo.aragora_cdc_probe SET name = N'b' WHERE id = {id}; \
             DELETE FROM dbo.aragora_cdc_probe WHERE id = {id};"
        ))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen
        .all()
        .iter()
        .filter(|e| e.primary_key["id"] == json!(id))
        .count()
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no events from the live server: {:?}",
            c.health_check().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ops: Vec<ChangeOperation> = seen
        .all()
        .iter()
        .filter(|e| e.primary_key["id"] == json!(id))
        .map(|e| e.operation)
        .collect();
    assert_eq!(
        ops,
        vec![
            ChangeOperation::Insert,
            ChangeOperation::Update,
            ChangeOperation::Delete
        ]
    );
    let h = c.health_check().await;
    assert_eq!(h.details["capture_job"], json!("running"));
    c.close().await.unwrap();
}
