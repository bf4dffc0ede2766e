//! Print one demo debate as JSON: `cargo run -p aragora-debate --example demo_debate -- [id] [agents] [rounds]`.

use aragora_core::debate::Agent;
use aragora_debate::{DebateSpec, NoopObserver, ProviderRegistry, run};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let id = args.first().cloned().unwrap_or_else(|| "deb-demo".into());
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(3);
    let rounds: u32 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(2);
    let agents = (1..=n)
        .map(|i| Agent {
            name: format!("agent{i}"),
            provider: "demo".into(),
            model: None,
            weight: 1.0,
            base_url: None,
            api_key_env: None,
        })
        .collect();
    let spec = DebateSpec {
        id: Some(id),
        rounds,
        ..DebateSpec::new("Design a rate limiter for a public API", agents)
    };
    let debate = run(spec, &ProviderRegistry::demo_only(), &mut NoopObserver).await;
    println!("{}", serde_json::to_string_pretty(&debate).expect("json"));
}
