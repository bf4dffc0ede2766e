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
//! - Weights and confidences are summed in fixed point (1e-9 units), so a tally is exact and the
//!   same whatever the order of the votes.

use std::cmp::Ordering;

use crate::debate::{Agent, ConsensusConfig, ConsensusMode, Judgement, Vote};

pub const SUPERMAJORITY: f64 = 2.0 / 3.0;
/// Float slack when comparing a share with a threshold (3 of 5 votes is exactly 0.6).
const EPS: f64 = 1e-9;

/// Tallies add weights and confidences in fixed point (1 unit = 1e-9), so totals are exact and
/// do not depend on the order of the votes (float sums do: 0.1 + 0.2 + 0.3 ≠ 0.3 + 0.2 + 0.1,
/// which used to let vote order decide close tie-breaks).
pub const UNITS_PER_ONE: i128 = 1_000_000_000;

/// `x` in tally units (1e-9), rounded; NaN counts as 0 and out-of-range values saturate.
pub fn to_units(x: f64) -> i128 {
    if x.is_nan() {
        0
    } else {
        // `as` saturates at the i128 range (±inf included).
        (x * UNITS_PER_ONE as f64).round() as i128
    }
}

/// Tally units back to a float.
pub fn from_units(u: i128) -> f64 {
    u as f64 / UNITS_PER_ONE as f64
}

/// `part / total` of two unit sums (0 when `total` ≤ 0).
pub fn share(part: i128, total: i128) -> f64 {
    if total > 0 {
        part as f64 / total as f64
    } else {
        0.0
    }
}

/// One vote in tally units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VoteUnits {
    pub weight: i128,
    pub confidence: i128,
    pub weighted_confidence: i128,
}

impl VoteUnits {
    pub fn new(weight: f64, confidence: f64) -> Self {
        let weight = to_units(weight);
        let confidence = to_units(confidence);
        VoteUnits {
            weight,
            confidence,
            weighted_confidence: weight.saturating_mul(confidence) / UNITS_PER_ONE,
        }
    }
}

/// Per-choice sums in tally units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub weight: i128,
    pub confidence: i128,
    pub weighted_confidence: i128,
    pub votes: u32,
}

impl Sums {
    pub fn add(&mut self, v: VoteUnits) {
        self.weight = self.weight.saturating_add(v.weight);
        self.confidence = self.confidence.saturating_add(v.confidence);
        self.weighted_confidence = self
            .weighted_confidence
            .saturating_add(v.weighted_confidence);
        self.votes += 1;
    }

    pub fn remove(&mut self, v: VoteUnits) {
        self.weight = self.weight.saturating_sub(v.weight);
        self.confidence = self.confidence.saturating_sub(v.confidence);
        self.weighted_confidence = self
            .weighted_confidence
            .saturating_sub(v.weighted_confidence);
        self.votes = self.votes.saturating_sub(1);
    }

    /// Weighted mean confidence of these votes (0 without weight).
    pub fn mean_confidence(&self) -> f64 {
        if self.weight > 0 {
            self.weighted_confidence as f64 / self.weight as f64
        } else {
            0.0
        }
    }
}

/// The order of choices in a tally: larger weight first, then larger confidence sum, then the
/// smaller name (byte order). `Less` means `a` ranks before `b`.
pub fn rank_order(a_name: &str, a: &Sums, b_name: &str, b: &Sums) -> Ordering {
    b.weight
        .cmp(&a.weight)
        .then(b.confidence.cmp(&a.confidence))
        .then_with(|| a_name.cmp(b_name))
}

/// The threshold a winner's share must reach under `config` (`None` in unanimous and judge
/// modes, where no share threshold applies).
pub fn effective_threshold(config: &ConsensusConfig) -> Option<f64> {
    match config.mode {
        ConsensusMode::Majority | ConsensusMode::Weighted => Some(config.threshold),
        ConsensusMode::Supermajority => Some(config.threshold.max(SUPERMAJORITY)),
        ConsensusMode::Unanimous | ConsensusMode::Judge => None,
    }
}

/// Whether `share` reaches `threshold` (with the float slack the rule allows: 3 of 5 is 0.6).
pub fn share_meets(share: f64, threshold: f64) -> bool {
    share + EPS >= threshold
}

/// Whether the top-ranked choice reaches consensus (not for judge mode, where the judge decides).
/// `second` is the runner-up (if any choice besides the top has votes), `distinct_choices` the
/// number of choices with at least one vote.
pub fn top_reaches_consensus(
    config: &ConsensusConfig,
    top: &Sums,
    second: Option<&Sums>,
    total_weight: i128,
    distinct_choices: usize,
) -> bool {
    let tied_at_top = second.is_some_and(|s| s.weight == top.weight);
    !tied_at_top
        && total_weight > 0
        && match config.mode {
            ConsensusMode::Majority | ConsensusMode::Weighted | ConsensusMode::Supermajority => {
                effective_threshold(config)
                    .is_some_and(|t| share_meets(share(top.weight, total_weight), t))
            }
            ConsensusMode::Unanimous => distinct_choices == 1,
            ConsensusMode::Judge => false,
        }
}

