//! The webhook delivery engine and `WebhookDeliveryWorker` (DESIGN.md §6).
//!
//! One job = one pending receipt. Per job: one read (receipt + webhook + event + breaker row),
//! a per-endpoint slot, breaker admission, sign, send through the guarded [`Sender`], then the
//! outcome goes to a group-commit recorder that writes many attempts' receipts, follow-up
//! attempts and breaker updates in one transaction. The job completes only after that commit.
//!
//! - Breaker: the state lives in `webhook_breakers` and every change is a compare-and-swap on its
//!   version, so all workers on all nodes share one breaker per endpoint. The open → half-open
//!   transition is taken by CAS before dialling, so exactly one probe runs. While the breaker
//!   rejects, the attempt is deferred (a new job at the breaker's retry time): nothing is dialled
//!   and the receipt keeps its attempt number, so no retry budget is spent.
//! - Per-endpoint in-flight cap: a semaphore per webhook in each process. When every slot is
//!   taken, a delivery waits (up to `endpoint_wait`) only if the endpoint is answering quickly
//!   (a request finished within the last `slow_after` and the recent average is below it);
//!   otherwise it is deferred at once. So a slow or dead endpoint holds at most
//!   `max_in_flight_per_endpoint` of this process's worker slots and never starves the others,
//!   while a fast, busy endpoint is not churned through deferrals. The cap is per process: with N
//!   worker processes an endpoint sees at most N × cap concurrent requests.

use aragora_core::event::Event;
use aragora_core::ids::{new_id, prefix};
use aragora_core::time::{now_ms, rfc3339};
use aragora_queue::{ClaimedJob, JobError, JobHandler, Queue};
use aragora_store::events::{NewEvent, publish_many_in};
use aragora_store::webhooks::{
    self as store, AttemptResult, DeliveryTask, NewAttempt, Receipt, Webhook,
};
use aragora_store::{AnyConnection, Db};
use aragora_webhooks::{
    Admission, Attempt, BreakerConfig, BreakerState, DeliveryRequest, HeaderInput, Outcome, Policy,
    RetryPolicy, Sender, SenderConfig, build_headers,
};
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Webhook delivery settings.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    /// Total time for one attempt.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Concurrent requests to one endpoint from one process.
    pub max_in_flight_per_endpoint: usize,
    /// How long a delivery waits for a slot of a busy but fast endpoint before it is deferred.
    pub endpoint_wait: Duration,
    /// An endpoint counts as slow (deliveries are deferred instead of waiting for a slot) when no
    /// request to it finished within this long, or its recent average exceeds it.
    pub slow_after: Duration,
    /// Delay of a deferred delivery whose endpoint was busy.
    pub busy_delay: Duration,
    /// While half-open (a probe in flight), rejected deliveries look again after this long.
    pub half_open_recheck: Duration,
    /// Job lease of the delivery worker (heartbeats renew it every third).
    pub lease: Duration,
    /// Largest `data` of a published event, serialised, in bytes.
    pub max_event_bytes: usize,
    /// Distinct webhook ids used as metric labels per process; further ones share `other`.
    pub metrics_max_endpoints: usize,
    /// Recorder tasks writing attempts in parallel (0 = 1 on SQLite, 2 on PostgreSQL).
    pub recorders: usize,
    /// Attempts written per recorder transaction at most.
    pub record_batch: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_in_flight_per_endpoint: 16,
            endpoint_wait: Duration::from_millis(250),
            slow_after: Duration::from_millis(200),
            busy_delay: Duration::from_secs(1),
            half_open_recheck: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            max_event_bytes: 256 * 1024,
            metrics_max_endpoints: 1000,
            recorders: 0,
            record_batch: 256,
        }
    }
}

/// A breaker result to fold into the endpoint's shared state.
#[derive(Debug, Clone, Copy)]
struct BreakerEvent {
    success: bool,
    /// The attempt was the half-open probe (only the probe decides a half-open breaker).
    probe: bool,
    at_ms: i64,
}

// A short-lived message to the recorder task; boxing the big variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Write {
    Attempt {
        result: AttemptResult,
        next: Option<NewAttempt>,
        breaker: Option<(String, BreakerEvent)>,
        disable: Option<(String, String)>,
    },
    Defer {
        receipt_id: String,
        run_at: i64,
    },
}

