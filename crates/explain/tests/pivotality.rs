//! `influence_score` against a brute-force Banzhaf count, straight from the definition: a
//! coalition S of voters wins when, backing one choice against everyone else united behind
//! another, the core rule gives it consensus — strictly more than half the weight and
//! `share_meets(w(S)/T, threshold)` (unanimous: all the weight). Voter i swings for S (i ∉ S)
//! when S loses and S ∪ {i} wins; the index is i's swing count over the sum of all counts.
//!
//! Regression: the quota search gave up for total weights above 64 (quota = total + 1 unit,
//! unreachable), so every index was 0.

use aragora_core::consensus::{VoteUnits, effective_threshold, share, share_meets, to_units};
use aragora_core::debate::*;
use aragora_explain::power::{self, PowerAlgorithm};
use aragora_explain::util::SplitMix64;
use aragora_explain::{ExplainOptions, Explanation, explain};

fn debate(mode: ConsensusMode, threshold: f64, weights: &[f64], choices: &[usize]) -> Debate {
    let names: Vec<String> = (0..weights.len()).map(|i| format!("a{i}")).collect();
    Debate {
        id: format!("deb-power-{}-{threshold}", weights.len()),
        task: "t".into(),
        context: None,
        consensus: ConsensusConfig {
            mode,
            threshold,
            judge: None,
        },
        agents: names
            .iter()
            .zip(weights)
            .map(|(name, w)| Agent {
                name: name.clone(),
                provider: "demo".into(),
                model: None,
                weight: *w,
                base_url: None,
                api_key_env: None,
            })
            .collect(),
        evidence: Vec::new(),
        rounds: vec![Round {
            round: 0,
            positions: names
                .iter()
                .map(|name| Position {
                    agent: name.clone(),
                    answer: format!("plan of {name}"),
                    reasoning: String::new(),
                    confidence: 0.7,
                    evidence_ids: Vec::new(),
                })
                .collect(),
            critiques: Vec::new(),
        }],
        votes: names
            .iter()
            .zip(choices)
            .map(|(name, c)| Vote {
                agent: name.clone(),
                choice: names[*c].clone(),
                confidence: 0.8,
                reasoning: String::new(),
            })
            .collect(),
        judge: None,
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

/// The weight each vote counts with, in tally units, as the core counts it.
fn vote_units(d: &Debate) -> Vec<i128> {
    d.votes
        .iter()
        .map(|v| {
            let w = if d.consensus.mode == ConsensusMode::Weighted {
                d.agents
                    .iter()
                    .find(|a| a.name == v.agent)
                    .map_or(1.0, |a| a.weight.max(0.0))
            } else {
                1.0
            };
            VoteUnits::new(w, v.confidence).weight
        })
        .collect()
}

/// Normalised Banzhaf index by enumerating all 2^n coalitions (n ≤ 16).
fn brute_force(d: &Debate) -> Vec<f64> {
    let ws = vote_units(d);
    let n = ws.len();
    assert!(n <= 16);
    let total: i128 = ws.iter().sum();
    let wins = |w: i128| match d.consensus.mode {
        ConsensusMode::Unanimous => w == total,
        _ => {
            let t = effective_threshold(&d.consensus).unwrap();
            2 * w > total && share_meets(share(w, total), t)
        }
    };
    let mut swings = vec![0u64; n];
    for mask in 0u32..(1 << n) {
        let w: i128 = (0..n).filter(|i| mask >> i & 1 == 1).map(|i| ws[i]).sum();
        if wins(w) {
            continue;
        }
        for i in 0..n {
            if mask >> i & 1 == 0 && wins(w + ws[i]) {
                swings[i] += 1;
            }
        }
    }
    let sum: u64 = swings.iter().sum();
    swings
        .iter()
        .map(|s| {
            if sum == 0 {
                0.0
            } else {
                *s as f64 / sum as f64
            }
        })
        .collect()
}

fn influence(e: &Explanation<'_>) -> Vec<f64> {
    e.vote_pivots.iter().map(|p| p.influence_score).collect()
}

#[test]
fn three_voters_of_weight_22_share_power_equally() {
    // The reviewer's repro: total 66 > 64. Majority at 0.5 needs more than half: q = 33 + 1 unit.
    let d = debate(ConsensusMode::Weighted, 0.5, &[22.0; 3], &[0, 1, 0]);
    let e = explain(&d, &ExplainOptions::default());
    let p = &e.method.pivotality;
    assert_eq!(p.algorithm, "exact_dp");
    assert_eq!(p.total_weight, 66.0);
    assert_eq!(p.quota, 33.000000001);
    // Any two of three win, so each voter swings for 2 of its 4 coalitions: 1/3 each.
    for s in influence(&e) {
        assert!((s - 1.0 / 3.0).abs() < 1e-12, "{:?}", influence(&e));
    }
    assert!(e.vote_pivots[0].pivotal && e.vote_pivots[2].pivotal);
    let v: serde_json::Value = serde_json::to_value(&e).unwrap();
    assert_eq!(v["method"]["pivotality"]["quota"], 33.000000001);
}

#[test]
fn sixty_five_unit_voters_have_one_sixty_fifth_each() {
    for n in [64usize, 65, 101, 127] {
        let choices: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let d = debate(ConsensusMode::Majority, 0.5, &vec![1.0; n], &choices);
        let e = explain(&d, &ExplainOptions::default());
        assert_eq!(e.method.pivotality.algorithm, "exact_dp");
        // More than half: ⌊T/2⌋ + 1 unit (T = n·10^9 units).
        let quota = to_units(e.method.pivotality.quota);
        assert_eq!(quota, n as i128 * 1_000_000_000 / 2 + 1);
        for s in influence(&e) {
            assert!((s - 1.0 / n as f64).abs() < 1e-12, "n = {n}: {s}");
        }
    }
}

#[test]
fn random_weighted_games_match_brute_force_banzhaf() {
    let mut rng = SplitMix64::new(2026_1127);
    let thresholds = [0.3, 0.5, 0.6, 2.0 / 3.0, 0.75, 0.9, 1.0];
    let modes = [
        ConsensusMode::Weighted,
        ConsensusMode::Weighted,
        ConsensusMode::Supermajority,
        ConsensusMode::Unanimous,
    ];
    let mut algorithms = Vec::new();
    for case in 0..400 {
        let n = 1 + rng.below(12);
        // Weights of three kinds: whole, halves/tenths, and irregular fractions; scaled so the
        // total is usually well above 64.
        let kind = case % 3;
        let weights: Vec<f64> = (0..n)
            .map(|_| match kind {
                0 => (1 + rng.below(40)) as f64,
                1 => (1 + rng.below(400)) as f64 / 10.0 + [0.0, 0.5][rng.below(2)],
                _ => 0.1 + rng.unit() * 60.0,
            })
            .collect();
        let choices: Vec<usize> = (0..n).map(|_| rng.below(n.min(3))).collect();
        let mode = modes[rng.below(modes.len())];
        let threshold = thresholds[rng.below(thresholds.len())];
        let d = debate(mode, threshold, &weights, &choices);
        let e = explain(&d, &ExplainOptions::default());
        let expect = brute_force(&d);
        let got = influence(&e);
        for (i, (g, x)) in got.iter().zip(&expect).enumerate() {
            assert!(
                (g - x).abs() < 1e-12,
                "case {case}: {mode:?} {threshold} weights {weights:?}: voter {i} {g} vs {x} \
                 (method {:?})",
                e.method.pivotality
            );
        }
        algorithms.push(e.method.pivotality.algorithm.to_string());
    }
    for a in ["exact_dp", "exact_enumeration"] {
        assert!(algorithms.iter().any(|x| x == a), "no case used {a}");
    }
}

#[test]
fn monte_carlo_estimates_power_above_total_weight_64() {
    // 24 irregular weights (no usable GCD, more than 20 voters): Monte Carlo. Total ≈ 250.
    let weights: Vec<f64> = (0..24)
        .map(|i| 5.0 + ((i as f64 + 1.0) * std::f64::consts::PI).fract() * 10.0)
        .collect();
    let choices: Vec<usize> = (0..24).map(|i| i % 3).collect();
    let d = debate(ConsensusMode::Weighted, 0.6, &weights, &choices);
    let e = explain(&d, &ExplainOptions::default());
    let p = &e.method.pivotality;
    assert_eq!(p.algorithm, "monte_carlo");
    assert!(p.total_weight > 64.0 && p.quota <= p.total_weight);
    assert!(p.standard_error.unwrap() > 0.0);
    // Exact index by meet-in-the-middle at the smallest weight that reaches consensus.
    let ws = vote_units(&d);
    let total: i128 = ws.iter().sum();
    // Smallest x > T/2 with share_meets(x/T, 0.6), by bisection (share is monotone in x).
    let (mut lo, mut hi) = (total / 2 + 1, total);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if share_meets(share(mid, total), 0.6) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let q = lo;
    assert_eq!(q, to_units(p.quota));
    let exact = power::banzhaf_enumeration(&ws, q).unwrap();
    let sum: f64 = exact.iter().sum();
    for (s, x) in influence(&e).iter().zip(&exact) {
        assert!(*s > 0.0);
        assert!((s - x / sum).abs() < 0.01, "{s} vs {}", x / sum);
    }
    assert_eq!(
        power::banzhaf(&ws, q, 1).algorithm,
        PowerAlgorithm::MonteCarlo
    );
}
