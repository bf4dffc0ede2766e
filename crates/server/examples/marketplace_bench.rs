//! Marketplace list and search benchmark: seeds N templates (default 100,000) straight through the
//! store's bulk import, serves the real router on loopback and drives it with `wrk`.
//!
//! ```text
//! scripts/bench-marketplace            # = cargo run --release -p aragora-server --example marketplace_bench
//! ... -- --templates 20000 --duration 5 --runs 3 --backends sqlite,postgres
//! ```
//!
//! Each scenario runs `--runs` times at two loads: `throughput` (32 connections, saturating the
//! two cores) and `latency` (4 connections, a moderate load); the medians are reported as JSON on
//! stdout with the targets of TARGETS.md. PostgreSQL uses `ARAGORA_TEST_PG_URL` (or starts
//! `scripts/test-services`). Requires `wrk` (`apt-get install -y wrk`). `--seed-only` seeds, prints
//! the database URL and keeps the database, for EXPLAIN sessions. During the cached runs a task
//! posts downloads of random templates (`--downloads-per-sec`, default 20), so the cache is
//! measured under the writes real traffic brings.

use aragora_core::auth::Role;
use aragora_core::time::now_ms;
use aragora_marketplace::{Visibility, template};
use aragora_queue::Queue;
use aragora_server::state::AppState;
use aragora_server::{ServerConfig, router};
use aragora_store::marketplace::{NewTemplate, Stats, bulk_insert};
use aragora_store::tokens::{self, NewToken};
use aragora_store::{Db, DbOptions, migrate};
use aragora_testkit::{Backend, fresh_database, process_cpu_time};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DOMAIN: [&str; 20] = [
    "workflow",
    "pipeline",
    "security",
    "scanner",
    "review",
    "deploy",
    "triage",
    "summary",
    "audit",
    "data",
    "report",
    "monitor",
    "alert",
    "debate",
    "research",
    "analysis",
    "support",
    "onboarding",
    "release",
    "compliance",
];
const SYLLABLES: [&str; 20] = [
    "ka", "lo", "mi", "ra", "te", "vo", "zu", "shi", "pen", "dor", "qua", "bel", "nix", "tor",
    "ael", "fin", "gru", "hal", "jex", "wyn",
];
const VOCAB: usize = 3000;
const TAGS: u64 = 200;
const CATEGORIES: u64 = 12;
const WORKSPACES: u64 = 50;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn word(i: usize) -> String {
    format!(
        "{}{}{}",
        SYLLABLES[i % 20],
        SYLLABLES[(i / 20) % 20],
        SYLLABLES[(i / 400) % 20]
    )
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

struct Corpus {
    templates: Vec<(NewTemplate, Stats)>,
    names: Vec<(String, String, String)>,
}

fn corpus(n: usize) -> Corpus {
    let mut rng = Rng(42);
    let now = now_ms();
    let mut templates = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let domain = DOMAIN[rng.below(20) as usize];
        let (w1, w2) = (
            word(rng.below(VOCAB as u64) as usize),
            word(rng.below(VOCAB as u64) as usize),
        );
        let name = format!("{} {} {}", capitalise(domain), capitalise(&w1), w2);
        let mut desc: Vec<String> = (0..10)
            .map(|_| word(rng.below(VOCAB as u64) as usize))
            .collect();
        desc.insert(
            rng.below(10) as usize,
            DOMAIN[rng.below(20) as usize].to_string(),
        );
        let tags: Vec<String> = {
            let mut t: Vec<String> = (0..2 + rng.below(2))
                .map(|_| format!("tag-{}", rng.below(TAGS)))
                .collect();
            t.sort();
            t.dedup();
            t
        };
        let vis = match rng.below(100) {
            0..=89 => Visibility::Public,
            90..=96 => Visibility::Workspace,
            _ => Visibility::Private,
        };
        let ws = rng.below(WORKSPACES);
        let nodes = 3 + rng.below(4) as usize;
        let graph = json!({
            "nodes": (0..nodes).map(|k| json!({"id": format!("n{k}"), "type": DOMAIN[k % 20]})).collect::<Vec<_>>(),
            "edges": (1..nodes).map(|k| json!({"source": format!("n{}", k - 1), "target": format!("n{k}")})).collect::<Vec<_>>(),
        });
        let data = template::validate(&graph, &template::Limits::default()).expect("valid graph");
        let rated = rng.below(100) < 60;
        let count = if rated { 1 + rng.below(200) as i64 } else { 0 };
        let avg = 2.5 + rng.unit() * 2.5;
        let created = now - (rng.unit() * 365.0 * 86_400_000.0) as i64;
        templates.push((
            NewTemplate {
                id: format!("tmpl-bench{i:08}"),
                workspace: format!("ws-{ws}"),
                owner: format!("user-{}", rng.below(20)),
                name,
                description: desc.join(" "),
                category: format!("cat-{}", rng.below(CATEGORIES)),
                visibility: vis,
                tags,
                version: "1.0.0".into(),
                changelog: String::new(),
                data,
                now: created,
            },
            Stats {
                downloads: 10f64.powf(rng.unit() * 4.0) as i64,
                rating_sum: (avg * count as f64).round() as i64,
                rating_count: count,
            },
        ));
        names.push((domain.to_string(), w1, w2));
    }
    Corpus { templates, names }
}

