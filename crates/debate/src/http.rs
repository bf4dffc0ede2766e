//! What the HTTP providers share: settings, API-key lookup, URL checks, and one POST with
//! per-attempt timeout and exponential backoff (backon) on 429, 5xx, timeouts and broken
//! connections. 4xx (auth above all) is never retried.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::provider::ProviderError;

/// Largest response body read from a model API.
const MAX_BODY_BYTES: usize = 4 << 20;
/// How much of an error body is kept in the error message.
const ERROR_SNIPPET_CHARS: usize = 300;

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Timeout of one attempt (connect + request + whole response).
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff delay; doubles each retry (with jitter) up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` on 429/503 is honoured up to this long.
    pub max_retry_after: Duration,
    /// `max_tokens` sent with every request.
    pub max_tokens: u32,
    pub temperature: Option<f32>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(90),
            max_retries: 3,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            max_tokens: 1024,
            temperature: Some(0.7),
        }
    }
}

impl HttpSettings {
    /// The longest one agent call can legitimately take: every attempt timing out plus the
    /// longest sleeps between them, plus slack. The engine uses it as a backstop deadline.
    pub fn call_deadline(&self) -> Duration {
        let retries = self.max_retries;
        let sleep = self.max_backoff.max(self.max_retry_after);
        self.timeout * (retries + 1) + sleep * retries + Duration::from_secs(5)
    }
}

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Looks API keys up by environment-variable name.
#[derive(Clone)]
pub struct KeySource(Arc<Lookup>);

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySource")
    }
}

impl KeySource {
    /// The process environment (empty values count as unset).
    pub fn process_env() -> Self {
        KeySource(Arc::new(|name| {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }))
    }

    /// A fixed map (tests, or keys fetched from a secret store).
    pub fn from_map(map: HashMap<String, String>) -> Self {
        KeySource(Arc::new(move |name| map.get(name).cloned()))
    }

    pub fn from_fn(f: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        KeySource(Arc::new(f))
    }

    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }
}

/// Whether a caller-chosen `base_url` may reach an address: the server's SSRF policy (the
/// webhooks' one, with its own allowlist). `Err` carries the reason.
pub type AddressGuard = Arc<dyn Fn(IpAddr) -> Result<(), String> + Send + Sync>;

/// The HTTP clients of the providers: no redirects (a model API never needs one), no proxy from
/// the environment (DESIGN.md §4). A `base_url` named in a request is the caller's choice, so
/// with a guard it may only reach addresses the guard allows — IP literals are checked before
/// the request, names when they resolve (every address they resolve to) — while the built-in
/// endpoints (the operator's: api.openai.com, a local Ollama …) use the plain client.
#[derive(Clone)]
pub struct Egress {
    trusted: reqwest::Client,
    guarded: Option<(reqwest::Client, AddressGuard)>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("guarded", &self.guarded.is_some())
            .finish()
    }
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("aragora/", env!("CARGO_PKG_VERSION")))
}

/// Resolves names and refuses any whose addresses the guard does not allow.
struct GuardedDns(AddressGuard);

impl reqwest::dns::Resolve for GuardedDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for a in &addrs {
                guard(a.ip()).map_err(|reason| {
                    Box::<dyn std::error::Error + Send + Sync>::from(format!(
                        "{host} resolves to an address not allowed for a base_url ({reason})"
                    ))
                })?;
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Egress {
    /// Without a guard every `base_url` is dialled as given (library use, tests).
    pub fn new(guard: Option<AddressGuard>) -> Egress {
        let trusted = builder().build().unwrap_or_default();
        let guarded = guard.map(|g| {
            let client = builder()
                .dns_resolver(Arc::new(GuardedDns(g.clone())))
                .build()
                .unwrap_or_default();
            (client, g)
        });
        Egress { trusted, guarded }
    }

    /// The client for `url`: `caller_chosen` URLs go through the guard.
    pub(crate) fn client_for(
        &self,
        url: &str,
        caller_chosen: bool,
    ) -> Result<&reqwest::Client, ProviderError> {
        let Some((client, guard)) = self.guarded.as_ref().filter(|_| caller_chosen) else {
            return Ok(&self.trusted);
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ProviderError::Config(format!("base_url: {e}")))?;
        // The parser has already normalised numeric spellings (`2130706433` → 127.0.0.1).
        let literal = parsed
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some(ip) = literal {
            guard(ip).map_err(|reason| {
                ProviderError::Config(format!(
                    "base_url: {ip} is not an address a base_url may reach ({reason})"
                ))
            })?;
        }
        Ok(client)
    }
}

/// `http(s)://host[:port][/path]`, no credentials, no query.
pub fn check_base_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, got '{}'",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry credentials; use api_key_env".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    Ok(())
}

/// Only variables named `*_API_KEY` may be sent as keys, so a caller choosing `base_url` cannot
/// make the server send it `DATABASE_URL` or another secret.
pub fn check_key_env_name(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !well_formed {
        return Err(format!(
            "'{name}' is not an environment variable name (A-Z, 0-9, _)"
        ));
    }
    if !name.ends_with("_API_KEY") {
        return Err(format!(
            "'{name}' must end in _API_KEY (only API-key variables may be sent to a model API)"
        ));
    }
    Ok(())
}

/// `base` + `suffix` unless `base` already ends with it.
pub(crate) fn endpoint(base: &str, suffix: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(suffix) {
        base.to_string()
    } else {
        format!("{base}{suffix}")
    }
}

