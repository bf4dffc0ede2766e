//! Consensus rules: recount the votes of a debate and decide the outcome.
//!
//! Rules (documented in docs/debates.md):
//! - Each vote counts 1, except in `weighted` mode where it counts its agent's `weight`.
//! - The winner is the choice with the largest total. Ties at the top are broken, in order, by
//!   the larger sum of vote confidences, then by the choice name in byte order (smallest first).
//!   A tie at the top never reaches consensus, whatever the threshold.
//! - `share` = winner's total / total of all votes. Consensus is reached when
//!   `majority`/`weighted`: share ≥ threshold; `supermajority`: share ≥ max(threshold, 2/3);
//!   `unanimous`: every vote names the winner; `judge`: the judge has chosen (winner = the judge's
//!   choice, votes are advisory).
//! - `consensus_strength` = share of the winning choice (in judge mode, the share of votes that
//!   agree with the judge).
//! - `confidence` = consensus_strength × the weighted mean confidence of the votes for the winner
//!   (judge mode with no agreeing votes: the strength alone).

use crate::debate::{Agent, ConsensusConfig, ConsensusMode, Judgement, Vote};

pub const SUPERMAJORITY: f64 = 2.0 / 3.0;
/// Float slack when comparing a share with a threshold (3 of 5 votes is exactly 0.6).
const EPS: f64 = 1e-9;

#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    /// Choice → (total weight, summed confidence), sorted winner first.
    pub totals: Vec<ChoiceTotal>,
    pub total_weight: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceTotal {
    pub choice: String,
    pub weight: f64,
    pub confidence_sum: f64,
    pub weighted_confidence: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub winner: Option<String>,
    pub consensus_reached: bool,
    pub confidence: f64,
    pub consensus_strength: f64,
    /// (winner total − runner-up total) / total weight; 1.0 when unopposed, 0 on a tie.
    pub margin: f64,
    pub tally: Tally,
}

/// The weight one vote counts with under `mode`.
pub fn vote_weight(mode: ConsensusMode, agents: &[Agent], voter: &str) -> f64 {
    match mode {
        ConsensusMode::Weighted => agents
            .iter()
            .find(|a| a.name == voter)
            .map(|a| a.weight.max(0.0))
            .unwrap_or(1.0),
        _ => 1.0,
    }
}

/// Sum the votes per choice and order the choices winner first (tie rule in the module doc).
pub fn tally(mode: ConsensusMode, agents: &[Agent], votes: &[Vote]) -> Tally {
    let mut totals: Vec<ChoiceTotal> = Vec::new();
    let mut total_weight = 0.0;
    for v in votes {
        let w = vote_weight(mode, agents, &v.agent);
        total_weight += w;
        let entry = match totals.iter_mut().position(|t| t.choice == v.choice) {
            Some(i) => &mut totals[i],
            None => {
                totals.push(ChoiceTotal {
                    choice: v.choice.clone(),
                    weight: 0.0,
                    confidence_sum: 0.0,
                    weighted_confidence: 0.0,
                });
                totals.last_mut().expect("just pushed")
            }
        };
        entry.weight += w;
        entry.confidence_sum += v.confidence;
        entry.weighted_confidence += w * v.confidence;
    }
    totals.sort_by(|a, b| {
        b.weight
            .total_cmp(&a.weight)
            .then(b.confidence_sum.total_cmp(&a.confidence_sum))
            .then_with(|| a.choice.cmp(&b.choice))
    });
    Tally {
        totals,
        total_weight,
    }
}

