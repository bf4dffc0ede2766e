//! The header set of one delivery attempt (DESIGN.md §6). Built fresh for every attempt: the
//! `webhook-id` is the stable delivery id, the timestamp and both signatures are new each time.

use crate::signing::{signature_sha256_header, standard_signature_list};
use aragora_core::Error;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT as UA};

pub const X_SIGNATURE_SHA256: HeaderName = HeaderName::from_static("x-signature-sha256");
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
pub const X_ARAGORA_EVENT: HeaderName = HeaderName::from_static("x-aragora-event");
pub const X_ARAGORA_DELIVERY: HeaderName = HeaderName::from_static("x-aragora-delivery");
pub const X_ARAGORA_ATTEMPT: HeaderName = HeaderName::from_static("x-aragora-attempt");

/// `Aragora-Webhooks/<crate version>`.
pub const USER_AGENT: &str = concat!("Aragora-Webhooks/", env!("CARGO_PKG_VERSION"));

/// What one attempt is signed with.
#[derive(Debug, Clone, Copy)]
pub struct HeaderInput<'a> {
    /// Delivery (message) id: `webhook-id` and `X-Aragora-Delivery`, stable across retries.
    pub message_id: &'a str,
    /// `X-Aragora-Event`, e.g. `debate.completed`.
    pub event_type: &'a str,
    /// 1-based attempt number (`X-Aragora-Attempt`).
    pub attempt: u32,
    /// The endpoint's current secret. Signs `X-Signature-SHA256` and the first `v1,` entry.
    pub secret: &'a str,
    /// Rotated-out secrets still in their grace period: each adds one more `v1,` entry to
    /// `webhook-signature`. `X-Signature-SHA256` holds a single value and uses the current secret.
    pub previous_secrets: &'a [&'a str],
    /// Unix seconds for `webhook-timestamp`; pass the time of this attempt.
    pub timestamp: i64,
}

fn value(field: &str, v: &str) -> Result<HeaderValue, Error> {
    if v.is_empty() || v.len() > 256 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            "must be 1..=256 visible ASCII characters to fit in a header",
        ));
    }
    HeaderValue::from_str(v).map_err(|_| Error::invalid(field, "not a valid header value"))
}

/// Builds every header of one attempt over exactly `body` (the bytes that will be sent).
pub fn build_headers(input: &HeaderInput<'_>, body: &[u8]) -> Result<HeaderMap, Error> {
    let id = value("message_id", input.message_id)?;
    let event = value("event_type", input.event_type)?;
    if input.secret.is_empty() {
        return Err(Error::invalid("secret", "must not be empty"));
    }
    let mut secrets = Vec::with_capacity(1 + input.previous_secrets.len());
    secrets.push(input.secret);
    secrets.extend(
        input
            .previous_secrets
            .iter()
            .copied()
            .filter(|s| !s.is_empty() && *s != input.secret),
    );
    let sha = signature_sha256_header(input.secret, body);
    let std_sig = standard_signature_list(&secrets, input.message_id, input.timestamp, body);

    let mut h = HeaderMap::with_capacity(10);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(UA, HeaderValue::from_static(USER_AGENT));
    h.insert(
        X_SIGNATURE_SHA256,
        HeaderValue::from_str(&sha).map_err(Error::internal)?,
    );
    h.insert(WEBHOOK_ID, id.clone());
    h.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(input.timestamp));
    h.insert(
        WEBHOOK_SIGNATURE,
        HeaderValue::from_str(&std_sig).map_err(Error::internal)?,
    );
    h.insert(X_ARAGORA_EVENT, event);
    h.insert(X_ARAGORA_DELIVERY, id);
    h.insert(X_ARAGORA_ATTEMPT, HeaderValue::from(input.attempt));
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{verify_signature_sha256, verify_standard};

    fn input<'a>(prev: &'a [&'a str], ts: i64) -> HeaderInput<'a> {
        HeaderInput {
            message_id: "dlv-0192f0c4e7a87b3c9a1d2e3f4a5b6c7d",
            event_type: "debate.completed",
            attempt: 2,
            secret: "new-secret-123",
            previous_secrets: prev,
            timestamp: ts,
        }
    }

    #[test]
    fn full_header_set_verifies_with_both_schemes() {
        let body = br#"{"event_type":"debate.completed","event_id":"evt-789","timestamp":"2024-01-20T12:00:00Z","data":{}}"#;
        let h = build_headers(&input(&[], 1_700_000_000), body).expect("headers");
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert_eq!(get("content-type"), "application/json");
        assert_eq!(get("user-agent"), USER_AGENT);
        assert!(USER_AGENT.starts_with("Aragora-Webhooks/0."));
        assert_eq!(get("webhook-id"), "dlv-0192f0c4e7a87b3c9a1d2e3f4a5b6c7d");
        assert_eq!(get("x-aragora-delivery"), get("webhook-id"));
        assert_eq!(get("x-aragora-event"), "debate.completed");
        assert_eq!(get("x-aragora-attempt"), "2");
        assert_eq!(get("webhook-timestamp"), "1700000000");
        assert!(verify_signature_sha256(
            "new-secret-123",
            body,
            get("X-Signature-SHA256")
        ));
        assert!(
            verify_standard(
                &["new-secret-123"],
                get("webhook-id"),
                get("webhook-timestamp"),
                body,
                get("webhook-signature"),
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn rotation_signs_with_both_and_retries_are_resigned() {
        let body = b"{}";
        let prev = ["old-secret-456"];
        let a = build_headers(&input(&prev, 100), body).expect("headers");
        let sig = a["webhook-signature"].to_str().expect("ascii");
        assert_eq!(sig.split(' ').count(), 2);
        for s in ["new-secret-123", "old-secret-456"] {
            assert!(
                verify_standard(
                    &[s],
                    a["webhook-id"].to_str().unwrap(),
                    "100",
                    body,
                    sig,
                    None
                )
                .is_ok()
            );
        }
        // A retry: same id, new timestamp, new signature.
        let b = build_headers(&input(&prev, 160), body).expect("headers");
        assert_eq!(a["webhook-id"], b["webhook-id"]);
        assert_ne!(a["webhook-timestamp"], b["webhook-timestamp"]);
        assert_ne!(a["webhook-signature"], b["webhook-signature"]);
        // Same secret listed twice is not signed twice.
        let c = build_headers(&input(&["new-secret-123"], 1), body).expect("headers");
        assert_eq!(
            c["webhook-signature"].to_str().unwrap().split(' ').count(),
            1
        );
    }

    #[test]
    fn rejects_values_that_cannot_be_headers() {
        let mut i = input(&[], 1);
        i.message_id = "bad id\n";
        assert_eq!(
            build_headers(&i, b"{}").expect_err("bad").code(),
            "validation_failed"
        );
        let mut i = input(&[], 1);
        i.secret = "";
        assert!(build_headers(&i, b"{}").is_err());
    }
}
