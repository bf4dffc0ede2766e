//! The debate engine: propose → (critique → revise) × (rounds − 1) → vote → [judge] → consensus.
//!
//! - Round 0: every debating agent proposes. Each further round `r`: every agent critiques every
//!   other agent's round `r − 1` position (the critiques are stored on round `r − 1`, beside the
//!   positions they target), then every agent revises, giving the round `r` positions.
//! - Then every agent votes for one final position (its own allowed); in judge mode the judge,
//!   who does not debate or vote, then picks the winner. [`aragora_core::consensus::decide`]
//!   fills the outcome.
//! - Agents are called concurrently within a step; steps run in order.
//! - An agent whose call fails (after the provider's retries) or whose reply is unusable is
//!   recorded in `agent_failures`, reported to the observer, and takes no further part. The
//!   debate goes on while at least [`QUORUM`] debating agents remain (and at least `QUORUM`
//!   votes are cast); otherwise it ends with status `failed`. In judge mode a failed judge
//!   fails the debate.
//! - The engine does no storage: the observer hears about progress and errors, and the caller
//!   persists the returned [`Debate`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;

use aragora_core::consensus;
use aragora_core::debate::{
    AgentFailure, Critique, Debate, DebateStatus, Evidence, Judgement, Position, Round, Vote,
};
use futures::future::join_all;

use crate::provider::{
    AgentReply, AgentRequest, PositionReply, ProviderError, ProviderRegistry, Role, TokenUsage,
};
use crate::spec::{DebateSpec, QUORUM};

/// Hears about a debate while it runs. Every method has a no-op default.
///
/// The methods are awaited in the engine's task, in order; a slow observer slows the debate.
pub trait DebateObserver: Send {
    /// Round `round` is complete (its positions, and the critiques of the round before it, are
    /// in `debate`). Persist progress here.
    fn on_round_complete(
        &mut self,
        debate: &Debate,
        round: u32,
    ) -> impl Future<Output = ()> + Send {
        let _ = (debate, round);
        async {}
    }

