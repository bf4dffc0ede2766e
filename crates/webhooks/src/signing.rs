//! Webhook signatures (DESIGN.md §6).
//!
//! Two schemes are sent on every attempt:
//! - `X-Signature-SHA256: sha256=<hex HMAC-SHA256(secret, body)>`, keyed with the UTF-8 bytes of
//!   the secret string exactly as given, so the guide's Python `verify_signature` works unchanged.
//! - Standard Webhooks `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>`,
//!   keyed with the base64-decoded bytes after `whsec_` for such secrets (as the Standard Webhooks
//!   libraries do) and with the UTF-8 bytes of the secret otherwise.
//!
//! Verification is constant time (HMAC `verify_slice`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of secrets in the Standard Webhooks format.
pub const WHSEC_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret (256 bits, the HMAC-SHA256 block-size sweet spot).
pub const GENERATED_SECRET_BYTES: usize = 32;
/// Bounds on secrets supplied by callers.
pub const MIN_SECRET_LEN: usize = 8;
pub const MAX_SECRET_LEN: usize = 512;
/// Default tolerance for `webhook-timestamp` when verifying (Standard Webhooks uses 5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("secret must be {MIN_SECRET_LEN}..={MAX_SECRET_LEN} bytes")]
    SecretLength,
    #[error("secret must not contain whitespace or control characters")]
    SecretCharacters,
    #[error("a whsec_ secret must be followed by valid base64 of at least 16 bytes")]
    SecretBase64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or malformed signature header")]
    Malformed,
    #[error("no signature matches")]
    Mismatch,
    #[error("timestamp outside the tolerance window")]
    Timestamp,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Checks a secret supplied at registration or rotation. `whsec_` secrets must decode, because
/// Standard Webhooks receivers decode them and would otherwise never verify a signature.
pub fn validate_secret(secret: &str) -> Result<(), SigningError> {
    if secret.len() < MIN_SECRET_LEN || secret.len() > MAX_SECRET_LEN {
        return Err(SigningError::SecretLength);
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SigningError::SecretCharacters);
    }
    if let Some(rest) = secret.strip_prefix(WHSEC_PREFIX) {
        match B64.decode(rest) {
            Ok(k) if k.len() >= 16 => {}
            _ => return Err(SigningError::SecretBase64),
        }
    }
    Ok(())
}

