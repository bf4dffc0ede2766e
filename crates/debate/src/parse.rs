//! Robust parsing of model output. Models are asked for JSON and return it wrapped in code
//! fences, preceded by chatter, with trailing commas, cut off mid-object, with confidences as
//! "85%" — or as plain prose. This module recovers what it can and says plainly when it can't.
//!
//! Rules:
//! - The first JSON object in the text is used (an array is used when it holds objects and starts
//!   first, e.g. a bare list of critiques). Code fences and surrounding prose are ignored.
//! - Repairs tried in order: as is; trailing commas removed; an object cut off at the end closed
//!   (strings and brackets), and if that fails, cut back to the last complete member and closed.
//! - Keys match case-insensitively, with common synonyms (`rationale` for `reasoning`, …).
//! - `confidence`: numbers in 0..=1 are used as is; 1 < x ≤ 100 is read as a percentage; strings
//!   like "0.8", "80%", "high" (0.8), "medium" (0.5), "low" (0.2) are understood; the result is
//!   clamped into 0..=1; missing or unreadable → 0.5. `severity` is clamped into 0..=10;
//!   missing → 5.
//! - No JSON at all: a proposal/revision takes the prose as its answer (confidence 0.5); a vote
//!   takes the one candidate the prose names; a critique with a single target takes the prose as
//!   its issue. Otherwise — empty output, JSON without the fields the step needs, a vote for
//!   someone who is not a candidate — the reply is unusable and the agent fails cleanly.

use serde_json::{Map, Value};

use crate::provider::{
    AgentReply, CritiqueReply, NewEvidence, PositionReply, ProviderError, Role, VoteReply,
};

/// Longest model output looked at.
const MAX_INPUT_BYTES: usize = 256 * 1024;
/// How many candidate start positions are tried before giving up.
const MAX_STARTS: usize = 64;
const MAX_ANSWER_CHARS: usize = 8_000;
const MAX_ITEM_CHARS: usize = 2_000;
const MAX_LIST_ITEMS: usize = 20;
/// Used when a reply states no confidence or severity.
pub const DEFAULT_CONFIDENCE: f64 = 0.5;
pub const DEFAULT_SEVERITY: f64 = 5.0;

/// The first usable JSON value in `text` (see the module rules), or `None`.
pub fn extract_json(text: &str) -> Option<Value> {
    let text = truncate_bytes(text, MAX_INPUT_BYTES);
    let bytes = text.as_bytes();
    let mut tried = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'{' && b != b'[' {
            continue;
        }
        tried += 1;
        if tried > MAX_STARTS {
            break;
        }
        if let Some(v) = parse_at(&text[i..]) {
            let usable = match &v {
                Value::Object(_) => true,
                Value::Array(items) => items.iter().any(Value::is_object),
                _ => false,
            };
            if usable {
                return Some(v);
            }
        }
    }
    None
}

/// Parse the JSON value that starts at the beginning of `s`, repairing it if needed.
fn parse_at(s: &str) -> Option<Value> {
    let scan = scan(s)?;
    match scan.end {
        Some(end) => {
            let candidate = &s[..=end];
            serde_json::from_str(candidate)
                .ok()
                .or_else(|| serde_json::from_str(&strip_trailing_commas(candidate)).ok())
        }
        None => {
            // Cut off: close what is open.
            let mut closed = s.to_string();
            if scan.in_string {
                closed.push('"');
            }
            closed.extend(scan.open.iter().rev().map(|&c| c as char));
            if let Ok(v) = serde_json::from_str(&strip_trailing_commas(&closed)) {
                return Some(v);
            }
            // Then cut back to the last complete member and close that.
            let (cut, open) = scan.last_comma?;
            let mut closed = s[..cut].to_string();
            closed.extend(open.iter().rev().map(|&c| c as char));
            serde_json::from_str(&strip_trailing_commas(&closed)).ok()
        }
    }
}

struct Scan {
    /// Byte index of the bracket that closes the value, when it is closed.
    end: Option<usize>,
    /// Closers still expected at the end of the text.
    open: Vec<u8>,
    in_string: bool,
    /// Last comma outside strings, with the closers expected there.
    last_comma: Option<(usize, Vec<u8>)>,
}

