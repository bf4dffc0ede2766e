//! `aragora cdc run`: one connector driven by a client library over stdin/stdout — the engine of
//! the Python SDK's in-process connectors (`aragora.connectors.enterprise.database`).
//!
//! Protocol (docs/cdc/python.md), JSON objects one per line. The client writes a spec first:
//! `{"command": "stream"|"sync"|"health", "id", "type", "config", "username", "password",
//! "checkpoint_file"}` (the password travels only here, never on the command line). Then:
//! - `stream`: `{"ready": true}` once started; each batch as `{"batch": n, "events": [...]}`,
//!   answered `{"ack": n}` or `{"nack": n, "error": "…"}` (retried with backoff; the position
//!   is saved only after an ack); `{"health": true}` answers `{"health": {...}}` of the running
//!   connector; `{"stop": true}` or end of input stops it: `{"stopped": true}`. A connector that
//!   stops itself (an error retrying cannot fix) is reported as an error line.
//! - `sync`: `{"row": {...}}` per row, then `{"done": true}`.
//! - `health`: `{"health": {"healthy", "latency_ms", "details"}}`.
//!
//! Failures: `{"error": {"kind", "field", "message"}}` and exit status 1. Logs go to stderr.

use anyhow::Result;
use aragora_cdc::{
    CdcError, ChangeEvent, ChangeHandler, CheckpointStore, Connector, FileCheckpoints,
    HandlerError, MemoryCheckpoints, managed,
};
use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Stdin, Stdout};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    command: String,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    config: Value,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    checkpoint_file: Option<String>,
}

/// The client's answers and requests on stdin after the spec.
#[derive(Deserialize)]
#[serde(untagged)]
enum Reply {
    Ack {
        ack: u64,
    },
    Nack {
        nack: u64,
        error: String,
    },
    Stop {
        stop: bool,
    },
    /// The running connector's own health (its counters, not a fresh probe's).
    Health {
        health: bool,
    },
}

/// Serialised writes of protocol lines to stdout.
#[derive(Clone)]
struct Out(Arc<Mutex<Stdout>>);

