//! Profiling helper: `hot AGENTS ROUNDS N` builds and serialises N explanations.
use aragora_explain::{ExplainOptions, explain, synth};
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (a, r, n) = (
        args.first().copied().unwrap_or(5),
        args.get(1).copied().unwrap_or(3),
        args.get(2).copied().unwrap_or(1000),
    );
    let ds: Vec<_> = (0..64).map(|s| synth::debate(a, r, s)).collect();
    let o = ExplainOptions::default();
    let mut total = 0;
    for i in 0..n {
        let e = explain(&ds[i % 64], &o);
        total += serde_json::to_vec(&e).map_or(0, |v| v.len());
    }
    println!("mean bytes {}", total / n.max(1));
}
