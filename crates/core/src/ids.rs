//! Prefixed identifiers: `<prefix>-<uuid v7 in 32 hex digits>`, so ids sort by creation time.

/// Known id prefixes (DESIGN.md §5).
pub mod prefix {
    pub const DEBATE: &str = "deb";
    pub const DECISION: &str = "dec";
    pub const TEMPLATE: &str = "tmpl";
    pub const REVIEW: &str = "rev";
    pub const BATCH: &str = "batch";
    pub const EVENT: &str = "evt";
    pub const WEBHOOK: &str = "wh";
    pub const RECEIPT: &str = "rcpt";
    pub const JOB: &str = "job";
    pub const TOKEN: &str = "tok";
    pub const WORKER: &str = "wrk";
    pub const KNOWLEDGE: &str = "km";
    pub const CONNECTOR: &str = "conn";
    pub const DELIVERY: &str = "dlv";
}

/// A new time-ordered id with the given prefix, e.g. `deb-0192f0c4e7a87b3c9a1d2e3f4a5b6c7d`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// True when `id` looks like an id we could have issued or accepted: 1..=128 chars of
/// `[A-Za-z0-9._:-]`. Imported debates keep the caller's id, so only the alphabet is checked.
pub fn is_valid_external_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_prefix_and_sort_by_time() {
        let a = new_id(prefix::DEBATE);
        let b = new_id(prefix::DEBATE);
        assert!(a.starts_with("deb-"));
        assert_eq!(a.len(), 4 + 32);
        assert!(a < b, "uuid v7 ids must sort by creation: {a} !< {b}");
    }

    #[test]
    fn external_ids_are_checked_for_alphabet_and_length() {
        assert!(is_valid_external_id("deb-123"));
        assert!(!is_valid_external_id(""));
        assert!(!is_valid_external_id("a b"));
        assert!(!is_valid_external_id(&"x".repeat(129)));
    }
}
