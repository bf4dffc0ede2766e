//! The background workers `aragora serve` and `aragora worker` run: one entry per job queue.

use crate::state::AppState;
use aragora_queue::{JobHandler, WorkerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Worker concurrency settings.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub webhook_max_concurrent: usize,
    pub batch_max_concurrent_debates: usize,
    pub debate_max_concurrent: usize,
    /// Lease of a running debate job: how soon a debate whose worker died is resumed elsewhere.
    pub debate_lease: Duration,
    /// Cancelled when the process shuts down, so long jobs can stop at a safe point.
    pub shutdown: CancellationToken,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            webhook_max_concurrent: 50,
            batch_max_concurrent_debates: 10,
            debate_max_concurrent: 8,
            debate_lease: Duration::from_secs(30),
            shutdown: CancellationToken::new(),
        }
    }
}

/// Every worker of every capability, ready to spawn.
///
/// Also starts the sweeps that end debates and explainability batches whose queue job died on the
/// current runtime.
pub fn all(
    state: &AppState,
    settings: &WorkerSettings,
) -> Vec<(WorkerConfig, Arc<dyn JobHandler>)> {
    let mut workers: Vec<(WorkerConfig, Arc<dyn JobHandler>)> = Vec::new();

    let mut debates = WorkerConfig::new(
        "debates",
        crate::workers::debates::QUEUE,
        settings.debate_max_concurrent,
    );
    debates.lease = settings.debate_lease.max(Duration::from_secs(1));
    workers.push((
        debates,
        Arc::new(crate::workers::debates::DebateWorker::new(
            state.db.clone(),
            state.queue.clone(),
            providers(&state.config.provider_allow_cidrs),
        )),
    ));
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(crate::workers::debates::sweep_loop(
            state.db.clone(),
            Duration::from_secs(60),
            settings.shutdown.clone(),
        ));
        rt.spawn(crate::workers::explain_batch::sweep_loop(
            state.db.clone(),
            Duration::from_secs(60),
            settings.shutdown.clone(),
        ));
    }

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

    use crate::workers::explain_batch::BatchExplainabilityWorker;
    workers.push((
        BatchExplainabilityWorker::config(),
        Arc::new(BatchExplainabilityWorker::new(
            state,
            settings.batch_max_concurrent_debates,
            settings.shutdown.clone(),
        )),
    ));
    workers
}

/// Long-running services that run beside the workers (`serve` without `--no-workers`, and
/// `worker`); each ends when `shutdown` fires.
pub fn services(
    state: &AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![crate::cdc::spawn(state.clone(), shutdown)]
}

/// The model providers, a request's `base_url` held to the SSRF policy webhooks use (public
/// addresses only, plus `--provider-allow-cidrs`): a caller must not make the server call its
/// private network and read the answer back in an agent's error.
fn providers(allow_cidrs: &str) -> aragora_debate::ProviderRegistry {
    // Checked at start-up (`aragora serve`); an unreadable list here allows nothing extra.
    let policy = aragora_webhooks::Policy::from_env_str(allow_cidrs).unwrap_or_default();
    let guard: aragora_debate::AddressGuard =
        std::sync::Arc::new(move |ip| policy.check_ip(ip).map_err(|r| r.as_str().to_string()));
    aragora_debate::ProviderRegistry::guarded(
        aragora_debate::HttpSettings::default(),
        aragora_debate::KeySource::process_env(),
        guard,
    )
}