struct Pending {
    write: Write,
    done: oneshot::Sender<Result<(), String>>,
}

/// Shared by the worker and the routes: the guarded sender, settings and per-endpoint slots.
pub struct WebhookEngine {
    db: Db,
    queue: Queue,
    sender: Sender,
    policy: Policy,
    settings: WebhookSettings,
    slots: DashMap<String, Arc<Slots>>,
    recorder: OnceLock<mpsc::Sender<Pending>>,
    publisher: OnceLock<mpsc::Sender<PublishReq>>,
    loader: OnceLock<mpsc::Sender<LoadReq>>,
    labelled: Mutex<HashSet<String>>,
}

/// A delivery job's read, coalesced with concurrent ones into one query.
struct LoadReq {
    receipt_id: String,
    done: oneshot::Sender<Result<Option<DeliveryTask>, String>>,
}

/// An event published through the API, waiting to be written with others in one transaction.
struct PublishReq {
    event: NewEvent,
    done: oneshot::Sender<Result<(Event, usize), aragora_core::Error>>,
}

impl WebhookEngine {
    /// Builds the engine. An unparsable allowlist falls back to the empty one (the CLI refuses it
    /// before getting here).
    pub fn new(db: Db, queue: Queue, allow_cidrs: &str, settings: WebhookSettings) -> Self {
        let policy = Policy::from_env_str(allow_cidrs).unwrap_or_else(|e| {
            tracing::error!(error = %e, "invalid webhook allowlist; using the empty allowlist");
            Policy::default()
        });
        let sender = Sender::new(SenderConfig {
            timeout: settings.timeout,
            connect_timeout: settings.connect_timeout,
            policy: policy.clone(),
            pool_max_idle_per_host: settings.max_in_flight_per_endpoint.max(1),
            ..SenderConfig::default()
        })
        .expect("the webhook HTTP client builds with static settings");
        WebhookEngine {
            db,
            queue,
            sender,
            policy,
            settings,
            slots: DashMap::new(),
            recorder: OnceLock::new(),
            publisher: OnceLock::new(),
            loader: OnceLock::new(),
            labelled: Mutex::new(HashSet::new()),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    pub fn breaker_config(&self) -> &BreakerConfig {
        &self.settings.breaker
    }

    /// Metric label for a webhook: its id for the first `metrics_max_endpoints` seen by this
    /// process, `other` after that (bounded cardinality).
    fn endpoint_label(&self, webhook_id: &str) -> String {
        let mut set = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(webhook_id) {
            return webhook_id.to_string();
        }
        if set.len() < self.settings.metrics_max_endpoints {
            set.insert(webhook_id.to_string());
            return webhook_id.to_string();
        }
        "other".to_string()
    }

    fn slots(&self, webhook_id: &str) -> Arc<Slots> {
        if let Some(s) = self.slots.get(webhook_id) {
            return s.clone();
        }
        self.slots
            .entry(webhook_id.to_string())
            .or_insert_with(|| {
                Arc::new(Slots {
                    sem: Arc::new(Semaphore::new(
                        self.settings.max_in_flight_per_endpoint.max(1),
                    )),
                    last_done_ms: AtomicI64::new(now_ms()),
                    avg_ms: AtomicI64::new(0),
                })
            })
            .clone()
    }

    /// A slot for one request to the endpoint, or `None` when the delivery should be deferred.
    async fn endpoint_slot(&self, slots: &Slots) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = slots.sem.clone().try_acquire_owned() {
            return Some(p);
        }
        let slow = self.settings.slow_after.as_millis() as i64;
        let quick = now_ms() - slots.last_done_ms.load(Ordering::Relaxed) < slow
            && slots.avg_ms.load(Ordering::Relaxed) < slow;
        if !quick {
            return None;
        }
        tokio::time::timeout(
            self.settings.endpoint_wait,
            slots.sem.clone().acquire_owned(),
        )
        .await
        .ok()
        .and_then(Result::ok)
    }

    fn recorder(&self) -> &mpsc::Sender<Pending> {
        self.recorder.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Pending>(4096);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let n = match (self.settings.recorders, self.db.dialect()) {
                (0, aragora_store::Dialect::Sqlite) => 1,
                (0, aragora_store::Dialect::Postgres) => 2,
                (n, _) => n,
            };
            let cache: BreakerCache = Arc::new(DashMap::new());
            for _ in 0..n {
                let rx = rx.clone();
                let db = self.db.clone();
                let queue = self.queue.clone();
                let cfg = self.settings.breaker.clone();
                let max = self.settings.record_batch.max(1);
                tokio::spawn(record_loop(rx, db, queue, cfg, cache.clone(), max));
            }
            tx
        })
    }

    /// Publishes an event through the outbox, group-committed with concurrent publishes (the
    /// event is its own change, so sharing a transaction with other API events is safe). Returns
    /// the event and how many deliveries it got, after the commit.
    pub async fn publish(&self, event: NewEvent) -> Result<(Event, usize), aragora_core::Error> {
        let tx = self.publisher.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<PublishReq>(4096);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let n = match self.db.dialect() {
                aragora_store::Dialect::Sqlite => 1,
                aragora_store::Dialect::Postgres => 4,
            };
            for _ in 0..n {
                tokio::spawn(publish_loop(
                    rx.clone(),
                    self.db.clone(),
                    self.queue.clone(),
                ));
            }
            tx
        });
        let (done, wait) = oneshot::channel();
        tx.send(PublishReq { event, done })
            .await
            .map_err(|_| aragora_core::Error::Unavailable("publisher stopped".into()))?;
        wait.await
            .map_err(|_| aragora_core::Error::Unavailable("publisher stopped".into()))?
    }

    /// Reads the attempt a job points at, in one query with the reads of concurrent jobs.
    async fn load(&self, receipt_id: &str) -> Result<Option<DeliveryTask>, String> {
        let tx = self.loader.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<LoadReq>(4096);
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let n = match self.db.dialect() {
                aragora_store::Dialect::Sqlite => 2,
                aragora_store::Dialect::Postgres => 4,
            };
            for _ in 0..n {
                tokio::spawn(load_loop(rx.clone(), self.db.clone()));
            }
            tx
        });
        let (done, wait) = oneshot::channel();
        tx.send(LoadReq {
            receipt_id: receipt_id.to_string(),
            done,
        })
        .await
        .map_err(|_| "loader stopped".to_string())?;
        wait.await.map_err(|_| "loader stopped".to_string())?
    }

    /// Hands a write to the recorder and waits until it is committed.
    async fn commit(&self, write: Write) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.recorder()
            .send(Pending { write, done })
            .await
            .map_err(|_| "recorder stopped".to_string())?;
        wait.await
            .map_err(|_| "recorder dropped the write".to_string())?
    }

    /// Sends a signed `webhook.test` event now, through the same guarded sender (not through the
    /// queue or the breaker), and records its receipt.
    pub async fn send_test(&self, webhook: &Webhook) -> Result<Receipt, aragora_core::Error> {
        let created = now_ms();
        let event = Event {
            event_type: aragora_core::event::types::WEBHOOK_TEST.to_string(),
            event_id: new_id(prefix::EVENT),
            timestamp: rfc3339(created),
            data: serde_json::json!({
                "webhook_id": webhook.id,
                "message": "This is a test event from Aragora.",
            }),
        };
        let delivery_id = new_id(prefix::DELIVERY);
        let body = envelope(
            &event.event_type,
            &event.event_id,
            created,
            &event.data.to_string(),
        );
        let prev = store::live_previous(&webhook.previous_secrets, created);
        let prev: Vec<&str> = prev.iter().map(|p| p.secret.as_str()).collect();
        let receipt_id = new_id(prefix::RECEIPT);
        let started = now_ms();
        let result = match build_headers(
            &HeaderInput {
                message_id: &delivery_id,
                event_type: &event.event_type,
                attempt: 1,
                secret: &webhook.secret,
                previous_secrets: &prev,
                timestamp: started / 1000,
            },
            &body,
        ) {
            Ok(headers) => {
                let a = self
                    .sender
                    .send(DeliveryRequest {
                        url: webhook.url.clone(),
                        body,
                        headers,
                    })
                    .await;
                self.observe(&webhook.id, &a, false);
                attempt_result(&receipt_id, &a, true, a.is_success(), None)
            }
            Err(e) => unsendable(&receipt_id, &e.to_string()),
        };
        store::record_test_delivery(&self.db, webhook, &event, created, &delivery_id, &result)
            .await
            .map_err(aragora_store::sqlx_to_core)?;
        store::get_receipt(&self.db, &webhook.id, &receipt_id)
            .await
            .map_err(aragora_store::sqlx_to_core)?
            .ok_or_else(|| aragora_core::Error::internal("test receipt vanished"))
    }

    /// Records an attempt. `retried`: another attempt is scheduled; a retryable failure without
    /// one (a test delivery, a manual resend, the last attempt) counts as `failed`, not `retry`.
    fn observe(&self, webhook_id: &str, a: &Attempt, retried: bool) {
        let status = if a.is_success() {
            "succeeded"
        } else {
            "failed"
        };
        let outcome = match a.outcome {
            Outcome::Retry if !retried => "failed",
            o => o.as_str(),
        };
        metrics::counter!("aragora_webhook_deliveries_total", "status" => status, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("aragora_webhook_delivery_latency_seconds", "status" => status)
            .record(a.duration_ms as f64 / 1000.0);
        if !a.is_success() {
            let class = a.error_class.map(|c| c.as_str()).unwrap_or("http");
            metrics::counter!("aragora_webhook_failures_by_endpoint_total",
                "webhook_id" => self.endpoint_label(webhook_id), "error_class" => class)
            .increment(1);
        }
    }

    /// Reloads the breaker row (for a lost compare-and-swap).
    async fn reload_breaker(&self, webhook_id: &str) -> Result<(BreakerState, i64), sqlx_err::E> {
        let row = store::breaker_get(&self.db, webhook_id).await?;
        Ok(parse_breaker(row.as_ref().map(|(s, v)| (s.as_str(), *v))))
    }

    async fn cas_breaker(
        &self,
        webhook_id: &str,
        version: i64,
        state: &BreakerState,
    ) -> Result<bool, sqlx_err::E> {
        let mut conn = self.db.writer().acquire().await?;
        let json = serde_json::to_string(state).unwrap_or_default();
        store::breaker_cas_in(&mut conn, webhook_id, version, &json, now_ms()).await
    }

    /// Breaker admission with compare-and-swap on the open → half-open transition.
    async fn admit(&self, task: &DeliveryTask) -> Result<(Admission, BreakerState), sqlx_err::E> {
        let (mut state, mut version) = parse_breaker(
            task.breaker_state
                .as_deref()
                .map(|s| (s, task.breaker_version)),
        );
        for _ in 0..8 {
            let mut next = state.clone();
            match next.allow_request(now_ms(), &self.settings.breaker) {
                Admission::Probe => {
                    if self.cas_breaker(&task.webhook_id, version, &next).await? {
                        return Ok((Admission::Probe, next));
                    }
                    (state, version) = self.reload_breaker(&task.webhook_id).await?;
                }
                other => return Ok((other, state)),
            }
        }
        // Lost the swap repeatedly: someone else is busy with this breaker; look again soon.
        Ok((
            Admission::Reject {
                retry_at_ms: now_ms() + self.settings.half_open_recheck.as_millis() as i64,
            },
            state,
        ))
    }

    async fn defer(
        &self,
        receipt_id: &str,
        run_at: i64,
        reason: &'static str,
    ) -> Result<(), JobError> {
        metrics::counter!("aragora_webhook_deferred_total", "reason" => reason).increment(1);
        self.commit(Write::Defer {
            receipt_id: receipt_id.to_string(),
            run_at,
        })
        .await
        .map_err(JobError::Retry)
    }

    /// One job: one attempt (or a deferral).
    async fn deliver(&self, receipt_id: &str) -> Result<(), JobError> {
        let task = self
            .load(receipt_id)
            .await
            .map_err(|e| JobError::Retry(format!("load delivery: {e}")))?;
        let Some(task) = task else {
            return Ok(()); // webhook or receipt deleted
        };
        if task.status != store::STATUS_PENDING {
            return Ok(()); // another run of this job already made the attempt
        }
        if !task.enabled {
            let mut r = unsendable(&task.receipt_id, "webhook is disabled");
            r.error_class = Some("disabled".into());
            metrics::counter!("aragora_webhook_deliveries_total", "status" => "failed", "outcome" => "disabled")
                .increment(1);
            return self
                .commit(Write::Attempt {
                    result: r,
                    next: None,
                    breaker: None,
                    disable: None,
                })
                .await
                .map_err(JobError::Retry);
        }

        // An endpoint slot first, so a probe admitted below is never left waiting.
        let slots = self.slots(&task.webhook_id);
        let Some(permit) = self.endpoint_slot(&slots).await else {
            let run_at = now_ms() + jittered(self.settings.busy_delay);
            return self.defer(&task.receipt_id, run_at, "endpoint_busy").await;
        };

        let (admission, state) = self
            .admit(&task)
            .await
            .map_err(|e| JobError::Retry(format!("breaker: {e}")))?;
        if let Admission::Reject { retry_at_ms } = admission {
            drop(permit);
            let run_at = match state {
                BreakerState::HalfOpen { .. } => {
                    retry_at_ms.min(now_ms() + self.settings.half_open_recheck.as_millis() as i64)
                }
                // Spread the backlog released when the open time ends.
                _ => retry_at_ms + jittered(Duration::from_millis(200)),
            };
            return self.defer(&task.receipt_id, run_at, "breaker_open").await;
        }
        let probe = admission == Admission::Probe;

        let body = envelope(
            &task.event_type,
            &task.event_id,
            task.event_created_at,
            &task.event_data,
        );
        let started = now_ms();
        let prev = store::live_previous(&task.previous_secrets, started);
        let prev: Vec<&str> = prev.iter().map(|p| p.secret.as_str()).collect();
        let headers = build_headers(
            &HeaderInput {
                message_id: &task.delivery_id,
                event_type: &task.event_type,
                attempt: task.attempt,
                secret: &task.secret,
                previous_secrets: &prev,
                timestamp: started / 1000,
            },
            &body,
        );
        let headers = match headers {
            Ok(h) => h,
            Err(e) => {
                drop(permit);
                return self
                    .commit(Write::Attempt {
                        result: unsendable(&task.receipt_id, &e.to_string()),
                        next: None,
                        breaker: None,
                        disable: None,
                    })
                    .await
                    .map_err(JobError::Retry);
            }
        };
        let a = self
            .sender
            .send(DeliveryRequest {
                url: task.url.clone(),
                body,
                headers,
            })
            .await;
        drop(permit);
        let finished = now_ms();
        slots.done(finished, a.duration_ms as i64);

        let next_delay = match a.outcome {
            Outcome::Retry if task.trigger != store::TRIGGER_MANUAL => self
                .settings
                .retry
                .next_delay(task.attempt, None, a.retry_after),
            _ => None,
        };
        let next = next_delay.map(|d| NewAttempt {
            receipt_id: new_id(prefix::RECEIPT),
            webhook_id: task.webhook_id.clone(),
            workspace: task.workspace.clone(),
            delivery_id: task.delivery_id.clone(),
            event_id: task.event_id.clone(),
            event_type: task.event_type.clone(),
            attempt: task.attempt.saturating_add(1),
            trigger: store::TRIGGER_SCHEDULED,
            run_at: finished + d.as_millis() as i64,
        });
        self.observe(&task.webhook_id, &a, next.is_some());
        let result = attempt_result(
            &task.receipt_id,
            &a,
            next.is_none(),
            a.is_success(),
            next.as_ref().map(|n| n.run_at),
        );
        let breaker = match a.outcome {
            Outcome::Success => Some(true),
            o if o.breaker_failure() => Some(false),
            _ => None,
        }
        .map(|success| {
            (
                task.webhook_id.clone(),
                BreakerEvent {
                    success,
                    probe,
                    at_ms: finished,
                },
            )
        });
        let disable = (a.outcome == Outcome::Gone).then(|| {
            (
                task.webhook_id.clone(),
                format!("the endpoint answered 410 Gone at {}", rfc3339(finished)),
            )
        });
        self.commit(Write::Attempt {
            result,
            next,
            breaker,
            disable,
        })
        .await
        .map_err(JobError::Retry)
    }
}

