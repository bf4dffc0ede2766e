//! `explain()`: recount, pivots, counterfactuals, evidence, traces, attribution.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use aragora_core::consensus::{
    Ballot, Verdict, VoteUnits, decide_ballots, effective_threshold, from_units, share, to_units,
};
use aragora_core::debate::{ConsensusMode, Debate, Position};

use crate::game::{self, FlipProof, FlipSet, Game, GameVote};
use crate::power::{self, PowerAlgorithm};
use crate::types::*;
use crate::util::{self, Num, Pct, clip};

pub const ALGORITHM_VERSION: &str = "aragora-explain/1";
/// Belief changes: a confidence move this large counts even when the answer is unchanged
/// (both confidences rounded to 1e-9 units first, so a move of exactly 0.1 counts).
pub const CONFIDENCE_SHIFT: f64 = 0.1;
/// Positions quoted in belief changes are clipped to this many characters.
pub const QUOTE_CHARS: usize = 280;
const SUMMARY_CHARS: usize = 100;

const M_CONFIDENCE: &str = "share × weighted mean confidence of the winner's votes = \
Σ_{v→winner} w·c ÷ Σ w (judge: votes agreeing with the judge); exact 1e-9 fixed point";
const M_COUNTERFACTUALS: &str = "outcome_after = core consensus recount (decide_ballots) of \
the modified votes; changes_outcome = winner or consensus_reached differs";
const M_RELEVANCE: &str = "0.5·[winner's final position cites it] + 0.5·Σ_{citations by \
winner's voters} (r+1)/R ÷ Σ_{citations} (r+1)/R";
const M_ABLATION: &str = "votes for final positions citing it: confidence × remaining ÷ cited \
items, withdrawn if none remain; recount";
const M_BELIEFS: &str = "answer changed or confidence moved ≥ 0.1 (compared in exact 1e-9 \
fixed point) between an agent's consecutive positions; trigger = most severe critique of it in \
between";

/// Names seen in the debate (agents first, then other voters, choices, authors), with lookup.
struct Roster<'a> {
    names: Vec<&'a str>,
    map: Option<HashMap<&'a str, usize>>,
}

impl<'a> Roster<'a> {
    const LINEAR_MAX: usize = 24;

    fn new() -> Self {
        Roster {
            names: Vec::with_capacity(16),
            map: None,
        }
    }

    /// Lookup trying `hint` first (positions are usually listed in agent order).
    fn intern_hinted(&mut self, name: &'a str, hint: usize) -> usize {
        match self.names.get(hint) {
            Some(n) if *n == name => hint,
            _ => self.intern(name),
        }
    }

    fn get(&self, name: &str) -> Option<usize> {
        match &self.map {
            Some(m) => m.get(name).copied(),
            None => self.names.iter().position(|n| *n == name),
        }
    }

    fn intern(&mut self, name: &'a str) -> usize {
        if let Some(i) = self.get(name) {
            return i;
        }
        let i = self.names.len();
        self.names.push(name);
        if let Some(m) = &mut self.map {
            m.insert(name, i);
        } else if self.names.len() > Self::LINEAR_MAX {
            self.map = Some(
                self.names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (*n, i))
                    .collect(),
            );
        }
        i
    }
}

fn snapshot<'a>(v: &Verdict<'a>) -> OutcomeSnapshot<'a> {
    OutcomeSnapshot {
        winner: v.winner.map(Cow::Borrowed),
        consensus_reached: v.consensus_reached,
        confidence: v.confidence,
        margin: v.margin,
    }
}

fn differs(a: &Verdict<'_>, b: &Verdict<'_>) -> bool {
    a.winner != b.winner || a.consensus_reached != b.consensus_reached
}

/// Per-vote data shared by every recount.
#[derive(Clone, Copy)]
struct VoteInfo<'a> {
    agent: &'a str,
    choice: &'a str,
    weight: f64,
    confidence: f64,
}

