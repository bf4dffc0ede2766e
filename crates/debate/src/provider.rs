//! Agent providers: what the engine asks an agent, what it gets back, and the registry that maps
//! an agent's `provider` name onto an implementation.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aragora_core::debate::{Agent, Critique, Debate, Position};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::anthropic::AnthropicProvider;
use crate::demo::DemoProvider;
use crate::http::{AddressGuard, Egress, HttpSettings, KeySource};
use crate::openai::OpenAiProvider;

pub const DEMO: &str = "demo";
pub const OPENAI: &str = "openai";
pub const OPENAI_COMPATIBLE: &str = "openai-compatible";
pub const OLLAMA: &str = "ollama";
pub const OPENROUTER: &str = "openrouter";
pub const ANTHROPIC: &str = "anthropic";

/// Provider names every registry knows.
pub const BUILTIN_PROVIDERS: [&str; 6] = [
    DEMO,
    OPENAI,
    OPENAI_COMPATIBLE,
    OLLAMA,
    OPENROUTER,
    ANTHROPIC,
];

/// The step of the debate an agent is asked to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Round 0: state an initial position.
    Propose,
    /// Critique the other agents' positions of the previous round.
    Critique,
    /// Restate (possibly change) one's position in the light of the critiques.
    Revise,
    /// Vote for the best final position.
    Vote,
    /// Judge mode: pick the winning final position.
    Judge,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Propose => "propose",
            Role::Critique => "critique",
            Role::Revise => "revise",
            Role::Vote => "vote",
            Role::Judge => "judge",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call to one agent. Everything is borrowed from the debate in progress.
#[derive(Debug, Clone, Copy)]
pub struct AgentRequest<'a> {
    pub debate_id: &'a str,
    pub task: &'a str,
    pub context: Option<&'a str>,
    pub role: Role,
    /// The round this step belongs to. Critiques made in round `r` target the positions of
    /// round `r - 1`; vote and judge steps carry `rounds_used`.
    pub round: u32,
    /// The agent's configuration (name, provider, model, base_url, api_key_env, weight).
    pub agent: &'a Agent,
    /// The transcript so far: earlier rounds, evidence, and (for the judge) the votes.
    pub transcript: &'a Debate,
    /// Critique: the agents whose positions to critique. Vote/judge: the candidates.
    /// Propose/revise: empty.
    pub targets: &'a [String],
}

impl<'a> AgentRequest<'a> {
    /// This agent's most recent position, if it has one.
    pub fn own_position(&self) -> Option<&'a Position> {
        self.transcript.final_position(&self.agent.name)
    }

    /// Critiques of this agent's latest position (what a revision answers).
    pub fn critiques_received(&self) -> impl Iterator<Item = &'a Critique> + 'a {
        let me = self.agent.name.as_str();
        self.transcript
            .rounds
            .last()
            .into_iter()
            .flat_map(|r| r.critiques.iter())
            .filter(move |c| c.target == me)
    }

    /// The latest positions of the targets (others' positions to critique, or the candidates).
    pub fn target_positions(&self) -> impl Iterator<Item = &'a Position> + 'a {
        let transcript = self.transcript;
        self.targets
            .iter()
            .filter_map(move |t| transcript.final_position(t))
    }
}

