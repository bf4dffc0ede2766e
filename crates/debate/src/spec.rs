//! What a caller asks for: the body of `POST /api/v1/debates` (DESIGN.md §10 "Starting a debate").

use std::collections::HashSet;

use aragora_core::debate::{Agent, ConsensusConfig, ConsensusMode, Evidence};
use aragora_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::provider::BUILTIN_PROVIDERS;

/// Smallest number of debating agents a debate may start with and keep while it runs.
/// Below this a "debate" is one agent agreeing with itself, so the run fails instead.
pub const QUORUM: usize = 2;
pub const MAX_AGENTS: usize = 20;
pub const MAX_ROUNDS: u32 = 10;
pub const DEFAULT_ROUNDS: u32 = 3;
pub const MAX_TASK_CHARS: usize = 10_000;
pub const MAX_CONTEXT_CHARS: usize = 100_000;
pub const MAX_EVIDENCE: usize = 200;
const MAX_NAME_CHARS: usize = 64;
const MAX_WEIGHT: f64 = 1_000.0;

fn default_rounds() -> u32 {
    DEFAULT_ROUNDS
}

/// A debate to run. `rounds` counts the proposal round: `rounds = 3` is propose, then two
/// critique → revise rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebateSpec {
    /// The id the run will carry (`deb-…`). The server sets it when it accepts the request; when
    /// absent, [`crate::run`] generates one. The demo provider is seeded by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub agents: Vec<Agent>,
    #[serde(default = "default_rounds")]
    pub rounds: u32,
    #[serde(default)]
    pub consensus: ConsensusConfig,
    /// Evidence the agents may cite by id (agents can add more while they argue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

impl DebateSpec {
    /// A spec with the default rounds and consensus rule.
    pub fn new(task: impl Into<String>, agents: Vec<Agent>) -> Self {
        DebateSpec {
            id: None,
            task: task.into(),
            context: None,
            agents,
            rounds: DEFAULT_ROUNDS,
            consensus: ConsensusConfig::default(),
            evidence: Vec::new(),
        }
    }

