//! Renderers: `format=summary` (text), `detailed` (Markdown), `visual` (Mermaid, or a standalone
//! HTML page with an inline SVG drawn here, so it needs no script or network to view).

use std::fmt::Write as _;

use aragora_core::debate::{ConsensusMode, Debate};

use crate::types::*;
use crate::util::{Num, Pct, clip};

fn mfs<'e>(e: &'e Explanation<'_>) -> Option<&'e Counterfactual<'e>> {
    e.counterfactuals
        .iter()
        .find(|c| c.kind == CounterfactualKind::MinimalFlipSet)
}

fn join(names: &[std::borrow::Cow<'_, str>]) -> String {
    match names.len() {
        0 => String::new(),
        1 => names[0].to_string(),
        n => format!(
            "{} and {}",
            names[..n - 1]
                .iter()
                .map(|s| s.as_ref())
                .collect::<Vec<_>>()
                .join(", "),
            names[n - 1]
        ),
    }
}

/// A few sentences: what was decided, how firmly, which votes mattered, what would flip it.
pub fn render_summary(e: &Explanation<'_>) -> String {
    let mut s = String::with_capacity(512);
    match (&e.winner, e.consensus_reached) {
        (None, _) => {
            let _ = write!(s, "“{}”: no decision was reached.", e.task);
        }
        (Some(w), true) if e.consensus_mode == ConsensusMode::Judge => {
            let _ = write!(
                s,
                "“{}”: the judge chose {w}'s position: “{}”. {} of the votes agreed; confidence {} (recounted).",
                e.task,
                clip(&e.conclusion, 160),
                Pct(e.consensus_strength),
                Num(e.confidence)
            );
        }
        (Some(w), true) => {
            let _ = write!(
                s,
                "“{}”: {w}'s position was adopted by consensus ({}, {} of the vote weight, threshold {}): “{}”. Confidence {} (recounted).",
                e.task,
                e.consensus_mode.as_str(),
                Pct(e.consensus_strength),
                Pct(e.threshold),
                clip(&e.conclusion, 160),
                Num(e.confidence)
            );
        }
        (Some(w), false) => {
            let _ = write!(
                s,
                "“{}”: no consensus ({}, threshold {}); {w} leads with {} of the vote weight. Confidence {} (recounted).",
                e.task,
                e.consensus_mode.as_str(),
                Pct(e.threshold),
                Pct(e.consensus_strength),
                Num(e.confidence)
            );
        }
    }
    let pivotal: Vec<std::borrow::Cow<'_, str>> = e
        .vote_pivots
        .iter()
        .filter(|p| p.pivotal)
        .map(|p| p.agent.clone())
        .collect();
    if !e.vote_pivots.is_empty() {
        if pivotal.is_empty() {
            s.push_str(" No single vote could change the outcome.");
        } else {
            let _ = write!(
                s,
                " Pivotal vote{}: {} (changing {} alone changes the outcome).",
                if pivotal.len() == 1 { "" } else { "s" },
                join(&pivotal),
                if pivotal.len() == 1 { "it" } else { "any one" }
            );
        }
    }
    if let Some(c) = mfs(e) {
        if c.changes_outcome {
            let _ = write!(
                s,
                " The outcome changes if {} vote{} ({}) go{} to {}{}.",
                c.agents.len(),
                if c.agents.len() == 1 { "" } else { "s" },
                join(&c.agents),
                if c.agents.len() == 1 { "es" } else { "" },
                c.new_choice.as_deref().unwrap_or("another choice"),
                if c.estimated { " (an upper bound)" } else { "" }
            );
        } else {
            let _ = write!(
                s,
                " No change of votes can change the outcome ({}).",
                c.condition.trim_start_matches("impossible: ")
            );
        }
    }
    if let Some(ev) = e.evidence_chain.first().filter(|x| x.relevance_score > 0.0) {
        let _ = write!(
            s,
            " Most relevant evidence: {} “{}” (relevance {}).",
            ev.id,
            clip(&ev.claim, 120),
            Num(ev.relevance_score)
        );
    }
    let movers = e.belief_changes.iter().filter(|b| b.answer_changed).count();
    if movers > 0 {
        let _ = write!(
            s,
            " Agents changed their answer {movers} time{} during the debate.",
            if movers == 1 { "" } else { "s" }
        );
    }
    if e.method.estimated {
        s.push_str(" Some numbers are estimates (see method).");
    }
    if !e.recorded.matches_recount {
        s.push_str(" Note: the stored outcome differs from the recount.");
    }
    s
}

/// Markdown table cell: no pipes or line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn opt(s: &Option<std::borrow::Cow<'_, str>>) -> String {
    s.as_deref().map_or_else(|| "—".to_string(), cell)
}

