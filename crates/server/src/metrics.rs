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
            describe_all();
            register_series();
            handle
        })
        .clone()
}

/// `# HELP` text of every metric (the metrics reference in docs/operations.md, shortened), so
/// `promtool check metrics` finds no metric without help. The breaker gauge is rendered at scrape
/// time with its own (see `observe::breaker_exposition`).
fn describe_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("aragora_http_requests_total", "requests served (node)");
    describe_histogram!(
        "aragora_http_request_duration_seconds",
        "request latency, handler + middleware (node)"
    );
    describe_gauge!("aragora_queue_jobs", "jobs per queue and state (shared)");
    describe_gauge!(
        "aragora_workers_running",
        "workers whose heartbeat is fresh, all nodes (shared)"
    );
    describe_counter!("aragora_jobs_total", "job runs finished (node)");
    describe_histogram!(
        "aragora_job_duration_seconds",
        "one job run, claim → handler returned (node)"
    );
    describe_histogram!(
        "aragora_queue_claim_delay_seconds",
        "job due → claimed (node)"
    );
    describe_counter!(
        "aragora_debates_requested_total",
        "POST /api/v1/debates accepted"
    );
    describe_counter!(
        "aragora_debates_imported_total",
        "POST /api/v1/debates/import accepted"
    );
    describe_counter!(
        "aragora_debates_started_total",
        "debate runs started by a worker"
    );
    describe_counter!(
        "aragora_debates_resumed_total",
        "interrupted runs resumed from their last stored round"
    );
    describe_counter!("aragora_debates_total", "debates finished");
    describe_histogram!(
        "aragora_debate_duration_seconds",
        "one debate run, start → finished (the default buckets stop at 10 s: longer runs land in +Inf)"
    );
    describe_counter!(
        "aragora_debate_agent_errors_total",
        "provider errors during debates"
    );
    describe_counter!(
        "aragora_storage_full_errors_total",
        "database errors for a full disk — SQLite SQLITE_FULL or PostgreSQL 53100 disk_full (node)"
    );
    describe_histogram!(
        "aragora_knowledge_search_seconds",
        "GET /api/v1/knowledge/search query time"
    );
    describe_gauge!(
        "aragora_marketplace_templates_total",
        "listed templates per category (shared)"
    );
    describe_counter!("aragora_marketplace_downloads_total", "downloads served");
    describe_histogram!(
        "aragora_marketplace_ratings_distribution",
        "ratings submitted (rate and review)"
    );
    describe_counter!(
        "aragora_marketplace_publish_failures_total",
        "publishes and new versions refused"
    );
    describe_counter!(
        "aragora_marketplace_rate_limited_total",
        "requests refused by the per-user rate limit"
    );
    describe_counter!(
        "aragora_marketplace_list_cache_total",
        "list/search page cache lookups, per process"
    );
    describe_gauge!(
        "aragora_explainability_batch_jobs_active",
        "unfinished batches, all workspaces (shared)"
    );
    describe_counter!(
        "aragora_explainability_batch_jobs_total",
        "batches finished, counted once by the node that finished them"
    );
    describe_histogram!(
        "aragora_explainability_batch_processing_latency_seconds",
        "time to explain one debate inside a batch (load excluded, compute + render), observed for every debate that was found; not_found entries are not observed"
    );
    describe_histogram!(
        "aragora_explainability_batch_duration_seconds",
        "whole-batch turnaround: submitted → final status, queue wait and resumes included"
    );
    describe_counter!("aragora_webhook_deliveries_total", "delivery attempts");
    describe_histogram!(
        "aragora_webhook_delivery_latency_seconds",
        "duration of one attempt (request sent → response or error)"
    );
    describe_counter!(
        "aragora_webhook_failures_by_endpoint_total",
        "failed attempts per endpoint"
    );
    describe_counter!(
        "aragora_webhook_deferred_total",
        "deliveries postponed without spending an attempt"
    );
    describe_counter!(
        "aragora_webhook_publish_batches_total",
        "event-publish group commits"
    );
    describe_counter!(
        "aragora_webhook_publish_batched_events_total",
        "events written by those commits"
    );
    describe_counter!(
        "aragora_webhook_recorder_batches_total",
        "receipt-recorder group commits"
    );
    describe_counter!(
        "aragora_webhook_recorder_writes_total",
        "attempts recorded by those commits"
    );
    describe_counter!(
        "aragora_cdc_events_total",
        "change events delivered to every handler"
    );
    describe_counter!(
        "aragora_cdc_handler_errors_total",
        "handler failures (each is retried; events are never skipped)"
    );
    describe_gauge!(
        "aragora_cdc_lag_seconds",
        "age of the last delivered change while more are queued; 0 once caught up"
    );
    describe_counter!(
        "aragora_cdc_notices_total",
        "source notices a connector reported (e.g. a dropped or renamed collection), by connector and kind"
    );
}

/// Creates every series with a bounded label set at 0 when the process starts. A counter series
/// that first appears already at 1 hides that increment from `rate()`/`increase()` (Prometheus
/// sees no change), so without this the first downloads, failures or batches after a start would
/// never show on a dashboard or fire an alert. Per-route, per-webhook and per-connector series
/// appear on first use.
fn register_series() {
    use crate::explainability::BATCH_QUEUE;
    use aragora_store::explain::phase;
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
    // Every error code a publish can fail with (`aragora_core::Error::code`, and the
    // extractors' refusals of the token or the body).
    for reason in [
        "validation_failed",
        "bad_request",
        "malformed_json",
        "unsupported_media_type",
        "unauthorized",
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
    for result in ["hit", "miss", "stale"] {
        counter!("aragora_marketplace_list_cache_total", "result" => result).increment(0);
    }
    let _ = histogram!("aragora_marketplace_ratings_distribution");

    for s in [phase::COMPLETED, phase::PARTIAL, phase::FAILED] {
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
    record_http(method, route, resp.status(), started.elapsed());
    resp
}

/// Counts one answered request (also the router's fallback, as route `unmatched`, which the
/// route layer of [`track_http`] does not see).
pub fn record_http(
    method: String,
    route: String,
    status: axum::http::StatusCode,
    took: std::time::Duration,
) {
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!("aragora_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => class).increment(1);
    metrics::histogram!("aragora_http_request_duration_seconds", "method" => method, "route" => route, "status" => class)
        .record(took.as_secs_f64());
}
