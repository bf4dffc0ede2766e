//! The guarded HTTP sender: one delivery attempt, SSRF-checked at send time (DESIGN.md §6).
//!
//! Per attempt: the URL is validated again, the host is resolved once and every address vetted
//! (ANY refused address refuses the attempt), and the connection may only dial vetted addresses:
//! the HTTP client's DNS hook returns the addresses this attempt just vetted, and vets on its own
//! if it ever has to resolve (so reconnects are covered too). IP-literal hosts are vetted by
//! [`validate_url`] and dialled as written. Redirects are never followed (a 3xx is a failed
//! attempt), proxies from the environment are ignored, nothing is decompressed, and the response
//! body is read while streaming only up to `max_response_body` bytes, all under one total timeout.
//!
//! Outcome rules (Svix semantics): 2xx = [`Outcome::Success`]; 410 = [`Outcome::Gone`] (disable
//! the endpoint); every other status, timeouts, DNS, connect and TLS errors = [`Outcome::Retry`]
//! (other 4xx included, so a receiver that fixes its secret or route gets the backlog); a
//! destination refused by the SSRF policy at send time = [`Outcome::Failed`] (no retry, nothing
//! was dialled).
//!
//! Oversized bodies: the outcome comes from the status line alone. A 2xx whose body exceeds the
//! cap is still a success (the receiver acknowledged; retrying would only duplicate it): the
//! prefix is kept, `body_truncated` is set and the connection is dropped unread. The same holds
//! when the body is still dripping at the total timeout. `ErrorClass::BodyTooLarge` is reserved
//! for a response *head* larger than the HTTP parser accepts.

use crate::headers::USER_AGENT;
use crate::resolve::{Resolve, SystemResolver, VetError, resolve_and_vet};
use crate::retry::parse_retry_after;
use crate::ssrf::{BlockReason, HostKind, Policy, SsrfError, validate_url};
use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::time::timeout_at;

/// Sender settings.
#[derive(Clone)]
pub struct SenderConfig {
    /// Total time for one attempt: resolution, connect, TLS, request, response head and body.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Response body bytes kept (and read) per attempt.
    pub max_response_body: usize,
    /// Response headers kept per attempt (values cut to 512 bytes).
    pub max_response_headers: usize,
    pub policy: Policy,
    pub resolver: Arc<dyn Resolve>,
    /// Client default User-Agent; [`crate::headers::build_headers`] sets the same per request.
    pub user_agent: String,
    /// Idle keep-alive connections kept per host (connections are only ever to vetted addresses).
    pub pool_max_idle_per_host: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_response_body: 1024,
            max_response_headers: 32,
            policy: Policy::default(),
            resolver: Arc::new(SystemResolver),
            user_agent: USER_AGENT.to_string(),
            pool_max_idle_per_host: 32,
        }
    }
}

impl std::fmt::Debug for SenderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderConfig")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_response_body", &self.max_response_body)
            .field("max_response_headers", &self.max_response_headers)
            .field("policy", &self.policy)
            .field("user_agent", &self.user_agent)
            .finish_non_exhaustive()
    }
}

/// One attempt to send: the exact body bytes and the headers signed over them.
#[derive(Debug, Clone)]
pub struct DeliveryRequest {
    pub url: String,
    pub body: Bytes,
    pub headers: HeaderMap,
}

/// Receipt error classes (DESIGN.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Dns,
    Blocked,
    Connect,
    Tls,
    Timeout,
    Http,
    BodyTooLarge,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Dns => "dns",
            ErrorClass::Blocked => "blocked",
            ErrorClass::Connect => "connect",
            ErrorClass::Tls => "tls",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Http => "http",
            ErrorClass::BodyTooLarge => "body_too_large",
        }
    }
}

/// What the worker should do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx: delivered.
    Success,
    /// Schedule another attempt (honour [`Attempt::retry_after`] via the retry policy).
    Retry,
    /// 410 Gone: stop and disable the endpoint.
    Gone,
    /// Refused before dialling (SSRF policy or an invalid URL): stop, do not retry.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retry => "retry",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
        }
    }

    /// Should the endpoint's circuit breaker count this as a failure? Refusals that dialled
    /// nothing say nothing about the endpoint's health and are not counted.
    pub fn breaker_failure(self) -> bool {
        matches!(self, Outcome::Retry | Outcome::Gone)
    }
}

