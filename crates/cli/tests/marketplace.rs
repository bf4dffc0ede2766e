//! Template Marketplace through the real binary over HTTP, on SQLite and PostgreSQL: three users
//! in two workspaces (alice and bob in `w1`, carol in `w2`).

use aragora_testkit::{Server, ServerOptions, both_backends};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

struct Users {
    alice: String,
    bob: String,
    carol: String,
}

async fn users(s: &Server) -> Users {
    Users {
        alice: s.token("alice", "w1", "member").await,
        bob: s.token("bob", "w1", "member").await,
        carol: s.token("carol", "w2", "member").await,
    }
}

fn graph() -> Value {
    json!({"nodes": [{"id": "fetch", "type": "http"}, {"id": "scan", "type": "scanner"},
                     {"id": "report", "type": "notify"}],
           "edges": [{"source": "fetch", "target": "scan"}, {"source": "scan", "target": "report"}]})
}

fn body(name: &str) -> Value {
    json!({"name": name, "description": "Automated security scanning workflow",
           "category": "workflow", "visibility": "public", "template_data": graph(),
           "tags": ["security", "automation"]})
}

async fn publish(s: &Server, token: &str, body: &Value) -> Value {
    let (status, resp) = s.post("/api/marketplace/templates", token, body).await;
    assert_eq!(status, 201, "publish: {resp}");
    resp
}

async fn patch(s: &Server, path: &str, token: &str, body: &Value) -> (u16, Value) {
    s.call(Method::PATCH, path, Some(token), Some(body)).await
}

