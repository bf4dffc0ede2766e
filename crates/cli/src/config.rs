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
        default_value = "text"
    )]
    pub log_format: String,
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
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: Common,
    /// Address to listen on.
    #[arg(long, env = "ARAGORA_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Run the HTTP API without background workers (scale-out: run `aragora worker` elsewhere).
    #[arg(long, env = "ARAGORA_NO_WORKERS")]
    pub no_workers: bool,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "ARAGORA_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Require this bearer token on /metrics (default: /metrics is public).
    #[arg(long, env = "ARAGORA_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Comma-separated CIDRs webhooks may reach despite the SSRF guard (default: none).
    #[arg(long, env = "ARAGORA_WEBHOOK_ALLOW_CIDRS", default_value = "")]
    pub webhook_allow_cidrs: String,
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
    /// Database connections (PostgreSQL) or SQLite readers.
    #[arg(long, env = "ARAGORA_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// Seconds in-flight jobs get to finish on shutdown before they are released.
    #[arg(long, env = "ARAGORA_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
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

/// Loads the TOML file named by `ARAGORA_CONFIG`, if any, into environment variables (see the
/// module doc).
pub fn apply_config_file() -> Result<()> {
    let Ok(path) = std::env::var("ARAGORA_CONFIG") else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {path}"))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("invalid TOML in {path}"))?;
    for (key, value) in table {
        let var = match key.as_str() {
            "database_url" => "DATABASE_URL".to_string(),
            k if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                format!("ARAGORA_{}", k.to_uppercase())
            }
            k => bail!("{path}: invalid key `{k}`"),
        };
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

pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
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
