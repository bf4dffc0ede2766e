//! The MongoDB connector.
//!
//! - Against the secantusdb emulator (`ARAGORA_TEST_MONGO_URL`, started by
//!   `scripts/test-services`): event mapping, pre-images, snapshot, resume, sync, notices, health.
//! - Against a scripted [`ChangeSource`] for what the emulator cannot be made to do on demand:
//!   history lost mid-stream, invalidate at a chosen point, a quiet stream's post-batch token,
//!   transient failures.
//! - Against a real deployment when `MONGODB_URL` names one (a replica set).

use aragora_cdc::SnapshotMode;
use aragora_cdc::mongodb::{
    ChangeCursor, ChangeSource, MongoConfig, MongoConnector, NoticeKind, StreamError, WatchPlan,
    parse_token, token_text,
};
use aragora_cdc::{
    ChangeEvent, ChangeHandler, ChangeOperation, CheckpointStore, Connector, HandlerError,
    MemoryCheckpoints,
};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use mongodb::bson::{Document, doc};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<ChangeEvent>>,
    /// Fail this many more batches before acknowledging.
    fail: AtomicUsize,
}

#[async_trait]
impl ChangeHandler for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    async fn handle(&self, e: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(e)).await
    }
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::new("scripted failure"));
        }
        self.events.lock().extend_from_slice(events);
        Ok(())
    }
}

impl Recorder {
    fn all(&self) -> Vec<ChangeEvent> {
        self.events.lock().clone()
    }
}