/// Build the explanation of `debate`'s decision. Never panics on odd records: problems are
/// reported in `warnings` and the numbers follow the consensus rule as written.
pub fn explain<'a>(debate: &'a Debate, opts: &ExplainOptions) -> Explanation<'a> {
    let config = &debate.consensus;
    let mode = config.mode;
    let mut warnings: Vec<String> = Vec::new();

    // Names: agents, then anyone else mentioned.
    let mut roster = Roster::new();
    for a in &debate.agents {
        let before = roster.names.len();
        roster.intern(&a.name);
        if roster.names.len() == before {
            warnings.push(format!("agent {:?} is listed more than once", a.name));
        }
    }
    let n_agents = roster.names.len();
    // Weight per roster entry as the core's vote_weight gives it (first agent of that name).
    let agent_weight = |idx: usize| -> f64 {
        if mode == ConsensusMode::Weighted && idx < n_agents {
            debate
                .agents
                .iter()
                .find(|a| a.name == roster.names[idx])
                .map(|a| a.weight.max(0.0))
                .unwrap_or(1.0)
        } else {
            1.0
        }
    };
    let weights_by_agent: Vec<f64> = (0..n_agents).map(agent_weight).collect();
    if mode == ConsensusMode::Weighted {
        for a in &debate.agents {
            if !a.weight.is_finite() || a.weight < 0.0 {
                warnings.push(format!(
                    "agent {:?} has weight {} (counted as {})",
                    a.name,
                    a.weight,
                    a.weight.max(0.0)
                ));
            }
        }
    }

    let mut infos: Vec<VoteInfo<'a>> = Vec::with_capacity(debate.votes.len());
    let mut gvotes: Vec<GameVote> = Vec::with_capacity(debate.votes.len());
    let mut voter_idx: Vec<usize> = Vec::with_capacity(debate.votes.len());
    for (k, v) in debate.votes.iter().enumerate() {
        let a = roster.intern_hinted(&v.agent, k);
        let c = roster.intern(&v.choice);
        let weight = if a < n_agents {
            weights_by_agent[a]
        } else {
            warnings.push(format!(
                "vote by {:?}, who is not an agent of the debate",
                v.agent
            ));
            1.0
        };
        if c >= n_agents {
            warnings.push(format!(
                "{:?} voted for {:?}, which is not an agent of the debate",
                v.agent, v.choice
            ));
        }
        if !(0.0..=1.0).contains(&v.confidence) {
            warnings.push(format!(
                "{:?} voted with confidence {} (outside 0..=1)",
                v.agent, v.confidence
            ));
        }
        if voter_idx.contains(&a) {
            warnings.push(format!(
                "{:?} voted more than once; every vote is counted",
                v.agent
            ));
        }
        voter_idx.push(a);
        infos.push(VoteInfo {
            agent: &v.agent,
            choice: &v.choice,
            weight,
            confidence: v.confidence,
        });
        gvotes.push(GameVote {
            cand: c,
            units: VoteUnits::new(weight, v.confidence),
        });
    }
    let judge_choice: Option<&'a str> = match (mode, &debate.judge) {
        (ConsensusMode::Judge, Some(j)) => Some(&j.choice),
        (ConsensusMode::Judge, None) => {
            warnings.push("judge mode without a judgement: no decision".to_string());
            None
        }
        (_, Some(_)) => {
            warnings.push(format!(
                "a judgement is recorded but the mode is {}: it is ignored",
                mode.as_str()
            ));
            None
        }
        _ => None,
    };
    let judge_cand = judge_choice.map(|c| roster.intern(c));
    let judge_agent: Option<&'a str> = debate.judge.as_ref().map(|j| j.agent.as_str());

    // Positions, in transcript order, interned.
    let mut positions: Vec<(usize, usize, &'a Position)> = Vec::new();
    for (ri, r) in debate.rounds.iter().enumerate() {
        for (k, p) in r.positions.iter().enumerate() {
            let a = roster.intern_hinted(&p.agent, k);
            positions.push((a, ri, p));
        }
    }
    // Stable: per agent, round order.
    positions.sort_by_key(|(a, _, _)| *a);
    let n_names = roster.names.len();
    let mut first_pos: Vec<Option<&'a Position>> = vec![None; n_names];
    let mut final_pos: Vec<Option<&'a Position>> = vec![None; n_names];
    for &(a, _, p) in &positions {
        first_pos[a].get_or_insert(p);
        final_pos[a] = Some(p);
    }

    let ballots = |skip: Option<usize>| {
        infos.iter().enumerate().filter_map(move |(i, v)| {
            (Some(i) != skip).then_some(Ballot {
                choice: v.choice,
                weight: v.weight,
                confidence: v.confidence,
            })
        })
    };
    let before = decide_ballots(config, ballots(None), judge_choice);
    let names = roster.names;
    let game = Game::new(config, &names, gvotes, judge_cand);
    debug_assert_eq!(game.outcome.winner.map(|w| names[w]), before.winner);
    debug_assert_eq!(game.outcome.reached, before.consensus_reached);
    let winner_idx = game.outcome.winner;

    // Recorded vs recount.
    let recorded_matches = debate.winner.as_deref() == before.winner
        && debate.consensus_reached == before.consensus_reached
        && (debate.confidence - before.confidence).abs() < 1e-6;
    if !recorded_matches {
        warnings.push(format!(
            "the record says winner {:?}, consensus {}, confidence {}; the recount gives {:?}, {}, {:.6}",
            debate.winner,
            debate.consensus_reached,
            debate.confidence,
            before.winner,
            before.consensus_reached,
            before.confidence
        ));
    }

    let tally: Vec<TallyEntry<'a>> = game
        .order
        .iter()
        .map(|&c| {
            let s = &game.base[c];
            TallyEntry {
                choice: Cow::Borrowed(names[c]),
                votes: s.votes,
                weight: from_units(s.weight),
                share: share(s.weight, game.total),
                mean_confidence: s.mean_confidence(),
            }
        })
        .collect();

    let conclusion: Cow<'a, str> = match winner_idx.and_then(|w| final_pos[w]) {
        Some(p) => Cow::Borrowed(&p.answer),
        None if before.winner.is_some() => {
            Cow::Borrowed(debate.final_answer.as_deref().unwrap_or(""))
        }
        None => Cow::Borrowed(""),
    };

    // Who supports the winner (voted for it; in judge mode: agreed with the judge).
    let supports: Vec<bool> = game
        .votes
        .iter()
        .map(|v| Some(v.cand) == winner_idx)
        .collect();

    // ----- vote pivots and pivotality -----
    let need_flags = opts.include_vote_pivots || opts.include_counterfactuals;
    let flags = if need_flags { game.flags() } else { Vec::new() };
    let seed = util::fnv1a_128(debate.id.as_bytes()) as u64;
    let quota = game::consensus_quota(config, game.total);
    let power = if opts.include_vote_pivots {
        quota.map(|q| {
            let ws: Vec<i128> = game.votes.iter().map(|v| v.units.weight).collect();
            power::banzhaf(&ws, q, seed)
        })
    } else {
        None
    };
    let pivot_algorithm: &'static str = match (&power, mode) {
        (Some(p), _) => p.algorithm.as_str(),
        (None, ConsensusMode::Judge) if opts.include_vote_pivots => "judge",
        _ => "none",
    };
    let vote_pivots: Vec<VotePivot<'a>> = if opts.include_vote_pivots {
        infos
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let f = flags[i];
                let a = voter_idx[i];
                let position_changed = match (first_pos[a], final_pos[a]) {
                    (Some(x), Some(y)) => x.answer.trim() != y.answer.trim(),
                    _ => false,
                };
                VotePivot {
                    agent: Cow::Borrowed(v.agent),
                    choice: Cow::Borrowed(v.choice),
                    weight: v.weight,
                    confidence: v.confidence,
                    influence_score: power.as_ref().map_or(0.0, |p| p.normalized[i]),
                    pivotal: f.removal_changes || f.flip_changes,
                    position_changed,
                    removal_changes_outcome: f.removal_changes,
                    flip_changes_outcome: f.flip_changes,
                    flip_to: f.flip_to.map(|b| Cow::Borrowed(names[b])),
                }
            })
            .collect()
    } else {
        Vec::new()
    };

    // ----- counterfactuals -----
    let before_snap = snapshot(&before);
    let mut counterfactuals: Vec<Counterfactual<'a>> = Vec::new();
    let mut flip_method: (&'static str, bool) = ("not_applicable", false);
    let cf = |kind,
              condition: String,
              agents: Vec<Cow<'a, str>>,
              after: &Verdict<'a>,
              method: &'static str| Counterfactual {
        kind,
        condition: Cow::Owned(condition),
        agents,
        evidence_ids: Vec::new(),
        vote_indices: Vec::new(),
        new_choice: None,
        new_threshold: None,
        outcome_before: before_snap.clone(),
        outcome_after: snapshot(after),
        changes_outcome: differs(&before, after),
        method: Cow::Borrowed(method),
        estimated: false,
    };
    if opts.include_counterfactuals {
        // Single votes that matter.
        for (i, v) in infos.iter().enumerate() {
            let f = flags[i];
            if let Some(b) = f.flip_to {
                let to = names[b];
                let after = decide_ballots(
                    config,
                    infos.iter().enumerate().map(|(j, x)| Ballot {
                        choice: if j == i { to } else { x.choice },
                        weight: x.weight,
                        confidence: x.confidence,
                    }),
                    judge_choice,
                );
                let mut c = cf(
                    CounterfactualKind::VoteChange,
                    format!("{} votes for {} instead of {}", v.agent, to, v.choice),
                    vec![Cow::Borrowed(v.agent)],
                    &after,
                    "recount",
                );
                c.new_choice = Some(Cow::Borrowed(to));
                c.vote_indices = vec![i];
                counterfactuals.push(c);
            }
            if f.removal_changes {
                let after = decide_ballots(config, ballots(Some(i)), judge_choice);
                let mut c = cf(
                    CounterfactualKind::AgentRemoved,
                    format!("{} abstains (its vote is withdrawn)", v.agent),
                    vec![Cow::Borrowed(v.agent)],
                    &after,
                    "recount",
                );
                c.vote_indices = vec![i];
                counterfactuals.push(c);
            }
        }
        // The judge, in judge mode.
        if let (Some(jc), Some(ja)) = (judge_choice, judge_agent) {
            let after = decide_ballots(config, ballots(None), None);
            counterfactuals.push(cf(
                CounterfactualKind::AgentRemoved,
                format!("the judge {ja} is removed, so no judgement is made"),
                vec![Cow::Borrowed(ja)],
                &after,
                "recount",
            ));
            let alt = game
                .alternatives_excluding(judge_cand)
                .next()
                .map(|c| names[c]);
            if let Some(alt) = alt {
                let after = decide_ballots(config, ballots(None), Some(alt));
                let mut c = cf(
                    CounterfactualKind::VoteChange,
                    format!("the judge {ja} chooses {alt} instead of {jc}"),
                    vec![Cow::Borrowed(ja)],
                    &after,
                    "recount",
                );
                c.new_choice = Some(Cow::Borrowed(alt));
                counterfactuals.push(c);
            }
        }
        // Minimal flip set.
        let fs = game.minimal_flip_set();
        match fs {
            FlipSet::Found {
                voters,
                target,
                proof,
                ..
            } => {
                let to = names[target];
                let after = decide_ballots(
                    config,
                    infos.iter().enumerate().map(|(j, x)| Ballot {
                        choice: if voters.contains(&j) { to } else { x.choice },
                        weight: x.weight,
                        confidence: x.confidence,
                    }),
                    judge_choice,
                );
                let mut who = String::new();
                for (k, &i) in voters.iter().enumerate() {
                    if k > 0 {
                        who.push_str(if k + 1 == voters.len() { " and " } else { ", " });
                    }
                    who.push_str(infos[i].agent);
                }
                let (algo, estimated, qualifier) = match proof {
                    FlipProof::ExactSearch => ("exact_search", false, "smallest"),
                    FlipProof::LowerBound => ("greedy_proven_minimal", false, "smallest"),
                    FlipProof::UpperBound => {
                        ("greedy_upper_bound", true, "small (not proven smallest)")
                    }
                };
                flip_method = (algo, estimated);
                let mut c = cf(
                    CounterfactualKind::MinimalFlipSet,
                    format!(
                        "{qualifier} change: {who} ({} vote{}) vote for {to}",
                        voters.len(),
                        if voters.len() == 1 { "" } else { "s" }
                    ),
                    voters
                        .iter()
                        .map(|&i| Cow::Borrowed(infos[i].agent))
                        .collect(),
                    &after,
                    match proof {
                        FlipProof::ExactSearch => "exact search; recount",
                        FlipProof::LowerBound => "greedy = lower bound; recount",
                        FlipProof::UpperBound => "greedy upper bound; recount",
                    },
                );
                c.new_choice = Some(Cow::Borrowed(to));
                c.estimated = estimated;
                c.vote_indices = voters.clone();
                counterfactuals.push(c);
            }
            FlipSet::Impossible(why) => {
                flip_method = ("impossible_proven", false);
                counterfactuals.push(cf(
                    CounterfactualKind::MinimalFlipSet,
                    format!("impossible: {why}"),
                    Vec::new(),
                    &before,
                    "proof",
                ));
            }
        }
        // Threshold.
        if let (Some(_), Some(w)) = (effective_threshold(config), winner_idx) {
            let s = before.consensus_strength;
            let tied = game
                .order
                .get(1)
                .is_some_and(|c| game.base[*c].weight == game.base[w].weight);
            let below_floor = mode == ConsensusMode::Supermajority
                && !aragora_core::consensus::share_meets(s, aragora_core::consensus::SUPERMAJORITY);
            let new_t = if before.consensus_reached {
                Some((s * 1000.0).floor() / 1000.0 + 0.001)
            } else if !tied && game.total > 0 && !below_floor {
                Some((s * 1000.0).floor() / 1000.0)
            } else {
                None
            };
            match new_t {
                Some(nt) => {
                    let mut changed = config.clone();
                    changed.threshold = nt;
                    let after = decide_ballots(&changed, ballots(None), judge_choice);
                    let floor_note = if mode == ConsensusMode::Supermajority {
                        " (supermajority applies at least 2/3)"
                    } else {
                        ""
                    };
                    let mut c = cf(
                        CounterfactualKind::Threshold,
                        format!(
                            "threshold {} instead of {}{}",
                            Num(nt),
                            Num(config.threshold),
                            floor_note
                        ),
                        Vec::new(),
                        &after,
                        "recount",
                    );
                    c.new_threshold = Some(nt);
                    counterfactuals.push(c);
                }
                None => counterfactuals.push(cf(
                    CounterfactualKind::Threshold,
                    format!(
                        "no threshold can reach consensus: {}",
                        if tied {
                            "the top choices are tied"
                        } else if below_floor {
                            "supermajority needs at least 2/3 of the weight"
                        } else {
                            "there is no vote weight"
                        }
                    ),
                    Vec::new(),
                    &before,
                    "tie rule",
                )),
            }
        }
    }

    // ----- evidence -----
    let winner_final = winner_idx.and_then(|w| final_pos[w]);
    let n_rounds = debate.rounds.len().max(1) as f64;
    let mut evidence_chain: Vec<EvidenceLink<'a>> = Vec::new();
    let n_ev = debate.evidence.len();
    let ev_index = |id: &str| debate.evidence.iter().position(|e| e.id == id);
    // Every citation once, in transcript order: (evidence, author, round index).
    let mut cites: Vec<(usize, usize, usize)> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    for (ri, r) in debate.rounds.iter().enumerate() {
        for (k, p) in r.positions.iter().enumerate() {
            let a = roster_get_hinted(&names, &p.agent, k);
            for (x, id) in p.evidence_ids.iter().enumerate() {
                if p.evidence_ids[..x].contains(id) {
                    continue;
                }
                match ev_index(id) {
                    Some(e) => cites.push((e, a, ri)),
                    None if !unknown.contains(&id.as_str()) => {
                        unknown.push(id);
                        warnings.push(format!(
                            "{:?} cites evidence {:?}, which the debate does not list",
                            p.agent, id
                        ));
                    }
                    None => {}
                }
            }
        }
    }
    if (opts.include_evidence || opts.include_counterfactuals) && n_ev > 0 {
        // Voted-for-winner flag per roster name (an agent that voted twice counts if either did).
        let mut backs_winner = vec![false; n_names];
        for (i, &a) in voter_idx.iter().enumerate() {
            backs_winner[a] |= supports[i];
        }
        // Per vote: which items its chosen final position cites (bitmask) and how many distinct
        // ids it cites in all (listed or not).
        let words = n_ev.div_ceil(64);
        let mut vote_mask = vec![0u64; infos.len() * words];
        let mut vote_cited = vec![0usize; infos.len()];
        for i in 0..infos.len() {
            if let Some(p) = final_pos[game.votes[i].cand] {
                vote_cited[i] = distinct_count(&p.evidence_ids);
                for id in &p.evidence_ids {
                    if let Some(e) = ev_index(id) {
                        vote_mask[i * words + e / 64] |= 1 << (e % 64);
                    }
                }
            }
        }
        let relies = |i: usize, e: usize| vote_mask[i * words + e / 64] >> (e % 64) & 1 == 1;
        let winner_cites: Vec<bool> = {
            let mut v = vec![false; n_ev];
            if let Some(p) = winner_final {
                for id in &p.evidence_ids {
                    if let Some(e) = ev_index(id) {
                        v[e] = true;
                    }
                }
            }
            v
        };
        let mut authors: Vec<usize> = Vec::new();
        for (e, item) in debate.evidence.iter().enumerate() {
            let id = item.id.as_str();
            let (mut num, mut den, mut citations) = (0.0, 0.0, 0u32);
            authors.clear();
            for &(ce, a, ri) in &cites {
                if ce != e {
                    continue;
                }
                citations += 1;
                let rho = (ri as f64 + 1.0) / n_rounds;
                den += rho;
                if backs_winner[a] {
                    num += rho;
                }
                if !authors.contains(&a) {
                    authors.push(a);
                }
            }
            let by_winner = winner_cites[e];
            let coalition = if den > 0.0 { num / den } else { 0.0 };
            let relevance = 0.5 * (by_winner as u8 as f64) + 0.5 * coalition;
            if opts.include_evidence {
                evidence_chain.push(EvidenceLink {
                    id: Cow::Borrowed(id),
                    claim: Cow::Borrowed(&item.claim),
                    source: Cow::Borrowed(&item.source),
                    cited_by: authors.iter().map(|a| Cow::Borrowed(names[*a])).collect(),
                    citations,
                    cited_by_winner: by_winner,
                    relevance_score: relevance,
                });
            }
            if opts.include_counterfactuals && (0..infos.len()).any(|i| relies(i, e)) {
                // Ablation: votes whose chosen final position cites the item lose it.
                let after = decide_ballots(
                    config,
                    infos.iter().enumerate().filter_map(|(i, v)| {
                        let base = Ballot {
                            choice: v.choice,
                            weight: v.weight,
                            confidence: v.confidence,
                        };
                        if !relies(i, e) {
                            return Some(base);
                        }
                        let remaining = vote_cited[i].saturating_sub(1);
                        (remaining > 0).then(|| Ballot {
                            confidence: v.confidence * remaining as f64 / vote_cited[i] as f64,
                            ..base
                        })
                    }),
                    judge_choice,
                );
                let affected: Vec<Cow<'a, str>> = infos
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| relies(*i, e))
                    .map(|(_, v)| Cow::Borrowed(v.agent))
                    .collect();
                let mut c = cf(
                    CounterfactualKind::EvidenceRemoved,
                    format!(
                        "evidence {id} is removed ({} vote{} relied on positions citing it)",
                        affected.len(),
                        if affected.len() == 1 { "" } else { "s" }
                    ),
                    affected,
                    &after,
                    "ablation; recount",
                );
                c.evidence_ids = vec![Cow::Borrowed(id)];
                counterfactuals.push(c);
            }
        }
        evidence_chain.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    }

    // ----- belief changes -----
    let mut belief_changes: Vec<BeliefChange<'a>> = Vec::new();
    for w in positions.windows(2) {
        let (a0, r0, p0) = w[0];
        let (a1, r1, p1) = w[1];
        if a0 != a1 {
            continue;
        }
        let answer_changed = p0.answer.trim() != p1.answer.trim();
        if !answer_changed && !confidence_moved(p0.confidence, p1.confidence) {
            continue;
        }
        belief_changes.push(BeliefChange {
            agent: Cow::Borrowed(&p1.agent),
            round: debate.rounds[r1].round,
            prior: clip(&p0.answer, QUOTE_CHARS),
            posterior: clip(&p1.answer, QUOTE_CHARS),
            prior_confidence: p0.confidence,
            posterior_confidence: p1.confidence,
            answer_changed,
            trigger: trigger_between(debate, r0, r1, &p1.agent),
        });
    }
    belief_changes.sort_by_key(|b| b.round);

    // ----- reasoning chain -----
    let reasoning_chain = reasoning_chain(
        debate,
        &before,
        &tally,
        winner_idx.map(|w| names[w]),
        &positions,
        winner_idx,
        &infos,
        &supports,
        config.threshold,
    );

    // ----- confidence attribution -----
    let mut confidence_attribution: Vec<ConfidenceFactor<'a>> = Vec::new();
    if game.total > 0 && before.winner.is_some() {
        confidence_attribution.push(ConfidenceFactor {
            factor: FactorKind::Baseline,
            agent: None,
            contribution: 1.0,
        });
        let total = from_units(game.total);
        // Judge mode with supporters at zero confidence: confidence is the share alone.
        let doubt_counts = !(mode == ConsensusMode::Judge
            && winner_idx.is_some_and(|w| game.base[w].mean_confidence() <= 0.0));
        for (i, v) in infos.iter().enumerate() {
            let w = from_units(game.votes[i].units.weight);
            let (factor, contribution) = if supports[i] {
                let c = from_units(game.votes[i].units.confidence);
                (
                    FactorKind::Doubt,
                    if doubt_counts {
                        -w * (1.0 - c) / total
                    } else {
                        0.0
                    },
                )
            } else {
                (FactorKind::Opposition, -w / total)
            };
            confidence_attribution.push(ConfidenceFactor {
                factor,
                agent: Some(Cow::Borrowed(v.agent)),
                contribution,
            });
        }
    }

    let pivot_estimated = power.as_ref().is_some_and(|p| p.algorithm.estimated());
    let method = Method {
        version: Cow::Borrowed(ALGORITHM_VERSION),
        confidence: Cow::Borrowed(M_CONFIDENCE),
        pivotality: PivotalityMethod {
            index: Cow::Borrowed("banzhaf"),
            algorithm: Cow::Borrowed(pivot_algorithm),
            quota: quota.map_or(0.0, from_units),
            total_weight: from_units(game.total),
            estimated: pivot_estimated,
            samples: power
                .as_ref()
                .filter(|p| p.algorithm == PowerAlgorithm::MonteCarlo)
                .map(|p| p.samples),
            seed: power
                .as_ref()
                .filter(|p| p.algorithm == PowerAlgorithm::MonteCarlo)
                .map(|_| seed),
            standard_error: power
                .as_ref()
                .filter(|p| p.algorithm == PowerAlgorithm::MonteCarlo)
                .map(|p| p.standard_error),
        },
        minimal_flip_set: FlipSetMethod {
            algorithm: Cow::Borrowed(flip_method.0),
            estimated: flip_method.1,
        },
        counterfactuals: Cow::Borrowed(M_COUNTERFACTUALS),
        evidence_relevance: Cow::Borrowed(M_RELEVANCE),
        evidence_ablation: Cow::Borrowed(M_ABLATION),
        belief_changes: Cow::Borrowed(M_BELIEFS),
        estimated: pivot_estimated || flip_method.1,
    };

    Explanation {
        decision_id: util::decision_id(&debate.id),
        debate_id: Cow::Borrowed(&debate.id),
        task: Cow::Borrowed(&debate.task),
        conclusion,
        confidence: before.confidence,
        consensus_reached: before.consensus_reached,
        winner: before.winner.map(Cow::Borrowed),
        consensus_mode: mode,
        threshold: effective_threshold(config).unwrap_or(if mode == ConsensusMode::Unanimous {
            1.0
        } else {
            0.0
        }),
        consensus_strength: before.consensus_strength,
        margin: before.margin,
        tally,
        recorded: RecordedOutcome {
            winner: debate.winner.as_deref().map(Cow::Borrowed),
            consensus_reached: debate.consensus_reached,
            confidence: debate.confidence,
            matches_recount: recorded_matches,
        },
        evidence_chain,
        vote_pivots,
        counterfactuals,
        reasoning_chain,
        belief_changes,
        confidence_attribution,
        method,
        warnings,
    }
}