/// A vote as the consensus rule sees it, borrowed from the caller. Lets callers (e.g. the
/// explainability engine) recount modified vote sets without cloning votes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ballot<'v> {
    pub choice: &'v str,
    /// The weight the vote counts with (see [`vote_weight`]).
    pub weight: f64,
    pub confidence: f64,
}

/// What [`decide`] concludes, without the per-choice tally, borrowed from the ballots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict<'v> {
    pub winner: Option<&'v str>,
    pub consensus_reached: bool,
    pub confidence: f64,
    pub consensus_strength: f64,
    pub margin: f64,
}

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

/// Per-choice unit sums in ranking order (winner first) and the total weight.
fn sum_ballots<'v>(ballots: impl IntoIterator<Item = Ballot<'v>>) -> (Vec<(&'v str, Sums)>, i128) {
    let mut totals: Vec<(&'v str, Sums)> = Vec::with_capacity(8);
    let mut total_weight: i128 = 0;
    for b in ballots {
        let v = VoteUnits::new(b.weight, b.confidence);
        total_weight = total_weight.saturating_add(v.weight);
        match totals.iter_mut().find(|(c, _)| *c == b.choice) {
            Some((_, s)) => s.add(v),
            None => {
                let mut s = Sums::default();
                s.add(v);
                totals.push((b.choice, s));
            }
        }
    }
    totals.sort_by(|(an, a), (bn, b)| rank_order(an, a, bn, b));
    (totals, total_weight)
}

fn verdict_from<'v>(
    config: &ConsensusConfig,
    totals: &[(&'v str, Sums)],
    total_weight: i128,
    judge_choice: Option<&'v str>,
) -> Verdict<'v> {
    let margin = match totals {
        [] => 0.0,
        [(_, only)] => share(only.weight, total_weight),
        [(_, first), (_, second), ..] => {
            share(first.weight.saturating_sub(second.weight), total_weight)
        }
    };
    if config.mode == ConsensusMode::Judge {
        return match judge_choice {
            Some(choice) => {
                let agreeing = totals.iter().find(|(c, _)| *c == choice).map(|(_, s)| *s);
                let (share, mean_conf) = agreeing
                    .map(|s| (share(s.weight, total_weight), s.mean_confidence()))
                    .unwrap_or((0.0, 0.0));
                Verdict {
                    winner: Some(choice),
                    consensus_reached: true,
                    confidence: if mean_conf > 0.0 {
                        share * mean_conf
                    } else {
                        share
                    },
                    consensus_strength: share,
                    margin,
                }
            }
            None => Verdict {
                winner: None,
                consensus_reached: false,
                confidence: 0.0,
                consensus_strength: 0.0,
                margin,
            },
        };
    }
    let Some((winner, top)) = totals.first() else {
        return Verdict {
            winner: None,
            consensus_reached: false,
            confidence: 0.0,
            consensus_strength: 0.0,
            margin,
        };
    };
    let reached = top_reaches_consensus(
        config,
        top,
        totals.get(1).map(|(_, s)| s),
        total_weight,
        totals.len(),
    );
    let share = share(top.weight, total_weight);
    Verdict {
        winner: Some(winner),
        consensus_reached: reached,
        confidence: share * top.mean_confidence(),
        consensus_strength: share,
        margin,
    }
}

/// The consensus rule over borrowed ballots: exactly what [`decide`] computes (it calls this),
/// without building the owned tally. `judge_choice` is the judge's choice in judge mode.
pub fn decide_ballots<'v>(
    config: &ConsensusConfig,
    ballots: impl IntoIterator<Item = Ballot<'v>>,
    judge_choice: Option<&'v str>,
) -> Verdict<'v> {
    let (totals, total_weight) = sum_ballots(ballots);
    verdict_from(config, &totals, total_weight, judge_choice)
}

fn ballots<'v>(
    mode: ConsensusMode,
    agents: &'v [Agent],
    votes: &'v [Vote],
) -> impl Iterator<Item = Ballot<'v>> + 'v {
    votes.iter().map(move |v| Ballot {
        choice: &v.choice,
        weight: vote_weight(mode, agents, &v.agent),
        confidence: v.confidence,
    })
}

fn tally_from(totals: &[(&str, Sums)], total_weight: i128) -> Tally {
    Tally {
        totals: totals
            .iter()
            .map(|(c, s)| ChoiceTotal {
                choice: c.to_string(),
                weight: from_units(s.weight),
                confidence_sum: from_units(s.confidence),
                weighted_confidence: from_units(s.weighted_confidence),
            })
            .collect(),
        total_weight: from_units(total_weight),
    }
}

