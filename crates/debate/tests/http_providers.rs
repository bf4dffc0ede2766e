//! Debates end to end through loopback fakes of OpenAI-compatible and Anthropic servers.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aragora_core::consensus;
use aragora_core::debate::{ConsensusMode, DebateStatus};
use aragora_debate::{
    AgentReply, AgentRequest, DebateSpec, KeySource, Provider, ProviderError, ProviderRegistry,
    run_with_report,
};
use common::*;

fn registry() -> ProviderRegistry {
    let keys = HashMap::from([
        ("TEST_API_KEY".to_string(), KEY.to_string()),
        ("ANTHROPIC_API_KEY".to_string(), KEY.to_string()),
        ("WRONG_API_KEY".to_string(), "nope".to_string()),
    ]);
    ProviderRegistry::with_key_source(fast_settings(), KeySource::from_map(keys))
}

fn with_key(mut a: aragora_core::debate::Agent, env: &str) -> aragora_core::debate::Agent {
    a.api_key_env = Some(env.to_string());
    a
}

#[tokio::test]
async fn openai_compatible_debate_completes_and_recovers_malformed_output() {
    let fake = Fake::default();
    let base = openai_server(fake.clone()).await;
    let mut spec = DebateSpec::new(
        "Design a rate limiter",
        vec![
            with_key(
                agent("alice", "openai", Some("good-alice"), Some(&base)),
                "TEST_API_KEY",
            ),
            agent("bob", "openai-compatible", Some("fenced-bob"), Some(&base)),
            agent("carol", "ollama", Some("good-carol"), Some(&base)),
        ],
    );
    spec.id = Some("deb-http-1".into());
    spec.rounds = 2;
    let mut rec = Recorder::default();
    let report = run_with_report(spec, &registry(), &mut rec).await;
    let d = &report.debate;
    assert_eq!(report.failure, None, "{:?}", d.agent_failures);
    assert_eq!(d.status, DebateStatus::Completed);
    assert!(d.agent_failures.is_empty(), "{:?}", d.agent_failures);
    assert_eq!(rec.rounds, vec![0, 1]);
    assert_eq!(d.rounds_used, 2);

    // The key came from the named variable; the keyless local provider sent none.
    assert_eq!(
        fake.credential("good-alice").as_deref(),
        Some("Bearer sk-test-123")
    );
    assert_eq!(fake.credential("good-carol"), None);

    // Fenced JSON with trailing commas and "85%" was recovered.
    let bob0 = &d.rounds[0].positions[1];
    assert_eq!(bob0.agent, "bob");
    assert_eq!(bob0.answer, "Leaky bucket (fenced-bob)");
    assert_eq!(bob0.confidence, 0.85);
    let ev = d
        .evidence
        .iter()
        .find(|e| e.claim == "Leaky buckets smooth bursts")
        .expect("bob's evidence recorded");
    assert!(bob0.evidence_ids.contains(&ev.id));
    assert_evidence_consistent(d);

    // Round 0 positions were each critiqued by both other agents, once.
    assert_eq!(d.rounds[0].critiques.len(), 6);
    assert!(d.rounds[0].critiques.iter().all(|c| c.critic != c.target));
    assert!(
        d.rounds[1].critiques.is_empty(),
        "the last round is not critiqued"
    );
    let bob_on_alice = d.rounds[0]
        .critiques
        .iter()
        .find(|c| c.critic == "bob" && c.target == "alice")
        .unwrap();
    assert_eq!(bob_on_alice.severity, 7.0);

    // Votes: every agent voted for "alice" (the alphabetically first candidate).
    assert_eq!(d.votes.len(), 3);
    assert!(d.votes.iter().all(|v| v.choice == "alice"), "{:?}", d.votes);
    assert_eq!(
        d.votes
            .iter()
            .find(|v| v.agent == "bob")
            .unwrap()
            .confidence,
        0.9
    );
    let o = consensus::decide(&d.consensus, &d.agents, &d.votes, None);
    assert_eq!(d.winner, o.winner);
    assert_eq!(d.winner.as_deref(), Some("alice"));
    assert!(d.consensus_reached);
    assert_eq!(d.consensus_strength, 1.0);
    assert_eq!(
        d.final_answer.as_deref(),
        Some("Token bucket per tenant (good-alice)")
    );
    // Token usage from the API responses: alice made 1 + 1 + 1 + 1 calls of 100 + 20 tokens.
    assert_eq!(report.usage["alice"].input_tokens, 400);
    assert_eq!(report.usage["alice"].output_tokens, 80);
}

