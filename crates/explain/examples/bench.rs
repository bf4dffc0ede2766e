//! Explanation throughput: `explain()` + JSON per synthetic debate. JSON is written by
//! `aragora_explain::to_json` (what the server uses; byte-identical to serde_json), with a
//! single-threaded `serde_json::to_vec` row per configuration for comparison.
//!
//! `cargo run --release -p aragora-explain --example bench [-- --quick]`
//!
//! Prints one JSON line per configuration: explanations/s (median of RUNS runs, each ≥ 0.4 s
//! over a pool of 64 different synthetic debates), single-threaded and with one thread per core,
//! the target where TARGETS.md sets one, and pass/fail. The 21/25-agent rows with irrational
//! weights show where pivotality switches from exact to Monte Carlo.

use std::time::{Duration, Instant};

use aragora_core::consensus::decide;
use aragora_core::debate::{ConsensusMode, Debate};
use aragora_explain::{ExplainOptions, explain, synth, to_json};

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 3;
const POOL: usize = 64;

fn pool(agents: usize, rounds: usize, irrational: bool) -> Vec<Debate> {
    (0..POOL as u64)
        .map(|seed| {
            let mut d = synth::debate(agents, rounds, seed);
            if irrational {
                // Weights that share no useful common divisor: the DP cannot apply.
                d.consensus.mode = ConsensusMode::Weighted;
                for (i, a) in d.agents.iter_mut().enumerate() {
                    a.weight = 1.0 + ((i as f64 + 1.0) * std::f64::consts::PI).fract();
                }
                let o = decide(&d.consensus, &d.agents, &d.votes, d.judge.as_ref());
                d.winner = o.winner;
                d.consensus_reached = o.consensus_reached;
                d.confidence = o.confidence;
            }
            d
        })
        .collect()
}

/// Explanations per second on `threads` threads for about `dur`.
fn run(debates: &[Debate], threads: usize, dur: Duration, fast_json: bool) -> (f64, usize) {
    let opts = ExplainOptions::default();
    let start = Instant::now();
    let results: Vec<(u64, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let opts = &opts;
                s.spawn(move || {
                    let mut count = 0u64;
                    let mut bytes = 0usize;
                    let mut i = t;
                    while start.elapsed() < dur {
                        for _ in 0..64 {
                            let d = &debates[i % debates.len()];
                            let e = explain(d, opts);
                            bytes += if fast_json {
                                to_json(&e).len()
                            } else {
                                serde_json::to_vec(&e).expect("serialise").len()
                            };
                            count += 1;
                            i += 1;
                        }
                    }
                    (count, bytes)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let count: u64 = results.iter().map(|r| r.0).sum();
    let bytes: usize = results.iter().map(|r| r.1).sum();
    (count as f64 / elapsed, bytes / count.max(1) as usize)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn target(agents: usize, rounds: usize) -> Option<f64> {
    match (agents, rounds) {
        (5, 3) => Some(200_000.0),
        (15, _) => Some(50_000.0),
        _ => None,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dur = Duration::from_millis(if quick { 150 } else { 400 });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut configs: Vec<(usize, usize, bool)> = Vec::new();
    for agents in [3, 5, 9, 15, 21, 25] {
        for rounds in [3, 5] {
            configs.push((agents, rounds, false));
        }
    }
    configs.push((20, 3, true));
    configs.push((21, 3, true));
    configs.push((25, 3, true));
    for (agents, rounds, irrational) in configs {
        let debates = pool(agents, rounds, irrational);
        let sample = explain(&debates[0], &ExplainOptions::default());
        let algorithms: std::collections::BTreeSet<String> = debates
            .iter()
            .map(|d| {
                explain(d, &ExplainOptions::default())
                    .method
                    .pivotality
                    .algorithm
                    .to_string()
            })
            .collect();
        let estimated = debates
            .iter()
            .filter(|d| explain(d, &ExplainOptions::default()).method.estimated)
            .count();
        let _ = sample;
        let mut variants: Vec<(usize, bool)> = vec![(1, true)];
        if cores > 1 {
            variants.push((cores, true));
        }
        variants.push((1, false));
        for (threads, fast_json) in variants {
            let mut rates = Vec::with_capacity(RUNS);
            let mut bytes = 0;
            for _ in 0..RUNS {
                let (r, b) = run(&debates, threads, dur, fast_json);
                rates.push(r);
                bytes = b;
            }
            let med = median(rates.clone());
            let t = target(agents, rounds);
            let line = serde_json::json!({
                "bench": "explain_build_json",
                "agents": agents,
                "rounds": rounds,
                "weights": if irrational { "irrational" } else { "synthetic" },
                "threads": threads,
                "json": if fast_json { "to_json" } else { "serde_json" },
                "explanations_per_sec": med.round(),
                "runs": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                "mean_json_bytes": bytes,
                "pivotality_algorithms": algorithms,
                "estimated_explanations": format!("{estimated}/{}", debates.len()),
                "target": t,
                "pass": t.map(|t| med >= t),
            });
            println!("{line}");
        }
    }
}
