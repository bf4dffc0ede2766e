//! The `demo` provider: an offline, deterministic stand-in for a model, so the whole system runs
//! end to end without API keys. It is not a language model and says so in every reasoning text.
//!
//! Everything it says is derived from hashes of the debate id, the agent name, the round and the
//! texts in the transcript, never from a clock or a random source, so the same debate id always
//! yields the same transcript. Each answer text has a hidden "strength" (a hash of debate id +
//! text): critics find more severe issues in weaker answers, agents facing a clearly stronger
//! proposal tend to revise toward it (adopting its text, so debates converge), and voters pick
//! the strongest final answer as they perceive it (strength plus a little per-voter noise),
//! crediting the agent who held that answer first.

use async_trait::async_trait;

use crate::provider::{
    AgentReply, AgentRequest, CritiqueReply, NewEvidence, PositionReply, Provider, ProviderError,
    Role, VoteReply,
};

/// Prefix of every reasoning text the demo writes.
pub const DEMO_LABEL: &str = "[demo agent: offline and deterministic, not a language model]";
pub const DEMO_EVIDENCE_SOURCE: &str = "demo corpus (synthetic)";

pub struct DemoProvider;

struct Strategy {
    answer: &'static str,
    reasoning: &'static str,
    claim: &'static str,
}

const STRATEGIES: [Strategy; 8] = [
    Strategy {
        answer: "Start with the simplest design that could work, instrument it, and iterate on measurements",
        reasoning: "a small first version is quick to verify and cheap to change once real data arrives",
        claim: "Simple first versions are cheaper to verify and to change than elaborate ones",
    },
    Strategy {
        answer: "Adopt a proven, widely used standard approach instead of inventing a new one",
        reasoning: "established approaches have documented failure modes and existing tooling",
        claim: "Widely used approaches come with known failure modes and mature tooling",
    },
    Strategy {
        answer: "Split the problem into independent components with narrow, explicit interfaces",
        reasoning: "independent parts can be built, tested and replaced separately",
        claim: "Narrow interfaces between components limit how far a change ripples",
    },
    Strategy {
        answer: "Design for failure first: timeouts, retries with backoff, and graceful degradation",
        reasoning: "most outages come from dependencies misbehaving, not from the happy path",
        claim: "Timeouts and bounded retries keep one slow dependency from stalling everything",
    },
    Strategy {
        answer: "Prototype the two most promising options and choose by measured results",
        reasoning: "a short bake-off replaces opinion with numbers before committing",
        claim: "Side-by-side prototypes expose costs that design documents miss",
    },
    Strategy {
        answer: "Optimise for the user-visible outcome and defer internal optimisation",
        reasoning: "effort spent where users feel it pays back first",
        claim: "User-visible latency and correctness drive adoption more than internal elegance",
    },
    Strategy {
        answer: "Make behaviour configurable per tenant, with safe defaults for everyone else",
        reasoning: "different users have different limits; defaults protect those who never tune",
        claim: "Safe defaults protect the users who never change a setting",
    },
    Strategy {
        answer: "Centralise the decision in one service so every caller sees consistent results",
        reasoning: "one authority avoids divergent copies of the same rule",
        claim: "A single source of truth prevents divergent behaviour between callers",
    },
];

const FOCUS: [&str; 6] = [
    "with a staged rollout behind a feature flag",
    "keeping operating cost low",
    "with clear metrics and alerts from day one",
    "documenting the trade-offs explicitly",
    "with a load test before launch",
    "keeping the first version small enough to ship this week",
];

const ISSUES: [&str; 8] = [
    "does not say how success will be measured",
    "underestimates the operating cost",
    "leaves failure handling unspecified",
    "is broader in scope than the task needs",
    "rests on assumptions that are not stated",
    "ignores migration from the current state",
    "has no plan for abuse or overload",
    "will be hard to test in isolation",
];

const SUGGESTIONS: [&str; 6] = [
    "state one measurable success criterion",
    "add a fallback for when a dependency fails",
    "cut the first version down to the essential path",
    "write down the assumptions and check the riskiest one",
    "estimate the cost at ten times today's load",
    "plan the rollout in reversible steps",
];

#[async_trait]
impl Provider for DemoProvider {
    async fn call(&self, req: &AgentRequest<'_>) -> Result<AgentReply, ProviderError> {
        let mut reply = AgentReply::default();
        match req.role {
            Role::Propose => reply.position = Some(propose(req)),
            Role::Critique => reply.critiques = critique(req),
            Role::Revise => reply.position = Some(revise(req)),
            Role::Vote | Role::Judge => reply.vote = Some(vote(req)?),
        }
        Ok(reply)
    }
}

