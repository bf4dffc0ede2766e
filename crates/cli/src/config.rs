//! Settings: flags, environment variables and an optional TOML file, in that order of precedence.
//!
//! The TOML file named by `ARAGORA_CONFIG` holds the same
//! keys as the long flags with `_` for `-` (`bind = "0.0.0.0:8080"`, `data_dir = "/var/lib/aragora"`,
//! `database_url = "postgres://…"`). Each key becomes the matching environment variable unless that
//! variable is already set, so flags > environment > file > defaults.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Folder for the SQLite database and the first-start admin token.
    #[arg(
        long,
        global = true,
        env = "ARAGORA_DATA_DIR",
        default_value = "./aragora-data"
    )]
    pub data_dir: PathBuf,
    /// postgres://… for PostgreSQL; default: SQLite in the data folder.
    #[arg(long, global = true, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Log format: text or json.
    #[arg(
        long,
        global = true,
        env = "ARAGORA_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// `--log-format`: anything else is refused at start.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Common {
    /// The database URL, creating the data folder for SQLite.
    pub fn database_url(&self) -> Result<String> {
        if let Some(url) = self.database_url.as_deref().filter(|u| !u.is_empty()) {
            return Ok(url.to_string());
        }
        ensure_data_dir(&self.data_dir)?;
        Ok(aragora_store::Db::sqlite_url_in(&self.data_dir))
    }

    /// The database URL without creating anything (`--database-url`, else SQLite in the data
    /// folder), for read-only commands.
    pub fn database_url_no_create(&self) -> String {
        match self.database_url.as_deref().filter(|u| !u.is_empty()) {
            Some(url) => url.to_string(),
            None => aragora_store::Db::sqlite_url_in(&self.data_dir),
        }
    }
}