/// Breaker rows as last seen by this process's recorders (only a starting point for a CAS).
type BreakerCache = Arc<DashMap<String, (BreakerState, i64)>>;

/// One endpoint's in-flight slots in this process, and how quickly it has been answering.
struct Slots {
    sem: Arc<Semaphore>,
    last_done_ms: AtomicI64,
    /// Exponentially weighted average attempt duration (ms).
    avg_ms: AtomicI64,
}

impl Slots {
    fn done(&self, now: i64, duration_ms: i64) {
        self.last_done_ms.store(now, Ordering::Relaxed);
        let old = self.avg_ms.load(Ordering::Relaxed);
        self.avg_ms
            .store(old + (duration_ms - old) / 8, Ordering::Relaxed);
    }
}

/// sqlx's error type, named once.
mod sqlx_err {
    pub type E = aragora_store::sqlx::Error;
}

/// `d` plus up to a quarter of it, so deferred deliveries do not return in lockstep.
fn jittered(d: Duration) -> i64 {
    let ms = d.as_millis() as i64;
    ms + rand::random_range(0..=ms / 4)
}

fn parse_breaker(row: Option<(&str, i64)>) -> (BreakerState, i64) {
    match row {
        Some((json, version)) => (serde_json::from_str(json).unwrap_or_default(), version),
        None => (BreakerState::default(), 0),
    }
}

