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
    if let Ok(workers) = aragora_queue::list_workers(&state.db).await {
        let live = workers.iter().filter(|w| w.state == "running").count();
        metrics::gauge!("aragora_workers_running").set(live as f64);
    }
    if let Ok(active) = aragora_store::explain::count_active(&state.db).await {
        metrics::gauge!("aragora_explainability_batch_jobs_active").set(active as f64);
    }
}