/// A new Standard Webhooks secret: `whsec_` + base64 of 32 random bytes (OS-seeded CSPRNG).
pub fn generate_secret() -> String {
    let mut key = [0u8; GENERATED_SECRET_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{WHSEC_PREFIX}{}", B64.encode(key))
}

/// `sha256=<hex HMAC-SHA256(secret utf-8 bytes, body)>`.
pub fn signature_sha256_header(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret.as_bytes());
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Constant-time check of an `X-Signature-SHA256` value against one secret.
pub fn verify_signature_sha256(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut m = mac(secret.as_bytes());
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

/// The HMAC key for the Standard Webhooks scheme: decoded bytes after `whsec_`, else the UTF-8
/// bytes. A `whsec_` secret that does not decode (refused by [`validate_secret`], so only legacy
/// rows can have one) falls back to its UTF-8 bytes rather than failing the delivery.
pub fn standard_key(secret: &str) -> Vec<u8> {
    if let Some(rest) = secret.strip_prefix(WHSEC_PREFIX)
        && let Ok(k) = B64.decode(rest)
    {
        return k;
    }
    secret.as_bytes().to_vec()
}

fn standard_mac(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut m = mac(&standard_key(secret));
    m.update(msg_id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// Standard Webhooks signature: `v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")>`.
pub fn standard_signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = standard_mac(secret, msg_id, timestamp, body)
        .finalize()
        .into_bytes();
    format!("v1,{}", B64.encode(tag))
}

/// The `webhook-signature` value for several secrets (current first, then secrets still in their
/// rotation grace period): space-separated `v1,<base64>` entries.
pub fn standard_signature_list(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| standard_signature(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a `webhook-signature` header (space-separated `v1,<base64>` entries; other versions
/// are skipped) against any of `secrets`, in constant time per comparison. When `now_and_tolerance`
/// is given, the timestamp must be within `tolerance` seconds of `now` (replay protection).
pub fn verify_standard(
    secrets: &[&str],
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
    now_and_tolerance: Option<(i64, i64)>,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Malformed)?;
    if let Some((now, tolerance)) = now_and_tolerance
        && (now - ts).abs() > tolerance
    {
        return Err(VerifyError::Timestamp);
    }
    let candidates: Vec<Vec<u8>> = header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b| B64.decode(b).ok())
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::Malformed);
    }
    for secret in secrets {
        for sig in &candidates {
            if standard_mac(secret, msg_id, ts, body)
                .verify_slice(sig)
                .is_ok()
            {
                return Ok(());
            }
        }
    }
    Err(VerifyError::Mismatch)
}

/// The guide's Python verifier reproduced line for line, as a receiver following the guide runs
/// it: `expected = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()`,
/// then `hmac.compare_digest(signature, expected)` (a constant-time string comparison).
pub fn guide_verify_signature(payload: &[u8], signature: &str, secret: &str) -> bool {
    let mut m = mac(secret.as_bytes());
    m.update(payload);
    let expected = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
    signature.len() == expected.len()
        && signature
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const VEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const VEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const VEC_TS: i64 = 1649367553;
    const VEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const VEC_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn standard_webhooks_test_vector() {
        assert_eq!(
            standard_signature(VEC_SECRET, VEC_ID, VEC_TS, VEC_BODY),
            VEC_SIG
        );
        assert_eq!(
            verify_standard(&[VEC_SECRET], VEC_ID, "1649367553", VEC_BODY, VEC_SIG, None),
            Ok(())
        );
        // Any change to id, timestamp or body breaks it.
        assert_eq!(
            verify_standard(
                &[VEC_SECRET],
                "msg_other",
                "1649367553",
                VEC_BODY,
                VEC_SIG,
                None
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_standard(&[VEC_SECRET], VEC_ID, "1649367554", VEC_BODY, VEC_SIG, None),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify_standard(&[VEC_SECRET], VEC_ID, "1649367553", b"{}", VEC_SIG, None),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn standard_timestamp_tolerance_and_lists() {
        let now = VEC_TS + 301;
        assert_eq!(
            verify_standard(
                &[VEC_SECRET],
                VEC_ID,
                "1649367553",
                VEC_BODY,
                VEC_SIG,
                Some((now, DEFAULT_TOLERANCE_SECS))
            ),
            Err(VerifyError::Timestamp)
        );
        assert!(
            verify_standard(
                &[VEC_SECRET],
                VEC_ID,
                "1649367553",
                VEC_BODY,
                VEC_SIG,
                Some((VEC_TS + 299, DEFAULT_TOLERANCE_SECS))
            )
            .is_ok()
        );
        // Rotation: list signed with old and new secret verifies with either one alone.
        let new = generate_secret();
        let list = standard_signature_list(&[&new, VEC_SECRET], VEC_ID, VEC_TS, VEC_BODY);
        assert_eq!(list.split(' ').count(), 2);
        assert!(list.ends_with(VEC_SIG));
        for s in [new.as_str(), VEC_SECRET] {
            assert!(verify_standard(&[s], VEC_ID, "1649367553", VEC_BODY, &list, None).is_ok());
        }
        assert_eq!(
            verify_standard(&[VEC_SECRET], VEC_ID, "x", VEC_BODY, &list, None),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify_standard(&[VEC_SECRET], VEC_ID, "1", VEC_BODY, "v2,abc", None),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn non_whsec_secrets_use_utf8_bytes_for_standard_scheme() {
        let a = standard_signature("your-hmac-secret", "m", 1, b"x");
        let mut m = mac(b"your-hmac-secret");
        m.update(b"m.1.x");
        assert_eq!(a, format!("v1,{}", B64.encode(m.finalize().into_bytes())));
    }

    #[test]
    fn sha256_header_matches_guide_verifier() {
        let body = br#"{"event_type":"debate.completed","event_id":"evt-789"}"#;
        for secret in ["your-hmac-secret", VEC_SECRET, "ünïcödé-secret"] {
            let h = signature_sha256_header(secret, body);
            assert!(h.starts_with("sha256=") && h.len() == 7 + 64);
            assert!(guide_verify_signature(body, &h, secret));
            assert!(verify_signature_sha256(secret, body, &h));
            assert!(!guide_verify_signature(b"tampered", &h, secret));
            assert!(!verify_signature_sha256(secret, b"tampered", &h));
            assert!(!verify_signature_sha256("wrong-secret", body, &h));
        }
        // Known answer (RFC 4231 test case 2: key "Jefe").
        assert_eq!(
            signature_sha256_header("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(!verify_signature_sha256("Jefe", b"", "sha1=00"));
        assert!(!verify_signature_sha256("Jefe", b"", "sha256=zz"));
    }

    #[test]
    fn generated_secrets_are_random_whsec_keys() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(WHSEC_PREFIX));
        assert_eq!(standard_key(&a).len(), GENERATED_SECRET_BYTES);
        assert_eq!(validate_secret(&a), Ok(()));
    }

    #[test]
    fn secret_validation() {
        assert_eq!(validate_secret("your-hmac-secret"), Ok(()));
        assert_eq!(validate_secret("short"), Err(SigningError::SecretLength));
        assert_eq!(
            validate_secret(&"x".repeat(513)),
            Err(SigningError::SecretLength)
        );
        assert_eq!(
            validate_secret("has space in it"),
            Err(SigningError::SecretCharacters)
        );
        assert_eq!(
            validate_secret("whsec_!!!notbase64"),
            Err(SigningError::SecretBase64)
        );
        assert_eq!(
            validate_secret("whsec_c2hvcnQ="),
            Err(SigningError::SecretBase64)
        );
    }
}