#[tokio::test]
async fn prose_replies_become_answers_and_votes() {
    let fake = Fake::default();
    let base = openai_server(fake.clone()).await;
    let spec = DebateSpec {
        rounds: 1,
        ..DebateSpec::new(
            "t",
            vec![
                agent("a", "openai-compatible", Some("good-a"), Some(&base)),
                agent("p", "openai-compatible", Some("prose-p"), Some(&base)),
            ],
        )
    };
    let d = run_with_report(spec, &registry(), &mut Recorder::default())
        .await
        .debate;
    assert_eq!(d.status, DebateStatus::Completed, "{:?}", d.agent_failures);
    let p = &d.rounds[0].positions[1];
    assert_eq!(
        p.answer,
        "I think we should use a sliding window (prose-p)."
    );
    assert_eq!(p.confidence, 0.5);
    let v = d.votes.iter().find(|v| v.agent == "p").unwrap();
    assert_eq!(v.choice, "a");
    assert_eq!(v.reasoning, "After reflection I support a.");
}

#[tokio::test]
async fn prose_critique_of_several_targets_fails_only_that_agent() {
    let fake = Fake::default();
    let base = openai_server(fake.clone()).await;
    let spec = DebateSpec {
        rounds: 2,
        ..DebateSpec::new(
            "t",
            vec![
                agent("a", "openai-compatible", Some("good-a"), Some(&base)),
                agent("b", "openai-compatible", Some("good-b"), Some(&base)),
                agent("c", "openai-compatible", Some("prose-c"), Some(&base)),
            ],
        )
    };
    let mut rec = Recorder::default();
    let report = run_with_report(spec, &registry(), &mut rec).await;
    let d = &report.debate;
    assert_eq!(d.status, DebateStatus::Completed);
    assert_eq!(d.agent_failures.len(), 1);
    assert_eq!(d.agent_failures[0].agent, "c");
    assert_eq!(d.agent_failures[0].round, 1);
    assert!(
        d.agent_failures[0]
            .error
            .starts_with("critique: unusable reply"),
        "{}",
        d.agent_failures[0].error
    );
    assert_eq!(rec.errors.len(), 1);
    assert_eq!(rec.errors[0].2, "unusable");
    // c took no further part: no round-1 position, no vote.
    assert!(d.rounds[1].positions.iter().all(|p| p.agent != "c"));
    assert!(d.votes.iter().all(|v| v.agent != "c"));
    assert_eq!(d.votes.len(), 2);
}

#[tokio::test]
async fn garbage_timeout_and_dead_agents_fail_cleanly_while_the_debate_continues() {
    let fake = Fake::default();
    let base = openai_server(fake.clone()).await;
    let dead = dead_address().await;
    let spec = DebateSpec {
        id: Some("deb-http-2".into()),
        rounds: 2,
        ..DebateSpec::new(
            "Pick a database",
            vec![
                agent("good1", "openai-compatible", Some("good-1"), Some(&base)),
                agent("good2", "openai-compatible", Some("good-2"), Some(&base)),
                agent("junk", "openai-compatible", Some("garbage-1"), Some(&base)),
                agent("sloth", "openai-compatible", Some("slow-1"), Some(&base)),
                agent(
                    "ghost",
                    "openai-compatible",
                    Some("good-ghost"),
                    Some(&dead),
                ),
            ],
        )
    };
    let mut rec = Recorder::default();
    let report = run_with_report(spec, &registry(), &mut rec).await;
    let d = &report.debate;
    assert_eq!(d.status, DebateStatus::Completed, "{:?}", report.failure);
    let failed: HashMap<&str, &str> = d
        .agent_failures
        .iter()
        .map(|f| (f.agent.as_str(), f.error.as_str()))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed["junk"].contains("no 'answer'"), "{}", failed["junk"]);
    assert!(failed["sloth"].contains("timed out"), "{}", failed["sloth"]);
    assert!(
        failed["sloth"].contains("after 3 attempts"),
        "{}",
        failed["sloth"]
    );
    assert!(
        failed["ghost"].contains("connection failed"),
        "{}",
        failed["ghost"]
    );
    assert!(d.agent_failures.iter().all(|f| f.round == 0));
    // Garbage is not retried; timeouts are (1 + 2 retries).
    assert_eq!(fake.requests("garbage-1"), 1);
    assert_eq!(fake.requests("slow-1"), 3);
    let mut kinds: Vec<&str> = rec.errors.iter().map(|e| e.2.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, vec!["connect", "timeout", "unusable"]);
    // The two good agents finished the debate.
    assert_eq!(d.rounds.len(), 2);
    assert_eq!(d.rounds[1].positions.len(), 2);
    assert_eq!(d.votes.len(), 2);
    assert_eq!(d.winner.as_deref(), Some("good1"));
    assert!(d.consensus_reached);
}