    /// Check the spec against the built-in providers. The error names the offending field,
    /// e.g. `agents[1].provider`.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(|p| BUILTIN_PROVIDERS.contains(&p))
    }

    /// Like [`DebateSpec::validate`], with the caller deciding which provider names exist
    /// (see [`crate::ProviderRegistry::validate`]).
    pub fn validate_with(&self, provider_known: impl Fn(&str) -> bool) -> Result<()> {
        if let Some(id) = &self.id
            && !aragora_core::ids::is_valid_external_id(id)
        {
            return Err(Error::invalid(
                "id",
                "must be 1..=128 characters of [A-Za-z0-9._:-]",
            ));
        }
        let task = self.task.trim();
        if task.is_empty() {
            return Err(Error::invalid("task", "must not be empty"));
        }
        if self.task.chars().count() > MAX_TASK_CHARS {
            return Err(Error::invalid(
                "task",
                format!("must be at most {MAX_TASK_CHARS} characters"),
            ));
        }
        if let Some(ctx) = &self.context
            && ctx.chars().count() > MAX_CONTEXT_CHARS
        {
            return Err(Error::invalid(
                "context",
                format!("must be at most {MAX_CONTEXT_CHARS} characters"),
            ));
        }
        if !(1..=MAX_ROUNDS).contains(&self.rounds) {
            return Err(Error::invalid(
                "rounds",
                format!("must be between 1 and {MAX_ROUNDS}, got {}", self.rounds),
            ));
        }
        if self.agents.len() < QUORUM {
            return Err(Error::invalid(
                "agents",
                format!(
                    "a debate needs at least {QUORUM} agents, got {}",
                    self.agents.len()
                ),
            ));
        }
        if self.agents.len() > MAX_AGENTS {
            return Err(Error::invalid(
                "agents",
                format!("at most {MAX_AGENTS} agents, got {}", self.agents.len()),
            ));
        }
        let mut names = HashSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            validate_agent(i, agent, &provider_known)?;
            if !names.insert(agent.name.as_str()) {
                return Err(Error::invalid(
                    format!("agents[{i}].name"),
                    format!("duplicate agent name '{}'", agent.name),
                ));
            }
        }
        self.validate_consensus()?;
        if self.evidence.len() > MAX_EVIDENCE {
            return Err(Error::invalid(
                "evidence",
                format!("at most {MAX_EVIDENCE} items"),
            ));
        }
        let mut ids = HashSet::new();
        for (i, ev) in self.evidence.iter().enumerate() {
            if !aragora_core::ids::is_valid_external_id(&ev.id) {
                return Err(Error::invalid(
                    format!("evidence[{i}].id"),
                    "must be 1..=128 characters of [A-Za-z0-9._:-]",
                ));
            }
            if !ids.insert(ev.id.as_str()) {
                return Err(Error::invalid(
                    format!("evidence[{i}].id"),
                    format!("duplicate evidence id '{}'", ev.id),
                ));
            }
            if ev.claim.trim().is_empty() {
                return Err(Error::invalid(
                    format!("evidence[{i}].claim"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    fn validate_consensus(&self) -> Result<()> {
        let c = &self.consensus;
        if !c.threshold.is_finite() || !(0.0..=1.0).contains(&c.threshold) {
            return Err(Error::invalid(
                "consensus.threshold",
                format!("must be between 0 and 1, got {}", c.threshold),
            ));
        }
        match (c.mode, &c.judge) {
            (ConsensusMode::Judge, None) => Err(Error::invalid(
                "consensus.judge",
                "judge mode needs the name of the judging agent",
            )),
            (ConsensusMode::Judge, Some(judge)) => {
                if !self.agents.iter().any(|a| &a.name == judge) {
                    return Err(Error::invalid(
                        "consensus.judge",
                        format!("'{judge}' is not one of the agents"),
                    ));
                }
                let debaters = self.agents.len() - 1;
                if debaters < QUORUM {
                    return Err(Error::invalid(
                        "agents",
                        format!(
                            "judge mode needs at least {QUORUM} agents besides the judge, got {debaters}"
                        ),
                    ));
                }
                Ok(())
            }
            (_, Some(_)) => Err(Error::invalid(
                "consensus.judge",
                format!("only used in judge mode, not in {} mode", c.mode.as_str()),
            )),
            (_, None) => Ok(()),
        }
    }

    /// The judge's name in judge mode.
    pub fn judge(&self) -> Option<&str> {
        match self.consensus.mode {
            ConsensusMode::Judge => self.consensus.judge.as_deref(),
            _ => None,
        }
    }
}

fn validate_agent(i: usize, a: &Agent, provider_known: &impl Fn(&str) -> bool) -> Result<()> {
    let field = |f: &str| format!("agents[{i}].{f}");
    if a.name.is_empty() || a.name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::invalid(
            field("name"),
            format!("must be 1..={MAX_NAME_CHARS} characters"),
        ));
    }
    if !a
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Error::invalid(
            field("name"),
            format!(
                "'{}' may only use letters, digits, '-', '_' and '.'",
                a.name
            ),
        ));
    }
    if a.provider.is_empty() {
        return Err(Error::invalid(field("provider"), "is required"));
    }
    if !provider_known(&a.provider) {
        return Err(Error::invalid(
            field("provider"),
            format!(
                "unknown provider '{}'; expected one of {}",
                a.provider,
                BUILTIN_PROVIDERS.join(", ")
            ),
        ));
    }
    if !a.weight.is_finite() || a.weight <= 0.0 || a.weight > MAX_WEIGHT {
        return Err(Error::invalid(
            field("weight"),
            format!(
                "must be greater than 0 and at most {MAX_WEIGHT}, got {}",
                a.weight
            ),
        ));
    }
    let remote = a.provider != "demo";
    if remote {
        match a.model.as_deref().map(str::trim) {
            None | Some("") => {
                return Err(Error::invalid(
                    field("model"),
                    format!("provider '{}' needs a model", a.provider),
                ));
            }
            Some(m) if m.len() > 200 => {
                return Err(Error::invalid(
                    field("model"),
                    "must be at most 200 characters",
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(url) = &a.base_url {
        if !remote {
            return Err(Error::invalid(
                field("base_url"),
                "the demo provider takes no base_url",
            ));
        }
        if let Err(e) = crate::http::check_base_url(url) {
            return Err(Error::invalid(field("base_url"), e));
        }
    } else if a.provider == crate::provider::OPENAI_COMPATIBLE {
        return Err(Error::invalid(
            field("base_url"),
            "provider 'openai-compatible' needs a base_url, e.g. http://127.0.0.1:8000/v1",
        ));
    }
    if let Some(env) = &a.api_key_env {
        if !remote {
            return Err(Error::invalid(
                field("api_key_env"),
                "the demo provider takes no API key",
            ));
        }
        if let Err(e) = crate::http::check_key_env_name(env) {
            return Err(Error::invalid(field("api_key_env"), e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, provider: &str) -> Agent {
        Agent {
            name: name.into(),
            provider: provider.into(),
            model: (provider != "demo").then(|| "m".to_string()),
            weight: 1.0,
            base_url: None,
            api_key_env: None,
        }
    }

    fn field_of(spec: &DebateSpec) -> String {
        match spec.validate() {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_design_example() {
        let spec: DebateSpec = serde_json::from_str(
            r#"{"task": "Design a rate limiter", "agents": [{"name": "a1", "provider": "demo"},
                {"name": "a2", "provider": "openai", "model": "gpt-x", "base_url": "https://api.openai.com/v1",
                 "api_key_env": "OPENAI_API_KEY"}],
                "rounds": 2, "consensus": {"mode": "majority", "threshold": 0.6}}"#,
        )
        .unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.rounds, 2);
        let spec: DebateSpec = serde_json::from_str(
            r#"{"task": "t", "agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "demo"}]}"#,
        )
        .unwrap();
        spec.validate().unwrap();
        assert_eq!(spec.rounds, DEFAULT_ROUNDS);
        assert_eq!(spec.consensus.mode, ConsensusMode::Majority);
    }

    #[test]
    fn names_the_offending_field() {
        let base = DebateSpec::new("t", vec![agent("a", "demo"), agent("b", "demo")]);
        base.validate().unwrap();

        let mut s = base.clone();
        s.agents[1].provider = "gpt-magic".into();
        assert_eq!(field_of(&s), "agents[1].provider");

        let mut s = base.clone();
        s.agents[1].name = "a".into();
        assert_eq!(field_of(&s), "agents[1].name");

        let mut s = base.clone();
        s.rounds = 0;
        assert_eq!(field_of(&s), "rounds");
        s.rounds = 11;
        assert_eq!(field_of(&s), "rounds");

        let mut s = base.clone();
        s.consensus.threshold = 1.5;
        assert_eq!(field_of(&s), "consensus.threshold");
        s.consensus.threshold = f64::NAN;
        assert_eq!(field_of(&s), "consensus.threshold");

        let mut s = base.clone();
        s.consensus.mode = ConsensusMode::Judge;
        assert_eq!(field_of(&s), "consensus.judge");
        s.consensus.judge = Some("zed".into());
        assert_eq!(field_of(&s), "consensus.judge");
        s.consensus.judge = Some("a".into());
        assert_eq!(
            field_of(&s),
            "agents",
            "one debater besides the judge is too few"
        );
        s.agents.push(agent("c", "demo"));
        s.validate().unwrap();

        let mut s = base.clone();
        s.consensus.judge = Some("a".into());
        assert_eq!(field_of(&s), "consensus.judge", "judge outside judge mode");

        let mut s = base.clone();
        s.agents.truncate(1);
        assert_eq!(field_of(&s), "agents");

        let mut s = base.clone();
        s.task = "  ".into();
        assert_eq!(field_of(&s), "task");

        let mut s = base.clone();
        s.agents[0].weight = -1.0;
        assert_eq!(field_of(&s), "agents[0].weight");

        let mut s = base.clone();
        s.agents[0].name = "has space".into();
        assert_eq!(field_of(&s), "agents[0].name");

        let mut s = base.clone();
        s.agents[1] = agent("b", "openai");
        s.agents[1].model = None;
        assert_eq!(field_of(&s), "agents[1].model");

        let mut s = base.clone();
        s.agents[1] = agent("b", "openai-compatible");
        assert_eq!(field_of(&s), "agents[1].base_url");
        s.agents[1].base_url = Some("ftp://host/v1".into());
        assert_eq!(field_of(&s), "agents[1].base_url");
        s.agents[1].base_url = Some("http://127.0.0.1:8000/v1".into());
        s.validate().unwrap();
        s.agents[1].api_key_env = Some("DATABASE_URL".into());
        assert_eq!(field_of(&s), "agents[1].api_key_env");
        s.agents[1].api_key_env = Some("VLLM_API_KEY".into());
        s.validate().unwrap();

        let mut s = base.clone();
        s.evidence = vec![
            Evidence {
                id: "ev-1".into(),
                claim: "c".into(),
                source: String::new(),
                url: None,
            },
            Evidence {
                id: "ev-1".into(),
                claim: "d".into(),
                source: String::new(),
                url: None,
            },
        ];
        assert_eq!(field_of(&s), "evidence[1].id");
    }
}
