//! Time is stored as UTC milliseconds since the Unix epoch and shown as RFC 3339.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// RFC 3339 UTC with millisecond precision, e.g. `2024-01-20T12:00:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    to_datetime(ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn to_datetime(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Parses RFC 3339 into milliseconds; `None` when malformed.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc).timestamp_millis())
}

/// Serde helpers that show an `i64` millisecond field as RFC 3339.
pub mod serde_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => s.serialize_str(&super::super::rfc3339(*ms)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            s.map(|s| {
                super::super::parse_rfc3339(&s)
                    .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_rfc3339() {
        let ms = 1_705_752_000_123;
        let s = super::rfc3339(ms);
        assert_eq!(s, "2024-01-20T12:00:00.123Z");
        assert_eq!(super::parse_rfc3339(&s), Some(ms));
        assert_eq!(super::parse_rfc3339("yesterday"), None);
    }
}