#[tokio::test]
async fn quorum_loss_fails_the_debate() {
    let fake = Fake::default();
    let base = openai_server(fake.clone()).await;
    let dead = dead_address().await;
    let spec = DebateSpec::new(
        "t",
        vec![
            agent("ok", "openai-compatible", Some("good-ok"), Some(&base)),
            agent("d1", "openai-compatible", Some("good-d1"), Some(&dead)),
            agent("d2", "openai-compatible", Some("good-d2"), Some(&dead)),
        ],
    );
    let mut rec = Recorder::default();
    let report = run_with_report(spec, &registry(), &mut rec).await;
    let d = &report.debate;
    assert_eq!(d.status, DebateStatus::Failed);
    let why = report.failure.as_deref().unwrap();
    assert!(why.contains("quorum lost in round 0"), "{why}");
    assert_eq!(d.agent_failures.len(), 2);
    assert_eq!(rec.errors.len(), 2);
    assert!(rec.rounds.is_empty(), "no round completed");
    assert_eq!(d.winner, None);
    assert_eq!(d.final_answer, None);
    assert!(!d.consensus_reached);
    assert!(d.votes.is_empty());
    // The surviving agent's proposal is kept in the transcript.
    assert_eq!(d.rounds[0].positions.len(), 1);
}

#[tokio::test]
async fn retries_5xx_but_never_auth_errors() {
    let fake = Fake::default();
    let base = openai_server(fake.clone()).await;
    let spec = DebateSpec {
        rounds: 1,
        ..DebateSpec::new(
            "t",
            vec![
                agent("a", "openai-compatible", Some("good-a"), Some(&base)),
                agent("b", "openai-compatible", Some("flaky-b"), Some(&base)),
                agent("c", "openai-compatible", Some("auth-c"), Some(&base)),
            ],
        )
    };
    let mut rec = Recorder::default();
    let report = run_with_report(spec, &registry(), &mut rec).await;
    let d = &report.debate;
    assert_eq!(d.status, DebateStatus::Completed);
    // flaky-b: one 503, then propose and vote succeed.
    assert_eq!(fake.requests("flaky-b"), 3);
    assert!(d.agent_failures.iter().all(|f| f.agent != "b"));
    // auth-c: exactly one request.
    assert_eq!(fake.requests("auth-c"), 1);
    assert_eq!(d.agent_failures.len(), 1);
    assert_eq!(rec.errors[0].2, "auth");
    assert!(
        d.agent_failures[0].error.contains("HTTP 401"),
        "{}",
        d.agent_failures[0].error
    );
    assert!(d.agent_failures[0].error.contains("invalid api key"));
}

#[tokio::test]
async fn missing_key_variable_fails_the_agent_without_a_request() {
    let fake = Fake::default();
    let base = openai_server(fake.clone()).await;
    let spec = DebateSpec {
        rounds: 1,
        ..DebateSpec::new(
            "t",
            vec![
                agent("a", "demo", None, None),
                agent("b", "demo", None, None),
                with_key(
                    agent("c", "openai", Some("good-c"), Some(&base)),
                    "UNSET_API_KEY",
                ),
            ],
        )
    };
    let mut rec = Recorder::default();
    let d = run_with_report(spec, &registry(), &mut rec).await.debate;
    assert_eq!(d.status, DebateStatus::Completed);
    assert_eq!(fake.requests("good-c"), 0);
    assert_eq!(rec.errors[0].2, "config");
    assert!(
        d.agent_failures[0]
            .error
            .contains("UNSET_API_KEY is not set")
    );
}

#[tokio::test]
async fn anthropic_debate_in_judge_mode() {
    let fake = Fake::default();
    let base = anthropic_server(fake.clone()).await;
    let mut spec = DebateSpec::new(
        "Design a cache",
        vec![
            agent("ann", "anthropic", Some("good-ann"), Some(&base)),
            agent("ben", "anthropic", Some("fenced-ben"), Some(&base)),
            agent("cat", "anthropic", Some("good-cat"), Some(&base)),
            agent("judge", "anthropic", Some("good-judge"), Some(&base)),
            with_key(
                agent("eve", "anthropic", Some("good-eve"), Some(&base)),
                "WRONG_API_KEY",
            ),
        ],
    );
    spec.rounds = 2;
    spec.consensus.mode = ConsensusMode::Judge;
    spec.consensus.judge = Some("judge".into());
    let mut rec = Recorder::default();
    let report = run_with_report(spec, &registry(), &mut rec).await;
    let d = &report.debate;
    assert_eq!(d.status, DebateStatus::Completed, "{:?}", report.failure);
    // Headers: the key and the API version.
    assert_eq!(fake.credential("good-ann").as_deref(), Some(KEY));
    assert!(
        fake.seen
            .lock()
            .unwrap()
            .anthropic_versions
            .iter()
            .all(|v| v == "2023-06-01")
    );
    // eve's wrong key: 401, not retried, agent out.
    assert_eq!(fake.requests("good-eve"), 1);
    assert_eq!(d.agent_failures.len(), 1);
    assert_eq!(rec.errors[0].2, "auth");
    // The judge neither debated nor voted; it decided.
    assert!(
        d.rounds
            .iter()
            .all(|r| r.positions.iter().all(|p| p.agent != "judge"))
    );
    assert!(d.votes.iter().all(|v| v.agent != "judge"));
    let j = d.judge.as_ref().expect("judgement");
    assert_eq!(j.agent, "judge");
    assert_eq!(j.choice, "ann");
    assert_eq!(d.winner.as_deref(), Some("ann"));
    assert!(d.consensus_reached);
    assert_eq!(d.rounds[0].positions[1].answer, "Leaky bucket (fenced-ben)");
    assert_eq!(report.usage["judge"].input_tokens, 50);
}

