//! A scriptable webhook receiver on loopback, for integration tests and benchmarks.
//!
//! It binds `127.0.0.1:0`, verifies BOTH signature schemes on every request (the guide's
//! `verify_signature` logic for `X-Signature-SHA256`, Standard Webhooks for `webhook-signature`),
//! records every request with its arrival time, counts deliveries per `webhook-id` so duplicates
//! show, and can be told to misbehave: status codes, 410, 429 with `Retry-After`, a redirect to
//! the metadata address, hanging, a slow drip, or a huge body streamed lazily.
//!
//! Waiting is event-driven: [`ReceiverHandle::wait_for`] sleeps on a [`Notify`] that every
//! arriving request wakes.

use crate::headers::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, X_SIGNATURE_SHA256};
use crate::signing::{DEFAULT_TOLERANCE_SECS, guide_verify_signature, verify_standard};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, watch};

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// The endpoint's secret, as registered.
    pub secret: String,
    /// Extra secrets accepted for `webhook-signature` (e.g. the old one during rotation).
    pub extra_standard_secrets: Vec<String>,
    /// `webhook-timestamp` tolerance in seconds.
    pub tolerance_secs: i64,
    /// Answer 401 unless both signatures verify (default true).
    pub require_valid_signatures: bool,
}

impl ReceiverConfig {
    pub fn new(secret: impl Into<String>) -> Self {
        ReceiverConfig {
            secret: secret.into(),
            extra_standard_secrets: Vec::new(),
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            require_valid_signatures: true,
        }
    }
}

/// How the receiver answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with a short body.
    Ok,
    /// This status with a short body (e.g. 500).
    Status(u16),
    /// 410 Gone.
    Gone,
    /// 429 with this `Retry-After` value (seconds or an HTTP date).
    TooManyRequests { retry_after: String },
    /// 302 to `location`.
    Redirect { location: String },
    /// Never answer (until the client gives up or the receiver stops).
    Hang,
    /// 200, then one byte every `interval`, `bytes` times.
    SlowDrip { bytes: usize, interval: Duration },
    /// 200 with a body of `bytes` bytes, produced lazily in 64 KiB chunks.
    HugeBody { bytes: u64 },
}

impl Behaviour {
    /// 302 to the cloud metadata service.
    pub fn redirect_to_metadata() -> Behaviour {
        Behaviour::Redirect {
            location: "http://169.254.169.254/latest/meta-data/".into(),
        }
    }

    /// A 1 GiB body.
    pub fn huge_1gb() -> Behaviour {
        Behaviour::HugeBody { bytes: 1 << 30 }
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: Option<String>,
    pub webhook_timestamp: Option<String>,
    pub event_type: Option<String>,
    pub delivery_id: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `X-Signature-SHA256` passed the guide's verifier with the configured secret.
    pub sha256_valid: bool,
    /// `webhook-signature` verified (Standard Webhooks, with timestamp tolerance).
    pub standard_valid: bool,
    pub arrived_at: SystemTime,
    pub arrived: Instant,
    /// The status answered (`None` for [`Behaviour::Hang`]).
    pub responded: Option<u16>,
    pub behaviour: Behaviour,
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    per_id: HashMap<String, usize>,
    acked_per_id: HashMap<String, usize>,
    invalid: usize,
}

struct Shared {
    cfg: ReceiverConfig,
    log: Mutex<Log>,
    notify: Notify,
    default: Mutex<Behaviour>,
    script: Mutex<VecDeque<Behaviour>>,
    streamed: AtomicU64,
    stop: watch::Receiver<bool>,
}

impl Shared {
    fn next_behaviour(&self) -> Behaviour {
        if let Some(b) = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        {
            return b;
        }
        self.default
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Starts receivers.
pub struct Receiver;

impl Receiver {
    /// Binds `127.0.0.1:0` and serves until the handle is dropped.
    pub async fn start(cfg: ReceiverConfig) -> std::io::Result<ReceiverHandle> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            log: Mutex::new(Log::default()),
            notify: Notify::new(),
            default: Mutex::new(Behaviour::Ok),
            script: Mutex::new(VecDeque::new()),
            streamed: AtomicU64::new(0),
            stop: stop_rx,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(shared.clone());
        let mut stop_wait = stop_tx.subscribe();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop_wait.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "webhook test receiver stopped");
            }
        });
        Ok(ReceiverHandle {
            addr,
            shared,
            stop: stop_tx,
            task,
        })
    }
}

/// A running receiver. Dropping it stops the server.
pub struct ReceiverHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReceiverHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

