//! Hand-computed cases. Each expected number is derived in the comments; each counterfactual's
//! claim is re-checked by running `decide` on the modified debate.

use aragora_core::consensus::decide;
use aragora_core::debate::*;
use aragora_explain::{
    CounterfactualKind, ExplainOptions, Explanation, StepKind, explain, render_html,
    render_markdown, render_mermaid, render_summary, synth,
};

fn agent(name: &str, weight: f64) -> Agent {
    Agent {
        name: name.into(),
        provider: "demo".into(),
        model: None,
        weight,
        base_url: None,
        api_key_env: None,
    }
}

fn pos(agent: &str, answer: &str, confidence: f64, ev: &[&str]) -> Position {
    Position {
        agent: agent.into(),
        answer: answer.into(),
        reasoning: String::new(),
        confidence,
        evidence_ids: ev.iter().map(|s| s.to_string()).collect(),
    }
}

fn vote(agent: &str, choice: &str, confidence: f64) -> Vote {
    Vote {
        agent: agent.into(),
        choice: choice.into(),
        confidence,
        reasoning: String::new(),
    }
}

/// A one-round debate where every agent states "plan of <name>", then the given votes.
fn debate(
    mode: ConsensusMode,
    threshold: f64,
    agents: &[(&str, f64)],
    votes: &[(&str, &str, f64)],
) -> Debate {
    let mut d = Debate {
        id: "deb-hand".into(),
        task: "Pick a plan".into(),
        context: None,
        consensus: ConsensusConfig {
            mode,
            threshold,
            judge: None,
        },
        agents: agents.iter().map(|(n, w)| agent(n, *w)).collect(),
        evidence: Vec::new(),
        rounds: vec![Round {
            round: 0,
            positions: agents
                .iter()
                .map(|(n, _)| pos(n, &format!("plan of {n}"), 0.7, &[]))
                .collect(),
            critiques: Vec::new(),
        }],
        votes: votes.iter().map(|(a, c, x)| vote(a, c, *x)).collect(),
        judge: None,
        status: DebateStatus::Completed,
        final_answer: None,
        winner: None,
        consensus_reached: false,
        confidence: 0.0,
        consensus_strength: 0.0,
        rounds_used: 1,
        agent_failures: Vec::new(),
    };
    record(&mut d);
    d
}

fn record(d: &mut Debate) {
    let o = decide(&d.consensus, &d.agents, &d.votes, d.judge.as_ref());
    d.winner = o.winner;
    d.consensus_reached = o.consensus_reached;
    d.confidence = o.confidence;
    d.consensus_strength = o.consensus_strength;
}

fn outcome(d: &Debate) -> (Option<String>, bool) {
    let o = decide(&d.consensus, &d.agents, &d.votes, d.judge.as_ref());
    (o.winner, o.consensus_reached)
}

fn pivot<'e>(e: &'e Explanation<'_>, agent: &str) -> &'e aragora_explain::VotePivot<'e> {
    e.vote_pivots.iter().find(|p| p.agent == agent).unwrap()
}

