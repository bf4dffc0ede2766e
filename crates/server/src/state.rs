//! Shared application state handed to every handler.

use crate::config::ServerConfig;
use crate::webhook_delivery::WebhookEngine;
use aragora_core::auth::Principal;
use aragora_queue::Queue;
use aragora_store::Db;
use dashmap::DashMap;
use metrics_exporter_prometheus::PrometheusHandle;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: Db,
    pub queue: Queue,
    pub config: ServerConfig,
    pub metrics: Option<PrometheusHandle>,
    /// token hash → (principal, verified at). Only a cache: the database is the authority.
    pub token_cache: DashMap<String, (Principal, Instant)>,
    /// Webhook delivery: guarded sender, per-endpoint slots, attempt recorder.
    pub webhooks: Arc<WebhookEngine>,
    /// Wakes this node's connector supervisor after an API change (other nodes see it on their
    /// next tick).
    pub cdc_wake: tokio::sync::Notify,
    /// Rendered marketplace list/search pages (see `list_cache`).
    pub marketplace_lists: Arc<crate::list_cache::ListCache>,
}

impl AppState {
    pub fn new(
        db: Db,
        queue: Queue,
        config: ServerConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        let webhooks = Arc::new(WebhookEngine::new(
            db.clone(),
            queue.clone(),
            &config.webhook_allow_cidrs,
            config.webhooks.clone(),
        ));
        let marketplace_lists = Arc::new(crate::list_cache::ListCache::new(
            config.marketplace.list_cache_ttl,
        ));
        AppState(Arc::new(Inner {
            marketplace_lists,
            webhooks,
            db,
            queue,
            config,
            metrics,
            token_cache: DashMap::new(),
            cdc_wake: tokio::sync::Notify::new(),
        }))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
