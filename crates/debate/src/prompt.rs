//! Prompts for model-backed agents: one system message stating the role and the JSON shape to
//! answer in, and one user message with the task and the relevant part of the transcript.

use std::fmt::Write;

use crate::provider::{AgentRequest, Role};

/// Longest excerpt of any one transcript text put into a prompt.
const MAX_EXCERPT_CHARS: usize = 1_500;
const MAX_CONTEXT_CHARS: usize = 20_000;

pub fn system_prompt(req: &AgentRequest<'_>) -> String {
    let name = &req.agent.name;
    let (duty, shape) = match req.role {
        Role::Propose => (
            "State your initial proposal for the task.",
            r#"{"answer": "<your proposal, concise>", "reasoning": "<why>", "confidence": <0..1>, "evidence_ids": ["<ids of listed evidence you rely on>"], "evidence": [{"claim": "<new supporting fact>", "source": "<where it comes from>", "url": null}]}"#,
        ),
        Role::Critique => (
            "Critique each listed position of the other agents: name concrete issues, suggest improvements, and rate severity from 0 (nitpick) to 10 (fatal).",
            r#"{"critiques": [{"target": "<agent name>", "issues": ["..."], "suggestions": ["..."], "severity": <0..10>, "reasoning": "..."}]}"#,
        ),
        Role::Revise => (
            "Revise your position in the light of the critiques you received. Keep it, refine it, or adopt a better proposal from another agent if it is stronger.",
            r#"{"answer": "<your revised position>", "reasoning": "<what changed and why>", "confidence": <0..1>, "evidence_ids": ["..."]}"#,
        ),
        Role::Vote => (
            "Vote for the final position you find best (you may vote for your own). Choose exactly one of the candidates.",
            r#"{"choice": "<candidate agent name>", "confidence": <0..1>, "reasoning": "..."}"#,
        ),
        Role::Judge => (
            "You are the judge. Decide which final position wins. Choose exactly one of the candidates.",
            r#"{"choice": "<candidate agent name>", "confidence": <0..1>, "reasoning": "..."}"#,
        ),
    };
    format!(
        "You are agent \"{name}\" in a structured multi-agent debate. {duty}\n\
         Reply with one JSON object and nothing else (no Markdown), in this shape:\n{shape}"
    )
}

pub fn user_prompt(req: &AgentRequest<'_>) -> String {
    let mut out = String::with_capacity(2048);
    let _ = writeln!(out, "Task: {}", req.task);
    if let Some(ctx) = req.context.filter(|c| !c.trim().is_empty()) {
        let _ = writeln!(out, "\nContext:\n{}", excerpt(ctx, MAX_CONTEXT_CHARS));
    }
    let evidence = &req.transcript.evidence;
    if !evidence.is_empty() && matches!(req.role, Role::Propose | Role::Revise) {
        out.push_str("\nEvidence you may cite by id:\n");
        for e in evidence.iter().take(50) {
            let _ = writeln!(out, "- {}: {} ({})", e.id, excerpt(&e.claim, 300), e.source);
        }
    }
    match req.role {
        Role::Propose => {}
        Role::Critique => {
            let _ = writeln!(
                out,
                "\nPositions to critique (round {}):",
                req.round.saturating_sub(1)
            );
            for p in req.target_positions() {
                write_position(&mut out, &p.agent, &p.answer, &p.reasoning, p.confidence);
            }
        }
        Role::Revise => {
            if let Some(p) = req.own_position() {
                out.push_str("\nYour current position:\n");
                write_position(&mut out, &p.agent, &p.answer, &p.reasoning, p.confidence);
            }
            out.push_str("\nCritiques of your position:\n");
            let mut any = false;
            for c in req.critiques_received() {
                any = true;
                let _ = writeln!(
                    out,
                    "- from {} (severity {:.1}): issues: {}; suggestions: {}",
                    c.critic,
                    c.severity,
                    excerpt(&c.issues.join("; "), MAX_EXCERPT_CHARS),
                    excerpt(&c.suggestions.join("; "), MAX_EXCERPT_CHARS)
                );
            }
            if !any {
                out.push_str("(none)\n");
            }
            out.push_str("\nOther agents' current positions:\n");
            let me = req.agent.name.as_str();
            if let Some(round) = req.transcript.rounds.last() {
                for p in round.positions.iter().filter(|p| p.agent != me) {
                    write_position(&mut out, &p.agent, &p.answer, &p.reasoning, p.confidence);
                }
            }
        }
        Role::Vote | Role::Judge => {
            out.push_str("\nFinal positions (candidates):\n");
            for p in req.target_positions() {
                write_position(&mut out, &p.agent, &p.answer, &p.reasoning, p.confidence);
            }
            if req.role == Role::Judge && !req.transcript.votes.is_empty() {
                out.push_str("\nThe agents' advisory votes:\n");
                for v in &req.transcript.votes {
                    let _ = writeln!(
                        out,
                        "- {} voted for {} (confidence {:.2}): {}",
                        v.agent,
                        v.choice,
                        v.confidence,
                        excerpt(&v.reasoning, 300)
                    );
                }
            }
            let _ = writeln!(out, "\nCandidates: {}", req.targets.join(", "));
        }
    }
    out
}

fn write_position(out: &mut String, agent: &str, answer: &str, reasoning: &str, confidence: f64) {
    let _ = writeln!(
        out,
        "- {agent} (confidence {confidence:.2}): {}\n  reasoning: {}",
        excerpt(answer, MAX_EXCERPT_CHARS),
        excerpt(reasoning, MAX_EXCERPT_CHARS)
    );
}

fn excerpt(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
