//! Gauges computed from the database at scrape time, so every node reports the shared truth
//! (queue depths, worker counts, …) rather than its own memory.

use crate::state::AppState;

pub async fn refresh_gauges(state: &AppState) {
    if let Ok(depths) = state.queue.depths().await {
        for d in depths {
            for (s, v) in [
                ("ready", d.ready),
                ("delayed", d.delayed),
                ("running", d.running),
                ("dead", d.dead),
            ] {
                metrics::gauge!("aragora_queue_jobs", "queue" => d.queue.clone(), "state" => s)
                    .set(v as f64);
            }
        }
    }
    let cap = state.config.webhooks.metrics_max_endpoints as u32;
    if let Ok(breakers) = aragora_store::webhooks::breaker_states(&state.db, cap).await {
        for (webhook_id, json) in breakers {
            let b: aragora_webhooks::BreakerState = serde_json::from_str(&json).unwrap_or_default();
            metrics::gauge!("aragora_webhook_circuit_breaker_state", "webhook_id" => webhook_id)
                .set(b.gauge() as f64);
        }
    }
    if let Ok(workers) = aragora_queue::list_workers(&state.db).await {
        let live = workers.iter().filter(|w| w.state == "running").count();
        metrics::gauge!("aragora_workers_running").set(live as f64);
    }
}