/// Walk a bracketed value, string-aware. `None` when the brackets do not match.
fn scan(s: &str) -> Option<Scan> {
    let mut open: Vec<u8> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut last_comma = None;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => open.push(b'}'),
            b'[' => open.push(b']'),
            b'}' | b']' => {
                if open.pop() != Some(b) {
                    return None;
                }
                if open.is_empty() {
                    return Some(Scan {
                        end: Some(i),
                        open,
                        in_string,
                        last_comma,
                    });
                }
            }
            b',' => last_comma = Some((i, open.clone())),
            _ => {}
        }
    }
    Some(Scan {
        end: None,
        open,
        in_string,
        last_comma,
    })
}

/// Remove commas that directly precede `}` or `]` (outside strings).
fn strip_trailing_commas(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut in_string = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
            out.push(ch);
            continue;
        }
        if ch == '"' {
            in_string = true;
        } else if ch == ',' {
            let next = bytes[i + 1..].iter().find(|b| !b.is_ascii_whitespace());
            if matches!(next, Some(b'}') | Some(b']')) {
                continue;
            }
        }
        out.push(ch);
    }
    out
}

/// Turn model output into the reply the `role` needs. `targets` are the critique targets or the
/// vote candidates. Token usage is left at zero for the caller to fill.
pub fn parse_reply(
    role: Role,
    text: &str,
    targets: &[String],
) -> Result<AgentReply, ProviderError> {
    let text = truncate_bytes(text, MAX_INPUT_BYTES);
    if !text.chars().any(char::is_alphanumeric) {
        return Err(ProviderError::Unusable(if text.trim().is_empty() {
            "empty reply".into()
        } else {
            format!("reply has no content: {}", crate::http::snippet(text))
        }));
    }
    let mut reply = AgentReply::default();
    match extract_json(text) {
        Some(json) => match role {
            Role::Propose | Role::Revise => reply.position = Some(position_from_json(&json)?),
            Role::Critique => reply.critiques = critiques_from_json(&json, targets)?,
            Role::Vote | Role::Judge => reply.vote = Some(vote_from_json(&json, targets)?),
        },
        None => {
            let prose = strip_fences(text);
            match role {
                Role::Propose | Role::Revise => {
                    reply.position = Some(PositionReply {
                        answer: cap(prose, MAX_ANSWER_CHARS),
                        reasoning: String::new(),
                        confidence: DEFAULT_CONFIDENCE,
                        evidence_ids: Vec::new(),
                        new_evidence: Vec::new(),
                    })
                }
                Role::Critique => match targets {
                    [only] => {
                        reply.critiques = vec![CritiqueReply {
                            target: only.clone(),
                            issues: vec![cap(prose, MAX_ITEM_CHARS)],
                            suggestions: Vec::new(),
                            severity: DEFAULT_SEVERITY,
                            reasoning: String::new(),
                        }]
                    }
                    _ => {
                        return Err(ProviderError::Unusable(format!(
                            "critique is not JSON and has several targets: {}",
                            crate::http::snippet(prose)
                        )));
                    }
                },
                Role::Vote | Role::Judge => {
                    let named: Vec<&String> =
                        targets.iter().filter(|t| mentions(prose, t)).collect();
                    match named.as_slice() {
                        [one] => {
                            reply.vote = Some(VoteReply {
                                choice: (*one).clone(),
                                confidence: DEFAULT_CONFIDENCE,
                                reasoning: cap(prose, MAX_ITEM_CHARS),
                            })
                        }
                        _ => {
                            return Err(ProviderError::Unusable(format!(
                                "{role} is not JSON and names {} candidates: {}",
                                named.len(),
                                crate::http::snippet(prose)
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(reply)
}

fn position_from_json(json: &Value) -> Result<PositionReply, ProviderError> {
    let root = first_object(json)
        .ok_or_else(|| ProviderError::Unusable("JSON reply holds no object".into()))?;
    let inner = field(
        root,
        &["position", "proposal", "revised_position", "revision"],
    )
    .and_then(Value::as_object)
    .unwrap_or(root);
    let answer = [inner, root]
        .iter()
        .find_map(|o| {
            field(
                o,
                &[
                    "answer",
                    "position",
                    "proposal",
                    "final_answer",
                    "solution",
                    "response",
                    "revised_answer",
                ],
            )
            .map(text_of)
            .filter(|t| !t.trim().is_empty())
        })
        .ok_or_else(|| {
            ProviderError::Unusable(format!(
                "JSON reply has no 'answer': {}",
                crate::http::snippet(&json.to_string())
            ))
        })?;
    let reasoning = [inner, root]
        .iter()
        .find_map(|o| field(o, REASONING).map(text_of))
        .unwrap_or_default();
    let confidence = [inner, root]
        .iter()
        .find_map(|o| field(o, &["confidence", "certainty"]).and_then(confidence_of))
        .unwrap_or(DEFAULT_CONFIDENCE);
    let mut evidence_ids = Vec::new();
    let mut new_evidence = Vec::new();
    for o in [inner, root] {
        if let Some(ids) = field(o, &["evidence_ids", "citations", "cites"]) {
            evidence_ids.extend(list_of(ids));
        }
        if let Some(Value::Array(items)) = field(o, &["evidence", "new_evidence", "sources"]) {
            for item in items.iter().take(MAX_LIST_ITEMS) {
                match item {
                    // A bare string is taken as an id of existing evidence.
                    Value::String(s) => evidence_ids.push(cap(s, 128)),
                    Value::Object(e) => {
                        if let Some(claim) = field(e, &["claim", "text", "statement", "fact"])
                            .map(text_of)
                            .filter(|c| !c.trim().is_empty())
                        {
                            new_evidence.push(NewEvidence {
                                claim: cap(&claim, MAX_ITEM_CHARS),
                                source: field(e, &["source", "origin", "reference"])
                                    .map(text_of)
                                    .map(|s| cap(&s, 500))
                                    .unwrap_or_default(),
                                url: field(e, &["url", "link"])
                                    .and_then(Value::as_str)
                                    .filter(|u| crate::http::check_base_url(u).is_ok())
                                    .map(str::to_string),
                            });
                        } else if let Some(id) = field(e, &["id"]).and_then(Value::as_str) {
                            evidence_ids.push(cap(id, 128));
                        }
                    }
                    _ => {}
                }
            }
        }
        if std::ptr::eq(inner, root) {
            break;
        }
    }
    evidence_ids.dedup();
    evidence_ids.truncate(MAX_LIST_ITEMS);
    Ok(PositionReply {
        answer: cap(&answer, MAX_ANSWER_CHARS),
        reasoning: cap(&reasoning, MAX_ANSWER_CHARS),
        confidence,
        evidence_ids,
        new_evidence,
    })
}

fn critiques_from_json(
    json: &Value,
    targets: &[String],
) -> Result<Vec<CritiqueReply>, ProviderError> {
    let items: Vec<&Value> = match json {
        Value::Array(items) => items.iter().collect(),
        Value::Object(o) => match field(o, &["critiques", "critique", "reviews", "feedback"]) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            _ if field(o, &["target", "issues"]).is_some() => vec![json],
            _ => {
                return Err(ProviderError::Unusable(format!(
                    "JSON reply has no 'critiques': {}",
                    crate::http::snippet(&json.to_string())
                )));
            }
        },
        _ => Vec::new(),
    };
    let mut out: Vec<CritiqueReply> = Vec::new();
    let mut unknown = Vec::new();
    for item in items.iter().filter_map(|v| v.as_object()) {
        let named = field(item, &["target", "agent", "about", "name", "critiqued"]).map(text_of);
        let target = match (&named, targets) {
            (Some(n), _) => match match_name(n, targets) {
                Some(t) => t.clone(),
                None => {
                    unknown.push(n.clone());
                    continue;
                }
            },
            (None, [only]) => only.clone(),
            (None, _) => continue,
        };
        if out.iter().any(|c| c.target == target) {
            continue;
        }
        out.push(CritiqueReply {
            target,
            issues: field(item, &["issues", "problems", "weaknesses", "concerns"])
                .map(list_of)
                .unwrap_or_default(),
            suggestions: field(item, &["suggestions", "improvements", "recommendations"])
                .map(list_of)
                .unwrap_or_default(),
            severity: field(item, &["severity", "score"])
                .and_then(number_of)
                .map(|s| s.clamp(0.0, 10.0))
                .unwrap_or(DEFAULT_SEVERITY),
            reasoning: field(item, REASONING)
                .map(|v| cap(&text_of(v), MAX_ITEM_CHARS))
                .unwrap_or_default(),
        });
    }
    if out.is_empty() && !unknown.is_empty() {
        return Err(ProviderError::Unusable(format!(
            "critiques name no agent under critique ({}); expected {}",
            unknown.join(", "),
            targets.join(", ")
        )));
    }
    Ok(out)
}

fn vote_from_json(json: &Value, candidates: &[String]) -> Result<VoteReply, ProviderError> {
    let root = first_object(json)
        .ok_or_else(|| ProviderError::Unusable("JSON reply holds no object".into()))?;
    let inner = field(root, &["vote", "judgement", "judgment", "decision"])
        .and_then(Value::as_object)
        .unwrap_or(root);
    let keys = &[
        "choice", "vote", "winner", "agent", "pick", "selected", "decision",
    ];
    let named = [inner, root]
        .iter()
        .find_map(|o| field(o, keys).filter(|v| v.is_string()).map(text_of))
        .ok_or_else(|| {
            ProviderError::Unusable(format!(
                "JSON reply has no 'choice': {}",
                crate::http::snippet(&json.to_string())
            ))
        })?;
    let choice = match_name(&named, candidates).ok_or_else(|| {
        ProviderError::Unusable(format!(
            "choice '{}' is not a candidate; expected one of {}",
            cap(&named, 64),
            candidates.join(", ")
        ))
    })?;
    Ok(VoteReply {
        choice: choice.clone(),
        confidence: [inner, root]
            .iter()
            .find_map(|o| field(o, &["confidence", "certainty"]).and_then(confidence_of))
            .unwrap_or(DEFAULT_CONFIDENCE),
        reasoning: [inner, root]
            .iter()
            .find_map(|o| field(o, REASONING).map(text_of))
            .map(|r| cap(&r, MAX_ANSWER_CHARS))
            .unwrap_or_default(),
    })
}

const REASONING: &[&str] = &[
    "reasoning",
    "rationale",
    "explanation",
    "justification",
    "why",
];

fn first_object(v: &Value) -> Option<&Map<String, Value>> {
    match v {
        Value::Object(o) => Some(o),
        Value::Array(items) => items.iter().find_map(Value::as_object),
        _ => None,
    }
}

/// The first of `keys` present in `o`, compared case-insensitively.
fn field<'a>(o: &'a Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| {
        o.get(*k).or_else(|| {
            o.iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(k))
                .map(|(_, v)| v)
        })
    })
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(text_of)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn list_of(v: &Value) -> Vec<String> {
    let items: Vec<String> = match v {
        Value::Array(items) => items.iter().map(text_of).collect(),
        Value::Null => Vec::new(),
        other => vec![text_of(other)],
    };
    items
        .into_iter()
        .filter(|s| !s.is_empty())
        .take(MAX_LIST_ITEMS)
        .map(|s| cap(&s, MAX_ITEM_CHARS))
        .collect()
}

fn number_of(v: &Value) -> Option<f64> {
    let x = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().trim_end_matches('%').trim().parse().ok()?,
        _ => return None,
    };
    x.is_finite().then_some(x)
}

/// A confidence in 0..=1 from whatever the model wrote (module rules).
pub fn confidence_of(v: &Value) -> Option<f64> {
    if let Value::String(s) = v {
        let s = s.trim().to_ascii_lowercase();
        let word = match s.as_str() {
            "very high" | "certain" => Some(0.95),
            "high" => Some(0.8),
            "medium" | "moderate" => Some(0.5),
            "low" => Some(0.2),
            "very low" => Some(0.05),
            _ => None,
        };
        if word.is_some() {
            return word;
        }
        if s.ends_with('%') {
            return number_of(v).map(|x| (x / 100.0).clamp(0.0, 1.0));
        }
    }
    let x = number_of(v)?;
    let x = if x > 1.0 && x <= 100.0 { x / 100.0 } else { x };
    Some(x.clamp(0.0, 1.0))
}

/// The candidate `name` refers to: exact, then case-insensitive, ignoring quotes, `@` and
/// a trailing "'s position".
fn match_name<'a>(name: &str, candidates: &'a [String]) -> Option<&'a String> {
    let cleaned = name
        .trim()
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '`' || c == '@')
        .trim_end_matches("'s position")
        .trim();
    candidates
        .iter()
        .find(|c| c.as_str() == cleaned)
        .or_else(|| candidates.iter().find(|c| c.eq_ignore_ascii_case(cleaned)))
}

/// `name` occurs in `text` as a whole word (case-insensitive).
fn mentions(text: &str, name: &str) -> bool {
    let hay = text.to_ascii_lowercase();
    let needle = name.to_ascii_lowercase();
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-');
    hay.match_indices(&needle).any(|(i, _)| {
        !is_word(hay[..i].chars().next_back()) && !is_word(hay[i + needle.len()..].chars().next())
    })
}

/// Remove Markdown code-fence lines.
fn strip_fences(text: &str) -> &str {
    let t = text.trim();
    let t = match t.strip_prefix("```") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, body)| body),
        None => t,
    };
    t.trim_end().trim_end_matches("```").trim()
}

fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn cap(s: &str, max_chars: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_json_in_fences_and_prose() {
        let text = "Sure! Here is my answer:\n```json\n{\"answer\": \"Token bucket\", \"confidence\": 0.8}\n```\nHope this helps.";
        assert_eq!(
            extract_json(text),
            Some(json!({"answer": "Token bucket", "confidence": 0.8}))
        );
        // Braces inside strings do not confuse the scanner.
        let text =
            r#"note {not json} then {"answer": "use {braces} \"quoted\"", "x": [1, {"y": "}"}]}"#;
        assert_eq!(
            extract_json(text).unwrap()["answer"],
            json!("use {braces} \"quoted\"")
        );
    }

    #[test]
    fn repairs_trailing_commas_and_cut_off_objects() {
        assert_eq!(
            extract_json(r#"{"answer": "a", "evidence_ids": ["e1", "e2",],}"#),
            Some(json!({"answer": "a", "evidence_ids": ["e1", "e2"]}))
        );
        assert_eq!(
            extract_json(r#"{"answer": "Token bucket", "reasoning": "bursts are"#),
            Some(json!({"answer": "Token bucket", "reasoning": "bursts are"}))
        );
        assert_eq!(
            extract_json(r#"{"answer": "Token bucket", "confid"#),
            Some(json!({"answer": "Token bucket"}))
        );
        assert_eq!(extract_json("no json here [1, 2]"), None);
        assert_eq!(extract_json("}{]["), None);
    }

    #[test]
    fn confidences_are_read_and_clamped() {
        assert_eq!(confidence_of(&json!(0.7)), Some(0.7));
        assert_eq!(confidence_of(&json!(85)), Some(0.85));
        assert_eq!(confidence_of(&json!("85%")), Some(0.85));
        assert_eq!(confidence_of(&json!("0.3")), Some(0.3));
        assert_eq!(confidence_of(&json!("high")), Some(0.8));
        assert_eq!(confidence_of(&json!(-2)), Some(0.0));
        assert_eq!(confidence_of(&json!(1000)), Some(1.0));
        assert_eq!(confidence_of(&json!("sure")), None);
        assert_eq!(confidence_of(&json!(null)), None);
    }

    #[test]
    fn positions_from_json_with_synonyms_and_nesting() {
        let r = parse_reply(
            Role::Propose,
            r#"{"position": {"Answer": "Sliding window", "Rationale": "smooth", "confidence": "90%",
                "evidence": [{"claim": "Windows smooth bursts", "source": "paper", "url": "https://example.org/p"}, "ev-1"]}}"#,
            &[],
        )
        .unwrap();
        let p = r.position.unwrap();
        assert_eq!(p.answer, "Sliding window");
        assert_eq!(p.reasoning, "smooth");
        assert_eq!(p.confidence, 0.9);
        assert_eq!(p.evidence_ids, vec!["ev-1"]);
        assert_eq!(p.new_evidence.len(), 1);
        assert_eq!(
            p.new_evidence[0].url.as_deref(),
            Some("https://example.org/p")
        );
    }

    #[test]
    fn prose_becomes_the_answer() {
        let r = parse_reply(Role::Revise, "I would use a token bucket per tenant.", &[]).unwrap();
        let p = r.position.unwrap();
        assert_eq!(p.answer, "I would use a token bucket per tenant.");
        assert_eq!(p.confidence, DEFAULT_CONFIDENCE);
    }

    #[test]
    fn unusable_replies_are_errors() {
        for (role, text) in [
            (Role::Propose, ""),
            (Role::Propose, "  \n "),
            (Role::Propose, "{}[],,,"),
            (Role::Propose, r#"{"status": "ok"}"#),
            (Role::Vote, r#"{"choice": "mallory"}"#),
            (Role::Vote, "either alice or bob"),
            (Role::Critique, r#"{"mood": "grumpy"}"#),
            (Role::Critique, "they are all wrong"),
        ] {
            let e = parse_reply(role, text, &names(&["alice", "bob"])).unwrap_err();
            assert!(
                matches!(e, ProviderError::Unusable(_)),
                "{role} {text:?}: {e}"
            );
        }
    }

    #[test]
    fn votes_match_candidates_tolerantly() {
        let c = names(&["alice", "Bob"]);
        let v = parse_reply(
            Role::Vote,
            r#"{"vote": {"choice": "BOB", "confidence": 0.9}}"#,
            &c,
        )
        .unwrap()
        .vote
        .unwrap();
        assert_eq!(v.choice, "Bob");
        let v = parse_reply(Role::Vote, "I vote for alice, clearly.", &c)
            .unwrap()
            .vote
            .unwrap();
        assert_eq!(v.choice, "alice");
        let v = parse_reply(
            Role::Judge,
            r#"{"winner": "@alice", "reasoning": "best"}"#,
            &c,
        )
        .unwrap()
        .vote
        .unwrap();
        assert_eq!((v.choice.as_str(), v.reasoning.as_str()), ("alice", "best"));
        // "alice" inside "malice" is not a mention.
        assert!(
            parse_reply(Role::Vote, "malice towards Bob", &c)
                .is_ok_and(|r| r.vote.unwrap().choice == "Bob")
        );
    }

    #[test]
    fn critiques_from_objects_and_arrays() {
        let c = names(&["alice", "bob"]);
        let r = parse_reply(
            Role::Critique,
            r#"{"critiques": [{"target": "alice", "issues": "too slow", "severity": 14},
                              {"target": "zed", "issues": ["who?"]},
                              {"target": "bob", "issues": ["a", "b"], "suggestions": ["c"], "severity": "3"}]}"#,
            &c,
        )
        .unwrap();
        assert_eq!(r.critiques.len(), 2);
        assert_eq!(r.critiques[0].issues, vec!["too slow"]);
        assert_eq!(r.critiques[0].severity, 10.0);
        assert_eq!(r.critiques[1].severity, 3.0);
        let r = parse_reply(
            Role::Critique,
            r#"Here: [{"target": "bob", "issues": ["x"]}]"#,
            &c,
        )
        .unwrap();
        assert_eq!(r.critiques[0].target, "bob");
        assert_eq!(r.critiques[0].severity, DEFAULT_SEVERITY);
        let r = parse_reply(Role::Critique, "Needs more detail.", &names(&["bob"])).unwrap();
        assert_eq!(r.critiques[0].issues, vec!["Needs more detail."]);
        let e =
            parse_reply(Role::Critique, r#"{"critiques": [{"target": "zed"}]}"#, &c).unwrap_err();
        assert!(e.to_string().contains("zed"));
    }
}