/// The guide's payload, `{"event_type","event_id","timestamp","data"}` in that order, with `data`
/// copied verbatim from the stored event (so every retry sends the same bytes).
pub fn envelope(event_type: &str, event_id: &str, created_at: i64, data: &str) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + event_type.len() + 128);
    out.extend_from_slice(b"{\"event_type\":");
    serde_json::to_writer(&mut out, event_type).expect("strings serialise");
    out.extend_from_slice(b",\"event_id\":");
    serde_json::to_writer(&mut out, event_id).expect("strings serialise");
    out.extend_from_slice(b",\"timestamp\":");
    serde_json::to_writer(&mut out, &rfc3339(created_at)).expect("strings serialise");
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(if data.is_empty() {
        b"null"
    } else {
        data.as_bytes()
    });
    out.push(b'}');
    Bytes::from(out)
}

fn attempt_result(
    receipt_id: &str,
    a: &Attempt,
    latest: bool,
    succeeded: bool,
    next_attempt_at: Option<i64>,
) -> AttemptResult {
    let headers: BTreeMap<&str, &str> = a
        .response_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    AttemptResult {
        receipt_id: receipt_id.to_string(),
        status: if succeeded {
            store::STATUS_SUCCEEDED
        } else {
            store::STATUS_FAILED
        },
        latest,
        status_code: a.status_code.map(i64::from),
        error_class: a.error_class.map(|c| c.as_str().to_string()),
        error_message: a.error_message.clone(),
        dialled_addr: a.dialled.map(|d| d.to_string()),
        duration_ms: Some(a.duration_ms as i64),
        response_headers: (!headers.is_empty())
            .then(|| serde_json::to_string(&headers).unwrap_or_default()),
        response_body: (a.status_code.is_some()).then(|| a.response_body_prefix.clone()),
        attempted_at: Some(a.started_at_ms),
        next_attempt_at,
    }
}

