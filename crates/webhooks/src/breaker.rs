//! Per-endpoint circuit breaker as a pure, serialisable state machine (DESIGN.md §6).
//!
//! The server keeps one [`BreakerState`] per endpoint in a database row (JSON plus a version
//! column) and updates it with compare-and-swap, so every worker on every node sees the same
//! breaker. Times are UTC milliseconds supplied by the caller; nothing here reads a clock.
//!
//! - Closed → Open after `consecutive_failures` failures in a row, or when the failure ratio over
//!   the sliding window reaches `failure_ratio` with at least `min_volume` results in it.
//! - Open lasts `open_base · 2^(open_count-1)`, capped at `open_max`; `open_count` is forgotten
//!   after `open_count_reset` of being closed.
//! - When the open time is over, [`BreakerState::allow_request`] admits exactly one probe and moves
//!   to half-open; everything else is rejected while the probe is in flight. A probe whose result
//!   never arrives (worker died) is replaced after `probe_timeout`.
//! - Probe success closes the breaker; probe failure re-opens it for longer.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Breaker tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerConfig {
    pub consecutive_failures: u32,
    /// Sliding window length, split into [`WINDOW_BUCKETS`] buckets.
    pub window: Duration,
    pub min_volume: u32,
    /// In `0.0..=1.0`.
    pub failure_ratio: f64,
    pub open_base: Duration,
    pub open_max: Duration,
    pub open_count_reset: Duration,
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            window: Duration::from_secs(60),
            min_volume: 20,
            failure_ratio: 0.5,
            open_base: Duration::from_secs(30),
            open_max: Duration::from_secs(3600),
            open_count_reset: Duration::from_secs(3600),
            probe_timeout: Duration::from_secs(60),
        }
    }
}

impl BreakerConfig {
    /// Open time for the `open_count`-th consecutive opening (1-based).
    pub fn open_duration(&self, open_count: u32) -> Duration {
        let factor = 1u32
            .checked_shl(open_count.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.open_base.saturating_mul(factor).min(self.open_max)
    }
}

/// Buckets in the sliding window.
pub const WINDOW_BUCKETS: usize = 6;

/// Success/failure counts over the last `window`, in fixed buckets (small enough for a DB row).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Bucket index (time / bucket length) of the newest bucket.
    pub head: i64,
    /// `[successes, failures]` per bucket, newest at `head % WINDOW_BUCKETS`.
    pub buckets: [[u32; 2]; WINDOW_BUCKETS],
}

impl Window {
    fn bucket_ms(cfg: &BreakerConfig) -> i64 {
        ((cfg.window.as_millis() as i64) / WINDOW_BUCKETS as i64).max(1)
    }

    fn advance(&mut self, now_ms: i64, cfg: &BreakerConfig) {
        let idx = now_ms.div_euclid(Self::bucket_ms(cfg));
        if idx <= self.head {
            return;
        }
        let steps = (idx - self.head).min(WINDOW_BUCKETS as i64);
        for s in 1..=steps {
            let slot = (self.head + s).rem_euclid(WINDOW_BUCKETS as i64) as usize;
            self.buckets[slot] = [0, 0];
        }
        self.head = idx;
    }

    fn record(&mut self, now_ms: i64, cfg: &BreakerConfig, failure: bool) {
        self.advance(now_ms, cfg);
        let slot = self.head.rem_euclid(WINDOW_BUCKETS as i64) as usize;
        let c = &mut self.buckets[slot][usize::from(failure)];
        *c = c.saturating_add(1);
    }

    /// (successes, failures) in the window.
    pub fn totals(&self) -> (u32, u32) {
        self.buckets.iter().fold((0, 0), |(s, f), b| {
            (s.saturating_add(b[0]), f.saturating_add(b[1]))
        })
    }
}

