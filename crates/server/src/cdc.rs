//! The connector supervisor: runs server-managed CDC connectors. Every node that runs workers
//! reconciles the `connectors` table against what it runs: it takes the lease of each connector
//! wanted running that nobody holds (or whose holder stopped renewing), renews the leases it
//! holds, writes its connectors' health into the lease row for the API, stops what is no longer
//! wanted, and removes the source objects of deleted connectors. A lease that lapses (its node
//! died) is taken over by another node within one lease period; its fencing token grows, so the
//! old holder can no longer save checkpoints even if it comes back. Starts run in the background
//! (a source that does not answer holds its start up to the connect timeout), so one dead source
//! does not delay the others' starts and stops. Removing a deleted connector's capture objects
//! runs in the background too (up to the teardown timeout, 30 s by default, for a source that
//! does not answer), under the connector's lease, and its records go when it ends.

use crate::state::AppState;
use aragora_cdc::checkpoint::CheckpointStore;
use aragora_cdc::checkpoint::DbCheckpoints;
use aragora_cdc::managed;
use aragora_cdc::{
    ChangeHandler, Connector, KnowledgeMoundHandler, StoreKnowledgeSink, WebhookHandler,
};
use aragora_store::Db;
use aragora_store::connectors::{self, ConnectorRecord};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Handler names a connector may list.
pub const HANDLERS: [&str; 2] = ["knowledge_mound", "webhook"];

/// Lease period: `ARAGORA_CDC_LEASE_SECS` (default 15 s). Leases renew every third of it.
pub fn lease_ttl() -> Duration {
    let secs = std::env::var("ARAGORA_CDC_LEASE_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v >= 0.5)
        .unwrap_or(15.0);
    Duration::from_secs_f64(secs)
}

/// Reads the password a credentials object points at (`password_env` or `password_file`).
pub fn resolve_password(credentials: &Value) -> Result<Option<String>, String> {
    if let Some(var) = credentials.get("password_env").and_then(Value::as_str) {
        return std::env::var(var).map(Some).map_err(|_| {
            format!("environment variable {var} (credentials.password_env) is not set on this node")
        });
    }
    if let Some(path) = credentials.get("password_file").and_then(Value::as_str) {
        return std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| format!("cannot read credentials.password_file {path}: {e}"));
    }
    Ok(None)
}

/// The `aragora_cdc::managed` spec of a record: credentials resolved on this node and, when the
/// node holds the lease `(holder, fencing token)`, checkpoints fenced by it.
pub fn spec<'a>(
    db: &Db,
    record: &'a ConnectorRecord,
    lease: Option<(&str, i64)>,
) -> Result<managed::Spec<'a>, String> {
    Ok(managed::Spec {
        id: &record.id,
        kind: &record.kind,
        config: &record.config,
        username: record
            .credentials
            .get("username")
            .and_then(Value::as_str)
            .map(str::to_string),
        password: resolve_password(&record.credentials)?,
        // Without a lease the checkpoints can be read (a health probe compares the connector's
        // position with the source's) but never saved: no lease has an empty holder.
        checkpoints: Some(Arc::new(match lease {
            Some((holder, token)) => DbCheckpoints {
                db: db.clone(),
                holder: holder.to_string(),
                fencing_token: token,
            },
            None => DbCheckpoints {
                db: db.clone(),
                holder: String::new(),
                fencing_token: -1,
            },
        }) as Arc<dyn CheckpointStore>),
    })
}

/// Builds the connector of a record (not started). With a lease it gets its handlers and
/// fenced checkpoints; without one it can only probe and tear down.
pub fn build(
    db: &Db,
    record: &ConnectorRecord,
    lease: Option<(&str, i64)>,
) -> Result<Arc<dyn Connector>, String> {
    let conn = managed::build(spec(db, record, lease)?).map_err(|e| e.to_string())?;
    if lease.is_some() {
        for h in &record.handlers {
            let handler: Arc<dyn ChangeHandler> = match h.as_str() {
                "webhook" => Arc::new(WebhookHandler::new(db.clone(), record.workspace.clone())),
                "knowledge_mound" => crate::cdc::knowledge_handler(db, &record.workspace)?,
                other => return Err(format!("unknown handler `{other}`")),
            };
            conn.add_change_handler(handler);
        }
    }
    Ok(conn)
}

