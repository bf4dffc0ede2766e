//! Disk full on the SQLite path, while the server serves writes and its workers deliver webhooks.
//!
//! The database file is capped with `PRAGMA max_page_count` on the server's writer connection
//! (`ARAGORA_SQLITE_MAX_PAGE_COUNT`, a fault-testing knob): SQLite then fails writes with
//! `SQLITE_FULL`, the same result code as a full filesystem, without root or a special mount.
//! Space is "freed" by dropping a ballast table the test put into the file beforehand (its pages
//! become reusable), as an operator would delete files on a full disk.

mod cluster;

use aragora_store::{Db, Row, migrate, sqlx};
use aragora_testkit::{Backend, Node, eventually, fresh_database};
use aragora_webhooks::receiver::{Behaviour, Receiver, ReceiverConfig};
use aragora_webhooks::signing::generate_secret;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.expect("the server answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn metrics(&self) -> String {
        let r = self.http.get(format!("{}/metrics", self.base)).send();
        r.await.unwrap().text().await.unwrap()
    }
}

/// Sum of a counter's samples whose labels contain `label`.
fn counter(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn assert_storage_full(status: u16, body: &Value) {
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("storage full"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_is_a_clear_507_reads_work_jobs_retry_and_writes_resume() {
    let db = fresh_database(Backend::Sqlite).await;
    // Migrate, then put 2 MiB of ballast into the file and cap it 100 pages above its size.
    let store = Db::connect(&db.url, &Default::default()).await.unwrap();
    migrate::run(&store).await.unwrap();
    for sql in [
        "CREATE TABLE test_ballast (b BLOB)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 32) \
         INSERT INTO test_ballast SELECT randomblob(65536) FROM n",
    ] {
        sqlx::query(sql).execute(store.writer()).await.unwrap();
    }
    let pages: i64 = sqlx::query("PRAGMA page_count")
        .fetch_one(store.writer())
        .await
        .unwrap()
        .get(0);
    store.close().await;
    let cap = (pages + 100).to_string();
    let mut env: Vec<(&str, &str)> = cluster::FAST_ENV.to_vec();
    env.extend([
        ("ARAGORA_SQLITE_MAX_PAGE_COUNT", cap.as_str()),
        // Retries and the breaker are not under test here: keep every delivery retrying, and
        // keep the breaker's open and probe times short.
        ("ARAGORA_WEBHOOK_RETRY_MAX_ATTEMPTS", "100000"),
        ("ARAGORA_WEBHOOK_BREAKER_FAILURES", "100000"),
        ("ARAGORA_WEBHOOK_BREAKER_OPEN_MS", "300"),
        ("ARAGORA_WEBHOOK_BREAKER_PROBE_TIMEOUT_MS", "2000"),
    ]);
    let node = Node::start(cluster::BIN, &db.url, &["serve"], &env).await;
    let api = Api {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: node.base_url.clone().unwrap(),
        token: std::fs::read_to_string(node.data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_string(),
    };

    // The receiver refuses for now, so deliveries keep running (and recording attempts) while
    // the disk is full.
    let secret = generate_secret();
    let rx = Receiver::start(ReceiverConfig::new(secret.clone()))
        .await
        .unwrap();
    rx.set_behaviour(Behaviour::Status(503));
    let (status, wh) = api
        .post(
            "/api/webhooks",
            &json!({"url": rx.url(), "secret": secret, "event_types": ["order.created"]}),
        )
        .await;
    assert_eq!(status, 201, "{wh}");
    let (status, d) = api
        .post("/api/v1/debates/import", &cluster::transcript("df-before"))
        .await;
    assert_eq!(status, 201, "{d}");

    // Fill the file with events until the server refuses one.
    let pad = "x".repeat(2000);
    let mut accepted: Vec<String> = Vec::new();
    let mut refusal = None;
    for i in 0..2000 {
        let (status, body) = api
            .post(
                "/api/v1/events",
                &json!({"event_type": "order.created", "data": {"i": i, "pad": pad}}),
            )
            .await;
        match status {
            202 => accepted.push(body["event_id"].as_str().unwrap().to_string()),
            _ => {
                refusal = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refusal.expect("the capped database filled up");
    assert_storage_full(status, &body);
    assert!(
        !accepted.is_empty(),
        "events were accepted before it filled"
    );

    // Other writes get the same answer; an import that still fits in a page is fine too.
    let (status, body) = api
        .post(
            "/api/v1/knowledge/items",
            &json!({"content": "y".repeat(150_000)}),
        )
        .await;
    assert_storage_full(status, &body);
    let (status, body) = api
        .post("/api/v1/debates/import", &cluster::transcript("df-during"))
        .await;
    let imported_during = match status {
        201 => true,
        _ => {
            assert_storage_full(status, &body);
            false
        }
    };

    // Reads keep working.
    for path in [
        "/healthz".to_string(),
        "/api/v1/debates?limit=5".to_string(),
        "/api/v1/debates/df-before".to_string(),
        "/api/v1/events?limit=5".to_string(),
        format!(
            "/api/webhooks/{}/receipts?limit=5",
            wh["id"].as_str().unwrap()
        ),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "GET {path} while full: {body}");
    }

    // The delivery workers hit the full disk too (recording attempts, claiming, retrying).
    let worker_hit = eventually(WAIT, || async {
        let m = api.metrics().await;
        let n = counter(
            &m,
            "aragora_storage_full_errors_total",
            "site=\"webhook_recorder\"",
        ) + counter(&m, "aragora_storage_full_errors_total", "site=\"queue\"");
        (n > 0.0).then_some(n)
    })
    .await;
    assert!(
        worker_hit.is_some(),
        "a delivery job ran into the full disk"
    );
    let requests_refused = counter(
        &api.metrics().await,
        "aragora_storage_full_errors_total",
        "site=\"request\"",
    );
    assert!(requests_refused >= 2.0, "refused writes are counted");

    // Free space: drop the ballast (its pages become reusable), and let the receiver accept.
    let store = Db::connect(&db.url, &Default::default()).await.unwrap();
    sqlx::query("DROP TABLE test_ballast")
        .execute(store.writer())
        .await
        .unwrap();
    store.close().await;
    rx.set_behaviour(Behaviour::Ok);

    // Writes succeed again, without a restart.
    let (status, body) = api
        .post(
            "/api/v1/events",
            &json!({"event_type": "order.created", "data": {"after": true}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    accepted.push(body["event_id"].as_str().unwrap().to_string());
    let (status, body) = api
        .post(
            "/api/v1/knowledge/items",
            &json!({"content": "written after space was freed"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    if !imported_during {
        let (status, body) = api
            .post("/api/v1/debates/import", &cluster::transcript("df-during"))
            .await;
        assert_eq!(status, 201, "{body}");
    }

    // Nothing acknowledged was lost: every accepted event is stored and delivered.
    let stored: HashSet<String> = cluster::events(&db.url, "order.created")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<&String> = accepted.iter().filter(|e| !stored.contains(*e)).collect();
    assert!(missing.is_empty(), "accepted events missing: {missing:?}");
    let delivered = eventually(WAIT, || async {
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
    if delivered.is_none() {
        let store = Db::connect(&db.url, &Default::default()).await.unwrap();
        for sql in [
            "SELECT queue || ' ' || status || ' attempts=' || attempts || ' run_at_in_ms=' || (run_at - CAST(strftime('%s','now') AS INTEGER) * 1000) || ' lease=' || COALESCE(lease_until,0) || ' err=' || COALESCE(last_error,'') FROM jobs",
            "SELECT status || ' latest=' || latest || ' n=' || COUNT(*) FROM webhook_delivery_receipts GROUP BY status, latest",
        ] {
            let rows = sqlx::query(sql).fetch_all(store.reader()).await.unwrap();
            for r in rows {
                eprintln!("{}", r.get::<String, _>(0));
            }
        }
    }
    assert!(
        delivered.is_some(),
        "every accepted event was delivered after space was freed"
    );
    assert_eq!(rx.invalid(), 0);

    // No job was lost or given up on, and none is stuck.
    let store = Db::connect(&db.url, &Default::default()).await.unwrap();
    let settled = eventually(WAIT, || async {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) FROM jobs WHERE queue = $1 OR status = 'running'")
                .bind(aragora_store::webhooks::QUEUE)
                .fetch_one(store.reader())
                .await
                .unwrap()
                .get(0);
        (n == 0).then_some(())
    })
    .await;
    let dead: i64 = sqlx::query("SELECT COUNT(*) FROM jobs WHERE status = 'dead'")
        .fetch_one(store.reader())
        .await
        .unwrap()
        .get(0);
    store.close().await;
    assert_eq!(dead, 0, "no job died of the full disk");
    assert!(settled.is_some(), "every job finished");

    // Every 5xx the server answered was one of the 507s above (the metric counts by class),
    // and it is still the same process.
    let m = api.metrics().await;
    let fives = counter(&m, "aragora_http_requests_total", "status=\"5xx\"");
    let answered_507 = if imported_during { 2.0 } else { 3.0 };
    assert_eq!(fives, answered_507, "5xx other than the 507s");
    assert!(node.pid().is_some());
    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, 200);
}