/// The breaker. Serialised as `{"state":"closed"|"open"|"half_open", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    Closed {
        consecutive_failures: u32,
        window: Window,
        /// Openings so far in the current streak (decides the next open time).
        open_count: u32,
        /// When the breaker last closed (ms), for forgetting `open_count`.
        closed_at_ms: i64,
    },
    Open {
        until_ms: i64,
        open_count: u32,
    },
    HalfOpen {
        probe_in_flight: bool,
        probe_started_ms: i64,
        open_count: u32,
    },
}

impl Default for BreakerState {
    fn default() -> Self {
        BreakerState::closed(0, 0)
    }
}

/// Answer of [`BreakerState::allow_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: send.
    Allow,
    /// Half-open: send this one request as the probe; report its result.
    Probe,
    /// Do not dial; nothing is spent. Try again at `retry_at_ms` (the end of the open time, or
    /// when the in-flight probe would time out).
    Reject { retry_at_ms: i64 },
}

impl Admission {
    pub fn is_allowed(self) -> bool {
        !matches!(self, Admission::Reject { .. })
    }
}

impl BreakerState {
    fn closed(open_count: u32, now_ms: i64) -> Self {
        BreakerState::Closed {
            consecutive_failures: 0,
            window: Window::default(),
            open_count,
            closed_at_ms: now_ms,
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }

    /// Openings that still count toward the next open time at `now_ms`: a closed breaker forgets
    /// them after `open_count_reset` (stored lazily, at its next success or failure).
    pub fn open_count(&self, now_ms: i64, cfg: &BreakerConfig) -> u32 {
        match self {
            BreakerState::Closed {
                open_count,
                closed_at_ms,
                ..
            } if open_count_forgotten(*closed_at_ms, now_ms, cfg) => 0,
            BreakerState::Closed { open_count, .. }
            | BreakerState::Open { open_count, .. }
            | BreakerState::HalfOpen { open_count, .. } => *open_count,
        }
    }

    /// Gauge value for `aragora_webhook_circuit_breaker_state`: 0 closed, 1 open, 2 half-open.
    pub fn gauge(&self) -> i64 {
        match self {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen { .. } => 2,
        }
    }

    /// May a request be sent now? Mutates on the open → half-open transition (the caller that
    /// gets [`Admission::Probe`] must write the new state with compare-and-swap before dialling;
    /// losing the swap means someone else holds the probe).
    pub fn allow_request(&mut self, now_ms: i64, cfg: &BreakerConfig) -> Admission {
        match *self {
            BreakerState::Closed { .. } => Admission::Allow,
            BreakerState::Open {
                until_ms,
                open_count,
            } => {
                if now_ms < until_ms {
                    Admission::Reject {
                        retry_at_ms: until_ms,
                    }
                } else {
                    *self = BreakerState::HalfOpen {
                        probe_in_flight: true,
                        probe_started_ms: now_ms,
                        open_count,
                    };
                    Admission::Probe
                }
            }
            BreakerState::HalfOpen {
                probe_in_flight,
                probe_started_ms,
                open_count,
            } => {
                let probe_deadline = probe_started_ms + cfg.probe_timeout.as_millis() as i64;
                if probe_in_flight && now_ms < probe_deadline {
                    Admission::Reject {
                        retry_at_ms: probe_deadline,
                    }
                } else {
                    *self = BreakerState::HalfOpen {
                        probe_in_flight: true,
                        probe_started_ms: now_ms,
                        open_count,
                    };
                    Admission::Probe
                }
            }
        }
    }

    /// Records a successful delivery.
    pub fn on_success(&mut self, now_ms: i64, cfg: &BreakerConfig) {
        match self {
            BreakerState::Closed {
                consecutive_failures,
                window,
                open_count,
                closed_at_ms,
            } => {
                *consecutive_failures = 0;
                window.record(now_ms, cfg, false);
                if *open_count > 0 && open_count_forgotten(*closed_at_ms, now_ms, cfg) {
                    *open_count = 0;
                }
            }
            BreakerState::HalfOpen { open_count, .. } => {
                *self = BreakerState::closed(*open_count, now_ms);
            }
            // A late answer to a request admitted before the breaker opened: the open time
            // stands; the probe decides.
            BreakerState::Open { .. } => {}
        }
    }

    /// Records a failed delivery (one that dialled, or tried to, and did not get a 2xx).
    pub fn on_failure(&mut self, now_ms: i64, cfg: &BreakerConfig) {
        match self {
            BreakerState::Closed {
                consecutive_failures,
                window,
                open_count,
                closed_at_ms,
            } => {
                *consecutive_failures = consecutive_failures.saturating_add(1);
                window.record(now_ms, cfg, true);
                let (s, f) = window.totals();
                let volume = s.saturating_add(f);
                let ratio_trips = volume >= cfg.min_volume.max(1)
                    && f64::from(f) >= cfg.failure_ratio * f64::from(volume);
                if *consecutive_failures >= cfg.consecutive_failures.max(1) || ratio_trips {
                    let streak = if open_count_forgotten(*closed_at_ms, now_ms, cfg) {
                        0
                    } else {
                        *open_count
                    };
                    self.open(streak.saturating_add(1), now_ms, cfg);
                }
            }
            BreakerState::HalfOpen { open_count, .. } => {
                let n = open_count.saturating_add(1);
                self.open(n, now_ms, cfg);
            }
            BreakerState::Open { .. } => {}
        }
    }

    fn open(&mut self, open_count: u32, now_ms: i64, cfg: &BreakerConfig) {
        *self = BreakerState::Open {
            until_ms: now_ms.saturating_add(cfg.open_duration(open_count).as_millis() as i64),
            open_count,
        };
    }
}

/// Whether a breaker closed at `closed_at_ms` has been closed long enough to forget its openings.
fn open_count_forgotten(closed_at_ms: i64, now_ms: i64, cfg: &BreakerConfig) -> bool {
    now_ms - closed_at_ms >= cfg.open_count_reset.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            window: Duration::from_secs(60),
            min_volume: 10,
            failure_ratio: 0.5,
            open_base: Duration::from_secs(10),
            open_max: Duration::from_secs(35),
            open_count_reset: Duration::from_secs(600),
            probe_timeout: Duration::from_secs(20),
        }
    }

    #[test]
    fn a_closed_breaker_reports_its_openings_until_it_forgets_them() {
        let c = cfg();
        let b = BreakerState::Closed {
            consecutive_failures: 0,
            window: Window::default(),
            open_count: 2,
            closed_at_ms: 1_000,
        };
        assert_eq!(b.open_count(1_000 + 599_999, &c), 2);
        assert_eq!(b.open_count(1_000 + 600_000, &c), 0);
        let open = BreakerState::Open {
            until_ms: 5_000,
            open_count: 3,
        };
        assert_eq!(open.open_count(10_000_000, &c), 3);
    }

    #[test]
    fn closed_open_half_open_one_probe_closed() {
        let c = cfg();
        let mut b = BreakerState::default();
        let t = 1_000_000;
        for i in 0..2 {
            assert_eq!(b.allow_request(t + i, &c), Admission::Allow);
            b.on_failure(t + i, &c);
            assert_eq!(b.name(), "closed");
        }
        b.on_failure(t + 2, &c);
        assert_eq!(
            b,
            BreakerState::Open {
                until_ms: t + 2 + 10_000,
                open_count: 1
            }
        );
        assert_eq!(b.gauge(), 1);
        assert_eq!(
            b.allow_request(t + 5_000, &c),
            Admission::Reject {
                retry_at_ms: t + 10_002
            }
        );
        // Open time over: exactly one probe.
        assert_eq!(b.allow_request(t + 10_002, &c), Admission::Probe);
        assert_eq!(b.name(), "half_open");
        for dt in [0, 1, 5_000, 19_999] {
            assert!(!b.allow_request(t + 10_002 + dt, &c).is_allowed());
        }
        b.on_success(t + 10_500, &c);
        assert_eq!(b.name(), "closed");
        assert_eq!(b.allow_request(t + 10_501, &c), Admission::Allow);
    }

    #[test]
    fn probe_failure_reopens_for_longer_and_caps() {
        let c = cfg();
        let mut b = BreakerState::default();
        let mut now = 0;
        for _ in 0..3 {
            b.on_failure(now, &c);
        }
        let mut expected_open = [10_000, 20_000, 35_000, 35_000].into_iter();
        let mut prev_count = 0;
        loop {
            let BreakerState::Open {
                until_ms,
                open_count,
            } = b
            else {
                panic!("expected open, got {b:?}")
            };
            assert_eq!(open_count, prev_count + 1);
            assert_eq!(until_ms - now, expected_open.next().expect("more"));
            prev_count = open_count;
            if open_count == 4 {
                break;
            }
            now = until_ms;
            assert_eq!(b.allow_request(now, &c), Admission::Probe);
            b.on_failure(now, &c);
        }
    }

    #[test]
    fn lost_probe_is_replaced_after_timeout() {
        let c = cfg();
        let mut b = BreakerState::Open {
            until_ms: 100,
            open_count: 1,
        };
        assert_eq!(b.allow_request(100, &c), Admission::Probe);
        assert_eq!(
            b.allow_request(100 + 19_999, &c),
            Admission::Reject {
                retry_at_ms: 100 + 20_000
            }
        );
        assert_eq!(b.allow_request(100 + 20_000, &c), Admission::Probe);
        assert!(!b.allow_request(100 + 20_001, &c).is_allowed());
    }

    #[test]
    fn failure_ratio_over_window_with_minimum_volume() {
        let c = cfg();
        let mut b = BreakerState::default();
        // Alternate success/failure: never 3 in a row, ratio 0.5 reached at volume 10.
        let mut now = 0;
        for i in 0..9 {
            if i % 2 == 0 {
                b.on_failure(now, &c);
            } else {
                b.on_success(now, &c);
            }
            now += 100;
            assert_eq!(b.name(), "closed", "after {i}");
        }
        b.on_success(now, &c); // 10th result: 5 failures / 10, but the last was a success.
        assert_eq!(b.name(), "closed");
        b.on_failure(now, &c); // 6 / 11 ≥ 0.5.
        assert_eq!(b.name(), "open");

        // Old results slide out of the window.
        // 4 failures + 5 successes at t=0 (below min volume, never trips on its own) …
        let mut b = BreakerState::default();
        for _ in 0..4 {
            b.on_failure(0, &c);
            b.on_success(0, &c);
        }
        b.on_success(0, &c);
        // … then F F S F F S a window later: with the old results kept, the second failure
        // would make 6 of 11 and trip.
        for (i, fail) in [true, true, false, true, true, false]
            .into_iter()
            .enumerate()
        {
            if fail {
                b.on_failure(61_000, &c);
            } else {
                b.on_success(61_000, &c);
            }
            assert_eq!(
                b.name(),
                "closed",
                "step {i}: window must have forgotten t=0"
            );
        }
    }

    #[test]
    fn open_count_is_forgotten_after_a_quiet_period() {
        let c = cfg();
        let mut b = BreakerState::Open {
            until_ms: 0,
            open_count: 3,
        };
        assert_eq!(b.allow_request(0, &c), Admission::Probe);
        b.on_success(0, &c);
        let later = 600_000;
        for _ in 0..3 {
            b.on_failure(later, &c);
        }
        assert_eq!(
            b,
            BreakerState::Open {
                until_ms: later + 10_000,
                open_count: 1
            }
        );
    }

    #[test]
    fn serialises_for_a_database_row() {
        let c = cfg();
        let mut b = BreakerState::default();
        b.on_failure(5, &c);
        let json = serde_json::to_string(&b).expect("json");
        assert!(json.starts_with(r#"{"state":"closed""#), "{json}");
        let back: BreakerState = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, b);
        let open = BreakerState::Open {
            until_ms: 9,
            open_count: 2,
        };
        assert_eq!(
            serde_json::to_value(&open).expect("json"),
            serde_json::json!({"state": "open", "until_ms": 9, "open_count": 2})
        );
    }
}
