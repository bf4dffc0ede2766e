//! The crash suite: a mixed workload (imported and run debates, explainability batches, webhook
//! bursts to a loopback receiver that verifies signatures, CDC changes) on a scale-out deployment
//! (one `serve --no-workers`, two `worker`s, one PostgreSQL), with a SIGKILL of a random node at a
//! random point of every round. Afterwards the invariants must hold:
//! - every event was delivered at least once, and every delivery of it carried the same id;
//! - every batch completed with exactly one result per debate;
//! - the knowledge mound equals the CDC source table;
//! - no job or debate is left running.
//!
//! Bounded by default (3 rounds); the long form is
//! `ARAGORA_RELIABILITY_ROUNDS=20 cargo test --release -p aragora --test crash -- --nocapture`.

mod cluster;

use aragora_testkit::eventually;
use aragora_webhooks::receiver::{Receiver, ReceiverConfig};
use aragora_webhooks::signing::generate_secret;
use cluster::{Cluster, Rng, Source, demo_debate, mound, transcript};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

fn rounds() -> usize {
    std::env::var("ARAGORA_RELIABILITY_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_keeps_every_invariant() {
    let mut rng = Rng::from_env();
    let src =
        Source::new("CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance int)").await;
    let mut c = Cluster::start(1, 2, &[]).await;
    let secret = generate_secret();
    let rx = Receiver::start(ReceiverConfig::new(secret.clone()))
        .await
        .unwrap();
    let (status, w) = c
        .post(
            0,
            "/api/webhooks",
            &json!({"url": rx.url(), "secret": secret, "event_types": ["*"]}),
        )
        .await;
    assert_eq!(status, 201, "{w}");
    let (status, conn) = c
        .post(
            0,
            "/api/v1/connectors",
            &src.connector("accounts", &["accounts"]),
        )
        .await;
    assert_eq!(status, 201, "{conn}");
    let connector = conn["id"].as_str().unwrap().to_string();

    let mut batches: Vec<(String, usize)> = Vec::new();
    let mut runs: Vec<String> = Vec::new();
    let mut crashes = 0;
    let mut next_row = 1i64;
    for round in 0..rounds() {
        // The workload of this round.
        let ids: Vec<String> = (0..8).map(|i| format!("cr-{round}-{i}")).collect();
        for id in &ids {
            let (status, d) = c.post(0, "/api/v1/debates/import", &transcript(id)).await;
            assert_eq!(status, 201, "{d}");
        }
        let (status, b) = c
            .post(
                0,
                "/api/v1/explainability/batch",
                &json!({"debate_ids": ids, "options": {"format": "json"}}),
            )
            .await;
        assert_eq!(status, 202, "{b}");
        batches.push((b["batch_id"].as_str().unwrap().to_string(), ids.len()));
        for i in 0..2 {
            let (status, d) = c
                .post(
                    0,
                    "/api/v1/debates",
                    &demo_debate(&format!("crash {round}/{i}")),
                )
                .await;
            assert_eq!(status, 202, "{d}");
            runs.push(d["debate_id"].as_str().unwrap().to_string());
        }
        for i in 0..20 {
            let (status, e) = c
                .post(
                    0,
                    "/api/v1/events",
                    &json!({"event_type": "order.created", "data": {"round": round, "n": i}}),
                )
                .await;
            assert_eq!(status, 202, "{e}");
        }
        let from = next_row;
        next_row += 40;
        src.exec(&format!(
            "INSERT INTO accounts SELECT g, 'o' || g, g FROM generate_series({from}, {}) g",
            next_row - 1
        ))
        .await;
        src.exec(&format!(
            "UPDATE accounts SET balance = balance + 1 WHERE id % 7 = {}",
            round % 7
        ))
        .await;
        src.exec(&format!(
            "DELETE FROM accounts WHERE id % 11 = {}",
            round % 11
        ))
        .await;

        // A random moment into the work, SIGKILL a random node and start it again.
        tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
        let victim = rng.below(3) as usize;
        if victim < 2 {
            c.workers[victim].restart().await;
        } else {
            c.apis[0].restart().await;
        }
        crashes += 1;
    }

    // Invariants.
    let expected = src.rows("accounts").await;
    let mound_ok = eventually(WAIT, || async {
        (mound(&c.db.url, &connector, "accounts", "id").await == expected).then_some(())
    })
    .await;
    assert!(
        mound_ok.is_some(),
        "the knowledge mound equals the CDC source ({} rows)",
        expected.len()
    );
    for (b, n) in &batches {
        let st = eventually(WAIT, || async {
            let (_, s) = c
                .get(0, &format!("/api/v1/explainability/batch/{b}/status"))
                .await;
            (s["status"] == "completed").then_some(s)
        })
        .await
        .unwrap_or_else(|| panic!("batch {b} finished"));
        assert_eq!(st["phase"], "completed", "{st}");
        let (status, page) = c
            .get(
                0,
                &format!("/api/v1/explainability/batch/{b}/results?limit=200"),
            )
            .await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        let positions: HashSet<i64> = items
            .iter()
            .map(|r| r["position"].as_i64().unwrap())
            .collect();
        assert_eq!(items.len(), *n, "one result per debate in {b}");
        assert_eq!(positions.len(), *n, "no position twice in {b}");
        assert!(items.iter().all(|r| r["status"] == "success"), "{page}");
    }
    for id in &runs {
        let done = eventually(WAIT, || async {
            let (_, d) = c.get(0, &format!("/api/v1/debates/{id}")).await;
            matches!(d["status"].as_str(), Some("completed" | "failed")).then_some(d)
        })
        .await;
        assert!(
            done.is_some(),
            "debate {id} finished (resumed after its worker died)"
        );
    }
    let idle = eventually(WAIT, || async {
        (c.jobs("running").await == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "no job stuck in running");

    // Every event delivered at least once, each always under the same message id.
    let db = c.db().await;
    let event_ids: Vec<String> = aragora_store::sqlx::query("SELECT id FROM events")
        .fetch_all(db.reader())
        .await
        .unwrap()
        .iter()
        .map(|r| aragora_store::Row::try_get(r, 0).unwrap())
        .collect();
    db.close().await;
    let delivered = eventually(WAIT, || async {
        let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
        for r in rx.received() {
            if r.responded != Some(200) {
                continue;
            }
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            ids.entry(body["event_id"].as_str().unwrap().to_string())
                .or_default()
                .insert(r.webhook_id.clone().unwrap_or_default());
        }
        event_ids.iter().all(|e| ids.contains_key(e)).then_some(ids)
    })
    .await
    .expect("every event delivered at least once");
    for (e, msg_ids) in &delivered {
        assert_eq!(
            msg_ids.len(),
            1,
            "event {e} was delivered under several ids: {msg_ids:?}"
        );
    }
    assert_eq!(rx.invalid(), 0, "every delivery was signed correctly");
    let duplicates: usize = rx.duplicate_acks().iter().map(|(_, n)| n - 1).sum();
    eprintln!(
        "{{\"crashes_survived\": {crashes}, \"events_checked\": {}, \"redeliveries\": {duplicates}, \"batches\": {}, \"debates_run\": {}, \"cdc_rows\": {}}}",
        event_ids.len(),
        batches.len(),
        runs.len(),
        expected.len()
    );
    drop(c);
    src.drop().await;
}

/// A PostgreSQL cluster of this test's own (restarting the shared one would disturb other
/// suites), managed by scripts/test-services on another port.
struct PrivatePg {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePg {
    fn script(&self, verb: &str) -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::process::Command::new(root.join("scripts/test-services"))
            .args([verb, "pg"])
            .env("ARAGORA_TEST_PG_PORT", self.port.to_string())
            .env("ARAGORA_TEST_SERVICES_DIR", self.dir.path())
            .output()
            .expect("scripts/test-services");
        assert!(
            out.status.success(),
            "test-services {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn start() -> (PrivatePg, String) {
        let dir = tempfile::Builder::new()
            .prefix("aragora-pgfault-")
            .tempdir_in("/tmp")
            .unwrap();
        // A free port: bind, read it, release it for PostgreSQL.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePg { dir, port };
        let out = pg.script("start");
        let url = out
            .lines()
            .find_map(|l| l.strip_prefix("export ARAGORA_TEST_PG_URL="))
            .unwrap()
            .to_string();
        (pg, url)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.script("stop"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_the_server_reconnects_and_resumes() {
    let (pg, admin_url) = PrivatePg::start();
    aragora_store::sqlx::any::install_default_drivers();
    let admin = aragora_store::Db::connect(&admin_url, &Default::default())
        .await
        .unwrap();
    aragora_store::sqlx::query("CREATE DATABASE fault")
        .execute(admin.writer())
        .await
        .unwrap();
    // The throwaway cluster runs with synchronous_commit=off (fast tests), which lets an
    // immediate stop lose acknowledged commits; a production setting is needed to test durability.
    aragora_store::sqlx::query("ALTER DATABASE fault SET synchronous_commit = on")
        .execute(admin.writer())
        .await
        .unwrap();
    admin.close().await;
    let url = format!("{}/fault", admin_url.rsplit_once('/').unwrap().0);
    let env: Vec<(&str, &str)> = cluster::FAST_ENV.to_vec();
    let node = aragora_testkit::Node::start(cluster::BIN, &url, &["serve"], &env).await;
    let base = node.base_url.clone().unwrap();
    let token = std::fs::read_to_string(node.data_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let secret = generate_secret();
    let rx = Receiver::start(ReceiverConfig::new(secret.clone()))
        .await
        .unwrap();
    let r = http
        .post(format!("{base}/api/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": rx.url(), "secret": secret, "event_types": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Load: publish continuously; remember what was accepted and how the rest was refused.
    let stop = tokio_util::sync::CancellationToken::new();
    let load = {
        let (http, base, token, stop) = (http.clone(), base.clone(), token.clone(), stop.clone());
        tokio::spawn(async move {
            let mut accepted: Vec<String> = Vec::new();
            let mut refused: HashMap<String, usize> = HashMap::new();
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 1;
                let r = http
                    .post(format!("{base}/api/v1/events"))
                    .bearer_auth(&token)
                    .json(&json!({"event_type": "load.tick", "data": {"n": n}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 202 => {
                        let v: Value = r.json().await.unwrap();
                        accepted.push(v["event_id"].as_str().unwrap().to_string());
                    }
                    Ok(r) => *refused.entry(r.status().as_u16().to_string()).or_default() += 1,
                    Err(_) => *refused.entry("connection".into()).or_default() += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (accepted, refused)
        })
    };
    let before = eventually(WAIT, || async { (rx.count() >= 20).then_some(()) }).await;
    assert!(before.is_some(), "deliveries flow before the restart");
    pg.script("stop");
    tokio::time::sleep(Duration::from_millis(1500)).await; // the outage itself, not a wait for work
    pg.script("start");
    let after_restart = rx.count();
    let resumed = eventually(WAIT, || async {
        (rx.count() >= after_restart + 20).then_some(())
    })
    .await;
    stop.cancel();
    let (accepted, refused) = load.await.unwrap();
    assert!(
        resumed.is_some(),
        "deliveries resume after PostgreSQL is back"
    );
    eprintln!(
        "pg restart: {} events accepted, refused during the outage: {refused:?}",
        accepted.len()
    );
    assert!(
        refused.keys().all(|k| k == "503" || k == "connection"),
        "during the outage requests get 503 (Retry-After), never a 500: {refused:?}"
    );
    // Every accepted event is delivered.
    let all = eventually(WAIT, || async {
        let got: HashSet<String> = rx
            .received()
            .iter()
            .filter(|r| r.responded == Some(200))
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|b| b["event_id"].as_str().map(str::to_string))
            .collect();
        accepted.iter().all(|e| got.contains(e)).then_some(())
    })
    .await;
    if all.is_none() {
        let got: HashSet<String> = rx
            .received()
            .iter()
            .filter(|r| r.responded == Some(200))
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter_map(|b| b["event_id"].as_str().map(str::to_string))
            .collect();
        let missing: Vec<&String> = accepted.iter().filter(|e| !got.contains(*e)).collect();
        let db = aragora_store::Db::connect(&url, &Default::default())
            .await
            .unwrap();
        for e in &missing {
            use aragora_store::Row;
            let ev: i64 = aragora_store::sqlx::query("SELECT COUNT(*) FROM events WHERE id = $1")
                .bind(e.as_str())
                .fetch_one(db.reader())
                .await
                .and_then(|r| r.try_get(0))
                .unwrap();
            let receipts: Vec<String> = aragora_store::sqlx::query(
                "SELECT status || '#' || CAST(attempt AS TEXT) || ' ' || COALESCE(error_class, '') FROM webhook_delivery_receipts WHERE event_id = $1",
            )
            .bind(e.as_str())
            .fetch_all(db.reader())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
            eprintln!("undelivered {e}: {ev} event row(s), receipts {receipts:?}");
        }
        panic!(
            "{} of {} accepted events were not delivered after the restart",
            missing.len(),
            accepted.len()
        );
    }
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "ready again");
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_forever_times_out_and_others_are_unaffected() {
    let c = Cluster::start(1, 1, &[("ARAGORA_WEBHOOK_TIMEOUT_MS", "1000")]).await;
    let mk = |behaviour: Option<aragora_webhooks::receiver::Behaviour>| async move {
        let secret = generate_secret();
        let rx = Receiver::start(ReceiverConfig::new(secret.clone()))
            .await
            .unwrap();
        if let Some(b) = behaviour {
            rx.set_behaviour(b);
        }
        (rx, secret)
    };
    let (hang, hang_secret) = mk(Some(aragora_webhooks::receiver::Behaviour::Hang)).await;
    let (ok, ok_secret) = mk(None).await;
    let (_, wh) = c
        .post(
            0,
            "/api/webhooks",
            &json!({"url": hang.url(), "secret": hang_secret, "event_types": ["order.created"]}),
        )
        .await;
    let hang_id = wh["id"].as_str().unwrap().to_string();
    let (status, _) = c
        .post(
            0,
            "/api/webhooks",
            &json!({"url": ok.url(), "secret": ok_secret, "event_types": ["order.created"]}),
        )
        .await;
    assert_eq!(status, 201);
    for i in 0..20 {
        c.post(
            0,
            "/api/v1/events",
            &json!({"event_type": "order.created", "data": {"n": i}}),
        )
        .await;
    }
    assert!(
        ok.wait_for_acknowledged(20, WAIT).await,
        "the healthy endpoint got every event"
    );
    let timed_out = eventually(WAIT, || async {
        let (_, page) = c
            .get(
                0,
                &format!("/api/webhooks/{hang_id}/receipts?status=failed&limit=200"),
            )
            .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty() && items.iter().all(|r| r["error_class"] == "timeout"))
            .then_some(items.len())
    })
    .await;
    assert!(
        timed_out.is_some(),
        "attempts to the hanging endpoint end as timeouts"
    );
    assert!(hang.count() >= 1, "the hanging endpoint was dialled");
}
