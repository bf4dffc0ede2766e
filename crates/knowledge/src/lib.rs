//! The Knowledge Mound's domain: what an item is, what a valid one looks like, how source keys are
//! spelled, how a search query is read, and what a finished debate contributes.
//!
//! No I/O here: `aragora_store::knowledge` stores and searches items (SQLite FTS5, PostgreSQL
//! tsvector + GIN), the server exposes them over HTTP, CDC handlers feed them.
//!
//! Items are keyed by `(workspace, source_type, source_key)`: ingesting the same source again
//! updates the item in place (same `id`), so replays and re-runs never duplicate knowledge.

pub mod debate;
pub mod query;

use aragora_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub use debate::debate_item;
pub use query::SearchQuery;

/// Well-known source types. Any `[a-z][a-z0-9_.-]{0,31}` is accepted.
pub mod source {
    /// A completed debate's conclusion; `source_key` is the debate id.
    pub const DEBATE: &str = "debate";
    /// A row captured by a CDC connector; `source_key` is [`super::cdc_source_key`].
    pub const CDC: &str = "cdc";
    /// Ingested through `POST /api/v1/knowledge/items` without a source type.
    pub const MANUAL: &str = "manual";
}

pub const MAX_CONTENT_CHARS: usize = 200_000;
pub const MAX_SOURCE_KEY_CHARS: usize = 1_024;
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn full_confidence() -> f64 {
    1.0
}

/// An item to ingest (insert, or update the item with the same source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewItem {
    /// `debate`, `cdc`, `manual`, … (`[a-z][a-z0-9_.-]{0,31}`).
    pub source_type: String,
    /// Identifies the source within its type, e.g. a debate id or `<connector>/<table>/<pk json>`.
    pub source_key: String,
    /// The searchable text.
    pub content: String,
    /// Any JSON object, returned as given.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// How much to trust the item, 0 to 1 (default 1).
    #[serde(default = "full_confidence")]
    pub confidence: f64,
}

impl NewItem {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<()> {
        validate_source(&self.source_type, &self.source_key)?;
        if self.content.trim().is_empty() {
            return Err(Error::invalid("content", "must not be empty"));
        }
        if self.content.chars().count() > MAX_CONTENT_CHARS {
            return Err(Error::invalid(
                "content",
                format!("must be at most {MAX_CONTENT_CHARS} characters"),
            ));
        }
        if !self.metadata.is_object() {
            return Err(Error::invalid("metadata", "must be a JSON object"));
        }
        if self.metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes of JSON"),
            ));
        }
        if !self.confidence.is_finite() || !(0.0..=1.0).contains(&self.confidence) {
            return Err(Error::invalid(
                "confidence",
                format!("must be between 0 and 1, got {}", self.confidence),
            ));
        }
        Ok(())
    }
}

