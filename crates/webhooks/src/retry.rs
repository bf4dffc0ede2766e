//! Retry schedule (DESIGN.md §6): exponential backoff with jitter over about a day, and
//! `Retry-After` honoured within bounds. Pure: the delivery worker stores `next_attempt_at`.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// How a delay is drawn below its exponential cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Uniform in `[base, cap_n]` with `cap_n = min(max_delay, base·multiplier^(n-1))`: "full
    /// jitter" (AWS architecture blog) with a floor of `base` so a retry is never immediate.
    #[default]
    Full,
    /// `min(max_delay, uniform[base, 3·previous])`: "decorrelated jitter"; needs the previous
    /// delay (the worker has it: `next_attempt_at` minus the previous attempt's time).
    Decorrelated,
}

/// Retry schedule. `max_attempts` counts every attempt, the first included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
    pub jitter: Jitter,
    /// Bounds applied to a receiver's `Retry-After`.
    pub retry_after_min: Duration,
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    /// 11 attempts, caps 5 s, 20 s, 80 s, 5.3 min, 21 min, 85 min, 5.7 h, then 12 h: the
    /// expected span is about 22 h and the longest possible span about 44 h (see the tests,
    /// which compute both).
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 11,
            base: Duration::from_secs(5),
            multiplier: 4.0,
            max_delay: Duration::from_secs(12 * 3600),
            jitter: Jitter::Full,
            retry_after_min: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(12 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The cap for retry number `n` (1 = the first retry, i.e. before attempt 2).
    pub fn cap(&self, n: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(n.saturating_sub(1).min(64) as i32);
        let secs = self.base.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// Delay before the next attempt after `attempts_made` attempts failed, or `None` when the
    /// budget is spent. `previous_delay` feeds decorrelated jitter; `retry_after` (already parsed
    /// with [`parse_retry_after`]) overrides the backoff, clamped to the configured bounds.
    pub fn next_delay_with<R: Rng + ?Sized>(
        &self,
        attempts_made: u32,
        previous_delay: Option<Duration>,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        if let Some(ra) = retry_after {
            let lo = self.retry_after_min.min(self.retry_after_max);
            return Some(ra.clamp(lo, self.retry_after_max));
        }
        let base = self.base.min(self.max_delay);
        let hi = match self.jitter {
            Jitter::Full => self.cap(attempts_made.max(1)),
            Jitter::Decorrelated => {
                let prev = previous_delay.unwrap_or(base).max(base);
                prev.saturating_mul(3).min(self.max_delay)
            }
        };
        if hi <= base {
            return Some(hi);
        }
        let secs = rng.random_range(base.as_secs_f64()..=hi.as_secs_f64());
        Some(Duration::from_secs_f64(secs))
    }

    /// [`RetryPolicy::next_delay_with`] using the thread-local RNG.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        previous_delay: Option<Duration>,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        self.next_delay_with(attempts_made, previous_delay, retry_after, &mut rand::rng())
    }

    /// Sum of the caps: the longest schedule full jitter can produce.
    pub fn max_total(&self) -> Duration {
        (1..self.max_attempts).map(|n| self.cap(n)).sum()
    }

    /// Mean span of the full-jitter schedule: each delay is uniform in `[base, cap]`.
    pub fn expected_total(&self) -> Duration {
        let base = self.base.min(self.max_delay);
        (1..self.max_attempts)
            .map(|n| (base + self.cap(n)) / 2)
            .sum()
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP date (IMF-fixdate, RFC 850, asctime). A date
/// in the past means "now" (zero). Garbage gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurdly long values instead of rejecting them; the policy clamps anyway.
        return Some(Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const HOUR: f64 = 3600.0;

    #[test]
    fn default_schedule_spans_about_a_day() {
        let p = RetryPolicy::default();
        let expected = p.expected_total().as_secs_f64() / HOUR;
        let max = p.max_total().as_secs_f64() / HOUR;
        assert!((18.0..=30.0).contains(&expected), "expected {expected} h");
        assert!(max <= 48.0, "max {max} h");
        // Sampled schedules agree with the computed mean.
        let mut rng = StdRng::seed_from_u64(7);
        let runs = 2000;
        let mut sum = 0.0;
        for _ in 0..runs {
            let mut total = Duration::ZERO;
            let mut n = 1;
            while let Some(d) = p.next_delay_with(n, None, None, &mut rng) {
                assert!(d >= p.base && d <= p.cap(n), "attempt {n}: {d:?}");
                total += d;
                n += 1;
            }
            assert_eq!(n, p.max_attempts);
            sum += total.as_secs_f64();
        }
        let mean = sum / runs as f64 / HOUR;
        assert!((mean - expected).abs() < 1.0, "mean {mean} vs {expected}");
    }

    #[test]
    fn caps_grow_exponentially_and_stop_at_max() {
        let p = RetryPolicy::default();
        assert_eq!(p.cap(1), Duration::from_secs(5));
        assert_eq!(p.cap(2), Duration::from_secs(20));
        assert_eq!(p.cap(3), Duration::from_secs(80));
        assert_eq!(p.cap(9), p.max_delay);
        assert_eq!(p.cap(1000), p.max_delay);
        assert_eq!(p.next_delay(p.max_attempts, None, None), None);
    }

    #[test]
    fn decorrelated_stays_within_bounds() {
        let p = RetryPolicy {
            jitter: Jitter::Decorrelated,
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut prev = None;
        for n in 1..p.max_attempts {
            let d = p
                .next_delay_with(n, prev, None, &mut rng)
                .expect("budget left");
            assert!(d >= p.base && d <= p.max_delay);
            assert!(d <= prev.unwrap_or(p.base).saturating_mul(3));
            prev = Some(d);
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let p = RetryPolicy::default();
        let d = |ra| p.next_delay(1, None, Some(ra));
        assert_eq!(d(Duration::from_secs(120)), Some(Duration::from_secs(120)));
        assert_eq!(d(Duration::ZERO), Some(p.retry_after_min));
        assert_eq!(d(Duration::from_secs(10 * 86400)), Some(p.retry_after_max));
        assert_eq!(
            p.next_delay(p.max_attempts, None, Some(Duration::from_secs(1))),
            None
        );
    }

    #[test]
    fn parses_retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("date");
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:30 2015", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 20 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }
}
