//! The delivery loop shared by every connector: a reader produces [`Batch`]es in source order; the
//! dispatcher hands each batch to every handler concurrently, retries failures with backoff
//! (never skipping), then persists the checkpoint and only then tells the source it may release
//! what came before (prune the changelog, confirm the LSN).

use crate::{CdcError, checkpoint::RECENT_EVENTS};
use crate::{ChangeEvent, ChangeHandler, ChangeOperation, Checkpoint, CheckpointStore};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Events in source order plus the position reached after them.
#[derive(Debug)]
pub struct Batch {
    pub events: Vec<ChangeEvent>,
    /// The checkpoint to persist once every event of this batch (and before) is acknowledged.
    pub checkpoint: Checkpoint,
    /// Source position the source may release once the checkpoint is durable (changelog id or
    /// LSN); `None` when this batch ends inside a source transaction.
    pub release: Option<u64>,
}

pub type Handlers = Arc<RwLock<Vec<Arc<dyn ChangeHandler>>>>;

/// Waits for a dispatcher task to end (its sender dropped, or stop) and returns its result.
pub async fn join_dispatcher(
    dispatcher: tokio::task::JoinHandle<Result<(), CdcError>>,
) -> Result<(), CdcError> {
    dispatcher
        .await
        .map_err(|e| CdcError::State(format!("dispatcher panicked: {e}")))?
}

/// The events gathered so far, leaving an empty vector of the same capacity behind: growing each
/// batch's vector from empty would copy every event several times and fault in fresh pages.
pub fn take_events(events: &mut Vec<ChangeEvent>) -> Vec<ChangeEvent> {
    std::mem::replace(events, Vec::with_capacity(events.capacity()))
}

/// Hands `batch` to the dispatcher; `false` when stopping or when the dispatcher is gone.
pub async fn send_batch(
    tx: &tokio::sync::mpsc::Sender<Batch>,
    batch: Batch,
    stop: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        r = tx.send(batch) => r.is_ok(),
        _ = stop.cancelled() => false,
    }
}

/// Live counters and state of one connector, shown by `health_check()`.
#[derive(Default)]
pub struct Status {
    pub running: AtomicBool,
    pub events_total: AtomicU64,
    pub handler_errors_total: AtomicU64,
    pub consecutive_failures: AtomicU64,
    pub reconnects: AtomicU64,
    inner: Mutex<StatusInner>,
}

#[derive(Default)]
struct StatusInner {
    phase: String,
    last_error: Option<String>,
    last_error_at_ms: Option<i64>,
    source_error: Option<String>,
    last_event_at_ms: Option<i64>,
    lag_ms: Option<i64>,
    checkpoint: Option<Checkpoint>,
    checkpoint_at_ms: Option<i64>,
    fenced: bool,
    snapshot_rows: u64,
    schema_changes: u64,
    truncates_ignored: u64,
    /// Source-specific runtime details (e.g. MongoDB notices), merged into `details()`.
    extra: Map<String, Value>,
}

impl Status {
    pub fn set_phase(&self, phase: &str) {
        self.inner.lock().phase = phase.to_string();
    }

    pub fn phase(&self) -> String {
        self.inner.lock().phase.clone()
    }

    pub fn set_source_error(&self, error: Option<String>) {
        self.inner.lock().source_error = error;
    }

    pub fn source_error(&self) -> Option<String> {
        self.inner.lock().source_error.clone()
    }

    pub fn add_snapshot_rows(&self, n: u64) {
        self.inner.lock().snapshot_rows += n;
    }

    pub fn schema_changed(&self) {
        self.inner.lock().schema_changes += 1;
    }

    pub fn truncate_ignored(&self) {
        self.inner.lock().truncates_ignored += 1;
    }

    /// Sets a source-specific runtime detail shown by `details()` (and so reported by the node
    /// that runs the connector).
    pub fn set_detail(&self, key: &str, value: Value) {
        self.inner.lock().extra.insert(key.to_string(), value);
    }

