//! Webhooks through the real binary over HTTP, on SQLite and PostgreSQL, with real loopback
//! receivers (`aragora_webhooks::receiver`) that verify both signature schemes on every request.

use aragora_testkit::{Backend, Server, ServerOptions, both_backends, eventually};
use aragora_webhooks::receiver::{Behaviour, Received, Receiver, ReceiverConfig, ReceiverHandle};
use aragora_webhooks::signing::{generate_secret, guide_verify_signature, verify_standard};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

const BIN: &str = env!("CARGO_BIN_EXE_aragora");
const WAIT: Duration = Duration::from_secs(30);

/// Fast retries and short timeouts so failure paths finish in seconds.
fn fast_env() -> Vec<(String, String)> {
    [
        ("ARAGORA_WEBHOOK_RETRY_BASE_MS", "150"),
        ("ARAGORA_WEBHOOK_RETRY_MULTIPLIER", "2"),
        ("ARAGORA_WEBHOOK_RETRY_MAX_ATTEMPTS", "5"),
        ("ARAGORA_WEBHOOK_TIMEOUT_MS", "2000"),
        ("ARAGORA_WEBHOOK_LEASE_SECS", "3"),
        ("ARAGORA_MAX_EVENT_BYTES", "2048"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn start(backend: Backend, extra: &[(&str, &str)]) -> Server {
    let mut env = fast_env();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    Server::start_with(BIN, backend, ServerOptions { args: vec![], env }).await
}

async fn receiver(secret: &str) -> ReceiverHandle {
    Receiver::start(ReceiverConfig::new(secret))
        .await
        .expect("receiver")
}

async fn register(s: &Server, token: &str, body: Value) -> Value {
    let (status, w) = s.post("/api/webhooks", token, &body).await;
    assert_eq!(status, 201, "register: {w}");
    w
}

async fn publish(s: &Server, token: &str, event_type: &str, data: Value) -> Value {
    let (status, e) = s
        .post(
            "/api/v1/events",
            token,
            &json!({"event_type": event_type, "data": data}),
        )
        .await;
    assert_eq!(status, 202, "publish: {e}");
    e
}

async fn receipts(s: &Server, token: &str, webhook: &str, query: &str) -> Vec<Value> {
    let (status, page) = s
        .get(&format!("/api/webhooks/{webhook}/receipts?{query}"), token)
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Receipts until none is pending (background work settles).
async fn settled_receipts(s: &Server, token: &str, webhook: &str) -> Vec<Value> {
    eventually(WAIT, || async {
        let all = receipts(s, token, webhook, "limit=200").await;
        (!all.is_empty() && all.iter().all(|r| r["status"] != "pending")).then_some(all)
    })
    .await
    .expect("receipts settle")
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn body_json(r: &Received) -> Value {
    serde_json::from_slice(&r.body).expect("JSON body")
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc_ms(v: &Value) -> i64 {
    aragora_core::time::parse_rfc3339(v.as_str().expect("time")).expect("rfc3339")
}

fn assert_invalid(status: u16, body: &Value, field: &str) {
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    assert_eq!(body["error"]["details"]["field"], field, "{body}");
}

both_backends!(
    register_list_update_delete_and_validate,
    |backend| async move {
        let s = start(backend, &[]).await;
        let member = s.token("dev", "team-a", "member").await;
        let viewer = s.token("ro", "team-a", "viewer").await;
        let outsider = s.token("other", "team-b", "member").await;
        let rx = receiver("unused-secret-1").await;

        // Generated secret, returned once.
        let w = register(
            &s,
            &member,
            json!({"url": rx.url(), "event_types": ["debate.completed", "consensus.reached"],
               "description": "Production webhook"}),
        )
        .await;
        let id = w["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("wh-"), "{w}");
        assert!(w["secret"].as_str().unwrap().starts_with("whsec_"), "{w}");
        assert_eq!(w["enabled"], true);
        assert_eq!(
            w["event_types"],
            json!(["debate.completed", "consensus.reached"])
        );
        let (status, got) = s.get(&format!("/api/webhooks/{id}"), &viewer).await;
        assert_eq!(status, 200);
        assert!(
            got.get("secret").is_none(),
            "secret only at creation: {got}"
        );
        assert_eq!(got["description"], "Production webhook");

        // A supplied secret is kept; event_types default to all.
        let w2 = register(
            &s,
            &member,
            json!({"url": rx.url(), "secret": "your-hmac-secret"}),
        )
        .await;
        assert_eq!(w2["secret"], "your-hmac-secret");
        assert_eq!(w2["event_types"], json!(["*"]));

        // List with a cursor.
        let (status, page) = s.get("/api/webhooks?limit=1", &viewer).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 2);
        assert_eq!(page["items"][0]["id"], id.as_str());
        assert!(page["items"][0].get("secret").is_none());
        let cursor = page["next_cursor"].as_str().expect("cursor").to_string();
        let (_, page2) = s
            .get(&format!("/api/webhooks?limit=1&cursor={cursor}"), &viewer)
            .await;
        assert_eq!(page2["items"][0]["id"], w2["id"]);
        let (status, body) = s.get("/api/webhooks?cursor=%21%21", &viewer).await;
        assert_invalid(status, &body, "cursor");

        // Update.
        let (status, up) = s
            .call(
                Method::PUT,
                &format!("/api/webhooks/{id}"),
                Some(&member),
                Some(&json!({"enabled": false, "description": "paused", "event_types": ["*"]})),
            )
            .await;
        assert_eq!(status, 200, "{up}");
        assert_eq!(up["enabled"], false);
        assert_eq!(up["description"], "paused");
        assert_eq!(up["event_types"], json!(["*"]));
        assert!(up.get("secret").is_none());
        let (status, body) = s
            .call(
                Method::PUT,
                &format!("/api/webhooks/{id}"),
                Some(&member),
                Some(&json!({"secret": "sneaky-change"})),
            )
            .await;
        assert_eq!(status, 422, "secrets change only by rotation: {body}");
        // The representation GET shows can be sent back whole (read-only fields ignored) …
        let mut whole = up.clone();
        whole["description"] = json!("round trip");
        whole["id"] = json!("wh-something-else");
        let (status, back) = s
            .call(
                Method::PUT,
                &format!("/api/webhooks/{id}"),
                Some(&member),
                Some(&whole),
            )
            .await;
        assert_eq!(status, 200, "{back}");
        assert_eq!(back["description"], "round trip");
        assert_eq!(back["id"], json!(id), "the id is not changed by the body");
        // … but a misspelt field is refused, not silently ignored.
        let (status, body) = s
            .call(
                Method::PUT,
                &format!("/api/webhooks/{id}"),
                Some(&member),
                Some(&json!({"enable": true})),
            )
            .await;
        assert_invalid(status, &body, "enable");
        let (status, body) = s
            .call(
                Method::PUT,
                &format!("/api/webhooks/{id}"),
                Some(&member),
                Some(&json!({"url": "http://169.254.169.254/latest/meta-data/"})),
            )
            .await;
        assert_invalid(status, &body, "url");

        // Validation names the field.
        let (status, body) = s
            .post("/api/webhooks", &member, &json!({"event_types": ["*"]}))
            .await;
        assert_invalid(status, &body, "url");
        // A misspelt field at registration is refused too: `evnt_types` ignored would subscribe
        // the endpoint to every event.
        let (status, body) = s
            .post(
                "/api/webhooks",
                &member,
                &json!({"url": rx.url(), "evnt_types": ["debate.completed"]}),
            )
            .await;
        assert_invalid(status, &body, "evnt_types");
        // Registered paused: `enabled: false` is kept.
        let (status, paused) = s
            .post(
                "/api/webhooks",
                &member,
                &json!({"url": rx.url(), "enabled": false}),
            )
            .await;
        assert_eq!(status, 201, "{paused}");
        assert_eq!(
            (
                paused["enabled"].as_bool(),
                paused["disabled_reason"].as_str()
            ),
            (Some(false), Some("disabled by a user")),
            "{paused}"
        );
        let paused_path = format!("/api/webhooks/{}", paused["id"].as_str().unwrap());
        let (_, got) = s.get(&paused_path, &member).await;
        assert_eq!(got["enabled"], false, "{got}");
        let (status, _) = s
            .call(Method::DELETE, &paused_path, Some(&member), None)
            .await;
        assert_eq!(status, 204);
        let (status, body) = s
            .post(
                "/api/webhooks",
                &member,
                &json!({"url": rx.url(), "event_types": ["Debate!"]}),
            )
            .await;
        assert_invalid(status, &body, "event_types[0]");
        let (status, body) = s
            .post(
                "/api/webhooks",
                &member,
                &json!({"url": rx.url(), "event_types": []}),
            )
            .await;
        assert_invalid(status, &body, "event_types");
        let (status, body) = s
            .post(
                "/api/webhooks",
                &member,
                &json!({"url": rx.url(), "secret": "short"}),
            )
            .await;
        assert_invalid(status, &body, "secret");
        let (status, body) = s
            .post(
                "/api/webhooks",
                &member,
                &json!({"url": rx.url(), "description": "x".repeat(1001)}),
            )
            .await;
        assert_invalid(status, &body, "description");

        // SSRF: representative URLs from the crate's refusal table, refused at registration. The
        // server allowlists 127.0.0.0/8 only (so its receivers are reachable); nothing else opens.
        let refused = [
            "http://169.254.169.254/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://172.16.5.4/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://localhost/",
            "http://api.localhost/",
            "http://printer.local/",
            "http://db.internal/",
            "http://intranet/",
            "http://example.com./",
            "http://224.0.0.1/",
            "http://[2001:db8::1]/",
            "http://user:pass@example.com/",
            "http://example.com@127.0.0.1/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://example.com:0/",
        ];
        let mut blocked_messages = HashSet::new();
        for url in refused {
            let (status, body) = s
                .post(
                    "/api/webhooks",
                    &member,
                    &json!({"url": url, "event_types": ["*"]}),
                )
                .await;
            assert_invalid(status, &body, "url");
            let msg = body["error"]["message"].as_str().unwrap().to_string();
            assert!(
                !msg.contains("169.254") && !msg.contains("resolve"),
                "{url}: {msg}"
            );
            if msg.contains("not allowed") {
                blocked_messages.insert(msg);
            }
        }
        assert_eq!(
            blocked_messages.len(),
            1,
            "policy refusals are uniform: {blocked_messages:?}"
        );
        let (_, page) = s.get("/api/webhooks", &viewer).await;
        assert_eq!(page["total"], 2, "nothing refused was stored");

        // A public-looking name that does not resolve (yet) is accepted: sends resolve again.
        let (status, body) = s
            .post(
                "/api/webhooks",
                &member,
                &json!({"url": "https://hooks.not-in-dns.invalid/webhooks/aragora",
                        "event_types": ["debate.completed"]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let unresolved = body["id"].as_str().unwrap().to_string();
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/webhooks/{unresolved}"),
                Some(&member),
                None,
            )
            .await;
        assert_eq!(status, 204);

        // Permissions: 403 before 404; another workspace sees 404.
        let (status, _) = s
            .post("/api/webhooks", &viewer, &json!({"url": rx.url()}))
            .await;
        assert_eq!(status, 403);
        let (status, _) = s
            .call(Method::DELETE, "/api/webhooks/wh-nope", Some(&viewer), None)
            .await;
        assert_eq!(status, 403);
        let (status, _) = s.get(&format!("/api/webhooks/{id}"), &outsider).await;
        assert_eq!(status, 404);
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/webhooks/{id}"),
                Some(&outsider),
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = s
            .call(Method::GET, &format!("/api/webhooks/{id}"), None, None)
            .await;
        assert_eq!(status, 401);

        // Delete.
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/webhooks/{id}"),
                Some(&member),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = s.get(&format!("/api/webhooks/{id}"), &member).await;
        assert_eq!(status, 404);
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/webhooks/{id}"),
                Some(&member),
                None,
            )
            .await;
        assert_eq!(status, 404);
    }
);

both_backends!(
    published_events_are_delivered_signed_with_receipts,
    |backend| async move {
        let s = start(backend, &[]).await;
        let t = s.token("app", "default", "member").await;
        let secret = generate_secret();
        let rx = receiver(&secret).await;
        let other = receiver("other-secret-123").await;
        let w = register(
        &s,
        &t,
        json!({"url": rx.url(), "secret": secret, "event_types": ["order.created", "debate.completed"]}),
    )
    .await;
        let id = w["id"].as_str().unwrap().to_string();
        // Subscribed to something else: gets nothing.
        register(&s, &t, json!({"url": other.url(), "secret": "other-secret-123", "event_types": ["agent.error"]})).await;

        let mut published = Vec::new();
        for i in 0..5 {
            let e = publish(
                &s,
                &t,
                "order.created",
                json!({"order": i, "note": "ünïcødé"}),
            )
            .await;
            assert_eq!(e["deliveries"], 1, "{e}");
            assert!(e["event_id"].as_str().unwrap().starts_with("evt-"));
            published.push(e);
        }
        assert!(
            rx.wait_for_acknowledged(5, WAIT).await,
            "5 deliveries acknowledged"
        );
        assert_eq!(rx.invalid(), 0, "both signatures verified on every request");
        let got = rx.received();
        assert_eq!(got.len(), 5, "one attempt each");
        let mut by_event = HashMap::new();
        for r in &got {
            assert!(r.sha256_valid && r.standard_valid);
            // The guide's envelope, in the guide's order, and nothing else.
            let text = std::str::from_utf8(&r.body).unwrap();
            assert!(
                text.starts_with(r#"{"event_type":"order.created","event_id":"evt-"#),
                "{text}"
            );
            let v = body_json(r);
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 4, "{v}");
            assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
            assert_eq!(v["data"]["note"], "ünïcødé");
            assert_eq!(header(r, "x-aragora-event"), "order.created");
            assert_eq!(header(r, "x-aragora-attempt"), "1");
            assert!(header(r, "webhook-id").starts_with("dlv-"));
            assert_eq!(header(r, "webhook-id"), header(r, "x-aragora-delivery"));
            assert!(header(r, "user-agent").starts_with("Aragora-Webhooks/"));
            assert!(header(r, "x-signature-sha256").starts_with("sha256="));
            by_event.insert(v["event_id"].as_str().unwrap().to_string(), v);
        }
        for e in &published {
            let v = &by_event[e["event_id"].as_str().unwrap()];
            assert_eq!(v["timestamp"], e["timestamp"]);
        }
        assert_eq!(other.count(), 0);

        let all = settled_receipts(&s, &t, &id).await;
        assert_eq!(all.len(), 5);
        for r in &all {
            assert_eq!(r["status"], "succeeded", "{r}");
            assert_eq!(r["status_code"], 200);
            assert_eq!(r["attempt"], 1);
            assert_eq!(r["trigger"], "scheduled");
            assert_eq!(r["webhook_id"], id.as_str());
            assert_eq!(r["event_type"], "order.created");
            assert_eq!(r["dialled_address"], rx.addr().to_string());
            assert_eq!(r["response_body"], "ok");
            assert!(r["next_attempt_at"].is_null());
            assert!(r["duration_ms"].as_i64().is_some());
        }
        // Receipts page with a cursor and filter.
        let (_, page) = s
            .get(&format!("/api/webhooks/{id}/receipts?limit=2"), &t)
            .await;
        assert_eq!(page["total"], 5);
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        let cursor = page["next_cursor"].as_str().unwrap();
        let (_, page2) = s
            .get(
                &format!("/api/webhooks/{id}/receipts?limit=2&cursor={cursor}"),
                &t,
            )
            .await;
        assert_ne!(page2["items"][0]["id"], page["items"][0]["id"]);
        assert!(
            page2["items"][0]["id"].as_str() < page["items"][1]["id"].as_str(),
            "newest first"
        );
        assert!(receipts(&s, &t, &id, "status=failed").await.is_empty());
        let (status, body) = s
            .get(&format!("/api/webhooks/{id}/receipts?status=lost"), &t)
            .await;
        assert_invalid(status, &body, "status");

        // A disabled webhook gets nothing.
        s.call(
            Method::PUT,
            &format!("/api/webhooks/{id}"),
            Some(&t),
            Some(&json!({"enabled": false})),
        )
        .await;
        let e = publish(&s, &t, "order.created", json!({})).await;
        assert_eq!(e["deliveries"], 0);

        // Synchronous test delivery through the same signed path, even while disabled.
        let (status, r) = s
            .post(&format!("/api/webhooks/{id}/test"), &t, &json!({}))
            .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["status"], "succeeded");
        assert_eq!(r["trigger"], "test");
        assert_eq!(r["event_type"], "webhook.test");
        assert_eq!(rx.count(), 6);
        let last = rx.received().pop().unwrap();
        assert!(last.sha256_valid && last.standard_valid);
        assert_eq!(header(&last, "x-aragora-event"), "webhook.test");
        assert_eq!(body_json(&last)["event_id"], r["event_id"]);

        // Resend a succeeded delivery: same webhook-id, trigger manual.
        let first = all.last().unwrap();
        let (status, again) = s
            .post(
                &format!(
                    "/api/webhooks/{id}/receipts/{}/resend",
                    first["id"].as_str().unwrap()
                ),
                &t,
                &json!({}),
            )
            .await;
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["status"], "pending");
        assert_eq!(again["trigger"], "manual");
        assert_eq!(again["attempt"], 2);
        assert_eq!(again["delivery_id"], first["delivery_id"]);
        let (status, _) = s
            .post(
                &format!("/api/webhooks/{id}/receipts/rcpt-nope/resend"),
                &t,
                &json!({}),
            )
            .await;
        assert_eq!(status, 404);
        // Disabled: the resend resolves as failed (class `disabled`) without dialling.
        let r2 = eventually(WAIT, || async {
            let all = receipts(&s, &t, &id, "limit=200").await;
            all.into_iter()
                .find(|r| r["id"] == again["id"] && r["status"] != "pending")
        })
        .await
        .expect("resend resolved");
        assert_eq!(r2["status"], "failed");
        assert_eq!(r2["error_class"], "disabled");
        assert_eq!(rx.count(), 6);
        s.call(
            Method::PUT,
            &format!("/api/webhooks/{id}"),
            Some(&t),
            Some(&json!({"enabled": true})),
        )
        .await;
        let (status, again) = s
            .post(
                &format!(
                    "/api/webhooks/{id}/receipts/{}/resend",
                    first["id"].as_str().unwrap()
                ),
                &t,
                &json!({}),
            )
            .await;
        assert_eq!(status, 202, "{again}");
        assert!(rx.wait_for(7, WAIT).await);
        let last = rx.received().pop().unwrap();
        assert_eq!(
            header(&last, "webhook-id"),
            first["delivery_id"].as_str().unwrap()
        );
        assert_eq!(header(&last, "x-aragora-attempt"), "3");

        // Metrics.
        let resp = s.http().get(s.url("/metrics")).send().await.unwrap();
        let text = resp.text().await.unwrap();
        for m in [
            "aragora_webhook_deliveries_total",
            "aragora_webhook_delivery_latency_seconds",
        ] {
            assert!(text.contains(m), "{m} missing");
        }
    }
);

both_backends!(
    failing_endpoint_is_retried_until_it_succeeds,
    |backend| async move {
        // Five failures in a row would open the breaker; this test is about retries.
        let s = start(backend, &[("ARAGORA_WEBHOOK_BREAKER_FAILURES", "50")]).await;
        let t = s.token("app", "default", "member").await;
        let secret = generate_secret();
        let rx = receiver(&secret).await;
        rx.script([Behaviour::Status(500), Behaviour::redirect_to_metadata()]);
        let w = register(
            &s,
            &t,
            json!({"url": rx.url(), "secret": secret, "event_types": ["*"]}),
        )
        .await;
        let id = w["id"].as_str().unwrap().to_string();
        let e = publish(&s, &t, "debate.completed", json!({"debate_id": "deb-1"})).await;
        assert!(rx.wait_for_acknowledged(1, WAIT).await);
        let got = rx.received();
        assert_eq!(got.len(), 3, "500, redirect, then 200");
        let ids: HashSet<&str> = got.iter().map(|r| header(r, "webhook-id")).collect();
        assert_eq!(ids.len(), 1, "webhook-id is stable across retries");
        let attempts: Vec<&str> = got.iter().map(|r| header(r, "x-aragora-attempt")).collect();
        assert_eq!(attempts, ["1", "2", "3"]);
        assert!(
            got.windows(2).all(|p| p[0].body == p[1].body),
            "same bytes each time"
        );
        // Every attempt is signed again with its own timestamp (equal within one second).
        for pair in got.windows(2) {
            let (ta, tb) = (
                header(&pair[0], "webhook-timestamp"),
                header(&pair[1], "webhook-timestamp"),
            );
            assert!(ta.parse::<i64>().unwrap() <= tb.parse::<i64>().unwrap());
            if ta != tb {
                assert_ne!(
                    header(&pair[0], "webhook-signature"),
                    header(&pair[1], "webhook-signature")
                );
            }
        }
        assert!(got.iter().all(|r| r.sha256_valid && r.standard_valid));

        let all = settled_receipts(&s, &t, &id).await;
        let mut all = all;
        all.sort_by_key(|r| r["attempt"].as_i64());
        let statuses: Vec<&str> = all.iter().map(|r| r["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["failed", "failed", "succeeded"]);
        assert_eq!(all[0]["status_code"], 500);
        assert_eq!(all[0]["error_class"], "http");
        assert_eq!(all[1]["status_code"], 302);
        assert!(
            all[1]["error_message"]
                .as_str()
                .unwrap()
                .contains("redirects are not followed")
        );
        assert!(all.iter().all(|r| r["event_id"] == e["event_id"]));
        assert!(
            all.iter()
                .all(|r| r["delivery_id"] == all[0]["delivery_id"])
        );
        for pair in all.windows(2) {
            // The failed attempt names when its retry is due; the retry ran then.
            let due = rfc_ms(&pair[0]["next_attempt_at"]);
            let ran = rfc_ms(&pair[1]["attempted_at"]);
            assert!(ran >= due, "retry ran at {ran}, due {due}");
            assert!(due > rfc_ms(&pair[0]["attempted_at"]));
        }
        assert!(all[2]["next_attempt_at"].is_null());
        assert!(all[2]["latest"].as_bool().unwrap() && !all[0]["latest"].as_bool().unwrap());
        assert_eq!(receipts(&s, &t, &id, "status=failed").await.len(), 2);
        assert_eq!(receipts(&s, &t, &id, "status=succeeded").await.len(), 1);

        let (status, st) = s.get(&format!("/api/webhooks/{id}/stats"), &t).await;
        assert_eq!(status, 200, "{st}");
        assert_eq!(st["attempts"], 3);
        assert_eq!(st["succeeded"], 1);
        assert_eq!(st["failed"], 2);
        assert_eq!(st["pending"], 0);
        assert!((st["success_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert!(st["latency_ms"]["p50"].as_i64().is_some());
        assert_eq!(st["breaker"]["state"], "closed");
        assert_eq!(st["breaker"]["consecutive_failures"], 0);
        let (status, body) = s
            .get(&format!("/api/webhooks/{id}/stats?window_secs=5"), &t)
            .await;
        assert_invalid(status, &body, "window_secs");

        let text = s.metrics().await;
        for m in [
            "aragora_webhook_deliveries_total",
            "aragora_webhook_delivery_latency_seconds",
            "aragora_webhook_failures_by_endpoint_total",
            "aragora_webhook_circuit_breaker_state",
        ] {
            assert!(text.contains(m), "{m} missing from /metrics");
        }
        assert!(text.contains(&format!("webhook_id=\"{id}\"")));
        // The two failures that were retried count as `retry`; a failed test delivery, which is
        // never retried, as `failed`.
        let deliveries = |text: &str, outcome: &str| -> f64 {
            text.lines()
                .find(|l| {
                    l.starts_with("aragora_webhook_deliveries_total{")
                        && l.contains("status=\"failed\"")
                        && l.contains(&format!("outcome=\"{outcome}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        };
        assert_eq!(deliveries(&text, "retry"), 2.0, "{text}");
        rx.script([Behaviour::Status(500)]);
        let (status, r) = s
            .post(&format!("/api/webhooks/{id}/test"), &t, &json!({}))
            .await;
        assert_eq!((status, r["status"].as_str()), (200, Some("failed")), "{r}");
        let text = s.metrics().await;
        assert_eq!(deliveries(&text, "retry"), 2.0, "{text}");
        assert_eq!(deliveries(&text, "failed"), 1.0, "{text}");
        // A disabled webhook leaves the breaker gauge at once (it is never dialled, so its last
        // state would otherwise stay exposed); enabling it brings the series back.
        for (enabled, present) in [(false, false), (true, true)] {
            let (status, body) = s
                .call(
                    Method::PUT,
                    &format!("/api/webhooks/{id}"),
                    Some(&t),
                    Some(&json!({"enabled": enabled})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let breaker = format!("aragora_webhook_circuit_breaker_state{{webhook_id=\"{id}\"}}");
            assert_eq!(
                s.metrics().await.contains(&breaker),
                present,
                "enabled={enabled}"
            );
        }

        // Exhausted retries end as failed; recovery sends them again.
        let since = aragora_core::time::rfc3339(aragora_core::time::now_ms() - 1000);
        rx.set_behaviour(Behaviour::Status(503));
        let before = rx.count();
        publish(&s, &t, "debate.completed", json!({"debate_id": "deb-2"})).await;
        assert!(rx.wait_for(before + 5, WAIT).await, "max 5 attempts");
        let last = eventually(WAIT, || async {
            let all = receipts(&s, &t, &id, "status=failed&limit=1").await;
            all.into_iter()
                .next()
                .filter(|r| r["attempt"] == 5 && r["next_attempt_at"].is_null())
        })
        .await
        .expect("the fifth attempt is final");
        assert!(last["latest"].as_bool().unwrap());
        rx.set_behaviour(Behaviour::Ok);
        let (status, rec) = s
            .post(
                &format!("/api/webhooks/{id}/recover"),
                &t,
                &json!({"since": since}),
            )
            .await;
        assert_eq!(status, 202, "{rec}");
        assert_eq!(rec["recovered"], 1);
        assert!(rx.wait_for_acknowledged(2, WAIT).await);
        let (status, body) = s
            .post(
                &format!("/api/webhooks/{id}/recover"),
                &t,
                &json!({"since": "yesterday"}),
            )
            .await;
        assert_invalid(status, &body, "since");
    }
);

both_backends!(gone_disables_the_webhook, |backend| async move {
    let s = start(backend, &[]).await;
    let t = s.token("app", "default", "member").await;
    let secret = generate_secret();
    let rx = receiver(&secret).await;
    rx.set_behaviour(Behaviour::Gone);
    let since = aragora_core::time::rfc3339(aragora_core::time::now_ms() - 1000);
    let w = register(&s, &t, json!({"url": rx.url(), "secret": secret})).await;
    let id = w["id"].as_str().unwrap().to_string();
    publish(&s, &t, "debate.started", json!({})).await;
    let disabled = eventually(WAIT, || async {
        let (_, w) = s.get(&format!("/api/webhooks/{id}"), &t).await;
        (w["enabled"] == false).then_some(w)
    })
    .await
    .expect("410 disables the webhook");
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{disabled}"
    );
    let all = settled_receipts(&s, &t, &id).await;
    assert_eq!(all.len(), 1, "410 is not retried");
    assert_eq!(all[0]["status"], "failed");
    assert_eq!(all[0]["status_code"], 410);
    assert!(all[0]["next_attempt_at"].is_null());
    let e = publish(&s, &t, "debate.started", json!({})).await;
    assert_eq!(e["deliveries"], 0, "disabled webhooks get no deliveries");
    assert_eq!(rx.count(), 1);

    // Re-enable and recover the failed delivery: the same webhook-id arrives again.
    rx.set_behaviour(Behaviour::Ok);
    let (status, _) = s
        .call(
            Method::PUT,
            &format!("/api/webhooks/{id}"),
            Some(&t),
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, rec) = s
        .post(
            &format!("/api/webhooks/{id}/recover"),
            &t,
            &json!({"since": since}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(rec["recovered"], 1);
    assert!(rx.wait_for_acknowledged(1, WAIT).await);
    let got = rx.received();
    assert_eq!(header(&got[0], "webhook-id"), header(&got[1], "webhook-id"));
    let (_, w) = s.get(&format!("/api/webhooks/{id}"), &t).await;
    assert_eq!(w["enabled"], true);
    assert!(w["disabled_reason"].is_null());
});

both_backends!(
    too_many_requests_honours_retry_after,
    |backend| async move {
        let s = start(backend, &[]).await;
        let t = s.token("app", "default", "member").await;
        let secret = generate_secret();
        let rx = receiver(&secret).await;
        rx.script([Behaviour::TooManyRequests {
            retry_after: "2".into(),
        }]);
        let w = register(&s, &t, json!({"url": rx.url(), "secret": secret})).await;
        let id = w["id"].as_str().unwrap().to_string();
        publish(&s, &t, "debate.started", json!({})).await;
        assert!(rx.wait_for_acknowledged(1, WAIT).await);
        let got = rx.received();
        assert_eq!(got.len(), 2);
        let gap = got[1].arrived.duration_since(got[0].arrived);
        // The configured backoff is ~150 ms; only Retry-After explains two seconds.
        assert!(
            gap >= Duration::from_millis(1950),
            "retry came after {gap:?}"
        );
        let mut all = settled_receipts(&s, &t, &id).await;
        all.sort_by_key(|r| r["attempt"].as_i64());
        assert_eq!(all[0]["status_code"], 429);
        let delay = rfc_ms(&all[0]["next_attempt_at"]) - rfc_ms(&all[0]["attempted_at"]);
        assert!(
            (2000..3500).contains(&delay),
            "next attempt {delay} ms later"
        );
        assert_eq!(
            all[0]["response_headers"]["retry-after"], "2",
            "response headers are kept: {}",
            all[0]
        );
    }
);

both_backends!(
    secret_rotation_signs_with_both_during_grace,
    |backend| async move {
        let s = start(backend, &[]).await;
        let t = s.token("app", "default", "member").await;
        let old = "old-secret-4567".to_string();
        let rx = Receiver::start(ReceiverConfig {
            require_valid_signatures: false,
            ..ReceiverConfig::new("unknown-yet")
        })
        .await
        .unwrap();
        let w = register(&s, &t, json!({"url": rx.url(), "secret": old})).await;
        let id = w["id"].as_str().unwrap().to_string();
        let (status, rot) = s
            .post(
                &format!("/api/webhooks/{id}/rotate-secret"),
                &t,
                &json!({"grace_period_secs": 3600}),
            )
            .await;
        assert_eq!(status, 200, "{rot}");
        let new = rot["secret"].as_str().unwrap().to_string();
        assert!(new.starts_with("whsec_"));
        assert!(rot["previous_secret_expires_at"].is_string());
        let (_, got) = s.get(&format!("/api/webhooks/{id}"), &t).await;
        assert!(got.get("secret").is_none());

        publish(&s, &t, "debate.started", json!({})).await;
        assert!(rx.wait_for(1, WAIT).await);
        let r = rx.received().pop().unwrap();
        let sig = header(&r, "webhook-signature");
        assert_eq!(sig.split(' ').count(), 2, "{sig}");
        let (mid, ts) = (header(&r, "webhook-id"), header(&r, "webhook-timestamp"));
        for secret in [&old, &new] {
            assert!(verify_standard(&[secret.as_str()], mid, ts, &r.body, sig, None).is_ok());
        }
        assert!(guide_verify_signature(
            &r.body,
            header(&r, "x-signature-sha256"),
            &new
        ));
        assert!(!guide_verify_signature(
            &r.body,
            header(&r, "x-signature-sha256"),
            &old
        ));

        // No grace: only the newest secret signs.
        let (status, rot) = s
            .post(
                &format!("/api/webhooks/{id}/rotate-secret"),
                &t,
                &json!({"secret": "third-secret-890", "grace_period_secs": 0}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(rot["secret"], "third-secret-890");
        // The earlier grace period still runs for `old`; `new` was replaced without grace.
        publish(&s, &t, "debate.started", json!({})).await;
        assert!(rx.wait_for(2, WAIT).await);
        let r = rx.received().pop().unwrap();
        let sig = header(&r, "webhook-signature");
        let (mid, ts) = (header(&r, "webhook-id"), header(&r, "webhook-timestamp"));
        assert!(verify_standard(&["third-secret-890"], mid, ts, &r.body, sig, None).is_ok());
        assert!(verify_standard(&[new.as_str()], mid, ts, &r.body, sig, None).is_err());
        let (status, body) = s
            .post(
                &format!("/api/webhooks/{id}/rotate-secret"),
                &t,
                &json!({"secret": "tiny"}),
            )
            .await;
        assert_invalid(status, &body, "secret");
        let (status, body) = s
            .post(
                &format!("/api/webhooks/{id}/rotate-secret"),
                &t,
                &json!({"grace_period_secs": 99999999}),
            )
            .await;
        assert_invalid(status, &body, "grace_period_secs");
        // A misspelt grace period is refused, not replaced by the 24 h default.
        let (status, body) = s
            .post(
                &format!("/api/webhooks/{id}/rotate-secret"),
                &t,
                &json!({"grace": 1}),
            )
            .await;
        assert_invalid(status, &body, "grace");
    }
);

both_backends!(
    publish_validates_and_idempotency_keys_replay,
    |backend| async move {
        let s = start(backend, &[]).await;
        let t = s.token("app", "default", "member").await;
        let viewer = s.token("ro", "default", "viewer").await;
        let secret = generate_secret();
        let rx = receiver(&secret).await;
        register(&s, &t, json!({"url": rx.url(), "secret": secret})).await;

        let post = |key: Option<&str>, body: Value| {
            let mut req = s
                .http()
                .post(s.url("/api/v1/events"))
                .bearer_auth(&t)
                .json(&body);
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k);
            }
            req.send()
        };
        let body = json!({"event_type": "order.created", "data": {"id": 1}});
        let first = post(Some("order-1"), body.clone()).await.unwrap();
        assert_eq!(first.status(), 202);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first: Value = first.json().await.unwrap();
        let again = post(Some("order-1"), body.clone()).await.unwrap();
        assert_eq!(again.status(), 202);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["event_id"], first["event_id"]);
        assert_eq!(again, first);
        // Concurrent repeats agree too.
        let many =
            futures::future::join_all((0..6).map(|_| post(Some("order-2"), body.clone()))).await;
        let mut ids = HashSet::new();
        for r in many {
            let r = r.unwrap();
            assert_eq!(r.status(), 202);
            ids.insert(
                r.json::<Value>().await.unwrap()["event_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(ids.len(), 1, "one event for one key: {ids:?}");
        assert!(rx.wait_for_acknowledged(2, WAIT).await);
        let r = post(
            Some("order-1"),
            json!({"event_type": "order.created", "data": {"id": 2}}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 422);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"]["details"]["field"],
            "Idempotency-Key"
        );
        let r = post(Some(&"k".repeat(300)), body.clone()).await.unwrap();
        assert_eq!(r.status(), 422);
        // Without a key every request is a new event.
        let a: Value = post(None, body.clone())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let b: Value = post(None, body.clone())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(a["event_id"], b["event_id"]);
        assert!(rx.wait_for_acknowledged(4, WAIT).await);
        let acked: HashSet<String> = rx
            .received()
            .iter()
            .map(|r| body_json(r)["event_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(acked.len(), 4, "one delivery per event, none for replays");

        for (bad, field) in [
            (
                json!({"event_type": "Order.Created", "data": {}}),
                "event_type",
            ),
            (json!({"event_type": "order..created"}), "event_type"),
            (json!({"data": {}}), "event_type"),
        ] {
            let (status, body) = s.post("/api/v1/events", &t, &bad).await;
            assert_invalid(status, &body, field);
        }
        let (status, body) = s
            .post(
                "/api/v1/events",
                &t,
                &json!({"event_type": "a.b", "data": {"blob": "x".repeat(4096)}}),
            )
            .await;
        assert_eq!(status, 413, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("data:")
        );
        let (status, _) = s
            .post("/api/v1/events", &viewer, &json!({"event_type": "a.b"}))
            .await;
        assert_eq!(status, 403);
        let (status, _) = s
            .call(
                Method::POST,
                "/api/v1/events",
                None,
                Some(&json!({"event_type": "a.b"})),
            )
            .await;
        assert_eq!(status, 401);
    }
);

// Breaker: closed → open (nothing dialled, no attempt spent) → half-open with exactly one probe
// → closed. On PostgreSQL a second process (`aragora worker`) shares the breaker.
both_backends!(breaker_opens_probes_once_and_closes, |backend| async move {
    let env = [
        ("ARAGORA_WEBHOOK_BREAKER_FAILURES", "3"),
        ("ARAGORA_WEBHOOK_BREAKER_OPEN_MS", "2500"),
        ("ARAGORA_WEBHOOK_BREAKER_PROBE_TIMEOUT_MS", "20000"),
        ("ARAGORA_WEBHOOK_RETRY_BASE_MS", "100"),
        ("ARAGORA_WEBHOOK_RETRY_MULTIPLIER", "1"),
        ("ARAGORA_WEBHOOK_RETRY_MAX_ATTEMPTS", "100"),
    ];
    let s = start(backend, &env).await;
    let mut second = None;
    if backend == Backend::Postgres {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("worker")
            .arg("--data-dir")
            .arg(s.data_dir.join("second"))
            .env("DATABASE_URL", &s.db.url)
            .env("ARAGORA_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        for (k, v) in fast_env()
            .into_iter()
            .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        {
            cmd.env(k, v);
        }
        second = Some(cmd.spawn().expect("second process"));
        // Both processes have registered their webhook workers.
        eventually(WAIT, || async {
            let (_, st) = s.get("/api/workers/status", &s.admin_token).await;
            let n = st["workers"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .filter(|w| w["kind"] == "webhook_delivery" && w["state"] == "running")
                        .count()
                })
                .unwrap_or(0);
            (n >= 2).then_some(())
        })
        .await
        .expect("two webhook workers running");
    }
    let t = s.token("app", "default", "member").await;
    let secret = generate_secret();
    let rx = receiver(&secret).await;
    rx.set_behaviour(Behaviour::Status(500));
    let w = register(&s, &t, json!({"url": rx.url(), "secret": secret})).await;
    let id = w["id"].as_str().unwrap().to_string();
    let events = 16;
    for i in 0..events {
        publish(&s, &t, "order.created", json!({"i": i})).await;
    }
    let open = eventually(WAIT, || async {
        let (_, st) = s.get(&format!("/api/webhooks/{id}/stats"), &t).await;
        (st["breaker"]["state"] == "open").then_some(st)
    })
    .await
    .expect("the breaker opens");
    let open_until = rfc_ms(&open["breaker"]["open_until"]);
    let open_count = open["breaker"]["open_count"].as_u64().unwrap() as u32;
    let opened_at = open_until - 2500 * (1i64 << (open_count - 1));
    // The probe (the first request after the open time) answers slowly: 200 then a 1.2 s drip.
    rx.set_behaviour(Behaviour::SlowDrip {
        bytes: 4,
        interval: Duration::from_millis(300),
    });
    let probe = eventually(WAIT, || async {
        rx.received()
            .into_iter()
            .find(|r| ms(r.arrived_at) >= open_until - 5)
    })
    .await
    .expect("a probe after the open time");
    rx.set_behaviour(Behaviour::Ok);
    let (_, st) = s.get(&format!("/api/webhooks/{id}/stats"), &t).await;
    assert_eq!(st["breaker"]["state"], "half_open", "{st}");
    assert!(
        rx.wait_for_acknowledged(events, Duration::from_secs(60))
            .await,
        "all delivered after closing"
    );
    let (_, st) = s.get(&format!("/api/webhooks/{id}/stats"), &t).await;
    assert_eq!(st["breaker"]["state"], "closed", "{st}");

    let got = rx.received();
    let probe_at = ms(probe.arrived_at);
    let during_open = got
        .iter()
        .filter(|r| (opened_at + 500..open_until - 5).contains(&ms(r.arrived_at)))
        .count();
    assert_eq!(
        during_open, 0,
        "nothing is dialled while the breaker is open"
    );
    let during_probe = got
        .iter()
        .filter(|r| (probe_at..probe_at + 1000).contains(&ms(r.arrived_at)))
        .count();
    assert_eq!(during_probe, 1, "exactly one request while half-open");
    let failures_before = got.iter().filter(|r| r.responded == Some(500)).count();
    assert!(failures_before >= 3, "{failures_before}");

    // No attempt is spent while open: every receipt is a real request, and vice versa.
    let all = settled_receipts(&s, &t, &id).await;
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    for r in &all {
        *per_delivery
            .entry(r["delivery_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_delivery.len(), events);
    assert_eq!(
        per_delivery,
        rx.counts(),
        "one receipt per request per delivery"
    );
    for r in &all {
        // Attempt numbers have no gaps: a deferral never consumed one.
        let n = per_delivery[r["delivery_id"].as_str().unwrap()] as i64;
        assert!(r["attempt"].as_i64().unwrap() <= n, "{r}");
    }

    if let Some(mut child) = second {
        // Heartbeats publish the counters; both processes took jobs of this webhook.
        let both = eventually(WAIT, || async {
            let (_, st) = s.get("/api/workers/status", &s.admin_token).await;
            let active = st["workers"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .filter(|w| {
                            w["kind"] == "webhook_delivery"
                                && w["processed"].as_i64().unwrap_or(0) > 0
                        })
                        .count()
                })
                .unwrap_or(0);
            (active >= 2).then_some(())
        })
        .await;
        assert!(both.is_some(), "both processes worked on the deliveries");
        child.kill().await.unwrap();
    }
});

// SIGKILL in the middle of a burst: after a restart every accepted event reaches the receiver,
// and duplicates carry the same webhook-id.
both_backends!(sigkill_mid_burst_loses_nothing, |backend| async move {
    let mut s = start(backend, &[]).await;
    let t = s.token("app", "default", "member").await;
    let secret = generate_secret();
    let rx = receiver(&secret).await;
    register(&s, &t, json!({"url": rx.url(), "secret": secret})).await;
    let total = 1500;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (http, url, t, accepted, next) = (
            s.http().clone(),
            s.url("/api/v1/events"),
            t.clone(),
            accepted.clone(),
            next.clone(),
        );
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= total {
                    return;
                }
                let r = http
                    .post(&url)
                    .bearer_auth(&t)
                    .json(&json!({"event_type": "order.created", "data": {"i": i}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => {
                        let v: Value = r.json().await.unwrap();
                        accepted
                            .lock()
                            .unwrap()
                            .push(v["event_id"].as_str().unwrap().to_string());
                    }
                    _ => return, // the server died under us
                }
            }
        }));
    }
    assert!(rx.wait_for_acknowledged(40, WAIT).await);
    s.kill().await;
    for c in clients {
        c.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= 40 && accepted.len() < total,
        "killed mid-burst: {}",
        accepted.len()
    );
    s.restart().await;
    let want: HashSet<String> = accepted.into_iter().collect();
    let ok = eventually(Duration::from_secs(60), || async {
        let seen: HashSet<String> = rx
            .received()
            .iter()
            .filter(|r| r.responded == Some(200))
            .map(|r| body_json(r)["event_id"].as_str().unwrap().to_string())
            .collect();
        want.is_subset(&seen).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "every accepted event is delivered after the restart"
    );
    let mut ids_per_event: HashMap<String, HashSet<String>> = HashMap::new();
    for r in rx.received() {
        ids_per_event
            .entry(body_json(&r)["event_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(header(&r, "webhook-id").to_string());
    }
    assert!(
        ids_per_event.values().all(|ids| ids.len() == 1),
        "a redelivered event keeps its webhook-id"
    );
    assert_eq!(rx.invalid(), 0);
});
