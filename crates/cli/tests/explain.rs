//! Decision explainability through the real binary over HTTP, on SQLite and PostgreSQL: every
//! format of the single explanation, workspace scoping, stored explanations, and batches (mixed
//! ids, idempotency, bad input, SIGKILL mid-batch and graceful shutdown mid-batch, a batch whose
//! queue job dies).
//!
//! Debates are inserted straight into the server's database with `store::debates::insert_in`
//! (records from `aragora_explain::synth`), so these tests do not depend on the debates API.

use aragora_core::debate::{Debate, DebateStatus};
use aragora_explain::{ExplainOptions, explain, render_markdown, render_mermaid, render_summary};
use aragora_store::{Db, DbOptions};
use aragora_testkit::{Server, ServerOptions, both_backends, eventually};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

async fn open_db(s: &Server) -> Db {
    Db::connect(&s.db.url, &DbOptions::default())
        .await
        .expect("open the server's database")
}

/// Synthetic finished debates `deb-<tag>-<i>` (agents × rounds).
fn debates(tag: &str, n: usize, agents: usize, rounds: usize) -> Vec<Debate> {
    (0..n)
        .map(|i| {
            let mut d = aragora_explain::synth::debate(agents, rounds, i as u64 + 1);
            d.id = format!("deb-{tag}-{i}");
            d
        })
        .collect()
}