    /// `agent` failed in `round` (see [`AgentRequest::round`]) and is out of the debate
    /// (the server emits `agent.error`). The same failure is in `debate.agent_failures`.
    fn on_agent_error(
        &mut self,
        agent: &str,
        round: u32,
        error: &ProviderError,
    ) -> impl Future<Output = ()> + Send {
        let _ = (agent, round, error);
        async {}
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl DebateObserver for NoopObserver {}

/// The finished debate plus what the record has no field for.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub debate: Debate,
    /// Token usage per agent (zero for the demo provider, which calls no model).
    pub usage: BTreeMap<String, TokenUsage>,
    /// Agent calls made (failed ones included).
    pub calls: u32,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Why the debate failed, when `debate.status` is `failed`.
    pub failure: Option<String>,
}

impl RunReport {
    pub fn total_usage(&self) -> TokenUsage {
        let mut total = TokenUsage::default();
        for u in self.usage.values() {
            total.add(*u);
        }
        total
    }
}

/// Run a debate to the end and return its record (status `completed` or `failed`).
/// Dropping the future cancels the debate.
pub async fn run(
    spec: DebateSpec,
    providers: &ProviderRegistry,
    observer: &mut impl DebateObserver,
) -> Debate {
    run_with_report(spec, providers, observer).await.debate
}

/// [`run`], also returning token usage, timings and the failure reason.
pub async fn run_with_report(
    spec: DebateSpec,
    providers: &ProviderRegistry,
    observer: &mut impl DebateObserver,
) -> RunReport {
    let id = spec
        .id
        .clone()
        .unwrap_or_else(|| aragora_core::ids::new_id(aragora_core::ids::prefix::DEBATE));
    let debate = Debate {
        id,
        task: spec.task.clone(),
        context: spec.context.clone(),
        consensus: spec.consensus.clone(),
        agents: spec.agents.clone(),
        evidence: spec.evidence.clone(),
        rounds: Vec::new(),
        votes: Vec::new(),
        judge: None,
        status: DebateStatus::Running,
        final_answer: None,
        winner: None,
        consensus_reached: false,
        confidence: 0.0,
        consensus_strength: 0.0,
        rounds_used: 0,
        agent_failures: Vec::new(),
    };
    Engine::new(spec, debate, providers, observer).drive().await
}

/// Continue a debate from the last state passed to [`DebateObserver::on_round_complete`]
/// (e.g. after a crash): complete rounds are kept, the rest is redone. Agents listed in
/// `partial.agent_failures` stay out. The spec supplies the round count and is validated;
/// the transcript, agents and id come from `partial`.
pub async fn resume(
    spec: DebateSpec,
    mut partial: Debate,
    providers: &ProviderRegistry,
    observer: &mut impl DebateObserver,
) -> RunReport {
    // Keep only complete rounds: positions in order 0, 1, 2, … and no critiques on the last
    // one (they belong to a round that never completed).
    let complete = partial
        .rounds
        .iter()
        .enumerate()
        .take_while(|(i, r)| r.round as usize == *i && !r.positions.is_empty())
        .count();
    partial.rounds.truncate(complete);
    if let Some(last) = partial.rounds.last_mut() {
        last.critiques.clear();
    }
    partial.votes.clear();
    partial.judge = None;
    partial.status = DebateStatus::Running;
    partial.final_answer = None;
    partial.winner = None;
    partial.consensus_reached = false;
    partial.confidence = 0.0;
    partial.consensus_strength = 0.0;
    partial.rounds_used = 0;
    Engine::new(spec, partial, providers, observer)
        .drive()
        .await
}

struct Engine<'a, O> {
    spec: DebateSpec,
    debate: Debate,
    providers: &'a ProviderRegistry,
    observer: &'a mut O,
    /// Debating agents still in, in the order of `spec.agents`.
    active: Vec<String>,
    judge: Option<String>,
    usage: BTreeMap<String, TokenUsage>,
    calls: u32,
    started_at_ms: i64,
    /// Lower-cased claim → evidence id, so a claim cited twice gets one id.
    claims: HashMap<String, String>,
    next_evidence: usize,
}

/// Why the run stopped early.
struct Stop(String);

impl<'a, O: DebateObserver> Engine<'a, O> {
    fn new(
        spec: DebateSpec,
        debate: Debate,
        providers: &'a ProviderRegistry,
        observer: &'a mut O,
    ) -> Self {
        let judge = spec.judge().map(str::to_string);
        let failed: HashSet<&str> = debate
            .agent_failures
            .iter()
            .map(|f| f.agent.as_str())
            .collect();
        let last_round: Option<HashSet<&str>> = debate
            .rounds
            .last()
            .map(|r| r.positions.iter().map(|p| p.agent.as_str()).collect());
        let active = debate
            .agents
            .iter()
            .map(|a| a.name.as_str())
            .filter(|n| Some(*n) != judge.as_deref() && !failed.contains(n))
            .filter(|n| last_round.as_ref().is_none_or(|names| names.contains(n)))
            .map(str::to_string)
            .collect();
        let claims = debate
            .evidence
            .iter()
            .map(|e| (e.claim.trim().to_lowercase(), e.id.clone()))
            .collect();
        Engine {
            spec,
            debate,
            providers,
            observer,
            active,
            judge,
            usage: BTreeMap::new(),
            calls: 0,
            started_at_ms: aragora_core::time::now_ms(),
            claims,
            next_evidence: 1,
        }
    }

