//! Knowledge search latency at 100k items and demo-debate throughput through the API and the
//! queue, on SQLite and PostgreSQL.
//!
//! `cargo run --release -p aragora --example bench_debates_knowledge` prints one JSON object.
//! PostgreSQL is the throwaway test cluster (`ARAGORA_TEST_PG_URL`, else started with
//! `scripts/test-services start`). Options: `--items N` (default 100000), `--queries N` per run
//! (default 1000), `--debates N` per run (default 300), `--runs N` (default 3, at least 3),
//! `--backend sqlite|postgres|both` (default both).
//!
//! - Search: the store's `knowledge::search` (the SQL the API runs) and the HTTP route, one query
//!   at a time, over a synthetic corpus (Zipf-distributed vocabulary of 20,000 words, 30–120
//!   words per item). Query classes: a rare word, a mid-frequency word, two words, an exact
//!   two-word phrase taken from an item, and a common word (in ~10–30 % of items).
//! - Debates: `POST /api/v1/debates` (5 demo agents × 3 rounds) from 16 concurrent clients, the
//!   debates worker (16 concurrent) runs them; the clock stops when the last is `completed`.
//!   Everything in one process: server on 127.0.0.1, HTTP over loopback.

use aragora_queue::{Queue, spawn_worker};
use aragora_server::jobs::WorkerSettings;
use aragora_server::state::AppState;
use aragora_store::knowledge::{self, NewItem, SearchQuery};
use aragora_store::tokens::{self, NewToken};
use aragora_store::{Db, DbOptions, migrate};
use aragora_testkit::{Backend, fresh_database};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEARCH_P99_TARGET_MS: f64 = 10.0;
const VOCAB: usize = 20_000;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// xorshift64*: deterministic, so every run searches the same corpus.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Pronounceable pseudo-words: "bakotu", "relimafo", …
fn vocabulary() -> Vec<String> {
    const C: &[u8] = b"bcdfghklmnprstvz";
    const V: &[u8] = b"aeiou";
    let mut rng = Rng(7);
    let mut words = std::collections::BTreeSet::new();
    while words.len() < VOCAB {
        let syllables = 2 + rng.below(3);
        let w: String = (0..syllables)
            .flat_map(|_| [C[rng.below(C.len())] as char, V[rng.below(V.len())] as char])
            .collect();
        words.insert(w);
    }
    let mut v: Vec<String> = words.into_iter().collect();
    // Shuffle so frequency rank is unrelated to spelling.
    for i in (1..v.len()).rev() {
        let j = Rng(i as u64 * 31 + 1).below(i + 1);
        v.swap(i, j);
    }
    v
}

/// Zipf(1.07) sampler over ranks 0..VOCAB via the cumulative distribution.
struct Zipf(Vec<f64>);
impl Zipf {
    fn new() -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=VOCAB)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(1.07);
                acc
            })
            .collect();
        let total = acc;
        cdf.iter_mut().for_each(|x| *x /= total);
        Zipf(cdf)
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(VOCAB - 1)
    }
}

