//! The engine with the offline demo provider: structure, determinism, variety, resume.

mod common;

use aragora_core::consensus;
use aragora_core::debate::{ConsensusMode, DebateStatus};
use aragora_debate::demo::DEMO_LABEL;
use aragora_debate::{DebateSpec, NoopObserver, ProviderRegistry, resume, run, run_with_report};
use common::*;

fn demo_spec(id: &str, n_agents: usize, rounds: u32) -> DebateSpec {
    let agents = (1..=n_agents)
        .map(|i| agent(&format!("agent{i}"), "demo", None, None))
        .collect();
    DebateSpec {
        id: Some(id.to_string()),
        rounds,
        ..DebateSpec::new("Design a rate limiter for a public API", agents)
    }
}

#[tokio::test]
async fn a_demo_debate_has_the_full_structure() {
    let providers = ProviderRegistry::demo_only();
    let mut rec = Recorder::default();
    let report = run_with_report(demo_spec("deb-demo-1", 5, 3), &providers, &mut rec).await;
    let d = &report.debate;
    assert_eq!(d.id, "deb-demo-1");
    assert_eq!(d.status, DebateStatus::Completed);
    assert_eq!(report.failure, None);
    assert_eq!(rec.rounds, vec![0, 1, 2]);
    assert_eq!(d.rounds_used, 3);
    assert_eq!(d.rounds.len(), 3);
    for (i, r) in d.rounds.iter().enumerate() {
        assert_eq!(r.round, i as u32);
        assert_eq!(r.positions.len(), 5);
        // Rounds 0 and 1 are critiqued (each of 5 agents critiques 4 others); the last is not.
        assert_eq!(r.critiques.len(), if i < 2 { 20 } else { 0 });
        for c in &r.critiques {
            assert_ne!(c.critic, c.target);
            assert!((0.0..=10.0).contains(&c.severity));
            assert!(!c.issues.is_empty());
            assert!(c.reasoning.starts_with(DEMO_LABEL));
        }
        for p in &r.positions {
            assert!((0.0..=1.0).contains(&p.confidence));
            assert!(p.reasoning.starts_with(DEMO_LABEL), "{}", p.reasoning);
        }
    }
    assert_eq!(d.votes.len(), 5);
    assert!(d.votes.iter().all(|v| v.reasoning.starts_with(DEMO_LABEL)));
    assert_evidence_consistent(d);
    // 5 proposals + 2 × (5 critiques + 5 revisions) + 5 votes.
    assert_eq!(report.calls, 30);
    assert_eq!(report.total_usage().total(), 0, "the demo calls no model");

    // The outcome is exactly what consensus::decide says about the recorded votes.
    let o = consensus::decide(&d.consensus, &d.agents, &d.votes, None);
    assert_eq!(d.winner, o.winner);
    assert_eq!(d.consensus_reached, o.consensus_reached);
    assert_eq!(d.confidence, o.confidence);
    assert_eq!(d.consensus_strength, o.consensus_strength);
    let winner = d.winner.as_deref().unwrap();
    assert_eq!(
        d.final_answer.as_deref(),
        Some(d.final_position(winner).unwrap().answer.as_str())
    );
}

#[tokio::test]
async fn same_id_same_transcript_other_id_other_transcript() {
    let providers = ProviderRegistry::demo_only();
    let a = run(demo_spec("deb-same", 5, 3), &providers, &mut NoopObserver).await;
    let b = run(demo_spec("deb-same", 5, 3), &providers, &mut NoopObserver).await;
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let c = run(demo_spec("deb-other", 5, 3), &providers, &mut NoopObserver).await;
    assert_ne!(a.rounds, c.rounds);
}