async fn insert(db: &Db, workspace: &str, debates: &[Debate]) {
    for chunk in debates.chunks(500) {
        let mut tx = db.begin().await.unwrap();
        for d in chunk {
            aragora_store::debates::insert_in(&mut tx, workspace, d, "test")
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

/// GET returning status, content type and raw body.
async fn get_raw(s: &Server, path: &str, token: &str) -> (u16, String, String) {
    let resp = s
        .http()
        .get(s.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

async fn post_batch(
    s: &Server,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = s.http().post(s.url("/api/v1/explainability/batch"));
    req = req.bearer_auth(token).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

async fn wait_finished(s: &Server, token: &str, batch_id: &str, secs: u64) -> Value {
    eventually(Duration::from_secs(secs), || async {
        let (status, body) = s
            .get(
                &format!("/api/v1/explainability/batch/{batch_id}/status"),
                token,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (body["status"] == "completed").then_some(body)
    })
    .await
    .unwrap_or_else(|| panic!("batch {batch_id} did not finish within {secs}s"))
}

/// Every result of a batch, following cursors with `limit`.
async fn all_results(s: &Server, token: &str, batch_id: &str, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/explainability/batch/{batch_id}/results?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = s.get(&path, token).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        out.extend(items.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    out
}

fn assert_invalid(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert_eq!(body["error"]["details"]["field"], field, "{body}");
}

async fn token_with(s: &Server, name: &str, workspace: &str, perms: &[&str]) -> String {
    let (status, body) = s
        .post(
            "/api/v1/tokens",
            &s.admin_token,
            &json!({"name": name, "workspace": workspace, "permissions": perms}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

both_backends!(
    single_explanation_formats_scoping_and_storage,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let db = open_db(&s).await;
        let mine = debates("a", 3, 5, 3);
        let theirs = debates("b", 1, 5, 3);
        let mut running = debates("run", 1, 3, 2).remove(0);
        running.status = DebateStatus::Running;
        insert(&db, "team-a", &mine).await;
        insert(&db, "team-a", std::slice::from_ref(&running)).await;
        insert(&db, "team-b", &theirs).await;
        let a = s.token("alice", "team-a", "viewer").await;
        let b = s.token("bob", "team-b", "viewer").await;
        let d = &mine[0];
        let e = explain(d, &ExplainOptions::default());
        let expected = serde_json::to_value(&e).unwrap();
        let base = format!("/api/v1/debates/{}/explanation", d.id);

        // json (the default): exactly what the engine computes from the stored record.
        for path in [base.clone(), format!("{base}?format=json")] {
            let (status, ct, body) = get_raw(&s, &path, &a).await;
            assert_eq!(status, 200, "{body}");
            assert!(ct.starts_with("application/json"), "{ct}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v, expected);
        }
        let (_, body) = s.get(&base, &a).await;
        for field in [
            "decision_id",
            "debate_id",
            "conclusion",
            "confidence",
            "consensus_reached",
            "evidence_chain",
            "vote_pivots",
            "counterfactuals",
            "reasoning_chain",
            "belief_changes",
            "confidence_attribution",
            "method",
        ] {
            assert!(body.get(field).is_some(), "missing {field}");
        }
        assert_eq!(body["debate_id"], d.id.as_str());
        assert!(!body["vote_pivots"].as_array().unwrap().is_empty());
        assert!(!body["counterfactuals"].as_array().unwrap().is_empty());

        let (status, ct, text) = get_raw(&s, &format!("{base}?format=summary"), &a).await;
        assert_eq!((status, ct.as_str()), (200, "text/plain; charset=utf-8"));
        assert_eq!(text, render_summary(&e));
        let (status, ct, md) = get_raw(&s, &format!("{base}?format=detailed"), &a).await;
        assert_eq!((status, ct.as_str()), (200, "text/markdown; charset=utf-8"));
        assert_eq!(md, render_markdown(&e));
        assert!(md.starts_with('#'), "{md}");

        let (status, visual) = s.get(&format!("{base}?format=visual"), &a).await;
        assert_eq!(status, 200, "{visual}");
        assert_eq!(visual["mermaid"], render_mermaid(d, &e).as_str());
        assert!(visual["svg"].as_str().unwrap().starts_with("<svg"));
        assert_eq!(visual["decision_id"], e.decision_id.as_str());
        let (status, ct, html) =
            get_raw(&s, &format!("{base}?format=visual&render=html"), &a).await;
        assert_eq!((status, ct.as_str()), (200, "text/html; charset=utf-8"));
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
        let (status, ct, svg) = get_raw(&s, &format!("{base}?format=visual&render=svg"), &a).await;
        assert_eq!((status, ct.as_str()), (200, "image/svg+xml"));
        assert_eq!(svg, visual["svg"].as_str().unwrap());
        let (status, ct, mermaid) =
            get_raw(&s, &format!("{base}?format=visual&render=mermaid"), &a).await;
        assert_eq!((status, ct.as_str()), (200, "text/plain; charset=utf-8"));
        assert!(mermaid.starts_with("flowchart"));

        // Section switches.
        let (_, v) = s
            .get(
                &format!(
                    "{base}?include_evidence=false&include_counterfactuals=false&include_vote_pivots=0"
                ),
                &a,
            )
            .await;
        let lean = explain(
            d,
            &ExplainOptions {
                include_evidence: false,
                include_counterfactuals: false,
                include_vote_pivots: false,
            },
        );
        assert_eq!(v, serde_json::to_value(&lean).unwrap());
        for section in ["evidence_chain", "counterfactuals", "vote_pivots"] {
            assert_eq!(v[section], json!([]), "{section} switched off");
        }
        assert_eq!(v["confidence"], expected["confidence"]);

        // Bad parameters name themselves.
        let (st, body) = s.get(&format!("{base}?format=pdf"), &a).await;
        assert_invalid(st, &body, "format");
        let (st, body) = s.get(&format!("{base}?include_evidence=maybe"), &a).await;
        assert_invalid(st, &body, "include_evidence");
        let (st, body) = s.get(&format!("{base}?render=html"), &a).await;
        assert_invalid(st, &body, "render");
        let (st, body) = s.get(&format!("{base}?format=visual&render=png"), &a).await;
        assert_invalid(st, &body, "render");

        // Missing and foreign debates are both 404; an unfinished one is a 409.
        let (st, body) = s.get("/api/v1/debates/deb-nope/explanation", &a).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
        let foreign = format!("/api/v1/debates/{}/explanation", theirs[0].id);
        let (st, body) = s.get(&foreign, &a).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
        let (st, _) = s.get(&foreign, &b).await;
        assert_eq!(st, 200, "the owner sees it");
        let (st, _) = s.get(&base, &b).await;
        assert_eq!(st, 404, "and not ours");
        let (st, body) = s
            .get(&format!("/api/v1/debates/{}/explanation", running.id), &a)
            .await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (409, Some("conflict"))
        );

        // Permission before lookup: 403 even for a missing debate.
        let nope = token_with(&s, "no-explain", "team-a", &["debates:read"]).await;
        let (st, body) = s.get("/api/v1/debates/deb-nope/explanation", &nope).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (403, Some("forbidden"))
        );

        // The JSON explanation was stored; the latest computation wins.
        let stored_path = format!("/api/v1/explanations/{}", e.decision_id);
        let (st, stored) = s.get(&stored_path, &a).await;
        assert_eq!(st, 200, "{stored}");
        assert_eq!(stored, serde_json::to_value(&lean).unwrap());
        let (_, _) = s.get(&base, &a).await;
        let resp = s
            .http()
            .get(s.url(&stored_path))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-explanation-source"], "request");
        assert!(resp.headers().contains_key("last-modified"));
        assert_eq!(resp.json::<Value>().await.unwrap(), expected);
        let (st, _) = s.get(&stored_path, &b).await;
        assert_eq!(st, 404, "stored explanations are workspace-scoped");
        let (st, _) = s.get("/api/v1/explanations/dec-unknown", &a).await;
        assert_eq!(st, 404);
        let (st, _) = s.get(&stored_path, &nope).await;
        assert_eq!(st, 403);
    }
);

both_backends!(
    batch_of_mixed_ids_with_idempotency_events_and_metrics,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let db = open_db(&s).await;
        let mine = debates("a", 20, 5, 3);
        let theirs = debates("b", 2, 5, 3);
        let mut running = debates("run", 1, 3, 2).remove(0);
        running.status = DebateStatus::Running;
        insert(&db, "team-a", &mine).await;
        insert(&db, "team-a", std::slice::from_ref(&running)).await;
        insert(&db, "team-b", &theirs).await;
        let member = s.token("m", "team-a", "member").await;
        let viewer = s.token("v", "team-a", "viewer").await;
        let other = s.token("o", "team-b", "member").await;

        let mut ids: Vec<String> = mine.iter().map(|d| d.id.clone()).collect();
        ids.push("deb-missing".into());
        ids.push(theirs[0].id.clone());
        ids.push(running.id.clone());
        ids.push(mine[3].id.clone()); // listed twice: explained twice
        let body = json!({"debate_ids": ids, "options": {"include_evidence": true, "include_counterfactuals": true}});

        // A viewer may read but not submit.
        let (st, resp, _) = post_batch(&s, &viewer, &body, None).await;
        assert_eq!(
            (st, resp["error"]["code"].as_str()),
            (403, Some("forbidden"))
        );

        let (st, created, headers) = post_batch(&s, &member, &body, Some("key-1")).await;
        assert_eq!(st, 202, "{created}");
        let batch_id = created["batch_id"].as_str().unwrap().to_string();
        assert!(batch_id.starts_with("batch-"));
        assert_eq!(
            created,
            json!({"batch_id": batch_id, "status": "processing", "phase": "pending", "total": ids.len()})
        );
        assert!(headers.get("idempotent-replayed").is_none());

        // Same key, same body: the same batch. Same key, another body: refused.
        let (st, again, headers) = post_batch(&s, &member, &body, Some("key-1")).await;
        assert_eq!(st, 202, "{again}");
        assert_eq!(again["batch_id"], batch_id.as_str());
        assert_eq!(headers["idempotent-replayed"], "true");
        let other_body = json!({"debate_ids": [mine[0].id]});
        let (st, resp, _) = post_batch(&s, &member, &other_body, Some("key-1")).await;
        assert_invalid(st, &resp, "Idempotency-Key");
        // Keys are per workspace.
        let (st, theirs_created, _) = post_batch(&s, &other, &other_body, Some("key-1")).await;
        assert_eq!(st, 202);
        assert_ne!(theirs_created["batch_id"], batch_id.as_str());

        let status = wait_finished(&s, &viewer, &batch_id, 60).await;
        assert_eq!(status["status"], "completed", "{status}");
        assert_eq!(status["phase"], "partial", "{status}");
        assert_eq!(status["total"], 24);
        assert_eq!(status["processed"], 24);
        assert_eq!(status["succeeded"], 21);
        assert_eq!(status["failed"], 3);
        assert_eq!(status["not_found"], 2);
        assert_eq!(status["progress_percent"], 100.0);
        assert_eq!(status["runs"], 1);
        assert_eq!(status["options"]["format"], "json");
        for t in ["created_at", "started_at", "completed_at", "updated_at"] {
            assert!(
                aragora_core::time::parse_rfc3339(status[t].as_str().unwrap()).is_some(),
                "{t}: {status}"
            );
        }
        // The other workspace cannot see it.
        let (st, _) = s
            .get(
                &format!("/api/v1/explainability/batch/{batch_id}/status"),
                &other,
            )
            .await;
        assert_eq!(st, 404);
        let (st, _) = s
            .get(
                &format!("/api/v1/explainability/batch/{batch_id}/results"),
                &other,
            )
            .await;
        assert_eq!(st, 404);

        let results = all_results(&s, &viewer, &batch_id, 7).await;
        assert_eq!(results.len(), 24);
        let positions: Vec<u64> = results
            .iter()
            .map(|r| r["position"].as_u64().unwrap())
            .collect();
        assert_eq!(positions, (0..24).collect::<Vec<u64>>());
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r["debate_id"], ids[i].as_str());
            assert!(r["processing_time_ms"].as_f64().unwrap() >= 0.0);
            assert_eq!(r["attempt"], 1);
            match i {
                0..=19 | 23 => {
                    assert_eq!(r["status"], "success", "{r}");
                    let d = &mine[if i == 23 { 3 } else { i }];
                    let e = serde_json::to_value(explain(d, &ExplainOptions::default())).unwrap();
                    assert_eq!(r["explanation"], e);
                    assert!(r.get("error").is_none());
                }
                20 | 21 => {
                    assert_eq!(r["status"], "not_found", "{r}");
                    assert!(r.get("explanation").is_none());
                    assert!(r["error"].as_str().unwrap().contains("not found"));
                }
                _ => {
                    assert_eq!(r["status"], "error", "{r}");
                    assert!(r["error"].as_str().unwrap().contains("running"), "{r}");
                }
            }
        }
        let (st, nf) = s
            .get(
                &format!("/api/v1/explainability/batch/{batch_id}/results?status=not_found"),
                &viewer,
            )
            .await;
        assert_eq!(st, 200);
        assert_eq!(nf["total"], 2);
        assert_eq!(nf["batch_status"], "completed");
        assert_eq!(nf["batch_phase"], "partial");
        let got: Vec<&str> = nf["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["debate_id"].as_str().unwrap())
            .collect();
        assert_eq!(got, vec!["deb-missing", theirs[0].id.as_str()]);

        // The batch stored each explanation for /api/v1/explanations.
        let dec = explain(&mine[5], &ExplainOptions::default()).decision_id;
        let resp = s
            .http()
            .get(s.url(&format!("/api/v1/explanations/{dec}")))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-explanation-source"],
            format!("batch:{batch_id}").as_str()
        );

        // Exactly one completion event, in the batch's workspace.
        let event = completion_event(&db, "team-a", &batch_id).await;
        assert_eq!(event["status"], "completed");
        assert_eq!(event["phase"], "partial");
        assert_eq!(event["succeeded"], 21);

        // A text format: each explanation is a string.
        let (st, created, _) = post_batch(
            &s,
            &member,
            &json!({"debate_ids": [mine[0].id, mine[1].id], "options": {"format": "summary", "include_counterfactuals": false}}),
            None,
        )
        .await;
        assert_eq!(st, 202);
        let summary_id = created["batch_id"].as_str().unwrap().to_string();
        let done = wait_finished(&s, &viewer, &summary_id, 60).await;
        assert_eq!(
            (&done["status"], &done["phase"]),
            (&json!("completed"), &json!("completed"))
        );
        let rs = all_results(&s, &viewer, &summary_id, 50).await;
        let opts = ExplainOptions {
            include_counterfactuals: false,
            ..Default::default()
        };
        assert_eq!(
            rs[1]["explanation"],
            render_summary(&explain(&mine[1], &opts)).as_str()
        );

        // A batch of nothing but foreign ids fails.
        let (st, created, _) =
            post_batch(&s, &member, &json!({"debate_ids": [theirs[1].id]}), None).await;
        assert_eq!(st, 202);
        let failed = wait_finished(&s, &viewer, created["batch_id"].as_str().unwrap(), 60).await;
        assert_eq!(failed["status"], "completed", "{failed}");
        assert_eq!(failed["phase"], "failed", "{failed}");

        wait_finished(&s, &other, theirs_created["batch_id"].as_str().unwrap(), 60).await;
        // Metrics (labelled by phase): the finished batches, the active gauge, and the latency histogram.
        let metrics = s.metrics().await;
        let sample = |name: &str| -> Option<f64> {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
        };
        assert_eq!(
            sample("aragora_explainability_batch_jobs_total{status=\"partial\"}"),
            Some(1.0),
            "{metrics}"
        );
        // completed: the summary batch; failed: team-b's batch (mine[0] is not theirs) and the
        // all-foreign one.
        assert_eq!(
            sample("aragora_explainability_batch_jobs_total{status=\"completed\"}"),
            Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            sample("aragora_explainability_batch_jobs_total{status=\"failed\"}"),
            Some(2.0)
        );
        for st in ["pending", "processing"] {
            assert_eq!(
                sample(&format!(
                    "aragora_explainability_batch_jobs_active{{status=\"{st}\"}}"
                )),
                Some(0.0),
                "{metrics}"
            );
        }
        // One turnaround per batch; one latency observation per debate that was found (22 in the
        // mixed batch, 2 in the summary batch, none in the two all-foreign ones).
        assert_eq!(
            sample("aragora_explainability_batch_duration_seconds_count"),
            Some(4.0)
        );
        assert_eq!(
            sample("aragora_explainability_batch_processing_latency_seconds_count"),
            Some(24.0)
        );
    }
);

both_backends!(
    batch_bad_input_is_a_422_naming_the_field,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let t = s.token("m", "team-a", "member").await;
        let (st, body, _) = post_batch(&s, &t, &json!({"debate_ids": []}), None).await;
        assert_invalid(st, &body, "debate_ids");
        let (st, body, _) = post_batch(&s, &t, &json!({}), None).await;
        assert_invalid(st, &body, "debate_ids");
        let too_many: Vec<String> = (0..10_001).map(|i| format!("d{i}")).collect();
        let (st, body, _) = post_batch(&s, &t, &json!({"debate_ids": too_many}), None).await;
        assert_invalid(st, &body, "debate_ids");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("10000"),
            "{body}"
        );
        let max: Vec<String> = (0..10_000).map(|i| format!("d{i}")).collect();
        let (st, body, _) = post_batch(&s, &t, &json!({"debate_ids": max}), None).await;
        assert_eq!(st, 202, "exactly the limit is accepted: {body}");
        let (st, body, _) = post_batch(
            &s,
            &t,
            &json!({"debate_ids": ["deb-1"], "options": {"format": "pdf"}}),
            None,
        )
        .await;
        assert_invalid(st, &body, "options.format");
        let (st, body, _) = post_batch(
            &s,
            &t,
            &json!({"debate_ids": ["deb-1"], "options": {"include_evidense": false}}),
            None,
        )
        .await;
        assert_eq!(st, 422, "a misspelt option is refused: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("include_evidense")
        );
        let (st, body, _) = post_batch(
            &s,
            &t,
            &json!({"debate_ids": ["deb-1"], "options": {"include_evidence": "yes"}}),
            None,
        )
        .await;
        assert_invalid(st, &body, "options.include_evidence");
        // A misspelt top-level field is refused too (`option` ignored would run every section).
        let (st, body, _) = post_batch(
            &s,
            &t,
            &json!({"debate_ids": ["deb-1"], "option": {"include_evidence": false}}),
            None,
        )
        .await;
        assert_invalid(st, &body, "option");
        // `options` must be an object; `null` means the defaults, as leaving it out does.
        let (st, body, _) = post_batch(
            &s,
            &t,
            &json!({"debate_ids": ["deb-1"], "options": []}),
            None,
        )
        .await;
        assert_invalid(st, &body, "options");
        let (st, body, _) = post_batch(
            &s,
            &t,
            &json!({"debate_ids": ["deb-1"], "options": null}),
            None,
        )
        .await;
        assert_eq!(st, 202, "{body}");
        let (_, status) = s
            .get(
                &format!(
                    "/api/v1/explainability/batch/{}/status",
                    body["batch_id"].as_str().unwrap()
                ),
                &t,
            )
            .await;
        assert_eq!(status["options"]["include_evidence"], true, "{status}");
        let (st, body, _) =
            post_batch(&s, &t, &json!({"debate_ids": ["deb-1", "bad id!"]}), None).await;
        assert_invalid(st, &body, "debate_ids[1]");
        let (st, body, _) = post_batch(
            &s,
            &t,
            &json!({"debate_ids": ["deb-1"]}),
            Some(&"k".repeat(300)),
        )
        .await;
        assert_invalid(st, &body, "Idempotency-Key");

        let (st, created, _) = post_batch(&s, &t, &json!({"debate_ids": ["deb-1"]}), None).await;
        assert_eq!(st, 202);
        let id = created["batch_id"].as_str().unwrap();
        let results = format!("/api/v1/explainability/batch/{id}/results");
        let (st, body) = s.get(&format!("{results}?cursor=%%%"), &t).await;
        assert_invalid(st, &body, "cursor");
        let (st, body) = s.get(&format!("{results}?limit=lots"), &t).await;
        assert_invalid(st, &body, "limit");
        let (st, body) = s.get(&format!("{results}?status=maybe"), &t).await;
        assert_invalid(st, &body, "status");
        let (st, _) = s
            .get("/api/v1/explainability/batch/batch-nope/status", &t)
            .await;
        assert_eq!(st, 404);
        let (st, _) = s
            .call(
                Method::GET,
                "/api/v1/explainability/batch/batch-nope/results",
                Some(&t),
                None,
            )
            .await;
        assert_eq!(st, 404);
    }
);

// The guide's contract: `status` is `processing` from submission (also while no worker has
// started the batch) until every id has been handled, then `completed` even when some ids failed;
// `phase` keeps the finer state. The guide's own polling loop ends on a batch with a missing id.
both_backends!(
    batch_status_is_processing_until_every_id_is_handled,
    |backend| async move {
        // API only: the batch waits for a worker, so its `pending` phase can be seen.
        let s = Server::start_with(
            BIN,
            backend,
            ServerOptions {
                args: vec!["--no-workers".into()],
                env: vec![],
            },
        )
        .await;
        let t = s.token("m", "team-a", "member").await;
        let db = open_db(&s).await;
        let ds = debates("guide", 1, 3, 2);
        insert(&db, "team-a", &ds).await;
        db.close().await;
        let ids = json!([ds[0].id, "deb-missing"]);
        let (st, created, _) = post_batch(&s, &t, &json!({"debate_ids": ids}), None).await;
        assert_eq!(st, 202, "{created}");
        let batch_id = created["batch_id"].as_str().unwrap().to_string();
        assert_eq!(
            created,
            json!({"batch_id": batch_id, "status": "processing", "phase": "pending", "total": 2})
        );
        let status_path = format!("/api/v1/explainability/batch/{batch_id}/status");
        let results_path = format!("/api/v1/explainability/batch/{batch_id}/results");
        let (st, waiting) = s.get(&status_path, &t).await;
        assert_eq!(st, 200, "{waiting}");
        assert_eq!(
            (
                &waiting["status"],
                &waiting["phase"],
                &waiting["processed"],
                &waiting["started_at"]
            ),
            (
                &json!("processing"),
                &json!("pending"),
                &json!(0),
                &Value::Null
            ),
            "{waiting}"
        );
        let (st, page) = s.get(&results_path, &t).await;
        assert_eq!(st, 200, "{page}");
        assert_eq!(
            (&page["batch_status"], &page["batch_phase"], &page["total"]),
            (&json!("processing"), &json!("pending"), &json!(0)),
            "{page}"
        );

        // A worker process picks it up; the guide's loop, as written, ends.
        let _worker = aragora_testkit::Node::start(BIN, &s.db.url, &["worker"], &[]).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut batch = created;
        while batch["status"] != "completed" {
            assert!(std::time::Instant::now() < deadline, "batch stuck: {batch}");
            let (st, b) = s.get(&status_path, &t).await;
            assert_eq!(st, 200, "{b}");
            assert!(
                matches!(
                    (b["status"].as_str(), b["phase"].as_str()),
                    (Some("processing"), Some("pending" | "processing"))
                        | (Some("completed"), Some("completed" | "partial" | "failed"))
                ),
                "{b}"
            );
            batch = b;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(batch["phase"], "partial", "{batch}");
        assert_eq!(
            [
                &batch["processed"],
                &batch["succeeded"],
                &batch["failed"],
                &batch["not_found"]
            ],
            [&json!(2), &json!(1), &json!(1), &json!(1)],
            "{batch}"
        );
        assert_eq!(batch["progress_percent"], 100.0);
        assert!(batch["started_at"].is_string() && batch["completed_at"].is_string());
        let (st, page) = s.get(&results_path, &t).await;
        assert_eq!(st, 200, "{page}");
        assert_eq!(
            (&page["batch_status"], &page["batch_phase"]),
            (&json!("completed"), &json!("partial"))
        );
        let items: Vec<(&str, &str)> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["debate_id"].as_str().unwrap(),
                    r["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            items,
            vec![(ds[0].id.as_str(), "success"), ("deb-missing", "not_found")]
        );
    }
);

/// Submits a batch over `n` debates and waits until at least one chunk is persisted but the batch
/// is far from done. Returns (batch id, ids, processed so far).
async fn start_big_batch(s: &Server, token: &str, n: usize) -> (String, Vec<String>) {
    let db = open_db(s).await;
    let ds = debates("big", n, 9, 5);
    insert(&db, "team-a", &ds).await;
    db.close().await;
    let ids: Vec<String> = ds.iter().map(|d| d.id.clone()).collect();
    let (st, created, _) = post_batch(s, token, &json!({"debate_ids": ids}), None).await;
    assert_eq!(st, 202, "{created}");
    (created["batch_id"].as_str().unwrap().to_string(), ids)
}

async fn wait_progress(s: &Server, token: &str, batch_id: &str) -> i64 {
    eventually(Duration::from_secs(60), || async {
        let (_, body) = s
            .get(
                &format!("/api/v1/explainability/batch/{batch_id}/status"),
                token,
            )
            .await;
        let p = body["processed"].as_i64().unwrap_or(0);
        if p > 0 && body["phase"] == "processing" {
            // Part-way through: still `processing` for the guide's status.
            assert_eq!(body["status"], "processing", "{body}");
        }
        (p > 0).then_some(p)
    })
    .await
    .expect("the batch makes progress")
}

/// After a restart the batch completes with exactly one result per debate, the results saved
/// before the interruption untouched (attempt 1), and one completion event.
async fn check_resumed(s: &Server, token: &str, batch_id: &str, ids: &[String], saved: i64) {
    let status = wait_finished(s, token, batch_id, 240).await;
    assert_eq!(status["phase"], "completed", "{status}");
    assert_eq!(status["processed"], ids.len());
    assert_eq!(status["succeeded"], ids.len());
    assert!(status["runs"].as_i64().unwrap() >= 2, "{status}");
    let results = all_results(s, token, batch_id, 200).await;
    assert_eq!(results.len(), ids.len(), "one result per debate");
    let mut by_attempt: BTreeMap<i64, usize> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["position"], i);
        assert_eq!(r["debate_id"], ids[i].as_str());
        assert_eq!(r["status"], "success");
        assert!(seen.insert(r["debate_id"].as_str().unwrap().to_string()));
        *by_attempt
            .entry(r["attempt"].as_i64().unwrap())
            .or_default() += 1;
    }
    eprintln!("results by run: {by_attempt:?} (saved before the interruption: {saved})");
    let first = by_attempt.get(&1).copied().unwrap_or(0) as i64;
    assert!(
        first >= saved,
        "results saved before the interruption were kept: {by_attempt:?}, saved {saved}"
    );
    assert!(
        (first as usize) < ids.len(),
        "the rest was computed after the restart: {by_attempt:?}"
    );
    let db = open_db(s).await;
    let events = aragora_store::events::list(
        &db,
        "team-a",
        Some("explainability.batch.completed"),
        None,
        100,
    )
    .await
    .unwrap()
    .expect("events of the workspace")
    .events;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.data["batch_id"] == batch_id)
            .count(),
        1
    );
}

fn slow_worker() -> ServerOptions {
    ServerOptions {
        args: vec!["--batch-max-concurrent-debates".into(), "1".into()],
        env: vec![],
    }
}

both_backends!(batch_survives_sigkill_mid_batch, |backend| async move {
    let mut s = Server::start_with(BIN, backend, slow_worker()).await;
    let t = s.token("m", "team-a", "member").await;
    let (batch_id, ids) = start_big_batch(&s, &t, 3000).await;
    let saved = wait_progress(&s, &t, &batch_id).await;
    s.kill().await;
    s.restart().await;
    check_resumed(&s, &t, &batch_id, &ids, saved).await;
});

both_backends!(
    batch_resumes_after_graceful_shutdown,
    |backend| async move {
        let mut s = Server::start_with(BIN, backend, slow_worker()).await;
        let t = s.token("m", "team-a", "member").await;
        let (batch_id, ids) = start_big_batch(&s, &t, 3000).await;
        let saved = wait_progress(&s, &t, &batch_id).await;
        assert_eq!(s.terminate().await, Some(0));
        let (processed_at_stop, db) = {
            let db = open_db(&s).await;
            let b = aragora_store::explain::get_batch(&db, "team-a", &batch_id)
                .await
                .unwrap()
                .unwrap();
            (b.processed, db)
        };
        db.close().await;
        assert!(processed_at_stop >= saved);
        assert!(
            (processed_at_stop as usize) < ids.len(),
            "shutdown stopped the batch part-way ({processed_at_stop})"
        );
        s.restart().await;
        check_resumed(&s, &t, &batch_id, &ids, processed_at_stop).await;
    }
);

/// Runs `sql` with `$1` = `arg` on the server's database (how these tests break things for real)
/// and returns the rows it changed.
async fn exec(db: &Db, sql: &'static str, arg: &str) -> u64 {
    aragora_store::sqlx::query(sql)
        .bind(arg)
        .execute(db.writer())
        .await
        .unwrap()
        .rows_affected()
}

/// The guide's polling loop over HTTP, `while batch.status != "completed"`, with a deadline
/// instead of hanging forever.
async fn poll_like_the_guide(s: &Server, token: &str, batch_id: &str, secs: u64) -> Value {
    let path = format!("/api/v1/explainability/batch/{batch_id}/status");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut batch = json!({"batch_id": batch_id, "status": "processing"});
    while batch["status"] != "completed" {
        assert!(
            std::time::Instant::now() < deadline,
            "the guide's loop would never end: {batch}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (st, b) = s.get(&path, token).await;
        assert_eq!(st, 200, "{b}");
        batch = b;
    }
    batch
}

/// The one `explainability.batch.completed` event of `batch_id`.
async fn completion_event(db: &Db, workspace: &str, batch_id: &str) -> Value {
    let events = aragora_store::events::list(
        db,
        workspace,
        Some("explainability.batch.completed"),
        None,
        100,
    )
    .await
    .unwrap()
    .expect("events of the workspace")
    .events;
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e.data["batch_id"] == batch_id)
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "one completion event for {batch_id}: {events:?}"
    );
    ours[0].data.clone()
}

