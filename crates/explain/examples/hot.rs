//! Profiling helper: `hot AGENTS ROUNDS N [serde|fast|none]` builds N explanations and writes
//! them as JSON with serde_json (default), `to_json`, or not at all (explain() alone).
use aragora_explain::{ExplainOptions, explain, synth, to_json};
fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<usize> = argv.iter().filter_map(|a| a.parse().ok()).collect();
    let mode = argv
        .iter()
        .find(|a| a.parse::<usize>().is_err())
        .map_or("serde", String::as_str);
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
        total += match mode {
            "fast" => to_json(&e).len(),
            "none" => e.vote_pivots.len(),
            _ => serde_json::to_vec(&e).map_or(0, |v| v.len()),
        };
    }
    println!("mode {mode}: total {total}");
}