/// A pending attempt resolved as failed without dialling.
fn unsendable(receipt_id: &str, message: &str) -> AttemptResult {
    AttemptResult {
        receipt_id: receipt_id.to_string(),
        status: store::STATUS_FAILED,
        latest: true,
        error_class: Some("blocked".into()),
        error_message: Some(message.to_string()),
        attempted_at: Some(now_ms()),
        ..AttemptResult::default()
    }
}

/// Waits for one item, then takes whatever else is queued (up to `max`): the batch is as large
/// as the backlog, so an idle system pays no batching delay. False when the channel closed.
async fn next_batch<T>(
    rx: &tokio::sync::Mutex<mpsc::Receiver<T>>,
    max: usize,
    batch: &mut Vec<T>,
) -> bool {
    let mut rx = rx.lock().await;
    match rx.recv().await {
        Some(p) => batch.push(p),
        None => return false,
    }
    while batch.len() < max {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    true
}

async fn load_loop(rx: Arc<tokio::sync::Mutex<mpsc::Receiver<LoadReq>>>, db: Db) {
    let mut batch: Vec<LoadReq> = Vec::with_capacity(256);
    while next_batch(&rx, 256, &mut batch).await {
        let ids: Vec<&str> = batch.iter().map(|r| r.receipt_id.as_str()).collect();
        match store::load_tasks(&db, &ids).await {
            Ok(tasks) => {
                let mut by_id: std::collections::HashMap<String, DeliveryTask> = tasks
                    .into_iter()
                    .map(|t| (t.receipt_id.clone(), t))
                    .collect();
                for r in batch.drain(..) {
                    let t = by_id.remove(&r.receipt_id);
                    let _ = r.done.send(Ok(t));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for r in batch.drain(..) {
                    let _ = r.done.send(Err(msg.clone()));
                }
            }
        }
    }
}

async fn publish_loop(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<PublishReq>>>,
    db: Db,
    queue: Queue,
) {
    const MAX: usize = 256;
    let mut batch: Vec<PublishReq> = Vec::with_capacity(MAX);
    while next_batch(&rx, MAX, &mut batch).await {
        let events: Vec<NewEvent> = batch.iter().map(|p| p.event.clone()).collect();
        metrics::counter!("aragora_webhook_publish_batches_total").increment(1);
        metrics::counter!("aragora_webhook_publish_batched_events_total")
            .increment(events.len() as u64);
        let res = async {
            let mut tx = db.begin().await?;
            let out = publish_many_in(&mut tx, db.dialect(), &events).await?;
            tx.commit().await?;
            Ok::<_, aragora_store::sqlx::Error>(out)
        }
        .await;
        match res {
            Ok(out) => {
                if out.iter().any(|(_, n)| *n > 0) {
                    queue.notify_local(store::QUEUE);
                }
                for (p, r) in batch.drain(..).zip(out) {
                    let _ = p.done.send(Ok(r));
                }
            }
            Err(e) => {
                let err = if aragora_store::note_storage_full(&e, "request") {
                    aragora_core::Error::StorageFull(aragora_store::STORAGE_FULL_MESSAGE.into())
                } else {
                    tracing::error!(error = %e, n = batch.len(), "publishing events failed");
                    aragora_core::Error::Unavailable("database unavailable".into())
                };
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(err.clone()));
                }
            }
        }
    }
}

