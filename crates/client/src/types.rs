//! Typed responses. Each struct names the documented fields and keeps every other field the server
//! sends in `extra`, so a newer server never breaks an older client and printing a value loses
//! nothing. Times are RFC 3339 strings, as on the wire.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

type Extra = Map<String, Value>;

/// A list page: `items`, `total`, `next_cursor` (plus `page`/`limit` where the API uses them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub next_cursor: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A marketplace template (`template_data` and `checksum` on publish, get and update).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub category: String,
    #[serde(default)]
    pub visibility: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub owner: String,
    pub latest_version: String,
    #[serde(default)]
    pub downloads: i64,
    #[serde(default)]
    pub rating_average: f64,
    #[serde(default)]
    pub rating_count: i64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One immutable version of a template.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersion {
    pub template_id: String,
    pub version: String,
    #[serde(default)]
    pub changelog: String,
    pub checksum: String,
    #[serde(default)]
    pub yanked: bool,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_data: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a download returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Download {
    pub template_id: String,
    pub version: String,
    pub template_data: Value,
    /// `sha256:<hex>` of the canonical JSON of `template_data`.
    pub checksum: String,
    #[serde(default)]
    pub yanked: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A template's rating after a `rate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rating {
    pub template_id: String,
    pub rating: i64,
    pub rating_average: f64,
    pub rating_count: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review {
    pub id: String,
    pub template_id: String,
    pub user: String,
    pub rating: i64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub content: String,
    pub created_at: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The JSON explanation of a decision; the analyses (evidence chain, vote pivots,
/// counterfactuals, …) are in `extra` under their API names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    pub decision_id: String,
    pub debate_id: String,
    pub conclusion: String,
    pub confidence: f64,
    pub consensus_reached: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `202` answer of a batch submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchCreated {
    pub batch_id: String,
    /// `processing` (`completed` when an idempotent replay names a finished batch).
    pub status: String,
    /// `pending` on creation; see [`BatchStatus::phase`].
    #[serde(default)]
    pub phase: String,
    pub total: i64,
}

/// Progress of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchStatus {
    pub batch_id: String,
    /// `processing` until every debate id has been handled, then `completed` (also when some or
    /// all debates failed: see `phase` and the counts).
    pub status: String,
    /// `pending` or `processing` while the status is `processing`; `completed` (every debate
    /// explained), `partial` or `failed` (none explained) once it is `completed`.
    #[serde(default)]
    pub phase: String,
    /// Why the batch ended before every debate id was handled (its job gave up); `None` otherwise.
    #[serde(default)]
    pub error: Option<String>,
    pub total: i64,
    pub processed: i64,
    pub succeeded: i64,
    pub failed: i64,
    #[serde(default)]
    pub not_found: i64,
    pub progress_percent: f64,
    #[serde(flatten)]
    pub extra: Extra,
}

impl BatchStatus {
    /// True once the batch will not change any more (`status` is `completed`).
    pub fn is_finished(&self) -> bool {
        self.status == "completed"
    }
}

/// One debate's result in a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResult {
    pub position: i64,
    pub debate_id: String,
    /// `success`, `error` or `not_found`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A page of batch results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResults {
    pub items: Vec<BatchResult>,
    pub total: i64,
    pub next_cursor: Option<String>,
    pub batch_id: String,
    /// `processing` or `completed` (the list is final).
    pub batch_status: String,
    /// The batch's phase, as in [`BatchStatus::phase`].
    #[serde(default)]
    pub batch_phase: String,
}

/// A webhook registration (`secret` only on create and rotation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Fields of a webhook update (`PUT /api/webhooks/{id}`); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WebhookUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i64,
    /// `scheduled`, `test`, `resend` or `recover`.
    pub trigger: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub status_code: Option<i64>,
    pub error_class: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A knowledge mound item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnowledgeItem {
    pub id: String,
    pub source_type: String,
    pub source_key: String,
    pub content: String,
    #[serde(default)]
    pub metadata: Value,
    pub confidence: f64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A search hit: the item plus its ranking.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHit {
    #[serde(flatten)]
    pub item: KnowledgeItem,
    pub exact_phrase: bool,
    pub score: f64,
    /// An excerpt with `<mark>` around matched terms (plain text, not HTML-escaped).
    pub snippet: String,
}

/// Body of `POST /api/v1/knowledge/items`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewKnowledgeItem {
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// A server-managed CDC connector (credentials never include the password).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connector {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub config: Value,
    pub handlers: Vec<String>,
    /// `running` or `stopped`: what was asked for.
    pub state: String,
    pub running_on: Option<String>,
    pub created_at: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectorHealth {
    pub healthy: bool,
    pub latency_ms: f64,
    #[serde(default)]
    pub details: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub kind: String,
    pub node: String,
    pub state: String,
    pub in_flight: i64,
    pub processed: i64,
    pub failed: i64,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueDepth {
    pub queue: String,
    pub ready: i64,
    pub delayed: i64,
    pub running: i64,
    pub dead: i64,
}

/// `GET /api/workers/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkersStatus {
    pub workers: Vec<WorkerInfo>,
    pub queues: Vec<QueueDepth>,
}
