//! Deterministic synthetic debates for tests and benchmarks.
//!
//! Each agent starts from one of a few stances (answers), cites evidence that backs its stance,
//! critiques an agent holding another stance, and may switch stance after a severe critique or
//! drift toward the majority; confidences move round to round. Votes go to the most confident
//! holder of the voter's final stance. The outcome fields are filled by the core consensus rule.

use aragora_core::consensus::decide;
use aragora_core::debate::{
    Agent, ConsensusConfig, ConsensusMode, Critique, Debate, DebateStatus, Evidence, Judgement,
    Position, Round, Vote,
};

use crate::util::SplitMix64;

const NAMES: [&str; 26] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "ken",
    "lena", "mallory", "nina", "oscar", "peggy", "quinn", "rupert", "sybil", "trent", "uma",
    "victor", "walter", "xena", "yann", "zoe",
];

struct Topic {
    task: &'static str,
    stances: [&'static str; 5],
}

const TOPICS: [Topic; 4] = [
    Topic {
        task: "Design a rate limiter for the public API",
        stances: [
            "Token bucket per tenant with a burst allowance and Redis-backed counters",
            "Sliding-window log per API key, enforced at the gateway",
            "Fixed window counters per endpoint with a global circuit breaker",
            "Leaky bucket queue per tenant with priority lanes for paid plans",
            "Adaptive concurrency limits driven by backend latency (AIMD)",
        ],
    },
    Topic {
        task: "Choose the storage engine for the audit log",
        stances: [
            "Append-only PostgreSQL table partitioned by month with BRIN indexes",
            "Object storage with hourly Parquet files and a manifest table",
            "A dedicated Kafka topic with infinite retention and compaction off",
            "SQLite per tenant, shipped nightly to cold storage",
            "ClickHouse MergeTree table ordered by tenant and timestamp",
        ],
    },
    Topic {
        task: "Plan the migration of the billing service to the new platform",
        stances: [
            "Strangler pattern: route new customers first, migrate old ones monthly",
            "Big-bang cutover over a weekend with a tested rollback plan",
            "Dual writes for a quarter, then switch reads after reconciliation",
            "Rebuild billing as a separate product and freeze the old one",
            "Migrate per region, starting with the smallest market",
        ],
    },
    Topic {
        task: "Decide how to cache product search results",
        stances: [
            "Cache whole result pages in a CDN for 60 seconds with stale-while-revalidate",
            "Per-query cache in Redis keyed by normalised query and filters",
            "No cache: scale the search cluster and tune the index instead",
            "Cache only the top 1,000 queries, precomputed every five minutes",
            "Client-side caching with ETags and conditional requests",
        ],
    },
];

const CLAIMS: [(&str, &str); 12] = [
    (
        "Token buckets allow short bursts while bounding the average rate",
        "RFC 2697",
    ),
    (
        "Sliding windows avoid the boundary spikes of fixed windows",
        "Cloudflare engineering blog",
    ),
    (
        "Redis INCR with EXPIRE handles 100k ops/s on one core",
        "internal benchmark 2024-03",
    ),
    (
        "Gateways already see every request and can reject early",
        "architecture review",
    ),
    (
        "Circuit breakers prevent cascading failures",
        "Release It!, 2nd ed.",
    ),
    (
        "Partitioned tables keep index sizes bounded",
        "PostgreSQL documentation",
    ),
    (
        "Columnar files compress audit data 10x",
        "Parquet format specification",
    ),
    (
        "Dual writes need reconciliation to catch divergence",
        "postmortem INC-4411",
    ),
    (
        "Big-bang migrations concentrate risk in one window",
        "SRE workbook, ch. 9",
    ),
    (
        "CDN caching cut p99 latency by 40% in the pilot",
        "pilot report Q2",
    ),
    (
        "Most search traffic hits a small set of queries",
        "search analytics 2024",
    ),
    ("Stale-while-revalidate hides refresh latency", "RFC 5861"),
];

const ISSUES: [&str; 8] = [
    "does not say how limits are shared across regions",
    "the failure mode under a cache outage is unclear",
    "ignores the operational cost of another datastore",
    "the rollback path is untested",
    "adds latency to every request",
    "assumes traffic is evenly distributed, which it is not",
    "no plan for tenants that exceed their quota legitimately",
    "the data retention requirement is not addressed",
];

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A synthetic completed debate with `agents` agents (at least 1) and `rounds` rounds (at least
/// 1). The same arguments always give the same debate.
pub fn debate(agents: usize, rounds: usize, seed: u64) -> Debate {
    let n = agents.max(1);
    let rounds_n = rounds.max(1);
    let mut rng = SplitMix64::new(seed ^ 0x5EED_DEBA_7E00_0000);
    let topic = &TOPICS[rng.below(TOPICS.len())];

    let mode = match rng.below(20) {
        0..=11 => ConsensusMode::Majority,
        12..=15 => ConsensusMode::Weighted,
        16..=17 => ConsensusMode::Supermajority,
        18 => ConsensusMode::Unanimous,
        _ => ConsensusMode::Judge,
    };
    let names: Vec<String> = (0..n)
        .map(|i| {
            if i < NAMES.len() {
                NAMES[i].to_string()
            } else {
                format!("{}-{}", NAMES[i % NAMES.len()], i / NAMES.len())
            }
        })
        .collect();
    let agents_v: Vec<Agent> = names
        .iter()
        .map(|name| Agent {
            name: name.clone(),
            provider: "demo".into(),
            model: Some("demo-1".into()),
            weight: if mode == ConsensusMode::Weighted {
                [0.5, 1.0, 1.0, 1.5, 2.0][rng.below(5)]
            } else {
                1.0
            },
            base_url: None,
            api_key_env: None,
        })
        .collect();

    let n_evidence = (2 + n / 2).min(CLAIMS.len());
    let first_claim = rng.below(CLAIMS.len());
    let evidence: Vec<Evidence> = (0..n_evidence)
        .map(|i| {
            let (claim, source) = CLAIMS[(first_claim + i) % CLAIMS.len()];
            Evidence {
                id: format!("ev-{}", i + 1),
                claim: claim.into(),
                source: source.into(),
                url: None,
            }
        })
        .collect();

    let n_stances = (2 + rng.below(3)).min(n.max(2));
    // Skewed start: stance 0 is the most popular.
    let mut stance: Vec<usize> = (0..n)
        .map(|_| {
            let u = rng.unit();
            ((u * u) * n_stances as f64) as usize
        })
        .collect();
    let mut conf: Vec<f64> = (0..n).map(|_| round2(0.5 + 0.4 * rng.unit())).collect();
    // Each stance leans on two evidence items.
    let stance_evidence =
        |s: usize, k: usize| -> String { format!("ev-{}", (s * 2 + k) % n_evidence + 1) };

    let mut rounds_v: Vec<Round> = Vec::with_capacity(rounds_n);
    for r in 0..rounds_n {
        let positions: Vec<Position> = (0..n)
            .map(|i| {
                let s = stance[i];
                let mut ids = vec![stance_evidence(s, 0)];
                if rng.below(3) > 0 {
                    ids.push(stance_evidence(s, 1));
                }
                if ids.len() == 2 && ids[0] == ids[1] {
                    ids.pop();
                }
                Position {
                    agent: names[i].clone(),
                    answer: topic.stances[s].into(),
                    reasoning: format!("Round {r}: weighing {} against the alternatives.", ids[0]),
                    confidence: conf[i],
                    evidence_ids: ids,
                }
            })
            .collect();
        let mut critiques = Vec::with_capacity(n);
        let mut worst: Vec<Option<(usize, f64)>> = vec![None; n];
        if n > 1 {
            for i in 0..n {
                let others: Vec<usize> = (0..n)
                    .filter(|&j| j != i && stance[j] != stance[i])
                    .collect();
                let target = if others.is_empty() {
                    (i + 1 + rng.below(n - 1)) % n
                } else {
                    others[rng.below(others.len())]
                };
                let severity = (2.0 + 16.0 * rng.unit()).round() / 2.0;
                let issue = ISSUES[rng.below(ISSUES.len())];
                critiques.push(Critique {
                    critic: names[i].clone(),
                    target: names[target].clone(),
                    issues: vec![issue.into()],
                    suggestions: vec![format!("consider: {}", topic.stances[stance[i]])],
                    severity,
                    reasoning: format!("{} {issue}.", names[target]),
                });
                if worst[target].is_none_or(|(_, s)| severity > s) {
                    worst[target] = Some((i, severity));
                }
            }
        }
        rounds_v.push(Round {
            round: r as u32,
            positions,
            critiques,
        });
        if r + 1 < rounds_n {
            // Revise for the next round.
            let mut counts = vec![0usize; n_stances];
            for &s in &stance {
                counts[s] += 1;
            }
            let majority = (0..n_stances)
                .max_by_key(|s| (counts[*s], usize::MAX - s))
                .unwrap_or(0);
            for i in 0..n {
                match worst[i] {
                    Some((critic, sev)) if sev >= 6.0 && rng.unit() < 0.45 => {
                        stance[i] = stance[critic];
                        conf[i] = round2(0.55 + 0.25 * rng.unit());
                    }
                    _ if stance[i] != majority && rng.unit() < 0.15 => {
                        stance[i] = majority;
                        conf[i] = round2(0.5 + 0.3 * rng.unit());
                    }
                    Some((_, sev)) => {
                        conf[i] = round2(
                            (conf[i] - 0.02 * sev / 2.0 + 0.1 * rng.unit()).clamp(0.3, 0.98),
                        );
                    }
                    None => conf[i] = round2((conf[i] + 0.08 * rng.unit()).clamp(0.3, 0.98)),
                }
            }
        }
    }

    // Votes: for the most confident holder of the voter's final stance.
    let champion = |s: usize| -> usize {
        (0..n)
            .filter(|&j| stance[j] == s)
            .max_by(|&a, &b| conf[a].total_cmp(&conf[b]).then(b.cmp(&a)))
            .unwrap_or(0)
    };
    let votes: Vec<Vote> = (0..n)
        .map(|i| {
            let c = champion(stance[i]);
            Vote {
                agent: names[i].clone(),
                choice: names[c].clone(),
                confidence: round2((conf[i] + 0.1 * rng.unit() - 0.05).clamp(0.05, 1.0)),
                reasoning: format!("{} best matches my final position.", names[c]),
            }
        })
        .collect();
    let judge = (mode == ConsensusMode::Judge).then(|| {
        let leader = champion(stance[rng.below(n)]);
        Judgement {
            agent: names[0].clone(),
            choice: names[leader].clone(),
            reasoning: format!(
                "{}'s plan has the clearest failure handling.",
                names[leader]
            ),
        }
    });
    let consensus = ConsensusConfig {
        mode,
        threshold: 0.6,
        judge: judge.as_ref().map(|j| j.agent.clone()),
    };
    let outcome = decide(&consensus, &agents_v, &votes, judge.as_ref());
    let final_answer = outcome.winner.as_ref().and_then(|w| {
        rounds_v
            .iter()
            .rev()
            .flat_map(|r| r.positions.iter())
            .find(|p| &p.agent == w)
            .map(|p| p.answer.clone())
    });
    Debate {
        id: format!("deb-synth-{n}x{rounds_n}-{seed:016x}"),
        task: topic.task.into(),
        context: None,
        consensus,
        agents: agents_v,
        evidence,
        rounds: rounds_v,
        votes,
        judge,
        status: DebateStatus::Completed,
        final_answer,
        winner: outcome.winner,
        consensus_reached: outcome.consensus_reached,
        confidence: outcome.confidence,
        consensus_strength: outcome.consensus_strength,
        rounds_used: rounds_n as u32,
        agent_failures: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped_as_asked() {
        let a = debate(5, 3, 9);
        assert_eq!(a, debate(5, 3, 9));
        assert_ne!(a, debate(5, 3, 10));
        assert_eq!(a.agents.len(), 5);
        assert_eq!(a.rounds.len(), 3);
        assert_eq!(a.votes.len(), 5);
        assert!(
            a.rounds
                .iter()
                .all(|r| r.positions.len() == 5 && r.critiques.len() == 5)
        );
        let d = debate(0, 0, 1);
        assert_eq!((d.agents.len(), d.rounds.len()), (1, 1));
    }

    #[test]
    fn positions_change_and_modes_vary_across_seeds() {
        let mut changed = 0;
        let mut modes = std::collections::HashSet::new();
        for seed in 0..200 {
            let d = debate(7, 4, seed);
            modes.insert(d.consensus.mode.as_str());
            for a in &d.agents {
                let answers: Vec<&str> = d
                    .rounds
                    .iter()
                    .flat_map(|r| r.positions.iter())
                    .filter(|p| p.agent == a.name)
                    .map(|p| p.answer.as_str())
                    .collect();
                if answers.windows(2).any(|w| w[0] != w[1]) {
                    changed += 1;
                }
            }
        }
        assert!(changed > 100, "only {changed} agents ever changed position");
        assert_eq!(modes.len(), 5, "{modes:?}");
    }
}