/// Whether a confidence moved by at least [`CONFIDENCE_SHIFT`] from `before` to `after`. Both
/// are rounded to 1e-9 units first (as the tally does), so a move of exactly 0.1 counts even
/// where the f64 difference is 0.0999… (0.9 − 0.8). NaN counts as 0, ±∞ saturate.
fn confidence_moved(before: f64, after: f64) -> bool {
    to_units(after)
        .saturating_sub(to_units(before))
        .unsigned_abs()
        >= to_units(CONFIDENCE_SHIFT).unsigned_abs()
}

fn distinct_count(ids: &[String]) -> usize {
    ids.iter()
        .enumerate()
        .filter(|(i, x)| !ids[..*i].contains(x))
        .count()
}

/// Roster index of `name` (interned before), trying `hint` first.
fn roster_get_hinted(names: &[&str], name: &str, hint: usize) -> usize {
    match names.get(hint) {
        Some(n) if *n == name => hint,
        _ => names.iter().position(|n| *n == name).unwrap_or(0),
    }
}

fn first_issue(c: &aragora_core::debate::Critique) -> &str {
    c.issues
        .first()
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(&c.reasoning)
}

/// The most severe critique of `agent` in rounds [from, to).
fn trigger_between<'a>(
    debate: &'a Debate,
    from: usize,
    to: usize,
    agent: &str,
) -> Option<Trigger<'a>> {
    let mut best: Option<(&'a aragora_core::debate::Critique, u32)> = None;
    for r in &debate.rounds[from..to] {
        for c in &r.critiques {
            if c.target == agent && best.is_none_or(|(b, _)| c.severity > b.severity) {
                best = Some((c, r.round));
            }
        }
    }
    best.map(|(c, round)| Trigger {
        critic: Cow::Borrowed(&c.critic),
        round,
        severity: c.severity,
        issue: clip(first_issue(c), QUOTE_CHARS),
    })
}

