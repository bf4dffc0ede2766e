//! Bounded mixed load on loopback against one `aragora serve` on PostgreSQL: API reads and
//! writes from concurrent clients, webhook deliveries of every event to a signature-checking
//! receiver, and CDC changes streaming into the knowledge mound — with zero errors. Prints
//! throughput, latency percentiles and the server's peak RSS as JSON.
//!
//! Duration: `ARAGORA_LOAD_SECS` (default 8 in the suite; `scripts/reliability soak` runs 10
//! minutes in release mode). `ARAGORA_LOAD_BACKEND=sqlite` serves from SQLite instead (the CDC
//! source stays PostgreSQL). The server's RSS is sampled every 250 ms; every
//! `ARAGORA_LOAD_RSS_EVERY_SECS` (default 1) a point of the printed series is kept. Runs of 2
//! minutes or more also assert the memory verdict: after the warm-up (the first fifth), RSS grows
//! by less than 1 MiB per minute over the second half (least-squares slope).

mod cluster;

use aragora_testkit::{Node, eventually};
use aragora_webhooks::receiver::{Receiver, ReceiverConfig};
use aragora_webhooks::signing::generate_secret;
use cluster::{Source, mound, transcript};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_has_zero_errors_and_bounded_memory() {
    let secs: u64 = std::env::var("ARAGORA_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let every = Duration::from_secs_f64(
        std::env::var("ARAGORA_LOAD_RSS_EVERY_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0),
    );
    let (backend, backend_name) = match std::env::var("ARAGORA_LOAD_BACKEND").as_deref() {
        Ok("sqlite") => (aragora_testkit::Backend::Sqlite, "sqlite"),
        _ => (aragora_testkit::Backend::Postgres, "postgres"),
    };
    let db = aragora_testkit::fresh_database(backend).await;
    let env: Vec<(&str, &str)> = cluster::FAST_ENV.to_vec();
    let node = Node::start(cluster::BIN, &db.url, &["serve"], &env).await;
    let pid = node.pid().unwrap();
    let base = node.base_url.clone().unwrap();
    let token = std::fs::read_to_string(node.data_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let secret = generate_secret();
    let rx = Receiver::start(ReceiverConfig::new(secret.clone()))
        .await
        .unwrap();
    let r = http
        .post(format!("{base}/api/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": rx.url(), "secret": secret, "event_types": ["order.created", "cdc.change"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..20 {
        let r = http
            .post(format!("{base}/api/v1/debates/import"))
            .bearer_auth(&token)
            .json(&transcript(&format!("ld-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let src =
        Source::new("CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance int)").await;
    let r = http
        .post(format!("{base}/api/v1/connectors"))
        .bearer_auth(&token)
        .json(&src.connector("accounts", &["accounts"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let connector: serde_json::Value = r.json().await.unwrap();
    let connector = connector["id"].as_str().unwrap().to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let error_statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        u64,
    >::new()));
    let published = Arc::new(AtomicU64::new(0));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak_rss.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut series: Vec<(f64, u64)> = Vec::new();
            let mut next_point = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let r = rss_kib(pid);
                peak.fetch_max(r, Ordering::Relaxed);
                if started.elapsed() >= next_point {
                    series.push((started.elapsed().as_secs_f64(), r));
                    next_point += every;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            series
        })
    };
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..8u64 {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        let (stop, errors, published) = (stop.clone(), errors.clone(), published.clone());
        let error_statuses = error_statuses.clone();
        clients.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let t = Instant::now();
                let req = match (c + i) % 5 {
                    0 => http
                        .post(format!("{base}/api/v1/events"))
                        .json(&json!({"event_type": "order.created", "data": {"c": c, "i": i}})),
                    1 => http.get(format!("{base}/api/v1/debates?limit=20")),
                    2 => http.get(format!("{base}/api/v1/debates/ld-{}", i % 20)),
                    3 => http
                        .post(format!("{base}/api/v1/knowledge/items"))
                        .json(&json!({"content": format!("load item {c} {i} about queues")})),
                    _ => http.get(format!("{base}/api/v1/knowledge/search?q=queues&limit=10")),
                };
                match req.bearer_auth(&token).send().await {
                    Ok(r) if r.status().is_success() => {
                        if (c + i).is_multiple_of(5) {
                            published.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = r.bytes().await;
                    }
                    other => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let key = match other {
                            Ok(r) => r.status().as_u16().to_string(),
                            Err(_) => "connection".to_string(),
                        };
                        *error_statuses.lock().unwrap().entry(key).or_default() += 1;
                    }
                }
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat
        }));
    }
    let cdc = {
        let stop = stop.clone();
        let src_db = src.db.clone();
        tokio::spawn(async move {
            let mut next = 1i64;
            while !stop.load(Ordering::Relaxed) {
                aragora_store::sqlx::query(aragora_store::sqlx::AssertSqlSafe(format!(
                    "INSERT INTO accounts SELECT g, 'o' || g, g FROM generate_series({next}, {}) g",
                    next + 19
                )))
                .execute(src_db.writer())
                .await
                .unwrap();
                next += 20;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            next - 1
        })
    };
    tokio::time::sleep(Duration::from_secs(secs)).await; // the load's duration, not a wait for work
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat: Vec<u32> = Vec::new();
    for c in clients {
        lat.extend(c.await.unwrap());
    }
    let cdc_rows = cdc.await.unwrap();
    let series = sampler.await.unwrap();
    let memory = memory_verdict(&series, elapsed);
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    let errors = errors.load(Ordering::Relaxed);

    // Deliveries and CDC catch up; nothing was lost under load.
    let expected = src.rows("accounts").await;
    let caught_up = eventually(Duration::from_secs(120), || async {
        (mound(&db.url, &connector, "accounts", "id").await.len() == expected.len()).then_some(())
    })
    .await;
    let events = published.load(Ordering::Relaxed) as usize + cdc_rows as usize;
    let delivered = rx
        .wait_for_acknowledged(events, Duration::from_secs(120))
        .await;
    let series_json: Vec<serde_json::Value> = series
        .iter()
        .map(|(t, kib)| json!([(t * 10.0).round() / 10.0, kib]))
        .collect();
    println!("{}", json!({"rss_series_secs_kib": series_json}));
    println!(
        "{}",
        json!({
            "backend": backend_name,
            "load_secs": (elapsed * 10.0).round() / 10.0,
            "requests": lat.len(),
            "throughput_rps": (lat.len() as f64 / elapsed).round(),
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
            "errors": errors,
            "error_statuses": error_statuses.lock().unwrap().clone(),
            "webhook_deliveries": rx.acknowledged(),
            "cdc_rows": cdc_rows,
            "rss_peak_kib": peak_rss.load(Ordering::Relaxed),
            "rss_warm_kib": memory.warm_kib,
            "rss_range_after_warmup_kib": memory.range_kib,
            "rss_slope_second_half_kib_per_min": (memory.slope_kib_per_min * 10.0).round() / 10.0,
            "rss_stable": memory.stable,
        })
    );
    assert_eq!(errors, 0, "no request failed under load");
    assert!(
        caught_up.is_some(),
        "the knowledge mound caught up with {} CDC rows",
        expected.len()
    );
    assert!(delivered, "all {events} events delivered");
    assert_eq!(rx.invalid(), 0);
    assert!(
        peak_rss.load(Ordering::Relaxed) < 1024 * 1024,
        "peak RSS under 1 GiB"
    );
    if secs >= 120 {
        assert!(
            memory.stable,
            "RSS grew {:.0} KiB/min over the second half",
            memory.slope_kib_per_min
        );
    }
    drop(node);
    src.drop().await;
}

/// RSS behaviour after the warm-up (the first fifth of the run).
struct Memory {
    /// RSS at the end of the warm-up.
    warm_kib: u64,
    /// Max − min after the warm-up.
    range_kib: u64,
    /// Least-squares slope over the second half of the run.
    slope_kib_per_min: f64,
    /// Slope under 1 MiB per minute.
    stable: bool,
}

fn memory_verdict(series: &[(f64, u64)], secs: f64) -> Memory {
    let after: Vec<&(f64, u64)> = series.iter().filter(|(t, _)| *t >= secs / 5.0).collect();
    let warm_kib = after.first().map(|(_, k)| *k).unwrap_or(0);
    let max = after.iter().map(|(_, k)| *k).max().unwrap_or(0);
    let min = after.iter().map(|(_, k)| *k).min().unwrap_or(0);
    let half: Vec<(f64, f64)> = series
        .iter()
        .filter(|(t, _)| *t >= secs / 2.0)
        .map(|(t, k)| (*t, *k as f64))
        .collect();
    let n = half.len() as f64;
    let slope_per_sec = if half.len() < 2 {
        0.0
    } else {
        let mt = half.iter().map(|(t, _)| t).sum::<f64>() / n;
        let mk = half.iter().map(|(_, k)| k).sum::<f64>() / n;
        let cov: f64 = half.iter().map(|(t, k)| (t - mt) * (k - mk)).sum();
        let var: f64 = half.iter().map(|(t, _)| (t - mt).powi(2)).sum();
        if var > 0.0 { cov / var } else { 0.0 }
    };
    let slope_kib_per_min = slope_per_sec * 60.0;
    Memory {
        warm_kib,
        range_kib: max - min,
        slope_kib_per_min,
        stable: slope_kib_per_min < 1024.0,
    }
}
