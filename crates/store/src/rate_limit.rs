//! Per-key token buckets in the `rate_limits` table, shared by every node (DESIGN.md §2: rate
//! limits live in the database). A bucket holds up to `capacity` tokens and refills continuously
//! at `capacity / period`; each request takes one token or is refused with the time until one
//! is available.
//!
//! Each take is one short write transaction; on PostgreSQL the row is locked (`FOR UPDATE`) so
//! concurrent requests on several nodes cannot spend the same token; on SQLite the single writer
//! serialises them.

use crate::{Db, Dialect, Row};
use aragora_core::time::now_ms;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `capacity` requests per `period`, with bursts up to `capacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub capacity: u32,
    pub period: Duration,
}

impl Limit {
    pub fn new(capacity: u32, period: Duration) -> Limit {
        Limit { capacity, period }
    }

    /// Tokens added per millisecond.
    fn refill_per_ms(&self) -> f64 {
        f64::from(self.capacity) / (self.period.as_millis().max(1) as f64)
    }
}

/// Parses `<count>/<period>`, the period being `s`, `m`, `h`, `d` or a number of seconds with
/// one of those units (`30/h`, `5/10s`, `100/1d`). `0/…` disables the limit.
impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a rate limit like 30/h, 5/10s or 100/1d");
        let (count, period) = s.trim().split_once('/').ok_or_else(bad)?;
        let capacity: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let split = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = period.split_at(split);
        let n: u64 = if n.is_empty() {
            1
        } else {
            n.parse().map_err(|_| bad())?
        };
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(bad());
        }
        Ok(Limit::new(capacity, Duration::from_secs(n * unit_secs)))
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.capacity, self.period.as_secs())
    }
}

/// The outcome of a take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Allowed {
        remaining: u32,
    },
    /// Refused; a token is available after this long.
    Limited {
        retry_after: Duration,
    },
}

impl Decision {
    /// Whole seconds to wait, at least 1 (for a `Retry-After` header).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Decision::Allowed { .. } => None,
            Decision::Limited { retry_after } => {
                Some(retry_after.as_millis().div_ceil(1000).max(1) as u64)
            }
        }
    }
}

/// Pure bucket arithmetic: the tokens after refilling from `updated_at` to `now`, and the
/// decision for a take of one token.
fn decide(limit: &Limit, tokens: f64, updated_at: i64, now: i64) -> (f64, Decision) {
    let cap = f64::from(limit.capacity);
    let elapsed = (now - updated_at).max(0) as f64;
    let available = (tokens + elapsed * limit.refill_per_ms()).min(cap);
    if available >= 1.0 {
        let left = available - 1.0;
        (
            left,
            Decision::Allowed {
                remaining: left.floor() as u32,
            },
        )
    } else {
        let wait_ms = ((1.0 - available) / limit.refill_per_ms()).ceil() as u64;
        (
            available,
            Decision::Limited {
                retry_after: Duration::from_millis(wait_ms.max(1)),
            },
        )
    }
}

/// Takes one token from `bucket`. A limit with capacity 0 is disabled and always allows.
pub async fn take(db: &Db, bucket: &str, limit: &Limit) -> Result<Decision, sqlx::Error> {
    if limit.capacity == 0 {
        return Ok(Decision::Allowed {
            remaining: u32::MAX,
        });
    }
    let now = now_ms();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO rate_limits (bucket, tokens, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (bucket) DO NOTHING",
    )
    .bind(bucket)
    .bind(f64::from(limit.capacity))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let select = match db.dialect() {
        Dialect::Postgres => {
            "SELECT tokens, updated_at FROM rate_limits WHERE bucket = $1 FOR UPDATE"
        }
        Dialect::Sqlite => "SELECT tokens, updated_at FROM rate_limits WHERE bucket = $1",
    };
    let row = sqlx::query(select).bind(bucket).fetch_one(&mut *tx).await?;
    let tokens: f64 = row.try_get(0)?;
    let updated_at: i64 = row.try_get(1)?;
    let (left, decision) = decide(limit, tokens, updated_at, now);
    sqlx::query("UPDATE rate_limits SET tokens = $1, updated_at = $2 WHERE bucket = $3")
        .bind(left)
        .bind(now.max(updated_at))
        .bind(bucket)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        assert_eq!(
            "30/h".parse::<Limit>(),
            Ok(Limit::new(30, Duration::from_secs(3600)))
        );
        assert_eq!(
            "5/10s".parse::<Limit>(),
            Ok(Limit::new(5, Duration::from_secs(10)))
        );
        assert_eq!(
            " 100 / 1d ".parse::<Limit>(),
            Ok(Limit::new(100, Duration::from_secs(86_400)))
        );
        assert_eq!("0/m".parse::<Limit>().unwrap().capacity, 0);
        for bad in ["", "30", "x/h", "30/", "30/y", "30/0s", "-1/h", "30/h5"] {
            assert!(bad.parse::<Limit>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bucket_allows_bursts_then_refills() {
        let l = Limit::new(3, Duration::from_secs(3)); // one token per second
        let (mut tokens, mut at) = (3.0, 0);
        for expected_left in [2, 1, 0] {
            let (t, d) = decide(&l, tokens, at, 0);
            assert_eq!(
                d,
                Decision::Allowed {
                    remaining: expected_left
                }
            );
            (tokens, at) = (t, 0);
        }
        let (t, d) = decide(&l, tokens, at, 250);
        assert_eq!(d.retry_after_secs(), Some(1));
        assert_eq!(
            d,
            Decision::Limited {
                retry_after: Duration::from_millis(750)
            }
        );
        let (_, d) = decide(&l, t, 250, 1000);
        assert!(matches!(d, Decision::Allowed { .. }));
        // Refill never exceeds the capacity.
        let (t, _) = decide(&l, 0.0, 0, 1_000_000);
        assert_eq!(t, 2.0);
    }
}