#[tokio::test]
async fn a_failed_judge_fails_the_debate() {
    let fake = Fake::default();
    let base = anthropic_server(fake.clone()).await;
    let mut spec = DebateSpec::new(
        "t",
        vec![
            agent("a", "demo", None, None),
            agent("b", "demo", None, None),
            agent("j", "anthropic", Some("garbage-j"), Some(&base)),
        ],
    );
    spec.rounds = 1;
    spec.consensus.mode = ConsensusMode::Judge;
    spec.consensus.judge = Some("j".into());
    let mut rec = Recorder::default();
    let report = run_with_report(spec, &registry(), &mut rec).await;
    assert_eq!(report.debate.status, DebateStatus::Failed);
    assert!(report.failure.unwrap().contains("the judge 'j' failed"));
    assert_eq!(
        report.debate.votes.len(),
        2,
        "the votes were cast before the judge"
    );
    assert_eq!(rec.errors.len(), 1);
}

/// A provider that never answers: the engine's own deadline must end the call.
struct Hang;

#[async_trait::async_trait]
impl Provider for Hang {
    async fn call(&self, _: &AgentRequest<'_>) -> Result<AgentReply, ProviderError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn the_call_deadline_bounds_any_provider() {
    let mut providers = ProviderRegistry::demo_only();
    providers.register("hang", Arc::new(Hang));
    providers.set_call_deadline(Some(Duration::from_millis(50)));
    let spec = DebateSpec::new(
        "t",
        vec![
            agent("a", "demo", None, None),
            agent("b", "demo", None, None),
            agent("h", "hang", Some("m"), None),
        ],
    );
    let mut rec = Recorder::default();
    let d = run_with_report(spec, &providers, &mut rec).await.debate;
    assert_eq!(d.status, DebateStatus::Completed);
    assert_eq!(d.agent_failures.len(), 1);
    assert_eq!(d.agent_failures[0].error, "propose: timed out after 50 ms");
}

/// With a guard (what the server installs), a `base_url` named in the request reaches only the
/// addresses the guard allows: an IP literal and a name resolving to loopback are both refused
/// before anything is sent, so the caller cannot read a private service's answer back through
/// the agent's error. The same agents without a guard reach it.
#[tokio::test]
async fn a_guarded_registry_refuses_base_urls_the_guard_does_not_allow() {
    let fake = Fake::default();
    let base = openai_server(fake.clone()).await;
    let port = base.rsplit(':').next().unwrap().split('/').next().unwrap();
    let by_name = format!("http://localhost:{port}/v1");
    let guard: aragora_debate::AddressGuard = Arc::new(|ip: std::net::IpAddr| {
        if ip.is_loopback() {
            Err("loopback".into())
        } else {
            Ok(())
        }
    });
    let guarded =
        ProviderRegistry::guarded(fast_settings(), KeySource::from_map(HashMap::new()), guard);
    let spec = |url: &str| {
        DebateSpec::new(
            "Design a rate limiter",
            vec![
                agent("a", "demo", None, None),
                agent("b", "demo", None, None),
                agent("mallory", "openai-compatible", Some("good-m"), Some(url)),
            ],
        )
    };
    for url in [&base, &by_name] {
        let report = run_with_report(spec(url), &guarded, &mut Recorder::default()).await;
        let failure = report
            .debate
            .agent_failures
            .iter()
            .find(|f| f.agent == "mallory")
            .unwrap_or_else(|| panic!("{url}: mallory should fail: {:?}", report.debate));
        assert!(
            failure
                .error
                .contains("not an address a base_url may reach")
                || failure.error.contains("not allowed for a base_url"),
            "{url}: {}",
            failure.error
        );
    }
    assert_eq!(
        fake.requests("good-m"),
        0,
        "nothing reached the private service"
    );
    let report = run_with_report(spec(&base), &registry(), &mut Recorder::default()).await;
    assert!(
        fake.requests("good-m") > 0,
        "{:?}",
        report.debate.agent_failures
    );
}
