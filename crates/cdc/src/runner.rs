//! The start/stop/is_running scaffolding every connector shares: at most one background capture
//! task per connector, refused while one runs or while no handler would receive its events; and
//! the task's loop itself ([`supervise`]): sessions until stopped, reconnecting with backoff.

use crate::CdcError;
use crate::pipeline::{Handlers, Status, retry_delay};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The slot holding a connector's capture task.
#[derive(Default)]
pub struct TaskSlot {
    running: tokio::sync::Mutex<Option<Running>>,
}

impl TaskSlot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts capture: refuses while a task runs or with no handler, marks `status` as
    /// `starting` (source error cleared), then awaits `launch` — which prepares the source and
    /// spawns the task, stopping when the given token is cancelled — and keeps the task. A
    /// `launch` error is returned as is (the slot stays empty; `launch` records it in `status`
    /// as the connector sees fit). Holding the slot's lock throughout keeps two concurrent
    /// starts from both launching.
    pub async fn start<F, Fut>(
        &self,
        handlers: &Handlers,
        status: &Status,
        launch: F,
    ) -> Result<(), CdcError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<JoinHandle<()>, CdcError>>,
    {
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_ref()
            && !r.task.is_finished()
        {
            return Err(CdcError::State("the connector is already running".into()));
        }
        if handlers.read().is_empty() {
            return Err(CdcError::State(
                "add a change handler before starting capture".into(),
            ));
        }
        status.set_phase("starting");
        status.set_source_error(None);
        let stop = CancellationToken::new();
        let task = launch(stop.clone()).await?;
        status.running.store(true, Ordering::Relaxed);
        *running = Some(Running { stop, task });
        Ok(())
    }

    /// Stops capture: cancels the task and waits for it to end, then marks `status` as not
    /// running and — unless `keep_phase` says the phase the task ended in must stay visible
    /// (e.g. `failed`) — as `stopped`. Stopping a stopped connector is a no-op that succeeds.
    pub async fn stop(&self, status: &Status, keep_phase: impl FnOnce(&Status) -> bool) {
        let r = self.running.lock().await.take();
        if let Some(r) = r {
            r.stop.cancel();
            let _ = r.task.await;
        }
        status.running.store(false, Ordering::Relaxed);
        if !keep_phase(status) {
            status.set_phase("stopped");
        }
    }

    /// Whether a capture task is alive (it may have ended on its own after a fatal error).
    pub async fn is_running(&self) -> bool {
        matches!(&*self.running.lock().await, Some(r) if !r.task.is_finished())
    }

    /// Waits until the capture task ends (stop, or a fatal error such as a lost lease or lost
    /// history); returns at once when none was started.
    pub async fn finished(&self) {
        // Polled: the task's handle stays in the slot so that `stop` can still await it.
        while self.is_running().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How a capture session that failed ends.
#[derive(Debug)]
pub(crate) enum SessionError {
    /// Recorded as the source error and retried after a backoff.
    Retry(CdcError),
    /// Ends the task in `phase` (`fenced`, `failed`, `history_lost`), recording `error` as the
    /// source error when given; the phase stays visible after the task ends.
    Fatal {
        phase: &'static str,
        error: Option<String>,
    },
}

impl SessionError {
    pub(crate) fn failed(error: impl ToString) -> Self {
        SessionError::Fatal {
            phase: "failed",
            error: Some(error.to_string()),
        }
    }
}

impl From<CdcError> for SessionError {
    /// A lost lease ends the task (another node owns the connector now); anything else is retried.
    fn from(e: CdcError) -> Self {
        match e {
            CdcError::Fenced => SessionError::Fatal {
                phase: "fenced",
                error: None,
            },
            e => SessionError::Retry(e),
        }
    }
}

/// A connector's background task: runs `session` until `stop` is cancelled or a session ends
/// fatally. After each session (failed or ended on its own) the phase is `reconnecting` for a
/// backoff that grows with consecutive failures; a session that ended cleanly resets it. On exit
/// the status is not running and its phase `stopped`, unless a fatal error set another.
/// `what` names the session in logs ("binlog session", "Snowflake poll", …).
pub(crate) async fn supervise<F, Fut>(
    connector_id: &str,
    status: &Status,
    what: &str,
    stop: &CancellationToken,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), SessionError>>,
{
    let mut attempt = 0u32;
    let mut fatal = false;
    loop {
        match session().await {
            Ok(()) if stop.is_cancelled() => break,
            Ok(()) => attempt = 0,
            Err(SessionError::Fatal { phase, error }) => {
                match &error {
                    Some(e) => {
                        tracing::error!(connector = %connector_id, phase, error = %e, "{what} ended; stopping")
                    }
                    None => {
                        tracing::warn!(connector = %connector_id, phase, "{what} ended; stopping")
                    }
                }
                if error.is_some() {
                    status.set_source_error(error);
                }
                status.set_phase(phase);
                fatal = true;
                break;
            }
            Err(SessionError::Retry(e)) => {
                tracing::warn!(connector = %connector_id, error = %e, "{what} failed; reconnecting");
                status.set_source_error(Some(e.to_string()));
                status.reconnects.fetch_add(1, Ordering::Relaxed);
            }
        }
        if stop.is_cancelled() {
            break;
        }
        status.set_phase("reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(retry_delay(attempt)) => {}
            _ = stop.cancelled() => break,
        }
        attempt = attempt.saturating_add(1);
    }
    status.running.store(false, Ordering::Relaxed);
    if !fatal {
        status.set_phase("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallbackHandler, ChangeHandler};
    use parking_lot::RwLock;
    use std::sync::Arc;

    fn handlers(n: usize) -> Handlers {
        let hs: Vec<Arc<dyn ChangeHandler>> = (0..n)
            .map(|_| Arc::new(CallbackHandler::new(|_| async {})) as Arc<dyn ChangeHandler>)
            .collect();
        Arc::new(RwLock::new(hs))
    }

    fn until_cancelled(stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move { stop.cancelled().await })
    }

    #[tokio::test]
    async fn start_refuses_without_handlers_and_leaves_status_alone() {
        let slot = TaskSlot::new();
        let status = Status::default();
        status.set_phase("stopped");
        let e = slot
            .start(&handlers(0), &status, |stop| async move {
                Ok(until_cancelled(stop))
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("add a change handler"), "{e}");
        assert_eq!(status.phase(), "stopped");
        assert!(!slot.is_running().await);
    }

    #[tokio::test]
    async fn second_start_is_refused_and_stop_cancels_and_awaits_the_task() {
        let slot = TaskSlot::new();
        let status = Status::default();
        let hs = handlers(1);
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ended.clone();
        slot.start(&hs, &status, |stop| async move {
            Ok(tokio::spawn(async move {
                stop.cancelled().await;
                flag.store(true, Ordering::SeqCst);
            }))
        })
        .await
        .unwrap();
        assert!(slot.is_running().await);
        assert!(status.running.load(Ordering::Relaxed));
        assert_eq!(status.phase(), "starting");
        let e = slot
            .start(
                &hs,
                &status,
                |stop| async move { Ok(until_cancelled(stop)) },
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("already running"), "{e}");

        slot.stop(&status, |_| false).await;
        assert!(
            ended.load(Ordering::SeqCst),
            "stop returned before the task ended"
        );
        assert!(!slot.is_running().await);
        assert!(!status.running.load(Ordering::Relaxed));
        assert_eq!(status.phase(), "stopped");
        // Stopping again is a no-op; starting again works.
        slot.stop(&status, |_| false).await;
        slot.start(
            &hs,
            &status,
            |stop| async move { Ok(until_cancelled(stop)) },
        )
        .await
        .unwrap();
        assert!(slot.is_running().await);
        slot.stop(&status, |_| false).await;
    }

    #[tokio::test]
    async fn launch_errors_leave_the_slot_empty_and_a_failed_phase_can_be_kept() {
        let slot = TaskSlot::new();
        let status = Status::default();
        let hs = handlers(1);
        let e = slot
            .start(&hs, &status, |_| async {
                Err(CdcError::Source("unreachable".into()))
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unreachable"));
        assert!(!slot.is_running().await);
        assert!(!status.running.load(Ordering::Relaxed));

        // A task that ends on its own (fatal error): not running, `finished` returns, and a
        // `failed` phase survives stop when the connector asks for it.
        slot.start(&hs, &status, |_| async { Ok(tokio::spawn(async {})) })
            .await
            .unwrap();
        slot.finished().await;
        assert!(!slot.is_running().await);
        status.set_phase("failed");
        slot.stop(&status, |s| s.phase() == "failed").await;
        assert_eq!(status.phase(), "failed");
        slot.stop(&status, |_| false).await;
        assert_eq!(status.phase(), "stopped");
    }

    #[tokio::test]
    async fn supervise_retries_failures_then_keeps_a_fatal_phase() {
        let status = Status::default();
        let stop = CancellationToken::new();
        let mut calls = 0;
        supervise("c1", &status, "test session", &stop, || {
            calls += 1;
            let n = calls;
            async move {
                match n {
                    1 | 2 => Err(CdcError::Source(format!("boom {n}")).into()),
                    _ => Err(SessionError::failed("history gone")),
                }
            }
        })
        .await;
        assert_eq!(calls, 3);
        assert_eq!(status.reconnects.load(Ordering::Relaxed), 2);
        assert_eq!(status.phase(), "failed");
        assert!(!status.running.load(Ordering::Relaxed));
        assert_eq!(status.source_error().as_deref(), Some("history gone"));
    }

    #[tokio::test]
    async fn supervise_ends_fenced_on_a_lost_lease_and_stopped_on_cancel() {
        let status = Status::default();
        let stop = CancellationToken::new();
        supervise("c1", &status, "test session", &stop, || async {
            Err(CdcError::Fenced.into())
        })
        .await;
        assert_eq!(status.phase(), "fenced");
        assert_eq!(status.reconnects.load(Ordering::Relaxed), 0);

        let status = Status::default();
        let stopper = stop.clone();
        let mut calls = 0;
        supervise("c1", &status, "test session", &stop, || {
            calls += 1;
            if calls == 2 {
                stopper.cancel();
            }
            async { Ok(()) }
        })
        .await;
        assert_eq!(calls, 2);
        assert_eq!(status.phase(), "stopped");
        assert!(!status.running.load(Ordering::Relaxed));
    }
}
