//! Every claim an explanation makes is re-checked here by re-running
//! `aragora_core::consensus::decide` on a modified copy of the debate, over thousands of random
//! debates (ties, zero weights, every mode) and synthetic ones.

use aragora_core::consensus::decide;
use aragora_core::debate::*;
use aragora_explain::util::SplitMix64;
use aragora_explain::{
    CounterfactualKind, ExplainOptions, Explanation, FactorKind, explain, synth,
};

fn outcome(d: &Debate) -> (Option<String>, bool, f64, f64) {
    let o = decide(&d.consensus, &d.agents, &d.votes, d.judge.as_ref());
    (o.winner, o.consensus_reached, o.confidence, o.margin)
}

fn random_debate(rng: &mut SplitMix64) -> Debate {
    let n = 1 + rng.below(7);
    let names: Vec<String> = (0..n).map(|i| format!("a{i}")).collect();
    let mode = [
        ConsensusMode::Majority,
        ConsensusMode::Weighted,
        ConsensusMode::Supermajority,
        ConsensusMode::Unanimous,
        ConsensusMode::Judge,
    ][rng.below(5)];
    let threshold = [0.3, 0.5, 0.6, 0.75, 1.0][rng.below(5)];
    let agents: Vec<Agent> = names
        .iter()
        .map(|name| Agent {
            name: name.clone(),
            provider: "demo".into(),
            model: None,
            weight: [0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 3.0][rng.below(7)],
            base_url: None,
            api_key_env: None,
        })
        .collect();
    let evidence: Vec<Evidence> = (0..3)
        .map(|i| Evidence {
            id: format!("e{i}"),
            claim: format!("claim {i}"),
            source: "test".into(),
            url: None,
        })
        .collect();
    let positions: Vec<Position> = names
        .iter()
        .map(|name| Position {
            agent: name.clone(),
            answer: format!("answer of {name}"),
            reasoning: String::new(),
            confidence: 0.7,
            evidence_ids: (0..3)
                .filter(|_| rng.below(2) == 0)
                .map(|i| format!("e{i}"))
                .collect(),
        })
        .collect();
    let n_votes = rng.below(n + 2);
    let votes: Vec<Vote> = (0..n_votes)
        .map(|i| Vote {
            agent: names[i % n].clone(),
            choice: names[rng.below(n.min(3))].clone(),
            confidence: [0.1, 0.5, 0.5, 0.9, 1.0][rng.below(5)],
            reasoning: String::new(),
        })
        .collect();
    let judge = (mode == ConsensusMode::Judge && rng.below(4) > 0).then(|| Judgement {
        agent: names[0].clone(),
        choice: names[rng.below(n)].clone(),
        reasoning: "because".into(),
    });
    Debate {
        id: format!("deb-r{}", rng.next_u64()),
        task: "t".into(),
        context: None,
        consensus: ConsensusConfig {
            mode,
            threshold,
            judge: None,
        },
        agents,
        evidence,
        rounds: vec![Round {
            round: 0,
            positions,
            critiques: Vec::new(),
        }],
        votes,
        judge,
        status: DebateStatus::Completed,
        final_answer: None,
        winner: None,
        consensus_reached: false,
        confidence: 0.0,
        consensus_strength: 0.0,
        rounds_used: 1,
        agent_failures: Vec::new(),
    }
}

fn changes(a: &(Option<String>, bool, f64, f64), b: &(Option<String>, bool, f64, f64)) -> bool {
    a.0 != b.0 || a.1 != b.1
}

