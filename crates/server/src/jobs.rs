//! The background workers `aragora serve` and `aragora worker` run: one entry per job queue.

use crate::state::AppState;
use aragora_queue::{JobHandler, WorkerConfig};
use std::sync::Arc;

/// Worker concurrency settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub webhook_max_concurrent: usize,
    pub batch_max_concurrent_debates: usize,
    pub debate_max_concurrent: usize,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            webhook_max_concurrent: 50,
            batch_max_concurrent_debates: 10,
            debate_max_concurrent: 8,
        }
    }
}

/// Every worker of every capability, ready to spawn.
pub fn all(
    state: &AppState,
    settings: &WorkerSettings,
) -> Vec<(WorkerConfig, Arc<dyn JobHandler>)> {
    let mut workers: Vec<(WorkerConfig, Arc<dyn JobHandler>)> = Vec::new();
    let mut webhooks = WorkerConfig::new(
        "webhook_delivery",
        aragora_store::webhooks::QUEUE,
        settings.webhook_max_concurrent,
    );
    webhooks.lease = state.config.webhooks.lease;
    workers.push((
        webhooks,
        Arc::new(crate::webhook_delivery::WebhookDeliveryWorker::new(
            state.webhooks.clone(),
        )),
    ));
    workers
}