fn api_only() -> ServerOptions {
    ServerOptions {
        args: vec!["--no-workers".into()],
        env: vec![],
    }
}

// A batch whose queue job dies — its attempts used up on a debate whose stored record no longer
// decodes, or a permanent failure (options the worker cannot read) — ends in the transaction that
// buries the job: `status` `completed` (the guide's loop stops), `phase` `partial` when debates
// were explained before (`failed` when none), `error` saying why, one completion event. It used
// to stay `processing` forever.
both_backends!(
    batch_whose_job_dies_ends_with_an_error,
    |backend| async move {
        let s = Server::start_with(BIN, backend, api_only()).await;
        let t = s.token("m", "team-a", "member").await;
        let db = open_db(&s).await;
        // Chunks are 250 positions: the corrupt debate (position 250) is in the second one.
        let ds = debates("dies", 252, 3, 2);
        insert(&db, "team-a", &ds).await;
        let corrupt = ds[250].id.as_str();
        let all: Vec<&str> = ds.iter().map(|d| d.id.as_str()).collect();
        let mut ids = Vec::new();
        for body in [
            json!({"debate_ids": all}),
            json!({"debate_ids": [corrupt, ds[0].id]}),
            json!({"debate_ids": [ds[1].id]}),
        ] {
            let (st, created, _) = post_batch(&s, &t, &body, None).await;
            assert_eq!(st, 202, "{created}");
            ids.push(created["batch_id"].as_str().unwrap().to_string());
        }
        let [partial, failed, permanent] = <[String; 3]>::try_from(ids).unwrap();
        // Two attempts for the first two (not 10, whose backoff would take many minutes)...
        for b in [&partial, &failed] {
            let job = format!("job-{b}");
            let sql = "UPDATE jobs SET max_attempts = 2 WHERE id = $1";
            assert_eq!(exec(&db, sql, &job).await, 1);
        }
        // ...which fail on every attempt: a debate record that no longer decodes...
        let sql = "UPDATE debates SET record = '{\"truncated\": ' WHERE id = $1";
        assert_eq!(exec(&db, sql, corrupt).await, 1);
        // ...and options the worker cannot read: a permanent failure, dead at the first attempt.
        let sql = "UPDATE batch_explainability_jobs SET options = 'not json' WHERE id = $1";
        assert_eq!(exec(&db, sql, &permanent).await, 1);

        let _worker = aragora_testkit::Node::start(BIN, &s.db.url, &["worker"], &[]).await;

        let b = poll_like_the_guide(&s, &t, &partial, 120).await;
        assert_eq!(b["phase"], "partial", "{b}");
        assert_eq!(
            [
                &b["total"],
                &b["processed"],
                &b["succeeded"],
                &b["failed"],
                &b["runs"]
            ],
            [&json!(252), &json!(250), &json!(250), &json!(0), &json!(2)],
            "the first chunk was explained, then every run failed on the second: {b}"
        );
        assert!(b["completed_at"].is_string(), "{b}");
        let error = b["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {b}"));
        assert!(
            error.contains("given up after 2 failed attempts")
                && error.contains("submit them in a new batch"),
            "{error}"
        );
        let (st, page) = s
            .get(
                &format!("/api/v1/explainability/batch/{partial}/results?limit=1"),
                &t,
            )
            .await;
        assert_eq!(st, 200, "{page}");
        assert_eq!(
            (&page["batch_status"], &page["batch_phase"], &page["total"]),
            (&json!("completed"), &json!("partial"), &json!(250)),
            "{page}"
        );

        let b = poll_like_the_guide(&s, &t, &failed, 120).await;
        assert_eq!(b["phase"], "failed", "{b}");
        assert_eq!(
            [&b["processed"], &b["succeeded"], &b["runs"]],
            [&json!(0), &json!(0), &json!(2)],
            "{b}"
        );
        let error = b["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {b}"));
        assert!(
            error.contains("given up after 2 failed attempts"),
            "{error}"
        );

        let b = poll_like_the_guide(&s, &t, &permanent, 120).await;
        assert_eq!(b["phase"], "failed", "{b}");
        assert_eq!([&b["processed"], &b["runs"]], [&json!(0), &json!(1)], "{b}");
        let error = b["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {b}"));
        assert!(
            error.contains("cannot be processed") && error.contains("unreadable options"),
            "{error}"
        );

        // Each ended once, with its event; the jobs stay visible as dead.
        for (id, phase) in [
            (&partial, "partial"),
            (&failed, "failed"),
            (&permanent, "failed"),
        ] {
            let e = completion_event(&db, "team-a", id).await;
            assert_eq!(
                (&e["status"], &e["phase"]),
                (&json!("completed"), &json!(phase))
            );
            assert!(e["error"].is_string(), "{e}");
        }
        let dead = aragora_queue::Queue::new(db.clone())
            .dead_jobs("explainability_batch", 10)
            .await
            .unwrap();
        let mut dead: Vec<(String, i64)> = dead.into_iter().map(|(id, n, _)| (id, n)).collect();
        dead.sort();
        let mut want = vec![
            (format!("job-{partial}"), 2),
            (format!("job-{failed}"), 2),
            (format!("job-{permanent}"), 1),
        ];
        want.sort();
        assert_eq!(dead, want);

        // A batch that completes normally says no error.
        let (st, created, _) = post_batch(&s, &t, &json!({"debate_ids": [ds[2].id]}), None).await;
        assert_eq!(st, 202, "{created}");
        let b = poll_like_the_guide(&s, &t, created["batch_id"].as_str().unwrap(), 60).await;
        assert_eq!(
            (&b["phase"], &b["error"]),
            (&json!("completed"), &Value::Null)
        );
    }
);

