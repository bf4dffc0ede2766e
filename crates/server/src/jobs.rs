//! The background workers `aragora serve` and `aragora worker` run: one entry per job queue.

use crate::state::AppState;
use aragora_queue::{JobHandler, WorkerConfig};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Worker concurrency settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub webhook_max_concurrent: usize,
    pub batch_max_concurrent_debates: usize,
    pub debate_max_concurrent: usize,
    /// Cancelled when the process shuts down, so long jobs can stop at a safe point.
    pub shutdown: CancellationToken,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            webhook_max_concurrent: 50,
            batch_max_concurrent_debates: 10,
            debate_max_concurrent: 8,
            shutdown: CancellationToken::new(),
        }
    }
}

/// Every worker of every capability, ready to spawn.
pub fn all(
    state: &AppState,
    settings: &WorkerSettings,
) -> Vec<(WorkerConfig, Arc<dyn JobHandler>)> {
    use crate::workers::explain_batch::BatchExplainabilityWorker;
    vec![(
        BatchExplainabilityWorker::config(),
        Arc::new(BatchExplainabilityWorker::new(
            state,
            settings.batch_max_concurrent_debates,
            settings.shutdown.clone(),
        )),
    )]
}