/// Checks a source's spelling (as [`NewItem::validate`] does); the error names the field.
pub fn validate_source(source_type: &str, source_key: &str) -> Result<()> {
    if !is_valid_source_type(source_type) {
        return Err(Error::invalid(
            "source_type",
            "must be 1 to 32 characters of [a-z0-9_.-], starting with a letter",
        ));
    }
    if source_key.is_empty() || source_key.chars().count() > MAX_SOURCE_KEY_CHARS {
        return Err(Error::invalid(
            "source_key",
            format!("must be 1 to {MAX_SOURCE_KEY_CHARS} characters"),
        ));
    }
    if source_key.chars().any(char::is_control) {
        return Err(Error::invalid(
            "source_key",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Refuses the source types only the system writes ([`source::DEBATE`], [`source::CDC`]): API
/// clients may neither ingest nor delete items of those.
pub fn check_client_source_type(source_type: &str) -> Result<()> {
    if source_type == source::DEBATE || source_type == source::CDC {
        return Err(Error::invalid(
            "source_type",
            format!("'{source_type}' items are written by the system; use another source type"),
        ));
    }
    Ok(())
}

/// `[a-z][a-z0-9_.-]{0,31}`.
pub fn is_valid_source_type(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= 32
        && matches!(b.next(), Some(b'a'..=b'z'))
        && b.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

/// The source key of a row captured by CDC: `<connector>/<table>/<primary key as compact JSON>`.
/// Object keys are sorted (serde_json's default map), so the same key always spells the same.
pub fn cdc_source_key(connector: &str, table: &str, primary_key: &Value) -> String {
    format!("{connector}/{table}/{primary_key}")
}

/// A stored item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Item {
    /// `km-…`; stays the same when the item is updated through its source key.
    pub id: String,
    pub workspace: String,
    pub source_type: String,
    pub source_key: String,
    pub content: String,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub confidence: f64,
    #[serde(with = "aragora_core::time::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[serde(with = "aragora_core::time::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

/// Highlight markers around matched terms in a [`SearchHit::snippet`]. The snippet is plain text
/// from the item (not HTML-escaped): escape it before rendering as HTML.
pub const MARK_START: &str = "<mark>";
pub const MARK_END: &str = "</mark>";

/// One search result: the item, its relevance and a highlighted excerpt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    #[serde(flatten)]
    pub item: Item,
    /// The item contains the query as an exact phrase (these hits come first).
    pub exact_phrase: bool,
    /// Relevance within its tier, higher is better. Comparable within one response only
    /// (SQLite: negated BM25; PostgreSQL: length-normalised cover density).
    pub score: f64,
    /// An excerpt around the matches with [`MARK_START`]/[`MARK_END`] around matched terms.
    pub snippet: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Mutate = Box<dyn Fn(&mut NewItem)>;

    fn item() -> NewItem {
        NewItem {
            source_type: "manual".into(),
            source_key: "k1".into(),
            content: "Token buckets allow bursts".into(),
            metadata: json!({"a": 1}),
            confidence: 0.5,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(item().validate().is_ok());
        let cases: Vec<(&str, Mutate)> = vec![
            ("source_type", Box::new(|i| i.source_type = "Manual".into())),
            ("source_type", Box::new(|i| i.source_type = String::new())),
            ("source_type", Box::new(|i| i.source_type = "a".repeat(33))),
            ("source_key", Box::new(|i| i.source_key = String::new())),
            ("source_key", Box::new(|i| i.source_key = "a\nb".into())),
            ("source_key", Box::new(|i| i.source_key = "k".repeat(1025))),
            ("content", Box::new(|i| i.content = "  ".into())),
            (
                "content",
                Box::new(|i| i.content = "x".repeat(MAX_CONTENT_CHARS + 1)),
            ),
            ("metadata", Box::new(|i| i.metadata = json!([1]))),
            (
                "metadata",
                Box::new(|i| i.metadata = json!({"x": "y".repeat(MAX_METADATA_BYTES)})),
            ),
            ("confidence", Box::new(|i| i.confidence = 1.5)),
            ("confidence", Box::new(|i| i.confidence = -0.1)),
            ("confidence", Box::new(|i| i.confidence = f64::NAN)),
        ];
        for (field, mutate) in cases {
            let mut i = item();
            mutate(&mut i);
            match i.validate() {
                Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected {field} to be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_fill_metadata_and_confidence() {
        let i: NewItem = serde_json::from_value(
            json!({"source_type": "manual", "source_key": "k", "content": "c"}),
        )
        .unwrap();
        assert_eq!(i.metadata, json!({}));
        assert_eq!(i.confidence, 1.0);
    }

    #[test]
    fn cdc_keys_are_stable_whatever_the_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": 2, "a": "x"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": "x", "b": 2}"#).unwrap();
        assert_eq!(
            cdc_source_key("pg1", "public.orders", &a),
            cdc_source_key("pg1", "public.orders", &b)
        );
        assert_eq!(
            cdc_source_key("pg1", "t", &json!({"id": 7})),
            r#"pg1/t/{"id":7}"#
        );
    }
}