/// Sum the votes per choice and order the choices winner first (tie rule in the module doc).
pub fn tally(mode: ConsensusMode, agents: &[Agent], votes: &[Vote]) -> Tally {
    let (totals, total_weight) = sum_ballots(ballots(mode, agents, votes));
    tally_from(&totals, total_weight)
}

/// Decide the outcome of a debate from its votes (and judge, in judge mode).
pub fn decide(
    config: &ConsensusConfig,
    agents: &[Agent],
    votes: &[Vote],
    judge: Option<&Judgement>,
) -> Outcome {
    let (totals, total_weight) = sum_ballots(ballots(config.mode, agents, votes));
    let v = verdict_from(
        config,
        &totals,
        total_weight,
        judge.map(|j| j.choice.as_str()),
    );
    Outcome {
        winner: v.winner.map(str::to_string),
        consensus_reached: v.consensus_reached,
        confidence: v.confidence,
        consensus_strength: v.consensus_strength,
        margin: v.margin,
        tally: tally_from(&totals, total_weight),
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
        assert_eq!(
            o.winner.as_deref(),
            Some("y"),
            "higher confidence wins the tie"
        );
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
        let v = votes(&[
            ("heavy", "heavy", 1.0),
            ("l1", "l1", 1.0),
            ("l2", "l1", 1.0),
        ]);
        let o = decide(&cfg(ConsensusMode::Weighted, 0.6), &a, &v, None);
        assert_eq!(o.winner.as_deref(), Some("heavy"));
        assert!(o.consensus_reached, "3/5 = 0.6");
        let o = decide(&cfg(ConsensusMode::Majority, 0.6), &a, &v, None);
        assert_eq!(
            o.winner.as_deref(),
            Some("l1"),
            "unweighted, two votes beat one"
        );
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
    fn vote_order_never_changes_the_outcome() {
        // 0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ as floats; both tie with 0.6 here, so the
        // tie-break must not depend on summation order.
        let a = agents(&[
            ("p", 1.0),
            ("q", 1.0),
            ("r", 1.0),
            ("s", 1.0),
            ("t", 1.0),
            ("u", 1.0),
        ]);
        let mut v = votes(&[
            ("p", "x", 0.1),
            ("q", "x", 0.2),
            ("r", "x", 0.3),
            ("s", "y", 0.6),
            ("t", "y", 0.0),
            ("u", "y", 0.0),
        ]);
        let first = decide(&cfg(ConsensusMode::Majority, 0.5), &a, &v, None);
        v.swap(0, 2);
        let second = decide(&cfg(ConsensusMode::Majority, 0.5), &a, &v, None);
        assert_eq!(first.winner, second.winner);
        assert_eq!(
            first.winner.as_deref(),
            Some("x"),
            "equal confidence sums: smaller name"
        );
        assert_eq!(first.tally, second.tally);
    }

    #[test]
    fn decide_ballots_is_what_decide_computes() {
        let a = agents(&[("heavy", 3.0), ("l1", 1.0), ("l2", 1.5)]);
        let v = votes(&[
            ("heavy", "heavy", 0.9),
            ("l1", "l1", 0.4),
            ("l2", "l1", 0.7),
        ]);
        for mode in [
            ConsensusMode::Majority,
            ConsensusMode::Weighted,
            ConsensusMode::Supermajority,
            ConsensusMode::Unanimous,
        ] {
            let c = cfg(mode, 0.55);
            let o = decide(&c, &a, &v, None);
            let b = decide_ballots(
                &c,
                v.iter().map(|x| Ballot {
                    choice: &x.choice,
                    weight: vote_weight(mode, &a, &x.agent),
                    confidence: x.confidence,
                }),
                None,
            );
            assert_eq!(o.winner.as_deref(), b.winner);
            assert_eq!(o.consensus_reached, b.consensus_reached);
            assert_eq!(o.confidence, b.confidence);
            assert_eq!(o.margin, b.margin);
        }
    }

    #[test]
    fn garbage_weights_and_confidences_do_not_panic() {
        let a = agents(&[("a", f64::INFINITY), ("b", f64::NAN), ("c", -2.0)]);
        let v = votes(&[
            ("a", "a", f64::NAN),
            ("b", "b", f64::INFINITY),
            ("c", "a", -1.0),
        ]);
        for mode in [ConsensusMode::Weighted, ConsensusMode::Majority] {
            let o = decide(&cfg(mode, 0.6), &a, &v, None);
            assert!(o.winner.is_some());
        }
    }

    #[test]
    fn no_votes_no_winner() {
        let o = decide(&ConsensusConfig::default(), &[], &[], None);
        assert_eq!(o.winner, None);
        assert!(!o.consensus_reached);
        assert_eq!(o.confidence, 0.0);
    }
}