fn outcome_md(o: &OutcomeSnapshot<'_>) -> String {
    format!(
        "{}, {}, confidence {}",
        o.winner.as_deref().unwrap_or("no winner"),
        if o.consensus_reached {
            "consensus"
        } else {
            "no consensus"
        },
        Num(o.confidence)
    )
}

/// Every section of the explanation as Markdown.
pub fn render_markdown(e: &Explanation<'_>) -> String {
    let mut m = String::with_capacity(4096);
    let _ = writeln!(m, "# Decision {}\n", e.decision_id);
    let _ = writeln!(m, "**Debate:** {} — {}\n", e.debate_id, cell(&e.task));
    let _ = writeln!(m, "{}\n", render_summary(e));
    let _ = writeln!(m, "## Outcome\n");
    let _ = writeln!(m, "| | |\n|---|---|");
    let _ = writeln!(m, "| Winner | {} |", opt(&e.winner));
    let _ = writeln!(m, "| Conclusion | {} |", cell(&e.conclusion));
    let _ = writeln!(m, "| Consensus reached | {} |", e.consensus_reached);
    let _ = writeln!(
        m,
        "| Mode / threshold | {} / {} |",
        e.consensus_mode.as_str(),
        Num(e.threshold)
    );
    let _ = writeln!(m, "| Consensus strength | {} |", Pct(e.consensus_strength));
    let _ = writeln!(m, "| Margin | {} |", Pct(e.margin));
    let _ = writeln!(m, "| Confidence (recounted) | {} |", Num(e.confidence));
    let _ = writeln!(
        m,
        "| Recorded | {} {} {} ({}) |\n",
        opt(&e.recorded.winner),
        e.recorded.consensus_reached,
        Num(e.recorded.confidence),
        if e.recorded.matches_recount {
            "matches the recount"
        } else {
            "differs from the recount"
        }
    );
    if !e.tally.is_empty() {
        let _ = writeln!(
            m,
            "### Tally\n\n| Choice | Votes | Weight | Share | Mean confidence |\n|---|---:|---:|---:|---:|"
        );
        for t in &e.tally {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                cell(&t.choice),
                t.votes,
                Num(t.weight),
                Pct(t.share),
                Num(t.mean_confidence)
            );
        }
        m.push('\n');
    }
    if !e.confidence_attribution.is_empty() {
        let _ = writeln!(
            m,
            "## Confidence attribution\n\nContributions add up to the confidence ({}).\n\n| Factor | Agent | Contribution |\n|---|---|---:|",
            Num(e.confidence)
        );
        for f in &e.confidence_attribution {
            let name = match f.factor {
                FactorKind::Baseline => "baseline (unanimous, fully confident)",
                FactorKind::Opposition => "opposition (voted for another choice)",
                FactorKind::Doubt => "doubt (supporter's 1 − confidence)",
            };
            let _ = writeln!(m, "| {name} | {} | {:+.4} |", opt(&f.agent), f.contribution);
        }
        m.push('\n');
    }
    if !e.vote_pivots.is_empty() {
        let _ = writeln!(
            m,
            "## Vote pivots\n\n| Agent | Choice | Weight | Confidence | Influence (Banzhaf) | Pivotal | Removal changes | Flip changes | Flip to | Position changed |\n|---|---|---:|---:|---:|---|---|---|---|---|"
        );
        for p in &e.vote_pivots {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&p.agent),
                cell(&p.choice),
                Num(p.weight),
                Num(p.confidence),
                Num(p.influence_score),
                if p.pivotal { "**yes**" } else { "no" },
                p.removal_changes_outcome,
                p.flip_changes_outcome,
                opt(&p.flip_to),
                p.position_changed
            );
        }
        m.push('\n');
    }
    if !e.counterfactuals.is_empty() {
        let _ = writeln!(m, "## Counterfactuals\n");
        for c in &e.counterfactuals {
            let _ = writeln!(
                m,
                "- **{}** — {}: {} → {}{}{} _(method: {}{})_",
                c.kind.as_str(),
                cell(&c.condition),
                outcome_md(&c.outcome_before),
                outcome_md(&c.outcome_after),
                if c.changes_outcome {
                    " — **changes the outcome**"
                } else {
                    " — outcome unchanged"
                },
                if c.evidence_ids.is_empty() {
                    String::new()
                } else {
                    format!(" (evidence: {})", join(&c.evidence_ids))
                },
                c.method,
                if c.estimated { ", estimated" } else { "" }
            );
        }
        m.push('\n');
    }
    if !e.evidence_chain.is_empty() {
        let _ = writeln!(
            m,
            "## Evidence chain\n\n| Id | Claim | Source | Cited by | Citations | Cited by winner | Relevance |\n|---|---|---|---|---:|---|---:|"
        );
        for ev in &e.evidence_chain {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell(&ev.id),
                cell(&ev.claim),
                cell(&ev.source),
                cell(&join(&ev.cited_by)),
                ev.citations,
                ev.cited_by_winner,
                Num(ev.relevance_score)
            );
        }
        m.push('\n');
    }
    if !e.reasoning_chain.is_empty() {
        let _ = writeln!(m, "## Reasoning chain\n");
        for s in &e.reasoning_chain {
            let round = s.round.map_or_else(String::new, |r| format!("round {r}, "));
            let _ = writeln!(
                m,
                "{}. _{}{:?}_ — {}",
                s.step,
                round,
                s.kind,
                cell(&s.summary)
            );
        }
        m.push('\n');
    }
    if !e.belief_changes.is_empty() {
        let _ = writeln!(m, "## Belief changes\n");
        for b in &e.belief_changes {
            let trigger = b.trigger.as_ref().map_or_else(
                || " (no critique preceded it)".to_string(),
                |t| {
                    format!(
                        " after {}'s critique (round {}, severity {}): “{}”",
                        t.critic,
                        t.round,
                        Num(t.severity),
                        cell(&t.issue)
                    )
                },
            );
            if b.answer_changed {
                let _ = writeln!(
                    m,
                    "- Round {}: **{}** changed from “{}” ({}) to “{}” ({}){}",
                    b.round,
                    b.agent,
                    cell(&b.prior),
                    Num(b.prior_confidence),
                    cell(&b.posterior),
                    Num(b.posterior_confidence),
                    trigger
                );
            } else {
                let _ = writeln!(
                    m,
                    "- Round {}: **{}** kept “{}”, confidence {} → {}{}",
                    b.round,
                    b.agent,
                    cell(&b.posterior),
                    Num(b.prior_confidence),
                    Num(b.posterior_confidence),
                    trigger
                );
            }
        }
        m.push('\n');
    }
    let me = &e.method;
    let p = &me.pivotality;
    let _ = writeln!(m, "## Method ({})\n", me.version);
    let _ = writeln!(m, "- Confidence: {}", me.confidence);
    let _ = write!(
        m,
        "- Pivotality: {} index, {} (quota {} of total weight {}){}",
        p.index,
        p.algorithm,
        Num(p.quota),
        Num(p.total_weight),
        if p.estimated {
            ", **estimated**"
        } else {
            ", exact"
        }
    );
    if let (Some(n), Some(seed)) = (p.samples, p.seed) {
        let _ = write!(
            m,
            " — {n} samples, seed {seed}, max standard error {}",
            Num(p.standard_error.unwrap_or(0.0))
        );
    }
    m.push('\n');
    let _ = writeln!(
        m,
        "- Minimal flip set: {}{}",
        me.minimal_flip_set.algorithm,
        if me.minimal_flip_set.estimated {
            " (estimated)"
        } else {
            ""
        }
    );
    let _ = writeln!(m, "- Counterfactuals: {}", me.counterfactuals);
    let _ = writeln!(m, "- Evidence relevance: {}", me.evidence_relevance);
    let _ = writeln!(m, "- Evidence ablation: {}", me.evidence_ablation);
    let _ = writeln!(m, "- Belief changes: {}", me.belief_changes);
    if !e.warnings.is_empty() {
        let _ = writeln!(m, "\n## Warnings\n");
        for w in &e.warnings {
            let _ = writeln!(m, "- {}", cell(w));
        }
    }
    m
}

