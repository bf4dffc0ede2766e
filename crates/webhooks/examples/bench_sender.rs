//! Micro-benchmark of the storage-free delivery path: sign + guarded send + receiver verification
//! over loopback, no database or queue. Prints one JSON object.
//!
//! `cargo run --release -p aragora-webhooks --example bench_sender -- [deliveries] [concurrency]`
//! (defaults 30000 and 16). Also reports header-signing throughput on its own.

use aragora_webhooks::receiver::{Receiver, ReceiverConfig};
use aragora_webhooks::{
    DeliveryRequest, HeaderInput, Outcome, Policy, Sender, SenderConfig, build_headers,
};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn body(i: usize) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "event_type": "debate.completed", "event_id": format!("evt-{i}"),
            "timestamp": "2024-01-20T12:00:00Z",
            "data": {"debate_id": format!("deb-{i}"), "task": "Design a rate limiter",
                     "outcome": "consensus", "consensus_strength": 0.92}
        })
        .to_string(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let secret = aragora_webhooks::signing::generate_secret();

    // Signing alone.
    let sign_n = 100_000;
    let b = body(0);
    let t = Instant::now();
    let mut sink = 0usize;
    for i in 0..sign_n {
        let h = build_headers(
            &HeaderInput {
                message_id: "dlv-bench",
                event_type: "debate.completed",
                attempt: 1,
                secret: &secret,
                previous_secrets: &[],
                timestamp: 1_700_000_000 + i as i64,
            },
            &b,
        )
        .expect("headers");
        sink += h.len();
    }
    let sign_per_s = sign_n as f64 / t.elapsed().as_secs_f64();
    assert!(sink > 0);

    let rx = Arc::new(
        Receiver::start(ReceiverConfig::new(secret.clone()))
            .await
            .expect("receiver"),
    );
    let sender = Sender::new(SenderConfig {
        policy: Policy::allow_loopback(),
        timeout: Duration::from_secs(10),
        ..SenderConfig::default()
    })
    .expect("sender");
    let url = rx.url();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (sender, url, secret, next) =
            (sender.clone(), url.clone(), secret.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failures = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let body = body(i);
                let id = format!("dlv-{i}");
                let headers = build_headers(
                    &HeaderInput {
                        message_id: &id,
                        event_type: "debate.completed",
                        attempt: 1,
                        secret: &secret,
                        previous_secrets: &[],
                        timestamp: aragora_core::time::now_ms() / 1000,
                    },
                    &body,
                )
                .expect("headers");
                let a = sender
                    .send(DeliveryRequest {
                        url: url.clone(),
                        body,
                        headers,
                    })
                    .await;
                if a.outcome != Outcome::Success {
                    failures += 1;
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, failures)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await.expect("task");
        lat.extend(l);
        failures += f;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let out = serde_json::json!({
        "bench": "webhooks_sender_loopback",
        "deliveries": total,
        "concurrency": concurrency,
        "failures": failures,
        "receiver_acknowledged": rx.acknowledged(),
        "receiver_invalid_signatures": rx.invalid(),
        "deliveries_per_s": (total as f64 / secs).round(),
        "latency_ms": {"p50": percentile(&lat, 0.5), "p95": percentile(&lat, 0.95),
                        "p99": percentile(&lat, 0.99)},
        "sign_headers_per_s": sign_per_s.round(),
        "note": "sender + receiver in one process on 2 worker threads; no database or queue",
    });
    println!("{out}");
}
