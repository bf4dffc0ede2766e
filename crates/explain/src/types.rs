//! The explanation shape (DESIGN.md §10). Field names are the contract; fields may be added.
//!
//! Strings borrow from the debate they explain (`Cow`), so building an explanation copies no
//! transcript text; [`Explanation::into_owned`] detaches it. Deserialising always yields owned
//! strings, so `Explanation<'static>` round-trips through JSON.

use std::borrow::Cow;

use aragora_core::debate::ConsensusMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What to compute. Unknown fields are ignored so batch requests can carry other options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ExplainOptions {
    pub include_evidence: bool,
    pub include_counterfactuals: bool,
    pub include_vote_pivots: bool,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            include_evidence: true,
            include_counterfactuals: true,
            include_vote_pivots: true,
        }
    }
}

/// A computed explanation of one debate's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Explanation<'a> {
    /// `dec-` + 32 hex digits of FNV-1a-128 of the debate id: the same debate always gets the
    /// same decision id.
    pub decision_id: String,
    pub debate_id: Cow<'a, str>,
    pub task: Cow<'a, str>,
    /// The recomputed winner's final position (the record's `final_answer` when the winner has
    /// no position in the transcript; empty when there is no winner).
    pub conclusion: Cow<'a, str>,
    /// Recomputed from the votes under the consensus rule (never copied from the record).
    pub confidence: f64,
    pub consensus_reached: bool,
    pub winner: Option<Cow<'a, str>>,
    pub consensus_mode: ConsensusMode,
    /// The threshold the rule applied (supermajority: max(threshold, 2/3)).
    pub threshold: f64,
    /// Winner's share of the total vote weight (judge mode: share agreeing with the judge).
    pub consensus_strength: f64,
    /// (winner − runner-up) / total weight.
    pub margin: f64,
    /// Recount per choice, winner first.
    pub tally: Vec<TallyEntry<'a>>,
    /// What the stored record claims, and whether the recount agrees with it.
    pub recorded: RecordedOutcome<'a>,
    pub evidence_chain: Vec<EvidenceLink<'a>>,
    pub vote_pivots: Vec<VotePivot<'a>>,
    pub counterfactuals: Vec<Counterfactual<'a>>,
    pub reasoning_chain: Vec<ReasoningStep<'a>>,
    pub belief_changes: Vec<BeliefChange<'a>>,
    /// Signed contributions that add up to `confidence`.
    pub confidence_attribution: Vec<ConfidenceFactor<'a>>,
    pub method: Method,
    /// Problems found in the record (unknown agents, duplicate votes, odd numbers...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TallyEntry<'a> {
    pub choice: Cow<'a, str>,
    pub votes: u32,
    pub weight: f64,
    pub share: f64,
    pub mean_confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordedOutcome<'a> {
    pub winner: Option<Cow<'a, str>>,
    pub consensus_reached: bool,
    pub confidence: f64,
    /// Same winner, same consensus and confidence within 1e-6 of the recount.
    pub matches_recount: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvidenceLink<'a> {
    pub id: Cow<'a, str>,
    pub claim: Cow<'a, str>,
    pub source: Cow<'a, str>,
    /// Agents whose positions cite this item, in order of first citation.
    pub cited_by: Vec<Cow<'a, str>>,
    /// Number of positions (over all rounds) citing it.
    pub citations: u32,
    /// Whether the winner's final position cites it.
    pub cited_by_winner: bool,
    /// 0.5·cited_by_winner + 0.5·round-weighted share of its citations made by agents that
    /// voted for the winner (see `method.evidence_relevance`).
    pub relevance_score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VotePivot<'a> {
    pub agent: Cow<'a, str>,
    pub choice: Cow<'a, str>,
    /// The weight the vote counted with.
    pub weight: f64,
    pub confidence: f64,
    /// Normalised Banzhaf index of this voter in the consensus game (sums to 1 over voters).
    pub influence_score: f64,
    /// Changing this vote alone (to any other choice, or removing it) changes the winner or
    /// whether consensus is reached.
    pub pivotal: bool,
    /// The voter's own answer changed between its first and final position.
    pub position_changed: bool,
    pub removal_changes_outcome: bool,
    pub flip_changes_outcome: bool,
    /// A choice that, voted instead, changes the outcome (a winner change preferred).
    pub flip_to: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CounterfactualKind {
    VoteChange,
    AgentRemoved,
    MinimalFlipSet,
    Threshold,
    EvidenceRemoved,
}