/// Mermaid label text inside double quotes.
fn mer(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Names in order of first appearance (agents, then positions, voters and choices).
fn people(d: &Debate) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for a in &d.agents {
        if !v.contains(&a.name.as_str()) {
            v.push(&a.name);
        }
    }
    for r in &d.rounds {
        for p in &r.positions {
            if !v.contains(&p.agent.as_str()) {
                v.push(&p.agent);
            }
        }
    }
    for x in &d.votes {
        for n in [&x.agent, &x.choice] {
            if !v.contains(&n.as_str()) {
                v.push(n);
            }
        }
    }
    v
}

/// A Mermaid flowchart of proposals, critiques (dashed), revisions, votes and the decision.
pub fn render_mermaid(d: &Debate, e: &Explanation<'_>) -> String {
    let names = people(d);
    let idx = |n: &str| names.iter().position(|x| *x == n).unwrap_or(0);
    let mut m = String::with_capacity(2048);
    m.push_str("flowchart LR\n");
    let mut last: Vec<Option<(usize, String)>> = vec![None; names.len()];
    for (ri, r) in d.rounds.iter().enumerate() {
        let _ = writeln!(m, "  subgraph R{ri}[\"Round {}\"]", r.round);
        for p in &r.positions {
            let a = idx(&p.agent);
            let _ = writeln!(
                m,
                "    p{ri}_{a}[\"{}: {}<br/>confidence {}\"]",
                mer(&p.agent),
                mer(&clip(&p.answer, 60)),
                Num(p.confidence)
            );
        }
        m.push_str("  end\n");
        for p in &r.positions {
            let a = idx(&p.agent);
            if let Some((pri, prev)) = &last[a] {
                let label = if prev.trim() == p.answer.trim() {
                    "kept"
                } else {
                    "revised"
                };
                let _ = writeln!(m, "  p{pri}_{a} -->|{label}| p{ri}_{a}");
            }
            last[a] = Some((ri, p.answer.clone()));
        }
        for c in &r.critiques {
            let (ca, ta) = (idx(&c.critic), idx(&c.target));
            let critic_node = if r.positions.iter().any(|p| p.agent == c.critic) {
                format!("p{ri}_{ca}")
            } else {
                format!("a{ca}")
            };
            if !r.positions.iter().any(|p| p.agent == c.target) {
                continue;
            }
            let _ = writeln!(
                m,
                "  {critic_node} -.->|\"critique {}\"| p{ri}_{ta}",
                Num(c.severity)
            );
        }
    }
    let pivotal = |i: usize| e.vote_pivots.get(i).is_some_and(|p| p.pivotal);
    for (i, v) in d.votes.iter().enumerate() {
        let a = idx(&v.agent);
        let _ = writeln!(
            m,
            "  v{i}([\"{} votes {} ({})\"])",
            mer(&v.agent),
            mer(&v.choice),
            Num(v.confidence)
        );
        if let Some((ri, _)) = &last[a] {
            let _ = writeln!(m, "  p{ri}_{a} --> v{i}");
        }
        let _ = writeln!(m, "  v{i} --> dec");
        if pivotal(i) {
            let _ = writeln!(m, "  class v{i} pivotal");
        }
    }
    let decision = match &e.winner {
        Some(w) => format!(
            "Decision: {}<br/>{}, confidence {}",
            mer(w),
            if e.consensus_reached {
                "consensus reached"
            } else {
                "no consensus"
            },
            Num(e.confidence)
        ),
        None => "No decision".to_string(),
    };
    let _ = writeln!(m, "  dec{{{{\"{decision}\"}}}}");
    if let Some(w) = &e.winner {
        let a = idx(w);
        if let Some((ri, _)) = &last[a] {
            let _ = writeln!(m, "  class p{ri}_{a} winner");
        }
    }
    m.push_str("  classDef winner stroke:#1a7f37,stroke-width:3px\n");
    m.push_str("  classDef pivotal stroke:#cf222e,stroke-width:3px\n");
    m
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The debate graph as a standalone SVG document: one column per round, one row per agent, then
/// votes and decision (the same drawing [`render_html`] embeds).
pub fn render_svg(d: &Debate, e: &Explanation<'_>) -> String {
    let names = people(d);
    let idx = |n: &str| names.iter().position(|x| *x == n).unwrap_or(0);
    let (col_w, row_h, node_w, node_h, left, top) = (250.0, 70.0, 210.0, 52.0, 20.0, 40.0);
    let rounds = d.rounds.len();
    let vote_x = left + rounds as f64 * col_w;
    let dec_x = vote_x + 200.0;
    let width = dec_x + 240.0;
    let height = top + names.len().max(1) as f64 * row_h + 20.0;
    let pos = |ri: usize, a: usize| (left + ri as f64 * col_w, top + a as f64 * row_h);
    let mut s = String::with_capacity(8192);
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-family="sans-serif" font-size="11" role="img" aria-label="debate graph">
<defs><marker id="arr" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>
<marker id="arrc" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#cf222e"/></marker></defs>
"##
    );
    for (ri, r) in d.rounds.iter().enumerate() {
        let (x, _) = pos(ri, 0);
        let _ = writeln!(
            s,
            r##"<text x="{}" y="20" font-weight="bold">Round {}</text>"##,
            x, r.round
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{vote_x}" y="20" font-weight="bold">Votes</text>"##
    );
    let winner_final = e.winner.as_deref().and_then(|w| {
        d.rounds
            .iter()
            .enumerate()
            .rev()
            .find(|(_, r)| r.positions.iter().any(|p| p.agent == w))
            .map(|(ri, _)| (ri, idx(w)))
    });
    let mut last: Vec<Option<(usize, &str)>> = vec![None; names.len()];
    for (ri, r) in d.rounds.iter().enumerate() {
        // Revisions.
        for p in &r.positions {
            let a = idx(&p.agent);
            if let Some((pri, prev)) = last[a] {
                let (x0, y0) = pos(pri, a);
                let (x1, _) = pos(ri, a);
                let changed = prev.trim() != p.answer.trim();
                let _ = writeln!(
                    s,
                    r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#555" stroke-width="{}" marker-end="url(#arr)"/>"##,
                    x0 + node_w,
                    y0 + node_h / 2.0,
                    x1 - 2.0,
                    y0 + node_h / 2.0,
                    if changed { 2.5 } else { 1.0 }
                );
            }
            last[a] = Some((ri, &p.answer));
        }
        // Critiques: arcs on the right edge of the column.
        for c in &r.critiques {
            if !r.positions.iter().any(|p| p.agent == c.target) {
                continue;
            }
            let (ca, ta) = (idx(&c.critic), idx(&c.target));
            let (x, y0) = pos(ri, ca);
            let (_, y1) = pos(ri, ta);
            let bend = x + node_w + 10.0 + (y1 - y0).abs() * 0.12;
            let _ = writeln!(
                s,
                r##"<path d="M{},{} C{},{} {},{} {},{}" fill="none" stroke="#cf222e" stroke-dasharray="4 3" stroke-width="{}" marker-end="url(#arrc)"><title>{} critiques {} (severity {})</title></path>"##,
                x + node_w,
                y0 + node_h * 0.3,
                bend,
                y0,
                bend,
                y1,
                x + node_w,
                y1 + node_h * 0.7,
                (c.severity / 4.0).clamp(0.6, 2.5),
                esc(&c.critic),
                esc(&c.target),
                Num(c.severity)
            );
        }
        for p in &r.positions {
            let a = idx(&p.agent);
            let (x, y) = pos(ri, a);
            let is_winner = winner_final == Some((ri, a));
            let _ = writeln!(
                s,
                r##"<g><rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="6" fill="{}" stroke="{}" stroke-width="{}"/><text x="{}" y="{}" font-weight="bold">{} ({})</text><text x="{}" y="{}">{}</text><title>{}</title></g>"##,
                if is_winner { "#dafbe1" } else { "#f6f8fa" },
                if is_winner { "#1a7f37" } else { "#8c959f" },
                if is_winner { 2.5 } else { 1.0 },
                x + 8.0,
                y + 18.0,
                esc(&p.agent),
                Num(p.confidence),
                x + 8.0,
                y + 36.0,
                esc(&clip(&p.answer, 34)),
                esc(&p.answer)
            );
        }
    }
    let (dec_y, dec_h) = (top + (names.len().max(1) as f64 * row_h) / 2.0 - 35.0, 70.0);
    for (i, v) in d.votes.iter().enumerate() {
        let a = idx(&v.agent);
        let (_, y) = pos(0, a);
        let pivotal = e.vote_pivots.get(i).is_some_and(|p| p.pivotal);
        let supports = e.winner.as_deref() == Some(v.choice.as_str());
        if let Some((ri, _)) = last[a] {
            let (x0, y0) = pos(ri, a);
            let _ = writeln!(
                s,
                r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#8c959f" stroke-dasharray="2 2"/>"##,
                x0 + node_w,
                y0 + node_h / 2.0,
                vote_x,
                y + 18.0
            );
        }
        let _ = writeln!(
            s,
            r##"<g><rect x="{vote_x}" y="{}" width="150" height="36" rx="18" fill="#fff" stroke="{}" stroke-width="{}"/><text x="{}" y="{}">→ {} ({})</text><title>{} votes {}{}</title></g>"##,
            y,
            if pivotal { "#cf222e" } else { "#8c959f" },
            if pivotal { 2.5 } else { 1.0 },
            vote_x + 10.0,
            y + 22.0,
            esc(&clip(&v.choice, 16)),
            Num(v.confidence),
            esc(&v.agent),
            esc(&v.choice),
            if pivotal { " (pivotal)" } else { "" }
        );
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}" marker-end="url(#arr)"/>"##,
            vote_x + 150.0,
            y + 18.0,
            dec_x - 2.0,
            dec_y + dec_h / 2.0,
            if supports { "#1a7f37" } else { "#8c959f" },
            if supports { 1.8 } else { 0.8 }
        );
    }
    let headline = match &e.winner {
        Some(w) => format!("Decision: {}", esc(&clip(w, 24))),
        None => "No decision".to_string(),
    };
    let _ = writeln!(
        s,
        r##"<g><rect x="{dec_x}" y="{dec_y}" width="220" height="{dec_h}" rx="8" fill="{}" stroke="#1f2328" stroke-width="2"/><text x="{}" y="{}" font-weight="bold" font-size="13">{headline}</text><text x="{}" y="{}">{}, confidence {}</text></g>"##,
        if e.consensus_reached {
            "#dafbe1"
        } else {
            "#fff8c5"
        },
        dec_x + 10.0,
        dec_y + 26.0,
        dec_x + 10.0,
        dec_y + 48.0,
        if e.consensus_reached {
            "consensus reached"
        } else {
            "no consensus"
        },
        Num(e.confidence)
    );
    s.push_str("</svg>\n");
    s
}