async fn record_loop(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    db: Db,
    queue: Queue,
    cfg: BreakerConfig,
    cache: BreakerCache,
    max: usize,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max);
    while next_batch(&rx, max, &mut batch).await {
        metrics::counter!("aragora_webhook_recorder_batches_total").increment(1);
        metrics::counter!("aragora_webhook_recorder_writes_total").increment(batch.len() as u64);
        let mut res = write_batch(&db, &cfg, &cache, &batch).await;
        // An immediate retry cannot help on a full disk.
        if let Err(e) = &res
            && !aragora_store::is_storage_full(e)
        {
            tracing::warn!(error = %e, n = batch.len(), "recording webhook attempts failed; retrying once");
            cache.clear();
            res = write_batch(&db, &cfg, &cache, &batch).await;
        }
        let res = res.map_err(|e| {
            // Logged (rate-limited) and counted there; the jobs run again once space is freed.
            if !aragora_store::note_storage_full(&e, "webhook_recorder") {
                tracing::error!(error = %e, "recording webhook attempts failed; their jobs will run again");
            }
            e.to_string()
        });
        if let Ok(true) = res {
            queue.notify_local(store::QUEUE);
        }
        for p in batch.drain(..) {
            let _ = p.done.send(res.as_ref().map(|_| ()).map_err(Clone::clone));
        }
    }
}