/// Decide the outcome of a debate from its votes (and judge, in judge mode).
pub fn decide(
    config: &ConsensusConfig,
    agents: &[Agent],
    votes: &[Vote],
    judge: Option<&Judgement>,
) -> Outcome {
    let tally = tally(config.mode, agents, votes);
    let share_of = |choice: &str| -> (f64, f64) {
        tally
            .totals
            .iter()
            .find(|t| t.choice == choice)
            .map(|t| {
                let share = if tally.total_weight > 0.0 {
                    t.weight / tally.total_weight
                } else {
                    0.0
                };
                let mean_conf = if t.weight > 0.0 {
                    t.weighted_confidence / t.weight
                } else {
                    0.0
                };
                (share, mean_conf)
            })
            .unwrap_or((0.0, 0.0))
    };
    let margin = match tally.totals.as_slice() {
        [] => 0.0,
        [only] if tally.total_weight > 0.0 => only.weight / tally.total_weight,
        [first, second, ..] if tally.total_weight > 0.0 => {
            (first.weight - second.weight) / tally.total_weight
        }
        _ => 0.0,
    };

    if config.mode == ConsensusMode::Judge {
        return match judge {
            Some(j) => {
                let (share, mean_conf) = share_of(&j.choice);
                let confidence = if mean_conf > 0.0 { share * mean_conf } else { share };
                Outcome {
                    winner: Some(j.choice.clone()),
                    consensus_reached: true,
                    confidence,
                    consensus_strength: share,
                    margin,
                    tally,
                }
            }
            None => Outcome {
                winner: None,
                consensus_reached: false,
                confidence: 0.0,
                consensus_strength: 0.0,
                margin,
                tally,
            },
        };
    }

    let Some(top) = tally.totals.first() else {
        return Outcome {
            winner: None,
            consensus_reached: false,
            confidence: 0.0,
            consensus_strength: 0.0,
            margin,
            tally,
        };
    };
    let tied_at_top = tally
        .totals
        .get(1)
        .is_some_and(|second| (second.weight - top.weight).abs() < EPS);
    let winner = top.choice.clone();
    let (share, mean_conf) = share_of(&winner);
    let reached = !tied_at_top
        && tally.total_weight > 0.0
        && match config.mode {
            ConsensusMode::Majority | ConsensusMode::Weighted => share + EPS >= config.threshold,
            ConsensusMode::Supermajority => share + EPS >= config.threshold.max(SUPERMAJORITY),
            ConsensusMode::Unanimous => tally.totals.len() == 1,
            ConsensusMode::Judge => unreachable!("handled above"),
        };
    Outcome {
        winner: Some(winner),
        consensus_reached: reached,
        confidence: share * mean_conf,
        consensus_strength: share,
        margin,
        tally,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents(ws: &[(&str, f64)]) -> Vec<Agent> {
        ws.iter()
            .map(|(n, w)| Agent {
                name: n.to_string(),
                provider: "demo".into(),
                model: None,
                weight: *w,
                base_url: None,
                api_key_env: None,
            })
            .collect()
    }

    fn votes(vs: &[(&str, &str, f64)]) -> Vec<Vote> {
        vs.iter()
            .map(|(a, c, conf)| Vote {
                agent: a.to_string(),
                choice: c.to_string(),
                confidence: *conf,
                reasoning: String::new(),
            })
            .collect()
    }

    fn cfg(mode: ConsensusMode, threshold: f64) -> ConsensusConfig {
        ConsensusConfig {
            mode,
            threshold,
            judge: None,
        }
    }

    #[test]
    fn majority_three_of_five_meets_sixty_percent() {
        let a = agents(&[("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 1.0)]);
        let v = votes(&[
            ("a", "a", 0.9),
            ("b", "a", 0.8),
            ("c", "a", 0.7),
            ("d", "d", 0.9),
            ("e", "d", 0.9),
        ]);
        let o = decide(&cfg(ConsensusMode::Majority, 0.6), &a, &v, None);
        assert_eq!(o.winner.as_deref(), Some("a"));
        assert!(o.consensus_reached);
        assert!((o.consensus_strength - 0.6).abs() < 1e-12);
        // 0.6 share × mean confidence 0.8
        assert!((o.confidence - 0.48).abs() < 1e-12);
        assert!((o.margin - 0.2).abs() < 1e-12);
        let o = decide(&cfg(ConsensusMode::Majority, 0.61), &a, &v, None);
        assert!(!o.consensus_reached);
    }

    #[test]
    fn ties_never_reach_consensus_and_break_by_confidence_then_name() {
        let a = agents(&[("x", 1.0), ("y", 1.0)]);
        let o = decide(
            &cfg(ConsensusMode::Majority, 0.5),
            &a,
            &votes(&[("x", "x", 0.5), ("y", "y", 0.9)]),
            None,
        );
        assert_eq!(o.winner.as_deref(), Some("y"), "higher confidence wins the tie");
        assert!(!o.consensus_reached);
        assert_eq!(o.margin, 0.0);
        let o = decide(
            &cfg(ConsensusMode::Majority, 0.5),
            &a,
            &votes(&[("x", "y", 0.7), ("y", "x", 0.7)]),
            None,
        );
        assert_eq!(o.winner.as_deref(), Some("x"), "then the smaller name");
    }

    #[test]
    fn supermajority_needs_two_thirds_even_with_a_lower_threshold() {
        let a = agents(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
        let v = votes(&[("a", "a", 1.0), ("b", "a", 1.0), ("c", "c", 1.0)]);
        assert!(decide(&cfg(ConsensusMode::Supermajority, 0.5), &a, &v, None).consensus_reached);
        let v = votes(&[
            ("a", "a", 1.0),
            ("b", "a", 1.0),
            ("c", "c", 1.0),
            ("d", "c", 1.0),
            ("e", "a", 1.0),
        ]);
        // 3/5 = 0.6 < 2/3
        assert!(!decide(&cfg(ConsensusMode::Supermajority, 0.5), &a, &v, None).consensus_reached);
    }

    #[test]
    fn unanimous_requires_every_vote() {
        let a = agents(&[("a", 1.0), ("b", 1.0)]);
        assert!(
            decide(
                &cfg(ConsensusMode::Unanimous, 0.6),
                &a,
                &votes(&[("a", "a", 1.0), ("b", "a", 1.0)]),
                None
            )
            .consensus_reached
        );
        assert!(
            !decide(
                &cfg(ConsensusMode::Unanimous, 0.6),
                &a,
                &votes(&[("a", "a", 1.0), ("b", "b", 1.0)]),
                None
            )
            .consensus_reached
        );
    }

    #[test]
    fn weighted_counts_agent_weights() {
        let a = agents(&[("heavy", 3.0), ("l1", 1.0), ("l2", 1.0)]);
        let v = votes(&[("heavy", "heavy", 1.0), ("l1", "l1", 1.0), ("l2", "l1", 1.0)]);
        let o = decide(&cfg(ConsensusMode::Weighted, 0.6), &a, &v, None);
        assert_eq!(o.winner.as_deref(), Some("heavy"));
        assert!(o.consensus_reached, "3/5 = 0.6");
        let o = decide(&cfg(ConsensusMode::Majority, 0.6), &a, &v, None);
        assert_eq!(o.winner.as_deref(), Some("l1"), "unweighted, two votes beat one");
    }

    #[test]
    fn judge_decides_and_votes_are_advisory() {
        let a = agents(&[("a", 1.0), ("b", 1.0), ("j", 1.0)]);
        let v = votes(&[("a", "a", 1.0), ("b", "a", 1.0), ("j", "b", 0.5)]);
        let j = Judgement {
            agent: "j".into(),
            choice: "b".into(),
            reasoning: String::new(),
        };
        let o = decide(&cfg(ConsensusMode::Judge, 0.6), &a, &v, Some(&j));
        assert_eq!(o.winner.as_deref(), Some("b"));
        assert!(o.consensus_reached);
        assert!((o.consensus_strength - 1.0 / 3.0).abs() < 1e-12);
        let o = decide(&cfg(ConsensusMode::Judge, 0.6), &a, &v, None);
        assert!(o.winner.is_none() && !o.consensus_reached);
    }

    #[test]
    fn no_votes_no_winner() {
        let o = decide(&ConsensusConfig::default(), &[], &[], None);
        assert_eq!(o.winner, None);
        assert!(!o.consensus_reached);
        assert_eq!(o.confidence, 0.0);
    }
}
