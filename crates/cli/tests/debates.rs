//! Debates, their events and their knowledge through the real binary over HTTP, on SQLite and
//! PostgreSQL: a demo debate end to end, validation, import, workspace scoping, the event feed,
//! the outbox under a failed transaction, and crash recovery (SIGKILL mid-debate, then restart).

use aragora_core::consensus;
use aragora_core::debate::Debate;
use aragora_testkit::{Backend, Server, ServerOptions, both_backends, eventually};
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_aragora");
const WAIT: Duration = Duration::from_secs(60);

type Mutate = Box<dyn Fn(&mut Value)>;

/// A server whose debate jobs are re-leased 2 s after their worker dies.
async fn start(backend: Backend) -> Server {
    Server::start_with(
        BIN,
        backend,
        ServerOptions {
            args: vec!["--debate-lease-secs".into(), "2".into()],
            env: vec![],
        },
    )
    .await
}

fn demo_debate(task: &str, agents: usize) -> Value {
    json!({
        "task": task,
        "agents": (1..=agents).map(|i| json!({"name": format!("a{i}"), "provider": "demo"})).collect::<Vec<_>>(),
        "rounds": 3,
        "consensus": {"mode": "majority", "threshold": 0.6},
    })
}

async fn wait_finished(s: &Server, token: &str, id: &str) -> Value {
    eventually(WAIT, || async {
        let (status, body) = s.get(&format!("/api/v1/debates/{id}"), token).await;
        assert_eq!(status, 200, "{body}");
        matches!(body["status"].as_str(), Some("completed" | "failed")).then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("debate {id} did not finish"))
}

/// All events of the workspace, paging with `after`.
async fn all_events(s: &Server, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/events?limit=200&after={a}"),
            None => "/api/v1/events?limit=200".to_string(),
        };
        let (status, body) = s.get(&path, token).await;
        assert_eq!(status, 200, "{body}");
        out.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Events of `debate_id` by type.
fn count(events: &[Value], debate_id: &str, event_type: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event_type"] == event_type && e["data"]["debate_id"] == debate_id)
        .count()
}

/// Waits until the feed shows `n` events of `event_type` for `debate_id` (on PostgreSQL the feed
/// shows a transaction once every older transaction of the cluster has finished).
async fn events_of(
    s: &Server,
    token: &str,
    debate_id: &str,
    event_type: &str,
    n: usize,
) -> Vec<Value> {
    eventually(WAIT, || async {
        let events = all_events(s, token).await;
        (count(&events, debate_id, event_type) >= n).then_some(events)
    })
    .await
    .unwrap_or_else(|| panic!("{event_type} for {debate_id} never appeared {n} time(s)"))
}

fn assert_outcome_recomputes(record: &Value) {
    let d: Debate = serde_json::from_value(record.clone()).expect("the §10 record shape");
    let o = consensus::decide(&d.consensus, &d.agents, &d.votes, d.judge.as_ref());
    assert_eq!(d.winner, o.winner, "winner");
    assert_eq!(d.consensus_reached, o.consensus_reached);
    assert_eq!(d.confidence, o.confidence);
    assert_eq!(d.consensus_strength, o.consensus_strength);
    assert_eq!(d.rounds_used as usize, d.rounds.len());
    let winner = d
        .winner
        .as_deref()
        .expect("a completed demo debate has a winner");
    assert_eq!(
        d.final_answer.as_deref(),
        d.final_position(winner).map(|p| p.answer.as_str())
    );
}

both_backends!(demo_debate_end_to_end, |backend| async move {
    let s = start(backend).await;
    let member = s.token("m", "default", "member").await;
    let body = demo_debate("Design a rate limiter for a public API", 5);
    let resp = s
        .http()
        .post(s.url("/api/v1/debates"))
        .bearer_auth(&member)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let started: Value = resp.json().await.unwrap();
    assert_eq!(started["status"], "pending");
    let id = started["debate_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("deb-"), "{id}");
    assert_eq!(location, format!("/api/v1/debates/{id}"));

    let record = wait_finished(&s, &member, &id).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["id"], id);
    assert_eq!(record["rounds"].as_array().unwrap().len(), 3);
    assert_eq!(record["votes"].as_array().unwrap().len(), 5);
    assert_outcome_recomputes(&record);
    let outcome = if record["consensus_reached"] == true {
        "consensus"
    } else {
        "no_consensus"
    };
    assert_eq!(record["outcome"], outcome);
    assert_eq!(record["origin"], "run");
    assert!(record["started_at"].is_string() && record["completed_at"].is_string());

    // Each event exactly once, in the guide's shape.
    let n_reached = usize::from(record["consensus_reached"] == true);
    let events = events_of(&s, &member, &id, "debate.completed", 1).await;
    assert_eq!(count(&events, &id, "debate.started"), 1);
    assert_eq!(count(&events, &id, "debate.completed"), 1);
    assert_eq!(count(&events, &id, "consensus.reached"), n_reached);
    assert_eq!(count(&events, &id, "agent.error"), 0);
    let completed = events
        .iter()
        .find(|e| e["event_type"] == "debate.completed" && e["data"]["debate_id"] == id.as_str())
        .unwrap();
    assert!(completed["event_id"].as_str().unwrap().starts_with("evt-"));
    assert!(completed["timestamp"].as_str().unwrap().ends_with('Z'));
    let data = &completed["data"];
    assert_eq!(data["task"], body["task"]);
    assert_eq!(data["outcome"], outcome);
    assert_eq!(data["consensus_strength"], record["consensus_strength"]);
    assert_eq!(data["winner"], record["winner"]);
    assert_eq!(data["confidence"], record["confidence"]);
    assert_eq!(data["rounds_used"], 3);
    let started_pos = events
        .iter()
        .position(|e| e["event_type"] == "debate.started")
        .unwrap();
    let completed_pos = events
        .iter()
        .position(|e| e["event_type"] == "debate.completed")
        .unwrap();
    assert!(started_pos < completed_pos, "started before completed");

    // The conclusion is in the Knowledge Mound.
    let (status, found) = s
        .get(
            "/api/v1/knowledge/search?q=rate%20limiter&source_type=debate",
            &member,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    let hit = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["source_key"] == id.as_str())
        .unwrap_or_else(|| panic!("conclusion not found: {found}"));
    assert!(
        hit["content"]
            .as_str()
            .unwrap()
            .contains(record["final_answer"].as_str().unwrap()),
        "{hit}"
    );
    assert_eq!(hit["exact_phrase"], true);
    assert!(hit["snippet"].as_str().unwrap().contains("<mark>"), "{hit}");
    assert_eq!(hit["metadata"]["debate_id"], id.as_str());
    let (status, item) = s
        .get(
            &format!("/api/v1/knowledge/items/{}", hit["id"].as_str().unwrap()),
            &member,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(item["source_type"], "debate");

    // Listed, filterable, paged.
    let (status, list) = s.get("/api/v1/debates?status=completed", &member).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["outcome"], outcome);
    assert_eq!(list["total"], 1);
    let (_, none) = s.get("/api/v1/debates?status=running", &member).await;
    assert_eq!(none["total"], 0);
});

both_backends!(debate_requests_are_validated, |backend| async move {
    let s = start(backend).await;
    let member = s.token("m", "default", "member").await;
    let viewer = s.token("v", "default", "viewer").await;
    let cases = [
        (
            json!({"agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "demo"}]}),
            "task",
        ),
        (
            json!({"task": "t", "agents": [{"name": "a", "provider": "demo"}]}),
            "agents",
        ),
        (
            json!({"task": "t", "agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "gpt"}]}),
            "agents[1].provider",
        ),
        (
            json!({"task": "t", "agents": [{"name": "a", "provider": "demo"}, {"name": "a", "provider": "demo"}]}),
            "agents[1].name",
        ),
        (
            json!({"task": "t", "agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "openai"}]}),
            "agents[1].model",
        ),
        (
            json!({"task": "t", "rounds": 0, "agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "demo"}]}),
            "rounds",
        ),
        (
            json!({"task": "t", "consensus": {"mode": "majority", "threshold": 2}, "agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "demo"}]}),
            "consensus.threshold",
        ),
        (
            json!({"task": "t", "consensus": {"mode": "judge"}, "agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "demo"}]}),
            "consensus.judge",
        ),
        (json!({"task": "t", "agents": "two"}), "agents"),
    ];
    for (body, field) in cases {
        let (status, resp) = s.post("/api/v1/debates", &member, &body).await;
        assert_eq!(status, 422, "{body} → {resp}");
        assert_eq!(resp["error"]["code"], "validation_failed");
        assert_eq!(resp["error"]["details"]["field"], field, "{body} → {resp}");
    }
    let body = demo_debate("t", 2);
    let (status, _) = s
        .call(Method::POST, "/api/v1/debates", None, Some(&body))
        .await;
    assert_eq!(status, 401);
    let (status, resp) = s.post("/api/v1/debates", &viewer, &body).await;
    assert_eq!(status, 403, "{resp}");
    let (status, resp) = s.post("/api/v1/debates/import", &viewer, &json!({})).await;
    assert_eq!(status, 403, "{resp}");
    // Nothing was created by any refused request.
    let (_, list) = s.get("/api/v1/debates", &member).await;
    assert_eq!(list["total"], 0);
    let (status, resp) = s.get("/api/v1/debates?status=done", &member).await;
    assert_eq!(
        (status, resp["error"]["details"]["field"].as_str()),
        (422, Some("status"))
    );
    let (status, resp) = s.get("/api/v1/debates?cursor=%21%21", &member).await;
    assert_eq!(
        (status, resp["error"]["details"]["field"].as_str()),
        (422, Some("cursor"))
    );
});

fn transcript(id: &str) -> Value {
    json!({
        "id": id, "task": "Choose a queue for billing events",
        "consensus": {"mode": "majority", "threshold": 0.6},
        "agents": [{"name": "alice", "provider": "openai", "model": "gpt-x", "weight": 1.0},
                   {"name": "bob", "provider": "anthropic", "model": "claude-x"},
                   {"name": "carol", "provider": "demo"}],
        "evidence": [{"id": "ev-1", "claim": "Kafka keeps ordered partitions", "source": "docs", "url": null}],
        "rounds": [{"round": 0,
            "positions": [
                {"agent": "alice", "answer": "Kafka with idempotent consumers", "reasoning": "ordering per account", "confidence": 0.8, "evidence_ids": ["ev-1"]},
                {"agent": "bob", "answer": "PostgreSQL outbox", "reasoning": "one system fewer", "confidence": 0.7, "evidence_ids": []},
                {"agent": "carol", "answer": "SQS FIFO", "reasoning": "managed", "confidence": 0.5, "evidence_ids": []}],
            "critiques": [{"critic": "bob", "target": "alice", "issues": ["ops cost"], "suggestions": ["start smaller"], "severity": 6.5, "reasoning": "…"}]}],
        "votes": [{"agent": "alice", "choice": "alice", "confidence": 0.9, "reasoning": "r"},
                  {"agent": "bob", "choice": "alice", "confidence": 0.8, "reasoning": "r"},
                  {"agent": "carol", "choice": "bob", "confidence": 0.6, "reasoning": "r"}],
        "judge": null,
        "status": "running", "final_answer": "nonsense", "winner": "carol", "consensus_reached": false,
        "confidence": 0.01, "consensus_strength": 0.02, "rounds_used": 7
    })
}

both_backends!(
    imports_are_validated_recomputed_and_announced_once,
    |backend| async move {
        let s = start(backend).await;
        let member = s.token("m", "default", "member").await;
        let (status, rec) = s
            .post("/api/v1/debates/import", &member, &transcript("billing-42"))
            .await;
        assert_eq!(status, 201, "{rec}");
        assert_eq!(rec["id"], "billing-42", "the caller's id is kept");
        assert_eq!(rec["status"], "completed");
        assert_eq!(rec["origin"], "import");
        assert_eq!(rec["winner"], "alice", "recomputed, not the caller's");
        assert_eq!(rec["consensus_reached"], true);
        assert_eq!(rec["rounds_used"], 1);
        assert_eq!(rec["final_answer"], "Kafka with idempotent consumers");
        assert_outcome_recomputes(&rec);
        let (status, got) = s.get("/api/v1/debates/billing-42", &member).await;
        assert_eq!(status, 200);
        assert_eq!(got["votes"], rec["votes"]);
        assert_eq!(got["rounds"], rec["rounds"]);

        let events = events_of(&s, &member, "billing-42", "consensus.reached", 1).await;
        assert_eq!(count(&events, "billing-42", "debate.completed"), 1);
        assert_eq!(count(&events, "billing-42", "debate.started"), 0);

        // A duplicate id is a 409 and its transaction leaves nothing behind: no second event, no
        // second knowledge item.
        let (status, resp) = s
            .post("/api/v1/debates/import", &member, &transcript("billing-42"))
            .await;
        assert_eq!(status, 409, "{resp}");
        assert_eq!(resp["error"]["code"], "conflict");
        // A later import commits after the failed one, so once it is visible, anything the failed
        // transaction had written would be too.
        let (status, _) = s
            .post("/api/v1/debates/import", &member, &transcript("billing-43"))
            .await;
        assert_eq!(status, 201);
        let events = events_of(&s, &member, "billing-43", "debate.completed", 1).await;
        assert_eq!(count(&events, "billing-42", "debate.completed"), 1);
        assert_eq!(count(&events, "billing-42", "consensus.reached"), 1);
        let (_, found) = s
            .get(
                "/api/v1/knowledge/search?q=billing%20events&source_type=debate",
                &member,
            )
            .await;
        let keys: Vec<&str> = found["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["source_key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys.iter().filter(|k| **k == "billing-42").count(),
            1,
            "{found}"
        );

        // Validation over HTTP names the field; nothing is stored.
        let bad: Vec<(Mutate, &str)> = vec![
            (
                Box::new(|t| t["votes"][2]["choice"] = json!("mallory")),
                "votes[2].choice",
            ),
            (
                Box::new(|t| t["votes"][0]["agent"] = json!("eve")),
                "votes[0].agent",
            ),
            (
                Box::new(|t| t["rounds"][0]["critiques"][0]["target"] = json!("dave")),
                "rounds[0].critiques[0].target",
            ),
            (
                Box::new(|t| t["rounds"][0]["positions"][0]["confidence"] = json!(1.2)),
                "rounds[0].positions[0].confidence",
            ),
            (
                Box::new(|t| t["votes"][1]["confidence"] = json!(-1)),
                "votes[1].confidence",
            ),
            (
                Box::new(|t| t["rounds"][0]["critiques"][0]["severity"] = json!(10.5)),
                "rounds[0].critiques[0].severity",
            ),
            (
                Box::new(|t| t["rounds"][0]["positions"][0]["evidence_ids"] = json!(["ev-404"])),
                "rounds[0].positions[0].evidence_ids[0]",
            ),
            (
                Box::new(|t| t["agents"][1]["name"] = json!("alice")),
                "agents[1].name",
            ),
            (
                Box::new(|t| t["votes"][1]["choice"] = json!(7)),
                "votes[1].choice",
            ),
            (Box::new(|t| t["id"] = json!("no spaces allowed")), "id"),
        ];
        for (mutate, field) in bad {
            let mut t = transcript("billing-bad");
            mutate(&mut t);
            let (status, resp) = s.post("/api/v1/debates/import", &member, &t).await;
            assert_eq!(status, 422, "{field}: {resp}");
            assert_eq!(resp["error"]["details"]["field"], field, "{resp}");
        }
        let (status, _) = s.get("/api/v1/debates/billing-bad", &member).await;
        assert_eq!(status, 404);
        let (_, list) = s.get("/api/v1/debates", &member).await;
        assert_eq!(list["total"], 2);
    }
);

both_backends!(another_workspace_sees_nothing, |backend| async move {
    let s = start(backend).await;
    let a = s.token("a", "team-a", "member").await;
    let b = s.token("b", "team-b", "member").await;
    let (status, _) = s
        .post("/api/v1/debates/import", &a, &transcript("shared-id"))
        .await;
    assert_eq!(status, 201);
    let (status, started) = s
        .post("/api/v1/debates", &a, &demo_debate("Pick a cache", 3))
        .await;
    assert_eq!(status, 202);
    let run_id = started["debate_id"].as_str().unwrap().to_string();
    wait_finished(&s, &a, &run_id).await;

    for id in ["shared-id", run_id.as_str()] {
        let (status, resp) = s.get(&format!("/api/v1/debates/{id}"), &b).await;
        assert_eq!(status, 404, "{resp}");
        assert_eq!(resp["error"]["code"], "not_found");
    }
    let (_, list) = s.get("/api/v1/debates", &b).await;
    assert_eq!(list["total"], 0);
    assert!(all_events(&s, &b).await.is_empty());
    let (_, found) = s.get("/api/v1/knowledge/search?q=billing", &b).await;
    assert_eq!(found["total"], 0);
    let (_, mine) = s.get("/api/v1/knowledge/search?q=billing", &a).await;
    let item_id = mine["items"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = s
        .get(&format!("/api/v1/knowledge/items/{item_id}"), &b)
        .await;
    assert_eq!(status, 404);
    // Ids are per workspace: B may import the same id.
    let (status, _) = s
        .post("/api/v1/debates/import", &b, &transcript("shared-id"))
        .await;
    assert_eq!(status, 201);
    // A's cursor means nothing in B.
    let a_events = all_events(&s, &a).await;
    let cursor = a_events[0]["event_id"].as_str().unwrap();
    let (status, resp) = s.get(&format!("/api/v1/events?after={cursor}"), &b).await;
    assert_eq!(
        (status, resp["error"]["details"]["field"].as_str()),
        (422, Some("after"))
    );
});

both_backends!(the_event_feed_filters_and_pages, |backend| async move {
    let s = start(backend).await;
    let member = s.token("m", "default", "member").await;
    for i in 0..3 {
        let (status, _) = s
            .post(
                "/api/v1/debates/import",
                &member,
                &transcript(&format!("feed-{i}")),
            )
            .await;
        assert_eq!(status, 201);
    }
    events_of(&s, &member, "feed-2", "debate.completed", 1).await;
    let (status, page) = s
        .get("/api/v1/events?type=debate.completed&limit=2", &member)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 3);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|e| e["event_type"] == "debate.completed"));
    assert_eq!(items[0]["data"]["debate_id"], "feed-0", "oldest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = s
        .get(
            &format!("/api/v1/events?type=debate.completed&limit=2&after={cursor}"),
            &member,
        )
        .await;
    let rest = rest["items"].as_array().unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["data"]["debate_id"], "feed-2");
    let (status, resp) = s.get("/api/v1/events?type=Not%20A%20Type", &member).await;
    assert_eq!(
        (status, resp["error"]["details"]["field"].as_str()),
        (422, Some("type"))
    );
    let (status, resp) = s.get("/api/v1/events?after=evt-nope", &member).await;
    assert_eq!(
        (status, resp["error"]["details"]["field"].as_str()),
        (422, Some("after"))
    );
    let (status, _) = s.call(Method::GET, "/api/v1/events", None, None).await;
    assert_eq!(status, 401);
});

/// A loopback OpenAI-compatible model that answers after `delay`, counting calls per step.
/// `garbage-*` models answer with JSON that has none of the fields a step needs.
#[derive(Clone, Default)]
struct SlowModel {
    delay: Duration,
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl SlowModel {
    fn proposals(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, step)| step == "propose")
            .count()
    }
}

async fn slow_model_handler(State(m): State<SlowModel>, Json(body): Json<Value>) -> Json<Value> {
    tokio::time::sleep(m.delay).await;
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    let user = body["messages"][1]["content"].as_str().unwrap_or_default();
    let agent = system.split('"').nth(1).unwrap_or("?").to_string();
    let step = if system.contains("\"critiques\"") {
        "critique"
    } else if system.contains("\"choice\"") {
        "vote"
    } else if system.contains("initial proposal") {
        "propose"
    } else {
        "revise"
    };
    let n = {
        let mut calls = m.calls.lock().unwrap();
        calls.push((agent.clone(), step.to_string()));
        calls.len()
    };
    let text = if model.starts_with("garbage") {
        json!({"status": "ok"}).to_string()
    } else {
        match step {
            "critique" => json!({"critiques": []}).to_string(),
            "vote" => {
                let first = user
                    .lines()
                    .find_map(|l| l.strip_prefix("Candidates: "))
                    .and_then(|c| c.split(", ").min())
                    .unwrap_or_default()
                    .to_string();
                json!({"choice": first, "confidence": 0.9, "reasoning": "best"}).to_string()
            }
            _ => json!({"answer": format!("{step} by {agent} (call {n})"), "reasoning": "because", "confidence": 0.7}).to_string(),
        }
    };
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }))
}

async fn slow_model(delay: Duration) -> (SlowModel, String) {
    let m = SlowModel {
        delay,
        ..Default::default()
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(slow_model_handler))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (m, format!("http://{addr}/v1"))
}

// A member names a base_url on the server's private network: without an allowlist the server
// does not call it (the answer would come back in the agent's error and its `agent.error`
// event), and with `--provider-allow-cidrs` naming that network it does.
both_backends!(
    a_base_url_on_a_private_network_is_not_called_unless_allowed,
    |backend| async move {
        let (model, base) = slow_model(Duration::from_millis(0)).await;
        let s = Server::start_with(
            BIN,
            backend,
            ServerOptions {
                args: vec![],
                env: vec![("ARAGORA_PROVIDER_ALLOW_CIDRS".into(), String::new())],
            },
        )
        .await;
        let member = s.token("m", "default", "member").await;
        let body = json!({
            "task": "Probe",
            "agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "demo"},
                       {"name": "x", "provider": "openai-compatible", "model": "good-1", "base_url": base}],
            "rounds": 1,
        });
        let (status, started) = s.post("/api/v1/debates", &member, &body).await;
        assert_eq!(status, 202, "{started}");
        let id = started["debate_id"].as_str().unwrap().to_string();
        let record = wait_finished(&s, &member, &id).await;
        let failure = &record["agent_failures"][0];
        assert_eq!(failure["agent"], "x", "{record}");
        assert!(
            failure["error"]
                .as_str()
                .unwrap()
                .contains("not an address a base_url may reach"),
            "{record}"
        );
        assert_eq!(model.proposals(), 0, "the private service was not called");
        drop(s);

        // The default test servers allow loopback: the same debate reaches the model.
        let s = start(backend).await;
        let member = s.token("m", "default", "member").await;
        let (_, started) = s.post("/api/v1/debates", &member, &body).await;
        let id = started["debate_id"].as_str().unwrap().to_string();
        let record = wait_finished(&s, &member, &id).await;
        assert!(
            record["agent_failures"]
                .as_array()
                .is_none_or(|f| f.is_empty()),
            "{record}"
        );
        assert!(model.proposals() > 0);
    }
);

both_backends!(
    a_debate_killed_mid_run_resumes_from_its_last_round,
    |backend| async move {
        let (model, base) = slow_model(Duration::from_millis(400)).await;
        let mut s = start(backend).await;
        let member = s.token("m", "default", "member").await;
        let agent = |name: &str, model: &str| json!({"name": name, "provider": "openai-compatible", "model": model, "base_url": base});
        let body = json!({
            "task": "Choose a retry policy",
            "agents": [agent("x", "good-1"), agent("y", "good-2"), agent("z", "garbage-1")],
            "rounds": 3,
        });
        let (status, started) = s.post("/api/v1/debates", &member, &body).await;
        assert_eq!(status, 202, "{started}");
        let id = started["debate_id"].as_str().unwrap().to_string();

        // Round 0 is stored (z failed in it), the next step is in flight: crash.
        let round0 = eventually(WAIT, || async {
            let (_, d) = s.get(&format!("/api/v1/debates/{id}"), &member).await;
            (d["rounds"].as_array().is_some_and(|r| !r.is_empty())).then_some(d)
        })
        .await
        .expect("round 0 stored");
        assert_eq!(round0["status"], "running");
        assert_eq!(round0["agent_failures"][0]["agent"], "z");
        s.kill().await;
        let proposals_before = model.proposals();
        assert_eq!(proposals_before, 3);

        s.restart().await;
        let record = wait_finished(&s, &member, &id).await;
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(
            model.proposals(),
            proposals_before,
            "resumed: round 0 was not proposed again"
        );
        assert_eq!(
            record["rounds"][0]["positions"],
            round0["rounds"][0]["positions"]
        );
        assert_eq!(record["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(record["winner"], "x");
        assert_outcome_recomputes(&record);

        let events = events_of(&s, &member, &id, "debate.completed", 1).await;
        assert_eq!(count(&events, &id, "debate.started"), 1);
        assert_eq!(count(&events, &id, "debate.completed"), 1);
        assert_eq!(
            count(&events, &id, "agent.error"),
            1,
            "z failed once, announced once"
        );
        let err = events
            .iter()
            .find(|e| e["event_type"] == "agent.error")
            .unwrap();
        assert_eq!(err["data"]["agent"], "z");
        assert_eq!(err["data"]["round"], 0);
        assert_eq!(err["data"]["error_kind"], "unusable");
    }
);

both_backends!(
    no_debate_hangs_in_running_after_a_crash,
    |backend| async move {
        let mut s = start(backend).await;
        let member = s.token("m", "default", "member").await;
        let mut ids = Vec::new();
        let posts = (0..40).map(|i| {
            let s = &s;
            let member = &member;
            async move {
                let (status, b) = s
                    .post(
                        "/api/v1/debates",
                        member,
                        &demo_debate(&format!("Crash test {i}"), 5),
                    )
                    .await;
                assert_eq!(status, 202, "{b}");
                b["debate_id"].as_str().unwrap().to_string()
            }
        });
        ids.extend(futures::future::join_all(posts).await);
        s.kill().await;
        s.restart().await;
        for id in &ids {
            let d = wait_finished(&s, &member, id).await;
            assert_eq!(d["status"], "completed", "{d}");
        }
        let (_, running) = s.get("/api/v1/debates?status=running", &member).await;
        let (_, pending) = s.get("/api/v1/debates?status=pending", &member).await;
        assert_eq!(
            (running["total"].as_i64(), pending["total"].as_i64()),
            (Some(0), Some(0))
        );
        let events = eventually(WAIT, || async {
            let events = all_events(&s, &member).await;
            let done = events
                .iter()
                .filter(|e| e["event_type"] == "debate.completed")
                .count();
            (done >= ids.len()).then_some(events)
        })
        .await
        .expect("every debate announced its completion");
        for id in &ids {
            assert_eq!(count(&events, id, "debate.started"), 1, "{id}");
            assert_eq!(count(&events, id, "debate.completed"), 1, "{id}");
        }
    }
);

/// A judge-mode transcript: `j` judges and has no position; the others debate.
fn judged_transcript(id: &str) -> Value {
    let mut t = transcript(id);
    t["agents"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "j", "provider": "openai", "model": "gpt-x"}));
    t["consensus"] = json!({"mode": "judge", "judge": "j"});
    t["judge"] = json!({"agent": "j", "choice": "bob", "reasoning": "one system fewer"});
    t
}

both_backends!(
    imports_refuse_ids_providers_and_judgements_that_cannot_hold,
    |backend| async move {
        let s = start(backend).await;
        let member = s.token("m", "default", "member").await;
        let bad: Vec<(Mutate, &str)> = vec![
            // `/api/v1/debates/import` is the import route: such a debate could never be read.
            (Box::new(|t| t["id"] = json!("import")), "id"),
            (Box::new(|t| t["id"] = json!("..")), "id"),
            (Box::new(|t| t["id"] = json!("")), "id"),
            (
                Box::new(|t| {
                    t["agents"][1].as_object_mut().unwrap().remove("provider");
                }),
                "agents[1].provider",
            ),
            (
                Box::new(|t| t["agents"][2]["provider"] = json!("")),
                "agents[2].provider",
            ),
            // Judge mode without the judgement that decides it.
            (
                Box::new(|t| {
                    *t = judged_transcript("judged");
                    t["judge"] = json!(null);
                }),
                "judge",
            ),
            (
                Box::new(|t| {
                    t["consensus"] = json!({"mode": "judge"});
                }),
                "judge",
            ),
            // The judge picks itself, an agent with no position.
            (
                Box::new(|t| {
                    *t = judged_transcript("judged");
                    t["judge"]["choice"] = json!("j");
                }),
                "judge.choice",
            ),
        ];
        // Every case is tried before failing, so a failure names all that pass wrongly.
        let mut wrong = Vec::new();
        for (mutate, field) in bad {
            let mut t = transcript("import-bad");
            mutate(&mut t);
            let (status, resp) = s.post("/api/v1/debates/import", &member, &t).await;
            if status != 422 || resp["error"]["details"]["field"] != field {
                wrong.push(format!("{field}: {status} {resp}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        let (_, list) = s.get("/api/v1/debates", &member).await;
        assert_eq!(list["total"], 0, "nothing of a refused import is stored");

        // `null` means no id, as an absent one: the server assigns it.
        let (status, rec) = s
            .post(
                "/api/v1/debates/import",
                &member,
                &transcript_with_id(json!(null)),
            )
            .await;
        assert_eq!(status, 201, "{rec}");
        let id = rec["id"].as_str().unwrap();
        assert!(id.starts_with("deb-"), "{id}");
        let (status, _) = s.get(&format!("/api/v1/debates/{id}"), &member).await;
        assert_eq!(status, 200);

        // A provider this server lacks is kept: the record says what ran elsewhere.
        let mut t = transcript("elsewhere");
        t["agents"][0]["provider"] = json!("bedrock");
        let (status, rec) = s.post("/api/v1/debates/import", &member, &t).await;
        assert_eq!(status, 201, "{rec}");
        assert_eq!(rec["agents"][0]["provider"], "bedrock");

        let (status, rec) = s
            .post(
                "/api/v1/debates/import",
                &member,
                &judged_transcript("judged"),
            )
            .await;
        assert_eq!(status, 201, "{rec}");
        assert_eq!(rec["winner"], "bob");
        assert_eq!(rec["consensus_reached"], true);
        assert_eq!(rec["final_answer"], "PostgreSQL outbox");
    }
);

fn transcript_with_id(id: Value) -> Value {
    let mut t = transcript("x");
    t["id"] = id;
    t
}

/// `(items, next_cursor)` of a list page.
async fn page(s: &Server, token: &str, path: &str) -> (usize, Option<String>) {
    let (status, body) = s.get(path, token).await;
    assert_eq!(status, 200, "{path}: {body}");
    (
        body["items"].as_array().unwrap().len(),
        body["next_cursor"].as_str().map(str::to_string),
    )
}

both_backends!(
    lists_end_with_a_null_cursor_on_an_exactly_full_page,
    |backend| async move {
        use aragora_webhooks::receiver::{Receiver, ReceiverConfig};
        let s = start(backend).await;
        let member = s.token("m", "default", "member").await;
        // (items expected, path, (items, next_cursor)) of every last page, checked at the end so a
        // failure names all the lists that get it wrong.
        let mut last: Vec<(usize, String, (usize, Option<String>))> = Vec::new();

        // Debates: one matching debate and limit=1 is the last page.
        let (status, _) = s
            .post("/api/v1/debates/import", &member, &transcript("full-0"))
            .await;
        assert_eq!(status, 201);
        last.push((
            1,
            "/api/v1/debates?status=completed&limit=1".to_string(),
            page(&s, &member, "/api/v1/debates?status=completed&limit=1").await,
        ));
        for i in 1..3 {
            let (status, _) = s
                .post(
                    "/api/v1/debates/import",
                    &member,
                    &transcript(&format!("full-{i}")),
                )
                .await;
            assert_eq!(status, 201);
        }
        last.push((
            3,
            "/api/v1/debates?limit=3".to_string(),
            page(&s, &member, "/api/v1/debates?limit=3").await,
        ));
        let (n, next) = page(&s, &member, "/api/v1/debates?limit=2").await;
        assert_eq!(n, 2);
        let next = next.expect("a third debate follows");
        last.push((
            1,
            format!("/api/v1/debates?limit=2&cursor={next}"),
            page(
                &s,
                &member,
                &format!("/api/v1/debates?limit=2&cursor={next}"),
            )
            .await,
        ));

        // Events: caught up on an exactly full page.
        events_of(&s, &member, "full-2", "debate.completed", 1).await;
        last.push((
            3,
            "/api/v1/events?type=debate.completed&limit=3".to_string(),
            page(&s, &member, "/api/v1/events?type=debate.completed&limit=3").await,
        ));
        let (n, next) = page(&s, &member, "/api/v1/events?type=debate.completed&limit=2").await;
        assert_eq!(n, 2);
        let next = next.expect("a third event follows");
        last.push((
            1,
            format!("/api/v1/events?type=debate.completed&limit=2&after={next}"),
            page(
                &s,
                &member,
                &format!("/api/v1/events?type=debate.completed&limit=2&after={next}"),
            )
            .await,
        ));

        // Webhooks and their receipts.
        let rx = Receiver::start(ReceiverConfig::new("full-page-secret-1"))
            .await
            .expect("receiver");
        let mut hook = String::new();
        for types in [json!(["order.created"]), json!(["never.sent"])] {
            let (status, w) = s
                .post(
                    "/api/webhooks",
                    &member,
                    &json!({"url": rx.url(), "secret": "full-page-secret-1", "event_types": types}),
                )
                .await;
            assert_eq!(status, 201, "{w}");
            if hook.is_empty() {
                hook = w["id"].as_str().unwrap().to_string();
            }
        }
        last.push((
            2,
            "/api/webhooks?limit=2".to_string(),
            page(&s, &member, "/api/webhooks?limit=2").await,
        ));
        let (n, next) = page(&s, &member, "/api/webhooks?limit=1").await;
        assert_eq!((n, next.is_some()), (1, true));
        for i in 0..2 {
            let (status, e) = s
                .post(
                    "/api/v1/events",
                    &member,
                    &json!({"event_type": "order.created", "data": {"order": i}}),
                )
                .await;
            assert_eq!(status, 202, "{e}");
        }
        let receipts = format!("/api/webhooks/{hook}/receipts");
        eventually(WAIT, || async {
            let (_, body) = s.get(&format!("{receipts}?limit=200"), &member).await;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            (items.len() == 2 && items.iter().all(|r| r["status"] == "succeeded")).then_some(())
        })
        .await
        .expect("both deliveries succeed");
        last.push((
            2,
            format!("{receipts}?limit=2"),
            page(&s, &member, &format!("{receipts}?limit=2")).await,
        ));
        let (n, next) = page(&s, &member, &format!("{receipts}?limit=1")).await;
        assert_eq!((n, next.is_some()), (1, true));

        // Explainability batch results.
        let (status, batch) = s
            .post(
                "/api/v1/explainability/batch",
                &member,
                &json!({"debate_ids": ["full-0", "full-1", "full-2"]}),
            )
            .await;
        assert_eq!(status, 202, "{batch}");
        let batch_id = batch["batch_id"].as_str().unwrap().to_string();
        eventually(WAIT, || async {
            let (_, st) = s
                .get(
                    &format!("/api/v1/explainability/batch/{batch_id}/status"),
                    &member,
                )
                .await;
            (st["status"] == "completed").then_some(())
        })
        .await
        .expect("the batch finishes");
        let results = format!("/api/v1/explainability/batch/{batch_id}/results");
        last.push((
            3,
            format!("{results}?limit=3"),
            page(&s, &member, &format!("{results}?limit=3")).await,
        ));
        let (n, next) = page(&s, &member, &format!("{results}?limit=2")).await;
        assert_eq!(n, 2);
        let next = next.expect("a third result follows");
        last.push((
            1,
            format!("{results}?limit=2&cursor={next}"),
            page(&s, &member, &format!("{results}?limit=2&cursor={next}")).await,
        ));
        let wrong: Vec<_> = last
            .iter()
            .filter(|(want, _, got)| *got != (*want, None))
            .collect();
        assert!(
            wrong.is_empty(),
            "last pages must have next_cursor null: {wrong:#?}"
        );
    }
);
