//! Loopback fakes of an OpenAI-compatible server and the Anthropic Messages API, real HTTP on
//! 127.0.0.1:0. Behaviour is chosen by the request's `model`:
//! - `good-*`: well-formed JSON for the step.
//! - `fenced-*`: JSON in a Markdown fence with chatter, trailing commas and "85%" confidences.
//! - `prose-*`: plain prose, no JSON at all.
//! - `garbage-*`: JSON without any field the step needs.
//! - `slow-*`: never answers (the client times out).
//! - `flaky-*`: the first request gets 503 with `Retry-After: 0`, later ones are good.
//! - `auth-*`: 401.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aragora_core::debate::{Agent, Debate};
use aragora_debate::{DebateObserver, HttpSettings, ProviderError};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const KEY: &str = "sk-test-123";

#[derive(Default)]
pub struct Seen {
    /// Requests per model.
    pub requests: HashMap<String, u32>,
    /// Credentials seen (Authorization or x-api-key), per model.
    pub credentials: HashMap<String, String>,
    pub anthropic_versions: Vec<String>,
}

#[derive(Clone, Default)]
pub struct Fake {
    pub seen: Arc<Mutex<Seen>>,
}

impl Fake {
    pub fn requests(&self, model: &str) -> u32 {
        self.seen
            .lock()
            .unwrap()
            .requests
            .get(model)
            .copied()
            .unwrap_or(0)
    }

    pub fn credential(&self, model: &str) -> Option<String> {
        self.seen.lock().unwrap().credentials.get(model).cloned()
    }
}

pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// Start the fake OpenAI-compatible server; returns its base URL (`http://…/v1`).
pub async fn openai_server(fake: Fake) -> String {
    let router = axum::Router::new()
        .route("/v1/chat/completions", post(openai_handler))
        .with_state(fake);
    format!("http://{}/v1", serve(router).await)
}

/// Start the fake Anthropic server; returns its base URL (host only).
pub async fn anthropic_server(fake: Fake) -> String {
    let router = axum::Router::new()
        .route("/v1/messages", post(anthropic_handler))
        .with_state(fake);
    format!("http://{}", serve(router).await)
}

/// An address where nothing listens (connection refused).
pub async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

pub fn fast_settings() -> HttpSettings {
    HttpSettings {
        timeout: Duration::from_millis(1000),
        max_retries: 2,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_retry_after: Duration::from_millis(50),
        max_tokens: 256,
        temperature: None,
    }
}

pub fn agent(name: &str, provider: &str, model: Option<&str>, base_url: Option<&str>) -> Agent {
    Agent {
        name: name.into(),
        provider: provider.into(),
        model: model.map(str::to_string),
        weight: 1.0,
        base_url: base_url.map(str::to_string),
        api_key_env: None,
    }
}

enum Step {
    Position,
    Critique,
    Vote,
}

fn step_of(system: &str) -> Step {
    if system.contains("\"critiques\"") {
        Step::Critique
    } else if system.contains("\"choice\"") {
        Step::Vote
    } else {
        Step::Position
    }
}

/// Agent names listed as `- name (confidence …)` in the prompt.
fn listed_agents(user: &str) -> Vec<String> {
    user.lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split_once(" (confidence ").map(|(n, _)| n.to_string()))
        .collect()
}

fn candidates(user: &str) -> Vec<String> {
    user.lines()
        .find_map(|l| l.strip_prefix("Candidates: "))
        .map(|l| l.split(", ").map(str::to_string).collect())
        .unwrap_or_default()
}