#[tokio::test]
async fn demo_debates_vary_like_real_ones() {
    let providers = ProviderRegistry::demo_only();
    let mut distinct_openings = 0;
    let mut revisions_toward_others = 0;
    let mut kept_positions = 0;
    let mut consensus = 0;
    let mut winners = std::collections::HashSet::new();
    let mut severities = std::collections::HashSet::new();
    for i in 0..30 {
        let d = run(
            demo_spec(&format!("deb-var-{i}"), 5, 3),
            &providers,
            &mut NoopObserver,
        )
        .await;
        let openings: std::collections::HashSet<&str> = d.rounds[0]
            .positions
            .iter()
            .map(|p| p.answer.as_str())
            .collect();
        if openings.len() >= 3 {
            distinct_openings += 1;
        }
        for r in 1..d.rounds.len() {
            for p in &d.rounds[r].positions {
                let before = d.rounds[r - 1]
                    .positions
                    .iter()
                    .find(|q| q.agent == p.agent)
                    .unwrap();
                if before.answer != p.answer {
                    assert!(p.reasoning.contains("Revised toward"), "{}", p.reasoning);
                    revisions_toward_others += 1;
                } else {
                    kept_positions += 1;
                }
            }
        }
        for c in d.rounds.iter().flat_map(|r| &r.critiques) {
            severities.insert((c.severity * 2.0) as i64);
        }
        // A vote for an answer several agents hold credits the agent that held it first.
        for v in &d.votes {
            let answer = &d.final_position(&v.choice).unwrap().answer;
            let first_round = |agent: &str| {
                d.rounds.iter().position(|r| {
                    r.positions
                        .iter()
                        .any(|p| p.agent == agent && &p.answer == answer)
                })
            };
            let holders = d
                .rounds
                .last()
                .unwrap()
                .positions
                .iter()
                .filter(|p| &p.answer == answer);
            let earliest = holders.filter_map(|p| first_round(&p.agent)).min();
            assert_eq!(first_round(&v.choice), earliest, "{v:?}");
        }
        consensus += usize::from(d.consensus_reached);
        winners.insert(d.winner.unwrap());
    }
    assert!(
        distinct_openings >= 25,
        "openings differ: {distinct_openings}/30"
    );
    assert!(revisions_toward_others > 0 && kept_positions > 0);
    assert!(
        consensus > 0 && consensus < 30,
        "some debates converge, some do not: {consensus}"
    );
    assert!(winners.len() >= 3, "winners vary: {winners:?}");
    assert!(severities.len() >= 5, "severities vary: {severities:?}");
}

#[tokio::test]
async fn demo_judge_mode_and_weighted_mode() {
    let providers = ProviderRegistry::demo_only();
    let mut spec = demo_spec("deb-judge", 4, 2);
    spec.consensus.mode = ConsensusMode::Judge;
    spec.consensus.judge = Some("agent4".into());
    let d = run(spec, &providers, &mut NoopObserver).await;
    assert_eq!(d.status, DebateStatus::Completed);
    let j = d.judge.as_ref().unwrap();
    assert_eq!(j.agent, "agent4");
    assert!(j.reasoning.starts_with(DEMO_LABEL));
    assert_eq!(d.winner.as_deref(), Some(j.choice.as_str()));
    assert!(d.consensus_reached);
    assert_eq!(d.votes.len(), 3);
    assert!(d.rounds.iter().all(|r| r.positions.len() == 3));

    let mut spec = demo_spec("deb-weighted", 3, 2);
    spec.consensus.mode = ConsensusMode::Weighted;
    spec.agents[0].weight = 5.0;
    let d = run(spec, &providers, &mut NoopObserver).await;
    let o = consensus::decide(&d.consensus, &d.agents, &d.votes, None);
    assert_eq!(
        (d.winner.clone(), d.consensus_strength),
        (o.winner, o.consensus_strength)
    );
}

#[tokio::test]
async fn resume_from_a_saved_round_reaches_the_same_end() {
    let providers = ProviderRegistry::demo_only();
    let mut rec = Recorder::default();
    let full = run(demo_spec("deb-resume", 5, 4), &providers, &mut rec).await;
    // Pretend the process died after round 1 was persisted.
    let saved = rec.snapshots[1].clone();
    assert_eq!(saved.rounds.len(), 2);
    let mut rec2 = Recorder::default();
    let resumed = resume(demo_spec("deb-resume", 5, 4), saved, &providers, &mut rec2).await;
    assert_eq!(rec2.rounds, vec![2, 3]);
    assert_eq!(resumed.debate, full);
}

#[tokio::test]
async fn an_invalid_spec_fails_cleanly() {
    let providers = ProviderRegistry::demo_only();
    let mut spec = demo_spec("deb-bad", 2, 2);
    spec.agents[1].provider = "openai".into();
    let report = run_with_report(spec, &providers, &mut NoopObserver).await;
    assert_eq!(report.debate.status, DebateStatus::Failed);
    let why = report.failure.unwrap();
    assert!(why.contains("agents[1].provider"), "{why}");
    assert!(report.debate.rounds.is_empty());
}

#[tokio::test]
async fn without_an_id_one_is_generated() {
    let providers = ProviderRegistry::demo_only();
    let mut spec = demo_spec("x", 2, 1);
    spec.id = None;
    let d = run(spec, &providers, &mut NoopObserver).await;
    assert!(d.id.starts_with("deb-"), "{}", d.id);
    assert_eq!(d.status, DebateStatus::Completed);
}
