//! End-to-end webhook benchmark against the real release `aragora` binary.
//!
//! Run with `scripts/bench-webhooks` (builds both in release mode, then runs this). Prints one
//! JSON document on stdout; progress goes to stderr.
//!
//! Per backend (SQLite, PostgreSQL), each scenario starts a fresh server on a fresh database and
//! runs `--runs` times (medians reported):
//! - `one_endpoint` / `ten_endpoints`: `--events` events published through `POST /api/v1/events`
//!   by `--publishers` concurrent clients, as fast as they go, to 1 or 10 endpoints. Publish
//!   rate, end-to-end rate until the receivers have every delivery, send→receive latency
//!   percentiles, server CPU and peak RSS (`VmHWM`).
//! - `fixed_rate_500`: 500 events/s offered on a fixed schedule; latency percentiles.
//! - `failing_10pct`: the receiver fails the first attempt of every tenth event with a 500;
//!   first-try and after-retry shares, and that no delivery is acknowledged twice.
//! - `dead_10pct`: 10 endpoints, one of which never answers; 500 events/s; latency of the
//!   healthy nine.
//!
//! Every receiver verifies both signatures (`X-Signature-SHA256` with the guide's verifier,
//! `webhook-signature` with Standard Webhooks) on every request and answers 401 otherwise.

use aragora_testkit::{Backend, Server, ServerOptions, pg_admin_url};
use aragora_webhooks::signing::{guide_verify_signature, verify_standard};
use axum::extract::State;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SVIX_EVENTS_PER_S_1: f64 = 1050.0;
const SVIX_DELIVERIES_PER_S_10: f64 = 3000.0;
const TARGET_EVENTS_PER_S_1: f64 = 2100.0;
const TARGET_DELIVERIES_PER_S_10: f64 = 6000.0;
const TARGET_P99_MS_AT_500: f64 = 10.0;
const TARGET_RSS_MB: f64 = 50.0;

// ---------------------------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------------------------

struct Endpoint {
    /// Fail the first attempt of events whose seq % 10 == 0.
    fail_tenth: bool,
    /// Never answer.
    dead: bool,
    requests: AtomicU64,
    invalid: AtomicU64,
    acked: AtomicUsize,
    acked_first_try: AtomicU64,
    acked_after_retry: AtomicU64,
    duplicate_acks: AtomicU64,
    state: Mutex<EndpointLog>,
    t0: Instant,
}

#[derive(Default)]
struct EndpointLog {
    acked_ids: HashSet<String>,
    /// Arrival (µs since t0) of the first acknowledged delivery, by event seq.
    arrival_us: Vec<u64>,
}