struct AttemptError {
    error: ProviderError,
    retry_after: Option<Duration>,
}

/// POST `body` as JSON and return the JSON response, retrying as the module doc says.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    settings: &HttpSettings,
    url: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Value, ProviderError> {
    let attempts = AtomicU32::new(0);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(settings.min_backoff)
        .with_max_delay(settings.max_backoff)
        .with_max_times(settings.max_retries as usize)
        .with_jitter();
    let max_retry_after = settings.max_retry_after;
    let result = (|| async {
        attempts.fetch_add(1, Ordering::Relaxed);
        attempt(client, settings.timeout, url, headers, body).await
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    .when(|e: &AttemptError| e.error.is_retryable())
    .adjust(move |e: &AttemptError, planned: Option<Duration>| {
        // Honour the server's Retry-After (bounded), but only while retries remain.
        match (planned, e.retry_after) {
            (Some(_), Some(after)) => Some(after.min(max_retry_after)),
            (planned, _) => planned,
        }
    })
    .notify(|e: &AttemptError, wait: Duration| {
        tracing::debug!(error = %e.error, wait_ms = wait.as_millis() as u64, url, "retrying model call");
    })
    .await;
    result.map_err(|e| {
        let n = attempts.load(Ordering::Relaxed);
        if n > 1 {
            ProviderError::Exhausted {
                attempts: n,
                last: Box::new(e.error),
            }
        } else {
            e.error
        }
    })
}

async fn attempt(
    client: &reqwest::Client,
    timeout: Duration,
    url: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Value, AttemptError> {
    let plain = |error| AttemptError {
        error,
        retry_after: None,
    };
    let timeout_ms = timeout.as_millis() as u64;
    let send = client
        .post(url)
        .headers(headers.clone())
        .timeout(timeout)
        .json(body)
        .send();
    // reqwest's per-request timeout covers connecting, sending and reading the whole body.
    let response = send.await.map_err(|e| plain(classify(e, timeout_ms)))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = read_capped(response)
        .await
        .map_err(|e| plain(classify(e, timeout_ms)))?;
    if !status.is_success() {
        let message = error_message(&bytes);
        let code = status.as_u16();
        let error = if code == 401 || code == 403 {
            ProviderError::Auth {
                status: code,
                message,
            }
        } else {
            ProviderError::Http {
                status: code,
                message,
            }
        };
        return Err(AttemptError { error, retry_after });
    }
    let bytes = bytes.ok_or_else(|| {
        plain(ProviderError::Unusable(format!(
            "response body larger than {MAX_BODY_BYTES} bytes"
        )))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        plain(ProviderError::Unusable(format!(
            "response body is not JSON ({e}): {}",
            snippet(&String::from_utf8_lossy(&bytes))
        )))
    })
}

/// The body, or `None` when it exceeds [`MAX_BODY_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > MAX_BODY_BYTES {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

fn classify(e: reqwest::Error, timeout_ms: u64) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout(timeout_ms)
    } else if e.is_builder() {
        ProviderError::Config(e.to_string())
    } else {
        // Connection refused/reset, TLS, broken bodies: worth another attempt.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        ProviderError::Connect(msg)
    }
}

/// The API's own error message when the body has one (`{"error": {"message": …}}`), else a
/// snippet of the body.
fn error_message(bytes: &Option<Vec<u8>>) -> String {
    let Some(bytes) = bytes else {
        return "(error body too large)".into();
    };
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        let msg = v
            .pointer("/error/message")
            .or_else(|| v.pointer("/message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()));
        if let Some(Value::String(m)) = msg {
            return snippet(m);
        }
    }
    snippet(&String::from_utf8_lossy(bytes))
}

pub(crate) fn snippet(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(ERROR_SNIPPET_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert!(check_base_url("https://api.openai.com/v1").is_ok());
        assert!(check_base_url("http://127.0.0.1:11434/v1").is_ok());
        assert!(check_base_url("file:///etc/passwd").is_err());
        assert!(check_base_url("https://user:pw@host/v1").is_err());
        assert!(check_base_url("not a url").is_err());
        assert!(check_base_url("https://host/v1?key=x").is_err());
    }

    #[test]
    fn only_api_key_variables_may_be_used() {
        assert!(check_key_env_name("OPENAI_API_KEY").is_ok());
        assert!(check_key_env_name("DATABASE_URL").is_err());
        assert!(check_key_env_name("openai_api_key").is_err());
        assert!(check_key_env_name("1_API_KEY").is_err());
        assert!(check_key_env_name("").is_err());
    }

    #[test]
    fn endpoints_append_the_path_once() {
        assert_eq!(
            endpoint("http://h/v1", "/chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert_eq!(
            endpoint("http://h/v1/", "/chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert_eq!(
            endpoint("http://h/v1/chat/completions", "/chat/completions"),
            "http://h/v1/chat/completions"
        );
    }

    #[test]
    fn retryable_errors() {
        assert!(
            ProviderError::Http {
                status: 429,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            ProviderError::Http {
                status: 503,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::Http {
                status: 400,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ProviderError::Auth {
                status: 401,
                message: String::new()
            }
            .is_retryable()
        );
        assert!(ProviderError::Timeout(5).is_retryable());
        assert!(!ProviderError::Unusable(String::new()).is_retryable());
    }

    #[test]
    fn call_deadline_covers_every_attempt() {
        let s = HttpSettings::default();
        assert!(s.call_deadline() > s.timeout * (s.max_retries + 1));
    }
}
