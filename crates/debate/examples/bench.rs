//! Engine overhead: debates/s of 5 agents × 3 rounds with the `demo` provider.
//!
//! `cargo run --release -p aragora-debate --example bench` prints one JSON object: every run's
//! rate, the median of the runs, the target (TARGETS.md: ≥ 1,000 debates/s) and pass/fail.
//! Optional arguments: `--runs N` (default 5, at least 3), `--debates N` per run (default 5000).

use std::time::Instant;

use aragora_core::debate::{Agent, DebateStatus};
use aragora_debate::{DebateSpec, NoopObserver, ProviderRegistry, run};

/// The allocator the `aragora` binary ships with, so the figures are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TARGET_PER_SEC: f64 = 1_000.0;
const AGENTS: usize = 5;
const ROUNDS: u32 = 3;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spec(i: usize) -> DebateSpec {
    let agents = (1..=AGENTS)
        .map(|n| Agent {
            name: format!("agent{n}"),
            provider: "demo".into(),
            model: None,
            weight: 1.0,
            base_url: None,
            api_key_env: None,
        })
        .collect();
    DebateSpec {
        id: Some(format!("deb-bench-{i}")),
        rounds: ROUNDS,
        ..DebateSpec::new("Design a rate limiter for a public API", agents)
    }
}

fn main() {
    let runs = arg("--runs", 5).max(3);
    let per_run = arg("--debates", 5_000).max(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let providers = ProviderRegistry::demo_only();
    let (rates, checks) = rt.block_on(async {
        // Warm-up: caches, allocator.
        for i in 0..500 {
            run(spec(i), &providers, &mut NoopObserver).await;
        }
        let mut rates = Vec::with_capacity(runs);
        let (mut completed, mut consensus, mut positions, mut critiques, mut votes) =
            (0, 0, 0, 0, 0);
        for r in 0..runs {
            let start = Instant::now();
            for i in 0..per_run {
                let d = run(spec(r * per_run + i), &providers, &mut NoopObserver).await;
                completed += usize::from(d.status == DebateStatus::Completed);
                consensus += usize::from(d.consensus_reached);
                positions += d.rounds.iter().map(|r| r.positions.len()).sum::<usize>();
                critiques += d.rounds.iter().map(|r| r.critiques.len()).sum::<usize>();
                votes += d.votes.len();
            }
            rates.push(per_run as f64 / start.elapsed().as_secs_f64());
        }
        (rates, (completed, consensus, positions, critiques, votes))
    });
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let total = runs * per_run;
    let (completed, consensus, positions, critiques, votes) = checks;
    let out = serde_json::json!({
        "benchmark": "debate_engine_demo",
        "agents": AGENTS,
        "rounds": ROUNDS,
        "runtime": "tokio current_thread, one debate at a time",
        "debates_per_run": per_run,
        "runs_debates_per_sec": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "median_debates_per_sec": median.round(),
        "median_us_per_debate": (1e6 / median * 10.0).round() / 10.0,
        "target_debates_per_sec": TARGET_PER_SEC,
        "ratio_to_target": (median / TARGET_PER_SEC * 100.0).round() / 100.0,
        "pass": median >= TARGET_PER_SEC,
        "sanity": {
            "debates": total,
            "completed": completed,
            "consensus_reached": consensus,
            "positions_per_debate": positions as f64 / total as f64,
            "critiques_per_debate": critiques as f64 / total as f64,
            "votes_per_debate": votes as f64 / total as f64,
        },
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