// A job can also be buried by the lease reaper (its worker died on its last attempt), where no
// batch code runs; the sweep every worker process runs when it starts (and every minute) ends such
// a batch.
both_backends!(
    batch_whose_job_the_reaper_buried_ends_when_a_worker_starts,
    |backend| async move {
        let s = Server::start_with(BIN, backend, api_only()).await;
        let t = s.token("m", "team-a", "member").await;
        let db = open_db(&s).await;
        let ds = debates("buried", 1, 3, 2);
        insert(&db, "team-a", &ds).await;
        let (st, created, _) = post_batch(&s, &t, &json!({"debate_ids": [ds[0].id]}), None).await;
        assert_eq!(st, 202, "{created}");
        let batch_id = created["batch_id"].as_str().unwrap().to_string();
        let sql = "UPDATE jobs SET max_attempts = 1 WHERE id = $1";
        assert_eq!(exec(&db, sql, &format!("job-{batch_id}")).await, 1);
        // A worker claims the job for its last attempt and vanishes: the lease runs out unrenewed
        // and the reaper buries the job.
        let queue = aragora_queue::Queue::new(db.clone());
        let claimed = queue
            .claim(
                "explainability_batch",
                "wrk-vanished",
                1,
                Duration::from_millis(1),
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        eventually(Duration::from_secs(10), || async {
            (queue.reap_expired().await.unwrap() > 0).then_some(())
        })
        .await
        .expect("the reaper buries the job");
        assert_eq!(
            queue
                .dead_jobs("explainability_batch", 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let (st, b) = s
            .get(
                &format!("/api/v1/explainability/batch/{batch_id}/status"),
                &t,
            )
            .await;
        assert_eq!(st, 200, "{b}");
        assert_eq!(b["status"], "processing", "nothing has ended it yet: {b}");

        let _worker = aragora_testkit::Node::start(BIN, &s.db.url, &["worker"], &[]).await;
        let b = poll_like_the_guide(&s, &t, &batch_id, 60).await;
        assert_eq!(
            (&b["phase"], &b["processed"]),
            (&json!("failed"), &json!(0)),
            "{b}"
        );
        let error = b["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {b}"));
        assert!(
            error.contains("given up after 1 failed attempt "),
            "{error}"
        );
        let e = completion_event(&db, "team-a", &batch_id).await;
        assert_eq!((&e["phase"], &e["error"]), (&json!("failed"), &b["error"]));
    }
);