/// Writes a batch in one transaction; true when new jobs were queued.
async fn write_batch(
    db: &Db,
    cfg: &BreakerConfig,
    cache: &BreakerCache,
    batch: &[Pending],
) -> Result<bool, aragora_store::sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let mut breakers: BTreeMap<&str, Vec<BreakerEvent>> = BTreeMap::new();
    let mut queued = false;
    let mut results = Vec::with_capacity(batch.len());
    let mut defers = Vec::new();
    for p in batch {
        match &p.write {
            Write::Attempt {
                result,
                breaker,
                disable,
                ..
            } => {
                results.push(result);
                if let Some((id, ev)) = breaker {
                    breakers.entry(id.as_str()).or_default().push(*ev);
                }
                if let Some((id, reason)) = disable {
                    store::disable_in(&mut tx, id, reason, now).await?;
                }
            }
            Write::Defer { receipt_id, run_at } => defers.push((receipt_id.as_str(), *run_at)),
        }
    }
    if !defers.is_empty() {
        queued |= store::defer_in(&mut tx, db.dialect(), &defers, now).await? > 0;
    }
    // Follow-up attempts only for receipts this batch actually recorded (a job that ran twice
    // finds its receipt recorded already and schedules nothing).
    let recorded: HashSet<String> = store::record_attempts_in(&mut tx, &results)
        .await?
        .into_iter()
        .collect();
    let next: Vec<NewAttempt> = batch
        .iter()
        .filter_map(|p| match &p.write {
            Write::Attempt {
                result,
                next: Some(n),
                ..
            } if recorded.contains(&result.receipt_id) => Some(n.clone()),
            _ => None,
        })
        .collect();
    queued |= !next.is_empty();
    store::schedule_in(&mut tx, db.dialect(), &next, now).await?;
    // Sorted by webhook id (BTreeMap), so concurrent recorders lock breaker rows in one order.
    for (id, events) in breakers {
        apply_breaker_in(&mut tx, cfg, cache, id, &events).await?;
    }
    tx.commit().await?;
    Ok(queued)
}