fn enc(s: &str) -> String {
    s.replace(' ', "%20")
}

fn list_paths(rng: &mut Rng) -> Vec<String> {
    (0..256)
        .map(|_| {
            let base = "/api/marketplace/templates";
            match rng.below(10) {
                0 | 1 => format!("{base}?limit=20"),
                2 => format!("{base}?sort=newest"),
                3 => format!("{base}?sort=rating"),
                4 => format!("{base}?sort=updated"),
                5 => format!("{base}?category=cat-{}", rng.below(CATEGORIES)),
                6 => format!("{base}?category=cat-{}&sort=newest", rng.below(CATEGORIES)),
                7 => format!("{base}?page={}", 2 + rng.below(20)),
                8 => format!("{base}?tags=tag-{}", rng.below(TAGS)),
                _ => format!(
                    "{base}?visibility=public&sort=rating&page={}",
                    1 + rng.below(5)
                ),
            }
        })
        .collect()
}

fn search_paths(rng: &mut Rng, c: &Corpus) -> Vec<String> {
    (0..256)
        .map(|_| {
            let (d, w1, w2) = &c.names[rng.below(c.names.len() as u64) as usize];
            let q = match rng.below(10) {
                0..=3 => word(rng.below(VOCAB as u64) as usize),
                4 | 5 => format!("{w1} {w2}"),
                6 => format!("{d} {w1} {w2}"),
                7 => w1[..3].to_string(),
                8 => format!("{d} {}", &w2[..4]),
                _ => d.clone(),
            };
            format!("/api/marketplace/templates?q={}", enc(&q))
        })
        .collect()
}

/// Posts about `per_sec` downloads of random templates until `stop`; returns how many answered
/// 200 (templates the bench user may not see answer 404 and are not counted).
async fn download_trickle(
    url: String,
    token: String,
    templates: usize,
    per_sec: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    if per_sec == 0 {
        return 0;
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut rng = Rng(0x5eed_d00d);
    let mut tick = tokio::time::interval(std::time::Duration::from_micros(1_000_000 / per_sec));
    let mut ok = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let id = format!("tmpl-bench{:08}", rng.below(templates as u64));
        let r = client
            .post(format!("{url}/api/marketplace/templates/{id}/download"))
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            ok += 1;
        }
    }
    ok
}