/// A position as an agent states it. Evidence it introduces gets ids from the engine.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PositionReply {
    pub answer: String,
    pub reasoning: String,
    /// Clamped into 0..=1.
    pub confidence: f64,
    /// Ids of evidence already in the debate that this position relies on.
    pub evidence_ids: Vec<String>,
    /// New evidence the agent brings; the engine assigns ids (`ev-N`) and cites them.
    pub new_evidence: Vec<NewEvidence>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewEvidence {
    pub claim: String,
    pub source: String,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CritiqueReply {
    pub target: String,
    pub issues: Vec<String>,
    pub suggestions: Vec<String>,
    /// Clamped into 0..=10.
    pub severity: f64,
    pub reasoning: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct VoteReply {
    /// The agent whose final position this vote (or judgement) supports.
    pub choice: String,
    pub confidence: f64,
    pub reasoning: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl TokenUsage {
    pub fn add(&mut self, other: TokenUsage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }

    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// What an agent returns. Which part is used depends on the role: `position` for
/// propose/revise, `critiques` for critique, `vote` for vote/judge.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentReply {
    pub position: Option<PositionReply>,
    pub critiques: Vec<CritiqueReply>,
    pub vote: Option<VoteReply>,
    pub usage: TokenUsage,
}

/// Why a call to an agent failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The agent's configuration cannot work (missing API key variable, bad URL, unknown provider).
    #[error("configuration: {0}")]
    Config(String),
    /// 401/403: never retried.
    #[error("authentication failed (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    /// Any other HTTP error status; 429 and 5xx are retried.
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// Could not connect or the connection broke (retried).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The reply arrived but could not be used (not JSON the role needs, empty, unknown choice).
    #[error("unusable reply: {0}")]
    Unusable(String),
    /// Retries ran out; `last` is the final attempt's error.
    #[error("{last} (after {attempts} attempts)")]
    Exhausted {
        attempts: u32,
        last: Box<ProviderError>,
    },
}

impl ProviderError {
    /// Worth another attempt: timeouts, broken connections, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Timeout(_) | ProviderError::Connect(_) => true,
            ProviderError::Http { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// A short machine-readable class for events and metrics:
    /// `config`, `auth`, `http`, `timeout`, `connect`, `unusable`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Config(_) => "config",
            ProviderError::Auth { .. } => "auth",
            ProviderError::Http { .. } => "http",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Connect(_) => "connect",
            ProviderError::Unusable(_) => "unusable",
            ProviderError::Exhausted { last, .. } => last.kind(),
        }
    }
}

/// An agent backend. One instance serves every agent that names it; the agent's own settings
/// (model, base_url, api_key_env) arrive in the request.
#[async_trait]
pub trait Provider: Send + Sync {
    async fn call(&self, request: &AgentRequest<'_>) -> Result<AgentReply, ProviderError>;
}

/// Maps provider names onto implementations. Cheap to clone (everything is shared).
#[derive(Clone)]
pub struct ProviderRegistry {
    providers: HashMap<String, Arc<dyn Provider>>,
    call_deadline: Option<Duration>,
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.providers.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("ProviderRegistry")
            .field("providers", &names)
            .field("call_deadline", &self.call_deadline)
            .finish()
    }
}

impl Default for ProviderRegistry {
    fn default() -> Self {
        Self::new(HttpSettings::default())
    }
}

impl ProviderRegistry {
    /// The built-in providers; API keys are read from the process environment.
    pub fn new(settings: HttpSettings) -> Self {
        Self::with_key_source(settings, KeySource::process_env())
    }

    /// The built-in providers with API keys looked up through `keys` (tests, secret stores).
    /// A `base_url` from a request is dialled as given: servers use [`Self::guarded`].
    pub fn with_key_source(settings: HttpSettings, keys: KeySource) -> Self {
        Self::with_egress(settings, keys, Egress::new(None))
    }

    /// The built-in providers; a `base_url` named in a request may only reach the addresses
    /// `guard` allows (the built-in endpoints are not checked: the operator chose them).
    pub fn guarded(settings: HttpSettings, keys: KeySource, guard: AddressGuard) -> Self {
        Self::with_egress(settings, keys, Egress::new(Some(guard)))
    }

    fn with_egress(settings: HttpSettings, keys: KeySource, client: Egress) -> Self {
        let call_deadline = Some(settings.call_deadline());
        let openai =
            |base: Option<&'static str>, key_env: Option<&'static str>| -> Arc<dyn Provider> {
                Arc::new(OpenAiProvider::new(
                    client.clone(),
                    settings.clone(),
                    keys.clone(),
                    base,
                    key_env,
                ))
            };
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert(DEMO.into(), Arc::new(DemoProvider));
        providers.insert(
            OPENAI.into(),
            openai(Some("https://api.openai.com/v1"), Some("OPENAI_API_KEY")),
        );
        providers.insert(OPENAI_COMPATIBLE.into(), openai(None, None));
        providers.insert(
            OLLAMA.into(),
            openai(Some("http://127.0.0.1:11434/v1"), None),
        );
        providers.insert(
            OPENROUTER.into(),
            openai(
                Some("https://openrouter.ai/api/v1"),
                Some("OPENROUTER_API_KEY"),
            ),
        );
        providers.insert(
            ANTHROPIC.into(),
            Arc::new(AnthropicProvider::new(client, settings, keys)),
        );
        ProviderRegistry {
            providers,
            call_deadline,
        }
    }

    /// Only the demo provider: no network at all.
    pub fn demo_only() -> Self {
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert(DEMO.into(), Arc::new(DemoProvider));
        ProviderRegistry {
            providers,
            call_deadline: None,
        }
    }

    /// Add or replace a provider under `name`.
    pub fn register(&mut self, name: impl Into<String>, provider: Arc<dyn Provider>) {
        self.providers.insert(name.into(), provider);
    }

    /// Upper bound on one agent call including its retries (`None`: no bound beyond the
    /// provider's own timeouts).
    pub fn set_call_deadline(&mut self, deadline: Option<Duration>) {
        self.call_deadline = deadline;
    }

    pub fn call_deadline(&self) -> Option<Duration> {
        self.call_deadline
    }

    pub fn knows(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    /// [`crate::DebateSpec::validate_with`] against the providers registered here.
    pub fn validate(&self, spec: &crate::DebateSpec) -> aragora_core::Result<()> {
        spec.validate_with(|p| self.knows(p))
    }
}