fn cf<'e>(
    e: &'e Explanation<'_>,
    kind: CounterfactualKind,
) -> Vec<&'e aragora_explain::Counterfactual<'e>> {
    e.counterfactuals
        .iter()
        .filter(|c| c.kind == kind)
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn weighted_light_voter_is_pivotal_heavy_is_not() {
    // heavy (3) votes for itself; four light voters (1 each) vote for l1. Weighted, threshold 0.5:
    // l1 has 4/7 ≈ 0.571 ≥ 0.5 → consensus for l1.
    let d = debate(
        ConsensusMode::Weighted,
        0.5,
        &[
            ("heavy", 3.0),
            ("l1", 1.0),
            ("l2", 1.0),
            ("l3", 1.0),
            ("l4", 1.0),
        ],
        &[
            ("heavy", "heavy", 0.9),
            ("l1", "l1", 0.8),
            ("l2", "l1", 0.8),
            ("l3", "l1", 0.8),
            ("l4", "l1", 0.8),
        ],
    );
    let e = explain(&d, &ExplainOptions::default());
    assert_eq!(e.winner.as_deref(), Some("l1"));
    assert!(e.consensus_reached);
    // confidence = Σ w·c over l1's votes / Σ w = 4·0.8 / 7.
    assert!(close(e.confidence, 3.2 / 7.0));

    // l2 moving to heavy: l1 3, heavy 4 → heavy wins. Pivotal.
    let l2 = pivot(&e, "l2");
    assert!(l2.pivotal && l2.flip_changes_outcome);
    assert_eq!(l2.flip_to.as_deref(), Some("heavy"));
    // Without l2: l1 3 vs heavy 3 → tie → no consensus. Removal also changes the outcome.
    assert!(l2.removal_changes_outcome);
    let mut m = d.clone();
    m.votes.remove(2);
    assert_eq!(outcome(&m), (Some("l1".to_string()), false));

    // heavy: removal → l1 4/4; moving to l1 → 7/7; moving to l2 → l1 4, l2 3. Never a change.
    let h = pivot(&e, "heavy");
    assert!(!h.pivotal && !h.removal_changes_outcome && !h.flip_changes_outcome);

    // A priori power in [quota 4; 3,1,1,1,1] (quota: > half of 7 and ≥ 0.5·7 → 4):
    // heavy swings when the others weigh 1..3: C(4,1)+C(4,2)+C(4,3) = 14 of 16;
    // each light voter swings when the others weigh exactly 3: {heavy} or three lights → 2 of 16.
    // Normalised: 14/22 and 2/22 — heavy has the power in general, l2 in this profile.
    assert!(
        close(h.influence_score, 14.0 / 22.0),
        "{}",
        h.influence_score
    );
    assert!(close(l2.influence_score, 2.0 / 22.0));
    assert_eq!(e.method.pivotality.algorithm, "exact_dp");
    assert!(close(e.method.pivotality.quota, 3.5 + 1e-9));

    // The flip counterfactual for l2, re-checked with decide.
    let vc = cf(&e, CounterfactualKind::VoteChange);
    let l2cf = vc.iter().find(|c| c.agents[0] == "l2").unwrap();
    let mut m = d.clone();
    m.votes[2].choice = "heavy".into();
    assert_eq!(outcome(&m), (Some("heavy".to_string()), true));
    assert_eq!(l2cf.outcome_after.winner.as_deref(), Some("heavy"));
    assert!(l2cf.changes_outcome);
    // No counterfactual claims a change for heavy.
    assert!(
        e.counterfactuals
            .iter()
            .all(|c| c.agents.first().is_none_or(|a| a != "heavy")
                || c.kind == CounterfactualKind::MinimalFlipSet)
    );

    // Minimal flip set: one light voter.
    let mfs = cf(&e, CounterfactualKind::MinimalFlipSet);
    assert_eq!(mfs[0].agents.len(), 1);
    assert!(!mfs[0].estimated);
}

#[test]
fn tie_breaks_by_confidence_and_never_reaches_consensus() {
    let d = debate(
        ConsensusMode::Majority,
        0.5,
        &[("x", 1.0), ("y", 1.0)],
        &[("x", "x", 0.5), ("y", "y", 0.9)],
    );
    let e = explain(&d, &ExplainOptions::default());
    // 1 vs 1: y wins the tie on confidence, no consensus; confidence = 0.5 share × 0.9.
    assert_eq!(e.winner.as_deref(), Some("y"));
    assert!(!e.consensus_reached);
    assert!(close(e.confidence, 0.45));
    assert!(close(e.margin, 0.0));
    // Either vote alone matters: removing x leaves y unopposed (consensus).
    assert!(
        e.vote_pivots
            .iter()
            .all(|p| p.pivotal && p.removal_changes_outcome)
    );
    let th = cf(&e, CounterfactualKind::Threshold);
    assert!(!th[0].changes_outcome);
    assert!(th[0].condition.contains("tied"));
    let mfs = cf(&e, CounterfactualKind::MinimalFlipSet);
    assert_eq!(mfs[0].agents.len(), 1);
    let sum: f64 = e
        .confidence_attribution
        .iter()
        .map(|f| f.contribution)
        .sum();
    // 1 − 0.5 (x opposes) − 0.5·0.1 (y's doubt) = 0.45.
    assert!(close(sum, 0.45));
}

#[test]
fn unanimous_every_voter_pivotal_and_one_agent_impossible() {
    let d = debate(
        ConsensusMode::Unanimous,
        0.6,
        &[("a", 1.0), ("b", 1.0), ("c", 1.0)],
        &[("a", "a", 0.9), ("b", "a", 0.8), ("c", "a", 0.7)],
    );
    let e = explain(&d, &ExplainOptions::default());
    assert!(e.consensus_reached);
    assert!(close(e.confidence, 0.8));
    for p in &e.vote_pivots {
        // Any defection breaks unanimity; an abstention does not.
        assert!(p.pivotal && p.flip_changes_outcome && !p.removal_changes_outcome);
    }
    // Banzhaf in unanimity: everyone swings only for the full coalition → 1/3 each.
    assert!(
        e.vote_pivots
            .iter()
            .all(|p| close(p.influence_score, 1.0 / 3.0))
    );
    assert_eq!(
        cf(&e, CounterfactualKind::MinimalFlipSet)[0].agents.len(),
        1
    );
    assert!(
        cf(&e, CounterfactualKind::Threshold).is_empty(),
        "no threshold in unanimous mode"
    );

    // One agent voting for itself, no other choice exists: nothing can flip.
    let solo = debate(
        ConsensusMode::Unanimous,
        0.6,
        &[("a", 1.0)],
        &[("a", "a", 1.0)],
    );
    let e = explain(&solo, &ExplainOptions::default());
    let mfs = cf(&e, CounterfactualKind::MinimalFlipSet);
    assert!(!mfs[0].changes_outcome && mfs[0].condition.starts_with("impossible"));
    assert!(mfs[0].agents.is_empty());
    assert_eq!(e.method.minimal_flip_set.algorithm, "impossible_proven");
    assert!(!e.vote_pivots[0].flip_changes_outcome);
    // Its removal leaves no votes: no winner.
    assert!(e.vote_pivots[0].removal_changes_outcome);
}

#[test]
fn judge_mode_votes_are_advisory() {
    let mut d = debate(
        ConsensusMode::Judge,
        0.6,
        &[("a", 1.0), ("b", 1.0), ("j", 1.0)],
        &[("a", "a", 0.9), ("b", "a", 0.7), ("j", "b", 0.5)],
    );
    d.judge = Some(Judgement {
        agent: "j".into(),
        choice: "b".into(),
        reasoning: "b handles failure".into(),
    });
    record(&mut d);
    let e = explain(&d, &ExplainOptions::default());
    assert_eq!(e.winner.as_deref(), Some("b"));
    assert!(e.consensus_reached);
    // Share agreeing with the judge 1/3, their confidence 0.5 → 1/6.
    assert!(close(e.confidence, 1.0 / 6.0));
    assert!(
        e.vote_pivots
            .iter()
            .all(|p| !p.pivotal && p.influence_score == 0.0)
    );
    assert_eq!(e.method.pivotality.algorithm, "judge");
    let mfs = cf(&e, CounterfactualKind::MinimalFlipSet);
    assert!(!mfs[0].changes_outcome && mfs[0].condition.contains("judge"));
    // The judge's own counterfactuals.
    let removed = cf(&e, CounterfactualKind::AgentRemoved);
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].outcome_after.winner, None);
    let mut m = d.clone();
    m.judge = None;
    assert_eq!(outcome(&m), (None, false));
    let changed = cf(&e, CounterfactualKind::VoteChange);
    assert_eq!(changed[0].new_choice.as_deref(), Some("a"));
    assert_eq!(changed[0].outcome_after.winner.as_deref(), Some("a"));
    let last = e.reasoning_chain.last().unwrap();
    assert_eq!(last.kind, StepKind::Decision);
    assert_eq!(last.agent.as_deref(), Some("j"));
}

