//! What a completed debate contributes to the Knowledge Mound: its conclusion and the winning
//! agent's reasoning, keyed by the debate id (so re-ingesting never duplicates).

use aragora_core::debate::{Debate, DebateStatus};
use serde_json::json;

use crate::{MAX_CONTENT_CHARS, NewItem, source};

/// The knowledge item for a completed debate with an answer; `None` for debates that failed,
/// are unfinished, or ended without any answer.
///
/// Content: the task, the conclusion (the winner's final answer, also when consensus was not
/// reached — the metadata says so) and the winner's final reasoning. Confidence: the debate's.
pub fn debate_item(d: &Debate) -> Option<NewItem> {
    if d.status != DebateStatus::Completed {
        return None;
    }
    let answer = d.final_answer.as_deref().filter(|a| !a.trim().is_empty())?;
    let winner = d.winner.as_deref();
    let reasoning = winner
        .and_then(|w| d.final_position(w))
        .map(|p| p.reasoning.trim())
        .filter(|r| !r.is_empty());
    let mut content = format!("{}\n\nConclusion: {}", d.task.trim(), answer.trim());
    if let (Some(w), Some(r)) = (winner, reasoning) {
        content.push_str(&format!("\n\nWinning reasoning ({w}): {r}"));
    }
    if let Some((cut, _)) = content.char_indices().nth(MAX_CONTENT_CHARS) {
        content.truncate(cut);
    }
    Some(NewItem {
        source_type: source::DEBATE.into(),
        source_key: d.id.clone(),
        content,
        metadata: json!({
            "debate_id": d.id,
            "task": d.task,
            "winner": d.winner,
            "consensus_reached": d.consensus_reached,
            "consensus_strength": d.consensus_strength,
            "consensus_mode": d.consensus.mode.as_str(),
            "rounds_used": d.rounds_used,
            "agents": d.agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        }),
        confidence: if d.confidence.is_finite() {
            d.confidence.clamp(0.0, 1.0)
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aragora_core::debate::{Agent, ConsensusConfig, Position, Round};

    fn debate() -> Debate {
        let agent = |n: &str| Agent {
            name: n.into(),
            provider: "demo".into(),
            model: None,
            weight: 1.0,
            base_url: None,
            api_key_env: None,
        };
        Debate {
            id: "deb-1".into(),
            task: "Design a rate limiter".into(),
            context: None,
            consensus: ConsensusConfig::default(),
            agents: vec![agent("a"), agent("b")],
            evidence: vec![],
            rounds: vec![Round {
                round: 0,
                positions: vec![Position {
                    agent: "a".into(),
                    answer: "Token bucket per tenant".into(),
                    reasoning: "allows bursts".into(),
                    confidence: 0.8,
                    evidence_ids: vec![],
                }],
                critiques: vec![],
            }],
            votes: vec![],
            judge: None,
            status: DebateStatus::Completed,
            final_answer: Some("Token bucket per tenant".into()),
            winner: Some("a".into()),
            consensus_reached: true,
            confidence: 0.72,
            consensus_strength: 0.9,
            rounds_used: 1,
            agent_failures: vec![],
        }
    }

    #[test]
    fn completed_debates_contribute_conclusion_and_winning_reasoning() {
        let item = debate_item(&debate()).unwrap();
        assert_eq!(item.source_type, "debate");
        assert_eq!(item.source_key, "deb-1");
        assert_eq!(
            item.content,
            "Design a rate limiter\n\nConclusion: Token bucket per tenant\n\nWinning reasoning (a): allows bursts"
        );
        assert_eq!(item.confidence, 0.72);
        assert_eq!(item.metadata["consensus_reached"], true);
        assert!(item.validate().is_ok());
    }

    #[test]
    fn failed_or_answerless_debates_contribute_nothing() {
        let mut d = debate();
        d.status = DebateStatus::Failed;
        assert!(debate_item(&d).is_none());
        let mut d = debate();
        d.final_answer = None;
        assert!(debate_item(&d).is_none());
    }
}