impl CounterfactualKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CounterfactualKind::VoteChange => "vote_change",
            CounterfactualKind::AgentRemoved => "agent_removed",
            CounterfactualKind::MinimalFlipSet => "minimal_flip_set",
            CounterfactualKind::Threshold => "threshold",
            CounterfactualKind::EvidenceRemoved => "evidence_removed",
        }
    }
}

/// The outcome of a (possibly hypothetical) recount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutcomeSnapshot<'a> {
    pub winner: Option<Cow<'a, str>>,
    pub consensus_reached: bool,
    pub confidence: f64,
    pub margin: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Counterfactual<'a> {
    pub kind: CounterfactualKind,
    pub condition: Cow<'a, str>,
    /// Agents whose votes (or presence) the condition changes; always present (DESIGN.md §10),
    /// empty when the condition changes no vote (threshold, impossible flip set).
    pub agents: Vec<Cow<'a, str>>,
    /// Evidence items the condition removes (`evidence_removed`); always present (DESIGN.md
    /// §10), empty for the other kinds. Read as empty when missing (explanations stored before
    /// it was always written), but required in the OpenAPI schema because it is always sent.
    #[serde(default)]
    #[schema(required = true)]
    pub evidence_ids: Vec<Cow<'a, str>>,
    /// Positions in the debate's `votes` of the votes the condition changes (an agent may have
    /// voted more than once in a malformed record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vote_indices: Vec<usize>,
    /// The choice the changed votes go to (vote_change, minimal_flip_set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_choice: Option<Cow<'a, str>>,
    /// The threshold applied in the hypothetical (threshold kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_threshold: Option<f64>,
    pub outcome_before: OutcomeSnapshot<'a>,
    pub outcome_after: OutcomeSnapshot<'a>,
    /// The winner or whether consensus is reached differs.
    pub changes_outcome: bool,
    /// How `outcome_after` was obtained.
    pub method: Cow<'a, str>,
    /// True when the claim is an approximation (e.g. a greedy flip set above 20 voters).
    #[serde(default)]
    pub estimated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Proposal,
    Critique,
    Revision,
    Vote,
    Decision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReasoningStep<'a> {
    pub step: u32,
    /// The round's `round` number (none for the vote and decision steps).
    pub round: Option<u32>,
    pub kind: StepKind,
    pub agent: Option<Cow<'a, str>>,
    pub summary: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BeliefChange<'a> {
    pub agent: Cow<'a, str>,
    /// The round in which the new position was stated.
    pub round: u32,
    pub prior: Cow<'a, str>,
    pub posterior: Cow<'a, str>,
    pub prior_confidence: f64,
    pub posterior_confidence: f64,
    /// False when only the confidence moved (by at least 0.05).
    pub answer_changed: bool,
    /// The most severe critique of this agent between the two positions, if any.
    pub trigger: Option<Trigger<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Trigger<'a> {
    pub critic: Cow<'a, str>,
    pub round: u32,
    pub severity: f64,
    /// The critique's first issue (or its reasoning when it lists none).
    pub issue: Cow<'a, str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FactorKind {
    /// 1.0: the confidence of a unanimous, fully confident vote.
    Baseline,
    /// −weight/total: a vote for another choice lowers the winner's share.
    Opposition,
    /// −weight·(1 − confidence)/total: a supporter's doubt.
    Doubt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfidenceFactor<'a> {
    pub factor: FactorKind,
    pub agent: Option<Cow<'a, str>>,
    pub contribution: f64,
}