/// The file of a `sqlite://` URL (`None` for other databases).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?;
    Some(PathBuf::from(path.split('?').next().unwrap_or(path)))
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to listen on.
    #[arg(long, env = "ARAGORA_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Run the HTTP API without background workers (scale-out: run `aragora worker` elsewhere).
    #[arg(long, env = "ARAGORA_NO_WORKERS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_workers: bool,
    /// Which background workers to run, comma-separated: `debates`, `webhook_delivery`,
    /// `batch_explainability`, `cdc` (default: all of them).
    #[arg(long, env = "ARAGORA_WORKERS", value_delimiter = ',')]
    pub workers: Vec<String>,
    /// Id of the one worker this process runs (with `--workers <kind>`), shown in
    /// `/api/workers/status`; refused while a live worker holds it (default: generated).
    #[arg(long, env = "ARAGORA_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "ARAGORA_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Require this bearer token on /metrics (default: /metrics is public).
    #[arg(long, env = "ARAGORA_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Comma-separated CIDRs webhooks may reach despite the SSRF guard (default: none).
    #[arg(long, env = "ARAGORA_WEBHOOK_ALLOW_CIDRS", default_value = "")]
    pub webhook_allow_cidrs: String,
    /// Comma-separated CIDRs a debate agent's `base_url` may reach despite the SSRF guard
    /// (default: none; e.g. 127.0.0.1/32 for a local Ollama named by URL).
    #[arg(long, env = "ARAGORA_PROVIDER_ALLOW_CIDRS", default_value = "")]
    pub provider_allow_cidrs: String,
    /// Concurrent webhook deliveries per worker process.
    #[arg(long, env = "ARAGORA_WEBHOOK_MAX_CONCURRENT", default_value_t = 50)]
    pub webhook_max_concurrent: usize,
    /// Debates explained concurrently by the batch explainability worker.
    #[arg(
        long,
        env = "ARAGORA_BATCH_MAX_CONCURRENT_DEBATES",
        default_value_t = 10
    )]
    pub batch_max_concurrent_debates: usize,
    /// Debates run concurrently by the debate worker.
    #[arg(long, env = "ARAGORA_DEBATE_MAX_CONCURRENT", default_value_t = 8)]
    pub debate_max_concurrent: usize,
    /// Seconds a running debate's job stays leased without a heartbeat: how soon a debate whose
    /// worker died resumes on another worker.
    #[arg(long, env = "ARAGORA_DEBATE_LEASE_SECS", default_value_t = 30)]
    pub debate_lease_secs: u64,
    /// Database connections (PostgreSQL) or SQLite readers.
    #[arg(long, env = "ARAGORA_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Fault testing only (docs/reliability.md): cap the SQLite file at this many pages
    /// (`PRAGMA max_page_count` on the writer) to simulate a full disk.
    #[arg(long, env = "ARAGORA_SQLITE_MAX_PAGE_COUNT", hide = true)]
    pub sqlite_max_page_count: Option<u64>,
    /// Total time for one webhook delivery attempt, in ms.
    #[arg(long, env = "ARAGORA_WEBHOOK_TIMEOUT_MS", default_value_t = 15_000)]
    pub webhook_timeout_ms: u64,
    /// Attempts per webhook delivery, the first included.
    #[arg(long, env = "ARAGORA_WEBHOOK_RETRY_MAX_ATTEMPTS", default_value_t = 11)]
    pub webhook_retry_max_attempts: u32,
    /// First retry delay cap in ms (retries use full jitter between this and the cap).
    #[arg(long, env = "ARAGORA_WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000)]
    pub webhook_retry_base_ms: u64,
    /// Growth of the retry delay cap per attempt.
    #[arg(long, env = "ARAGORA_WEBHOOK_RETRY_MULTIPLIER", default_value_t = 4.0)]
    pub webhook_retry_multiplier: f64,
    /// Longest delay between two attempts, in seconds.
    #[arg(
        long,
        env = "ARAGORA_WEBHOOK_RETRY_MAX_DELAY_SECS",
        default_value_t = 43_200
    )]
    pub webhook_retry_max_delay_secs: u64,
    /// Consecutive failures that open an endpoint's circuit breaker.
    #[arg(long, env = "ARAGORA_WEBHOOK_BREAKER_FAILURES", default_value_t = 5)]
    pub webhook_breaker_failures: u32,
    /// First open period of a breaker in ms (doubles on each re-opening, up to 1 h).
    #[arg(
        long,
        env = "ARAGORA_WEBHOOK_BREAKER_OPEN_MS",
        default_value_t = 30_000
    )]
    pub webhook_breaker_open_ms: u64,
    /// A half-open probe whose result never arrives is replaced after this many ms.
    #[arg(
        long,
        env = "ARAGORA_WEBHOOK_BREAKER_PROBE_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub webhook_breaker_probe_timeout_ms: u64,
    /// Concurrent requests to one endpoint per worker process.
    #[arg(
        long,
        env = "ARAGORA_WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT",
        default_value_t = 16
    )]
    pub webhook_max_in_flight_per_endpoint: usize,
    /// Lease of a webhook delivery job in seconds (a crashed worker's jobs run again after it).
    #[arg(long, env = "ARAGORA_WEBHOOK_LEASE_SECS", default_value_t = 30)]
    pub webhook_lease_secs: u64,
    /// Largest `data` of an event published through POST /api/v1/events, in bytes.
    #[arg(long, env = "ARAGORA_MAX_EVENT_BYTES", default_value_t = 256 * 1024)]
    pub max_event_bytes: usize,
    /// Seconds in-flight jobs get to finish on shutdown before they are released.
    #[arg(long, env = "ARAGORA_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Seconds `GET /api/v1/connectors/{id}/health` waits for the connector's source before it
    /// answers `healthy: false` with `details.source_unreachable`.
    #[arg(
        long,
        env = "ARAGORA_CDC_HEALTH_TIMEOUT_SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub cdc_health_timeout_secs: u64,
    /// Seconds a node tries (in the background) to remove a deleted connector's capture objects
    /// from its source before it gives up and removes the connector's records anyway.
    #[arg(
        long,
        env = "ARAGORA_CDC_TEARDOWN_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub cdc_teardown_timeout_secs: u64,
    /// Marketplace templates and versions each user may publish, as `<count>/<period>`
    /// (period `s`, `m`, `h`, `d`, optionally with a number: `5/10s`); `0/h` disables.
    #[arg(
        long,
        env = "ARAGORA_MARKETPLACE_PUBLISH_LIMIT",
        default_value = "30/h"
    )]
    pub marketplace_publish_limit: aragora_store::rate_limit::Limit,
    /// Marketplace ratings each user may submit (same format).
    #[arg(long, env = "ARAGORA_MARKETPLACE_RATE_LIMIT", default_value = "120/h")]
    pub marketplace_rate_limit: aragora_store::rate_limit::Limit,
    /// Marketplace reviews each user may submit (same format).
    #[arg(long, env = "ARAGORA_MARKETPLACE_REVIEW_LIMIT", default_value = "30/h")]
    pub marketplace_review_limit: aragora_store::rate_limit::Limit,
    /// Largest template graph (canonical JSON bytes) the marketplace accepts.
    #[arg(long, env = "ARAGORA_MARKETPLACE_MAX_TEMPLATE_BYTES", default_value_t = 256 * 1024)]
    pub marketplace_max_template_bytes: usize,
    /// Milliseconds a rendered marketplace list/search page may be served again to the same caller
    /// scope; this process's own marketplace writes invalidate it at once, other processes' writes
    /// show within this time. Default: 1000 on PostgreSQL (several processes may write), 60000 on
    /// SQLite (one process writes, so its invalidation is exact). 0 disables the cache.
    #[arg(long, env = "ARAGORA_MARKETPLACE_LIST_CACHE_MS")]
    pub marketplace_list_cache_ms: Option<u64>,
}