impl Out {
    async fn line(&self, v: &Value) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(v).unwrap_or_default();
        text.push(b'\n');
        let mut out = self.0.lock().await;
        out.write_all(&text).await?;
        out.flush().await
    }

    async fn error(&self, e: &CdcError) {
        let (kind, field) = match e {
            CdcError::Config { field, .. } => ("config", Some(field.as_str())),
            CdcError::Source(_) => ("source", None),
            CdcError::Checkpoint(_) => ("checkpoint", None),
            CdcError::Fenced | CdcError::State(_) => ("state", None),
        };
        let message = match e {
            CdcError::Config { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let _ = self
            .line(&json!({"error": {"kind": kind, "field": field, "message": message}}))
            .await;
    }
}

/// Hands each batch to the client and waits for its answer: an ack acknowledges the batch, a
/// nack (or the client going away, or stop) fails it, so the pipeline retries or replays it.
struct ClientHandler {
    out: Out,
    replies: Mutex<mpsc::Receiver<(u64, Option<String>)>>,
    next: AtomicU64,
    stopping: CancellationToken,
}

#[async_trait]
impl ChangeHandler for ClientHandler {
    async fn handle(&self, event: &ChangeEvent) -> Result<(), HandlerError> {
        self.handle_batch(std::slice::from_ref(event)).await
    }

    async fn handle_batch(&self, events: &[ChangeEvent]) -> Result<(), HandlerError> {
        // One batch with the client at a time: answers are matched to the batch number.
        let mut replies = self.replies.lock().await;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.out
            .line(&json!({"batch": n, "events": events}))
            .await
            .map_err(|e| HandlerError::new(format!("writing to the client: {e}")))?;
        loop {
            let reply = tokio::select! {
                r = replies.recv() => r,
                _ = self.stopping.cancelled() => {
                    return Err(HandlerError::new("stopping before the client answered"));
                }
            };
            match reply {
                Some((m, None)) if m == n => return Ok(()),
                Some((m, Some(error))) if m == n => return Err(HandlerError::new(error)),
                Some(_) => continue, // an answer to an earlier, abandoned batch
                None => return Err(HandlerError::new("the client went away")),
            }
        }
    }

    fn name(&self) -> String {
        "client".into()
    }
}

fn spec_error(message: String) -> CdcError {
    let field = aragora_cdc::error::named_field(&message)
        .unwrap_or("spec")
        .to_string();
    CdcError::config(&field, message)
}

pub async fn run() -> Result<()> {
    crate::config::init_logging(crate::config::LogFormat::Text);
    let out = Out(Arc::new(Mutex::new(tokio::io::stdout())));
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let code = match serve(&out, &mut input).await {
        Ok(()) => 0,
        Err(e) => {
            out.error(&e).await;
            1
        }
    };
    std::process::exit(code);
}

async fn serve(out: &Out, input: &mut tokio::io::Lines<BufReader<Stdin>>) -> Result<(), CdcError> {
    let line = input
        .next_line()
        .await
        .map_err(|e| CdcError::State(format!("reading the spec: {e}")))?
        .ok_or_else(|| CdcError::config("spec", "no spec line on stdin"))?;
    let spec: Spec = serde_json::from_str(&line).map_err(|e| spec_error(e.to_string()))?;
    let checkpoints: Arc<dyn CheckpointStore> = match &spec.checkpoint_file {
        Some(path) => Arc::new(FileCheckpoints::new(path)),
        None => Arc::new(MemoryCheckpoints::new()),
    };
    let conn = managed::build(managed::Spec {
        id: &spec.id,
        kind: &spec.kind,
        config: &spec.config,
        username: spec.username.clone(),
        password: spec.password.clone(),
        checkpoints: Some(checkpoints),
    })?;
    let io = |e: std::io::Error| CdcError::State(format!("writing to the client: {e}"));
    match spec.command.as_str() {
        "health" => {
            let report = conn.health_check().await;
            out.line(&json!({"health": report})).await.map_err(io)?;
        }
        "sync" => {
            let mut rows = conn.sync();
            while let Some(row) = rows.next().await {
                out.line(&json!({"row": row?})).await.map_err(io)?;
            }
            out.line(&json!({"done": true})).await.map_err(io)?;
        }
        "stream" => stream(out, input, conn).await?,
        other => {
            return Err(CdcError::config(
                "command",
                format!("expected stream, sync or health, not `{other}`"),
            ));
        }
    }
    Ok(())
}

async fn stream(
    out: &Out,
    input: &mut tokio::io::Lines<BufReader<Stdin>>,
    conn: Arc<dyn Connector>,
) -> Result<(), CdcError> {
    let (tx, rx) = mpsc::channel(16);
    let stopping = CancellationToken::new();
    conn.add_change_handler(Arc::new(ClientHandler {
        out: out.clone(),
        replies: Mutex::new(rx),
        next: AtomicU64::new(1),
        stopping: stopping.clone(),
    }));
    conn.start().await?;
    let io = |e: std::io::Error| CdcError::State(format!("writing to the client: {e}"));
    out.line(&json!({"ready": true})).await.map_err(io)?;
    // Answers until stop or end of input; a line that is not an answer is an error of the
    // client's, reported on stderr and otherwise ignored. A connector that stopped by itself
    // (duplicate server_id, history lost, lease lost) ends the session with its error.
    let mut watch = tokio::time::interval(std::time::Duration::from_millis(250));
    let failure = loop {
        let line = tokio::select! {
            line = input.next_line() => line,
            _ = watch.tick() => {
                if conn.is_running().await {
                    continue;
                }
                let status = conn.status();
                let why = status
                    .source_error()
                    .unwrap_or_else(|| format!("the connector stopped (phase {})", status.phase()));
                break Some(CdcError::Source(why));
            }
        };
        match line {
            Ok(Some(line)) => match serde_json::from_str::<Reply>(&line) {
                Ok(Reply::Ack { ack }) => {
                    let _ = tx.send((ack, None)).await;
                }
                Ok(Reply::Nack { nack, error }) => {
                    let _ = tx.send((nack, Some(error))).await;
                }
                Ok(Reply::Stop { stop: true }) => break None,
                Ok(Reply::Stop { stop: false } | Reply::Health { health: false }) => {}
                Ok(Reply::Health { health: true }) => {
                    let report = conn.health_check().await;
                    out.line(&json!({"health": report})).await.map_err(io)?;
                }
                Err(e) => {
                    tracing::warn!(line = %line, error = %e, "not an ack, nack, health or stop")
                }
            },
            Ok(None) => break None,
            Err(e) => {
                tracing::warn!(error = %e, "reading from the client; stopping");
                break None;
            }
        }
    };
    stopping.cancel();
    drop(tx);
    conn.stop().await?;
    conn.close().await?;
    if let Some(e) = failure {
        return Err(e);
    }
    out.line(&json!({"stopped": true})).await.map_err(io)?;
    Ok(())
}