    pub fn is_fenced(&self) -> bool {
        self.inner.lock().fenced
    }

    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.inner.lock().checkpoint.clone()
    }

    fn handler_failed(&self, message: String, failures: u64) {
        self.handler_errors_total
            .fetch_add(failures, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        let mut s = self.inner.lock();
        s.last_error = Some(message);
        s.last_error_at_ms = Some(aragora_core::time::now_ms());
    }

    /// True while handlers succeed, the source answers and the lease is held.
    pub fn healthy(&self) -> bool {
        let s = self.inner.lock();
        self.consecutive_failures.load(Ordering::Relaxed) == 0
            && s.source_error.is_none()
            && !s.fenced
    }

    /// The `details` object of a health report.
    pub fn details(&self) -> Map<String, Value> {
        let s = self.inner.lock();
        let ms = |v: Option<i64>| v.map(aragora_core::time::rfc3339);
        let v = json!({
            "running": self.running.load(Ordering::Relaxed),
            "phase": if s.phase.is_empty() { "stopped" } else { s.phase.as_str() },
            "events_total": self.events_total.load(Ordering::Relaxed),
            "handler_errors_total": self.handler_errors_total.load(Ordering::Relaxed),
            "consecutive_handler_failures": self.consecutive_failures.load(Ordering::Relaxed),
            "last_handler_error": s.last_error,
            "last_handler_error_at": ms(s.last_error_at_ms),
            "source_error": s.source_error,
            "reconnects": self.reconnects.load(Ordering::Relaxed),
            "last_event_at": ms(s.last_event_at_ms),
            "lag_ms": s.lag_ms,
            "resume_token": s.checkpoint.as_ref().map(|c| c.resume_token.clone()),
            "sequence_number": s.checkpoint.as_ref().map(|c| c.sequence_number),
            "checkpoint_at": ms(s.checkpoint_at_ms),
            "snapshot_rows": s.snapshot_rows,
            "schema_changes": s.schema_changes,
            "truncates_ignored": s.truncates_ignored,
            "fenced": s.fenced,
        });
        match v {
            Value::Object(mut m) => {
                for (k, v) in &s.extra {
                    m.entry(k.clone()).or_insert_with(|| v.clone());
                }
                m
            }
            _ => Map::new(),
        }
    }
}

/// Backoff before retry `attempt` (0-based): 100 ms doubling to 30 s, ±20 % jitter.
pub fn retry_delay(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(9)).min(30_000) as f64;
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    Duration::from_millis((base * jitter) as u64)
}

/// Hands batches to handlers and persists checkpoints.
pub struct Dispatcher {
    pub connector_id: String,
    pub handlers: Handlers,
    pub checkpoints: Arc<dyn CheckpointStore>,
    pub status: Arc<Status>,
    /// Longest time an acknowledged position waits before it is persisted (positions are
    /// persisted at most this often; on a crash up to this much is delivered again).
    pub checkpoint_interval: Duration,
}