    async fn drive(mut self) -> RunReport {
        let failure = match self.providers.validate(&self.spec) {
            Err(e) => Some(format!("invalid debate spec: {e}")),
            Ok(()) => self.steps().await.err().map(|Stop(why)| why),
        };
        let mut debate = self.debate;
        debate.rounds_used = debate.rounds.len() as u32;
        if let Some(why) = &failure {
            debate.status = DebateStatus::Failed;
            tracing::warn!(debate_id = %debate.id, reason = %why, "debate failed");
        } else {
            debate.status = DebateStatus::Completed;
        }
        RunReport {
            debate,
            usage: self.usage,
            calls: self.calls,
            started_at_ms: self.started_at_ms,
            finished_at_ms: aragora_core::time::now_ms(),
            failure,
        }
    }

    async fn steps(&mut self) -> Result<(), Stop> {
        if self.debate.rounds.is_empty() {
            self.propose().await?;
        }
        for r in self.debate.rounds.len() as u32..self.spec.rounds {
            self.critique(r).await?;
            self.revise(r).await?;
        }
        self.vote().await?;
        if self.judge.is_some() {
            self.judge().await?;
        }
        self.decide();
        Ok(())
    }

    async fn propose(&mut self) -> Result<(), Stop> {
        let callers = self.active.clone();
        let targets = vec![Vec::new(); callers.len()];
        let results = self.call_step(Role::Propose, 0, &callers, &targets).await;
        let mut round = Round {
            round: 0,
            positions: Vec::with_capacity(callers.len()),
            critiques: Vec::new(),
        };
        let mut failures = Vec::new();
        for (name, result) in callers.into_iter().zip(results) {
            match result.and_then(|r| need_position(r.position)) {
                Ok(p) => round.positions.push(self.position(name, p)),
                Err(e) => failures.push((name, e)),
            }
        }
        self.debate.rounds.push(round);
        self.fail_agents(Role::Propose, 0, failures).await;
        self.check_quorum(0, Role::Propose)?;
        self.observer.on_round_complete(&self.debate, 0).await;
        Ok(())
    }

    async fn critique(&mut self, r: u32) -> Result<(), Stop> {
        let callers = self.active.clone();
        let targets: Vec<Vec<String>> = callers
            .iter()
            .map(|me| self.active.iter().filter(|t| *t != me).cloned().collect())
            .collect();
        let results = self.call_step(Role::Critique, r, &callers, &targets).await;
        let mut critiques = Vec::new();
        let mut failures = Vec::new();
        for ((name, wanted), result) in callers.into_iter().zip(&targets).zip(results) {
            match result {
                Ok(reply) => {
                    let mut seen = HashSet::new();
                    for c in reply.critiques {
                        // Only the targets asked about, once each.
                        if !wanted.contains(&c.target) || !seen.insert(c.target.clone()) {
                            continue;
                        }
                        critiques.push(Critique {
                            critic: name.clone(),
                            target: c.target,
                            issues: c.issues,
                            suggestions: c.suggestions,
                            severity: clamp_or(c.severity, 0.0, 10.0, 5.0),
                            reasoning: c.reasoning,
                        });
                    }
                }
                Err(e) => failures.push((name, e)),
            }
        }
        let target_round = (r - 1) as usize;
        self.debate.rounds[target_round].critiques.extend(critiques);
        self.fail_agents(Role::Critique, r, failures).await;
        self.check_quorum(r, Role::Critique)
    }

    async fn revise(&mut self, r: u32) -> Result<(), Stop> {
        let callers = self.active.clone();
        let targets = vec![Vec::new(); callers.len()];
        let results = self.call_step(Role::Revise, r, &callers, &targets).await;
        let mut round = Round {
            round: r,
            positions: Vec::with_capacity(callers.len()),
            critiques: Vec::new(),
        };
        let mut failures = Vec::new();
        for (name, result) in callers.into_iter().zip(results) {
            match result.and_then(|r| need_position(r.position)) {
                Ok(p) => round.positions.push(self.position(name, p)),
                Err(e) => failures.push((name, e)),
            }
        }
        self.debate.rounds.push(round);
        self.fail_agents(Role::Revise, r, failures).await;
        self.check_quorum(r, Role::Revise)?;
        self.observer.on_round_complete(&self.debate, r).await;
        Ok(())
    }