/// A standalone HTML page: summary, an inline SVG of the debate graph (viewable offline), the
/// explanation's sections, and the Mermaid source for tools that render it.
pub fn render_html(d: &Debate, e: &Explanation<'_>) -> String {
    let mut h = String::with_capacity(16384);
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Decision {id} — {task}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1f2328}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}}
.yes{{color:#cf222e;font-weight:bold}}.graph{{overflow-x:auto;border:1px solid #d0d7de;padding:8px}}pre{{background:#f6f8fa;padding:1em;overflow-x:auto}}</style>
</head><body>
<h1>{task}</h1>
<p><small>Decision {id} · debate {debate}</small></p>
<p>{summary}</p>
"#,
        id = esc(&e.decision_id),
        task = esc(&e.task),
        debate = esc(&e.debate_id),
        summary = esc(&render_summary(e)),
    );
    h.push_str("<h2>Debate graph</h2>\n<div class=\"graph\">\n");
    h.push_str(&render_svg(d, e));
    h.push_str("</div>\n<p><small>Boxes: positions per round (green: the adopted one). Solid arrows: revisions (thick: the answer changed). Dashed red: critiques. Pills: votes (red border: pivotal).</small></p>\n");
    if !e.vote_pivots.is_empty() {
        h.push_str("<h2>Vote pivots</h2>\n<table><tr><th>Agent</th><th>Choice</th><th>Weight</th><th>Confidence</th><th>Influence (Banzhaf)</th><th>Pivotal</th><th>Removal changes</th><th>Flip changes</th><th>Flip to</th></tr>\n");
        for p in &e.vote_pivots {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.agent),
                esc(&p.choice),
                Num(p.weight),
                Num(p.confidence),
                Num(p.influence_score),
                if p.pivotal { "yes" } else { "no" },
                if p.pivotal { "yes" } else { "no" },
                p.removal_changes_outcome,
                p.flip_changes_outcome,
                esc(p.flip_to.as_deref().unwrap_or("—"))
            );
        }
        h.push_str("</table>\n");
    }
    if !e.counterfactuals.is_empty() {
        h.push_str("<h2>Counterfactuals</h2>\n<table><tr><th>Kind</th><th>Condition</th><th>Before</th><th>After</th><th>Changes outcome</th><th>Method</th></tr>\n");
        for c in &e.counterfactuals {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}{}</td></tr>",
                c.kind.as_str(),
                esc(&c.condition),
                esc(&outcome_md(&c.outcome_before)),
                esc(&outcome_md(&c.outcome_after)),
                if c.changes_outcome { "yes" } else { "no" },
                if c.changes_outcome { "yes" } else { "no" },
                esc(&c.method),
                if c.estimated { " (estimated)" } else { "" }
            );
        }
        h.push_str("</table>\n");
    }
    if !e.evidence_chain.is_empty() {
        h.push_str("<h2>Evidence</h2>\n<table><tr><th>Id</th><th>Claim</th><th>Source</th><th>Cited by</th><th>Relevance</th></tr>\n");
        for ev in &e.evidence_chain {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&ev.id),
                esc(&ev.claim),
                esc(&ev.source),
                esc(&join(&ev.cited_by)),
                Num(ev.relevance_score)
            );
        }
        h.push_str("</table>\n");
    }
    if !e.reasoning_chain.is_empty() {
        h.push_str("<h2>Reasoning chain</h2>\n<ol>\n");
        for s in &e.reasoning_chain {
            let _ = writeln!(h, "<li><b>{:?}</b> {}</li>", s.kind, esc(&s.summary));
        }
        h.push_str("</ol>\n");
    }
    if !e.belief_changes.is_empty() {
        h.push_str("<h2>Belief changes</h2>\n<ul>\n");
        for b in &e.belief_changes {
            let _ = writeln!(
                h,
                "<li>Round {}: <b>{}</b> “{}” ({}) → “{}” ({}){}</li>",
                b.round,
                esc(&b.agent),
                esc(&b.prior),
                Num(b.prior_confidence),
                esc(&b.posterior),
                Num(b.posterior_confidence),
                b.trigger.as_ref().map_or_else(String::new, |t| format!(
                    " after {}'s critique (severity {}): {}",
                    esc(&t.critic),
                    Num(t.severity),
                    esc(&t.issue)
                ))
            );
        }
        h.push_str("</ul>\n");
    }
    let _ = writeln!(
        h,
        "<h2>Method</h2>\n<p>{} · pivotality: {} ({}) · minimal flip set: {}{}</p>",
        esc(&e.method.version),
        esc(&e.method.pivotality.algorithm),
        if e.method.pivotality.estimated {
            "estimated"
        } else {
            "exact"
        },
        esc(&e.method.minimal_flip_set.algorithm),
        if e.method.estimated {
            " · <b>some numbers are estimated</b>"
        } else {
            ""
        }
    );
    h.push_str("<details><summary>Mermaid source</summary>\n<pre class=\"mermaid\">");
    h.push_str(&esc(&render_mermaid(d, e)));
    h.push_str("</pre></details>\n</body></html>\n");
    h
}