/// Worker kinds `--workers` may name (the queue workers' `kind`s, and the CDC connector runner).
pub const WORKER_KINDS: [&str; 4] = ["debates", "webhook_delivery", "batch_explainability", "cdc"];

impl ServeArgs {
    /// The worker kinds to run (all when `--workers` is not given), checked with `--worker-id`.
    pub fn worker_kinds(&self) -> Result<Vec<&'static str>> {
        let mut kinds: Vec<&'static str> = Vec::new();
        for k in self
            .workers
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
        {
            let Some(known) = WORKER_KINDS.iter().find(|w| **w == k) else {
                bail!("--workers: `{k}` is not one of {}", WORKER_KINDS.join(", "));
            };
            if !kinds.contains(known) {
                kinds.push(known);
            }
        }
        if kinds.is_empty() {
            kinds = WORKER_KINDS.to_vec();
        }
        if let Some(id) = &self.worker_id {
            if !aragora_core::ids::is_valid_external_id(id) {
                bail!("--worker-id: `{id}` must be 1–128 letters, digits, `-`, `_`, `.` or `:`");
            }
            if kinds.len() != 1 || kinds[0] == "cdc" {
                bail!(
                    "--worker-id names one worker: choose its kind with --workers \
                     (debates, webhook_delivery or batch_explainability)"
                );
            }
        }
        Ok(kinds)
    }

    /// Webhook delivery settings from the flags.
    pub fn webhook_settings(&self) -> Result<aragora_server::webhook_delivery::WebhookSettings> {
        use std::time::Duration;
        aragora_webhooks::Policy::from_env_str(&self.webhook_allow_cidrs)?;
        aragora_webhooks::Policy::from_env_str(&self.provider_allow_cidrs).map_err(|e| {
            anyhow::anyhow!(
                "--provider-allow-cidrs: {:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address",
                e.entry
            )
        })?;
        if !(self.webhook_retry_multiplier.is_finite() && self.webhook_retry_multiplier >= 1.0) {
            bail!("--webhook-retry-multiplier must be a number >= 1");
        }
        if self.webhook_lease_secs * 1000 <= self.webhook_timeout_ms {
            bail!("--webhook-lease-secs must be longer than --webhook-timeout-ms");
        }
        let mut s = aragora_server::webhook_delivery::WebhookSettings::default();
        s.timeout = Duration::from_millis(self.webhook_timeout_ms.max(100));
        s.connect_timeout = s.connect_timeout.min(s.timeout);
        s.retry.max_attempts = self.webhook_retry_max_attempts.max(1);
        s.retry.base = Duration::from_millis(self.webhook_retry_base_ms.max(1));
        s.retry.multiplier = self.webhook_retry_multiplier;
        s.retry.max_delay = Duration::from_secs(self.webhook_retry_max_delay_secs.max(1));
        s.breaker.consecutive_failures = self.webhook_breaker_failures.max(1);
        s.breaker.open_base = Duration::from_millis(self.webhook_breaker_open_ms.max(1));
        s.breaker.probe_timeout =
            Duration::from_millis(self.webhook_breaker_probe_timeout_ms.max(1));
        s.half_open_recheck = s.half_open_recheck.min(s.breaker.probe_timeout);
        s.max_in_flight_per_endpoint = self.webhook_max_in_flight_per_endpoint.max(1);
        s.lease = Duration::from_secs(self.webhook_lease_secs.max(1));
        s.max_event_bytes = self.max_event_bytes;
        Ok(s)
    }
}