/// Folds results into an endpoint's breaker with compare-and-swap, re-reading on a lost swap.
/// The last breaker row this process wrote or read, to compare-and-swap against without reading
/// first; a lost swap (someone else changed it) reads the row and tries again.
async fn apply_breaker_in(
    conn: &mut AnyConnection,
    cfg: &BreakerConfig,
    cache: &BreakerCache,
    webhook_id: &str,
    events: &[BreakerEvent],
) -> Result<(), aragora_store::sqlx::Error> {
    let mut cached = cache.get(webhook_id).map(|e| e.clone());
    for _ in 0..16 {
        let from_cache = cached.is_some();
        let (state, version) = match cached.take() {
            Some(c) => c,
            None => {
                let row = store::breaker_get_in(conn, webhook_id).await?;
                parse_breaker(row.as_ref().map(|(s, v)| (s.as_str(), *v)))
            }
        };
        let mut next = state.clone();
        for ev in events {
            // Only the probe's result decides a half-open breaker; late results of requests
            // admitted while it was closed do not.
            if matches!(next, BreakerState::HalfOpen { .. }) && !ev.probe {
                continue;
            }
            if ev.success {
                next.on_success(ev.at_ms, cfg);
            } else {
                next.on_failure(ev.at_ms, cfg);
            }
        }
        if next == state {
            if from_cache {
                // "Nothing changes" must be judged on the row itself, not on a possibly stale copy
                // (e.g. a probe taken by a handler moved it to half-open).
                continue;
            }
            cache.insert(webhook_id.to_string(), (state, version));
            return Ok(());
        }
        if next.name() != state.name() {
            tracing::info!(
                webhook = webhook_id,
                from = state.name(),
                to = next.name(),
                "webhook circuit breaker changed state"
            );
        }
        let json = serde_json::to_string(&next).unwrap_or_default();
        if store::breaker_cas_in(conn, webhook_id, version, &json, now_ms()).await? {
            cache.insert(webhook_id.to_string(), (next, version + 1));
            return Ok(());
        }
        cache.remove(webhook_id);
    }
    tracing::warn!(
        webhook = webhook_id,
        "breaker update lost 16 compare-and-swaps in a row; dropping these results"
    );
    Ok(())
}

/// `WebhookDeliveryWorker`: the job handler of the `webhooks` queue.
pub struct WebhookDeliveryWorker {
    engine: Arc<WebhookEngine>,
}

impl WebhookDeliveryWorker {
    pub fn new(engine: Arc<WebhookEngine>) -> Self {
        WebhookDeliveryWorker { engine }
    }
}

#[async_trait]
impl JobHandler for WebhookDeliveryWorker {
    async fn handle(&self, job: ClaimedJob) -> Result<(), JobError> {
        let Some(receipt_id) = job.payload.get("receipt_id").and_then(|v| v.as_str()) else {
            return Err(JobError::Permanent(format!(
                "webhook job without receipt_id: {}",
                job.payload
            )));
        };
        self.engine.deliver(receipt_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_the_guides_shape_in_order() {
        let b = envelope(
            "debate.completed",
            "evt-789",
            1_705_752_000_000,
            r#"{"a":1}"#,
        );
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"event_type":"debate.completed","event_id":"evt-789","timestamp":"2024-01-20T12:00:00.000Z","data":{"a":1}}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["data"]["a"], 1);
    }
}