/// Re-check every number that can be re-derived from `decide`.
fn recheck(d: &Debate, e: &Explanation<'_>) {
    let base = outcome(d);
    assert_eq!(e.winner.as_deref(), base.0.as_deref(), "{}", d.id);
    assert_eq!(e.consensus_reached, base.1);
    assert!((e.confidence - base.2).abs() < 1e-12);
    assert!((e.margin - base.3).abs() < 1e-12);

    // Attribution adds up to the confidence.
    let sum: f64 = e
        .confidence_attribution
        .iter()
        .map(|f| f.contribution)
        .sum();
    assert!(
        (sum - e.confidence).abs() < 1e-9,
        "{} attribution {sum} vs {}",
        d.id,
        e.confidence
    );
    if !e.confidence_attribution.is_empty() {
        assert_eq!(e.confidence_attribution[0].factor, FactorKind::Baseline);
    }

    // Vote pivots: removal and every possible flip.
    let mut candidates: Vec<String> = d.agents.iter().map(|a| a.name.clone()).collect();
    for v in &d.votes {
        if !candidates.contains(&v.choice) {
            candidates.push(v.choice.clone());
        }
    }
    assert_eq!(e.vote_pivots.len(), d.votes.len());
    for (i, p) in e.vote_pivots.iter().enumerate() {
        let mut removed = d.clone();
        removed.votes.remove(i);
        let removal = changes(&base, &outcome(&removed));
        assert_eq!(
            p.removal_changes_outcome, removal,
            "{} vote {i} removal",
            d.id
        );
        let mut any_flip = false;
        for c in &candidates {
            if *c == d.votes[i].choice {
                continue;
            }
            let mut flipped = d.clone();
            flipped.votes[i].choice = c.clone();
            any_flip |= changes(&base, &outcome(&flipped));
        }
        assert_eq!(p.flip_changes_outcome, any_flip, "{} vote {i} flip", d.id);
        assert_eq!(p.pivotal, removal || any_flip);
        if let Some(to) = &p.flip_to {
            let mut flipped = d.clone();
            flipped.votes[i].choice = to.to_string();
            assert!(changes(&base, &outcome(&flipped)));
        }
    }
    let infl: f64 = e.vote_pivots.iter().map(|p| p.influence_score).sum();
    assert!(
        infl.abs() < 1e-9 || (infl - 1.0).abs() < 1e-9,
        "influence sums to {infl}"
    );

    // Counterfactuals: rebuild the modified debate and recount with decide.
    for c in &e.counterfactuals {
        let before = (
            c.outcome_before.winner.as_deref().map(str::to_string),
            c.outcome_before.consensus_reached,
        );
        assert_eq!(before, (base.0.clone(), base.1));
        let mut m = d.clone();
        match c.kind {
            CounterfactualKind::VoteChange => {
                let who = &c.agents[0];
                let to = c.new_choice.as_deref().unwrap().to_string();
                if d.consensus.mode == ConsensusMode::Judge
                    && d.judge.as_ref().is_some_and(|j| j.agent == *who)
                {
                    m.judge.as_mut().unwrap().choice = to;
                } else {
                    let i = c.vote_indices[0];
                    assert_eq!(d.votes[i].agent, *who);
                    m.votes[i].choice = to;
                }
            }
            CounterfactualKind::AgentRemoved => {
                let who = &c.agents[0];
                if d.consensus.mode == ConsensusMode::Judge
                    && d.judge.as_ref().is_some_and(|j| j.agent == *who)
                {
                    m.judge = None;
                } else {
                    let i = c.vote_indices[0];
                    assert_eq!(d.votes[i].agent, *who);
                    m.votes.remove(i);
                }
            }
            CounterfactualKind::MinimalFlipSet => {
                if let Some(to) = &c.new_choice {
                    assert_eq!(c.agents.len(), c.vote_indices.len());
                    for &i in &c.vote_indices {
                        m.votes[i].choice = to.to_string();
                    }
                    assert!(c.changes_outcome);
                    // Minimality, by brute force over smaller voter sets and every choice.
                    if !c.estimated && d.votes.len() <= 7 {
                        let k = c.agents.len();
                        let n = d.votes.len();
                        for mask in 0u32..(1 << n) {
                            if (mask.count_ones() as usize) >= k {
                                continue;
                            }
                            for t in &candidates {
                                let mut s = d.clone();
                                for (i, v) in s.votes.iter_mut().enumerate() {
                                    if mask >> i & 1 == 1 {
                                        v.choice = t.clone();
                                    }
                                }
                                assert!(
                                    !changes(&base, &outcome(&s)),
                                    "{}: {} voters flip it, claimed minimum {k}",
                                    d.id,
                                    mask.count_ones()
                                );
                            }
                        }
                    }
                } else {
                    assert!(!c.changes_outcome);
                    // Impossible: moving every voter to any single choice changes nothing.
                    for t in &candidates {
                        let mut s = d.clone();
                        s.votes.iter_mut().for_each(|v| v.choice = t.clone());
                        assert!(
                            !changes(&base, &outcome(&s)),
                            "{}: impossible is wrong",
                            d.id
                        );
                    }
                }
            }
            CounterfactualKind::Threshold => {
                if let Some(t) = c.new_threshold {
                    m.consensus.threshold = t;
                }
            }
            CounterfactualKind::EvidenceRemoved => {
                let id = c.evidence_ids[0].to_string();
                let mut kept = Vec::new();
                for v in &m.votes {
                    let Some(p) = d.final_position(&v.choice) else {
                        kept.push(v.clone());
                        continue;
                    };
                    if !p.evidence_ids.contains(&id) {
                        kept.push(v.clone());
                        continue;
                    }
                    let mut ids = p.evidence_ids.clone();
                    ids.sort();
                    ids.dedup();
                    let cited = ids.len();
                    let remaining = ids.iter().filter(|x| **x != id).count();
                    if remaining > 0 {
                        let mut v = v.clone();
                        v.confidence = v.confidence * remaining as f64 / cited as f64;
                        kept.push(v);
                    }
                }
                m.votes = kept;
            }
        }
        let after = outcome(&m);
        assert_eq!(
            c.outcome_after.winner.as_deref(),
            after.0.as_deref(),
            "{} {:?}: {}",
            d.id,
            c.kind,
            c.condition
        );
        assert_eq!(
            c.outcome_after.consensus_reached, after.1,
            "{} {:?}",
            d.id, c.kind
        );
        assert!((c.outcome_after.confidence - after.2).abs() < 1e-12);
        assert_eq!(
            c.changes_outcome,
            changes(&base, &after),
            "{} {:?}",
            d.id,
            c.kind
        );
    }
}

