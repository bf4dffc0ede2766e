//! Server settings (filled by the CLI from flags, environment and the optional TOML file).

use crate::webhook_delivery::WebhookSettings;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Comma-separated CIDRs webhook URLs may reach despite the SSRF policy (default none).
    pub webhook_allow_cidrs: String,
    /// Comma-separated CIDRs a debate agent's `base_url` may reach despite the SSRF guard
    /// (default: none, public addresses only).
    pub provider_allow_cidrs: String,
    /// Webhook delivery tuning (retries, breaker, timeouts, caps).
    pub webhooks: WebhookSettings,
    /// Marketplace limits.
    pub marketplace: MarketplaceConfig,
    /// Connector (CDC) time limits.
    pub cdc: CdcConfig,
}

/// Connector settings: how long the API and the connector supervisor wait for a source.
#[derive(Debug, Clone)]
pub struct CdcConfig {
    /// How long `GET /api/v1/connectors/{id}/health` waits for the source's answer before it
    /// reports `healthy: false` with `details.source_unreachable` (default 5 s).
    pub health_probe_timeout: Duration,
    /// How long removing a deleted connector's capture objects from its source may take (in the
    /// background) before the supervisor gives up and removes the connector's records anyway
    /// (default 30 s).
    pub teardown_timeout: Duration,
}

impl Default for CdcConfig {
    fn default() -> Self {
        CdcConfig {
            health_probe_timeout: Duration::from_secs(5),
            teardown_timeout: Duration::from_secs(30),
        }
    }
}

/// Marketplace settings: per-user rate limits and template size limits.
#[derive(Debug, Clone)]
pub struct MarketplaceConfig {
    /// Templates and versions published per user.
    pub publish_limit: aragora_store::rate_limit::Limit,
    /// Ratings submitted per user.
    pub rate_limit: aragora_store::rate_limit::Limit,
    /// Reviews submitted per user.
    pub review_limit: aragora_store::rate_limit::Limit,
    pub template_limits: aragora_marketplace::Limits,
    /// How long a rendered list/search page may be served again (`list_cache`); zero disables.
    pub list_cache_ttl: Duration,
}

impl Default for MarketplaceConfig {
    fn default() -> Self {
        use aragora_store::rate_limit::Limit;
        MarketplaceConfig {
            publish_limit: Limit::new(30, Duration::from_secs(3600)),
            rate_limit: Limit::new(120, Duration::from_secs(3600)),
            review_limit: Limit::new(30, Duration::from_secs(3600)),
            template_limits: aragora_marketplace::Limits::default(),
            list_cache_ttl: Duration::from_millis(1000),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 1024 * 1024,
            metrics_token: None,
            request_timeout: Duration::from_secs(30),
            webhook_allow_cidrs: String::new(),
            provider_allow_cidrs: String::new(),
            webhooks: WebhookSettings::default(),
            marketplace: MarketplaceConfig::default(),
            cdc: CdcConfig::default(),
        }
    }
}