async fn delete(s: &Server, path: &str, token: &str) -> (u16, Value) {
    s.call(Method::DELETE, path, Some(token), None).await
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn assert_invalid(status: u16, resp: &Value, field: &str) {
    assert_eq!(status, 422, "expected 422 naming {field}: {resp}");
    assert_eq!(resp["error"]["code"], "validation_failed", "{resp}");
    assert_eq!(resp["error"]["details"]["field"], field, "{resp}");
}

/// SHA-256 of canonical JSON, computed independently of the server.
fn checksum_of(v: &Value) -> String {
    format!(
        "sha256:{}",
        aragora_testkit_sha256(aragora_marketplace::template::canonical_json(v).as_bytes())
    )
}

fn aragora_testkit_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

both_backends!(whole_api, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let u = users(&s).await;
    let viewer = s.token("vera", "w1", "viewer").await;

    // Publish: the guide's body → 201, version 1.0.0, the §10 shape.
    let (status, resp) = s
        .post("/api/marketplace/templates", &viewer, &body("Nope"))
        .await;
    assert_eq!(status, 403, "viewers cannot publish: {resp}");
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("aragora_marketplace_publish_failures_total{reason=\"forbidden\"} 1"),
        "a publish refused for want of the permission counts: {metrics}"
    );
    let t = publish(&s, &u.alice, &body("Security Scanner Workflow")).await;
    let id = t["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("tmpl-"), "{t}");
    for (k, v) in [
        ("name", json!("Security Scanner Workflow")),
        ("category", json!("workflow")),
        ("visibility", json!("public")),
        ("tags", json!(["security", "automation"])),
        ("owner", json!("alice")),
        ("workspace", json!("w1")),
        ("latest_version", json!("1.0.0")),
        ("downloads", json!(0)),
        ("rating_average", json!(0.0)),
        ("rating_count", json!(0)),
        ("template_data", graph()),
    ] {
        assert_eq!(t[k], v, "{k} in {t}");
    }
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    // `null` for an optional field means its default, for `tags` as for `visibility`.
    let mut untagged = body("Untagged Workflow");
    untagged["tags"] = Value::Null;
    untagged["visibility"] = Value::Null;
    let u2 = publish(&s, &u.alice, &untagged).await;
    assert_eq!(
        (u2["tags"].clone(), u2["visibility"].clone()),
        (json!([]), json!("public"))
    );
    let (status, _) = delete(
        &s,
        &format!("/api/marketplace/templates/{}", u2["id"].as_str().unwrap()),
        &u.alice,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(t["checksum"], checksum_of(&graph()));
    let path = format!("/api/marketplace/templates/{id}");

    // Get (with template_data), as another workspace's user.
    let (status, got) = s.get(&path, &u.carol).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["template_data"], graph());
    assert_eq!(got["description"], "Automated security scanning workflow");

    // PATCH: owner only; the graph is immutable.
    let (status, resp) = patch(&s, &path, &u.bob, &json!({"description": "mine now"})).await;
    assert_eq!(status, 403, "{resp}");
    let (status, resp) = patch(&s, &path, &u.alice, &json!({"template_data": graph()})).await;
    assert_invalid(status, &resp, "template_data");
    let (status, resp) = patch(
        &s,
        &path,
        &u.alice,
        &json!({"description": "Scans repos for secrets", "tags": ["security", "secrets"]}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["description"], "Scans repos for secrets");
    assert_eq!(resp["tags"], json!(["security", "secrets"]));
    assert_eq!(resp["name"], "Security Scanner Workflow");
    // Nothing to change: 200 with the template as it is, `updated_at` untouched.
    for body in [
        json!({}),
        json!({"name": null, "tags": null}),
        json!({"description": "Scans repos for secrets"}),
    ] {
        let (status, same) = patch(&s, &path, &u.alice, &body).await;
        assert_eq!(status, 200, "{same}");
        assert_eq!(same["updated_at"], resp["updated_at"], "{body}");
    }
    let (_, found) = s
        .get("/api/marketplace/templates?tags=secrets", &u.carol)
        .await;
    assert_eq!(ids(&found), std::slice::from_ref(&id));
    let (_, found) = s
        .get("/api/marketplace/templates?tags=automation", &u.carol)
        .await;
    assert_eq!(found["total"], 0, "old tag is gone: {found}");

    // Versions: semver, immutable, ordered by precedence.
    let mut g2 = graph();
    g2["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "archive"}));
    g2["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "report", "target": "archive"}));
    let vpath = format!("{path}/versions");
    let (status, v) = s
        .post(
            &vpath,
            &u.alice,
            &json!({"version": "1.1.0", "changelog": "archive step", "template_data": g2}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["version"], "1.1.0");
    assert_eq!(v["checksum"], checksum_of(&g2));
    let (status, resp) = s
        .post(
            &vpath,
            &u.alice,
            &json!({"version": "1.1.0", "template_data": graph()}),
        )
        .await;
    assert_eq!(status, 409, "versions are immutable: {resp}");
    let (status, resp) = s
        .post(
            &vpath,
            &u.alice,
            &json!({"version": "1.1.0+rebuild", "template_data": graph()}),
        )
        .await;
    assert_eq!(
        status, 409,
        "build metadata does not make a new version: {resp}"
    );
    let (status, resp) = s
        .post(
            &vpath,
            &u.alice,
            &json!({"version": "1.2", "template_data": graph()}),
        )
        .await;
    assert_invalid(status, &resp, "version");
    let (status, resp) = s
        .post(
            &vpath,
            &u.bob,
            &json!({"version": "9.0.0", "template_data": graph()}),
        )
        .await;
    assert_eq!(status, 403, "only the owner publishes versions: {resp}");
    let (status, resp) = s
        .post(
            &vpath,
            &u.alice,
            &json!({"version": "2.0.0-rc.1", "template_data": graph()}),
        )
        .await;
    assert_eq!(status, 201, "{resp}");
    let (_, list) = s.get(&vpath, &u.carol).await;
    let order: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["2.0.0-rc.1", "1.1.0", "1.0.0"]);
    assert_eq!(list["total"], 3);
    assert!(list["items"][0].get("template_data").is_none());
    let (_, p1) = s.get(&format!("{vpath}?limit=2"), &u.carol).await;
    let (_, p2) = s
        .get(
            &format!(
                "{vpath}?limit=2&cursor={}",
                p1["next_cursor"].as_str().unwrap()
            ),
            &u.carol,
        )
        .await;
    assert_eq!(p2["items"][0]["version"], "1.0.0");
    assert!(p2["next_cursor"].is_null());
    let (status, one) = s.get(&format!("{vpath}/1.0.0"), &u.carol).await;
    assert_eq!(status, 200);
    assert_eq!(one["template_data"], graph());
    let (status, _) = s.get(&format!("{vpath}/3.0.0"), &u.carol).await;
    assert_eq!(status, 404);
    // The default version is the highest stable one, not the pre-release.
    let (_, got) = s.get(&path, &u.carol).await;
    assert_eq!(got["latest_version"], "1.1.0");
    assert_eq!(got["template_data"], g2);

    // Download: default version, checksum, counted once per user/version/day.
    let dpath = format!("{path}/download");
    let (status, d) = s.post(&dpath, &u.carol, &json!({})).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["version"], "1.1.0");
    assert_eq!(d["template_data"], g2);
    assert_eq!(d["checksum"], checksum_of(&d["template_data"]));
    assert_eq!(d["counted"], true);
    let resp = s
        .http()
        .post(s.url(&dpath))
        .bearer_auth(&u.carol)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a download needs no body");
    let d: Value = resp.json().await.unwrap();
    assert_eq!(d["counted"], false, "same user, version and day: {d}");
    let (_, d) = s.post(&dpath, &u.carol, &json!({"version": "1.0.0"})).await;
    assert_eq!(
        (d["version"].as_str(), d["counted"].as_bool()),
        (Some("1.0.0"), Some(true))
    );
    let (_, d) = s.post(&dpath, &u.bob, &json!({})).await;
    assert_eq!(d["counted"], true);
    let (_, got) = s.get(&path, &u.carol).await;
    assert_eq!(got["downloads"], 3, "{got}");
    let (status, _) = s.post(&dpath, &u.carol, &json!({"version": "7.7.7"})).await;
    assert_eq!(status, 404);
    let (status, resp) = s
        .post(&dpath, &u.carol, &json!({"version": "garbage"}))
        .await;
    assert_invalid(status, &resp, "version");

    // Yank: not served by default, still downloadable by name; owner or admin only.
    let (status, _) = s
        .post(&format!("{vpath}/1.1.0/yank"), &u.bob, &json!({}))
        .await;
    assert_eq!(status, 403);
    let (status, y) = s
        .post(&format!("{vpath}/1.1.0/yank"), &u.alice, &json!({}))
        .await;
    assert_eq!(status, 200, "{y}");
    assert_eq!(y["yanked"], true);
    let (_, got) = s.get(&path, &u.carol).await;
    assert_eq!(got["latest_version"], "1.0.0");
    let (_, d) = s.post(&dpath, &u.carol, &json!({})).await;
    assert_eq!(d["version"], "1.0.0");
    let (status, d) = s
        .post(&format!("{dpath}?version=1.1.0"), &u.carol, &json!({}))
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(
        (d["version"].as_str(), d["yanked"].as_bool()),
        (Some("1.1.0"), Some(true))
    );
    let (_, list) = s.get(&vpath, &u.carol).await;
    assert_eq!(list["items"][1]["yanked"], true);
    // Yank everything stable: the pre-release becomes the default; then nothing is left.
    s.post(&format!("{vpath}/1.0.0/yank"), &u.alice, &json!({}))
        .await;
    let (_, got) = s.get(&path, &u.carol).await;
    assert_eq!(got["latest_version"], "2.0.0-rc.1");
    let (status, _) = s
        .post(
            &format!("{vpath}/2.0.0-rc.1/yank"),
            &s.admin_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "admins may yank");
    let (status, resp) = s.post(&dpath, &u.carol, &json!({})).await;
    assert_eq!(status, 404, "nothing to serve by default: {resp}");
    let (_, got) = s.get(&path, &u.carol).await;
    assert!(got["template_data"].is_null(), "{got}");
    let (status, _) = s
        .post(&format!("{vpath}/1.1.0/unyank"), &u.alice, &json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, d) = s.post(&dpath, &u.carol, &json!({})).await;
    assert_eq!(d["version"], "1.1.0");

    // Categories with counts, and the list shape.
    publish(
        &s,
        &u.carol,
        &json!({"name": "Triage", "category": "support", "template_data": graph()}),
    )
    .await;
    let (status, cats) = s.get("/api/marketplace/categories", &u.bob).await;
    assert_eq!(status, 200, "{cats}");
    assert_eq!(
        cats["items"],
        json!([{"name": "support", "count": 1}, {"name": "workflow", "count": 1}])
    );
    // Cursor pages by name, like every list.
    let (_, first) = s.get("/api/marketplace/categories?limit=1", &u.bob).await;
    assert_eq!(first["items"], json!([{"name": "support", "count": 1}]));
    assert_eq!(first["total"], 2);
    let next = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = s
        .get(
            &format!("/api/marketplace/categories?limit=1&cursor={next}"),
            &u.bob,
        )
        .await;
    assert_eq!(second["items"], json!([{"name": "workflow", "count": 1}]));
    assert!(second["next_cursor"].is_null(), "{second}");
    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("cursor=%25%25", "cursor"),
    ] {
        let (status, body) = s
            .get(&format!("/api/marketplace/categories?{query}"), &u.bob)
            .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["error"]["details"]["field"], field, "{body}");
    }
    let (_, list) = s
        .get(
            "/api/marketplace/templates?category=workflow&visibility=public&page=1&limit=20",
            &u.bob,
        )
        .await;
    assert_eq!(list["total"], 1);
    assert_eq!(
        (list["page"].as_u64(), list["limit"].as_u64()),
        (Some(1), Some(20))
    );
    assert!(list["next_cursor"].is_null());
    assert!(
        list["items"][0].get("template_data").is_none(),
        "lists carry no graphs"
    );

    // Metrics.
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("aragora_marketplace_templates_total{category=\"workflow\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("aragora_marketplace_downloads_total{unique=\"true\"}"));
    assert!(metrics.contains("aragora_marketplace_publish_failures_total{reason=\"conflict\"} 2"));
    // Refusals before the handler runs count as failed publishes too: a body that is not JSON,
    // one over the size limit (and the viewer's, checked at the start).
    for (bytes, status) in [(b"{bad".to_vec(), 400), (vec![b' '; 3 << 20], 413)] {
        // A client of its own: the server answers 413 before reading the whole body and closes
        // that connection, which a shared pool could hand to the next request.
        let resp = reqwest::Client::new()
            .post(s.url("/api/marketplace/templates"))
            .bearer_auth(&u.alice)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
    }
    let metrics = s.metrics().await;
    for reason in ["malformed_json", "payload_too_large"] {
        assert!(
            metrics.contains(&format!(
                "aragora_marketplace_publish_failures_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }

    // DELETE (unlist): owner or admin; afterwards gone for everyone, owner included.
    let (status, _) = delete(&s, &path, &u.bob).await;
    assert_eq!(status, 403);
    let (status, _) = delete(&s, &path, &u.alice).await;
    assert_eq!(status, 204);
    for token in [&u.alice, &u.bob, &u.carol] {
        let (status, _) = s.get(&path, token).await;
        assert_eq!(status, 404);
    }
    let (status, _) = delete(&s, &path, &u.alice).await;
    assert_eq!(status, 404);
    let (_, cats) = s.get("/api/marketplace/categories", &u.bob).await;
    assert_eq!(cats["items"], json!([{"name": "support", "count": 1}]));
    let (_, list) = s.get("/api/marketplace/templates?q=security", &u.bob).await;
    assert_eq!(list["total"], 0, "unlisted templates are not found: {list}");
    let triage = s
        .get("/api/marketplace/templates?category=support", &u.alice)
        .await
        .1;
    let triage_path = format!("/api/marketplace/templates/{}", ids(&triage)[0]);
    let (status, _) = delete(&s, &triage_path, &s.admin_token).await;
    assert_eq!(status, 204, "admins may unlist");
});

both_backends!(visibility_leaks_answer_404, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let u = users(&s).await;
    let mut made = Vec::new();
    for vis in ["public", "workspace", "private"] {
        let mut b = body(&format!("Zebra {vis} pipeline"));
        b["visibility"] = json!(vis);
        b["category"] = json!(format!("cat-{vis}"));
        b["tags"] = json!(["zebra", vis]);
        made.push(
            publish(&s, &u.alice, &b).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let [public, ws, private] = [made[0].clone(), made[1].clone(), made[2].clone()];
    // Someone else's private template in w1 stays hidden from alice too.
    let mut b = body("Zebra bob private");
    b["visibility"] = json!("private");
    b["tags"] = json!(["zebra"]);
    let bobs = publish(&s, &u.bob, &b).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let cases: [(&str, &String, Vec<&String>, Vec<&String>); 3] = [
        ("alice", &u.alice, vec![&public, &ws, &private], vec![&bobs]),
        ("bob", &u.bob, vec![&public, &ws, &bobs], vec![&private]),
        ("carol", &u.carol, vec![&public], vec![&ws, &private, &bobs]),
    ];
    for (who, token, visible, hidden) in cases {
        let want: HashSet<&String> = visible.iter().copied().collect();
        for q in [
            "/api/marketplace/templates",
            "/api/marketplace/templates?q=zebra",
            "/api/marketplace/templates?q=zebra%20pipeline&sort=newest",
            "/api/marketplace/templates?tags=zebra",
            "/api/marketplace/templates?sort=rating",
            "/api/marketplace/templates?q=bra%20p",
        ] {
            let (status, list) = s.get(q, token).await;
            assert_eq!(status, 200, "{q}: {list}");
            let got: Vec<String> = ids(&list);
            let got_set: HashSet<&String> = got.iter().collect();
            if q.ends_with("bra%20p") {
                // Substring fallback: names containing "bra p" (not bob's).
                assert!(
                    got_set.iter().all(|id| want.contains(id)),
                    "{who} {q}: {got:?}"
                );
                continue;
            }
            let expect: HashSet<&String> = if q.contains("pipeline") {
                want.iter().copied().filter(|id| **id != bobs).collect()
            } else {
                want.clone()
            };
            assert_eq!(got_set, expect, "{who} {q}");
            assert_eq!(list["total"], expect.len(), "{who} {q} total");
        }
        for vis in ["workspace", "private"] {
            let (_, list) = s
                .get(
                    &format!("/api/marketplace/templates?visibility={vis}"),
                    token,
                )
                .await;
            assert!(
                ids(&list).iter().all(|id| want.contains(id)),
                "{who} visibility={vis}: {list}"
            );
            let (_, list) = s
                .get(
                    &format!("/api/marketplace/templates?category=cat-{vis}"),
                    token,
                )
                .await;
            assert!(
                ids(&list).iter().all(|id| want.contains(id)),
                "{who} cat-{vis}"
            );
            assert_eq!(list["total"], list["items"].as_array().unwrap().len());
        }
        let (_, cats) = s.get("/api/marketplace/categories", token).await;
        let total: i64 = cats["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["count"].as_i64().unwrap())
            .sum();
        assert_eq!(total as usize, want.len(), "{who} categories: {cats}");
        for id in &hidden {
            let p = format!("/api/marketplace/templates/{id}");
            for (m, path, body) in [
                (Method::GET, p.clone(), None),
                (Method::POST, format!("{p}/download"), Some(json!({}))),
                (
                    Method::POST,
                    format!("{p}/download"),
                    Some(json!({"version": "1.0.0"})),
                ),
                (Method::GET, format!("{p}/versions"), None),
                (Method::GET, format!("{p}/versions/1.0.0"), None),
                (Method::GET, format!("{p}/reviews"), None),
                (
                    Method::POST,
                    format!("{p}/reviews"),
                    Some(json!({"rating": 5, "title": "x"})),
                ),
                (
                    Method::POST,
                    format!("{p}/rate"),
                    Some(json!({"rating": 5})),
                ),
                (Method::PATCH, p.clone(), Some(json!({"name": "mine"}))),
                (Method::DELETE, p.clone(), None),
                (
                    Method::POST,
                    format!("{p}/versions"),
                    Some(json!({"version": "9.0.0", "template_data": graph()})),
                ),
                (
                    Method::POST,
                    format!("{p}/versions/1.0.0/yank"),
                    Some(json!({})),
                ),
            ] {
                let (status, resp) = s.call(m.clone(), &path, Some(token), body.as_ref()).await;
                assert_eq!(status, 404, "{who}: {m} {path} must not reveal it: {resp}");
                assert_eq!(resp["error"]["code"], "not_found");
            }
        }
    }
    // The admin (operator) sees everything, for moderation.
    let (_, list) = s
        .get("/api/marketplace/templates?q=zebra", &s.admin_token)
        .await;
    assert_eq!(list["total"], 4);
});

both_backends!(
    ratings_upsert_and_reviews_share_the_rating,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let u = users(&s).await;
        let dave = s.token("dave", "w2", "member").await;
        let id = publish(&s, &u.alice, &body("Rated")).await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let p = format!("/api/marketplace/templates/{id}");
        let rate = |token: &str, n: Value| {
            let token = token.to_string();
            let s = &s;
            let p = p.clone();
            async move {
                s.post(&format!("{p}/rate"), &token, &json!({"rating": n}))
                    .await
            }
        };

        let (status, r) = rate(&u.bob, json!(4)).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(
            (r["rating_average"].as_f64(), r["rating_count"].as_i64()),
            (Some(4.0), Some(1))
        );
        let (_, r) = rate(&u.bob, json!(2)).await;
        assert_eq!(
            (r["rating_average"].as_f64(), r["rating_count"].as_i64()),
            (Some(2.0), Some(1)),
            "upsert"
        );
        for bad in [json!(0), json!(6), json!(4.5), json!("5")] {
            let (status, resp) = rate(&u.bob, bad.clone()).await;
            assert_invalid(status, &resp, "rating");
        }
        let (status, resp) = rate(&u.alice, json!(5)).await;
        assert_eq!(status, 403, "owners cannot rate their own: {resp}");
        let (status, _) = s
            .post(
                &format!("{p}/reviews"),
                &u.alice,
                &json!({"rating": 5, "title": "mine"}),
            )
            .await;
        assert_eq!(status, 403);

        // A review carries the rating: carol's review adds one rating, not two.
        let rv = format!("{p}/reviews");
        let (status, r) = s
            .post(
                &rv,
                &u.carol,
                &json!({"rating": 5, "title": "Great template!", "content": "Easy to use."}),
            )
            .await;
        assert_eq!(status, 201, "{r}");
        assert_eq!(
            (r["user"].as_str(), r["rating"].as_i64()),
            (Some("carol"), Some(5))
        );
        let (_, t) = s.get(&p, &u.bob).await;
        assert_eq!(
            (t["rating_average"].as_f64(), t["rating_count"].as_i64()),
            (Some(3.5), Some(2))
        );
        // A second review replaces the first (200), and moves the rating.
        let (status, r) = s
            .post(
                &rv,
                &u.carol,
                &json!({"rating": 3, "title": "Good", "content": "Fine."}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
        let (_, t) = s.get(&p, &u.bob).await;
        assert_eq!(
            (t["rating_average"].as_f64(), t["rating_count"].as_i64()),
            (Some(2.5), Some(2))
        );
        // Rating after reviewing changes the review's rating too: it is one rating.
        let (_, r) = rate(&u.carol, json!(1)).await;
        assert_eq!(
            (r["rating_average"].as_f64(), r["rating_count"].as_i64()),
            (Some(1.5), Some(2))
        );
        // Bob rated first, reviews later: still one rating, and his review is new (201).
        let (status, _) = s
            .post(&rv, &u.bob, &json!({"rating": 4, "content": "Solid."}))
            .await;
        assert_eq!(status, 201);
        let (status, _) = s
            .post(&rv, &dave, &json!({"rating": 5, "title": " "}))
            .await;
        assert_eq!(status, 422, "a review needs text");
        let (_, t) = s.get(&p, &u.bob).await;
        assert_eq!(
            (t["rating_average"].as_f64(), t["rating_count"].as_i64()),
            (Some(2.5), Some(2))
        );
        // A bare rating by dave is not a review.
        rate(&dave, json!(5)).await;
        let (_, t) = s.get(&p, &u.bob).await;
        assert_eq!(
            (t["rating_average"].as_f64(), t["rating_count"].as_i64()),
            (Some(3.33), Some(3))
        );

        let (_, list) = s.get(&rv, &u.bob).await;
        assert_eq!(list["total"], 2, "{list}");
        let by_user: Vec<(String, i64)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["user"].as_str().unwrap().to_string(),
                    r["rating"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            by_user,
            [("bob".to_string(), 4), ("carol".to_string(), 1)],
            "newest review first"
        );
        assert_eq!(list["items"][1]["title"], "Good");
        let (_, p1) = s.get(&format!("{rv}?limit=1"), &u.bob).await;
        let (_, p2) = s
            .get(
                &format!(
                    "{rv}?limit=1&cursor={}",
                    p1["next_cursor"].as_str().unwrap()
                ),
                &u.bob,
            )
            .await;
        assert_eq!(
            [ids(&p1), ids(&p2)].concat(),
            ids(&list),
            "cursor pages neither skip nor repeat"
        );
        assert!(p2["next_cursor"].is_null());

        let metrics = s.metrics().await;
        assert!(
            metrics.contains("aragora_marketplace_ratings_distribution_bucket{le=\"1\"}"),
            "{metrics}"
        );
    }
);

both_backends!(ranking, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let u = users(&s).await;
    let mk = |name: &str, tags: Value, desc: &str| {
        json!({"name": name, "description": desc, "category": "workflow", "tags": tags,
               "template_data": graph()})
    };
    let mut id = std::collections::HashMap::new();
    for (name, tags, desc) in [
        (
            "Audit by description",
            json!([]),
            "Checks the security posture nightly",
        ),
        ("Audit by tag", json!(["security"]), "Nightly checks"),
        ("Security audit", json!([]), "Nightly checks"),
        ("Security scanner", json!([]), "Nightly checks"),
        ("Security", json!([]), "An empty shell"),
        ("Unrelated", json!(["ops"]), "Nothing to see"),
    ] {
        let t = publish(&s, &u.alice, &mk(name, tags, desc)).await;
        id.insert(name, t["id"].as_str().unwrap().to_string());
    }
    // "Security scanner" is more popular than "Security audit": equal field score, more downloads.
    for token in [&u.bob, &u.carol] {
        s.post(
            &format!(
                "/api/marketplace/templates/{}/download",
                id["Security scanner"]
            ),
            token,
            &json!({}),
        )
        .await;
    }
    let (_, r) = s.get("/api/marketplace/templates?q=security", &u.bob).await;
    assert_eq!(
        names(&r),
        [
            "Security",
            "Security scanner",
            "Security audit",
            "Audit by tag",
            "Audit by description"
        ],
        "exact name first, then name > tags > description, ties by downloads"
    );
    assert_eq!(r["total"], 5);
    // Case and spacing do not matter for the exact match; it beats better-scoring names.
    let (_, r) = s
        .get(
            "/api/marketplace/templates?q=%20SECURITY%20%20audit",
            &u.bob,
        )
        .await;
    assert_eq!(names(&r)[0], "Security audit");
    // Search-as-you-type: the last term is a prefix.
    let (_, r) = s.get("/api/marketplace/templates?q=secur", &u.bob).await;
    assert_eq!(r["total"], 5);
    assert_eq!(
        names(&r)[0],
        "Security scanner",
        "no exact match: score, then downloads"
    );
    // Terms are AND-ed across fields.
    let (_, r) = s
        .get("/api/marketplace/templates?q=nightly%20security", &u.bob)
        .await;
    assert_eq!(
        names(&r),
        [
            "Security scanner",
            "Security audit",
            "Audit by tag",
            "Audit by description"
        ]
    );
    let (_, r) = s
        .get("/api/marketplace/templates?q=posture%20security", &u.bob)
        .await;
    assert_eq!(names(&r), ["Audit by description"]);
    // No term matches: names containing the query (trigram fallback).
    let (_, r) = s
        .get("/api/marketplace/templates?q=curity%20aud", &u.bob)
        .await;
    assert_eq!(names(&r), ["Security audit"]);
    let (_, r) = s.get("/api/marketplace/templates?q=zzzz", &u.bob).await;
    assert_eq!(
        (r["total"].as_i64(), r["items"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    // Other sorts apply to search results too.
    let (_, r) = s
        .get(
            "/api/marketplace/templates?q=security&sort=downloads&limit=1",
            &u.bob,
        )
        .await;
    assert_eq!(names(&r), ["Security scanner"]);

    // Bayesian order: one 5-star rating does not outrank 4.8 stars from 50 users.
    let lone = publish(&s, &u.alice, &mk("Lone star", json!([]), "")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let crowd = publish(&s, &u.alice, &mk("Crowd pleaser", json!([]), "")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.post(
        &format!("/api/marketplace/templates/{lone}/rate"),
        &u.bob,
        &json!({"rating": 5}),
    )
    .await;
    for i in 0..50 {
        let t = s.token(&format!("rater{i}"), "w2", "member").await;
        let stars = if i < 40 { 5 } else { 4 };
        let (status, r) = s
            .post(
                &format!("/api/marketplace/templates/{crowd}/rate"),
                &t,
                &json!({"rating": stars}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
    }
    let (_, r) = s
        .get("/api/marketplace/templates?sort=rating&limit=2", &u.bob)
        .await;
    assert_eq!(names(&r), ["Crowd pleaser", "Lone star"]);
    assert_eq!(
        (
            r["items"][0]["rating_average"].as_f64(),
            r["items"][0]["rating_count"].as_i64()
        ),
        (Some(4.8), Some(50))
    );
    assert_eq!(
        (
            r["items"][1]["rating_average"].as_f64(),
            r["items"][1]["rating_count"].as_i64()
        ),
        (Some(5.0), Some(1))
    );
    assert!(
        r["items"][0]["rating_score"].as_f64().unwrap()
            > r["items"][1]["rating_score"].as_f64().unwrap()
    );
    let (_, r) = s
        .get("/api/marketplace/templates?min_rating=4.9", &u.bob)
        .await;
    assert_eq!(
        names(&r),
        ["Lone star"],
        "min_rating filters on the plain average"
    );
});

both_backends!(pagination_under_concurrent_inserts, |backend| async move {
    let s = Server::start_with(
        BIN,
        backend,
        ServerOptions {
            env: vec![("ARAGORA_MARKETPLACE_PUBLISH_LIMIT".into(), "0/h".into())],
            ..Default::default()
        },
    )
    .await;
    let u = users(&s).await;
    let mut before = HashSet::new();
    for i in 0..45 {
        let mut b = body(&format!("Alpha {i:02}"));
        b["category"] = json!("paging");
        let t = publish(&s, &u.alice, &b).await;
        before.insert(t["id"].as_str().unwrap().to_string());
    }
    // page=N and the cursor agree when nothing changes.
    let (_, p2) = s
        .get(
            "/api/marketplace/templates?category=paging&limit=10&page=2&sort=newest",
            &u.bob,
        )
        .await;
    let (_, p1) = s
        .get(
            "/api/marketplace/templates?category=paging&limit=10&sort=newest",
            &u.bob,
        )
        .await;
    let (_, c2) = s
        .get(
            &format!(
                "/api/marketplace/templates?category=paging&limit=10&sort=newest&cursor={}",
                p1["next_cursor"].as_str().unwrap()
            ),
            &u.bob,
        )
        .await;
    assert_eq!(ids(&p2), ids(&c2));
    assert_eq!(c2["page"], 2);
    let (status, resp) = s
        .get(
            &format!(
                "/api/marketplace/templates?category=paging&limit=10&sort=downloads&cursor={}",
                p1["next_cursor"].as_str().unwrap()
            ),
            &u.bob,
        )
        .await;
    assert_invalid(status, &resp, "cursor");

    for query in [
        "category=paging&sort=newest",
        "category=paging&sort=downloads",
        "category=paging&sort=updated",
        "category=paging&sort=rating",
        "q=alpha",
    ] {
        // Another client keeps publishing matching templates while we page.
        let client = s.http().clone();
        let url = s.url("/api/marketplace/templates");
        let token = u.carol.clone();
        let tag = query.replace(['=', '&'], "-");
        let writer = tokio::spawn(async move {
            for i in 0..12 {
                let mut b = body(&format!("Alpha late {tag} {i}"));
                b["category"] = json!("paging");
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&b)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        });
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/marketplace/templates?{query}&limit=7&cursor={c}"),
                None => format!("/api/marketplace/templates?{query}&limit=7"),
            };
            let (status, page) = s.get(&path, &u.bob).await;
            assert_eq!(status, 200, "{page}");
            pages += 1;
            assert_eq!(page["page"], pages);
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{query}: an item repeated");
        for id in &before {
            assert!(unique.contains(id), "{query}: {id} was skipped");
        }
        for id in &seen {
            before.insert(id.clone());
        }
    }
});

both_backends!(invalid_requests_name_the_field, |backend| async move {
    let s = Server::start_with(
        BIN,
        backend,
        ServerOptions {
            env: vec![(
                "ARAGORA_MARKETPLACE_MAX_TEMPLATE_BYTES".into(),
                "600".into(),
            )],
            ..Default::default()
        },
    )
    .await;
    let u = users(&s).await;
    let post = |b: Value| {
        let s = &s;
        let t = u.alice.clone();
        async move { s.post("/api/marketplace/templates", &t, &b).await }
    };
    let with_data = |d: Value| {
        let mut b = body("Broken");
        b["template_data"] = d;
        b
    };
    let e =
        |edges: Value| json!({"nodes": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "edges": edges});
    let ok_edge = json!({"source": "a", "target": "b"});
    for (data, field) in [
        (
            e(json!([ok_edge, ok_edge, ok_edge, {"source": "a", "target": "nowhere"}])),
            "template_data.edges[3].target",
        ),
        (
            e(json!([{"source": "ghost", "target": "a"}])),
            "template_data.edges[0].source",
        ),
        (
            e(json!([ok_edge, {"target": "a"}])),
            "template_data.edges[1].source",
        ),
        (e(json!([ok_edge, "a->b"])), "template_data.edges[1]"),
        (
            json!({"nodes": [{"id": "a"}, {"id": "b"}, {"id": "a"}]}),
            "template_data.nodes[2].id",
        ),
        (
            json!({"nodes": [{"id": "a"}, {"name": "no id"}]}),
            "template_data.nodes[1].id",
        ),
        (json!({"nodes": [{"id": 1}]}), "template_data.nodes[0].id"),
        (json!({"nodes": []}), "template_data.nodes"),
        (json!({"edges": []}), "template_data.nodes"),
        (
            json!({"nodes": [{"id": "a"}], "edges": {}}),
            "template_data.edges",
        ),
        (json!([1, 2]), "template_data"),
        (
            json!({"nodes": [{"id": "a", "blob": "x".repeat(700)}]}),
            "template_data",
        ),
    ] {
        let (status, resp) = post(with_data(data.clone())).await;
        assert_invalid(status, &resp, field);
        let msg = resp["error"]["message"].as_str().unwrap();
        if field.ends_with("target") {
            assert!(
                msg.contains("`nowhere`"),
                "the message names the node: {msg}"
            );
        }
    }
    let mut b = body("x");
    b.as_object_mut().unwrap().remove("name");
    let (status, resp) = post(b).await;
    assert_invalid(status, &resp, "name");
    for (k, v, field) in [
        ("name", json!("  "), "name"),
        ("category", json!("Work Flow"), "category"),
        ("visibility", json!("secret"), "visibility"),
        ("tags", json!(["ok", "not ok"]), "tags[1]"),
        ("version", json!("v1"), "version"),
        ("name", json!(7), "name"),
    ] {
        let mut b = body("x");
        b[k] = v;
        let (status, resp) = post(b).await;
        assert_invalid(status, &resp, field);
    }
    let mut b = body("Versioned");
    b["version"] = json!("0.3.0");
    let t = post(b).await.1;
    assert_eq!(t["latest_version"], "0.3.0");
    let vpath = format!(
        "/api/marketplace/templates/{}/versions",
        t["id"].as_str().unwrap()
    );
    let (status, resp) = s
        .post(&vpath, &u.alice, &json!({"version": "0.4.0", "template_data": e(json!([{"source": "a", "target": "z"}]))}))
        .await;
    assert_invalid(status, &resp, "template_data.edges[0].target");
    for (q, field) in [
        ("sort=stars", "sort"),
        ("sort=relevance", "sort"),
        ("min_rating=7", "min_rating"),
        ("min_rating=high", "min_rating"),
        ("page=0", "page"),
        ("page=9999", "page"),
        ("cursor=bogus!", "cursor"),
        ("visibility=secret", "visibility"),
        ("limit=-1", "limit"),
    ] {
        let (status, resp) = s
            .get(&format!("/api/marketplace/templates?{q}"), &u.bob)
            .await;
        assert_invalid(status, &resp, field);
    }
    let (status, resp) = s
        .get("/api/marketplace/templates?limit=100000", &u.bob)
        .await;
    assert_eq!(
        (status, resp["limit"].as_u64()),
        (200, Some(200)),
        "limits are clamped"
    );
    let (status, resp) = s.get(&format!("{vpath}?cursor=bogus"), &u.bob).await;
    assert_invalid(status, &resp, "cursor");
});

both_backends!(rate_limits_answer_429, |backend| async move {
    let s = Server::start_with(
        BIN,
        backend,
        ServerOptions {
            env: vec![
                ("ARAGORA_MARKETPLACE_PUBLISH_LIMIT".into(), "2/h".into()),
                ("ARAGORA_MARKETPLACE_RATE_LIMIT".into(), "2/h".into()),
                ("ARAGORA_MARKETPLACE_REVIEW_LIMIT".into(), "1/h".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let u = users(&s).await;
    let a = publish(&s, &u.alice, &body("One")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An invalid request is refused before it costs a token.
    let mut bad = body("Bad");
    bad["template_data"] = json!({"nodes": []});
    assert_eq!(
        s.post("/api/marketplace/templates", &u.alice, &bad).await.0,
        422
    );
    publish(&s, &u.alice, &body("Two")).await;
    let resp = s
        .http()
        .post(s.url("/api/marketplace/templates"))
        .bearer_auth(&u.alice)
        .json(&body("Three"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=1800).contains(&retry),
        "one token refills in 30 min: {retry}"
    );
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limited");
    // Versions count as publishing; other users have their own buckets.
    let (status, _) = s
        .post(
            &format!("/api/marketplace/templates/{a}/versions"),
            &u.alice,
            &json!({"version": "1.0.1", "template_data": graph()}),
        )
        .await;
    assert_eq!(status, 429);
    publish(&s, &u.bob, &body("Bob's")).await;

    let r = format!("/api/marketplace/templates/{a}/rate");
    for stars in [3, 4] {
        assert_eq!(s.post(&r, &u.carol, &json!({"rating": stars})).await.0, 200);
    }
    let (status, resp) = s.post(&r, &u.carol, &json!({"rating": 5})).await;
    assert_eq!(status, 429, "{resp}");
    let rv = format!("/api/marketplace/templates/{a}/reviews");
    assert_eq!(
        s.post(&rv, &u.carol, &json!({"rating": 5, "title": "ok"}))
            .await
            .0,
        201
    );
    assert_eq!(
        s.post(&rv, &u.carol, &json!({"rating": 5, "title": "again"}))
            .await
            .0,
        429
    );
    assert_eq!(
        s.post(&rv, &u.bob, &json!({"rating": 4, "title": "fine"}))
            .await
            .0,
        201
    );
    let (_, t) = s
        .get(&format!("/api/marketplace/templates/{a}"), &u.bob)
        .await;
    assert_eq!(
        (t["rating_count"].as_i64(), t["rating_average"].as_f64()),
        (Some(2), Some(4.5))
    );

    let metrics = s.metrics().await;
    assert!(
        metrics.contains("aragora_marketplace_publish_failures_total{reason=\"rate_limited\"} 2"),
        "{metrics}"
    );
});

/// Pages served from the list cache: fresh (`hit`) or just expired while refreshed (`stale`).
fn cache_hits(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("aragora_marketplace_list_cache_total{result=\"hit\"}")
                || l.starts_with("aragora_marketplace_list_cache_total{result=\"stale\"}")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// The list cache: a process serves repeated pages from memory, never serves a page older than its
// own writes, and sees another process's writes within the time-to-live.
both_backends!(list_cache_is_invalidated_by_writes, |backend| async move {
    let ttl = ("ARAGORA_MARKETPLACE_LIST_CACHE_MS", "400");
    let s = Server::start_with(
        BIN,
        backend,
        ServerOptions {
            env: vec![(ttl.0.into(), ttl.1.into())],
            ..Default::default()
        },
    )
    .await;
    let u = users(&s).await;
    let other =
        aragora_testkit::Node::start(BIN, &s.db.url, &["serve", "--no-workers"], &[ttl]).await;
    let other_url = other.base_url.clone().expect("an API node");
    let list_on = |base: String, token: String| async move {
        let r = reqwest::Client::new()
            .get(format!("{base}/api/marketplace/templates?q=cachecheck"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let path = "/api/marketplace/templates?q=cachecheck";
    assert_eq!(s.get(path, &u.alice).await.1["total"], 0);
    assert_eq!(
        list_on(other_url.clone(), u.alice.clone()).await["total"],
        0
    );

    // The same page again is served from the cache.
    let before = cache_hits(&s.metrics().await);
    assert_eq!(s.get(path, &u.alice).await.1["total"], 0);
    let after = cache_hits(&s.metrics().await);
    assert!(
        after > before,
        "a repeated page is a cache hit ({before} → {after})"
    );

    // A write through this process shows at once on this process…
    let t = publish(&s, &u.alice, &body("Cachecheck Scanner")).await;
    let (_, listed) = s.get(path, &u.alice).await;
    assert_eq!(ids(&listed), vec![t["id"].as_str().unwrap().to_string()]);
    // …and on the other process within its time-to-live.
    let seen = aragora_testkit::eventually(std::time::Duration::from_secs(5), || {
        let (url, token) = (other_url.clone(), u.alice.clone());
        async move { (list_on(url, token).await["total"] == 1).then_some(()) }
    })
    .await;
    assert!(
        seen.is_some(),
        "the other process saw the new template within its TTL"
    );

    // Downloads only change a counter: the template shows it at once, list pages within the
    // time-to-live (a download does not empty the cache).
    let id = t["id"].as_str().unwrap();
    s.get(path, &u.alice).await; // a fresh page in the cache (the wait above may outlast it)
    let (status, _) = s
        .post(
            &format!("/api/marketplace/templates/{id}/download"),
            &u.bob,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, detail) = s
        .get(&format!("/api/marketplace/templates/{id}"), &u.alice)
        .await;
    assert_eq!(detail["downloads"], 1);
    let hits = cache_hits(&s.metrics().await);
    assert_eq!(s.get(path, &u.alice).await.1["items"][0]["downloads"], 0);
    assert!(
        cache_hits(&s.metrics().await) > hits,
        "the page survived the download"
    );
    let counted = aragora_testkit::eventually(std::time::Duration::from_secs(5), || async {
        (s.get(path, &u.alice).await.1["items"][0]["downloads"] == 1).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "the list shows the download within the TTL"
    );
});