/// The reply text a model of `kind` gives, or an HTTP failure.
fn model_reply(
    kind: &str,
    model: &str,
    n: u32,
    system: &str,
    user: &str,
) -> Result<String, Box<Response>> {
    match kind {
        "slow" => unreachable!("handled before"),
        "auth" => {
            return Err(Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": {"message": "invalid api key", "type": "authentication_error"}})),
                )
                    .into_response(),
            ));
        }
        "flaky" if n == 1 => {
            return Err(Box::new(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "0")],
                    "overloaded",
                )
                    .into_response(),
            ));
        }
        _ => {}
    }
    // Everyone votes for the alphabetically first candidate, so good debates reach consensus.
    let first_candidate = candidates(user).into_iter().min().unwrap_or_default();
    let text = match (kind, step_of(system)) {
        ("garbage", _) => r#"{"status": "ok", "note": "I will not follow the format"}"#.to_string(),
        ("prose", Step::Position) => format!("I think we should use a sliding window ({model})."),
        ("prose", Step::Critique) => "Every proposal lacks detail.".to_string(),
        ("prose", Step::Vote) => format!("After reflection I support {first_candidate}."),
        ("fenced", Step::Position) => format!(
            "Sure! Here is my position:\n```json\n{{\"answer\": \"Leaky bucket ({model})\", \"reasoning\": \"smooth output\", \"confidence\": \"85%\", \"evidence\": [{{\"claim\": \"Leaky buckets smooth bursts\", \"source\": \"textbook\",}},],}}\n```\nLet me know!"
        ),
        ("fenced", Step::Critique) => {
            let items: Vec<String> = listed_agents(user)
                .iter()
                .map(|t| format!("{{\"target\": \"{t}\", \"issues\": [\"vague\",], \"severity\": 7,}}"))
                .collect();
            format!("```\n{{\"critiques\": [{}],}}\n```", items.join(","))
        }
        ("fenced", Step::Vote) => format!(
            "```json\n{{\"choice\": \"{first_candidate}\", \"confidence\": 90, \"reasoning\": \"clear\",}}\n```"
        ),
        (_, Step::Position) => json!({
            "answer": format!("Token bucket per tenant ({model})"),
            "reasoning": "allows bursts, simple to reason about",
            "confidence": 0.8,
            "evidence": [{"claim": "Token buckets allow bursts", "source": "RFC 6585", "url": null}],
        })
        .to_string(),
        (_, Step::Critique) => json!({
            "critiques": listed_agents(user).iter().map(|t| json!({
                "target": t, "issues": ["no numbers"], "suggestions": ["add limits"],
                "severity": 4.5, "reasoning": "needs specifics"
            })).collect::<Vec<_>>()
        })
        .to_string(),
        (_, Step::Vote) => json!({
            "choice": first_candidate, "confidence": 0.9, "reasoning": "best fit"
        })
        .to_string(),
    };
    Ok(text)
}

fn record(fake: &Fake, model: &str, credential: Option<&str>) -> u32 {
    let mut seen = fake.seen.lock().unwrap();
    let n = seen.requests.entry(model.to_string()).or_default();
    *n += 1;
    let n = *n;
    if let Some(c) = credential {
        seen.credentials.insert(model.to_string(), c.to_string());
    }
    n
}

async fn openai_handler(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    let n = record(&fake, &model, auth);
    let kind = model.split('-').next().unwrap_or_default();
    if kind == "slow" {
        std::future::pending::<()>().await;
    }
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    let user = body["messages"][1]["content"].as_str().unwrap_or_default();
    match model_reply(kind, &model, n, system, user) {
        Ok(text) => Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }))
        .into_response(),
        Err(resp) => *resp,
    }
}

async fn anthropic_handler(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let n = record(&fake, &model, key);
    if let Some(v) = headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
    {
        fake.seen
            .lock()
            .unwrap()
            .anthropic_versions
            .push(v.to_string());
    }
    if key != Some(KEY) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})),
        )
            .into_response();
    }
    let kind = model.split('-').next().unwrap_or_default();
    if kind == "slow" {
        std::future::pending::<()>().await;
    }
    let system = body["system"].as_str().unwrap_or_default();
    let user = body["messages"][0]["content"].as_str().unwrap_or_default();
    match model_reply(kind, &model, n, system, user) {
        Ok(text) => Json(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 50, "output_tokens": 10},
        }))
        .into_response(),
        Err(resp) => *resp,
    }
}

/// Records what the engine reports.
#[derive(Default)]
pub struct Recorder {
    pub rounds: Vec<u32>,
    pub snapshots: Vec<Debate>,
    /// (agent, round, error kind, message)
    pub errors: Vec<(String, u32, String, String)>,
}

impl DebateObserver for Recorder {
    async fn on_round_complete(&mut self, debate: &Debate, round: u32) {
        self.rounds.push(round);
        self.snapshots.push(debate.clone());
    }

    async fn on_agent_error(&mut self, agent: &str, round: u32, error: &ProviderError) {
        self.errors.push((
            agent.to_string(),
            round,
            error.kind().to_string(),
            error.to_string(),
        ));
    }
}

/// Every id a position cites exists in the debate's evidence.
pub fn assert_evidence_consistent(d: &Debate) {
    for r in &d.rounds {
        for p in &r.positions {
            for id in &p.evidence_ids {
                assert!(
                    d.evidence.iter().any(|e| &e.id == id),
                    "{id} cited but missing"
                );
            }
        }
    }
}
