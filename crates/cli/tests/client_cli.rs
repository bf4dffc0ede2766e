//! The CLI's client commands (`aragora templates|explain|batch|webhooks|workers|openapi`): the
//! real binary run as a client against a real server, checking what it prints, the files it
//! writes, its exit status and its messages on failure. Storage-touching flows run on SQLite and
//! PostgreSQL; pure client plumbing (env vars, errors) on SQLite.

use aragora_core::debate::Debate;
use aragora_store::{Db, DbOptions};
use aragora_testkit::{Backend, Server, both_backends};
use aragora_webhooks::receiver::{Behaviour, Receiver, ReceiverConfig};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

/// What one CLI run produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn failed(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `aragora <args>` in `cwd` with exactly the given client env vars (none inherited).
async fn run_env(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).current_dir(cwd).env("RUST_BACKTRACE", "0");
    for var in [
        "ARAGORA_API_URL",
        "ARAGORA_API_TOKEN",
        "ARAGORA_URL",
        "ARAGORA_TOKEN",
        "ARAGORA_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("CLI finished within 120 s")
        .expect("run the aragora binary");
    out.into()
}

/// Runs `aragora <args> --url <server> --token <token>`.
async fn run(s: &Server, cwd: &Path, token: &str, args: &[&str]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", &s.base_url, "--token", token]);
    run_env(cwd, &[], &all).await
}

async fn open_db(s: &Server) -> Db {
    Db::connect(&s.db.url, &DbOptions::default())
        .await
        .expect("open the server's database")
}

