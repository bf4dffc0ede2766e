//! Change data capture: connectors turn a database's changes into the guide's
//! [`ChangeEvent`]s and hand them to [`ChangeHandler`]s.
//!
//! Guarantees (DESIGN.md §8): delivery is at least once; a connector's resume token is persisted
//! only after every handler acknowledged every event before it; event ids derive from the source
//! position, so a replay after a crash yields the same ids; a failing handler is retried with
//! backoff and shows in `health_check()`, and nothing is skipped.
//!
//! ```no_run
//! use aragora_cdc::{CallbackHandler, Connector, HandlerError};
//! use aragora_cdc::postgres::{PostgresConfig, PostgresConnector};
//! use futures::StreamExt;
//! use std::sync::Arc;
//!
//! # async fn demo() -> Result<(), aragora_cdc::CdcError> {
//! let config = PostgresConfig::new("localhost", "myapp", ["users", "orders"]);
//! let connector = PostgresConnector::new("pg-myapp", config, "cdc_user", Some("secret".into()))?;
//! connector.add_change_handler(Arc::new(CallbackHandler::new(|event| async move {
//!     println!("Change: {:?} on {}", event.operation, event.table);
//!     Ok::<(), HandlerError>(())
//! })));
//! connector.start().await?;
//! let mut rows = connector.sync();
//! while let Some(row) = rows.next().await {
//!     println!("Synced: {}", row?.evidence_id);
//! }
//! drop(rows);
//! connector.stop().await?;
//! connector.close().await?;
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub mod connector;
pub mod error;
pub mod handler;
pub mod knowledge;
pub mod managed;
pub mod mongodb;
pub mod mysql;
pub mod pipeline;
pub mod postgres;
pub mod runner;
pub mod snowflake;
pub mod sqlserver;
pub mod webhook;

pub use aragora_core::change::{CdcSourceType, ChangeEvent, ChangeOperation};
pub use checkpoint::{Checkpoint, CheckpointStore, FileCheckpoints, MemoryCheckpoints};
pub use connector::{Connector, HealthReport, SnapshotMode, SyncRow};
pub use error::CdcError;
pub use handler::{CallbackHandler, ChangeHandler, CompositeHandler, HandlerError};
pub use knowledge::{
    KnowledgeItem, KnowledgeMoundHandler, KnowledgeSink, MemoryKnowledgeSink, StoreKnowledgeSink,
};
pub use webhook::WebhookHandler;

/// Event id derived from the connector and a source position: the same position always gives the
/// same id, so handlers can deduplicate replays. `chg-` + 32 hex digits (XXH3-128 of
/// `connector \0 position`: a stable, specified hash; ids are dedup keys, not secrets).
pub fn event_id(connector_id: &str, position: &str) -> String {
    EventIdPrefix::new(connector_id, position).id("")
}

/// [`event_id`] for many positions sharing a prefix (the rows of one transaction):
/// `id(rest)` equals `event_id(connector_id, prefix + rest)`.
#[derive(Clone)]
pub struct EventIdPrefix(Vec<u8>);

impl EventIdPrefix {
    pub fn new(connector_id: &str, prefix: &str) -> Self {
        let mut key = Vec::with_capacity(connector_id.len() + 1 + prefix.len() + 20);
        key.extend_from_slice(connector_id.as_bytes());
        key.push(0);
        key.extend_from_slice(prefix.as_bytes());
        EventIdPrefix(key)
    }

    pub fn id(&self, rest: &str) -> String {
        // Hashed in one call from a stack copy when it fits (every position in practice).
        let mut stack = [0u8; 256];
        let len = self.0.len() + rest.len();
        let hash = if len <= stack.len() {
            stack[..self.0.len()].copy_from_slice(&self.0);
            stack[self.0.len()..len].copy_from_slice(rest.as_bytes());
            twox_hash::XxHash3_128::oneshot(&stack[..len])
        } else {
            twox_hash::XxHash3_128::oneshot(&[self.0.as_slice(), rest.as_bytes()].concat())
        };
        // Hex by hand: `hex::encode` collects chars one by one, a visible cost per row.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 36];
        out[..4].copy_from_slice(b"chg-");
        for (i, b) in hash.to_be_bytes().iter().enumerate() {
            out[4 + 2 * i] = HEX[usize::from(b >> 4)];
            out[5 + 2 * i] = HEX[usize::from(b & 15)];
        }
        // Only ASCII digits and letters were written.
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }
}

/// Key/value rendering of a row used as searchable content: one `column: value` line per column,
/// primary-key columns first.
pub fn render_row(
    table: &str,
    primary_key: &serde_json::Map<String, serde_json::Value>,
    row: &serde_json::Map<String, serde_json::Value>,
) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64 + row.len() * 24);
    let _ = writeln!(out, "table: {table}");
    let mut keys: Vec<&String> = primary_key.keys().collect();
    keys.sort();
    let mut rest: Vec<&String> = row
        .keys()
        .filter(|k| !primary_key.contains_key(*k))
        .collect();
    rest.sort();
    for k in keys.into_iter().chain(rest) {
        let v = row.get(k).or_else(|| primary_key.get(k));
        match v {
            Some(serde_json::Value::String(s)) => {
                let _ = writeln!(out, "{k}: {s}");
            }
            Some(serde_json::Value::Null) | None => {
                let _ = writeln!(out, "{k}: null");
            }
            Some(other) => {
                let _ = writeln!(out, "{k}: {other}");
            }
        }
    }
    out
}

/// Canonical text of a primary key (keys sorted at every level), stable across runs and map
/// implementations.
pub fn canonical_key(primary_key: &serde_json::Map<String, serde_json::Value>) -> String {
    aragora_core::json::canonical_object(primary_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_ids_are_stable_and_distinct() {
        assert_eq!(event_id("c1", "42"), event_id("c1", "42"));
        // Pinned: ids must not change between versions (replays after an upgrade dedupe).
        assert_eq!(event_id("c1", "42"), "chg-f39d2755dc57e2b7d73f24f13cf71a4c");
        assert_ne!(event_id("c1", "42"), event_id("c1", "43"));
        assert_ne!(event_id("c1", "42"), event_id("c2", "42"));
        assert_eq!(event_id("c1", "1").len(), 36);
        let p = EventIdPrefix::new("c1", "0-1-7:");
        assert_eq!(p.id("12"), event_id("c1", "0-1-7:12"));
        assert_ne!(p.id("12"), p.id("13"));
        // Positions longer than the stack buffer hash the same bytes.
        let long = "x".repeat(300);
        let q = EventIdPrefix::new("c1", &long[..250]);
        assert_eq!(q.id(&long[250..]), event_id("c1", &long));
        assert_ne!(q.id(&long[250..]), event_id("c1", &long[..299]));
    }

    #[test]
    fn canonical_keys_sort_columns() {
        let a = json!({"b": 2, "a": "x"});
        let b = json!({"a": "x", "b": 2});
        assert_eq!(
            canonical_key(a.as_object().unwrap()),
            canonical_key(b.as_object().unwrap())
        );
        assert_eq!(canonical_key(a.as_object().unwrap()), r#"{"a":"x","b":2}"#);
    }

    #[test]
    fn rows_render_pk_first() {
        let pk = json!({"id": 7});
        let row = json!({"name": "Ann", "id": 7, "age": null});
        let text = render_row("users", pk.as_object().unwrap(), row.as_object().unwrap());
        assert_eq!(text, "table: users\nid: 7\nage: null\nname: Ann\n");
    }
}
