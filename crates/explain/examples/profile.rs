use aragora_explain::{ExplainOptions, explain, synth};
use std::time::Instant;
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (na, nr) = (
        args.first().copied().unwrap_or(5),
        args.get(1).copied().unwrap_or(3),
    );
    let ds: Vec<_> = (0..64).map(|s| synth::debate(na, nr, s)).collect();
    for (name, o) in [
        ("all", ExplainOptions::default()),
        (
            "none",
            ExplainOptions {
                include_evidence: false,
                include_counterfactuals: false,
                include_vote_pivots: false,
            },
        ),
        (
            "pivots",
            ExplainOptions {
                include_evidence: false,
                include_counterfactuals: false,
                include_vote_pivots: true,
            },
        ),
        (
            "cf",
            ExplainOptions {
                include_evidence: false,
                include_counterfactuals: true,
                include_vote_pivots: false,
            },
        ),
        (
            "ev",
            ExplainOptions {
                include_evidence: true,
                include_counterfactuals: false,
                include_vote_pivots: false,
            },
        ),
    ] {
        let t = Instant::now();
        let n = 20000;
        for i in 0..n {
            std::hint::black_box(explain(&ds[i % 64], &o));
        }
        let b = t.elapsed() / n as u32;
        let t = Instant::now();
        for i in 0..n {
            let e = explain(&ds[i % 64], &o);
            std::hint::black_box(serde_json::to_vec(&e).unwrap());
        }
        println!(
            "{name}: build {:?} build+json {:?}",
            b,
            t.elapsed() / n as u32
        );
    }
    let mut v: Vec<(std::time::Duration, u64, String)> = (0..64)
        .map(|s| {
            let t = Instant::now();
            for _ in 0..200 {
                std::hint::black_box(explain(&ds[s as usize], &ExplainOptions::default()));
            }
            (
                t.elapsed() / 200,
                s,
                explain(&ds[s as usize], &ExplainOptions::default())
                    .method
                    .minimal_flip_set
                    .algorithm
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    println!("fastest {:?}\nslowest {:?}", &v[..3], &v[59..]);
    let mut algos = std::collections::BTreeMap::new();
    for x in &v {
        *algos.entry(x.2.clone()).or_insert(0) += 1;
    }
    println!("{algos:?}");
}
