//! aragora-webhooks: the storage-free core of the webhook system (DESIGN.md §6, issue 4).
//!
//! - [`signing`]: `X-Signature-SHA256` (the guide's scheme) and Standard Webhooks signatures.
//! - [`ssrf`]: URL validation and the address policy, with the operator allowlist.
//! - [`resolve`]: the pluggable resolver and resolve-then-vet.
//! - [`sender`]: the guarded HTTP sender; one call = one attempt = one receipt's worth of facts.
//! - [`headers`]: the header set of one attempt.
//! - [`retry`]: backoff schedule and `Retry-After`.
//! - [`breaker`]: the per-endpoint circuit breaker as a serialisable state machine.
//! - [`receiver`]: a scriptable loopback receiver for tests and benchmarks.
//!
//! Storage, queueing, routes and metrics live elsewhere; a delivery worker composes these:
//! `breaker.allow_request` → `headers::build_headers` → `Sender::send` → `breaker.on_*` →
//! receipt from the [`sender::Attempt`] → `RetryPolicy::next_delay` when the outcome is `Retry`.

pub mod breaker;
pub mod headers;
pub mod receiver;
pub mod resolve;
pub mod retry;
pub mod sender;
pub mod signing;
pub mod ssrf;

pub use breaker::{Admission, BreakerConfig, BreakerState};
pub use headers::{HeaderInput, USER_AGENT, build_headers};
pub use resolve::{Resolve, StubResolver, SystemResolver};
pub use retry::{Jitter, RetryPolicy, parse_retry_after};
pub use sender::{Attempt, DeliveryRequest, ErrorClass, Outcome, Sender, SenderConfig};
pub use ssrf::{BlockReason, Policy, SsrfError, ValidatedUrl, validate_url};

/// This crate's version (also in [`USER_AGENT`]).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