    async fn vote(&mut self) -> Result<(), Stop> {
        let round = self.debate.rounds.len() as u32;
        let callers = self.active.clone();
        let targets = vec![self.active.clone(); callers.len()];
        let results = self.call_step(Role::Vote, round, &callers, &targets).await;
        let mut failures = Vec::new();
        for ((name, candidates), result) in callers.into_iter().zip(&targets).zip(results) {
            match result.and_then(|r| need_choice(r.vote, candidates)) {
                Ok(v) => self.debate.votes.push(Vote {
                    agent: name,
                    choice: v.choice,
                    confidence: clamp_or(v.confidence, 0.0, 1.0, 0.5),
                    reasoning: v.reasoning,
                }),
                Err(e) => failures.push((name, e)),
            }
        }
        self.fail_agents(Role::Vote, round, failures).await;
        if self.debate.votes.len() < QUORUM {
            return Err(Stop(format!(
                "only {} vote(s) were cast; at least {QUORUM} are needed",
                self.debate.votes.len()
            )));
        }
        Ok(())
    }

    async fn judge(&mut self) -> Result<(), Stop> {
        let Some(judge) = self.judge.clone() else {
            return Ok(());
        };
        let round = self.debate.rounds.len() as u32;
        // Candidates: the agents that are still in (a failed voter's position still stands).
        let candidates: Vec<String> = self
            .active
            .iter()
            .chain(self.debate.votes.iter().map(|v| &v.agent))
            .fold(Vec::new(), |mut acc, n| {
                if !acc.contains(n) {
                    acc.push(n.clone());
                }
                acc
            });
        let callers = [judge.clone()];
        let targets = [candidates];
        let result = self
            .call_step(Role::Judge, round, &callers, &targets)
            .await
            .pop()
            .unwrap_or_else(|| Err(ProviderError::Config("the judge was not called".into())));
        match result.and_then(|r| need_choice(r.vote, &targets[0])) {
            Ok(v) => {
                self.debate.judge = Some(Judgement {
                    agent: judge,
                    choice: v.choice,
                    reasoning: v.reasoning,
                });
                Ok(())
            }
            Err(e) => {
                let why = format!("the judge '{judge}' failed: {e}");
                self.fail_agents(Role::Judge, round, vec![(judge, e)]).await;
                Err(Stop(why))
            }
        }
    }

    fn decide(&mut self) {
        let d = &mut self.debate;
        let outcome = consensus::decide(&d.consensus, &d.agents, &d.votes, d.judge.as_ref());
        d.final_answer = outcome
            .winner
            .as_deref()
            .and_then(|w| d.final_position(w))
            .map(|p| p.answer.clone());
        d.winner = outcome.winner;
        d.consensus_reached = outcome.consensus_reached;
        d.confidence = outcome.confidence;
        d.consensus_strength = outcome.consensus_strength;
    }

    /// Call every agent in `callers` concurrently; `targets[i]` goes with `callers[i]`.
    async fn call_step(
        &mut self,
        role: Role,
        round: u32,
        callers: &[String],
        targets: &[Vec<String>],
    ) -> Vec<Result<AgentReply, ProviderError>> {
        let debate = &self.debate;
        let providers = self.providers;
        let calls = callers
            .iter()
            .zip(targets)
            .map(|(name, targets)| async move {
                let agent = debate
                    .agent(name)
                    .ok_or_else(|| ProviderError::Config(format!("unknown agent '{name}'")))?;
                let provider = providers.get(&agent.provider).ok_or_else(|| {
                    ProviderError::Config(format!("unknown provider '{}'", agent.provider))
                })?;
                let request = AgentRequest {
                    debate_id: &debate.id,
                    task: &debate.task,
                    context: debate.context.as_deref(),
                    role,
                    round,
                    agent,
                    transcript: debate,
                    targets,
                };
                match providers.call_deadline() {
                    Some(limit) => tokio::time::timeout(limit, provider.call(&request))
                        .await
                        .unwrap_or(Err(ProviderError::Timeout(limit.as_millis() as u64))),
                    None => provider.call(&request).await,
                }
            });
        let results = join_all(calls).await;
        self.calls += results.len() as u32;
        for (name, result) in callers.iter().zip(&results) {
            if let Ok(reply) = result
                && reply.usage != TokenUsage::default()
            {
                self.usage.entry(name.clone()).or_default().add(reply.usage);
            }
        }
        results
    }