/// The record of one attempt: everything a receipt needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub error_class: Option<ErrorClass>,
    /// Short, safe description of the error (never names a refused address).
    pub error_message: Option<String>,
    /// The address the connection went to (when known).
    pub dialled: Option<SocketAddr>,
    /// UTC ms when the attempt started.
    pub started_at_ms: i64,
    pub duration_ms: u64,
    /// First `max_response_headers` headers, values cut to 512 bytes.
    pub response_headers: Vec<(String, String)>,
    /// First `max_response_body` bytes of the body, as lossy UTF-8.
    pub response_body_prefix: String,
    /// The body was longer than the cap (or still arriving at the timeout) and was not read on.
    pub body_truncated: bool,
    /// Parsed `Retry-After`, if the response had one.
    pub retry_after: Option<Duration>,
}

impl Attempt {
    fn new(started_at_ms: i64) -> Self {
        Attempt {
            outcome: Outcome::Retry,
            status_code: None,
            error_class: None,
            error_message: None,
            dialled: None,
            started_at_ms,
            duration_ms: 0,
            response_headers: Vec::new(),
            response_body_prefix: String::new(),
            body_truncated: false,
            retry_after: None,
        }
    }

    fn fail(&mut self, class: ErrorClass, outcome: Outcome, message: impl Into<String>) {
        self.error_class = Some(class);
        self.outcome = outcome;
        let mut m: String = message.into();
        if m.len() > 256 {
            let mut cut = 256;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
        }
        self.error_message = Some(m);
    }

    pub fn is_success(&self) -> bool {
        self.outcome == Outcome::Success
    }
}

const BLOCKED_MESSAGE: &str = "destination is not allowed";

/// Raised inside the HTTP client's DNS hook; found again by walking the error's sources.
#[derive(Debug, thiserror::Error)]
enum DialRefused {
    #[error("destination is not allowed")]
    Blocked(BlockReason),
    #[error("name resolution failed")]
    Dns,
}

/// Upper bound on remembered host → vetted-address entries.
const MAX_PINS: usize = 10_000;

/// The HTTP client's resolver: hands out the addresses the current attempt vetted, and never
/// returns an unvetted address.
struct PinnedDns {
    pins: Mutex<HashMap<String, Arc<[SocketAddr]>>>,
    policy: Policy,
    resolver: Arc<dyn Resolve>,
}

impl PinnedDns {
    fn pin(&self, host: &str, addrs: Arc<[SocketAddr]>) {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if pins.len() >= MAX_PINS && !pins.contains_key(host) {
            pins.clear();
        }
        pins.insert(host.to_string(), addrs);
    }
}

impl reqwest::dns::Resolve for PinnedDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let pinned = self
            .pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host)
            .cloned();
        let policy = self.policy.clone();
        let resolver = self.resolver.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match pinned {
                Some(a) => a.to_vec(),
                None => match resolve_and_vet(resolver.as_ref(), &host, 0, &policy).await {
                    Ok(a) => a,
                    Err(VetError::Blocked(r)) => return Err(Box::new(DialRefused::Blocked(r)) as _),
                    Err(VetError::Dns(_)) => return Err(Box::new(DialRefused::Dns) as _),
                },
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

struct Inner {
    client: reqwest::Client,
    cfg: SenderConfig,
    dns: Arc<PinnedDns>,
}

/// The guarded sender. Cheap to clone; share one per process (it pools connections).
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("cfg", &self.inner.cfg)
            .finish()
    }
}