fn corpus(n: usize, words: &[String]) -> Vec<String> {
    let zipf = Zipf::new();
    let mut rng = Rng(42);
    (0..n)
        .map(|_| {
            let len = 30 + rng.below(91);
            (0..len)
                .map(|_| words[zipf.sample(&mut rng)].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn queries(n: usize, words: &[String], docs: &[String]) -> Vec<(&'static str, String)> {
    let mut rng = Rng(99);
    (0..n)
        .map(|i| match i % 5 {
            0 => ("rare_word", words[2_000 + rng.below(VOCAB - 2_000)].clone()),
            1 => ("mid_word", words[100 + rng.below(1_900)].clone()),
            2 => (
                "two_words",
                format!(
                    "{} {}",
                    words[50 + rng.below(1_950)],
                    words[50 + rng.below(1_950)]
                ),
            ),
            3 => {
                let doc: Vec<&str> = docs[rng.below(docs.len())].split(' ').collect();
                let at = rng.below(doc.len() - 1);
                ("exact_phrase", format!("{} {}", doc[at], doc[at + 1]))
            }
            _ => ("common_word", words[10 + rng.below(40)].clone()),
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Latency stats (ms) of one run: overall and per query class.
fn stats(samples: &[(&'static str, f64)]) -> Value {
    let summarize = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        json!({"p50_ms": round2(percentile(&v, 0.5)), "p99_ms": round2(percentile(&v, 0.99)), "max_ms": round2(*v.last().unwrap_or(&0.0))})
    };
    let mut by_class = serde_json::Map::new();
    for class in [
        "rare_word",
        "mid_word",
        "two_words",
        "exact_phrase",
        "common_word",
    ] {
        let v: Vec<f64> = samples
            .iter()
            .filter(|(c, _)| *c == class)
            .map(|(_, ms)| *ms)
            .collect();
        by_class.insert(class.into(), summarize(v));
    }
    let mut all = summarize(samples.iter().map(|(_, ms)| *ms).collect());
    all["by_class"] = Value::Object(by_class);
    all
}

/// Medians over runs of each run's p50/p99, overall and per query class.
fn over_runs(runs: Vec<Value>) -> Value {
    let med = |get: &dyn Fn(&Value) -> f64| median(runs.iter().map(get).collect());
    let p50 = med(&|r| r["p50_ms"].as_f64().unwrap());
    let p99 = med(&|r| r["p99_ms"].as_f64().unwrap());
    let mut by_class = serde_json::Map::new();
    for class in [
        "rare_word",
        "mid_word",
        "two_words",
        "exact_phrase",
        "common_word",
    ] {
        by_class.insert(
            class.into(),
            json!({
                "p50_ms": med(&|r| r["by_class"][class]["p50_ms"].as_f64().unwrap()),
                "p99_ms": med(&|r| r["by_class"][class]["p99_ms"].as_f64().unwrap()),
            }),
        );
    }
    json!({
        "median_p50_ms": p50,
        "median_p99_ms": p99,
        "runs_p99_ms": runs.iter().map(|r| r["p99_ms"].clone()).collect::<Vec<_>>(),
        "by_class_median": by_class,
        "target_p99_ms": SEARCH_P99_TARGET_MS,
        "pass": p99 < SEARCH_P99_TARGET_MS,
    })
}

async fn bench_backend(backend: Backend, opts: &Opts) -> Value {
    let t = fresh_database(backend).await;
    let db = Db::connect(
        &t.url,
        &DbOptions {
            max_connections: 16,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    migrate::run(&db).await.expect("migrate");

    // Ingest.
    let words = vocabulary();
    let docs = corpus(opts.items, &words);
    let started = Instant::now();
    for (c, chunk) in docs.chunks(1_000).enumerate() {
        let items: Vec<NewItem> = chunk
            .iter()
            .enumerate()
            .map(|(i, content)| NewItem {
                source_type: if (c * 1_000 + i) % 10 == 0 {
                    "debate"
                } else {
                    "cdc"
                }
                .into(),
                source_key: format!("src-{}", c * 1_000 + i),
                content: content.clone(),
                metadata: json!({"n": c * 1_000 + i}),
                confidence: 0.8,
            })
            .collect();
        let mut tx = db.begin().await.expect("begin");
        knowledge::upsert_many_in(&mut tx, db.dialect(), "bench", &items)
            .await
            .expect("ingest");
        tx.commit().await.expect("commit");
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    match backend {
        Backend::Postgres => {
            sqlx_exec(&db, "VACUUM ANALYZE knowledge_items").await;
        }
        Backend::Sqlite => {
            sqlx_exec(
                &db,
                "INSERT INTO knowledge_fts (knowledge_fts) VALUES ('optimize')",
            )
            .await;
            sqlx_exec(&db, "ANALYZE").await;
        }
    }
    let qs = queries(opts.queries, &words, &docs);
    let parsed: Vec<(&'static str, SearchQuery)> = qs
        .iter()
        .map(|(c, q)| (*c, SearchQuery::new(q, None, Some(10)).expect("query")))
        .collect();

    // Store-level search (warm-up, then runs).
    let mut hits_total = 0usize;
    for (_, q) in parsed.iter().take(200) {
        knowledge::search(&db, "bench", q).await.expect("search");
    }
    let mut store_runs = Vec::new();
    for _ in 0..opts.runs {
        let mut samples = Vec::with_capacity(parsed.len());
        for (class, q) in &parsed {
            let t0 = Instant::now();
            let hits = knowledge::search(&db, "bench", q).await.expect("search");
            samples.push((*class, t0.elapsed().as_secs_f64() * 1e3));
            hits_total += hits.len();
        }
        store_runs.push(stats(&samples));
    }

    // The API: in-process server with the debates worker.
    let server = Api::start(db.clone(), opts).await;
    let mut http_runs = Vec::new();
    for _ in 0..opts.runs {
        let mut samples = Vec::with_capacity(qs.len());
        for (class, q) in &qs {
            let t0 = Instant::now();
            let resp = server
                .http
                .get(format!("{}/api/v1/knowledge/search", server.base))
                .query(&[("q", q.as_str()), ("limit", "10")])
                .bearer_auth(&server.token)
                .send()
                .await
                .expect("search request");
            assert_eq!(resp.status(), 200);
            resp.bytes().await.expect("body");
            samples.push((*class, t0.elapsed().as_secs_f64() * 1e3));
        }
        http_runs.push(stats(&samples));
    }

    // Debate throughput end to end.
    let mut rates = Vec::new();
    let mut done_total = 0i64;
    for r in 0..opts.runs {
        let (rate, done) = server.debate_run(r, opts.debates).await;
        rates.push(rate);
        done_total += done;
    }
    server.stop().await;
    let debate_median = median(rates.clone());
    json!({
        "items": opts.items,
        "ingest_items_per_sec": (opts.items as f64 / ingest_secs).round(),
        "search_store": over_runs(store_runs),
        "search_http": over_runs(http_runs),
        "search_hits_per_query": round2(hits_total as f64 / (opts.runs * parsed.len()) as f64),
        "debates_api_queue": {
            "agents": 5, "rounds": 3, "debates_per_run": opts.debates,
            "client_concurrency": 16, "worker_concurrency": 16,
            "runs_debates_per_sec": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
            "median_debates_per_sec": debate_median.round(),
            "completed": done_total,
        },
    })
}

async fn sqlx_exec(db: &Db, sql: &'static str) {
    aragora_store::sqlx::query(sql)
        .execute(db.writer())
        .await
        .expect(sql);
}

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
    stop: CancellationToken,
    workers: Vec<aragora_queue::WorkerHandle>,
    server: tokio::task::JoinHandle<()>,
}

impl Api {
    async fn start(db: Db, _opts: &Opts) -> Api {
        let (_, token) = tokens::create(
            &db,
            &NewToken {
                name: "bench".into(),
                workspace: "bench".into(),
                user: None,
                role: Some(aragora_core::auth::Role::Admin),
                permissions: vec![],
            },
        )
        .await
        .expect("token");
        let queue = Queue::new(db.clone());
        let stop = CancellationToken::new();
        queue.spawn_pg_listener(stop.clone());
        let state = AppState::new(db.clone(), queue.clone(), Default::default(), None);
        let settings = WorkerSettings {
            debate_max_concurrent: 16,
            ..Default::default()
        };
        let workers = aragora_server::jobs::all(&state, &settings)
            .into_iter()
            .map(|(cfg, h)| spawn_worker(queue.clone(), cfg, h, stop.clone()))
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = aragora_server::router(state);
        let s = stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
                .expect("serve");
        });
        Api {
            base,
            token,
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
            stop,
            workers,
            server,
        }
    }

    async fn completed(&self) -> i64 {
        let v: Value = self
            .http
            .get(format!(
                "{}/api/v1/debates?status=completed&limit=1",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        v["total"].as_i64().expect("total")
    }

    /// Starts `n` demo debates from 16 concurrent clients; returns debates/s until all completed.
    async fn debate_run(&self, run: usize, n: usize) -> (f64, i64) {
        let before = self.completed().await;
        let started = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let clients = (0..16).map(|_| async {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let body = json!({
                    "task": format!("Design a rate limiter, variant {run}-{i}"),
                    "agents": (1..=5).map(|a| json!({"name": format!("a{a}"), "provider": "demo"})).collect::<Vec<_>>(),
                    "rounds": 3,
                });
                let resp = self
                    .http
                    .post(format!("{}/api/v1/debates", self.base))
                    .bearer_auth(&self.token)
                    .json(&body)
                    .send()
                    .await
                    .expect("start debate");
                assert_eq!(resp.status(), 202);
            }
        });
        futures::future::join_all(clients).await;
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut done;
        loop {
            done = self.completed().await - before;
            if done >= n as i64 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(done, n as i64, "every debate completed");
        (n as f64 / started.elapsed().as_secs_f64(), done)
    }

    async fn stop(self) {
        self.stop.cancel();
        for w in self.workers {
            w.join().await;
        }
        let _ = self.server.await;
    }
}

struct Opts {
    items: usize,
    queries: usize,
    debates: usize,
    runs: usize,
}

fn main() {
    let opts = Opts {
        items: arg("--items", "100000").parse().expect("--items"),
        queries: arg("--queries", "1000").parse().expect("--queries"),
        debates: arg("--debates", "300").parse().expect("--debates"),
        runs: arg("--runs", "3").parse::<usize>().expect("--runs").max(3),
    };
    let which = arg("--backend", "both");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(async {
        let mut out = serde_json::Map::new();
        if which == "both" || which == "sqlite" {
            out.insert("sqlite".into(), bench_backend(Backend::Sqlite, &opts).await);
        }
        if which == "both" || which == "postgres" {
            out.insert(
                "postgres".into(),
                bench_backend(Backend::Postgres, &opts).await,
            );
        }
        out
    });
    let result = json!({
        "benchmark": "debates_knowledge",
        "machine": format!("{} cpus", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)),
        "results": out,
        "notes": "search latency: one query at a time, limit 10; medians over runs of each run's p50/p99. \
                  debates: end to end through POST /api/v1/debates, the queue and the debates worker \
                  (engine overhead alone: cargo run --release -p aragora-debate --example bench).",
    });
    println!("{}", serde_json::to_string_pretty(&result).expect("json"));
}