/// Finished synthetic debates `deb-<tag>-<i>` stored straight into the server's database.
async fn insert_debates(s: &Server, workspace: &str, tag: &str, n: usize) -> Vec<Debate> {
    let db = open_db(s).await;
    let debates: Vec<Debate> = (0..n)
        .map(|i| {
            let mut d = aragora_explain::synth::debate(4, 3, i as u64 + 7);
            d.id = format!("deb-{tag}-{i}");
            d
        })
        .collect();
    let mut tx = db.begin().await.unwrap();
    for d in &debates {
        aragora_store::debates::insert_in(&mut tx, workspace, d, "test")
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    debates
}

/// GET with the raw body (for non-JSON explanation formats).
async fn get_text(s: &Server, path: &str, token: &str) -> String {
    let resp = s
        .http()
        .get(s.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    resp.text().await.unwrap()
}

fn graph() -> Value {
    json!({"nodes": [{"id": "scan", "type": "scanner"}, {"id": "report", "type": "notify"}],
           "edges": [{"source": "scan", "target": "report"}]})
}

both_backends!(templates_publish_list_download, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = s.token("alice", "w1", "member").await;
    let file = dir.path().join("template.json");
    std::fs::write(
        &file,
        json!({"name": "CLI Scanner", "description": "published by the CLI test",
               "category": "workflow", "visibility": "public", "template_data": graph(),
               "tags": ["cli"]})
        .to_string(),
    )
    .unwrap();

    let published = run(
        &s,
        dir.path(),
        &alice,
        &["templates", "publish", "template.json"],
    )
    .await
    .ok()
    .json();
    let id = published["id"].as_str().expect("id").to_string();
    assert_eq!(published["latest_version"], "1.0.0", "{published}");
    assert_eq!(published["name"], "CLI Scanner");

    let (status, server_view) = s
        .get(&format!("/api/marketplace/templates/{id}"), &alice)
        .await;
    assert_eq!(status, 200, "{server_view}");
    assert_eq!(server_view["name"], "CLI Scanner");

    let listed = run(
        &s,
        dir.path(),
        &alice,
        &["templates", "list", "--category", "workflow"],
    )
    .await;
    listed.ok();
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed: {}", listed.stdout));
    assert!(
        line.contains("CLI Scanner") && line.contains("v1.0.0"),
        "{line}"
    );
    assert!(
        listed.stderr.contains("1 of 1 templates"),
        "{}",
        listed.stderr
    );
    let other = run(
        &s,
        dir.path(),
        &alice,
        &["templates", "list", "--category", "support"],
    )
    .await;
    assert!(!other.ok().stdout.contains(&id), "{}", other.stdout);

    // Download to a file: exactly the published template_data; the checksum on stderr is the
    // server's.
    let d = run(
        &s,
        dir.path(),
        &alice,
        &["templates", "download", &id, "-o", "out.json"],
    )
    .await;
    d.ok();
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json")).unwrap())
            .unwrap();
    assert_eq!(written, graph());
    let (_, server_dl) = s
        .post(
            &format!("/api/marketplace/templates/{id}/download"),
            &alice,
            &json!({}),
        )
        .await;
    let checksum = server_dl["checksum"].as_str().unwrap();
    assert!(checksum.starts_with("sha256:"), "{server_dl}");
    assert!(
        d.stderr.contains(checksum) && d.stderr.contains("v1.0.0"),
        "{}",
        d.stderr
    );
    assert!(
        std::fs::read_to_string(dir.path().join("out.json"))
            .unwrap()
            .ends_with("}\n")
    );
    // …and to stdout (the data only; version and checksum on stderr).
    let to_stdout = run(&s, dir.path(), &alice, &["templates", "download", &id]).await;
    assert!(
        to_stdout.stderr.contains(checksum) && to_stdout.stderr.contains("v1.0.0"),
        "{}",
        to_stdout.stderr
    );
    assert_eq!(to_stdout.ok().json(), graph());

    // Failure paths: an unknown id, a file that is not JSON, a body the server rejects.
    let missing = run(
        &s,
        dir.path(),
        &alice,
        &["templates", "download", "tmpl-nope"],
    )
    .await;
    assert!(
        missing.failed().stderr.contains("404 not_found"),
        "{}",
        missing.stderr
    );
    std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
    let bad = run(
        &s,
        dir.path(),
        &alice,
        &["templates", "publish", "bad.json"],
    )
    .await;
    assert!(
        bad.failed().stderr.contains("bad.json is not JSON"),
        "{}",
        bad.stderr
    );
    std::fs::write(
        dir.path().join("noname.json"),
        json!({"category": "workflow", "template_data": graph()}).to_string(),
    )
    .unwrap();
    let invalid = run(
        &s,
        dir.path(),
        &alice,
        &["templates", "publish", "noname.json"],
    )
    .await;
    assert!(
        invalid.failed().stderr.contains("422 validation_failed"),
        "{}",
        invalid.stderr
    );
});

both_backends!(
    explain_every_format_to_stdout_and_files,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let dir = tempfile::tempdir().unwrap();
        let debates = insert_debates(&s, "w1", "x", 1).await;
        let id = debates[0].id.as_str();
        let viewer = s.token("vera", "w1", "viewer").await;
        let base = format!("/api/v1/debates/{id}/explanation");

        // json: the server's explanation, pretty-printed.
        let j = run(
            &s,
            dir.path(),
            &viewer,
            &["explain", id, "--format", "json"],
        )
        .await
        .ok()
        .json();
        let (_, server_json) = s.get(&base, &viewer).await;
        assert_eq!(j, server_json);
        assert_eq!(j["debate_id"], id);

        // summary (the default) and detailed are the server's text, verbatim.
        let summary = run(&s, dir.path(), &viewer, &["explain", id]).await;
        assert_eq!(
            summary.ok().stdout.trim_end(),
            get_text(&s, &format!("{base}?format=summary"), &viewer)
                .await
                .trim_end()
        );
        let detailed = run(
            &s,
            dir.path(),
            &viewer,
            &["explain", id, "--format", "detailed"],
        )
        .await;
        assert!(detailed.ok().stdout.starts_with('#'), "{}", detailed.stdout);

        // visual: the rendered HTML page, written to <id>.html by default.
        let v = run(
            &s,
            dir.path(),
            &viewer,
            &["explain", id, "--format", "visual"],
        )
        .await;
        v.ok();
        let html_path = dir.path().join(format!("{id}.html"));
        assert!(
            v.stderr.contains(&format!("wrote {id}.html")),
            "{}",
            v.stderr
        );
        let html = std::fs::read_to_string(&html_path).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80]);
        assert!(html.contains("<svg") && html.trim_end().ends_with("</html>"));
        assert!(!html.trim_start().starts_with('{'), "not the JSON object");
        let server_html = get_text(&s, &format!("{base}?format=visual&render=html"), &viewer).await;
        assert_eq!(html, server_html);

        // Other renders, to named files.
        run(
            &s,
            dir.path(),
            &viewer,
            &[
                "explain", id, "--format", "visual", "--render", "svg", "-o", "g.svg",
            ],
        )
        .await
        .ok();
        let svg = std::fs::read_to_string(dir.path().join("g.svg")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        run(
            &s,
            dir.path(),
            &viewer,
            &["explain", id, "--format", "visual", "--render", "mermaid"],
        )
        .await
        .ok();
        let mermaid = std::fs::read_to_string(dir.path().join(format!("{id}.mmd"))).unwrap();
        let (_, visual_json) = s.get(&format!("{base}?format=visual"), &viewer).await;
        assert_eq!(mermaid, visual_json["mermaid"].as_str().unwrap());
        assert_eq!(svg, visual_json["svg"].as_str().unwrap());
        run(
            &s,
            dir.path(),
            &viewer,
            &["explain", id, "--format", "visual", "--render", "json"],
        )
        .await
        .ok();
        let obj: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{id}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(obj, visual_json);

        // Failure paths.
        let unknown = run(&s, dir.path(), &viewer, &["explain", "deb-nope"]).await;
        assert!(
            unknown.failed().stderr.contains("404 not_found"),
            "{}",
            unknown.stderr
        );
        let bad_render = run(
            &s,
            dir.path(),
            &viewer,
            &["explain", id, "--format", "json", "--render", "svg"],
        )
        .await;
        assert!(
            bad_render
                .failed()
                .stderr
                .contains("--render only applies to --format visual"),
            "{}",
            bad_render.stderr
        );
        let bad_format = run(&s, dir.path(), &viewer, &["explain", id, "--format", "pdf"]).await;
        assert!(
            bad_format.failed().stderr.contains("422 validation_failed"),
            "{}",
            bad_format.stderr
        );
        // Another workspace's debate does not exist for this token.
        let other = s.token("olga", "w2", "viewer").await;
        let hidden = run(&s, dir.path(), &other, &["explain", id]).await;
        assert!(hidden.failed().stderr.contains("404"), "{}", hidden.stderr);
    }
);