fn propose(req: &AgentRequest<'_>) -> PositionReply {
    let mut rng = Rng::new(&[req.debate_id, &req.agent.name, "propose"]);
    let s = &STRATEGIES[rng.below(STRATEGIES.len())];
    let focus = FOCUS[rng.below(FOCUS.len())];
    let answer = format!("{}, {focus}.", s.answer);
    let strength = strength(req.debate_id, &answer);
    let confidence = round2(0.45 + 0.4 * strength + 0.1 * rng.unit());
    let mut evidence_ids = Vec::new();
    let existing = &req.transcript.evidence;
    if !existing.is_empty() && rng.unit() < 0.7 {
        evidence_ids.push(existing[rng.below(existing.len())].id.clone());
    }
    let new_evidence = if rng.unit() < 0.6 {
        vec![NewEvidence {
            claim: s.claim.to_string(),
            source: DEMO_EVIDENCE_SOURCE.to_string(),
            url: None,
        }]
    } else {
        Vec::new()
    };
    PositionReply {
        answer,
        reasoning: format!("{DEMO_LABEL} Proposed because {}.", s.reasoning),
        confidence,
        evidence_ids,
        new_evidence,
    }
}

fn critique(req: &AgentRequest<'_>) -> Vec<CritiqueReply> {
    let own = req.own_position().map(|p| p.answer.as_str());
    let round = req.round.to_string();
    req.target_positions()
        .map(|target| {
            let mut rng = Rng::new(&[req.debate_id, &req.agent.name, &target.agent, &round]);
            if Some(target.answer.as_str()) == own {
                return CritiqueReply {
                    target: target.agent.clone(),
                    issues: vec!["minor: the wording could be tighter".to_string()],
                    suggestions: vec!["keep the position as it is".to_string()],
                    severity: round_half(1.0 + rng.unit()),
                    reasoning: format!("{DEMO_LABEL} This matches my own position."),
                };
            }
            let perceived = strength(req.debate_id, &target.answer) + 0.2 * (rng.unit() - 0.5);
            let severity = round_half((12.0 * (1.0 - perceived)).clamp(0.5, 9.5));
            let n_issues = if severity >= 5.0 { 2 } else { 1 };
            let first = rng.below(ISSUES.len());
            let issues = (0..n_issues)
                .map(|k| ISSUES[(first + 3 * k) % ISSUES.len()].to_string())
                .collect();
            CritiqueReply {
                target: target.agent.clone(),
                issues,
                suggestions: vec![SUGGESTIONS[rng.below(SUGGESTIONS.len())].to_string()],
                severity,
                reasoning: format!(
                    "{DEMO_LABEL} Judged {} against the task; severity {severity:.1} of 10.",
                    target.agent
                ),
            }
        })
        .collect()
}

fn revise(req: &AgentRequest<'_>) -> PositionReply {
    let me = req.agent.name.as_str();
    let Some(own) = req.own_position() else {
        // No earlier position (cannot happen in the engine's order): propose afresh.
        return propose(req);
    };
    let mut rng = Rng::new(&[req.debate_id, me, "revise", &req.round.to_string()]);
    let (sum, n) = req
        .critiques_received()
        .fold((0.0, 0u32), |(s, n), c| (s + c.severity, n + 1));
    let mean_severity = if n > 0 { sum / f64::from(n) } else { 0.0 };
    let own_strength = strength(req.debate_id, &own.answer);
    let best_other = req
        .transcript
        .rounds
        .last()
        .into_iter()
        .flat_map(|r| r.positions.iter())
        .filter(|p| p.agent != me && p.answer != own.answer)
        .map(|p| (strength(req.debate_id, &p.answer), p))
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.agent.cmp(&a.1.agent)));
    if let Some((best_strength, best)) = best_other {
        let gap = best_strength - own_strength;
        let p_adopt = (gap * 1.5 + (mean_severity - 4.0) / 20.0).clamp(0.0, 0.6);
        if gap > 0.1 && rng.unit() < p_adopt {
            let mut evidence_ids = best.evidence_ids.clone();
            evidence_ids.extend(own.evidence_ids.iter().cloned());
            evidence_ids.dedup();
            return PositionReply {
                answer: best.answer.clone(),
                reasoning: format!(
                    "{DEMO_LABEL} Revised toward {}'s proposal: it answers the critiques of mine \
                     (mean severity {mean_severity:.1}) better.",
                    best.agent
                ),
                confidence: round2((0.5 + 0.4 * best_strength).min(0.95)),
                evidence_ids,
                new_evidence: Vec::new(),
            };
        }
    }
    // Keep the position; confidence follows how hard it was criticised.
    let delta = 0.02 - 0.015 * (mean_severity - 3.0) + 0.04 * (rng.unit() - 0.5);
    PositionReply {
        answer: own.answer.clone(),
        reasoning: if n == 0 {
            format!("{DEMO_LABEL} Kept my position; it drew no critiques.")
        } else {
            format!(
                "{DEMO_LABEL} Kept my position after {n} critiques (mean severity {mean_severity:.1}), \
                 addressing them in the details."
            )
        },
        confidence: round2((own.confidence + delta).clamp(0.05, 0.95)),
        evidence_ids: own.evidence_ids.clone(),
        new_evidence: Vec::new(),
    }
}