impl ReceiverHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/webhooks/aragora`.
    pub fn url(&self) -> String {
        format!("http://{}/webhooks/aragora", self.addr)
    }

    /// Answer every later request this way (after any scripted ones).
    pub fn set_behaviour(&self, b: Behaviour) {
        *self
            .shared
            .default
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = b;
    }

    /// Answer the next requests with these, in order, then fall back to the default behaviour.
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.shared
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(behaviours);
    }

    fn with_log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self.shared.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.with_log(|l| l.received.clone())
    }

    /// Requests so far.
    pub fn count(&self) -> usize {
        self.with_log(|l| l.received.len())
    }

    /// Requests carrying this `webhook-id`.
    pub fn count_for(&self, webhook_id: &str) -> usize {
        self.with_log(|l| l.per_id.get(webhook_id).copied().unwrap_or(0))
    }

    /// Requests per `webhook-id`.
    pub fn counts(&self) -> HashMap<String, usize> {
        self.with_log(|l| l.per_id.clone())
    }

    /// Distinct `webhook-id`s answered with a 2xx.
    pub fn acknowledged(&self) -> usize {
        self.with_log(|l| l.acked_per_id.len())
    }

    /// `webhook-id`s answered with a 2xx more than once, with their counts.
    pub fn duplicate_acks(&self) -> Vec<(String, usize)> {
        self.with_log(|l| {
            let mut d: Vec<_> = l
                .acked_per_id
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(k, n)| (k.clone(), *n))
                .collect();
            d.sort();
            d
        })
    }

    /// Requests whose signatures did not both verify.
    pub fn invalid(&self) -> usize {
        self.with_log(|l| l.invalid)
    }

    /// Body bytes produced so far by [`Behaviour::HugeBody`] responses.
    pub fn bytes_streamed(&self) -> u64 {
        self.shared.streamed.load(Ordering::Relaxed)
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Log) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.with_log(&done) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.with_log(&done);
            }
        }
    }

    /// Waits until at least `n` requests arrived; false on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |l| l.received.len() >= n).await
    }

    /// Waits until at least `n` distinct `webhook-id`s were answered with a 2xx.
    pub async fn wait_for_acknowledged(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |l| l.acked_per_id.len() >= n)
            .await
    }
}

fn header(h: &HeaderMap, name: &http::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let webhook_id = header(&headers, &WEBHOOK_ID);
    let webhook_timestamp = header(&headers, &WEBHOOK_TIMESTAMP);
    let sha256_valid = header(&headers, &X_SIGNATURE_SHA256)
        .is_some_and(|sig| guide_verify_signature(&body, &sig, &s.cfg.secret));
    let standard_valid = match (
        &webhook_id,
        &webhook_timestamp,
        header(&headers, &WEBHOOK_SIGNATURE),
    ) {
        (Some(id), Some(ts), Some(sig)) => {
            let mut secrets: Vec<&str> = vec![&s.cfg.secret];
            secrets.extend(s.cfg.extra_standard_secrets.iter().map(String::as_str));
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            verify_standard(
                &secrets,
                id,
                ts,
                &body,
                &sig,
                Some((now, s.cfg.tolerance_secs)),
            )
            .is_ok()
        }
        _ => false,
    };
    let valid = sha256_valid && standard_valid;
    let behaviour = if s.cfg.require_valid_signatures && !valid {
        Behaviour::Status(401)
    } else {
        s.next_behaviour()
    };
    let responded = match &behaviour {
        Behaviour::Ok | Behaviour::SlowDrip { .. } | Behaviour::HugeBody { .. } => Some(200),
        Behaviour::Status(c) => Some(*c),
        Behaviour::Gone => Some(410),
        Behaviour::TooManyRequests { .. } => Some(429),
        Behaviour::Redirect { .. } => Some(302),
        Behaviour::Hang => None,
    };
    let record = Received {
        webhook_id: webhook_id.clone(),
        webhook_timestamp,
        event_type: header(&headers, &crate::headers::X_ARAGORA_EVENT),
        delivery_id: header(&headers, &crate::headers::X_ARAGORA_DELIVERY),
        headers,
        body,
        sha256_valid,
        standard_valid,
        arrived_at: SystemTime::now(),
        arrived: Instant::now(),
        responded,
        behaviour: behaviour.clone(),
    };
    {
        let mut log = s.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = &webhook_id {
            *log.per_id.entry(id.clone()).or_insert(0) += 1;
            if responded.is_some_and(|c| (200..300).contains(&c)) {
                *log.acked_per_id.entry(id.clone()).or_insert(0) += 1;
            }
        }
        if !valid {
            log.invalid += 1;
        }
        log.received.push(record);
    }
    s.notify.notify_waiters();
    respond(&s, behaviour).await
}

async fn respond(s: &Arc<Shared>, behaviour: Behaviour) -> Response {
    match behaviour {
        Behaviour::Ok => (StatusCode::OK, "ok").into_response(),
        Behaviour::Status(c) => {
            let code = StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, format!("status {c}")).into_response()
        }
        Behaviour::Gone => (StatusCode::GONE, "gone").into_response(),
        Behaviour::TooManyRequests { retry_after } => {
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            r
        }
        Behaviour::Redirect { location } => {
            let mut r = (StatusCode::FOUND, "moved").into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(http::header::LOCATION, v);
            }
            r
        }
        Behaviour::Hang => {
            let mut stop = s.stop.clone();
            let _ = stop.wait_for(|v| *v).await;
            (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
        }
        Behaviour::SlowDrip { bytes, interval } => {
            let stream = futures::stream::unfold(0usize, move |sent| async move {
                if sent >= bytes {
                    return None;
                }
                // Pacing the drip is the behaviour under test, not a wait for work.
                tokio::time::sleep(interval).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b".")), sent + 1))
            });
            Response::new(Body::from_stream(stream))
        }
        Behaviour::HugeBody { bytes } => {
            const CHUNK: usize = 64 * 1024;
            let chunk = Bytes::from(vec![b'x'; CHUNK]);
            let shared = s.clone();
            let stream = futures::stream::unfold(0u64, move |sent| {
                let chunk = chunk.clone();
                let shared = shared.clone();
                async move {
                    if sent >= bytes {
                        return None;
                    }
                    let n = (bytes - sent).min(CHUNK as u64) as usize;
                    shared.streamed.fetch_add(n as u64, Ordering::Relaxed);
                    Some((Ok::<_, std::io::Error>(chunk.slice(..n)), sent + n as u64))
                }
            });
            Response::new(Body::from_stream(stream))
        }
    }
}
