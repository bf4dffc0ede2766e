//! Events: `{"event_type","event_id","timestamp","data"}` exactly as the guide shows.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The event types the system itself emits.
pub mod types {
    pub const DEBATE_STARTED: &str = "debate.started";
    pub const DEBATE_COMPLETED: &str = "debate.completed";
    pub const CONSENSUS_REACHED: &str = "consensus.reached";
    pub const AGENT_ERROR: &str = "agent.error";
    pub const CDC_CHANGE: &str = "cdc.change";
    pub const WEBHOOK_TEST: &str = "webhook.test";
    pub const BATCH_COMPLETED: &str = "explainability.batch.completed";
    pub const TEMPLATE_PUBLISHED: &str = "marketplace.template.published";

    pub const ALL: [&str; 8] = [
        DEBATE_STARTED,
        DEBATE_COMPLETED,
        CONSENSUS_REACHED,
        AGENT_ERROR,
        CDC_CHANGE,
        WEBHOOK_TEST,
        BATCH_COMPLETED,
        TEMPLATE_PUBLISHED,
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub event_type: String,
    pub event_id: String,
    /// RFC 3339 UTC.
    pub timestamp: String,
    pub data: Value,
}

/// True for dotted lowercase words: `order.created`, `debate.completed`, `a.b_c.d1`.
/// Each word starts with a letter; 1..=8 words; at most 128 characters.
pub fn is_valid_event_type(t: &str) -> bool {
    t.len() <= 128
        && t.split('.').count() <= 8
        && t.split('.').all(|w| {
            let mut b = w.bytes();
            matches!(b.next(), Some(b'a'..=b'z'))
                && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_types_are_dotted_lowercase_words() {
        for ok in ["debate.completed", "order.created", "a", "x1.y_2"] {
            assert!(super::is_valid_event_type(ok), "{ok}");
        }
        for bad in [
            "",
            "Debate.completed",
            "a..b",
            ".a",
            "a.",
            "1a",
            "a b",
            "a-b",
        ] {
            assert!(!super::is_valid_event_type(bad), "{bad}");
        }
    }
}