pub fn ensure_data_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data folder {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// Variables read outside clap that a config file key may also set: the client commands' server
/// URL and token (`url`, `token`, and their `ARAGORA_API_*` spellings) and the CDC lease.
const EXTRA_CONFIG_VARS: [&str; 5] = [
    "ARAGORA_URL",
    "ARAGORA_TOKEN",
    "ARAGORA_API_URL",
    "ARAGORA_API_TOKEN",
    "ARAGORA_CDC_LEASE_SECS",
];

/// Every environment variable a flag of `cmd` (or of its subcommands) reads.
fn env_vars_of(cmd: &clap::Command, out: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        if let Some(var) = arg.get_env().and_then(|v| v.to_str()) {
            out.push(var.to_string());
        }
    }
    for sub in cmd.get_subcommands() {
        env_vars_of(sub, out);
    }
}

/// Loads the TOML file named by `ARAGORA_CONFIG`, if any, into environment variables (see the
/// module doc). A key that names no setting of `cmd` (a typo such as `bnd`) is refused.
pub fn apply_config_file(cmd: &clap::Command) -> Result<()> {
    let Ok(path) = std::env::var("ARAGORA_CONFIG") else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {path}"))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("invalid TOML in {path}"))?;
    let mut known: Vec<String> = EXTRA_CONFIG_VARS.iter().map(|v| v.to_string()).collect();
    env_vars_of(cmd, &mut known);
    for (key, value) in table {
        let var = match key.as_str() {
            "database_url" => "DATABASE_URL".to_string(),
            k if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                format!("ARAGORA_{}", k.to_uppercase())
            }
            k => bail!("{path}: invalid key `{k}`"),
        };
        if !known.contains(&var) {
            bail!(
                "{path}: unknown key `{key}` (keys are the long flag names with `_` for `-`, \
                 e.g. `bind`, `data_dir`, `database_url`)"
            );
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!("{path}: `{key}` must be a string, integer or boolean, not {other}"),
        };
        if std::env::var_os(&var).is_none() {
            // SAFETY: called first thing in main, before any other thread exists.
            unsafe { std::env::set_var(var, value) };
        }
    }
    Ok(())
}

pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colour only for a terminal: piped logs (the SDK's `cdc run` child, log collectors) stay plain.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if format == LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Hides the password in a database URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