/// Polls `f` until it returns `Some`, for at most `secs`.
async fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_events(r: &Recorder, n: usize) -> Vec<ChangeEvent> {
    eventually(30, &format!("{n} events"), || {
        let all = r.all();
        (all.len() >= n).then_some(all)
    })
    .await
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

struct Emu {
    url: String,
    client: mongodb::Client,
    db: mongodb::Database,
}

async fn emulator() -> Emu {
    let url = aragora_testkit::mongo_test_url();
    let client = mongodb::Client::with_uri_str(&url).await.expect("client");
    let db = client.database(&unique("cdc"));
    Emu { url, client, db }
}

impl Emu {
    fn config(&self, collections: &[&str], snapshot: SnapshotMode) -> MongoConfig {
        let mut c = MongoConfig::new(self.url.clone(), self.db.name(), collections.to_vec());
        c.snapshot = snapshot;
        c.max_await_ms = 100;
        c.checkpoint_interval_ms = 20;
        c.server_selection_timeout_ms = 5000;
        c
    }

    async fn connector(&self, id: &str, cfg: MongoConfig) -> MongoConnector {
        MongoConnector::new(id, cfg, None, None).expect("connector")
    }

    fn coll(&self, name: &str) -> mongodb::Collection<Document> {
        self.db.collection(name)
    }

    async fn with_pre_images(&self, name: &str) {
        self.db
            .run_command(
                doc! { "create": name, "changeStreamPreAndPostImages": { "enabled": true } },
            )
            .await
            .expect("create collection with pre-images");
    }
}

fn obj(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

// ---------------------------------------------------------------------------------------------
// Against the emulator

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_replace_delete_map_to_events_with_pre_images() {
    let emu = emulator().await;
    emu.with_pre_images("people").await;
    emu.db.create_collection("plain").await.unwrap();
    let conn = emu
        .connector(
            "mongo-map",
            emu.config(&["people", "plain"], SnapshotMode::Never),
        )
        .await;
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.expect("start");

    let people = emu.coll("people");
    people
        .insert_one(doc! { "_id": 1, "name": "Ann", "age": 30 })
        .await
        .unwrap();
    // Wait between writes so updateLookup sees each state (it reads the current document).
    wait_events(&rec, 1).await;
    people
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "age": 31 } })
        .await
        .unwrap();
    wait_events(&rec, 2).await;
    people
        .replace_one(doc! { "_id": 1 }, doc! { "name": "Ann B" })
        .await
        .unwrap();
    wait_events(&rec, 3).await;
    people.delete_one(doc! { "_id": 1 }).await.unwrap();
    emu.coll("plain")
        .insert_one(doc! { "_id": "k", "v": 1 })
        .await
        .unwrap();
    emu.coll("plain")
        .update_one(doc! { "_id": "k" }, doc! { "$set": { "v": 2 } })
        .await
        .unwrap();
    // Not listed: not captured.
    emu.coll("other").insert_one(doc! { "x": 1 }).await.unwrap();
    emu.coll("plain")
        .insert_one(doc! { "_id": "last" })
        .await
        .unwrap();
    let ev = wait_events(&rec, 7).await;
    assert_eq!(ev.len(), 7, "{ev:#?}");

    let ops: Vec<(ChangeOperation, &str)> =
        ev.iter().map(|e| (e.operation, e.table.as_str())).collect();
    use ChangeOperation::*;
    assert_eq!(
        ops,
        vec![
            (Insert, "people"),
            (Update, "people"),
            (Update, "people"),
            (Delete, "people"),
            (Insert, "plain"),
            (Update, "plain"),
            (Insert, "plain"),
        ]
    );
    for e in &ev {
        assert_eq!(e.database, emu.db.name());
        assert_eq!(e.connector_id, "mongo-map");
        assert_eq!(e.source_type.as_str(), "mongodb");
        assert!(e.id.starts_with("chg-"));
        assert!(parse_token(&e.resume_token).is_ok(), "{}", e.resume_token);
        assert!(aragora_core::time::parse_rfc3339(&e.timestamp).is_some());
    }
    let seqs: Vec<i64> = ev.iter().map(|e| e.sequence_number).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    let mut ids: Vec<&str> = ev.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);

    // documentKey → primary_key; fullDocument → data; pre-images → old_data.
    assert_eq!(ev[0].primary_key, obj(json!({"_id": 1})));
    assert_eq!(ev[0].data, obj(json!({"_id": 1, "name": "Ann", "age": 30})));
    assert!(ev[0].old_data.is_empty());
    assert_eq!(ev[1].data, obj(json!({"_id": 1, "name": "Ann", "age": 31})));
    assert_eq!(
        ev[1].old_data,
        obj(json!({"_id": 1, "name": "Ann", "age": 30}))
    );
    assert_eq!(ev[2].data, obj(json!({"_id": 1, "name": "Ann B"})));
    assert_eq!(
        ev[2].old_data,
        obj(json!({"_id": 1, "name": "Ann", "age": 31}))
    );
    assert!(ev[3].data.is_empty());
    assert_eq!(ev[3].old_data, obj(json!({"_id": 1, "name": "Ann B"})));
    assert_eq!(ev[3].primary_key, obj(json!({"_id": 1})));
    // No pre-images on `plain`: old_data stays empty.
    assert_eq!(ev[4].primary_key, obj(json!({"_id": "k"})));
    assert!(ev[5].old_data.is_empty());
    assert_eq!(ev[5].data["v"], json!(2));

    let health = conn.health_check().await;
    assert!(health.healthy, "{health:?}");
    assert!(health.latency_ms >= 0.0);
    assert_eq!(health.details["events_total"], json!(7));
    assert_eq!(health.details["phase"], json!("streaming"));
    assert_eq!(health.details["change_streams_supported"], json!(true));
    assert!(health.details["stream_position"]["cluster_time"].is_object());
    assert!(health.details["resume_token"].is_string());
    conn.stop().await.unwrap();
    assert_eq!(conn.health_check().await.details["phase"], json!("stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_stop_delivers_everything_once_with_the_same_ids() {
    let emu = emulator().await;
    let items = emu.coll("items");
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let cfg = emu.config(&["items"], SnapshotMode::Never);

    let first = emu
        .connector("mongo-resume", cfg.clone())
        .await
        .with_checkpoints(checkpoints.clone());
    let rec1 = Arc::new(Recorder::default());
    first.add_change_handler(rec1.clone());
    first.start().await.unwrap();
    for i in 0..5 {
        items.insert_one(doc! { "_id": i, "n": i }).await.unwrap();
    }
    let ev1 = wait_events(&rec1, 5).await;
    first.stop().await.unwrap();
    let cp = checkpoints.load("mongo-resume").await.unwrap().unwrap();
    assert_eq!(cp.sequence_number, 5);
    assert!(cp.snapshot_done);

    // Changes while nobody listens.
    for i in 5..12 {
        items.insert_one(doc! { "_id": i, "n": i }).await.unwrap();
    }
    items
        .update_one(doc! { "_id": 0 }, doc! { "$set": { "n": 100 } })
        .await
        .unwrap();

    let second = emu
        .connector("mongo-resume", cfg.clone())
        .await
        .with_checkpoints(checkpoints.clone());
    let rec2 = Arc::new(Recorder::default());
    second.add_change_handler(rec2.clone());
    second.start().await.unwrap();
    let ev2 = wait_events(&rec2, 8).await;
    // Nothing from before the checkpoint again; nothing lost; order kept.
    let keys: Vec<Value> = ev2.iter().map(|e| e.primary_key["_id"].clone()).collect();
    assert_eq!(
        keys,
        (5..12).chain([0]).map(|i| json!(i)).collect::<Vec<_>>()
    );
    assert_eq!(ev2.last().unwrap().operation, ChangeOperation::Update);
    assert_eq!(ev2[0].sequence_number, 6);
    second.stop().await.unwrap();

    // Replaying from an earlier position yields the same ids and sequence numbers.
    checkpoints
        .save(
            "mongo-resume",
            &aragora_cdc::Checkpoint {
                resume_token: ev1[1].resume_token.clone(),
                sequence_number: ev1[1].sequence_number,
                snapshot_done: true,
            },
            &[],
        )
        .await
        .unwrap();
    let third = emu
        .connector("mongo-resume", cfg)
        .await
        .with_checkpoints(checkpoints.clone());
    let rec3 = Arc::new(Recorder::default());
    third.add_change_handler(rec3.clone());
    third.start().await.unwrap();
    let ev3 = wait_events(&rec3, 3 + 8).await;
    third.stop().await.unwrap();
    let before: Vec<(String, i64)> = ev1[2..]
        .iter()
        .chain(ev2.iter())
        .map(|e| (e.id.clone(), e.sequence_number))
        .collect();
    let replayed: Vec<(String, i64)> = ev3
        .iter()
        .map(|e| (e.id.clone(), e.sequence_number))
        .collect();
    assert_eq!(replayed, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_and_nothing_is_skipped() {
    let emu = emulator().await;
    let conn = emu
        .connector("mongo-retry", emu.config(&["jobs"], SnapshotMode::Never))
        .await;
    let rec = Arc::new(Recorder::default());
    rec.fail.store(2, Ordering::SeqCst);
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    for i in 0..3 {
        emu.coll("jobs")
            .insert_one(doc! { "_id": i })
            .await
            .unwrap();
    }
    let ev = wait_events(&rec, 3).await;
    let keys: Vec<Value> = ev.iter().map(|e| e.primary_key["_id"].clone()).collect();
    assert_eq!(keys, vec![json!(0), json!(1), json!(2)]);
    let h = conn.health_check().await;
    assert!(
        h.details["handler_errors_total"].as_u64().unwrap() >= 2,
        "{h:?}"
    );
    conn.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_snapshots_in_id_order_then_streams_without_a_gap() {
    let emu = emulator().await;
    let coll = emu.coll("stock");
    for i in [5, 3, 9, 1, 7, 2, 8, 4, 6, 0] {
        coll.insert_one(doc! { "_id": i, "qty": i * 10 })
            .await
            .unwrap();
    }
    let mut cfg = emu.config(&["stock"], SnapshotMode::Initial);
    cfg.sync_chunk_size = 3;
    cfg.batch_size = 4;
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let conn = emu
        .connector("mongo-snap", cfg)
        .await
        .with_checkpoints(checkpoints.clone());
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    // Written after start(), racing the copy: each may or may not be in the snapshot, but both
    // arrive as changes after it (no gap), so replaying the events gives the final state.
    coll.insert_one(doc! { "_id": 10, "qty": 100 })
        .await
        .unwrap();
    coll.delete_one(doc! { "_id": 0 }).await.unwrap();
    let ev = eventually(30, "snapshot and both changes", || {
        let all = rec.all();
        (all.iter().filter(|e| e.resume_token != "snapshot").count() >= 2).then_some(all)
    })
    .await;
    let n_snap = ev
        .iter()
        .take_while(|e| e.resume_token == "snapshot")
        .count();
    assert!((9..=11).contains(&n_snap), "{ev:#?}");
    let snap: Vec<i64> = ev[..n_snap]
        .iter()
        .map(|e| {
            assert_eq!(e.operation, ChangeOperation::Insert);
            assert_eq!(
                e.data["qty"],
                json!(e.primary_key["_id"].as_i64().unwrap() * 10)
            );
            e.primary_key["_id"].as_i64().unwrap()
        })
        .collect();
    let mut sorted = snap.clone();
    sorted.sort();
    assert_eq!(snap, sorted, "snapshot in _id order");
    let tail: Vec<(ChangeOperation, Value)> = ev[n_snap..]
        .iter()
        .map(|e| (e.operation, e.primary_key["_id"].clone()))
        .collect();
    assert_eq!(
        tail,
        vec![
            (ChangeOperation::Insert, json!(10)),
            (ChangeOperation::Delete, json!(0))
        ]
    );
    let mut state = std::collections::BTreeMap::new();
    for e in &ev {
        let id = e.primary_key["_id"].as_i64().unwrap();
        match e.operation {
            ChangeOperation::Delete => {
                state.remove(&id);
            }
            _ => {
                state.insert(id, e.data.clone());
            }
        }
    }
    assert_eq!(
        state.keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    let h = conn.health_check().await;
    assert_eq!(h.details["snapshot_rows"], json!(n_snap));
    conn.stop().await.unwrap();
    let cp = checkpoints.load("mongo-snap").await.unwrap().unwrap();
    assert!(cp.snapshot_done);
    assert_eq!(cp.sequence_number, n_snap as i64 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_scans_collections_in_id_order_in_chunks() {
    let emu = emulator().await;
    for i in [4, 1, 3, 0, 2, 6, 5] {
        emu.coll("b_users")
            .insert_one(doc! { "_id": i, "name": format!("u{i}") })
            .await
            .unwrap();
    }
    emu.coll("a_orders")
        .insert_one(doc! { "_id": "o1", "total": 9.5 })
        .await
        .unwrap();
    let mut cfg = emu.config(&["b_users", "a_orders"], SnapshotMode::Never);
    cfg.sync_chunk_size = 2;
    let conn = emu.connector("mongo-sync", cfg.clone()).await;
    let rows: Vec<_> = conn
        .sync()
        .map(|r| r.expect("row"))
        .collect::<Vec<_>>()
        .await;
    let got: Vec<(String, Value)> = rows
        .iter()
        .map(|r| (r.table.clone(), r.primary_key["_id"].clone()))
        .collect();
    let mut want: Vec<(String, Value)> = (0..7).map(|i| ("b_users".into(), json!(i))).collect();
    want.push(("a_orders".into(), json!("o1")));
    assert_eq!(got, want);
    assert_eq!(
        rows[0].evidence_id,
        format!("mongodb:{}.b_users:{{\"_id\":0}}", emu.db.name())
    );
    assert_eq!(rows[0].content, "table: b_users\n_id: 0\nname: u0\n");
    assert_eq!(rows[7].data["total"], json!(9.5));

    // The whole database when no collection is listed (sorted by name).
    let all = emu
        .connector("mongo-sync-all", emu.config(&[], SnapshotMode::Never))
        .await;
    let tables: Vec<String> = all
        .sync()
        .map(|r| r.expect("row").table)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(tables.first().map(String::as_str), Some("a_orders"));
    assert_eq!(tables.len(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_rename_and_drop_database_become_notices_and_capture_goes_on() {
    let emu = emulator().await;
    emu.coll("keep")
        .insert_one(doc! { "_id": 0 })
        .await
        .unwrap();
    emu.coll("gone")
        .insert_one(doc! { "_id": 0 })
        .await
        .unwrap();
    emu.coll("old").insert_one(doc! { "_id": 0 }).await.unwrap();
    let conn = emu
        .connector("mongo-notice", emu.config(&[], SnapshotMode::Never))
        .await;
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    emu.coll("gone").drop().await.unwrap();
    emu.client
        .database("admin")
        .run_command(doc! {
            "renameCollection": format!("{}.old", emu.db.name()),
            "to": format!("{}.new", emu.db.name()),
        })
        .await
        .unwrap();
    emu.coll("keep")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    wait_events(&rec, 1).await;
    let kinds =
        |c: &MongoConnector| -> Vec<NoticeKind> { c.notices().iter().map(|n| n.kind).collect() };
    eventually(10, "drop and rename notices", || {
        let k = kinds(&conn);
        (k.len() >= 2).then_some(())
    })
    .await;
    assert_eq!(kinds(&conn)[..2], [NoticeKind::Drop, NoticeKind::Rename]);
    assert!(
        conn.notices()[1].message.contains(".new"),
        "{:?}",
        conn.notices()
    );
    assert_eq!(
        conn.health_check().await.details["schema_changes"],
        json!(2)
    );

    // dropDatabase ends the stream (invalidate); capture goes on with startAfter.
    emu.db.drop().await.unwrap();
    eventually(10, "invalidate notice", || {
        kinds(&conn).contains(&NoticeKind::Invalidate).then_some(())
    })
    .await;
    assert!(kinds(&conn).contains(&NoticeKind::DropDatabase));
    emu.coll("keep")
        .insert_one(doc! { "_id": 2 })
        .await
        .unwrap();
    let ev = wait_events(&rec, 2).await;
    assert_eq!(ev[1].primary_key["_id"], json!(2));
    let h = conn.health_check().await;
    assert!(h.healthy, "{h:?}");
    assert!(h.details["notices"].as_array().unwrap().len() >= 4);
    conn.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_persists_the_post_batch_token() {
    let emu = emulator().await;
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let conn = emu
        .connector("mongo-quiet", emu.config(&["watched"], SnapshotMode::Never))
        .await
        .with_checkpoints(checkpoints.clone());
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    let initial = checkpoints.load("mongo-quiet").await.unwrap().unwrap();
    // Only unrelated writes: the watched collection stays quiet.
    for i in 0..20 {
        emu.coll("noise")
            .insert_one(doc! { "_id": i })
            .await
            .unwrap();
    }
    let mut moved = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while moved.is_none() && Instant::now() < deadline {
        let cp = checkpoints.load("mongo-quiet").await.unwrap().unwrap();
        if cp.resume_token != initial.resume_token {
            moved = Some(cp);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let moved = moved.expect("the post-batch token of a quiet stream is persisted");
    assert!(rec.all().is_empty());
    assert_eq!(moved.sequence_number, 0);
    conn.stop().await.unwrap();

    // Resuming from that token loses nothing written afterwards.
    emu.coll("watched")
        .insert_one(doc! { "_id": "after" })
        .await
        .unwrap();
    let again = emu
        .connector("mongo-quiet", emu.config(&["watched"], SnapshotMode::Never))
        .await
        .with_checkpoints(checkpoints.clone());
    let rec2 = Arc::new(Recorder::default());
    again.add_change_handler(rec2.clone());
    again.start().await.unwrap();
    let ev = wait_events(&rec2, 1).await;
    assert_eq!(ev[0].primary_key["_id"], json!("after"));
    again.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_and_unreachable_servers_give_clear_errors() {
    for (v, field) in [
        (json!({"uri": "http://x", "database": "d"}), "config.uri"),
        (
            json!({"uri": "mongodb://u:secret@h", "database": "d"}),
            "config.uri",
        ),
        (
            json!({"uri": "mongodb://h", "database": "a/b"}),
            "config.database",
        ),
        (
            json!({"uri": "mongodb://h", "database": "d", "collections": [""]}),
            "config.collections[0]",
        ),
        (
            json!({"uri": "mongodb://h", "database": "d", "full_document_before_change": "maybe"}),
            "config.full_document_before_change",
        ),
        (json!({"uri": "mongodb://h"}), "config.database"),
    ] {
        match MongoConfig::from_json(&v) {
            Err(aragora_cdc::CdcError::Config { field: f, .. }) => assert_eq!(f, field, "{v}"),
            other => panic!("{v}: {other:?}"),
        }
    }
    // A URI the driver rejects.
    let bad = MongoConfig::new("mongodb://h:99999/", "d", ["c"]);
    assert!(matches!(
        MongoConnector::new("x", bad, None, None),
        Err(aragora_cdc::CdcError::Config { .. })
    ));

    // Nothing listens on port 1: start fails fast, naming the source; health says so.
    let mut cfg = MongoConfig::new("mongodb://127.0.0.1:1/?directConnection=true", "d", ["c"]);
    cfg.server_selection_timeout_ms = 300;
    let conn = MongoConnector::new("mongo-down", cfg, None, None).unwrap();
    conn.add_change_handler(Arc::new(Recorder::default()));
    let started = Instant::now();
    let err = conn.start().await.unwrap_err();
    assert!(matches!(err, aragora_cdc::CdcError::Source(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let h = conn.health_check().await;
    assert!(!h.healthy);
    assert!(h.details["source_unreachable"].is_string(), "{h:?}");
    assert!(!conn.is_running().await);

    // No handler: refused before touching the source.
    let emu = emulator().await;
    let conn = emu
        .connector("mongo-nohandler", emu.config(&["c"], SnapshotMode::Never))
        .await;
    assert!(matches!(
        conn.start().await,
        Err(aragora_cdc::CdcError::State(_))
    ));
}

/// A private emulator with a tiny oplog, so a test can make history fall off it.
struct OwnEmulator {
    child: std::process::Child,
    url: String,
}

impl Drop for OwnEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn own_emulator(extra: &[&str]) -> OwnEmulator {
    // Installs the emulator into the project's .venv when needed.
    aragora_testkit::mongo_test_url();
    let bin = std::env::var("SECANTUSD_BIN").unwrap_or_else(|_| {
        format!(
            "{}/../../.venv/bin/secantusd-py",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--storage-path", ":memory:", "--log-level", "WARNING"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin} (scripts/test-services installs it): {e}"));
    let emu = OwnEmulator {
        child,
        url: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "private emulator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    emu
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lost_on_the_emulator_is_reported_and_resync_recovers() {
    let own = own_emulator(&["--oplog-max-entries", "20"]).await;
    let client = mongodb::Client::with_uri_str(&own.url).await.unwrap();
    let db = client.database("hist");
    let coll = db.collection::<Document>("a");
    let mut cfg = MongoConfig::new(own.url.clone(), "hist", ["a"]);
    cfg.max_await_ms = 100;
    cfg.checkpoint_interval_ms = 20;
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let make = || async {
        let c = MongoConnector::new("mongo-hist", cfg.clone(), None, None)
            .unwrap()
            .with_checkpoints(checkpoints.clone());
        let rec = Arc::new(Recorder::default());
        c.add_change_handler(rec.clone());
        (c, rec)
    };
    let (first, rec) = make().await;
    first.start().await.unwrap();
    coll.insert_one(doc! { "_id": 0 }).await.unwrap();
    wait_events(&rec, 1).await;
    first.stop().await.unwrap();

    // While stopped, far more changes than the oplog keeps; then the emulator prunes it.
    let docs: Vec<Document> = (1..=100).map(|i| doc! { "_id": i }).collect();
    coll.insert_many(docs).await.unwrap();
    client
        .database("admin")
        .run_command(doc! { "secantusAdmin.pruneOplog": 1 })
        .await
        .unwrap();

    let (second, rec2) = make().await;
    let err = second.start().await.unwrap_err().to_string();
    assert!(err.contains("286"), "{err}");
    assert!(err.contains("Way out: re-sync"), "{err}");
    assert!(second.history_lost());
    let h = second.health_check().await;
    assert!(!h.healthy);
    assert_eq!(h.details["phase"], json!("history_lost"));

    // The way out: re-sync copies the collection again, then streams.
    second.resync().await.unwrap();
    second.start().await.unwrap();
    let ev = wait_events(&rec2, 101).await;
    assert!(ev.iter().all(|e| e.resume_token == "snapshot"));
    coll.insert_one(doc! { "_id": "new" }).await.unwrap();
    let ev = wait_events(&rec2, 102).await;
    assert_eq!(ev[101].primary_key["_id"], json!("new"));
    assert!(second.health_check().await.healthy);
    second.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Scripted source: the paths the emulator cannot be made to take on demand

enum Step {
    Event(Document),
    /// An empty batch carrying this post-batch token.
    Empty(Document),
    Fail(StreamError),
}

#[derive(Default)]
struct Script {
    /// One entry per `watch` call: an error for the call itself, or the cursor's steps.
    opens: VecDeque<Result<Vec<Step>, StreamError>>,
    /// `start_after` of every `watch` call.
    calls: Vec<Option<Document>>,
}

struct Scripted(Arc<Mutex<Script>>);

struct ScriptedCursor {
    steps: VecDeque<Step>,
    token: Option<Document>,
}

#[async_trait]
impl ChangeCursor for ScriptedCursor {
    async fn next_if_any(&mut self) -> Result<Option<Document>, StreamError> {
        match self.steps.pop_front() {
            Some(Step::Event(d)) => {
                self.token = d.get_document("_id").ok().cloned();
                Ok(Some(d))
            }
            Some(Step::Empty(t)) => {
                self.token = Some(t);
                Ok(None)
            }
            Some(Step::Fail(e)) => Err(e),
            None => {
                // An idle server: each getMore waits before answering empty.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(None)
            }
        }
    }
    fn resume_token(&self) -> Option<Document> {
        self.token.clone()
    }
}

#[async_trait]
impl ChangeSource for Scripted {
    async fn watch(
        &self,
        _plan: &WatchPlan,
        start_after: Option<Document>,
    ) -> Result<Box<dyn ChangeCursor>, StreamError> {
        let mut s = self.0.lock();
        s.calls.push(start_after.clone());
        let steps = s.opens.pop_front().unwrap_or_else(|| Ok(Vec::new()))?;
        Ok(Box::new(ScriptedCursor {
            steps: steps.into(),
            token: Some(start_after.unwrap_or_else(|| tok("start"))),
        }))
    }
    async fn collections(&self, _database: &str) -> Result<Vec<String>, StreamError> {
        Ok(vec!["c".into()])
    }
    async fn scan(
        &self,
        _database: &str,
        _collection: &str,
        _chunk: u32,
    ) -> Result<BoxStream<'static, Result<Document, StreamError>>, StreamError> {
        Ok(futures::stream::iter(vec![Ok(doc! { "_id": 1 })]).boxed())
    }
    async fn ping(&self) -> Result<(), StreamError> {
        Ok(())
    }
    async fn hello(&self) -> Result<Document, StreamError> {
        Ok(doc! { "setName": "rs0" })
    }
}

fn tok(s: &str) -> Document {
    doc! { "_data": s }
}

fn insert(n: i32) -> Step {
    Step::Event(doc! {
        "_id": tok(&format!("ev{n:03}")),
        "operationType": "insert",
        "ns": { "db": "d", "coll": "c" },
        "documentKey": { "_id": n },
        "fullDocument": { "_id": n },
    })
}

fn scripted(opens: Vec<Result<Vec<Step>, StreamError>>) -> (Arc<Mutex<Script>>, MongoConnector) {
    let script = Arc::new(Mutex::new(Script {
        opens: opens.into(),
        calls: Vec::new(),
    }));
    let mut cfg = MongoConfig::new("mongodb://scripted", "d", ["c"]);
    cfg.snapshot = SnapshotMode::Never;
    cfg.checkpoint_interval_ms = 10;
    let conn = MongoConnector::with_source("scripted", cfg, Arc::new(Scripted(script.clone())));
    (script, conn)
}

async fn stored_token(store: &MemoryCheckpoints) -> String {
    store
        .load("scripted")
        .await
        .unwrap()
        .map(|c| c.resume_token)
        .unwrap_or_default()
}

#[tokio::test]
async fn history_lost_at_start_is_refused_with_the_way_out() {
    let (_script, conn) = scripted(vec![Err(StreamError::HistoryLost(
        "Resume of change stream was not possible (286)".into(),
    ))]);
    let store = Arc::new(MemoryCheckpoints::new());
    store
        .save(
            "scripted",
            &aragora_cdc::Checkpoint {
                resume_token: token_text(&tok("old")),
                sequence_number: 7,
                snapshot_done: true,
            },
            &[],
        )
        .await
        .unwrap();
    let conn = conn.with_checkpoints(store.clone());
    conn.add_change_handler(Arc::new(Recorder::default()));
    let err = conn.start().await.unwrap_err().to_string();
    assert!(err.contains("286"), "{err}");
    assert!(err.contains("re-sync"), "{err}");
    assert!(conn.history_lost());
    let h = conn.health_check().await;
    assert!(!h.healthy);
    assert_eq!(h.details["history_lost"], json!(true));
    assert_eq!(h.details["phase"], json!("history_lost"));
    assert!(
        h.details["source_error"]
            .as_str()
            .unwrap()
            .contains("re-sync")
    );
    // The way out: forget the position; the next start begins afresh.
    conn.resync().await.unwrap();
    assert!(store.load("scripted").await.unwrap().is_none());
    assert!(!conn.history_lost());
    conn.start().await.unwrap();
    assert!(conn.is_running().await);
    conn.stop().await.unwrap();
}

#[tokio::test]
async fn history_lost_mid_stream_keeps_what_was_acknowledged_and_stops() {
    let (script, conn) = scripted(vec![Ok(vec![
        insert(1),
        insert(2),
        Step::Empty(tok("ev002")),
        Step::Fail(StreamError::HistoryLost("ChangeStreamHistoryLost".into())),
    ])]);
    let store = Arc::new(MemoryCheckpoints::new());
    let conn = conn.with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    conn.finished().await;
    assert_eq!(rec.all().len(), 2);
    assert_eq!(stored_token(&store).await, token_text(&tok("ev002")));
    assert!(conn.history_lost());
    assert!(!conn.is_running().await);
    let h = conn.health_check().await;
    assert!(!h.healthy);
    assert!(h.details["source_error"].as_str().unwrap().contains("286"));
    // No reconnect attempts: retrying cannot bring the history back.
    assert_eq!(script.lock().calls.len(), 1);
    assert_eq!(h.details["reconnects"], json!(0));
}

#[tokio::test]
async fn invalidate_becomes_a_notice_and_the_stream_restarts_after_it() {
    let invalidate = Step::Event(doc! { "_id": tok("inv"), "operationType": "invalidate" });
    let (script, conn) = scripted(vec![
        Ok(vec![
            insert(1),
            Step::Event(
                doc! { "_id": tok("drop"), "operationType": "dropDatabase", "ns": { "db": "d" } },
            ),
            invalidate,
        ]),
        Ok(vec![insert(2)]),
    ]);
    let store = Arc::new(MemoryCheckpoints::new());
    let conn = conn.with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    let ev = wait_events(&rec, 2).await;
    assert_eq!(ev[1].primary_key["_id"], json!(2));
    let calls = script.lock().calls.clone();
    assert_eq!(calls, vec![None, Some(tok("inv"))]);
    let kinds: Vec<NoticeKind> = conn.notices().iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        vec![NoticeKind::DropDatabase, NoticeKind::Invalidate]
    );
    assert_eq!(conn.notices()[1].resume_token, token_text(&tok("inv")));
    eventually(5, "checkpoint after the restart", || {
        futures::executor::block_on(stored_token(&store))
            .eq(&token_text(&tok("ev002")))
            .then_some(())
    })
    .await;
    conn.stop().await.unwrap();
}

#[tokio::test]
async fn quiet_stream_post_batch_tokens_are_persisted_without_events() {
    let (_script, conn) = scripted(vec![Ok(vec![
        Step::Empty(tok("pbrt1")),
        Step::Empty(tok("pbrt2")),
        Step::Empty(tok("pbrt3")),
    ])]);
    let store = Arc::new(MemoryCheckpoints::new());
    let conn = conn.with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    eventually(5, "the last post-batch token", || {
        futures::executor::block_on(stored_token(&store))
            .eq(&token_text(&tok("pbrt3")))
            .then_some(())
    })
    .await;
    assert!(rec.all().is_empty());
    conn.stop().await.unwrap();
    // The next start resumes after it.
    let (script, again) = scripted(vec![Ok(vec![insert(9)])]);
    let again = again.with_checkpoints(store.clone());
    let rec2 = Arc::new(Recorder::default());
    again.add_change_handler(rec2.clone());
    again.start().await.unwrap();
    wait_events(&rec2, 1).await;
    assert_eq!(script.lock().calls, vec![Some(tok("pbrt3"))]);
    again.stop().await.unwrap();
}

#[tokio::test]
async fn transient_failures_reconnect_from_the_last_checkpoint() {
    let (script, conn) = scripted(vec![
        Ok(vec![
            insert(1),
            Step::Empty(tok("ev001")),
            Step::Fail(StreamError::Failed("connection reset".into())),
        ]),
        Err(StreamError::Failed("no primary".into())),
        Ok(vec![insert(2)]),
    ]);
    let store = Arc::new(MemoryCheckpoints::new());
    let conn = conn.with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    let ev = wait_events(&rec, 2).await;
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1].sequence_number, 2);
    let calls = script.lock().calls.clone();
    assert_eq!(calls, vec![None, Some(tok("ev001")), Some(tok("ev001"))]);
    let h = conn.health_check().await;
    assert_eq!(h.details["reconnects"], json!(2));
    assert!(h.healthy, "{h:?}");
    conn.stop().await.unwrap();
}

#[tokio::test]
async fn snapshot_interrupted_is_redone_and_streams_from_the_first_position() {
    // A checkpoint from a snapshot that never finished: copy again, stream from its token.
    let (script, conn) = scripted(vec![Ok(vec![insert(2)])]);
    let mut cfg = conn.config().clone();
    cfg.snapshot = SnapshotMode::Initial;
    drop(conn);
    let conn = MongoConnector::with_source("scripted", cfg, Arc::new(Scripted(script.clone())));
    let store = Arc::new(MemoryCheckpoints::new());
    store
        .save(
            "scripted",
            &aragora_cdc::Checkpoint {
                resume_token: token_text(&tok("t0")),
                sequence_number: 0,
                snapshot_done: false,
            },
            &[],
        )
        .await
        .unwrap();
    let conn = conn.with_checkpoints(store.clone());
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    let ev = wait_events(&rec, 2).await;
    assert_eq!(ev[0].resume_token, "snapshot");
    assert_eq!(ev[1].primary_key["_id"], json!(2));
    assert_eq!(script.lock().calls, vec![Some(tok("t0"))]);
    conn.stop().await.unwrap();
    assert!(store.load("scripted").await.unwrap().unwrap().snapshot_done);
}

// ---------------------------------------------------------------------------------------------
// A real deployment, when one is named

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_mongodb_when_configured() {
    let Ok(url) = std::env::var("MONGODB_URL") else {
        eprintln!("MONGODB_URL not set: live MongoDB test not run");
        return;
    };
    let client = mongodb::Client::with_uri_str(&url).await.expect("client");
    let db = client.database(&unique("aragora_cdc_live"));
    db.run_command(
        doc! { "create": "people", "changeStreamPreAndPostImages": { "enabled": true } },
    )
    .await
    .expect("create collection (needs MongoDB 6.0+ for pre-images)");
    let mut cfg = MongoConfig::new(url.clone(), db.name(), ["people"]);
    cfg.snapshot = SnapshotMode::Never;
    let conn = MongoConnector::new("live", cfg, None, None).unwrap();
    let rec = Arc::new(Recorder::default());
    conn.add_change_handler(rec.clone());
    conn.start().await.unwrap();
    let people = db.collection::<Document>("people");
    people.insert_one(doc! { "_id": 1, "n": 1 }).await.unwrap();
    people
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "n": 2 } })
        .await
        .unwrap();
    people.delete_one(doc! { "_id": 1 }).await.unwrap();
    let ev = wait_events(&rec, 3).await;
    assert_eq!(ev[1].old_data["n"], json!(1));
    assert_eq!(ev[2].old_data["n"], json!(2));
    assert!(
        parse_token(&ev[0].resume_token)
            .unwrap()
            .get("_data")
            .is_some()
    );
    let h = conn.health_check().await;
    assert!(h.healthy, "{h:?}");
    conn.stop().await.unwrap();
    db.drop().await.unwrap();
}