both_backends!(
    batch_waits_with_progress_and_writes_results,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let dir = tempfile::tempdir().unwrap();
        let debates = insert_debates(&s, "w1", "b", 3).await;
        let member = s.token("mia", "w1", "member").await;
        let mut args = vec!["batch"];
        args.extend(debates.iter().map(|d| d.id.as_str()));
        args.extend(["deb-missing", "-o", "results.json"]);
        let r = run(&s, dir.path(), &member, &args).await;
        r.ok();
        // Progress lines (stderr is not a terminal here), ending at 4/4.
        let progress: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("batch-"))
            .collect();
        assert!(!progress.is_empty(), "{}", r.stderr);
        assert!(
            progress
                .iter()
                .any(|l| l.contains("4/4") && l.contains("100")),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains(": completed (partial) — 3 succeeded, 1 failed"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains("wrote 4 results to results.json"));
        let results: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        let items = results.as_array().unwrap();
        let got: Vec<(&str, &str)> = items
            .iter()
            .map(|i| {
                (
                    i["debate_id"].as_str().unwrap(),
                    i["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("deb-b-0", "success"),
                ("deb-b-1", "success"),
                ("deb-b-2", "success"),
                ("deb-missing", "not_found"),
            ]
        );
        assert_eq!(items[0]["explanation"]["debate_id"], "deb-b-0");

        // The batch the CLI created is the server's.
        let batch_id = progress[0].split(':').next().unwrap();
        let (status, st) = s
            .get(
                &format!("/api/v1/explainability/batch/{batch_id}/status"),
                &member,
            )
            .await;
        assert_eq!(status, 200, "{st}");
        assert_eq!(
            (
                st["status"].as_str(),
                st["phase"].as_str(),
                st["total"].as_i64()
            ),
            (Some("completed"), Some("partial"), Some(4))
        );

        // Failure paths: no ids; a viewer lacks explainability:batch.
        let none = run(&s, dir.path(), &member, &["batch"]).await;
        assert!(
            none.failed().stderr.contains("give at least one debate id"),
            "{}",
            none.stderr
        );
        let viewer = s.token("vic", "w1", "viewer").await;
        let denied = run(&s, dir.path(), &viewer, &["batch", "deb-b-0"]).await;
        assert!(
            denied
                .failed()
                .stderr
                .contains("the token lacks the permission this command needs"),
            "{}",
            denied.stderr
        );
    }
);

both_backends!(webhooks_register_test_receipts, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = s.admin_token.clone();
    let secret = "cli-test-secret";
    let rx = Receiver::start(ReceiverConfig::new(secret)).await.unwrap();

    let w = run(
        &s,
        dir.path(),
        &admin,
        &[
            "webhooks",
            "register",
            &rx.url(),
            "--event",
            "debate.completed",
            "--event",
            "order.created",
            "--secret",
            secret,
        ],
    )
    .await
    .ok()
    .json();
    let id = w["id"].as_str().expect("webhook id").to_string();
    assert_eq!(
        w["event_types"],
        json!(["debate.completed", "order.created"])
    );

    // test: a signed delivery the receiver verified with both schemes.
    let t = run(&s, dir.path(), &admin, &["webhooks", "test", &id]).await;
    let receipt = t.ok().json();
    assert_eq!(receipt["status"], "succeeded", "{receipt}");
    assert_eq!(receipt["status_code"], 200);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].sha256_valid && got[0].standard_valid);
    assert_eq!(got[0].event_type.as_deref(), Some("webhook.test"));
    assert_eq!(rx.invalid(), 0);

    // receipts: one line per attempt; the status filter is applied by the server.
    let r = run(&s, dir.path(), &admin, &["webhooks", "receipts", &id]).await;
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stdout);
    assert!(
        lines[0].contains("webhook.test")
            && lines[0].contains("succeeded")
            && lines[0].contains("200"),
        "{}",
        lines[0]
    );

    // A failing endpoint: the test command exits non-zero and says so; the receipt is listed.
    rx.set_behaviour(Behaviour::Status(500));
    let failing = run(&s, dir.path(), &admin, &["webhooks", "test", &id]).await;
    assert!(
        failing.failed().stderr.contains("test delivery failed"),
        "{}",
        failing.stderr
    );
    assert_eq!(failing.json()["status_code"], 500);
    let failed = run(
        &s,
        dir.path(),
        &admin,
        &["webhooks", "receipts", &id, "--status", "failed"],
    )
    .await;
    let failed_lines: Vec<&str> = failed.ok().stdout.lines().collect();
    assert_eq!(failed_lines.len(), 1, "{}", failed.stdout);
    assert!(failed_lines[0].contains("500"), "{}", failed_lines[0]);

    // Failure paths: unknown webhook, a URL the server refuses, a bad status filter.
    let unknown = run(&s, dir.path(), &admin, &["webhooks", "test", "wh-nope"]).await;
    assert!(
        unknown.failed().stderr.contains("404 not_found"),
        "{}",
        unknown.stderr
    );
    let refused = run(
        &s,
        dir.path(),
        &admin,
        &[
            "webhooks",
            "register",
            "ftp://example.com/x",
            "--event",
            "*",
        ],
    )
    .await;
    assert!(
        refused.failed().stderr.contains("422 validation_failed"),
        "{}",
        refused.stderr
    );
    let bad_filter = run(
        &s,
        dir.path(),
        &admin,
        &["webhooks", "receipts", &id, "--status", "weird"],
    )
    .await;
    assert!(
        bad_filter.failed().stderr.contains("422"),
        "{}",
        bad_filter.stderr
    );
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_status_and_openapi() {
    let s = Server::start(BIN, Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let status = run(&s, dir.path(), &s.admin_token, &["workers"])
        .await
        .ok()
        .json();
    let workers = status["workers"].as_array().expect("workers");
    assert!(!workers.is_empty(), "{status}");
    assert!(workers.iter().all(|w| w["state"].is_string()), "{status}");
    let kinds: Vec<&str> = workers.iter().filter_map(|w| w["kind"].as_str()).collect();
    for kind in ["debates", "webhook_delivery", "batch_explainability"] {
        assert!(kinds.contains(&kind), "{kind} missing: {status}");
    }
    assert!(status["queues"].is_array(), "{status}");

    // Admin only.
    let member = s.token("mo", "w1", "member").await;
    let denied = run(&s, dir.path(), &member, &["workers"]).await;
    assert!(
        denied
            .failed()
            .stderr
            .contains("the token lacks the permission this command needs"),
        "{}",
        denied.stderr
    );

    // `aragora openapi` needs no server and prints the document the server serves.
    let doc = run_env(dir.path(), &[], &["openapi"]).await.ok().json();
    let served: Value = s
        .http()
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["paths"], served["paths"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_vars_and_connection_failures() {
    let s = Server::start(BIN, Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let url = s.base_url.as_str();
    let token = s.admin_token.as_str();

    // The Python SDK's names…
    let sdk_names = run_env(
        dir.path(),
        &[("ARAGORA_API_URL", url), ("ARAGORA_API_TOKEN", token)],
        &["workers"],
    )
    .await;
    assert!(sdk_names.ok().json()["workers"].is_array());
    // …the older CLI names…
    let old_names = run_env(
        dir.path(),
        &[("ARAGORA_URL", url), ("ARAGORA_TOKEN", token)],
        &["workers"],
    )
    .await;
    assert!(old_names.ok().json()["workers"].is_array());
    // …the SDK's win over the old ones, and flags win over both.
    let both = run_env(
        dir.path(),
        &[
            ("ARAGORA_API_URL", url),
            ("ARAGORA_API_TOKEN", token),
            ("ARAGORA_URL", "http://127.0.0.1:1"),
            ("ARAGORA_TOKEN", "ara_wrong"),
        ],
        &["workers"],
    )
    .await;
    both.ok();
    let flag_wins = run_env(
        dir.path(),
        &[("ARAGORA_API_URL", url), ("ARAGORA_API_TOKEN", "ara_wrong")],
        &["workers", "--token", token],
    )
    .await;
    flag_wins.ok();

    // A bad token: non-zero exit, a message naming the fix, and the server's 401.
    let bad = run(&s, dir.path(), "ara_not_a_real_token", &["workers"]).await;
    assert!(
        bad.failed().stderr.contains(
            "the server rejected the token (pass a valid --token or set ARAGORA_API_TOKEN)"
        ),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("401"), "{}", bad.stderr);

    // No token anywhere (and no ./aragora-data/admin-token).
    let none = run_env(dir.path(), &[("ARAGORA_API_URL", url)], &["workers"]).await;
    assert!(
        none.failed()
            .stderr
            .contains("no token: pass --token or set ARAGORA_API_TOKEN"),
        "{}",
        none.stderr
    );
    // The first-start admin token file is the last fallback.
    std::fs::create_dir(dir.path().join("aragora-data")).unwrap();
    std::fs::write(
        dir.path().join("aragora-data/admin-token"),
        format!("{token}\n"),
    )
    .unwrap();
    run_env(dir.path(), &[("ARAGORA_API_URL", url)], &["workers"])
        .await
        .ok();

    // An unreachable server: a port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["workers"],
        vec!["templates", "list"],
        vec!["explain", "deb-1"],
        vec!["batch", "deb-1"],
        vec!["webhooks", "receipts", "wh-1"],
    ] {
        let mut all = args.clone();
        all.extend(["--url", &dead, "--token", token]);
        let r = run_env(dir.path(), &[], &all).await;
        assert!(
            r.failed()
                .stderr
                .contains(&format!("cannot reach the Aragora server at {dead}")),
            "{args:?}: {}",
            r.stderr
        );
    }
}

fn api_status(e: &aragora_client::ClientError) -> (u16, String) {
    match e {
        aragora_client::ClientError::Api { status, code, .. } => (*status, code.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

both_backends!(rust_client_typed_resources, |backend| async move {
    use aragora_client::{BatchOptions, Client, NewKnowledgeItem, WebhookUpdate};
    let s = Server::start(BIN, backend).await;
    let alice = Client::new(&s.base_url, &s.token("alice", "w1", "member").await);
    let bob = Client::new(&s.base_url, &s.token("bob", "w1", "member").await);
    let admin = Client::new(&s.base_url, &s.admin_token);

    // Marketplace: publish, versions (publish, list, get, yank), rate, review, update, download.
    let t = alice
        .marketplace()
        .publish(
            &json!({"name": "Typed", "category": "workflow", "template_data": graph(),
                         "tags": ["rust"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        (t.latest_version.as_str(), t.tags.as_slice()),
        ("1.0.0", &["rust".to_string()][..])
    );
    assert_eq!(t.template_data.as_ref(), Some(&graph()));
    let mut v2 = graph();
    v2["nodes"][1]["type"] = json!("email");
    let published = alice
        .marketplace()
        .publish_version(&t.id, "1.1.0", &v2, "email instead")
        .await
        .unwrap();
    assert_eq!(
        (published.version.as_str(), published.yanked),
        ("1.1.0", false)
    );
    let versions = alice.marketplace().versions(&t.id).await.unwrap();
    let mut names: Vec<&str> = versions.items.iter().map(|v| v.version.as_str()).collect();
    names.sort();
    assert_eq!(names, ["1.0.0", "1.1.0"]);
    let first = alice.marketplace().version(&t.id, "1.0.0").await.unwrap();
    assert_eq!(first.template_data, Some(graph()));
    assert_eq!(
        alice.marketplace().get(&t.id).await.unwrap().latest_version,
        "1.1.0"
    );
    let yanked = alice
        .marketplace()
        .yank(&t.id, "1.1.0", true)
        .await
        .unwrap();
    assert!(yanked.yanked);
    assert_eq!(
        alice.marketplace().get(&t.id).await.unwrap().latest_version,
        "1.0.0"
    );
    let d = bob.marketplace().download(&t.id, None).await.unwrap();
    assert_eq!((d.version.as_str(), &d.template_data), ("1.0.0", &graph()));
    assert!(d.checksum.starts_with("sha256:"));
    assert!(
        !alice
            .marketplace()
            .yank(&t.id, "1.1.0", false)
            .await
            .unwrap()
            .yanked
    );
    let rating = bob.marketplace().rate(&t.id, 4).await.unwrap();
    assert_eq!((rating.rating, rating.rating_count), (4, 1));
    assert!((rating.rating_average - 4.0).abs() < 1e-9);
    let own = alice.marketplace().rate(&t.id, 5).await.unwrap_err();
    assert_eq!(api_status(&own).0, 403);
    let review = bob
        .marketplace()
        .review(&t.id, 5, "Great", "Saved hours")
        .await
        .unwrap();
    assert_eq!((review.user.as_str(), review.rating), ("bob", 5));
    assert_eq!(
        bob.marketplace().reviews(&t.id).await.unwrap().items.len(),
        1
    );
    let renamed = alice
        .marketplace()
        .update(&t.id, &json!({"name": "Typed 2"}))
        .await
        .unwrap();
    assert_eq!(renamed.name, "Typed 2");
    let listed = bob.marketplace().list(&[("q", "Typed")]).await.unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.items[0].id, t.id);
    assert_eq!(
        api_status(&bob.marketplace().get("tmpl-nope").await.unwrap_err()),
        (404, "not_found".to_string())
    );

    // Knowledge: ingest, get, search, and the same source key updates the item.
    let item = alice
        .knowledge()
        .ingest(&NewKnowledgeItem {
            content: "Use a token bucket for the public rate limiter".into(),
            source_key: Some("adr-7".into()),
            confidence: Some(0.8),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (item.source_type.as_str(), item.source_key.as_str()),
        ("manual", "adr-7")
    );
    assert_eq!(
        alice.knowledge().get(&item.id).await.unwrap().content,
        item.content
    );
    let hits = alice
        .knowledge()
        .search("token bucket", None, 10)
        .await
        .unwrap();
    assert_eq!(
        hits.items.first().map(|h| h.item.id.as_str()),
        Some(item.id.as_str())
    );
    assert!(hits.items[0].exact_phrase && hits.items[0].snippet.contains("<mark>"));
    let again = alice
        .knowledge()
        .ingest(&NewKnowledgeItem {
            content: "Use a sliding window instead".into(),
            source_key: Some("adr-7".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(again.id, item.id);
    let bad = alice
        .knowledge()
        .ingest(&NewKnowledgeItem {
            content: "x".into(),
            confidence: Some(2.0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(api_status(&bad), (422, "validation_failed".to_string()));

    // Connectors: a validation error names the field; create (stopped), list, get, delete.
    assert_eq!(admin.connectors().list().await.unwrap().total, 0);
    let spec = json!({"name": "orders", "type": "postgresql",
        "config": {"host": "127.0.0.1", "database": "shop", "tables": ["orders"]},
        "credentials": {"username": "cdc", "password_env": "CDC_SOURCE_PASSWORD"},
        "handlers": ["webhook"], "start": false});
    let mut wrong = spec.clone();
    wrong["type"] = json!("oracle");
    match admin.connectors().create(&wrong).await.unwrap_err() {
        aragora_client::ClientError::Api {
            status, details, ..
        } => assert_eq!((status, &details["field"]), (422, &json!("type"))),
        other => panic!("{other}"),
    }
    let conn = admin.connectors().create(&spec).await.unwrap();
    assert_eq!(
        (conn.kind.as_str(), conn.state.as_str()),
        ("postgresql", "stopped")
    );
    let listed = admin.connectors().list().await.unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        [conn.id.as_str()]
    );
    assert_eq!(
        admin.connectors().get(&conn.id).await.unwrap().name,
        "orders"
    );
    admin.connectors().delete(&conn.id).await.unwrap();
    assert_eq!(
        api_status(&admin.connectors().get(&conn.id).await.unwrap_err()).0,
        404
    );

    // Webhooks: register, update, get, list, delete.
    let rx = Receiver::start(ReceiverConfig::new("typed-secret"))
        .await
        .unwrap();
    let w = admin
        .webhooks()
        .register(
            &rx.url(),
            &["debate.completed".into()],
            Some("typed-secret"),
        )
        .await
        .unwrap();
    assert_eq!(w.secret.as_deref(), Some("typed-secret"));
    let updated = admin
        .webhooks()
        .update(
            &w.id,
            &WebhookUpdate {
                description: Some("ops channel".into()),
                event_types: Some(vec!["*".into()]),
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            updated.description.as_str(),
            updated.enabled,
            updated.event_types.as_slice()
        ),
        ("ops channel", false, &["*".to_string()][..])
    );
    assert!(
        updated.secret.is_none(),
        "the secret is shown only at creation"
    );
    assert!(!admin.webhooks().get(&w.id).await.unwrap().enabled);
    let bad_url = admin
        .webhooks()
        .update(
            &w.id,
            &WebhookUpdate {
                url: Some("not a url".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(&bad_url), (422, "validation_failed".to_string()));
    assert_eq!(admin.webhooks().list().await.unwrap().items[0].id, w.id);
    let receipt = admin.webhooks().test(&w.id).await.unwrap();
    assert_eq!(
        (receipt.status.as_str(), receipt.status_code),
        ("succeeded", Some(200))
    );
    let receipts = admin.webhooks().receipts(&w.id, None, 10).await.unwrap();
    assert_eq!(receipts.items[0].trigger, "test");
    admin.webhooks().delete(&w.id).await.unwrap();
    assert_eq!(
        api_status(&admin.webhooks().get(&w.id).await.unwrap_err()).0,
        404
    );

    // Explainability and workers, typed.
    let debates = insert_debates(&s, "w1", "t", 2).await;
    let e = alice.explainability().get(&debates[0].id).await.unwrap();
    assert_eq!(e.debate_id, debates[0].id);
    assert!(e.decision_id.starts_with("dec-") && e.extra.contains_key("vote_pivots"));
    let ids: Vec<String> = debates.iter().map(|d| d.id.clone()).collect();
    let b = alice
        .explainability()
        .create_batch(&ids, BatchOptions::default())
        .await
        .unwrap();
    assert_eq!(b.total, 2);
    let done = aragora_testkit::eventually(Duration::from_secs(60), || async {
        let st = alice
            .explainability()
            .batch_status(&b.batch_id)
            .await
            .unwrap();
        st.is_finished().then_some(st)
    })
    .await
    .expect("batch finishes");
    assert_eq!(
        (done.status.as_str(), done.phase.as_str(), done.succeeded),
        ("completed", "completed", 2)
    );
    let results = alice
        .explainability()
        .batch_results(&b.batch_id, None)
        .await
        .unwrap();
    assert_eq!(results.items.len(), 2);
    assert!(
        results
            .items
            .iter()
            .all(|r| r.status == "success" && r.explanation.is_some())
    );
    let workers = admin.workers_status().await.unwrap();
    assert!(
        workers
            .workers
            .iter()
            .any(|w| w.kind == "batch_explainability")
    );
});
