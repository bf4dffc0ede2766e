//! A dedicated JSON writer for [`Explanation`]: byte-for-byte the output of
//! `serde_json::to_string(&explanation)` (pinned by tests against serde_json on thousands of
//! explanations, including odd strings), about twice as fast.
//!
//! Why: serializing the ~8 KB explanation through serde took more than half the time of
//! build + JSON. Most of it is string escaping, which serde_json does one byte at a time; here
//! eight bytes are checked at once (SWAR) and unescaped runs are copied whole. Numbers use the
//! same `zmij`/`itoa` formatting serde_json uses. Field order and skip rules follow the serde
//! derives in `types.rs`; a field added there must be added here (the equality tests fail
//! otherwise).

use std::borrow::Cow;

use crate::types::*;

/// The explanation as JSON, identical to `serde_json::to_string(e)`.
pub fn to_json(e: &Explanation<'_>) -> String {
    // Generous, so the buffer never grows (growth copies cost more than unused capacity).
    let items = e.vote_pivots.len()
        + e.counterfactuals.len()
        + e.reasoning_chain.len()
        + e.belief_changes.len()
        + e.evidence_chain.len();
    let mut w = Writer {
        out: String::with_capacity(4096 + 1024 * items),
    };
    w.explanation(e);
    w.out
}

/// Appends the explanation's JSON to `out`.
pub fn write_json(e: &Explanation<'_>, out: &mut String) {
    let mut w = Writer {
        out: std::mem::take(out),
    };
    w.explanation(e);
    *out = w.out;
}

struct Writer {
    out: String,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// True when one of the 8 bytes is a control character, `"` or `\` (exact: the borrow tricks
/// only give false positives above a true one).
#[inline]
fn needs_escape(w: u64) -> bool {
    let ctrl = w.wrapping_sub(LO * 0x20) & !w;
    let q = w ^ (LO * u64::from(b'"'));
    let quote = q.wrapping_sub(LO) & !q;
    let b = w ^ (LO * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LO) & !b;
    (ctrl | quote | backslash) & HI != 0
}

#[inline]
fn escape_of(b: u8) -> Option<&'static str> {
    match b {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        0x00..=0x1f => Some(CONTROL[b as usize]),
        _ => None,
    }
}

/// `\u00XX` for every control character (lowercase hex, as serde_json writes them).
const CONTROL: [&str; 32] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b",
    "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012",
    "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a",
    "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

impl Writer {
    #[inline]
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn str(&mut self, s: &str) {
        self.out.push('"');
        let b = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i + 8 <= b.len() {
            let word = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
            if needs_escape(word) {
                for j in i..i + 8 {
                    if let Some(esc) = escape_of(b[j]) {
                        // Escaped bytes are ASCII, so these are char boundaries.
                        self.out.push_str(&s[start..j]);
                        self.out.push_str(esc);
                        start = j + 1;
                    }
                }
            }
            i += 8;
        }
        for j in i..b.len() {
            if let Some(esc) = escape_of(b[j]) {
                self.out.push_str(&s[start..j]);
                self.out.push_str(esc);
                start = j + 1;
            }
        }
        self.out.push_str(&s[start..]);
        self.out.push('"');
    }

    fn f64(&mut self, v: f64) {
        if v.is_finite() {
            let mut buf = zmij::Buffer::new();
            self.out.push_str(buf.format_finite(v));
        } else {
            self.out.push_str("null");
        }
    }

    fn int<I: itoa::Integer>(&mut self, v: I) {
        let mut buf = itoa::Buffer::new();
        self.out.push_str(buf.format(v));
    }

    fn bool(&mut self, v: bool) {
        self.raw(if v { "true" } else { "false" });
    }