/// The knowledge-mound handler of a workspace.
pub fn knowledge_handler(db: &Db, workspace: &str) -> Result<Arc<dyn ChangeHandler>, String> {
    Ok(Arc::new(KnowledgeMoundHandler::new(Arc::new(
        StoreKnowledgeSink::new(db.clone(), workspace),
    ))))
}

struct Local {
    conn: Arc<dyn Connector>,
    fencing_token: i64,
}

fn status_json(node: &str, conn: Option<&Arc<dyn Connector>>) -> Value {
    let mut details = conn.map(|c| c.status().details()).unwrap_or_default();
    details.insert("node".into(), json!(node));
    let healthy = conn.is_some_and(|c| c.status().healthy());
    json!({"healthy": healthy, "details": details})
}

/// The status of a connector that stopped itself in `phase` (`failed`, `history_lost`): what it
/// reported, with that phase kept — stopping it afterwards (to give its lease back) must not turn
/// it into `stopped`, whatever the connector's own `stop()` does with its phase.
fn ended_status_json(node: &str, conn: &Arc<dyn Connector>, phase: &str) -> Value {
    let mut status = status_json(node, Some(conn));
    status["healthy"] = json!(false);
    status["details"]["phase"] = json!(phase);
    status
}

/// Why a start failed, and whether starting again can get past it.
struct StartError {
    message: String,
    /// A configuration error (`CdcError::Config`, the message naming the field): retrying
    /// cannot get past it, so the connector becomes `failed`.
    config: bool,
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        StartError {
            message,
            config: false,
        }
    }
}

/// The status a node reports for a start that failed: `phase` `failed` for a configuration error
/// (the connector becomes `failed`), else `reconnecting` (the start is tried again after a lease
/// period); the error as `source_error` (and, as before, `start_error`).
fn start_failed_json(node: &str, e: &StartError) -> Value {
    json!({"healthy": false, "details": {
        "node": node,
        "running": false,
        "phase": if e.config { "failed" } else { "reconnecting" },
        "source_error": e.message,
        "start_error": e.message,
    }})
}

/// Starts the supervisor; it stops every connector and releases its leases on shutdown.
pub fn spawn(state: AppState, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { run(state, shutdown).await })
}

