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
    /// Webhook delivery tuning (retries, breaker, timeouts, caps).
    pub webhooks: WebhookSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 1024 * 1024,
            metrics_token: None,
            request_timeout: Duration::from_secs(30),
            webhook_allow_cidrs: String::new(),
            webhooks: WebhookSettings::default(),
        }
    }
}