    fn opt_str(&mut self, v: &Option<Cow<'_, str>>) {
        match v {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    fn strs(&mut self, v: &[Cow<'_, str>]) {
        self.out.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.str(s);
        }
        self.out.push(']');
    }

    /// `,"key":` (or `"key":` for the first field).
    #[inline]
    fn key(&mut self, first: bool, k: &str) {
        if !first {
            self.out.push(',');
        }
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.out.push('[');
        for (i, it) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            f(self, it);
        }
        self.out.push(']');
    }

    fn explanation(&mut self, e: &Explanation<'_>) {
        self.out.push('{');
        self.key(true, "decision_id");
        self.str(&e.decision_id);
        self.key(false, "debate_id");
        self.str(&e.debate_id);
        self.key(false, "task");
        self.str(&e.task);
        self.key(false, "conclusion");
        self.str(&e.conclusion);
        self.key(false, "confidence");
        self.f64(e.confidence);
        self.key(false, "consensus_reached");
        self.bool(e.consensus_reached);
        self.key(false, "winner");
        self.opt_str(&e.winner);
        self.key(false, "consensus_mode");
        self.str(e.consensus_mode.as_str());
        self.key(false, "threshold");
        self.f64(e.threshold);
        self.key(false, "consensus_strength");
        self.f64(e.consensus_strength);
        self.key(false, "margin");
        self.f64(e.margin);
        self.key(false, "tally");
        self.list(&e.tally, |w, t| w.tally(t));
        self.key(false, "recorded");
        self.recorded(&e.recorded);
        self.key(false, "evidence_chain");
        self.list(&e.evidence_chain, |w, x| w.evidence(x));
        self.key(false, "vote_pivots");
        self.list(&e.vote_pivots, |w, x| w.pivot(x));
        self.key(false, "counterfactuals");
        self.list(&e.counterfactuals, |w, x| w.counterfactual(x));
        self.key(false, "reasoning_chain");
        self.list(&e.reasoning_chain, |w, x| w.step(x));
        self.key(false, "belief_changes");
        self.list(&e.belief_changes, |w, x| w.belief(x));
        self.key(false, "confidence_attribution");
        self.list(&e.confidence_attribution, |w, x| w.factor(x));
        self.key(false, "method");
        self.method(&e.method);
        if !e.warnings.is_empty() {
            self.key(false, "warnings");
            self.list(&e.warnings, |w, s| w.str(s));
        }
        self.out.push('}');
    }

    fn tally(&mut self, t: &TallyEntry<'_>) {
        self.out.push('{');
        self.key(true, "choice");
        self.str(&t.choice);
        self.key(false, "votes");
        self.int(t.votes);
        self.key(false, "weight");
        self.f64(t.weight);
        self.key(false, "share");
        self.f64(t.share);
        self.key(false, "mean_confidence");
        self.f64(t.mean_confidence);
        self.out.push('}');
    }

    fn recorded(&mut self, r: &RecordedOutcome<'_>) {
        self.out.push('{');
        self.key(true, "winner");
        self.opt_str(&r.winner);
        self.key(false, "consensus_reached");
        self.bool(r.consensus_reached);
        self.key(false, "confidence");
        self.f64(r.confidence);
        self.key(false, "matches_recount");
        self.bool(r.matches_recount);
        self.out.push('}');
    }

    fn evidence(&mut self, x: &EvidenceLink<'_>) {
        self.out.push('{');
        self.key(true, "id");
        self.str(&x.id);
        self.key(false, "claim");
        self.str(&x.claim);
        self.key(false, "source");
        self.str(&x.source);
        self.key(false, "cited_by");
        self.strs(&x.cited_by);
        self.key(false, "citations");
        self.int(x.citations);
        self.key(false, "cited_by_winner");
        self.bool(x.cited_by_winner);
        self.key(false, "relevance_score");
        self.f64(x.relevance_score);
        self.out.push('}');
    }

    fn pivot(&mut self, p: &VotePivot<'_>) {
        self.out.push('{');
        self.key(true, "agent");
        self.str(&p.agent);
        self.key(false, "choice");
        self.str(&p.choice);
        self.key(false, "weight");
        self.f64(p.weight);
        self.key(false, "confidence");
        self.f64(p.confidence);
        self.key(false, "influence_score");
        self.f64(p.influence_score);
        self.key(false, "pivotal");
        self.bool(p.pivotal);
        self.key(false, "position_changed");
        self.bool(p.position_changed);
        self.key(false, "removal_changes_outcome");
        self.bool(p.removal_changes_outcome);
        self.key(false, "flip_changes_outcome");
        self.bool(p.flip_changes_outcome);
        self.key(false, "flip_to");
        self.opt_str(&p.flip_to);
        self.out.push('}');
    }

    fn outcome(&mut self, o: &OutcomeSnapshot<'_>) {
        self.out.push('{');
        self.key(true, "winner");
        self.opt_str(&o.winner);
        self.key(false, "consensus_reached");
        self.bool(o.consensus_reached);
        self.key(false, "confidence");
        self.f64(o.confidence);
        self.key(false, "margin");
        self.f64(o.margin);
        self.out.push('}');
    }

    fn counterfactual(&mut self, c: &Counterfactual<'_>) {
        self.out.push('{');
        self.key(true, "kind");
        self.str(c.kind.as_str());
        self.key(false, "condition");
        self.str(&c.condition);
        self.key(false, "agents");
        self.strs(&c.agents);
        self.key(false, "evidence_ids");
        self.strs(&c.evidence_ids);
        if !c.vote_indices.is_empty() {
            self.key(false, "vote_indices");
            self.list(&c.vote_indices, |w, i| w.int(*i));
        }
        if let Some(choice) = &c.new_choice {
            self.key(false, "new_choice");
            self.str(choice);
        }
        if let Some(t) = c.new_threshold {
            self.key(false, "new_threshold");
            self.f64(t);
        }
        self.key(false, "outcome_before");
        self.outcome(&c.outcome_before);
        self.key(false, "outcome_after");
        self.outcome(&c.outcome_after);
        self.key(false, "changes_outcome");
        self.bool(c.changes_outcome);
        self.key(false, "method");
        self.str(&c.method);
        self.key(false, "estimated");
        self.bool(c.estimated);
        self.out.push('}');
    }

    fn step(&mut self, s: &ReasoningStep<'_>) {
        self.out.push('{');
        self.key(true, "step");
        self.int(s.step);
        self.key(false, "round");
        match s.round {
            Some(r) => self.int(r),
            None => self.raw("null"),
        }
        self.key(false, "kind");
        self.str(match s.kind {
            StepKind::Proposal => "proposal",
            StepKind::Critique => "critique",
            StepKind::Revision => "revision",
            StepKind::Vote => "vote",
            StepKind::Decision => "decision",
        });
        self.key(false, "agent");
        self.opt_str(&s.agent);
        self.key(false, "summary");
        self.str(&s.summary);
        self.out.push('}');
    }

    fn belief(&mut self, b: &BeliefChange<'_>) {
        self.out.push('{');
        self.key(true, "agent");
        self.str(&b.agent);
        self.key(false, "round");
        self.int(b.round);
        self.key(false, "prior");
        self.str(&b.prior);
        self.key(false, "posterior");
        self.str(&b.posterior);
        self.key(false, "prior_confidence");
        self.f64(b.prior_confidence);
        self.key(false, "posterior_confidence");
        self.f64(b.posterior_confidence);
        self.key(false, "answer_changed");
        self.bool(b.answer_changed);
        self.key(false, "trigger");
        match &b.trigger {
            None => self.raw("null"),
            Some(t) => {
                self.out.push('{');
                self.key(true, "critic");
                self.str(&t.critic);
                self.key(false, "round");
                self.int(t.round);
                self.key(false, "severity");
                self.f64(t.severity);
                self.key(false, "issue");
                self.str(&t.issue);
                self.out.push('}');
            }
        }
        self.out.push('}');
    }

    fn factor(&mut self, f: &ConfidenceFactor<'_>) {
        self.out.push('{');
        self.key(true, "factor");
        self.str(match f.factor {
            FactorKind::Baseline => "baseline",
            FactorKind::Opposition => "opposition",
            FactorKind::Doubt => "doubt",
        });
        self.key(false, "agent");
        self.opt_str(&f.agent);
        self.key(false, "contribution");
        self.f64(f.contribution);
        self.out.push('}');
    }

    fn method(&mut self, m: &Method) {
        self.out.push('{');
        self.key(true, "version");
        self.str(&m.version);
        self.key(false, "confidence");
        self.str(&m.confidence);
        self.key(false, "pivotality");
        let p = &m.pivotality;
        self.out.push('{');
        self.key(true, "index");
        self.str(&p.index);
        self.key(false, "algorithm");
        self.str(&p.algorithm);
        self.key(false, "quota");
        self.f64(p.quota);
        self.key(false, "total_weight");
        self.f64(p.total_weight);
        self.key(false, "estimated");
        self.bool(p.estimated);
        if let Some(s) = p.samples {
            self.key(false, "samples");
            self.int(s);
        }
        if let Some(s) = p.seed {
            self.key(false, "seed");
            self.int(s);
        }
        if let Some(s) = p.standard_error {
            self.key(false, "standard_error");
            self.f64(s);
        }
        self.out.push('}');
        self.key(false, "minimal_flip_set");
        self.out.push('{');
        self.key(true, "algorithm");
        self.str(&m.minimal_flip_set.algorithm);
        self.key(false, "estimated");
        self.bool(m.minimal_flip_set.estimated);
        self.out.push('}');
        self.key(false, "counterfactuals");
        self.str(&m.counterfactuals);
        self.key(false, "evidence_relevance");
        self.str(&m.evidence_relevance);
        self.key(false, "evidence_ablation");
        self.str(&m.evidence_ablation);
        self.key(false, "belief_changes");
        self.str(&m.belief_changes);
        self.key(false, "estimated");
        self.bool(m.estimated);
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        let mut all = String::new();
        for c in 0u8..=0x7f {
            all.push(c as char);
        }
        let cases = [
            String::new(),
            "plain".into(),
            "exactly8".into(),
            "quote\" and back\\slash".into(),
            "tab\tnew\nline\r\u{8}\u{c}\u{1}\u{1f}\u{7f}".into(),
            "ünïcödé — “quotes” 💥 and \"escapes\" after multibyte".into(),
            all.clone(),
            all.repeat(3),
            "x".repeat(63) + "\"",
        ];
        for s in cases {
            let mut w = Writer { out: String::new() };
            w.str(&s);
            assert_eq!(w.out, serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn swar_check_is_exact() {
        // Every single byte in every lane, on a background of harmless bytes.
        for lane in 0..8 {
            for b in 0u8..=255 {
                let mut bytes = [b'a'; 8];
                bytes[lane] = b;
                let w = u64::from_le_bytes(bytes);
                let expect = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(needs_escape(w), expect, "byte {b:#x} in lane {lane}");
            }
        }
    }

    #[test]
    fn numbers_like_serde_json() {
        for v in [
            0.0,
            -0.0,
            1.0,
            0.1 + 0.2,
            1e-9,
            2.999999995,
            1e300,
            f64::NAN,
            f64::INFINITY,
            -f64::INFINITY,
        ] {
            let mut w = Writer { out: String::new() };
            w.f64(v);
            assert_eq!(w.out, serde_json::to_string(&v).unwrap(), "{v}");
        }
    }
}