#[allow(clippy::too_many_arguments)]
fn reasoning_chain<'a>(
    debate: &'a Debate,
    before: &Verdict<'a>,
    tally: &[TallyEntry<'a>],
    winner: Option<&'a str>,
    positions: &[(usize, usize, &'a Position)],
    winner_idx: Option<usize>,
    infos: &[VoteInfo<'a>],
    supports: &[bool],
    threshold: f64,
) -> Vec<ReasoningStep<'a>> {
    let mut steps: Vec<ReasoningStep<'a>> = Vec::with_capacity(12);
    let mut push = |round: Option<u32>, kind, agent: Option<&'a str>, summary: String| {
        let step = steps.len() as u32 + 1;
        steps.push(ReasoningStep {
            step,
            round,
            kind,
            agent: agent.map(Cow::Borrowed),
            summary: Cow::Owned(summary),
        });
    };
    let winner_positions: Vec<(usize, &'a Position)> = match winner_idx {
        Some(w) => positions
            .iter()
            .filter(|(a, _, _)| *a == w)
            .map(|(_, ri, p)| (*ri, *p))
            .collect(),
        None => Vec::new(),
    };
    if let (Some(wname), false) = (winner, winner_positions.is_empty()) {
        let mut prev: Option<&Position> = None;
        let mut wp = winner_positions.iter().peekable();
        for (ri, r) in debate.rounds.iter().enumerate() {
            while let Some(&&(pri, p)) = wp.peek() {
                if pri != ri {
                    break;
                }
                wp.next();
                match prev {
                    None => push(
                        Some(r.round),
                        StepKind::Proposal,
                        Some(&p.agent),
                        format!(
                            "{} proposed “{}” (confidence {})",
                            p.agent,
                            clip(&p.answer, SUMMARY_CHARS),
                            Num(p.confidence)
                        ),
                    ),
                    Some(q) if q.answer.trim() != p.answer.trim() => push(
                        Some(r.round),
                        StepKind::Revision,
                        Some(&p.agent),
                        format!(
                            "{} revised to “{}” (confidence {} → {})",
                            p.agent,
                            clip(&p.answer, SUMMARY_CHARS),
                            Num(q.confidence),
                            Num(p.confidence)
                        ),
                    ),
                    Some(q) if confidence_moved(q.confidence, p.confidence) => push(
                        Some(r.round),
                        StepKind::Revision,
                        Some(&p.agent),
                        format!(
                            "{} kept its answer, confidence {} → {}",
                            p.agent,
                            Num(q.confidence),
                            Num(p.confidence)
                        ),
                    ),
                    _ => {}
                }
                prev = Some(p);
            }
            for c in &r.critiques {
                if c.target == wname {
                    push(
                        Some(r.round),
                        StepKind::Critique,
                        Some(&c.critic),
                        format!(
                            "{} critiqued {} (severity {}): {}",
                            c.critic,
                            c.target,
                            Num(c.severity),
                            clip(first_issue(c), SUMMARY_CHARS)
                        ),
                    );
                }
            }
        }
    } else if let Some(r) = debate.rounds.first() {
        for p in &r.positions {
            push(
                Some(r.round),
                StepKind::Proposal,
                Some(&p.agent),
                format!(
                    "{} proposed “{}” (confidence {})",
                    p.agent,
                    clip(&p.answer, SUMMARY_CHARS),
                    Num(p.confidence)
                ),
            );
        }
    }
    // Votes, aggregated (per-vote detail is in vote_pivots).
    if !infos.is_empty() {
        let backing = supports.iter().filter(|s| **s).count();
        let mut s = String::with_capacity(96);
        match (debate.consensus.mode, winner) {
            (ConsensusMode::Judge, Some(w)) => {
                let _ = write!(
                    s,
                    "{backing} of {} votes agreed with the judge's choice {w}",
                    infos.len()
                );
            }
            (_, Some(w)) => {
                let _ = write!(
                    s,
                    "{backing} of {} votes ({} of the weight) chose {w}",
                    infos.len(),
                    Pct(before.consensus_strength)
                );
                if let Some(second) = tally.get(1) {
                    let _ = write!(
                        s,
                        "; runner-up {} with {}",
                        second.choice,
                        Pct(second.share)
                    );
                }
            }
            _ => {
                let _ = write!(s, "{} votes", infos.len());
            }
        }
        push(None, StepKind::Vote, None, s);
    }
    let mode = debate.consensus.mode;
    let decision = match (winner, before.consensus_reached) {
        (None, _) if mode == ConsensusMode::Judge => {
            "no judgement was made: no decision".to_string()
        }
        (None, _) => "no votes were cast: no decision".to_string(),
        (Some(w), true) if mode == ConsensusMode::Judge => {
            let reason = debate
                .judge
                .as_ref()
                .map(|j| clip(&j.reasoning, SUMMARY_CHARS));
            match reason {
                Some(r) if !r.is_empty() => format!("the judge chose {w}: {r}"),
                _ => format!("the judge chose {w}"),
            }
        }
        (Some(w), true) if mode == ConsensusMode::Unanimous => {
            format!("consensus reached (unanimous: every vote): {w}'s position is adopted")
        }
        (Some(w), true) => format!(
            "consensus reached ({}: {} ≥ {}): {w}'s position is adopted",
            mode.as_str(),
            Pct(before.consensus_strength),
            Pct(effective_threshold(&debate.consensus).unwrap_or(threshold)),
        ),
        (Some(w), false) => {
            let tied = tally
                .get(1)
                .is_some_and(|s| tally.first().is_some_and(|t| s.weight == t.weight));
            let why = if tied {
                "the top choices are tied".to_string()
            } else if mode == ConsensusMode::Unanimous {
                "the votes are not unanimous".to_string()
            } else {
                let t = if mode == ConsensusMode::Supermajority {
                    threshold.max(aragora_core::consensus::SUPERMAJORITY)
                } else {
                    threshold
                };
                format!("{} < {}", Pct(before.consensus_strength), Pct(t))
            };
            format!("no consensus ({why}): {w} leads")
        }
    };
    let judge_agent = debate
        .judge
        .as_ref()
        .filter(|_| mode == ConsensusMode::Judge)
        .map(|j| j.agent.as_str());
    push(None, StepKind::Decision, judge_agent, decision);
    steps
}
