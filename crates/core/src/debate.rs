//! The debate record (DESIGN.md §10): what `GET /api/v1/debates/{id}` returns and
//! `POST /api/v1/debates/import` accepts. Explanations are recomputed from exactly this.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusMode {
    /// Plurality winner whose (weighted) vote share reaches `threshold` (default 0.6).
    #[default]
    Majority,
    /// Like majority with the threshold fixed at 2/3.
    Supermajority,
    /// Every vote for the same agent.
    Unanimous,
    /// Votes weighted by agent weight and vote confidence; the share must reach `threshold`.
    Weighted,
    /// A designated judge decides; votes are advisory.
    Judge,
}

impl ConsensusMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsensusMode::Majority => "majority",
            ConsensusMode::Supermajority => "supermajority",
            ConsensusMode::Unanimous => "unanimous",
            ConsensusMode::Weighted => "weighted",
            ConsensusMode::Judge => "judge",
        }
    }
}

pub const DEFAULT_THRESHOLD: f64 = 0.6;

fn default_threshold() -> f64 {
    DEFAULT_THRESHOLD
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsensusConfig {
    #[serde(default)]
    pub mode: ConsensusMode,
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Judge mode: the agent whose decision is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            mode: ConsensusMode::Majority,
            threshold: DEFAULT_THRESHOLD,
            judge: None,
        }
    }
}

fn default_weight() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub name: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// OpenAI-compatible / Anthropic providers: API base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Name of the environment variable that holds the API key (the key itself is never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    pub id: String,
    pub claim: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Position {
    pub agent: String,
    pub answer: String,
    #[serde(default)]
    pub reasoning: String,
    pub confidence: f64,
    #[serde(default)]
    pub evidence_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Critique {
    pub critic: String,
    pub target: String,
    #[serde(default)]
    pub issues: Vec<String>,
    #[serde(default)]
    pub suggestions: Vec<String>,
    /// 0 (nitpick) to 10 (fatal).
    pub severity: f64,
    #[serde(default)]
    pub reasoning: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Round {
    pub round: u32,
    #[serde(default)]
    pub positions: Vec<Position>,
    #[serde(default)]
    pub critiques: Vec<Critique>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Vote {
    pub agent: String,
    /// The agent whose final position this vote supports.
    pub choice: String,
    pub confidence: f64,
    #[serde(default)]
    pub reasoning: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Judgement {
    pub agent: String,
    pub choice: String,
    #[serde(default)]
    pub reasoning: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DebateStatus {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
}

impl DebateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DebateStatus::Pending => "pending",
            DebateStatus::Running => "running",
            DebateStatus::Completed => "completed",
            DebateStatus::Failed => "failed",
        }
    }
}

/// The whole debate: inputs, transcript and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Debate {
    pub id: String,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default)]
    pub consensus: ConsensusConfig,
    pub agents: Vec<Agent>,
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    #[serde(default)]
    pub rounds: Vec<Round>,
    #[serde(default)]
    pub votes: Vec<Vote>,
    #[serde(default)]
    pub judge: Option<Judgement>,
    #[serde(default)]
    pub status: DebateStatus,
    #[serde(default)]
    pub final_answer: Option<String>,
    #[serde(default)]
    pub winner: Option<String>,
    #[serde(default)]
    pub consensus_reached: bool,
    #[serde(default)]
    pub confidence: f64,
    #[serde(default)]
    pub consensus_strength: f64,
    #[serde(default)]
    pub rounds_used: u32,
    /// Agents that failed during the run, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_failures: Vec<AgentFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentFailure {
    pub agent: String,
    pub round: u32,
    pub error: String,
}

impl Debate {
    /// Each agent's last stated position (the position votes refer to).
    pub fn final_position(&self, agent: &str) -> Option<&Position> {
        self.rounds
            .iter()
            .rev()
            .flat_map(|r| r.positions.iter())
            .find(|p| p.agent == agent)
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.name == name)
    }
}
