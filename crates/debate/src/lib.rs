//! aragora-debate: the debate engine and its agent providers.
//!
//! - [`run`] / [`run_with_report`] / [`resume`] take a [`DebateSpec`] and a [`ProviderRegistry`]
//!   and return the finished [`aragora_core::debate::Debate`]; a [`DebateObserver`] hears about
//!   completed rounds and failed agents. The engine does no storage.
//! - Providers: `demo` (offline, deterministic), OpenAI-compatible chat completions (`openai`,
//!   `openai-compatible`, `ollama`, `openrouter`) and `anthropic` (Messages API).
//! - Outcomes come from [`aragora_core::consensus::decide`].
//!
//! The whole story, with the rules, is in docs/debates.md.

pub mod anthropic;
pub mod demo;
pub mod engine;
pub mod http;
pub mod openai;
pub mod parse;
mod prompt;
pub mod provider;
pub mod spec;

/// Re-exported so custom [`Provider`] implementations need no extra dependency.
pub use async_trait::async_trait;
pub use engine::{DebateObserver, NoopObserver, RunReport, resume, run, run_with_report};
pub use http::{AddressGuard, Egress, HttpSettings, KeySource};
pub use provider::{
    AgentReply, AgentRequest, BUILTIN_PROVIDERS, CritiqueReply, NewEvidence, PositionReply,
    Provider, ProviderError, ProviderRegistry, Role, TokenUsage, VoteReply,
};
pub use spec::{DebateSpec, QUORUM};
