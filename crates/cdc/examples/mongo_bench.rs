//! MongoDB CDC throughput: changes/s from a change stream into a no-op handler and into the
//! Knowledge Mound (SQLite), next to a plain driver `watch()` loop reading the same changes from
//! the same start token in the same run.
//!
//! ```sh
//! cargo run --release -p aragora-cdc --example mongo_bench
//! ```
//! Environment: `ARAGORA_TEST_MONGO_URL` (default: the harness's secantusdb emulator, started
//! if needed), `BENCH_CHANGES` (default 20000 inserts per run), `BENCH_RUNS` (default 3). Prints
//! JSON with every run and the medians.
//!
//! Each run writes the changes first (nothing listening, the start token taken before), then the
//! driver loop (with the same `$match` stage as the connector), the connector with a no-op handler and the connector into the mound each read
//! them from that token to the last change: the clock runs from `start()` (or `watch()`) to the
//! last change acknowledged (or received).

use aragora_cdc::SnapshotMode;
use aragora_cdc::mongodb::{
    FullDocument, MongoConfig, MongoConnector, PreImages, source::token_to_doc, token_text,
};
use aragora_cdc::{
    ChangeEvent, ChangeHandler, Checkpoint, CheckpointStore, Connector, HandlerError,
    KnowledgeMoundHandler, MemoryCheckpoints, StoreKnowledgeSink,
};
use async_trait::async_trait;
use futures::StreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Counted(Option<Arc<dyn ChangeHandler>>, Arc<AtomicUsize>);

#[async_trait]
impl ChangeHandler for Counted {
    async fn handle(&self, e: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(e)).await
    }
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        if let Some(h) = &self.0 {
            h.handle_batch(events).await?;
        }
        self.1.fetch_add(events.len(), Ordering::Relaxed);
        Ok(())
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The plain driver loop: `watch().start_after(token)` with the connector's `$match` on the
/// watched collection (so the server does the same work), counting until `n` changes arrived.
async fn driver_loop(db: &mongodb::Database, start: Document, n: usize) -> f64 {
    let token = aragora_cdc::mongodb::source::doc_to_token(start).unwrap();
    let pipeline = MongoConfig::new("mongodb://unused", db.name(), ["t"])
        .plan()
        .pipeline();
    let started = Instant::now();
    let mut stream = db
        .watch()
        .pipeline(pipeline)
        .full_document(FullDocumentType::UpdateLookup)
        .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
        .batch_size(1000)
        .start_after(token)
        .await
        .expect("watch");
    let mut seen = 0;
    while seen < n {
        let ev = stream.next().await.expect("stream ended").expect("change");
        std::hint::black_box(&ev);
        seen += 1;
    }
    started.elapsed().as_secs_f64()
}

/// The connector from `start` until `n` changes are acknowledged.
async fn connector_run(
    url: &str,
    db: &str,
    start: &Document,
    n: usize,
    mound: Option<&aragora_store::Db>,
) -> f64 {
    let mut cfg = MongoConfig::new(url, db, ["t"]);
    cfg.snapshot = SnapshotMode::Never;
    cfg.full_document = FullDocument::UpdateLookup;
    cfg.full_document_before_change = PreImages::WhenAvailable;
    cfg.batch_size = 1000;
    let id = format!("bench-{db}-{}", mound.is_some());
    let checkpoints = Arc::new(MemoryCheckpoints::new());
    checkpoints
        .save(
            &id,
            &Checkpoint {
                resume_token: token_text(start),
                sequence_number: 0,
                snapshot_done: true,
            },
            &[],
        )
        .await
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let inner: Option<Arc<dyn ChangeHandler>> = mound.map(|m| {
        Arc::new(KnowledgeMoundHandler::new(Arc::new(
            StoreKnowledgeSink::new(m.clone(), "bench"),
        ))) as Arc<dyn ChangeHandler>
    });
    let conn = MongoConnector::new(id, cfg, None, None)
        .unwrap()
        .with_checkpoints(checkpoints);
    conn.add_change_handler(Arc::new(Counted(inner, count.clone())));
    let started = Instant::now();
    conn.start().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    while count.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "connector did not deliver {n}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    conn.stop().await.unwrap();
    secs
}

async fn one_run(
    url: &str,
    client: &mongodb::Client,
    n: usize,
    mound: &aragora_store::Db,
) -> Value {
    let name = format!("bench_{:08x}", rand::random::<u32>());
    let db = client.database(&name);
    let coll = db.collection::<Document>("t");
    // The position before the writes.
    let probe = db.watch().await.expect("watch");
    let start = token_to_doc(&probe.resume_token().expect("initial token")).unwrap();
    drop(probe);
    let write_started = Instant::now();
    let mut i = 0usize;
    while i < n {
        let docs: Vec<Document> = (i..(i + 1000).min(n))
            .map(|k| doc! { "_id": k as i64, "payload": format!("payload {k}"), "n": k as i64 })
            .collect();
        i += docs.len();
        coll.insert_many(docs).await.expect("insert");
    }
    let write_secs = write_started.elapsed().as_secs_f64();
    let driver = driver_loop(&db, start.clone(), n).await;
    let noop = connector_run(url, &name, &start, n, None).await;
    let km = connector_run(url, &name, &start, n, Some(mound)).await;
    db.drop().await.unwrap();
    json!({
        "changes": n,
        "write_seconds": write_secs,
        "driver_watch_changes_per_s": n as f64 / driver,
        "connector_noop_changes_per_s": n as f64 / noop,
        "connector_mound_changes_per_s": n as f64 / km,
    })
}

#[tokio::main]
async fn main() {
    let url = std::env::var("ARAGORA_TEST_MONGO_URL")
        .unwrap_or_else(|_| aragora_testkit::mongo_test_url());
    let n = env_usize("BENCH_CHANGES", 20_000);
    let runs = env_usize("BENCH_RUNS", 3).max(1);
    let client = mongodb::Client::with_uri_str(&url).await.expect("client");
    let dir = tempfile::tempdir().unwrap();
    let mound = aragora_store::Db::connect(
        &aragora_store::Db::sqlite_url_in(dir.path()),
        &Default::default(),
    )
    .await
    .unwrap();
    aragora_store::migrate::run(&mound).await.unwrap();
    let mut results = Vec::new();
    for _ in 0..runs {
        results.push(one_run(&url, &client, n, &mound).await);
    }
    let med = |k: &str| median(results.iter().map(|r| r[k].as_f64().unwrap()).collect());
    let driver = med("driver_watch_changes_per_s");
    let noop = med("connector_noop_changes_per_s");
    let km = med("connector_mound_changes_per_s");
    let out = json!({
        "source": url,
        "runs": results,
        "median": {
            "driver_watch_changes_per_s": driver,
            "connector_noop_changes_per_s": noop,
            "connector_mound_changes_per_s": km,
            "noop_vs_driver": noop / driver,
            "mound_vs_driver": km / driver,
        },
        "target": "TARGETS.md has no MongoDB row; the peer is the plain driver watch() loop on the same changes in the same run",
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    mound.close().await;
}
