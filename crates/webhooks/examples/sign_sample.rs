//! Prints one signed delivery (secret, headers, body) as JSON, for checking receivers written in
//! other languages: `cargo run -p aragora-webhooks --example sign_sample -- [secret]`.

use aragora_webhooks::{HeaderInput, build_headers};

fn main() {
    let secret = std::env::args()
        .nth(1)
        .unwrap_or_else(aragora_webhooks::signing::generate_secret);
    let body = serde_json::json!({
        "event_type": "debate.completed", "event_id": "evt-789",
        "timestamp": "2024-01-20T12:00:00Z",
        "data": {"debate_id": "deb-123", "outcome": "consensus", "consensus_strength": 0.92}
    })
    .to_string();
    let headers = match build_headers(
        &HeaderInput {
            message_id: "dlv-sample",
            event_type: "debate.completed",
            attempt: 1,
            secret: &secret,
            previous_secrets: &[],
            timestamp: aragora_core::time::now_ms() / 1000,
        },
        body.as_bytes(),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let headers: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({"secret": secret, "headers": headers, "body": body})
    );
}
