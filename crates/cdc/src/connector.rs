//! The connector trait every source implements.

use crate::pipeline::Status;
use crate::{CdcError, CdcSourceType, ChangeHandler};
use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Whether a first start copies the existing rows before streaming (`config.snapshot` of every
/// connector that has one: DESIGN.md §8's `initial` | `never`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    #[default]
    Initial,
    Never,
}

/// A row produced by [`Connector::sync`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncRow {
    /// Stable identity of the row as evidence: `<type>:<database>.<schema>.<table>:<pk>`.
    pub evidence_id: String,
    pub table: String,
    pub primary_key: Map<String, Value>,
    /// The row as `column: value` lines, ready for indexing.
    pub content: String,
    pub data: Map<String, Value>,
}

/// What `health_check()` returns: `{"healthy", "latency_ms", "details"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    /// Round trip of a trivial query to the source.
    pub latency_ms: f64,
    pub details: Map<String, Value>,
}

/// A change-data-capture source.
#[async_trait]
pub trait Connector: Send + Sync {
    fn connector_id(&self) -> &str;

    fn source_type(&self) -> CdcSourceType;

    /// Adds a handler; every handler must acknowledge an event before the position moves past it.
    fn add_change_handler(&self, handler: Arc<dyn ChangeHandler>);

    /// Sets up capture (if permitted) and starts streaming in the background. Returns once
    /// capture is in place: every change committed after this returns will be delivered.
    async fn start(&self) -> Result<(), CdcError>;

    /// Stops streaming. Unacknowledged events are delivered again on the next start.
    async fn stop(&self) -> Result<(), CdcError>;

    /// Incremental sync: the tables' rows as a stream (bounded memory). With a timestamp column
    /// configured, each call yields only rows changed since the previous call's high-water mark.
    fn sync(&self) -> BoxStream<'_, Result<SyncRow, CdcError>>;

    async fn health_check(&self) -> HealthReport;
    /// Live counters and state of the capture pipeline (the runtime part of health details).
    fn status(&self) -> &Arc<Status>;
    /// True while capture runs (false once it stopped, also after a fatal error such as a lost
    /// lease).
    async fn is_running(&self) -> bool;
    /// Removes what capture created in the source (triggers, slots, …); the connector must be
    /// stopped. Sources where capture creates nothing keep the default.
    async fn teardown(&self) -> Result<(), CdcError> {
        Ok(())
    }

    /// Stops and releases every connection.
    async fn close(&self) -> Result<(), CdcError>;
}
