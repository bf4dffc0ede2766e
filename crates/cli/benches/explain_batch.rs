//! A 10,000-debate explainability batch end to end through the real (release) binary: HTTP
//! submit → queue → BatchExplainabilityWorker → results in the database, on SQLite and
//! PostgreSQL.
//!
//! `cargo bench -p aragora --bench explain_batch [-- --debates N --runs R --agents A --rounds K]`
//!
//! The debates (synthetic, `aragora_explain::synth`) are inserted into the server's database
//! first (not timed). Each run submits a new batch of all of them and waits for it to finish;
//! the time is the batch's own `completed_at − created_at` (server clock, ms), and the wall time
//! from the POST to the first status poll that sees it finished (polled every 10 ms) is shown
//! beside it. Prints one JSON line per backend with the median of the runs and the
//! TARGETS.md target (< 10 s on SQLite).

use aragora_store::{Db, DbOptions};
use aragora_testkit::{Backend, Server};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

async fn run_backend(
    backend: Backend,
    n: usize,
    runs: usize,
    agents: usize,
    rounds: usize,
) -> Value {
    let s = Server::start(BIN, backend).await;
    let db = Db::connect(&s.db.url, &DbOptions::default()).await.unwrap();
    let mut ids = Vec::with_capacity(n);
    let load = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut tx = db.begin().await.unwrap();
        for &i in chunk {
            let mut d = aragora_explain::synth::debate(agents, rounds, i as u64);
            d.id = format!("deb-bench-{i}");
            aragora_store::debates::insert_in(&mut tx, "bench", &d, "bench")
                .await
                .unwrap();
            ids.push(d.id);
        }
        tx.commit().await.unwrap();
    }
    let load_s = load.elapsed().as_secs_f64();
    let token = s.token("bench", "bench", "member").await;
    let mut server_s = Vec::new();
    let mut wall_s = Vec::new();
    let mut bytes = 0i64;
    for _ in 0..runs {
        let started = Instant::now();
        let (status, created) = s
            .post(
                "/api/v1/explainability/batch",
                &token,
                &json!({"debate_ids": ids}),
            )
            .await;
        assert_eq!(status, 202, "{created}");
        let id = created["batch_id"].as_str().unwrap().to_string();
        let done = loop {
            let (_, st) = s
                .get(&format!("/api/v1/explainability/batch/{id}/status"), &token)
                .await;
            if st["status"] == "completed" {
                break st;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "batch stuck: {st}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        wall_s.push(started.elapsed().as_secs_f64());
        assert_eq!(done["phase"], "completed", "{done}");
        assert_eq!(done["succeeded"], n);
        let ms = |f: &str| aragora_core::time::parse_rfc3339(done[f].as_str().unwrap()).unwrap();
        server_s.push((ms("completed_at") - ms("created_at")) as f64 / 1000.0);
        let (_, page) = s
            .get(
                &format!("/api/v1/explainability/batch/{id}/results?limit=1"),
                &token,
            )
            .await;
        assert_eq!(page["total"], n);
        bytes = page["items"][0]["explanation"].to_string().len() as i64;
    }
    db.close().await;
    let med = median(server_s.clone());
    let target = match backend {
        Backend::Sqlite => Some(10.0),
        Backend::Postgres => None,
    };
    json!({
        "bench": "explain_batch_e2e",
        "backend": match backend { Backend::Sqlite => "sqlite", Backend::Postgres => "postgres" },
        "debates": n,
        "agents": agents,
        "rounds": rounds,
        "max_concurrent_debates": 10,
        "cores": std::thread::available_parallelism().map_or(1, |c| c.get()),
        "seconds_median": (med * 1000.0).round() / 1000.0,
        "seconds_runs": server_s.iter().map(|x| (x * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        "wall_seconds_runs": wall_s.iter().map(|x| (x * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        "debates_per_sec": (n as f64 / med).round(),
        "result_json_bytes": bytes,
        "insert_debates_seconds": (load_s * 1000.0).round() / 1000.0,
        "target_seconds": target,
        "pass": target.map(|t| med < t),
    })
}

fn main() {
    // `cargo bench` passes `--bench`; ignore it and unknown flags.
    let n = arg("--debates", 10_000);
    let runs = arg("--runs", 3);
    let agents = arg("--agents", 5);
    let rounds = arg("--rounds", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            println!("{}", run_backend(backend, n, runs, agents, rounds).await);
        }
    });
}
