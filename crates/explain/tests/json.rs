//! `to_json` is byte-for-byte `serde_json::to_string` for every explanation shape: synthetic
//! debates of every size (exact DP, enumeration and Monte Carlo pivotality), every option
//! combination, judge mode, malformed records (warnings, NaN and infinite numbers) and strings
//! that need escaping.

use aragora_core::debate::*;
use aragora_explain::{ExplainOptions, Explanation, explain, synth, to_json, write_json};

fn check(e: &Explanation<'_>) {
    let fast = to_json(e);
    let reference = serde_json::to_string(e).unwrap();
    assert_eq!(fast, reference);
    let mut appended = String::from("prefix");
    write_json(e, &mut appended);
    assert_eq!(appended, format!("prefix{reference}"));
}

fn all_options() -> Vec<ExplainOptions> {
    let mut out = Vec::new();
    for bits in 0..8 {
        out.push(ExplainOptions {
            include_evidence: bits & 1 != 0,
            include_counterfactuals: bits & 2 != 0,
            include_vote_pivots: bits & 4 != 0,
        });
    }
    out
}

#[test]
fn synthetic_debates_of_every_size_and_option() {
    let options = all_options();
    for agents in [1, 2, 3, 5, 9, 15, 21] {
        for rounds in [1, 3, 5] {
            for seed in 0..12 {
                let d = synth::debate(agents, rounds, seed);
                for o in &options {
                    check(&explain(&d, o));
                }
            }
        }
    }
}

#[test]
fn irregular_weights_use_enumeration_and_monte_carlo() {
    for agents in [12, 20, 22] {
        let mut d = synth::debate(agents, 2, 7);
        d.consensus.mode = ConsensusMode::Weighted;
        for (i, a) in d.agents.iter_mut().enumerate() {
            a.weight = 1.0 + ((i as f64 + 1.0) * std::f64::consts::PI).fract();
        }
        let e = explain(&d, &ExplainOptions::default());
        if agents > 20 {
            assert!(
                e.method.pivotality.samples.is_some(),
                "Monte Carlo reports samples"
            );
        }
        check(&e);
    }
}

#[test]
fn odd_records_and_strings_that_need_escaping() {
    let weird = "tab\there \"quoted\" back\\slash\nnew line \u{1}\u{1f}\u{7f} ünï “x” 💥";
    for seed in 0..40 {
        let mut d = synth::debate(4, 3, seed);
        d.id = format!("deb-{weird}-{seed}");
        d.task = weird.repeat(seed as usize % 3 + 1);
        d.evidence[0].claim = weird.into();
        d.evidence[0].source = String::new();
        for r in &mut d.rounds {
            for p in &mut r.positions {
                p.answer = format!("{} {weird}", p.answer);
            }
            for c in &mut r.critiques {
                c.issues = vec![weird.into()];
            }
        }
        match seed % 5 {
            0 => d.votes[0].confidence = f64::NAN,
            1 => {
                d.consensus.mode = ConsensusMode::Weighted;
                d.agents[1].weight = f64::INFINITY;
            }
            2 => d.votes.push(Vote {
                agent: "stranger".into(),
                choice: "nobody".into(),
                confidence: 1.5,
                reasoning: weird.into(),
            }),
            3 => d.agents.push(d.agents[0].clone()),
            _ => {
                d.consensus.mode = ConsensusMode::Judge;
                d.judge = Some(Judgement {
                    agent: d.agents[0].name.clone(),
                    choice: d.agents[1].name.clone(),
                    reasoning: weird.into(),
                });
            }
        }
        let e = explain(&d, &ExplainOptions::default());
        assert!(
            seed % 5 == 4 || !e.warnings.is_empty(),
            "seed {seed}: malformed records warn"
        );
        check(&e);
    }
    // No votes at all, no rounds.
    let mut d = synth::debate(3, 1, 1);
    d.votes.clear();
    d.rounds.clear();
    check(&explain(&d, &ExplainOptions::default()));
}

#[test]
fn every_counterfactual_lists_agents_and_evidence_ids() {
    // DESIGN.md §10: `agents` and `evidence_ids` are fields of every counterfactual, an empty
    // list where they do not apply (threshold, impossible flip set, single votes, …).
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let mut d = synth::debate(5, 3, seed);
        if seed % 3 == 1 {
            d.consensus.mode = ConsensusMode::Judge;
            d.judge = Some(Judgement {
                agent: d.agents[0].name.clone(),
                choice: d.agents[1].name.clone(),
                reasoning: "r".into(),
            });
        }
        let e = explain(&d, &ExplainOptions::default());
        let fast: serde_json::Value = serde_json::from_str(&to_json(&e)).unwrap();
        let reference = serde_json::to_value(&e).unwrap();
        for v in [&fast, &reference] {
            for c in v["counterfactuals"].as_array().unwrap() {
                kinds.insert(c["kind"].as_str().unwrap().to_string());
                for key in ["agents", "evidence_ids"] {
                    assert!(c[key].is_array(), "{key} missing in {c}");
                }
                if c["kind"] != "evidence_removed" {
                    assert_eq!(c["evidence_ids"], serde_json::json!([]), "{c}");
                }
            }
        }
        // Stored explanations written before the field was always present still read.
        let mut old = reference.clone();
        for c in old["counterfactuals"].as_array_mut().unwrap() {
            if c["evidence_ids"] == serde_json::json!([]) {
                c.as_object_mut().unwrap().remove("evidence_ids");
            }
        }
        let back: Explanation<'static> = serde_json::from_value(old).unwrap();
        assert_eq!(back, e.clone().into_owned());
    }
    for k in [
        "vote_change",
        "agent_removed",
        "minimal_flip_set",
        "threshold",
        "evidence_removed",
    ] {
        assert!(kinds.contains(k), "no {k} counterfactual in the sample");
    }

    // The OpenAPI schema marks both required.
    use utoipa::PartialSchema;
    let schema = serde_json::to_value(aragora_explain::Counterfactual::schema()).unwrap();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for key in [
        "kind",
        "condition",
        "agents",
        "evidence_ids",
        "outcome_before",
        "outcome_after",
        "changes_outcome",
        "method",
    ] {
        assert!(required.contains(&key), "{key} not required: {required:?}");
    }
}