fn vote(req: &AgentRequest<'_>) -> Result<VoteReply, ProviderError> {
    let me = req.agent.name.as_str();
    let judging = req.role == Role::Judge;
    let own_answer = req.own_position().map(|p| p.answer.as_str());
    // Several agents may hold the same answer (after revising toward it): a vote for that
    // answer goes to the agent who held it first (earliest round, then candidate order).
    struct Candidate<'t> {
        answer: &'t str,
        holder: &'t str,
        origin: (usize, usize),
        holders: usize,
    }
    let mut options: Vec<Candidate<'_>> = Vec::new();
    for (idx, p) in req.target_positions().enumerate() {
        let first_round = req
            .transcript
            .rounds
            .iter()
            .position(|r| {
                r.positions
                    .iter()
                    .any(|q| q.agent == p.agent && q.answer == p.answer)
            })
            .unwrap_or(usize::MAX);
        let origin = (first_round, idx);
        match options.iter_mut().find(|o| o.answer == p.answer) {
            Some(o) => {
                o.holders += 1;
                if origin < o.origin {
                    o.holder = &p.agent;
                    o.origin = origin;
                }
            }
            None => options.push(Candidate {
                answer: &p.answer,
                holder: &p.agent,
                origin,
                holders: 1,
            }),
        }
    }
    let mut ranked: Vec<(f64, &Candidate<'_>)> = options
        .iter()
        .map(|o| {
            let mut rng = Rng::new(&[req.debate_id, me, req.role.as_str(), o.answer]);
            let noise = if judging { 0.04 } else { 0.3 } * (rng.unit() - 0.5);
            let own_bias = if Some(o.answer) == own_answer {
                0.15
            } else {
                0.0
            };
            // Voters see quality only roughly: half the strength spread, plus noise and bias.
            (
                0.5 * strength(req.debate_id, o.answer) + noise + own_bias,
                o,
            )
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.holder.cmp(b.1.holder)));
    let Some(&(best, chosen)) = ranked.first() else {
        return Err(ProviderError::Unusable("no candidates to vote for".into()));
    };
    let gap = ranked.get(1).map_or(0.15, |r| best - r.0);
    let confidence = round2((0.45 + 0.5 * best + gap).clamp(0.4, 0.95));
    let choice = chosen.holder;
    Ok(VoteReply {
        choice: choice.to_string(),
        confidence,
        reasoning: format!(
            "{DEMO_LABEL} {} {choice}'s final position (held by {} agent{}) as the strongest of {} distinct positions.",
            if judging { "Chose" } else { "Voted for" },
            chosen.holders,
            if chosen.holders == 1 { "" } else { "s" },
            ranked.len()
        ),
    })
}

/// The hidden quality of an answer text in this debate, in 0.35..0.95.
fn strength(debate_id: &str, answer: &str) -> f64 {
    0.35 + 0.6 * Rng::new(&[debate_id, answer]).unit()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round_half(x: f64) -> f64 {
    (x * 2.0).round() / 2.0
}

/// FNV-1a over the parts, then splitmix64 steps: tiny, fast and stable across platforms.
struct Rng(u64);

impl Rng {
    fn new(parts: &[&str]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in parts {
            for &b in part.as_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            // Separator, so ("ab","c") and ("a","bc") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_stable_and_separates_parts() {
        assert_eq!(Rng::new(&["a", "b"]).next(), Rng::new(&["a", "b"]).next());
        assert_ne!(Rng::new(&["ab", "c"]).next(), Rng::new(&["a", "bc"]).next());
        let mut r = Rng::new(&["x"]);
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn strength_stays_in_range() {
        for i in 0..500 {
            let s = strength("deb-1", &format!("answer {i}"));
            assert!((0.35..0.95).contains(&s), "{s}");
        }
    }
}