/// How every number was obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Method {
    /// Algorithm version; changes when any formula changes.
    pub version: Cow<'static, str>,
    pub confidence: Cow<'static, str>,
    pub pivotality: PivotalityMethod,
    pub minimal_flip_set: FlipSetMethod,
    pub counterfactuals: Cow<'static, str>,
    pub evidence_relevance: Cow<'static, str>,
    pub evidence_ablation: Cow<'static, str>,
    pub belief_changes: Cow<'static, str>,
    /// True when any number in the explanation is an estimate.
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PivotalityMethod {
    /// `banzhaf`.
    pub index: Cow<'static, str>,
    /// `exact_dp` | `exact_enumeration` | `monte_carlo` | `judge` | `none`.
    pub algorithm: Cow<'static, str>,
    /// The game: a coalition wins when its weight reaches `quota` of `total_weight`.
    pub quota: f64,
    pub total_weight: f64,
    pub estimated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Largest standard error of a raw index (Monte Carlo only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_error: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlipSetMethod {
    /// `exact_search` | `greedy_proven_minimal` | `greedy_upper_bound` | `impossible_proven` | `not_applicable`.
    pub algorithm: Cow<'static, str>,
    pub estimated: bool,
}

fn own(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

fn own_opt(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
    c.map(own)
}

fn own_vec(v: Vec<Cow<'_, str>>) -> Vec<Cow<'static, str>> {
    v.into_iter().map(own).collect()
}

impl OutcomeSnapshot<'_> {
    pub fn into_owned(self) -> OutcomeSnapshot<'static> {
        OutcomeSnapshot {
            winner: own_opt(self.winner),
            consensus_reached: self.consensus_reached,
            confidence: self.confidence,
            margin: self.margin,
        }
    }
}

impl Explanation<'_> {
    /// Detach the explanation from the debate it borrows from.
    pub fn into_owned(self) -> Explanation<'static> {
        Explanation {
            decision_id: self.decision_id,
            debate_id: own(self.debate_id),
            task: own(self.task),
            conclusion: own(self.conclusion),
            confidence: self.confidence,
            consensus_reached: self.consensus_reached,
            winner: own_opt(self.winner),
            consensus_mode: self.consensus_mode,
            threshold: self.threshold,
            consensus_strength: self.consensus_strength,
            margin: self.margin,
            tally: self
                .tally
                .into_iter()
                .map(|t| TallyEntry {
                    choice: own(t.choice),
                    votes: t.votes,
                    weight: t.weight,
                    share: t.share,
                    mean_confidence: t.mean_confidence,
                })
                .collect(),
            recorded: RecordedOutcome {
                winner: own_opt(self.recorded.winner),
                consensus_reached: self.recorded.consensus_reached,
                confidence: self.recorded.confidence,
                matches_recount: self.recorded.matches_recount,
            },
            evidence_chain: self
                .evidence_chain
                .into_iter()
                .map(|e| EvidenceLink {
                    id: own(e.id),
                    claim: own(e.claim),
                    source: own(e.source),
                    cited_by: own_vec(e.cited_by),
                    citations: e.citations,
                    cited_by_winner: e.cited_by_winner,
                    relevance_score: e.relevance_score,
                })
                .collect(),
            vote_pivots: self
                .vote_pivots
                .into_iter()
                .map(|p| VotePivot {
                    agent: own(p.agent),
                    choice: own(p.choice),
                    weight: p.weight,
                    confidence: p.confidence,
                    influence_score: p.influence_score,
                    pivotal: p.pivotal,
                    position_changed: p.position_changed,
                    removal_changes_outcome: p.removal_changes_outcome,
                    flip_changes_outcome: p.flip_changes_outcome,
                    flip_to: own_opt(p.flip_to),
                })
                .collect(),
            counterfactuals: self
                .counterfactuals
                .into_iter()
                .map(|c| Counterfactual {
                    kind: c.kind,
                    condition: own(c.condition),
                    agents: own_vec(c.agents),
                    evidence_ids: own_vec(c.evidence_ids),
                    vote_indices: c.vote_indices,
                    new_choice: own_opt(c.new_choice),
                    new_threshold: c.new_threshold,
                    outcome_before: c.outcome_before.into_owned(),
                    outcome_after: c.outcome_after.into_owned(),
                    changes_outcome: c.changes_outcome,
                    method: own(c.method),
                    estimated: c.estimated,
                })
                .collect(),
            reasoning_chain: self
                .reasoning_chain
                .into_iter()
                .map(|s| ReasoningStep {
                    step: s.step,
                    round: s.round,
                    kind: s.kind,
                    agent: own_opt(s.agent),
                    summary: own(s.summary),
                })
                .collect(),
            belief_changes: self
                .belief_changes
                .into_iter()
                .map(|b| BeliefChange {
                    agent: own(b.agent),
                    round: b.round,
                    prior: own(b.prior),
                    posterior: own(b.posterior),
                    prior_confidence: b.prior_confidence,
                    posterior_confidence: b.posterior_confidence,
                    answer_changed: b.answer_changed,
                    trigger: b.trigger.map(|t| Trigger {
                        critic: own(t.critic),
                        round: t.round,
                        severity: t.severity,
                        issue: own(t.issue),
                    }),
                })
                .collect(),
            confidence_attribution: self
                .confidence_attribution
                .into_iter()
                .map(|f| ConfidenceFactor {
                    factor: f.factor,
                    agent: own_opt(f.agent),
                    contribution: f.contribution,
                })
                .collect(),
            method: self.method,
            warnings: self.warnings,
        }
    }
}