#[test]
fn minimal_flip_set_of_two() {
    // 4 of 5 for a, threshold 0.6. One defection to b: 3/5 = 0.6 still reaches consensus;
    // one abstention: 3/4. Two defections to b: a 2, b 3 → b wins. Minimum 2, nobody pivotal.
    let d = debate(
        ConsensusMode::Majority,
        0.6,
        &[("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 1.0)],
        &[
            ("a", "a", 0.9),
            ("b", "b", 0.9),
            ("c", "a", 0.8),
            ("d", "a", 0.7),
            ("e", "a", 0.6),
        ],
    );
    let e = explain(&d, &ExplainOptions::default());
    assert!(e.consensus_reached);
    assert!(e.vote_pivots.iter().all(|p| !p.pivotal));
    assert!(cf(&e, CounterfactualKind::VoteChange).is_empty());
    let mfs = cf(&e, CounterfactualKind::MinimalFlipSet);
    assert_eq!(mfs[0].agents.len(), 2);
    assert!(mfs[0].changes_outcome && !mfs[0].estimated);
    let mut m = d.clone();
    for &i in &mfs[0].vote_indices {
        m.votes[i].choice = mfs[0].new_choice.as_deref().unwrap().to_string();
    }
    assert_ne!(outcome(&m), (Some("a".to_string()), true));
    // Threshold: share 0.8 → at 0.801 consensus fails.
    let th = cf(&e, CounterfactualKind::Threshold);
    assert_eq!(th[0].new_threshold, Some(0.801));
    assert!(th[0].changes_outcome);
    let mut m = d.clone();
    m.consensus.threshold = 0.801;
    assert_eq!(outcome(&m), (Some("a".to_string()), false));
}

#[test]
fn evidence_relevance_and_ablation() {
    let mut d = debate(
        ConsensusMode::Majority,
        0.6,
        &[("a", 1.0), ("b", 1.0), ("c", 1.0)],
        &[("a", "a", 0.9), ("c", "a", 0.8), ("b", "b", 0.6)],
    );
    d.evidence = ["e1", "e2", "e3"]
        .iter()
        .map(|id| Evidence {
            id: id.to_string(),
            claim: format!("claim {id}"),
            source: "paper".into(),
            url: None,
        })
        .collect();
    d.rounds[0].positions = vec![
        pos("a", "plan A", 0.8, &["e1"]),
        pos("b", "plan B", 0.6, &["e1", "e2"]),
        pos("c", "plan A too", 0.7, &[]),
    ];
    record(&mut d);
    let e = explain(&d, &ExplainOptions::default());
    // e1: the winner's final position cites it (0.5) + citations by a (backs the winner) and b
    // (does not), both round 0: 0.5 · 1/2 → 0.75. e2: only b → 0. e3: uncited → 0.
    let e1 = e.evidence_chain.iter().find(|x| x.id == "e1").unwrap();
    assert!(close(e1.relevance_score, 0.75));
    assert_eq!(e1.cited_by, vec!["a", "b"]);
    assert!(e1.cited_by_winner);
    assert_eq!(e.evidence_chain[0].id, "e1", "sorted by relevance");
    let e2 = e.evidence_chain.iter().find(|x| x.id == "e2").unwrap();
    assert!(close(e2.relevance_score, 0.0));

    // Ablating e1: a's position cites only e1 → both votes for a are withdrawn; b's position
    // keeps e2 → b's vote keeps 0.6 × 1/2. b wins alone with consensus.
    let ab = cf(&e, CounterfactualKind::EvidenceRemoved);
    let ab1 = ab.iter().find(|c| c.evidence_ids[0] == "e1").unwrap();
    assert!(ab1.changes_outcome);
    assert_eq!(ab1.outcome_after.winner.as_deref(), Some("b"));
    assert!(close(ab1.outcome_after.confidence, 0.3));
    let mut m = d.clone();
    m.votes = vec![vote("b", "b", 0.3)];
    assert_eq!(outcome(&m), (Some("b".to_string()), true));
    // Ablating e2 only lowers b's vote confidence: same winner, same confidence.
    let ab2 = ab.iter().find(|c| c.evidence_ids[0] == "e2").unwrap();
    assert!(!ab2.changes_outcome);
    assert!(close(ab2.outcome_after.confidence, e.confidence));
    assert!(
        ab.iter().all(|c| c.evidence_ids[0] != "e3"),
        "uncited evidence is not ablated"
    );
}

#[test]
fn belief_change_names_the_triggering_critique() {
    let mut d = debate(
        ConsensusMode::Majority,
        0.6,
        &[("a", 1.0), ("b", 1.0), ("c", 1.0)],
        &[("a", "b", 0.8), ("b", "b", 0.9), ("c", "b", 0.7)],
    );
    d.rounds[0].critiques = vec![
        Critique {
            critic: "c".into(),
            target: "a".into(),
            issues: vec!["minor".into()],
            suggestions: Vec::new(),
            severity: 3.0,
            reasoning: String::new(),
        },
        Critique {
            critic: "b".into(),
            target: "a".into(),
            issues: vec!["ignores bursts".into()],
            suggestions: Vec::new(),
            severity: 7.0,
            reasoning: String::new(),
        },
    ];
    d.rounds.push(Round {
        round: 1,
        positions: vec![
            pos("a", "plan of b", 0.6, &[]),
            pos("b", "plan of b", 0.95, &[]),
            pos("c", "plan of c", 0.7, &[]),
        ],
        critiques: Vec::new(),
    });
    record(&mut d);
    let e = explain(&d, &ExplainOptions::default());
    let a = e.belief_changes.iter().find(|b| b.agent == "a").unwrap();
    assert!(a.answer_changed);
    assert_eq!(
        (a.prior.as_ref(), a.posterior.as_ref()),
        ("plan of a", "plan of b")
    );
    assert_eq!((a.prior_confidence, a.posterior_confidence), (0.7, 0.6));
    let t = a.trigger.as_ref().unwrap();
    assert_eq!(
        (t.critic.as_ref(), t.severity, t.issue.as_ref()),
        ("b", 7.0, "ignores bursts")
    );
    // b only gained confidence (0.7 → 0.95 ≥ 0.1): a confidence-only change; c: none.
    let b = e.belief_changes.iter().find(|x| x.agent == "b").unwrap();
    assert!(!b.answer_changed && b.trigger.is_none());
    assert!(e.belief_changes.iter().all(|x| x.agent != "c"));
    assert!(pivot(&e, "a").position_changed && !pivot(&e, "c").position_changed);
    // Reasoning chain: b's proposal, then its confidence revision, the votes, the decision.
    let kinds: Vec<StepKind> = e.reasoning_chain.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![
            StepKind::Proposal,
            StepKind::Revision,
            StepKind::Vote,
            StepKind::Decision
        ]
    );
}

#[test]
fn confidence_move_of_exactly_one_tenth_counts() {
    // "moved by ≥ 0.1" is compared in 1e-9 units: 0.9 − 0.8 is 0.0999… in f64 but exactly
    // 100,000,000 units, so a, b, c and d all count; e (0.35 → 0.449999999) moved one unit less.
    let agents = [("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 1.0)];
    let mut d = debate(
        ConsensusMode::Majority,
        0.5,
        &agents,
        &[("a", "a", 0.9), ("b", "a", 0.9), ("c", "a", 0.9)],
    );
    let before = [0.8, 0.1, 0.5, 0.9, 0.35];
    let after = [0.9, 0.2, 0.6, 0.8, 0.449999999];
    for (p, c) in d.rounds[0].positions.iter_mut().zip(before) {
        p.confidence = c;
    }
    d.rounds.push(Round {
        round: 1,
        positions: agents
            .iter()
            .zip(after)
            .map(|((n, _), c)| pos(n, &format!("plan of {n}"), c, &[]))
            .collect(),
        critiques: Vec::new(),
    });
    record(&mut d);
    let e = explain(&d, &ExplainOptions::default());
    let movers: Vec<&str> = e.belief_changes.iter().map(|b| b.agent.as_ref()).collect();
    assert_eq!(movers, vec!["a", "b", "c", "d"]);
    assert!(e.belief_changes.iter().all(|b| !b.answer_changed));
    // The winner a kept its answer and moved 0.8 → 0.9: a revision step in the chain.
    let revisions: Vec<&str> = e
        .reasoning_chain
        .iter()
        .filter(|s| s.kind == StepKind::Revision)
        .map(|s| s.summary.as_ref())
        .collect();
    assert_eq!(revisions, vec!["a kept its answer, confidence 0.8 → 0.9"]);
}

#[test]
fn odd_records_never_panic_and_are_reported() {
    let mut d = debate(
        ConsensusMode::Weighted,
        f64::NAN,
        &[("a", f64::INFINITY), ("b", -1.0), ("a", 2.0)],
        &[("a", "zed", f64::NAN), ("ghost", "b", 2.0), ("a", "a", 0.5)],
    );
    d.rounds[0].positions[0].evidence_ids = vec!["nope".into()];
    let e = explain(&d, &ExplainOptions::default());
    let text = e.warnings.join("\n");
    for needle in [
        "more than once",
        "not an agent",
        "outside 0..=1",
        "weight",
        "does not list",
        "voted more than once",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
    let _ = (
        render_summary(&e),
        render_markdown(&e),
        render_mermaid(&d, &e),
        render_html(&d, &e),
    );

    let empty = Debate {
        agents: Vec::new(),
        rounds: Vec::new(),
        votes: Vec::new(),
        ..d.clone()
    };
    let e = explain(&empty, &ExplainOptions::default());
    assert_eq!(e.winner, None);
    assert_eq!(e.confidence, 0.0);
    assert!(e.confidence_attribution.is_empty());
    assert!(render_summary(&e).contains("no decision"));

    let mut judge_less = d.clone();
    judge_less.consensus.mode = ConsensusMode::Judge;
    let e = explain(&judge_less, &ExplainOptions::default());
    assert!(e.warnings.iter().any(|w| w.contains("without a judgement")));
    assert_eq!(e.winner, None);
}

#[test]
fn renderers_cover_every_section_and_escape() {
    let mut d = synth::debate(5, 3, 3);
    d.task = "Rate <script>alert(1)</script> & \"limits\"".into();
    record(&mut d);
    let e = explain(&d, &ExplainOptions::default());

    let s = render_summary(&e);
    assert!(s.contains(e.winner.as_deref().unwrap()));
    assert!(s.contains("recounted"));

    let md = render_markdown(&e);
    for h in [
        "## Outcome",
        "### Tally",
        "## Confidence attribution",
        "## Vote pivots",
        "## Counterfactuals",
        "## Evidence chain",
        "## Reasoning chain",
        "## Method",
    ] {
        assert!(md.contains(h), "markdown lacks {h}");
    }

    let mer = render_mermaid(&d, &e);
    assert!(mer.starts_with("flowchart LR"));
    assert!(mer.contains("-.->|\"critique"), "critique edges");
    assert!(mer.contains("-->|revised|") || mer.contains("-->|kept|"));
    assert!(mer.contains("dec{{"));
    assert_eq!(mer.matches(" --> dec").count(), d.votes.len());

    let html = render_html(&d, &e);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg") && html.contains("</svg>"));
    assert!(
        !html.contains("<script"),
        "nothing executable, nothing fetched"
    );
    assert!(html.contains("&lt;script&gt;"));
    assert!(html.contains("flowchart LR"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    // One box per position, one pill per vote.
    let boxes = html.matches("<rect").count();
    assert_eq!(boxes, 15 + 5 + 1);
}