impl Sender {
    pub fn new(cfg: SenderConfig) -> Result<Sender, aragora_core::Error> {
        let dns = Arc::new(PinnedDns {
            pins: Mutex::new(HashMap::new()),
            policy: cfg.policy.clone(),
            resolver: cfg.resolver.clone(),
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd()
            .http1_only()
            .connect_timeout(cfg.connect_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(cfg.user_agent.clone())
            .dns_resolver(dns.clone())
            .build()
            .map_err(|e| aragora_core::Error::internal(format!("webhook http client: {e}")))?;
        Ok(Sender {
            inner: Arc::new(Inner { client, cfg, dns }),
        })
    }

    pub fn config(&self) -> &SenderConfig {
        &self.inner.cfg
    }

    /// Sends one attempt. Never panics and never returns an error: every failure is an
    /// [`Attempt`] with an [`ErrorClass`] and an [`Outcome`].
    pub async fn send(&self, req: DeliveryRequest) -> Attempt {
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started + self.inner.cfg.timeout);
        let mut a = Attempt::new(aragora_core::time::now_ms());
        self.send_inner(req, deadline, &mut a).await;
        a.duration_ms = started.elapsed().as_millis() as u64;
        a
    }

    async fn send_inner(
        &self,
        req: DeliveryRequest,
        deadline: tokio::time::Instant,
        a: &mut Attempt,
    ) {
        let cfg = &self.inner.cfg;
        let v = match validate_url(&req.url, &cfg.policy) {
            Ok(v) => v,
            Err(SsrfError::Blocked(_)) => {
                return a.fail(ErrorClass::Blocked, Outcome::Failed, BLOCKED_MESSAGE);
            }
            Err(e @ SsrfError::Invalid(_)) => {
                return a.fail(ErrorClass::Blocked, Outcome::Failed, e.to_string());
            }
        };
        let addrs: Arc<[SocketAddr]> = match v.host() {
            HostKind::Ip(ip) => Arc::from([SocketAddr::new(*ip, v.port())]),
            HostKind::Domain(name) => {
                let vetted = timeout_at(
                    deadline,
                    resolve_and_vet(cfg.resolver.as_ref(), name, v.port(), &cfg.policy),
                )
                .await;
                match vetted {
                    Err(_) => {
                        return a.fail(ErrorClass::Timeout, Outcome::Retry, "timed out resolving");
                    }
                    Ok(Err(VetError::Dns(_))) => {
                        return a.fail(ErrorClass::Dns, Outcome::Retry, "name resolution failed");
                    }
                    Ok(Err(VetError::Blocked(_))) => {
                        return a.fail(ErrorClass::Blocked, Outcome::Failed, BLOCKED_MESSAGE);
                    }
                    Ok(Ok(addrs)) => {
                        let addrs: Arc<[SocketAddr]> = addrs.into();
                        self.inner.dns.pin(name, addrs.clone());
                        addrs
                    }
                }
            }
        };
        if addrs.len() == 1 {
            a.dialled = Some(addrs[0]);
        }

        let request = self
            .inner
            .client
            .post(v.into_url())
            .headers(req.headers)
            .body(req.body);
        let mut resp = match timeout_at(deadline, request.send()).await {
            Err(_) => return a.fail(ErrorClass::Timeout, Outcome::Retry, "timed out"),
            Ok(Err(e)) => {
                let (class, outcome, msg) = classify(&e);
                return a.fail(class, outcome, msg);
            }
            Ok(Ok(r)) => r,
        };
        if let Some(addr) = resp.remote_addr() {
            a.dialled = Some(addr);
        }
        let status = resp.status();
        a.status_code = Some(status.as_u16());
        a.response_headers = resp
            .headers()
            .iter()
            .take(cfg.max_response_headers)
            .map(|(k, v)| {
                let bytes = v.as_bytes();
                let cut = &bytes[..bytes.len().min(512)];
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(cut).into_owned(),
                )
            })
            .collect();
        a.retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));

        // Read at most the cap (plus one chunk to know whether there is more), then stop.
        let cap = cfg.max_response_body;
        let mut prefix: Vec<u8> = Vec::with_capacity(cap.min(4096));
        loop {
            match timeout_at(deadline, resp.chunk()).await {
                Err(_) => {
                    a.body_truncated = true;
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    let room = cap - prefix.len();
                    prefix.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if chunk.len() > room {
                        a.body_truncated = true;
                        break;
                    }
                }
                Ok(Err(_)) => {
                    // The status line already decided the outcome; a broken body only shortens
                    // the receipt's prefix.
                    a.body_truncated = true;
                    break;
                }
            }
        }
        drop(resp);
        a.response_body_prefix = String::from_utf8_lossy(&prefix).into_owned();