impl Endpoint {
    fn new(events: usize, fail_tenth: bool, dead: bool, t0: Instant) -> Arc<Self> {
        Arc::new(Endpoint {
            fail_tenth,
            dead,
            requests: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            acked: AtomicUsize::new(0),
            acked_first_try: AtomicU64::new(0),
            acked_after_retry: AtomicU64::new(0),
            duplicate_acks: AtomicU64::new(0),
            state: Mutex::new(EndpointLog {
                acked_ids: HashSet::with_capacity(events),
                arrival_us: vec![u64::MAX; events],
            }),
            t0,
        })
    }
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn receive(State(ep): State<Arc<Endpoint>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let arrived = ep.t0.elapsed().as_micros() as u64;
    ep.requests.fetch_add(1, Ordering::Relaxed);
    if ep.dead {
        std::future::pending::<()>().await;
    }
    let id = h(&headers, "webhook-id");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let valid = guide_verify_signature(&body, h(&headers, "x-signature-sha256"), SECRET)
        && verify_standard(
            &[SECRET],
            id,
            h(&headers, "webhook-timestamp"),
            &body,
            h(&headers, "webhook-signature"),
            Some((now, 300)),
        )
        .is_ok();
    if !valid {
        ep.invalid.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let seq = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["data"]["seq"].as_u64())
        .unwrap_or(u64::MAX) as usize;
    let first_try = h(&headers, "x-aragora-attempt") == "1";
    if ep.fail_tenth && seq.is_multiple_of(10) && first_try {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let mut log = ep.state.lock().unwrap_or_else(|e| e.into_inner());
    if !log.acked_ids.insert(id.to_string()) {
        ep.duplicate_acks.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    }
    if let Some(slot) = log.arrival_us.get_mut(seq)
        && *slot == u64::MAX
    {
        *slot = arrived;
    }
    drop(log);
    if first_try {
        ep.acked_first_try.fetch_add(1, Ordering::Relaxed);
    } else {
        ep.acked_after_retry.fetch_add(1, Ordering::Relaxed);
    }
    ep.acked.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

async fn start_endpoint(ep: Arc<Endpoint>) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(receive).with_state(ep);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}

// ---------------------------------------------------------------------------------------------
// Process measurements
// ---------------------------------------------------------------------------------------------

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

fn status_kb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn round(x: f64, digits: i32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let f = 10f64.powi(digits);
    json!((x * f).round() / f)
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Scenario {
    name: &'static str,
    events: usize,
    endpoints: usize,
    /// `None` = as fast as the publishers go.
    rate: Option<f64>,
    fail_tenth: bool,
    dead: usize,
    env: Vec<(&'static str, &'static str)>,
}

struct Opts {
    bin: String,
    events: usize,
    runs: usize,
    publishers: usize,
    backends: Vec<Backend>,
    scenarios: Option<Vec<String>>,
    /// Print the server's webhook/queue/HTTP metrics to stderr after each run (for tuning).
    dump_metrics: bool,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        bin: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("aragora")))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "target/release/aragora".into()),
        events: 30_000,
        runs: 3,
        publishers: 16,
        backends: vec![Backend::Sqlite, Backend::Postgres],
        scenarios: None,
        dump_metrics: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--bin" => o.bin = val(),
            "--events" => o.events = val().parse().expect("--events N"),
            "--runs" => o.runs = val().parse().expect("--runs N"),
            "--publishers" => o.publishers = val().parse().expect("--publishers N"),
            "--backend" => {
                o.backends = match val().as_str() {
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" => vec![Backend::Postgres],
                    "both" => vec![Backend::Sqlite, Backend::Postgres],
                    other => panic!("--backend sqlite|postgres|both, not {other}"),
                }
            }
            "--scenarios" => {
                o.scenarios = Some(val().split(',').map(str::to_string).collect());
            }
            "--dump-metrics" => o.dump_metrics = true,
            "-h" | "--help" => {
                eprintln!(
                    "bench-webhooks [--backend sqlite|postgres|both] [--events N] [--runs N] \
                     [--publishers N] [--scenarios one_endpoint,ten_endpoints,fixed_rate_500,\
                     failing_10pct,dead_10pct] [--bin path/to/aragora]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn scenarios(o: &Opts) -> Vec<Scenario> {
    let fixed = (o.events / 3).clamp(1000, 10_000);
    let all = vec![
        Scenario {
            name: "one_endpoint",
            events: o.events,
            endpoints: 1,
            rate: None,
            fail_tenth: false,
            dead: 0,
            env: vec![],
        },
        Scenario {
            name: "ten_endpoints",
            events: o.events,
            endpoints: 10,
            rate: None,
            fail_tenth: false,
            dead: 0,
            env: vec![],
        },
        Scenario {
            name: "fixed_rate_500",
            events: fixed,
            endpoints: 1,
            rate: Some(500.0),
            fail_tenth: false,
            dead: 0,
            env: vec![],
        },
        Scenario {
            name: "failing_10pct",
            events: fixed,
            endpoints: 1,
            rate: None,
            fail_tenth: true,
            dead: 0,
            env: vec![
                ("ARAGORA_WEBHOOK_RETRY_BASE_MS", "200"),
                ("ARAGORA_WEBHOOK_RETRY_MULTIPLIER", "2"),
                // Isolated failures must not trip the breaker in this scenario.
                ("ARAGORA_WEBHOOK_BREAKER_FAILURES", "50"),
            ],
        },
        Scenario {
            name: "dead_10pct",
            events: fixed,
            endpoints: 10,
            rate: Some(500.0),
            fail_tenth: false,
            dead: 1,
            env: vec![],
        },
    ];
    all.into_iter()
        .filter(|s| {
            o.scenarios
                .as_ref()
                .is_none_or(|names| names.iter().any(|n| n == s.name))
        })
        .collect()
}

async fn run_once(o: &Opts, backend: Backend, sc: &Scenario) -> Value {
    let env: Vec<(String, String)> = sc
        .env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let server = Server::start_with(&o.bin, backend, ServerOptions { args: vec![], env }).await;
    let pid = server.pid().expect("server pid");
    let token = server.token("bench", "default", "member").await;
    let t0 = Instant::now();
    let mut endpoints = Vec::new();
    for i in 0..sc.endpoints {
        let ep = Endpoint::new(sc.events, sc.fail_tenth, i < sc.dead, t0);
        let url = start_endpoint(ep.clone()).await;
        let (status, body) = server
            .post(
                "/api/webhooks",
                &token,
                &json!({"url": url, "secret": SECRET, "event_types": ["bench.event"]}),
            )
            .await;
        assert_eq!(status, 201, "register: {body}");
        endpoints.push(ep);
    }
    let healthy: Vec<Arc<Endpoint>> = endpoints.iter().filter(|e| !e.dead).cloned().collect();
    let want_per_endpoint = sc.events;
    let want_total = want_per_endpoint * healthy.len();

    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(o.publishers * 2)
        .build()
        .expect("client");
    let url = server.url("/api/v1/events");
    let sent_us: Arc<Vec<AtomicU64>> =
        Arc::new((0..sc.events).map(|_| AtomicU64::new(u64::MAX)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = cpu_seconds(pid);
    let self_cpu0 = cpu_seconds(std::process::id());
    let started = Instant::now();
    let start_us = t0.elapsed().as_micros() as u64;
    let publish = move |seq: usize,
                        http: reqwest::Client,
                        url: String,
                        token: String,
                        sent_us: Arc<Vec<AtomicU64>>,
                        failed: Arc<AtomicUsize>| async move {
        let body = json!({"event_type": "bench.event", "data": {
            "seq": seq, "debate_id": format!("deb-{seq}"), "task": "Design a rate limiter",
            "outcome": "consensus", "consensus_strength": 0.92}});
        sent_us[seq].store(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        match http.post(&url).bearer_auth(&token).json(&body).send().await {
            Ok(r) if r.status() == 202 => {
                let _ = r.bytes().await;
            }
            Ok(r) => {
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("publish {seq}: {}", r.status());
            }
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("publish {seq}: {e}");
            }
        }
    };
    let mut tasks = Vec::new();
    match sc.rate {
        None => {
            for _ in 0..o.publishers {
                let (http, url, token, sent_us, next, failed) = (
                    http.clone(),
                    url.clone(),
                    token.clone(),
                    sent_us.clone(),
                    next.clone(),
                    failed.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    loop {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if seq >= sent_us.len() {
                            return;
                        }
                        publish(
                            seq,
                            http.clone(),
                            url.clone(),
                            token.clone(),
                            sent_us.clone(),
                            failed.clone(),
                        )
                        .await;
                    }
                }));
            }
        }
        Some(rate) => {
            let (http, url, token, sent_us, failed) = (
                http.clone(),
                url.clone(),
                token.clone(),
                sent_us.clone(),
                failed.clone(),
            );
            let n = sc.events;
            tasks.push(tokio::spawn(async move {
                let limit = Arc::new(tokio::sync::Semaphore::new(256));
                let mut inner = Vec::with_capacity(n);
                let base = tokio::time::Instant::now();
                for seq in 0..n {
                    tokio::time::sleep_until(base + Duration::from_secs_f64(seq as f64 / rate))
                        .await;
                    let permit = limit.clone().acquire_owned().await.expect("semaphore");
                    let f = publish(
                        seq,
                        http.clone(),
                        url.clone(),
                        token.clone(),
                        sent_us.clone(),
                        failed.clone(),
                    );
                    inner.push(tokio::spawn(async move {
                        f.await;
                        drop(permit);
                    }));
                }
                for t in inner {
                    let _ = t.await;
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let published = sc.events - failed.load(Ordering::Relaxed);

    // Wait until every healthy endpoint has every event (or progress stalls for 60 s).
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        let got: usize = healthy
            .iter()
            .map(|e| e.acked.load(Ordering::Relaxed))
            .sum();
        if got >= published * healthy.len() {
            break;
        }
        if got != last {
            last = got;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(60) {
            eprintln!("  stalled at {got}/{want_total} deliveries");
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let cpu = cpu_seconds(pid) - cpu0;
    let self_cpu = cpu_seconds(std::process::id()) - self_cpu0;
    let peak_rss_mb = status_kb(pid, "VmHWM:") / 1024.0;
    let rss_mb = status_kb(pid, "VmRSS:") / 1024.0;

    // Latency: first acknowledged arrival minus publish start, per healthy delivery.
    let mut lat_ms = Vec::with_capacity(want_total);
    let mut last_arrival = start_us;
    for ep in &healthy {
        let log = ep.state.lock().unwrap_or_else(|e| e.into_inner());
        for (seq, a) in log.arrival_us.iter().enumerate() {
            let s = sent_us[seq].load(Ordering::Relaxed);
            if *a != u64::MAX && s != u64::MAX {
                lat_ms.push((a.saturating_sub(s)) as f64 / 1000.0);
                last_arrival = last_arrival.max(*a);
            }
        }
    }
    lat_ms.sort_by(f64::total_cmp);
    let delivered = lat_ms.len();
    let e2e_secs = (last_arrival - start_us) as f64 / 1e6;
    let acked_first: u64 = healthy
        .iter()
        .map(|e| e.acked_first_try.load(Ordering::Relaxed))
        .sum();
    let acked_retry: u64 = healthy
        .iter()
        .map(|e| e.acked_after_retry.load(Ordering::Relaxed))
        .sum();
    let dup: u64 = endpoints
        .iter()
        .map(|e| e.duplicate_acks.load(Ordering::Relaxed))
        .sum();
    let invalid: u64 = endpoints
        .iter()
        .map(|e| e.invalid.load(Ordering::Relaxed))
        .sum();
    let dead_requests: u64 = endpoints
        .iter()
        .filter(|e| e.dead)
        .map(|e| e.requests.load(Ordering::Relaxed))
        .sum();
    let requests: u64 = healthy
        .iter()
        .map(|e| e.requests.load(Ordering::Relaxed))
        .sum();
    if o.dump_metrics
        && let Ok(r) = http.get(server.url("/metrics")).send().await
    {
        let text = r.text().await.unwrap_or_default();
        for l in text.lines().filter(|l| {
            !l.starts_with('#')
                && (l.contains("_sum") || l.contains("_count") || l.contains("_total"))
                && (l.contains("webhook") || l.contains("job") || l.contains("events"))
        }) {
            eprintln!("    {l}");
        }
    }
    drop(server);
    json!({
        "events": sc.events,
        "published": published,
        "endpoints": sc.endpoints,
        "dead_endpoints": sc.dead,
        "deliveries_expected": published * healthy.len(),
        "deliveries_received": delivered,
        "requests_to_healthy": requests,
        "publish_secs": round(publish_secs, 3),
        "publish_per_s": round(published as f64 / publish_secs, 0),
        "e2e_secs": round(e2e_secs, 3),
        "events_per_s": round(delivered as f64 / healthy.len().max(1) as f64 / e2e_secs, 0),
        "deliveries_per_s": round(delivered as f64 / e2e_secs, 0),
        "latency_ms": {
            "p50": round(percentile(&lat_ms, 0.50), 2),
            "p95": round(percentile(&lat_ms, 0.95), 2),
            "p99": round(percentile(&lat_ms, 0.99), 2),
            "max": round(lat_ms.last().copied().unwrap_or(f64::NAN), 2),
        },
        "server_cpu_secs": round(cpu, 2),
        "server_cpu_percent": round(cpu / e2e_secs.max(publish_secs) * 100.0, 0),
        "bench_process_cpu_secs": round(self_cpu, 2),
        "server_peak_rss_mb": round(peak_rss_mb, 1),
        "server_rss_end_mb": round(rss_mb, 1),
        "first_try": acked_first,
        "after_retry": acked_retry,
        "first_try_share": round(acked_first as f64 / (acked_first + acked_retry).max(1) as f64, 4),
        "after_retry_share": round(acked_retry as f64 / (acked_first + acked_retry).max(1) as f64, 4),
        "duplicate_successes": dup,
        "invalid_signatures": invalid,
        "requests_to_dead_endpoint": dead_requests,
    })
}

fn summarise(name: &str, runs: &[Value]) -> Value {
    let med = |path: &[&str]| {
        median(
            runs.iter()
                .map(|r| {
                    path.iter()
                        .fold(r, |v, k| &v[*k])
                        .as_f64()
                        .unwrap_or(f64::NAN)
                })
                .collect(),
        )
    };
    let mut s = json!({
        "publish_per_s": round(med(&["publish_per_s"]), 0),
        "events_per_s": round(med(&["events_per_s"]), 0),
        "deliveries_per_s": round(med(&["deliveries_per_s"]), 0),
        "latency_ms": {
            "p50": round(med(&["latency_ms", "p50"]), 2),
            "p95": round(med(&["latency_ms", "p95"]), 2),
            "p99": round(med(&["latency_ms", "p99"]), 2),
        },
        "server_cpu_percent": round(med(&["server_cpu_percent"]), 0),
        "server_peak_rss_mb": round(med(&["server_peak_rss_mb"]), 1),
        "all_delivered": runs.iter().all(|r| r["deliveries_received"] == r["deliveries_expected"]),
        "duplicate_successes": runs.iter().map(|r| r["duplicate_successes"].as_u64().unwrap_or(0)).sum::<u64>(),
        "invalid_signatures": runs.iter().map(|r| r["invalid_signatures"].as_u64().unwrap_or(0)).sum::<u64>(),
    });
    let rss = med(&["server_peak_rss_mb"]);
    let check = |value: f64, target: f64, higher_is_better: bool| {
        json!({
            "value": round(value, 2),
            "target": target,
            "pass": if higher_is_better { value >= target } else { value < target },
        })
    };
    let mut targets = serde_json::Map::new();
    match name {
        "one_endpoint" => {
            let v = med(&["events_per_s"]);
            targets.insert("events_per_s".into(), check(v, TARGET_EVENTS_PER_S_1, true));
            s["vs_svix"] = json!({"svix_events_per_s": SVIX_EVENTS_PER_S_1, "ratio": round(v / SVIX_EVENTS_PER_S_1, 2)});
        }
        "ten_endpoints" => {
            let v = med(&["deliveries_per_s"]);
            targets.insert(
                "deliveries_per_s".into(),
                check(v, TARGET_DELIVERIES_PER_S_10, true),
            );
            s["vs_svix"] = json!({"svix_deliveries_per_s": SVIX_DELIVERIES_PER_S_10, "ratio": round(v / SVIX_DELIVERIES_PER_S_10, 2)});
        }
        "fixed_rate_500" => {
            targets.insert(
                "p99_ms".into(),
                check(med(&["latency_ms", "p99"]), TARGET_P99_MS_AT_500, false),
            );
        }
        "failing_10pct" => {
            s["first_try_share"] = round(med(&["first_try_share"]), 4);
            s["after_retry_share"] = round(med(&["after_retry_share"]), 4);
        }
        "dead_10pct" => {
            s["requests_to_dead_endpoint"] = round(med(&["requests_to_dead_endpoint"]), 0);
        }
        _ => {}
    }
    targets.insert("peak_rss_mb".into(), check(rss, TARGET_RSS_MB, false));
    s["targets"] = Value::Object(targets);
    s["runs"] = Value::Array(runs.to_vec());
    s
}

async fn pg_settings() -> Value {
    sqlx::any::install_default_drivers();
    let Ok(pool) = sqlx::AnyPool::connect(&pg_admin_url()).await else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for name in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "shared_buffers",
    ] {
        let v: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&pool)
            .await
            .ok();
        out.insert(name.into(), json!(v));
    }
    pool.close().await;
    Value::Object(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = parse_args();
    assert!(
        std::path::Path::new(&o.bin).exists(),
        "no aragora binary at {} (build it with `cargo build --release -p aragora`, or pass --bin)",
        o.bin
    );
    let mut report = serde_json::Map::new();
    report.insert(
        "command".into(),
        json!(std::env::args().collect::<Vec<_>>().join(" ")),
    );
    report.insert(
        "machine".into(),
        json!({
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        }),
    );
    report.insert("events".into(), json!(o.events));
    report.insert("publishers".into(), json!(o.publishers));
    report.insert("runs".into(), json!(o.runs));
    for backend in o.backends.clone() {
        let key = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let mut b = serde_json::Map::new();
        if backend == Backend::Postgres {
            b.insert("postgres_settings".into(), pg_settings().await);
        }
        for sc in scenarios(&o) {
            let mut runs = Vec::new();
            for i in 0..o.runs {
                eprintln!("{key} {} run {}/{}", sc.name, i + 1, o.runs);
                let r = run_once(&o, backend, &sc).await;
                eprintln!(
                    "  events/s {} deliveries/s {} publish/s {} p50 {} p99 {} ms, cpu {}%, rss {} MB",
                    r["events_per_s"],
                    r["deliveries_per_s"],
                    r["publish_per_s"],
                    r["latency_ms"]["p50"],
                    r["latency_ms"]["p99"],
                    r["server_cpu_percent"],
                    r["server_peak_rss_mb"]
                );
                runs.push(r);
            }
            b.insert(sc.name.into(), summarise(sc.name, &runs));
        }
        report.insert(key.into(), Value::Object(b));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(report)).expect("json")
    );
}
