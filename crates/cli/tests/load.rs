//! Bounded mixed load on loopback against one `aragora serve` on PostgreSQL: API reads and
//! writes from concurrent clients, webhook deliveries of every event to a signature-checking
//! receiver, and CDC changes streaming into the knowledge mound — with zero errors. Prints
//! throughput, latency percentiles and the server's peak RSS as JSON.
//!
//! Duration: `ARAGORA_LOAD_SECS` (default 8 in the suite; the long form in docs/reliability.md
//! runs minutes in release mode).

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
    let db = aragora_testkit::fresh_database(aragora_testkit::Backend::Postgres).await;
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
    let published = Arc::new(AtomicU64::new(0));
    let warm_rss = Arc::new(AtomicU64::new(0));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, warm) = (stop.clone(), peak_rss.clone(), warm_rss.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let r = rss_kib(pid);
                peak.fetch_max(r, Ordering::Relaxed);
                if started.elapsed() < Duration::from_secs(secs / 3 + 1) {
                    warm.store(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..8u64 {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        let (stop, errors, published) = (stop.clone(), errors.clone(), published.clone());
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
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
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
    sampler.await.unwrap();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    let errors = errors.load(Ordering::Relaxed);

    // Deliveries and CDC catch up; nothing was lost under load.
    let expected = src.rows("accounts").await;
    let caught_up = eventually(Duration::from_secs(120), || async {
        (mound(&db.url, &connector, "accounts").await.len() == expected.len()).then_some(())
    })
    .await;
    let events = published.load(Ordering::Relaxed) as usize + cdc_rows as usize;
    let delivered = rx
        .wait_for_acknowledged(events, Duration::from_secs(120))
        .await;
    println!(
        "{{\"load_secs\": {elapsed:.1}, \"requests\": {}, \"throughput_rps\": {:.0}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}, \"errors\": {errors}, \"webhook_deliveries\": {}, \"cdc_rows\": {cdc_rows}, \"rss_warm_kib\": {}, \"rss_peak_kib\": {}}}",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        rx.acknowledged(),
        warm_rss.load(Ordering::Relaxed),
        peak_rss.load(Ordering::Relaxed),
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
    drop(node);
    src.drop().await;
}