        if status.is_success() {
            a.outcome = Outcome::Success;
        } else if status == http::StatusCode::GONE {
            a.fail(
                ErrorClass::Http,
                Outcome::Gone,
                "410 Gone: endpoint asked to be disabled",
            );
        } else if status.is_redirection() {
            a.fail(
                ErrorClass::Http,
                Outcome::Retry,
                format!("HTTP {}: redirects are not followed", status.as_u16()),
            );
        } else {
            a.fail(
                ErrorClass::Http,
                Outcome::Retry,
                format!("HTTP {}", status.as_u16()),
            );
        }
    }
}

fn sources<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

/// Maps a client error to (class, outcome, safe message) by walking its source chain.
fn classify(e: &reqwest::Error) -> (ErrorClass, Outcome, String) {
    let mut tls = false;
    let mut too_large = false;
    let mut parse = false;
    for s in sources(e) {
        if let Some(d) = s.downcast_ref::<DialRefused>() {
            return match d {
                DialRefused::Blocked(_) => {
                    (ErrorClass::Blocked, Outcome::Failed, BLOCKED_MESSAGE.into())
                }
                DialRefused::Dns => (
                    ErrorClass::Dns,
                    Outcome::Retry,
                    "name resolution failed".into(),
                ),
            };
        }
        if s.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        // `io::Error::source` skips the wrapped error, and TLS failures arrive as an io::Error
        // wrapping an io::Error wrapping the rustls error: unwrap by hand.
        let mut io = s.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(|e| e.get_ref()) {
            if inner.downcast_ref::<rustls::Error>().is_some() {
                tls = true;
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            too_large |= h.is_parse_too_large();
            parse |= h.is_parse() || h.is_parse_status();
        }
    }
    let detail = sources(e)
        .last()
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string());
    if tls {
        (ErrorClass::Tls, Outcome::Retry, format!("tls: {detail}"))
    } else if e.is_timeout() {
        (ErrorClass::Timeout, Outcome::Retry, "timed out".into())
    } else if too_large {
        (
            ErrorClass::BodyTooLarge,
            Outcome::Retry,
            "response head too large".into(),
        )
    } else if parse {
        (
            ErrorClass::Http,
            Outcome::Retry,
            format!("invalid HTTP response: {detail}"),
        )
    } else {
        (
            ErrorClass::Connect,
            Outcome::Retry,
            format!("connect: {detail}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::StubResolver;
    use reqwest::dns::Resolve as _;
    use std::net::IpAddr;

    fn dns(stub: Arc<StubResolver>) -> PinnedDns {
        PinnedDns {
            pins: Mutex::new(HashMap::new()),
            policy: Policy::default(),
            resolver: stub,
        }
    }

    async fn lookup(d: &PinnedDns, host: &str) -> Result<Vec<SocketAddr>, String> {
        let name: reqwest::dns::Name = host.parse().expect("name");
        d.resolve(name)
            .await
            .map(|a| a.collect())
            .map_err(|e| e.to_string())
    }

    /// The client's own resolution (a reconnect with no pin) is vetted too, and a pinned answer
    /// is served without resolving again.
    #[tokio::test]
    async fn client_dns_hook_vets_unpinned_lookups_and_serves_pins() {
        let public: IpAddr = "93.184.216.34".parse().expect("ip");
        let stub = Arc::new(
            StubResolver::new()
                .with("evil.example.com", &["10.1.2.3".parse().expect("ip")])
                .with("good.example.com", &[public]),
        );
        let d = dns(stub.clone());
        assert_eq!(
            lookup(&d, "evil.example.com").await,
            Err("destination is not allowed".to_string())
        );
        assert_eq!(
            lookup(&d, "good.example.com").await,
            Ok(vec![SocketAddr::new(public, 0)])
        );
        assert_eq!(
            lookup(&d, "missing.example.com").await,
            Err("name resolution failed".into())
        );
        let calls = stub.calls();
        let pinned = SocketAddr::new(public, 8443);
        d.pin("evil.example.com", Arc::from([pinned]));
        assert_eq!(lookup(&d, "evil.example.com").await, Ok(vec![pinned]));
        assert_eq!(stub.calls(), calls, "a pinned host is not resolved again");
    }
}
