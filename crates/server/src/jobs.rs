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
    _state: &AppState,
    _settings: &WorkerSettings,
) -> Vec<(WorkerConfig, Arc<dyn JobHandler>)> {
    Vec::new()
}

/// Long-running services that run beside the workers (`serve` without `--no-workers`, and
/// `worker`); each ends when `shutdown` fires.
pub fn services(
    state: &AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![crate::cdc::spawn(state.clone(), shutdown)]
}