#[test]
fn random_debates_every_claim_rechecked() {
    let mut rng = SplitMix64::new(20240611);
    let opts = ExplainOptions::default();
    for _ in 0..3000 {
        let d = random_debate(&mut rng);
        let e = explain(&d, &opts);
        recheck(&d, &e);
    }
}

#[test]
fn heavy_random_debates_every_claim_rechecked() {
    // The same random debates with weights ×37.5 (totals up to ~800, fractional): the consensus
    // quota and the flip-set lower bound must hold well above a total weight of 64.
    let mut rng = SplitMix64::new(20261127);
    let opts = ExplainOptions::default();
    for _ in 0..3000 {
        let mut d = random_debate(&mut rng);
        d.agents.iter_mut().for_each(|a| a.weight *= 37.5);
        let e = explain(&d, &opts);
        recheck(&d, &e);
        let weighted_total: f64 = e.tally.iter().map(|t| t.weight).sum();
        if e.consensus_mode != ConsensusMode::Judge && weighted_total > 0.0 {
            let p = &e.method.pivotality;
            assert!(p.quota <= p.total_weight, "{}: {p:?}", d.id);
        }
    }
}

#[test]
fn synthetic_debates_every_claim_rechecked() {
    let opts = ExplainOptions::default();
    for seed in 0..150 {
        for (n, r) in [(3, 2), (5, 3), (9, 3), (15, 3)] {
            let d = synth::debate(n, r, seed);
            let e = explain(&d, &opts);
            assert!(e.recorded.matches_recount, "{}: {:?}", d.id, e.warnings);
            assert!(e.warnings.is_empty(), "{:?}", e.warnings);
            recheck(&d, &e);
        }
    }
}

#[test]
fn json_round_trip_and_options() {
    let d = synth::debate(5, 3, 7);
    let e = explain(&d, &ExplainOptions::default());
    let json = serde_json::to_string(&e).unwrap();
    let back: Explanation<'static> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e.clone().into_owned());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "decision_id",
        "debate_id",
        "conclusion",
        "confidence",
        "consensus_reached",
        "evidence_chain",
        "vote_pivots",
        "counterfactuals",
        "reasoning_chain",
        "belief_changes",
        "confidence_attribution",
        "method",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(
        e.decision_id,
        explain(&d, &ExplainOptions::default()).decision_id
    );

    let bare = explain(
        &d,
        &ExplainOptions {
            include_evidence: false,
            include_counterfactuals: false,
            include_vote_pivots: false,
        },
    );
    assert!(
        bare.evidence_chain.is_empty()
            && bare.counterfactuals.is_empty()
            && bare.vote_pivots.is_empty()
    );
    assert_eq!(bare.confidence, e.confidence);
    let opts: ExplainOptions =
        serde_json::from_str(r#"{"include_evidence": true, "include_counterfactuals": false}"#)
            .unwrap();
    assert!(opts.include_vote_pivots && !opts.include_counterfactuals);
}