impl Dispatcher {
    /// Runs until `stop` fires or the reader hangs up. Returns `Err(Fenced)` when the checkpoint
    /// store refused because another node owns the connector.
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Batch>,
        release: watch::Sender<u64>,
        stop: CancellationToken,
    ) -> Result<(), CdcError> {
        // The series exist from the start, so rate() and alerts see 0 rather than nothing.
        metrics::counter!("aragora_cdc_handler_errors_total", "connector" => self.connector_id.clone())
            .increment(0);
        for op in ["INSERT", "UPDATE", "DELETE"] {
            metrics::counter!("aragora_cdc_events_total", "connector" => self.connector_id.clone(), "operation" => op)
                .increment(0);
        }
        // The newest delivered batches (moved, not cloned), enough of them to hold the last
        // RECENT_EVENTS events shown by the API; cut down to those events when persisted.
        let mut recent: VecDeque<Vec<ChangeEvent>> = VecDeque::new();
        // Acknowledged but not yet persisted: (checkpoint, release, acknowledged since).
        let mut pending: Option<(Checkpoint, Option<u64>, Instant)> = None;
        let mut last_release: Option<u64> = None;
        // Whether the last batch's checkpoint was inside a snapshot.
        let mut snapshot_running = false;
        loop {
            let due = pending
                .as_ref()
                .map(|(_, _, since)| self.checkpoint_interval.saturating_sub(since.elapsed()));
            let batch = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                b = rx.recv() => match b { Some(b) => b, None => break },
                _ = tokio::time::sleep(due.unwrap_or(Duration::MAX)), if due.is_some() => {
                    if let Some((cp, rel, _)) = pending.take() {
                        self.persist(&cp, rel, &mut recent, &release, &stop).await?;
                    }
                    continue;
                }
            };
            if !batch.events.is_empty() {
                if !self.deliver(&batch.events, &stop).await {
                    break;
                }
                self.account(&batch.events, rx.is_empty());
                let covered = batch.events.len() >= RECENT_EVENTS;
                if covered {
                    recent.clear();
                }
                recent.push_back(batch.events);
                while !covered
                    && recent.len() > 1
                    && recent.iter().skip(1).map(Vec::len).sum::<usize>() >= RECENT_EVENTS
                {
                    recent.pop_front();
                }
            }
            if batch.release.is_some() {
                last_release = batch.release;
            }
            let since = pending.as_ref().map(|p| p.2).unwrap_or_else(Instant::now);
            // The end of a snapshot is persisted at once: a crash within the interval after it
            // would otherwise copy the tables again on the next start.
            let snapshot_ended = batch.checkpoint.snapshot_done && snapshot_running;
            snapshot_running = !batch.checkpoint.snapshot_done;
            pending = Some((batch.checkpoint, last_release, since));
            if (snapshot_ended || since.elapsed() >= self.checkpoint_interval)
                && let Some((cp, rel, _)) = pending.take()
            {
                self.persist(&cp, rel, &mut recent, &release, &stop).await?;
            }
        }
        if let Some((cp, rel, _)) = pending.take() {
            // Everything in `pending` was acknowledged: persist it on the way out.
            self.persist(&cp, rel, &mut recent, &release, &stop).await?;
        }
        Ok(())
    }

    async fn persist(
        &self,
        cp: &Checkpoint,
        rel: Option<u64>,
        recent: &mut VecDeque<Vec<ChangeEvent>>,
        release: &watch::Sender<u64>,
        stop: &CancellationToken,
    ) -> Result<(), CdcError> {
        let total: usize = recent.iter().map(Vec::len).sum();
        let newest: Vec<ChangeEvent> = recent
            .iter()
            .flatten()
            .skip(total.saturating_sub(RECENT_EVENTS))
            .cloned()
            .collect();
        self.save(cp, &newest, stop).await?;
        recent.clear();
        if let Some(r) = rel {
            let _ = release.send(r);
        }
        Ok(())
    }

    /// Delivers one batch to every handler until all acknowledged; `false` if stopped first.
    pub async fn deliver(&self, events: &[ChangeEvent], stop: &CancellationToken) -> bool {
        let mut attempt = 0u32;
        // Handlers that already acknowledged this batch are not asked again on a retry.
        let mut done: Vec<usize> = Vec::new();
        loop {
            let handlers: Vec<Arc<dyn ChangeHandler>> = self.handlers.read().clone();
            let todo: Vec<(usize, &Arc<dyn ChangeHandler>)> = handlers
                .iter()
                .enumerate()
                .filter(|(i, _)| !done.contains(i))
                .collect();
            let results =
                futures::future::join_all(todo.iter().map(|(_, h)| h.handle_batch(events))).await;
            let mut failures = Vec::new();
            for ((i, h), r) in todo.iter().zip(results) {
                match r {
                    Ok(()) => done.push(*i),
                    Err(e) => failures.push(format!("{}: {e}", h.name())),
                }
            }
            if failures.is_empty() {
                self.status.consecutive_failures.store(0, Ordering::Relaxed);
                return true;
            }
            let n = failures.len() as u64;
            let message = failures.join("; ");
            if stop.is_cancelled() {
                // A handler cut short by the stop is not a failure: the batch stays unacknowledged
                // and comes again on the next start.
                tracing::debug!(connector = %self.connector_id, error = %message, "stopping with a batch unacknowledged");
                return false;
            }
            tracing::warn!(connector = %self.connector_id, attempt, error = %message, "handler failed; retrying");
            metrics::counter!("aragora_cdc_handler_errors_total", "connector" => self.connector_id.clone())
                .increment(n);
            self.status.handler_failed(message, n);
            let delay = retry_delay(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return false,
            }
        }
    }

    /// Counts a delivered batch. Lag is the age of the last delivered change while more are
    /// queued, and 0 once caught up (an idle stream is not behind).
    fn account(&self, events: &[ChangeEvent], caught_up: bool) {
        let (mut ins, mut upd, mut del) = (0u64, 0u64, 0u64);
        for e in events {
            match e.operation {
                ChangeOperation::Insert => ins += 1,
                ChangeOperation::Update => upd += 1,
                ChangeOperation::Delete => del += 1,
            }
        }
        for (op, n) in [("INSERT", ins), ("UPDATE", upd), ("DELETE", del)] {
            if n > 0 {
                metrics::counter!("aragora_cdc_events_total", "connector" => self.connector_id.clone(), "operation" => op)
                    .increment(n);
            }
        }
        self.status
            .events_total
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let now = aragora_core::time::now_ms();
        if let Some(last) = events.last() {
            let lag = if caught_up {
                0
            } else {
                aragora_core::time::parse_rfc3339(&last.timestamp)
                    .map(|t| (now - t).max(0))
                    .unwrap_or(0)
            };
            metrics::gauge!("aragora_cdc_lag_seconds", "connector" => self.connector_id.clone())
                .set(lag as f64 / 1000.0);
            let mut s = self.status.inner.lock();
            s.last_event_at_ms = Some(now);
            s.lag_ms = Some(lag);
        }
    }

    async fn save(
        &self,
        cp: &Checkpoint,
        recent: &[ChangeEvent],
        stop: &CancellationToken,
    ) -> Result<(), CdcError> {
        let mut attempt = 0;
        loop {
            match self.checkpoints.save(&self.connector_id, cp, recent).await {
                Ok(()) => {
                    let mut s = self.status.inner.lock();
                    if s.source_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("checkpoint:"))
                    {
                        s.source_error = None;
                    }
                    s.checkpoint = Some(cp.clone());
                    s.checkpoint_at_ms = Some(aragora_core::time::now_ms());
                    return Ok(());
                }
                Err(CdcError::Fenced) => {
                    self.status.inner.lock().fenced = true;
                    return Err(CdcError::Fenced);
                }
                Err(e) => {
                    tracing::warn!(connector = %self.connector_id, error = %e, "checkpoint save failed; retrying");
                    self.status
                        .set_source_error(Some(format!("checkpoint: {e}")));
                    if stop.is_cancelled() && attempt > 3 {
                        return Err(e);
                    }
                    tokio::time::sleep(retry_delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCheckpoints;

    fn batch(seq: i64, snapshot_done: bool) -> Batch {
        Batch {
            events: Vec::new(),
            checkpoint: Checkpoint {
                resume_token: format!("pos-{seq}"),
                sequence_number: seq,
                snapshot_done,
            },
            release: None,
        }
    }

    struct Refuses;

    #[async_trait::async_trait]
    impl ChangeHandler for Refuses {
        async fn handle(&self, _: &ChangeEvent) -> Result<(), crate::HandlerError> {
            Err(crate::HandlerError::new("cut short"))
        }
    }

    #[tokio::test]
    async fn a_handler_cut_short_by_the_stop_is_not_counted_as_failed() {
        let status = Arc::new(Status::default());
        let dispatcher = Dispatcher {
            connector_id: "c".into(),
            handlers: Arc::new(RwLock::new(vec![
                Arc::new(Refuses) as Arc<dyn ChangeHandler>
            ])),
            checkpoints: Arc::new(MemoryCheckpoints::default()),
            status: status.clone(),
            checkpoint_interval: Duration::from_secs(1),
        };
        let event: ChangeEvent = serde_json::from_value(json!({
            "id": "e", "source_type": "mysql", "connector_id": "c", "operation": "INSERT",
            "timestamp": "2026-11-27T00:00:00Z", "database": "d", "table": "t", "data": {},
            "old_data": {}, "primary_key": {}, "resume_token": "p", "sequence_number": 1
        }))
        .unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(
            !dispatcher
                .deliver(std::slice::from_ref(&event), &stop)
                .await
        );
        assert_eq!(status.consecutive_failures.load(Ordering::Relaxed), 0);
        let running = CancellationToken::new();
        let again = tokio::spawn(async move {
            dispatcher
                .deliver(std::slice::from_ref(&event), &running)
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            status.consecutive_failures.load(Ordering::Relaxed) >= 1,
            "a real failure counts"
        );
        again.abort();
    }

    #[tokio::test]
    async fn a_finished_snapshot_is_persisted_at_once_and_other_positions_wait_for_the_interval() {
        let store = Arc::new(MemoryCheckpoints::default());
        let dispatcher = Dispatcher {
            connector_id: "c".into(),
            handlers: Handlers::default(),
            checkpoints: store.clone(),
            status: Arc::new(Status::default()),
            checkpoint_interval: Duration::from_secs(3600),
        };
        let (tx, rx) = mpsc::channel(8);
        let (release, _) = watch::channel(0);
        let stop = CancellationToken::new();
        let task = tokio::spawn(dispatcher.run(rx, release, stop.clone()));
        let persisted = || async {
            // The dispatcher works through the channel in order; give it a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.load("c").await.unwrap().map(|c| c.sequence_number)
        };
        tx.send(batch(1, false)).await.unwrap();
        tx.send(batch(2, false)).await.unwrap();
        assert_eq!(
            persisted().await,
            None,
            "snapshot progress waits for the interval"
        );
        tx.send(batch(3, true)).await.unwrap();
        assert_eq!(
            persisted().await,
            Some(3),
            "the snapshot's end is persisted at once"
        );
        tx.send(batch(4, true)).await.unwrap();
        assert_eq!(
            persisted().await,
            Some(3),
            "streamed positions wait for the interval"
        );
        drop(tx);
        task.await.unwrap().unwrap();
        let last = store.load("c").await.unwrap().unwrap();
        assert_eq!(
            (last.sequence_number, last.snapshot_done),
            (4, true),
            "persisted on the way out"
        );
    }
}
