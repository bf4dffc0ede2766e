//! Change handlers: what a connector hands its events to.
//!
//! Handlers receive events in source order, in batches. A batch is acknowledged when the handler
//! returns `Ok`; an error makes the connector retry the same batch with backoff (so handlers must
//! be idempotent — event ids are stable across replays for exactly that reason).

use crate::ChangeEvent;
use async_trait::async_trait;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

/// Why a handler did not acknowledge a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub message: String,
}

impl HandlerError {
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::new(e.to_string())
    }
}

/// Receives change events.
#[async_trait]
pub trait ChangeHandler: Send + Sync {
    /// A short name for health reports and logs.
    fn name(&self) -> String {
        "handler".into()
    }

    /// Handles one event.
    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError>;

    /// Handles a batch in order; the default calls [`handle`](Self::handle) for each event.
    /// Overriding it lets a handler write a batch in one transaction.
    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        for e in events {
            self.handle(e).await?;
        }
        Ok(())
    }
}

/// What a callback may return: `()` (always succeeds) or a `Result` whose error is shown.
pub trait IntoHandlerResult {
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: fmt::Display> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(|e| HandlerError::new(e.to_string()))
    }
}

type Callback = dyn Fn(ChangeEvent) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync;

/// Calls an async closure for each event (the guide's `CallbackHandler(on_change)`).
pub struct CallbackHandler {
    name: String,
    f: Box<Callback>,
}

impl CallbackHandler {
    pub fn new<F, Fut, R>(f: F) -> Self
    where
        F: Fn(ChangeEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoHandlerResult,
    {
        CallbackHandler {
            name: "callback".into(),
            f: Box::new(move |e| {
                let fut = f(e);
                Box::pin(async move { fut.await.into_handler_result() })
            }),
        }
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

#[async_trait]
impl ChangeHandler for CallbackHandler {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        (self.f)(event.clone()).await
    }
}

/// Runs several handlers concurrently on each batch; the batch is acknowledged only when all of
/// them succeeded. On a retry every handler sees the batch again (they are idempotent).
#[derive(Default)]
pub struct CompositeHandler {
    handlers: RwLock<Vec<Arc<dyn ChangeHandler>>>,
}

impl CompositeHandler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_handler(&self, handler: Arc<dyn ChangeHandler>) {
        self.handlers.write().push(handler);
    }

    pub fn with(self, handler: Arc<dyn ChangeHandler>) -> Self {
        self.add_handler(handler);
        self
    }

    pub fn len(&self) -> usize {
        self.handlers.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ChangeHandler for CompositeHandler {
    fn name(&self) -> String {
        let names: Vec<String> = self.handlers.read().iter().map(|h| h.name()).collect();
        format!("composite[{}]", names.join(","))
    }

    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event)).await
    }

    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        let handlers: Vec<Arc<dyn ChangeHandler>> = self.handlers.read().clone();
        let results =
            futures::future::join_all(handlers.iter().map(|h| h.handle_batch(events))).await;
        let failures: Vec<String> = handlers
            .iter()
            .zip(results)
            .filter_map(|(h, r)| r.err().map(|e| format!("{}: {e}", h.name())))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(HandlerError::new(failures.join("; ")))
        }
    }
}
