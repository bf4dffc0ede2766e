//! Prometheus metrics: the recorder, and HTTP request counters and latency histograms labelled
//! by route template (never the raw path) and status class.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One debate's explanation takes tens of microseconds to a few seconds (Monte Carlo pivotality
/// on very large debates).
const PER_DEBATE_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A whole batch (submitted → finished, including queue wait) takes seconds to an hour.
const BATCH_DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
];

/// Drains histogram samples into their buckets between scrapes, so memory stays bounded when
/// nothing scrapes `/metrics` for a long time.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide recorder once and returns its handle.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Full-name matchers take precedence over the suffix matcher.
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("valid buckets")
                .set_buckets_for_metric(
                    Matcher::Full("aragora_explainability_batch_processing_latency_seconds".into()),
                    &PER_DEBATE_BUCKETS,
                )
                .expect("valid buckets")
                .set_buckets_for_metric(
                    Matcher::Full("aragora_explainability_batch_duration_seconds".into()),
                    &BATCH_DURATION_BUCKETS,
                )
                .expect("valid buckets")
                .set_buckets_for_metric(
                    Matcher::Full("aragora_marketplace_ratings_distribution".into()),
                    &[1.0, 2.0, 3.0, 4.0, 5.0],
                )
                .expect("valid buckets")
                .install_recorder()
                .expect("install metrics recorder");
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep thread");
            register_series();
            handle
        })
        .clone()
}

/// Creates every series with a bounded label set at 0 when the process starts. A counter series
/// that first appears already at 1 hides that increment from `rate()`/`increase()` (Prometheus
/// sees no change), so without this the first downloads, failures or batches after a start would
/// never show on a dashboard or fire an alert. Per-route, per-webhook and per-connector series
/// appear on first use.
fn register_series() {
    use crate::explainability::BATCH_QUEUE;
    use aragora_store::explain::status;
    use metrics::{counter, histogram};

    for q in [
        crate::workers::debates::QUEUE,
        aragora_store::webhooks::QUEUE,
        BATCH_QUEUE,
    ] {
        for outcome in ["completed", "retried", "dead"] {
            counter!("aragora_jobs_total", "queue" => q, "outcome" => outcome).increment(0);
        }
        let _ = histogram!("aragora_job_duration_seconds", "queue" => q);
        let _ = histogram!("aragora_queue_claim_delay_seconds", "queue" => q);
    }
    for name in [
        "aragora_debates_requested_total",
        "aragora_debates_imported_total",
        "aragora_debates_started_total",
        "aragora_debates_resumed_total",
        "aragora_webhook_publish_batches_total",
        "aragora_webhook_publish_batched_events_total",
        "aragora_webhook_recorder_batches_total",
        "aragora_webhook_recorder_writes_total",
    ] {
        counter!(name).increment(0);
    }
    for outcome in ["consensus", "no_consensus", "failed"] {
        counter!("aragora_debates_total", "outcome" => outcome).increment(0);
    }
    for kind in ["config", "auth", "http", "timeout", "connect", "unusable"] {
        counter!("aragora_debate_agent_errors_total", "kind" => kind).increment(0);
    }
    let _ = histogram!("aragora_debate_duration_seconds");
    let _ = histogram!("aragora_knowledge_search_seconds");

    for unique in ["true", "false"] {
        counter!("aragora_marketplace_downloads_total", "unique" => unique).increment(0);
    }
    // Every error code a publish can fail with (`aragora_core::Error::code`).
    for reason in [
        "validation_failed",
        "bad_request",
        "not_found",
        "forbidden",
        "conflict",
        "rate_limited",
        "payload_too_large",
        "unavailable",
        "internal",
    ] {
        counter!("aragora_marketplace_publish_failures_total", "reason" => reason).increment(0);
    }
    for action in ["publish", "rate", "review"] {
        counter!("aragora_marketplace_rate_limited_total", "action" => action).increment(0);
    }
    let _ = histogram!("aragora_marketplace_ratings_distribution");

    for s in [status::COMPLETED, status::PARTIAL, status::FAILED] {
        counter!("aragora_explainability_batch_jobs_total", "status" => s).increment(0);
    }
    let _ = histogram!("aragora_explainability_batch_processing_latency_seconds");
    let _ = histogram!("aragora_explainability_batch_duration_seconds");

    for (status, outcome) in [
        ("succeeded", "success"),
        ("failed", "retry"),
        ("failed", "gone"),
        ("failed", "failed"),
        ("failed", "disabled"),
    ] {
        counter!("aragora_webhook_deliveries_total", "status" => status, "outcome" => outcome)
            .increment(0);
    }
    for status in ["succeeded", "failed"] {
        let _ = histogram!("aragora_webhook_delivery_latency_seconds", "status" => status);
    }
    for reason in ["endpoint_busy", "breaker_open"] {
        counter!("aragora_webhook_deferred_total", "reason" => reason).increment(0);
    }
    // Sites that call aragora_store::note_storage_full.
    for site in ["request", "webhook_recorder", "queue"] {
        counter!("aragora_storage_full_errors_total", "site" => site).increment(0);
    }
}

pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let class = match resp.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("aragora_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => class).increment(1);
    metrics::histogram!("aragora_http_request_duration_seconds", "method" => method, "route" => route, "status" => class)
        .record(started.elapsed().as_secs_f64());
    resp
}