async fn run(state: AppState, shutdown: CancellationToken) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let node = format!(
        "{host}:{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    );
    let ttl = lease_ttl();
    let mut sup = Supervisor {
        state: state.clone(),
        node,
        ttl_ms: ttl.as_millis() as i64,
        teardown_timeout: state.config.cdc.teardown_timeout,
        local: HashMap::new(),
        starting: HashMap::new(),
        tearing_down: HashMap::new(),
        retry_after: HashMap::new(),
    };
    tracing::info!(node = %sup.node, lease_ms = sup.ttl_ms, "connector supervisor started");
    loop {
        if let Err(e) = sup.reconcile().await {
            tracing::warn!(error = %e, "connector supervisor: reconcile failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = state.cdc_wake.notified() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    let node = sup.node.clone();
    for (id, s) in sup.starting.drain() {
        if let Ok(Ok(conn)) = s.task.await {
            let _ = conn.stop().await;
        }
        let status = status_json(&node, None);
        let _ = connectors::release_lease(&state.db, &id, &node, s.fencing_token, &status).await;
    }
    for (id, l) in sup.local.drain() {
        let _ = l.conn.stop().await;
        let status = status_json(&node, Some(&l.conn));
        let _ = connectors::release_lease(&state.db, &id, &node, l.fencing_token, &status).await;
    }
    // A teardown cut short is done again by whichever node takes the lease next (removing
    // capture objects that are already gone is not an error).
    for (id, d) in sup.tearing_down.drain() {
        d.task.abort();
        let _ = d.task.await;
        let status = deleting_status(&node);
        let _ = connectors::release_lease(&state.db, &id, &node, d.fencing_token, &status).await;
    }
    tracing::info!("connector supervisor stopped");
}

/// A start in progress, off the reconciliation loop (a source that does not answer holds its
/// start for seconds; the other connectors must not wait behind it). Its lease is held and
/// renewed meanwhile.
struct Starting {
    fencing_token: i64,
    task: tokio::task::JoinHandle<Result<Arc<dyn Connector>, StartError>>,
}

/// A deleted connector's teardown in progress (removing its capture objects from the source,
/// then its records), off the reconciliation loop: a source that does not answer holds it up to
/// the teardown timeout. Its lease, taken before the teardown began, is held and renewed
/// meanwhile, so no node runs the connector or tears it down at the same time; the task ends with
/// the removal of the connector's records (`Err` if that failed).
struct TearingDown {
    fencing_token: i64,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

fn deleting_status(node: &str) -> Value {
    json!({"healthy": false, "details": {"node": node, "phase": "deleting"}})
}

/// One node's view: what it runs, what it is starting or tearing down, and when failed starts
/// may be retried.
struct Supervisor {
    state: AppState,
    node: String,
    ttl_ms: i64,
    teardown_timeout: Duration,
    local: HashMap<String, Local>,
    starting: HashMap<String, Starting>,
    /// At most one teardown per connector id.
    tearing_down: HashMap<String, TearingDown>,
    retry_after: HashMap<String, Instant>,
}

impl Supervisor {
    async fn reconcile(&mut self) -> Result<(), aragora_store::sqlx::Error> {
        let state = self.state.clone();
        let db = &state.db;
        let (node, ttl_ms) = (self.node.clone(), self.ttl_ms);
        let node = node.as_str();
        let active = connectors::list_active(db).await?;
        let wanted: HashMap<&str, &ConnectorRecord> = active
            .iter()
            .filter(|c| c.desired_state == "running")
            .map(|c| (c.id.as_str(), c))
            .collect();

        // Starts that finished: run what is still wanted, release the rest. Those that failed
        // are left alone for the rest of this pass (`wanted` was read before).
        let mut failed_now: Vec<String> = Vec::new();
        let finished: Vec<String> = self
            .starting
            .iter()
            .filter(|(_, s)| s.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in finished {
            let s = self.starting.remove(&id).expect("present");
            let started = s
                .task
                .await
                .unwrap_or_else(|e| Err(format!("the start task ended: {e}").into()));
            match started {
                Ok(conn) if wanted.contains_key(id.as_str()) => {
                    let status = status_json(node, Some(&conn));
                    if connectors::renew_lease(db, &id, node, s.fencing_token, ttl_ms, &status)
                        .await?
                    {
                        tracing::info!(connector = %id, fencing_token = s.fencing_token, "connector started on this node");
                        self.retry_after.remove(&id);
                        self.local.insert(
                            id,
                            Local {
                                conn,
                                fencing_token: s.fencing_token,
                            },
                        );
                    } else {
                        let _ = conn.stop().await;
                    }
                }
                Ok(conn) => {
                    let _ = conn.stop().await;
                    let status = status_json(node, Some(&conn));
                    connectors::release_lease(db, &id, node, s.fencing_token, &status).await?;
                }
                Err(e) => {
                    // A configuration error fails the connector: no node starts it again until
                    // `POST …/start` (a concurrent stop or delete wins). Marked before the lease
                    // is given back, so that no other node takes it to try again meanwhile.
                    if e.config && connectors::mark_failed(db, &id).await? {
                        self.retry_after.remove(&id);
                        tracing::warn!(connector = %id, error = %e.message, "connector failed to start on a configuration error; it stays stopped until started again (POST …/start)");
                    } else {
                        tracing::warn!(connector = %id, error = %e.message, "connector failed to start");
                        self.retry_after.insert(
                            id.clone(),
                            Instant::now() + Duration::from_millis(ttl_ms as u64),
                        );
                    }
                    // (A configuration error that lost the race to a stop, a delete or another
                    // node's mark is still shown as `failed`.)
                    let status = start_failed_json(node, &e);
                    connectors::release_lease(db, &id, node, s.fencing_token, &status).await?;
                    failed_now.push(id);
                }
            }
        }
        // Starts still running keep their lease; one that lost it is abandoned.
        let lost: Vec<String> = {
            let mut lost = Vec::new();
            for (id, s) in &self.starting {
                let status =
                    json!({"healthy": false, "details": {"node": node, "phase": "starting"}});
                if !connectors::renew_lease(db, id, node, s.fencing_token, ttl_ms, &status).await? {
                    lost.push(id.clone());
                }
            }
            lost
        };
        for id in lost {
            if let Some(s) = self.starting.remove(&id) {
                s.task.abort();
            }
        }

        // Stop what is no longer wanted here, lost its lease, or died (and is taken again at the
        // next pass at the earliest, once `wanted` has been read again).
        let mut stopped_now: Vec<String> = Vec::new();
        let ids: Vec<String> = self.local.keys().cloned().collect();
        for id in ids {
            let l = &self.local[&id];
            let running = l.conn.is_running().await;
            // Stopped on an error retrying cannot get past (a configuration error such as a
            // duplicate MySQL server_id, or history the source no longer has): starting it again
            // would only repeat the error (and, for the server_id, knock the other replica off).
            let gave_up =
                !running && matches!(l.conn.status().phase().as_str(), "failed" | "history_lost");
            let keep = wanted.contains_key(id.as_str())
                && !l.conn.status().is_fenced()
                && running
                && connectors::renew_lease(
                    db,
                    &id,
                    node,
                    l.fencing_token,
                    ttl_ms,
                    &status_json(node, Some(&l.conn)),
                )
                .await?;
            if !keep {
                let l = self.local.remove(&id).expect("present");
                let ended_in = l.conn.status().phase();
                let _ = l.conn.stop().await;
                let status = if gave_up {
                    ended_status_json(node, &l.conn, &ended_in)
                } else {
                    status_json(node, Some(&l.conn))
                };
                connectors::release_lease(db, &id, node, l.fencing_token, &status).await?;
                stopped_now.push(id.clone());
                if gave_up && connectors::mark_failed(db, &id).await? {
                    tracing::warn!(connector = %id, "connector failed; it stays stopped until started again (POST …/start)");
                } else {
                    tracing::info!(connector = %id, "connector stopped on this node");
                }
            }
        }

        // Take what is wanted and free, and start it in the background; the supervisor wakes when
        // the start ends.
        for (id, record) in &wanted {
            if self.local.contains_key(*id)
                || self.starting.contains_key(*id)
                || stopped_now.iter().any(|s| s == id)
                || failed_now.iter().any(|s| s == id)
                || self
                    .retry_after
                    .get(*id)
                    .is_some_and(|t| *t > Instant::now())
            {
                continue;
            }
            let Some(token) = connectors::acquire_lease(db, id, node, ttl_ms).await? else {
                continue;
            };
            let (state, node, record) = (state.clone(), node.to_string(), (*record).clone());
            let task = tokio::spawn(async move {
                let started = match build(&state.db, &record, Some((&node, token))) {
                    Ok(conn) => conn.start().await.map(|()| conn).map_err(|e| StartError {
                        config: matches!(e, aragora_cdc::CdcError::Config { .. }),
                        message: e.to_string(),
                    }),
                    // Credentials are resolved on each node (another may have the variable).
                    Err(e) => Err(e.into()),
                };
                state.cdc_wake.notify_one();
                started
            });
            self.starting.insert(
                id.to_string(),
                Starting {
                    fencing_token: token,
                    task,
                },
            );
        }

        // Teardowns that ended: the task removed the connector's records, unless that failed;
        // then the lease is given back and a later pass tears it down again. Teardowns still
        // running keep their lease; one that lost it is abandoned to the node that took it.
        // Either way the id is left alone for the rest of this pass: `active` may have been read
        // before the task removed the records.
        let mut ended_now: Vec<String> = Vec::new();
        let ids: Vec<String> = self.tearing_down.keys().cloned().collect();
        for id in ids {
            let d = &self.tearing_down[&id];
            if d.task.is_finished() {
                let d = self.tearing_down.remove(&id).expect("present");
                let purged = d
                    .task
                    .await
                    .unwrap_or_else(|e| Err(format!("the teardown task ended: {e}")));
                if let Err(e) = purged {
                    tracing::warn!(connector = %id, error = %e, "could not remove a deleted connector's records; trying again");
                    let status = deleting_status(node);
                    connectors::release_lease(db, &id, node, d.fencing_token, &status).await?;
                }
                ended_now.push(id);
            } else if !connectors::renew_lease(
                db,
                &id,
                node,
                d.fencing_token,
                ttl_ms,
                &deleting_status(node),
            )
            .await?
            {
                let d = self.tearing_down.remove(&id).expect("present");
                d.task.abort();
                ended_now.push(id);
            }
        }

        // Deleted connectors: remove their source objects, then their records, in the background
        // under their lease (taken only once no node runs or starts them).
        for record in active.iter().filter(|c| c.desired_state == "deleting") {
            if self.tearing_down.contains_key(&record.id) || ended_now.contains(&record.id) {
                continue;
            }
            if let Some(l) = self.local.remove(&record.id) {
                let _ = l.conn.stop().await;
            }
            let Some(token) = connectors::acquire_lease(db, &record.id, node, ttl_ms).await? else {
                continue;
            };
            let (state, record, timeout) = (state.clone(), record.clone(), self.teardown_timeout);
            let id = record.id.clone();
            let task = tokio::spawn(async move {
                let ended = teardown_and_purge(&state.db, &record, timeout).await;
                state.cdc_wake.notify_one();
                ended
            });
            self.tearing_down.insert(
                id,
                TearingDown {
                    fencing_token: token,
                    task,
                },
            );
        }
        Ok(())
    }
}

/// Removes a deleted connector's capture objects from its source (given up after `timeout`), then
/// its records, whatever came of the teardown.
async fn teardown_and_purge(
    db: &Db,
    record: &ConnectorRecord,
    timeout: Duration,
) -> Result<(), String> {
    // Another node may have finished it between our reading of the list and our taking the
    // lease: its records are gone, and purging removes the lease row we created.
    if connectors::get_any(db, &record.id)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        return connectors::purge(db, &record.id)
            .await
            .map_err(|e| e.to_string());
    }
    match build(db, record, None) {
        Ok(conn) => {
            let removed = tokio::time::timeout(timeout, conn.teardown())
                .await
                .unwrap_or_else(|_| {
                    Err(aragora_cdc::CdcError::Source(format!(
                        "timed out after {} s",
                        timeout.as_secs_f64()
                    )))
                });
            if let Err(e) = removed {
                tracing::warn!(connector = %record.id, error = %e, "could not remove capture objects from the source; remove them by hand (docs/cdc/<database>.md)");
            }
        }
        Err(e) => {
            tracing::warn!(connector = %record.id, error = %e, "could not build the connector to remove its capture objects");
        }
    }
    connectors::purge(db, &record.id)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(connector = %record.id, "connector deleted");
    Ok(())
}