fn lua(paths: &[String], token: &str) -> String {
    let list = paths
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(",\n");
    format!(
        r#"wrk.headers["Authorization"] = "Bearer {token}"
local paths = {{ {list} }}
local i = 0
function setup(thread) end
function init(args) i = math.random(#paths) end
function request()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"#
    )
}

async fn wrk(url: &str, script: &std::path::Path, conns: u32, secs: u64) -> Value {
    let cpu0 = process_cpu_time();
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .await
        .expect("run wrk (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("wrk printed no summary: {text}"));
    let v: Value = serde_json::from_str(line).expect("wrk summary JSON");
    let secs = v["duration_us"].as_f64().unwrap() / 1e6;
    // Server CPU per request (this process serves; wrk is another process): unlike latency it
    // does not grow when other work competes for the cores.
    let cpu_us =
        (process_cpu_time() - cpu0).as_secs_f64() * 1e6 / v["requests"].as_f64().unwrap().max(1.0);
    json!({
        "server_cpu_us_per_request": cpu_us.round(),
        "rps": (v["requests"].as_f64().unwrap() / secs).round(),
        "p50_ms": v["p50_us"].as_f64().unwrap() / 1000.0,
        "p90_ms": v["p90_us"].as_f64().unwrap() / 1000.0,
        "p99_ms": v["p99_us"].as_f64().unwrap() / 1000.0,
        "max_ms": v["max_us"].as_f64().unwrap() / 1000.0,
        "requests": v["requests"],
        "errors": v["errors"],
        "non2xx": v["non2xx"],
    })
}

fn median(runs: &[Value], key: &str) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(|r| r[key].as_f64().unwrap()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Args {
    templates: usize,
    duration: u64,
    runs: usize,
    backends: Vec<Backend>,
    /// Seed, print the database URL, keep the database and exit (for EXPLAIN sessions).
    seed_only: bool,
    /// Print the query plans of representative requests against this seeded database, and exit.
    explain: Option<String>,
    /// Benchmark this already seeded database (from `--seed-only`) instead of seeding a fresh one.
    reuse: Option<String>,
    /// Downloads posted per second during the cached runs (real traffic writes while it reads).
    downloads_per_sec: u64,
}

fn args() -> Args {
    let mut a = Args {
        templates: 100_000,
        duration: 10,
        runs: 3,
        backends: vec![Backend::Sqlite, Backend::Postgres],
        seed_only: false,
        explain: None,
        reuse: None,
        downloads_per_sec: 20,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("flag value").clone();
        match k.as_str() {
            "--templates" => a.templates = v().parse().expect("--templates N"),
            "--duration" => a.duration = v().parse().expect("--duration SECS"),
            "--runs" => a.runs = v().parse().expect("--runs N"),
            "--backends" => {
                a.backends = v()
                    .split(',')
                    .map(|b| match b {
                        "sqlite" => Backend::Sqlite,
                        "postgres" => Backend::Postgres,
                        other => panic!("unknown backend {other}"),
                    })
                    .collect()
            }
            "--seed-only" => a.seed_only = true,
            "--downloads-per-sec" => {
                a.downloads_per_sec = v().parse().expect("--downloads-per-sec N")
            }
            "--explain" => a.explain = Some(v()),
            "--reuse" => {
                let url = v();
                a.backends = vec![if url.starts_with("sqlite:") {
                    Backend::Sqlite
                } else {
                    Backend::Postgres
                }];
                a.reuse = Some(url);
            }
            "--quick" => {
                a.templates = 20_000;
                a.duration = 3;
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Query-string parameters of a benchmark path, as the list handler receives them.
fn raw_list(path: &str) -> aragora_marketplace::RawList {
    let mut r = aragora_marketplace::RawList::default();
    for kv in path
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
    {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let v = Some(v.replace("%20", " "));
        match k {
            "category" => r.category = v,
            "visibility" => r.visibility = v,
            "tags" => r.tags = v,
            "q" => r.q = v,
            "min_rating" => r.min_rating = v,
            "sort" => r.sort = v,
            "page" => r.page = v,
            "limit" => r.limit = v,
            _ => {}
        }
    }
    r
}

async fn explain(url: &str) {
    let db = Db::connect(url, &DbOptions::default())
        .await
        .expect("connect");
    let viewer = aragora_marketplace::Viewer {
        workspace: "ws-7".into(),
        user: "user-3".into(),
        admin: false,
    };
    let w = word(1234);
    for path in [
        "?limit=20".to_string(),
        "?sort=newest".into(),
        "?sort=rating&page=5".into(),
        "?category=cat-3&sort=newest".into(),
        "?tags=tag-17".into(),
        format!("?q={w}"),
        "?q=security".into(),
        format!("?q=security%20{}", &w[..4]),
        "?q=curity%20aud".into(),
    ] {
        let req = aragora_marketplace::ListRequest::parse(&raw_list(&path)).expect("valid request");
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        let mut total = 0;
        for _ in 0..25 {
            let (started, cpu0) = (Instant::now(), process_cpu_time());
            total = aragora_store::marketplace::list(&db, &req, &viewer)
                .await
                .expect("list")
                .total;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            cpu.push((process_cpu_time() - cpu0).as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        cpu.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "\n=== {path}  (total {total}; store::list × 25: wall median {:.2} ms, max {:.2} ms; process CPU median {:.2} ms)",
            times[12], times[24], cpu[12]
        );
        for line in aragora_store::marketplace::explain(&db, &req, &viewer)
            .await
            .expect("explain")
        {
            println!("{line}");
        }
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    if let Some(url) = &a.explain {
        explain(url).await;
        return;
    }
    eprintln!("generating {} templates…", a.templates);
    let c = corpus(a.templates);
    let mut rng = Rng(7);
    let scenarios = [
        ("list", list_paths(&mut rng)),
        ("search", search_paths(&mut rng, &c)),
    ];
    let mut results = Vec::new();
    for backend in &a.backends {
        let name = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let tdb = match a.reuse {
            Some(_) => None,
            None => Some(fresh_database(*backend).await),
        };
        let url = a
            .reuse
            .clone()
            .unwrap_or_else(|| tdb.as_ref().expect("fresh database").url.clone());
        let db = Db::connect(
            &url,
            &DbOptions {
                max_connections: std::env::var("BENCH_DB_CONNECTIONS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(16),
                ..Default::default()
            },
        )
        .await
        .expect("connect");
        migrate::run(&db).await.expect("migrate");
        let started = Instant::now();
        if a.reuse.is_none() {
            for part in c.templates.chunks(10_000) {
                bulk_insert(&db, part).await.expect("seed");
            }
            // As in production: autovacuum analyzes PostgreSQL; the server never runs ANALYZE on
            // SQLite, and with STAT4 statistics SQLite re-prepares every statement whose bound
            // values could change its plan (measured: twice the CPU for a plain list).
            if *backend == Backend::Postgres {
                aragora_store::sqlx::query("VACUUM ANALYZE")
                    .execute(db.writer())
                    .await
                    .expect("analyze");
            }
        }
        let seed_secs = started.elapsed().as_secs_f64();
        eprintln!(
            "[{name}] seeded {} templates in {seed_secs:.1}s",
            a.templates
        );
        if a.seed_only {
            println!("{url}");
            std::mem::forget(tdb);
            continue;
        }
        let (_, token) = tokens::create(
            &db,
            &NewToken {
                name: "bench".into(),
                workspace: "ws-7".into(),
                user: Some("user-3".into()),
                role: Some(Role::Member),
                permissions: vec![],
            },
        )
        .await
        .expect("token");
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        // The same requests against a server with the list cache (the default, 1 s) and without it
        // (every request ranks in the database), plus `/healthz` on the same stack: the ceiling
        // that HTTP, wrk and these two cores allow, measured in the same run.
        for cache in ["uncached", "cached"] {
            let mut config = ServerConfig::default();
            // The binary's defaults: 60 s on SQLite (one writer process), 1 s on PostgreSQL.
            config.marketplace.list_cache_ttl = match (cache, backend) {
                ("cached", Backend::Sqlite) => std::time::Duration::from_secs(60),
                ("cached", Backend::Postgres) => std::time::Duration::from_secs(1),
                _ => std::time::Duration::ZERO,
            };
            let state = AppState::new(
                db.clone(),
                Queue::new(db.clone()),
                config,
                Some(aragora_server::metrics::install_recorder()),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
            let ceiling = vec!["/healthz".to_string()];
            let mut runs_here: Vec<(&str, &Vec<String>)> =
                scenarios.iter().map(|(n, p)| (*n, p)).collect::<Vec<_>>();
            if cache == "uncached" {
                runs_here.insert(0, ("healthz_ceiling", &ceiling));
            }
            for (scenario, paths) in runs_here {
                let script = dir.path().join(format!("{scenario}.lua"));
                std::fs::write(&script, lua(paths, &token)).unwrap();
                // Every path must answer 200 before it is timed.
                let client = reqwest::Client::builder().no_proxy().build().unwrap();
                for p in paths.iter().take(64) {
                    let r = client
                        .get(format!("{url}{p}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        r.status(),
                        200,
                        "{p}: {}",
                        r.text().await.unwrap_or_default()
                    );
                }
                wrk(&url, &script, 32, 2).await; // warm-up
                // Downloads keep arriving while the cached server is read, as in production.
                let stop = Arc::new(AtomicBool::new(false));
                let trickle = (cache == "cached" && scenario != "healthz_ceiling").then(|| {
                    tokio::spawn(download_trickle(
                        url.clone(),
                        token.clone(),
                        a.templates,
                        a.downloads_per_sec,
                        stop.clone(),
                    ))
                });
                let trickle_started = Instant::now();
                let mut modes = serde_json::Map::new();
                for (mode, conns) in [("throughput", 32), ("latency", 4)] {
                    let mut runs = Vec::new();
                    for run in 0..a.runs {
                        let r = wrk(&url, &script, conns, a.duration).await;
                        eprintln!("[{name}] {scenario} {cache} {mode} run {run}: {r}");
                        runs.push(r);
                    }
                    modes.insert(
                        mode.into(),
                        json!({
                            "connections": conns,
                            "median": {"rps": median(&runs, "rps"), "p50_ms": median(&runs, "p50_ms"),
                                       "p99_ms": median(&runs, "p99_ms"),
                                       "server_cpu_us_per_request": median(&runs, "server_cpu_us_per_request")},
                            "runs": runs,
                        }),
                    );
                }
                stop.store(true, Ordering::Relaxed);
                if let Some(t) = trickle {
                    let done = t.await.unwrap();
                    let rate = done as f64 / trickle_started.elapsed().as_secs_f64();
                    modes.insert("downloads_per_sec_during_runs".into(), json!(rate.round()));
                }
                let p99 = modes["latency"]["median"]["p99_ms"].as_f64().unwrap();
                let rps = modes["throughput"]["median"]["rps"].as_f64().unwrap();
                let p99_target = if scenario == "search" { 10.0 } else { 5.0 };
                let targets = if scenario == "healthz_ceiling" {
                    json!({"note": "no target: the HTTP ceiling of this machine, for comparison"})
                } else if *backend == Backend::Sqlite {
                    json!({"p99_ms_below": p99_target, "rps_at_least": 5000,
                           "p99_pass": p99 < p99_target, "rps_pass": rps >= 5000.0})
                } else {
                    json!({"note": "TARGETS.md sets targets for SQLite; PostgreSQL is reported for comparison",
                           "p99_ms_below": p99_target, "p99_pass": p99 < p99_target})
                };
                let cache_label = if scenario == "healthz_ceiling" {
                    "n/a"
                } else {
                    cache
                };
                out.push(json!({"scenario": scenario, "list_cache": cache_label, "modes": modes, "targets": targets}));
            }
            server.abort();
        }
        results.push(json!({
            "backend": name, "templates": a.templates, "seed_seconds": (seed_secs * 10.0).round() / 10.0,
            "scenarios": out, "load_average_after": load_average(),
        }));
        db.close().await;
    }
    let report = json!({
        "benchmark": "marketplace list/search over HTTP (wrk, loopback)",
        "duration_secs_per_run": a.duration, "runs": a.runs,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "load_average_at_end": load_average(),
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
