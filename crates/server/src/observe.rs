//! Gauges computed from the database at scrape time, so every node reports the shared truth
//! (queue depths, worker counts, …) rather than its own memory.

use crate::state::AppState;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Categories reported at the previous scrape, so one that empties drops to 0 instead of keeping
/// its last value.
static MARKETPLACE_CATEGORIES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// Queues reported at the previous scrape: finished jobs are deleted, so a queue that empties
/// disappears from `depths()` and must be reported as 0 rather than keep its last values.
static QUEUES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
/// The server's own queues are always reported (0 when idle), so their series exist before the
/// first job and dashboards and alerts see "0", not "no data".
pub(crate) const KNOWN_QUEUES: [&str; 3] = [
    crate::workers::debates::QUEUE,
    aragora_store::webhooks::QUEUE,
    crate::explainability::BATCH_QUEUE,
];
const QUEUE_STATES: [&str; 4] = ["ready", "delayed", "running", "dead"];

async fn refresh_marketplace(state: &AppState) {
    let Ok(totals) = aragora_store::marketplace::category_totals(&state.db).await else {
        return;
    };
    let mut seen = MARKETPLACE_CATEGORIES
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let now: BTreeSet<String> = totals.iter().map(|(c, _)| c.clone()).collect();
    for gone in seen.difference(&now) {
        metrics::gauge!("aragora_marketplace_templates_total", "category" => gone.clone()).set(0.0);
    }
    for (category, n) in totals {
        metrics::gauge!("aragora_marketplace_templates_total", "category" => category)
            .set(n as f64);
    }
    *seen = now;
}

pub async fn refresh_gauges(state: &AppState) {
    refresh_marketplace(state).await;
    if let Ok(depths) = state.queue.depths().await {
        let mut seen = QUEUES.lock().unwrap_or_else(|e| e.into_inner());
        let now: BTreeSet<String> = depths.iter().map(|d| d.queue.clone()).collect();
        seen.extend(KNOWN_QUEUES.map(String::from));
        for gone in seen.difference(&now) {
            for s in QUEUE_STATES {
                metrics::gauge!("aragora_queue_jobs", "queue" => gone.clone(), "state" => s)
                    .set(0.0);
            }
        }
        for d in depths {
            for (s, v) in QUEUE_STATES
                .into_iter()
                .zip([d.ready, d.delayed, d.running, d.dead])
            {
                metrics::gauge!("aragora_queue_jobs", "queue" => d.queue.clone(), "state" => s)
                    .set(v as f64);
            }
        }
        *seen = now;
    }
    if let Ok(workers) = aragora_queue::list_workers(&state.db).await {
        let live = workers.iter().filter(|w| w.state == "running").count();
        metrics::gauge!("aragora_workers_running").set(live as f64);
    }
    if let Ok((pending, processing)) = aragora_store::explain::count_unfinished(&state.db).await {
        metrics::gauge!("aragora_explainability_batch_jobs_active", "status" => "pending")
            .set(pending as f64);
        metrics::gauge!("aragora_explainability_batch_jobs_active", "status" => "processing")
            .set(processing as f64);
    }
}

/// `aragora_webhook_circuit_breaker_state`, rendered from the database at each scrape instead of
/// being kept in the recorder: a recorder series outlives its webhook, so a disabled or deleted
/// webhook's last state (often "open") would stay exposed, and keep an alert firing, forever.
pub async fn breaker_exposition(state: &AppState) -> String {
    const NAME: &str = "aragora_webhook_circuit_breaker_state";
    let cap = state.config.webhooks.metrics_max_endpoints as u32;
    let Ok(breakers) = aragora_store::webhooks::breaker_states(&state.db, cap).await else {
        return String::new();
    };
    let mut out = format!(
        "# HELP {NAME} 0 closed, 1 open, 2 half-open, per enabled webhook (shared)\n# TYPE {NAME} gauge\n"
    );
    for (webhook_id, json) in breakers {
        let b: aragora_webhooks::BreakerState = json
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        let id = webhook_id
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        out.push_str(&format!("{NAME}{{webhook_id=\"{id}\"}} {}\n", b.gauge()));
    }
    out
}