    /// A position for the record: evidence ids checked, new evidence given ids.
    fn position(&mut self, agent: String, p: PositionReply) -> Position {
        let mut evidence_ids: Vec<String> = Vec::with_capacity(p.evidence_ids.len());
        for id in p.evidence_ids {
            if self.debate.evidence.iter().any(|e| e.id == id) && !evidence_ids.contains(&id) {
                evidence_ids.push(id);
            }
        }
        for ev in p.new_evidence {
            let claim = ev.claim.trim();
            if claim.is_empty() {
                continue;
            }
            let key = claim.to_lowercase();
            let id = match self.claims.get(&key) {
                Some(id) => id.clone(),
                None => {
                    let id = self.fresh_evidence_id();
                    self.debate.evidence.push(Evidence {
                        id: id.clone(),
                        claim: claim.to_string(),
                        source: ev.source,
                        url: ev.url,
                    });
                    self.claims.insert(key, id.clone());
                    id
                }
            };
            if !evidence_ids.contains(&id) {
                evidence_ids.push(id);
            }
        }
        Position {
            agent,
            answer: p.answer,
            reasoning: p.reasoning,
            confidence: clamp_or(p.confidence, 0.0, 1.0, 0.5),
            evidence_ids,
        }
    }

    fn fresh_evidence_id(&mut self) -> String {
        loop {
            let id = format!("ev-{}", self.next_evidence);
            self.next_evidence += 1;
            if !self.debate.evidence.iter().any(|e| e.id == id) {
                return id;
            }
        }
    }

    async fn fail_agents(
        &mut self,
        role: Role,
        round: u32,
        failures: Vec<(String, ProviderError)>,
    ) {
        for (agent, error) in failures {
            tracing::warn!(debate_id = %self.debate.id, %agent, round, step = %role, %error, "agent failed");
            self.active.retain(|a| a != &agent);
            self.debate.agent_failures.push(AgentFailure {
                agent: agent.clone(),
                round,
                error: format!("{role}: {error}"),
            });
            self.observer.on_agent_error(&agent, round, &error).await;
        }
    }

    fn check_quorum(&self, round: u32, role: Role) -> Result<(), Stop> {
        if self.active.len() < QUORUM {
            return Err(Stop(format!(
                "quorum lost in round {round} ({role}): {} agent(s) left, at least {QUORUM} needed",
                self.active.len()
            )));
        }
        Ok(())
    }
}

fn need_position(p: Option<PositionReply>) -> Result<PositionReply, ProviderError> {
    match p {
        Some(p) if !p.answer.trim().is_empty() => Ok(p),
        Some(_) => Err(ProviderError::Unusable(
            "the position has an empty answer".into(),
        )),
        None => Err(ProviderError::Unusable("the reply has no position".into())),
    }
}

fn need_choice(
    v: Option<crate::provider::VoteReply>,
    candidates: &[String],
) -> Result<crate::provider::VoteReply, ProviderError> {
    let v = v.ok_or_else(|| ProviderError::Unusable("the reply has no vote".into()))?;
    if !candidates.contains(&v.choice) {
        return Err(ProviderError::Unusable(format!(
            "choice '{}' is not a candidate; expected one of {}",
            v.choice,
            candidates.join(", ")
        )));
    }
    Ok(v)
}

fn clamp_or(x: f64, lo: f64, hi: f64, default: f64) -> f64 {
    if x.is_finite() {
        x.clamp(lo, hi)
    } else {
        default
    }
}
