//! Scale-out on one PostgreSQL: two `serve --no-workers` API processes and two `worker`
//! processes. Work is done exactly once whichever node takes it, a CDC connector moves to the
//! surviving worker when its holder is SIGKILLed (no change lost), and a webhook circuit breaker
//! opened by one worker is respected by the other.

mod cluster;

use aragora_testkit::eventually;
use aragora_webhooks::receiver::{Behaviour, Receiver, ReceiverConfig};
use aragora_webhooks::signing::generate_secret;
use cluster::{Cluster, Source, cdc_events, demo_debate, events, replay, transcript};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

async fn wait_batch(c: &Cluster, id: &str) -> Value {
    eventually(WAIT, || async {
        let (status, b) = c
            .get(0, &format!("/api/v1/explainability/batch/{id}/status"))
            .await;
        assert_eq!(status, 200, "{b}");
        (b["status"] == "completed").then_some(b)
    })
    .await
    .unwrap_or_else(|| panic!("batch {id} did not finish"))
}

/// Every result of a batch, through the API's cursor.
async fn batch_results(c: &Cluster, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cur) => {
                format!("/api/v1/explainability/batch/{id}/results?limit=200&cursor={cur}")
            }
            None => format!("/api/v1/explainability/batch/{id}/results?limit=200"),
        };
        let (status, page) = c.get(1, &path).await;
        assert_eq!(status, 200, "{page}");
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_two_workers_do_every_job_exactly_once() {
    let c = Cluster::start(2, 2, &[]).await;
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

    // Debates imported through both API nodes, and debates run by the workers.
    let n = 40;
    for i in 0..n {
        let (status, d) = c
            .post(i, "/api/v1/debates/import", &transcript(&format!("so-{i}")))
            .await;
        assert_eq!(status, 201, "{d}");
    }
    let mut runs = Vec::new();
    for i in 0..6 {
        let (status, d) = c
            .post(
                i,
                "/api/v1/debates",
                &demo_debate(&format!("scale-out run {i}")),
            )
            .await;
        assert_eq!(status, 202, "{d}");
        runs.push(d["debate_id"].as_str().unwrap().to_string());
    }
    // Two batches over every imported debate, one submitted to each API node.
    let ids: Vec<String> = (0..n).map(|i| format!("so-{i}")).collect();
    let mut batches = Vec::new();
    for i in 0..2 {
        let (status, b) = c
            .post(
                i,
                "/api/v1/explainability/batch",
                &json!({"debate_ids": ids, "options": {"format": "summary"}}),
            )
            .await;
        assert_eq!(status, 202, "{b}");
        batches.push(b["batch_id"].as_str().unwrap().to_string());
    }
    // Application events through both nodes.
    for i in 0..30 {
        let (status, e) = c
            .post(
                i,
                "/api/v1/events",
                &json!({"event_type": "order.created", "data": {"n": i}}),
            )
            .await;
        assert_eq!(status, 202, "{e}");
    }

    for b in &batches {
        let st = wait_batch(&c, b).await;
        assert_eq!(st["phase"], "completed", "{st}");
        let results = batch_results(&c, b).await;
        assert_eq!(results.len(), n, "one result per debate");
        let mut positions: Vec<i64> = results
            .iter()
            .map(|r| r["position"].as_i64().unwrap())
            .collect();
        positions.sort_unstable();
        assert_eq!(positions, (0..n as i64).collect::<Vec<_>>());
        for r in &results {
            assert_eq!(r["status"], "success", "{r}");
            assert_eq!(r["attempt"], 1, "computed by one run only: {r}");
        }
    }
    for id in &runs {
        let done = eventually(WAIT, || async {
            let (_, d) = c.get(1, &format!("/api/v1/debates/{id}")).await;
            (d["status"] == "completed").then_some(())
        })
        .await;
        assert!(done.is_some(), "debate {id} completed");
    }
    // Each run debate completed once; each event was delivered once, signed, and acknowledged.
    let completed = events(&c.db.url, "debate.completed").await;
    let mut per_debate: HashMap<String, usize> = HashMap::new();
    for (_, e) in &completed {
        if let Some(id) = e["debate_id"].as_str() {
            *per_debate.entry(id.to_string()).or_default() += 1;
        }
    }
    for id in &runs {
        assert_eq!(
            per_debate.get(id),
            Some(&1),
            "debate.completed once for {id}: {per_debate:?}"
        );
    }
    let all_events = {
        let db = c.db().await;
        let n: i64 = aragora_store::sqlx::query("SELECT COUNT(*) FROM events")
            .fetch_one(db.reader())
            .await
            .and_then(|r| aragora_store::Row::try_get(&r, 0))
            .unwrap();
        db.close().await;
        n as usize
    };
    assert!(
        rx.wait_for_acknowledged(all_events, WAIT).await,
        "every event delivered ({all_events})"
    );
    assert!(
        rx.duplicate_acks().is_empty(),
        "no event delivered twice: {:?}",
        rx.duplicate_acks()
    );
    assert_eq!(rx.invalid(), 0, "every delivery carried valid signatures");
    // Both worker processes took part.
    let busy_nodes = eventually(WAIT, || async {
        let db = c.db().await;
        let n: i64 = aragora_store::sqlx::query(
            "SELECT COUNT(DISTINCT node) FROM workers WHERE processed > 0",
        )
        .fetch_one(db.reader())
        .await
        .and_then(|r| aragora_store::Row::try_get(&r, 0))
        .unwrap();
        db.close().await;
        (n >= 2).then_some(n)
    })
    .await;
    assert!(busy_nodes.is_some(), "both worker processes did work");
    // Nothing left behind.
    let idle = eventually(WAIT, || async {
        (c.jobs("running").await == 0 && c.jobs("ready").await == 0).then_some(())
    })
    .await;
    assert!(idle.is_some(), "no job left running or queued");
}

/// Which of `pids` holds the connector's lease, by the API's `running_on`.
async fn holder(c: &Cluster, id: &str, pids: &[u32]) -> Option<usize> {
    let (_, v) = c.get(1, &format!("/api/v1/connectors/{id}")).await;
    let h = v["running_on"].as_str()?.to_string();
    pids.iter().position(|p| h.contains(&format!(":{p}-")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_connector_moves_to_the_surviving_worker_without_loss() {
    let lease = Duration::from_secs(2);
    let src =
        Source::new("CREATE TABLE accounts (id bigint PRIMARY KEY, owner text, balance int)").await;
    let mut c = Cluster::start(2, 2, &[]).await;
    let (status, conn) = c
        .post(
            0,
            "/api/v1/connectors",
            &src.connector("accounts", &["accounts"]),
        )
        .await;
    assert_eq!(status, 201, "{conn}");
    let id = conn["id"].as_str().unwrap().to_string();
    let worker_pids: Vec<u32> = c.workers.iter().map(|w| w.pid().unwrap()).collect();
    let first = eventually(WAIT, || holder(&c, &id, &worker_pids))
        .await
        .expect("a worker holds the connector");
    src.exec("INSERT INTO accounts SELECT g, 'o' || g, g FROM generate_series(1, 200) g")
        .await;
    let seen = eventually(WAIT, || async {
        (events(&c.db.url, "cdc.change").await.len() >= 200).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the holder streams");

    // SIGKILL the holder while changes keep coming.
    c.workers[first].kill().await;
    let killed_at = Instant::now();
    src.exec("UPDATE accounts SET balance = balance + 1 WHERE id <= 50")
        .await;
    src.exec("INSERT INTO accounts SELECT g, 'o' || g, g FROM generate_series(201, 300) g")
        .await;
    let second = eventually(WAIT, || async {
        holder(&c, &id, &worker_pids).await.filter(|h| *h != first)
    })
    .await
    .expect("the surviving worker takes the connector");
    let took = killed_at.elapsed();
    eprintln!(
        "cdc take-over after SIGKILL: {} ms (lease {} s)",
        took.as_millis(),
        lease.as_secs()
    );
    // The lease lapses after at most one period; the survivor looks every third of one.
    assert!(
        took < lease * 3,
        "take-over took {took:?} with a {lease:?} lease"
    );
    src.exec("DELETE FROM accounts WHERE id > 290").await;
    let expected = src.rows("accounts").await;
    let caught_up = eventually(WAIT, || async {
        (replay(&cdc_events(&c.db.url).await, "id") == expected).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "no change lost across the take-over (worker {second})"
    );
    // The knowledge mound equals the source table.
    let mound = eventually(WAIT, || async {
        let (_, r) = c
            .get(0, "/api/v1/knowledge/search?q=o1&source_type=cdc&limit=50")
            .await;
        r["items"].is_array().then_some(())
    })
    .await;
    assert!(mound.is_some());
    let db = c.db().await;
    let items: i64 = aragora_store::sqlx::query(
        "SELECT COUNT(*) FROM knowledge_items WHERE source_type = 'cdc' AND source_key LIKE $1",
    )
    .bind(format!("{id}/accounts/%"))
    .fetch_one(db.reader())
    .await
    .and_then(|r| aragora_store::Row::try_get(&r, 0))
    .unwrap();
    db.close().await;
    assert_eq!(
        items as usize,
        expected.len(),
        "one knowledge item per source row"
    );
    drop(c);
    src.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_by_one_worker_holds_for_the_other() {
    let failures = 3;
    let mut c = Cluster::start(
        1,
        1,
        &[
            ("ARAGORA_WEBHOOK_BREAKER_FAILURES", "3"),
            ("ARAGORA_WEBHOOK_BREAKER_OPEN_MS", "600000"),
            ("ARAGORA_WEBHOOK_RETRY_BASE_MS", "50"),
        ],
    )
    .await;
    let secret = generate_secret();
    let rx = Receiver::start(ReceiverConfig::new(secret.clone()))
        .await
        .unwrap();
    rx.set_behaviour(Behaviour::Status(500));
    let (status, w) = c
        .post(
            0,
            "/api/webhooks",
            &json!({"url": rx.url(), "secret": secret, "event_types": ["order.created"]}),
        )
        .await;
    assert_eq!(status, 201, "{w}");
    let wh = w["id"].as_str().unwrap().to_string();

    // Worker A alone: failing deliveries open the breaker.
    c.post(
        0,
        "/api/v1/events",
        &json!({"event_type": "order.created", "data": {"n": 0}}),
    )
    .await;
    let open = eventually(WAIT, || async {
        let (_, s) = c.get(0, &format!("/api/webhooks/{wh}/stats")).await;
        (s["breaker"]["state"] == "open").then_some(s)
    })
    .await;
    assert!(open.is_some(), "the breaker opened");
    assert_eq!(
        rx.count(),
        failures,
        "opened after {failures} consecutive failures"
    );

    // A dies; B, a fresh process with no memory of A, must not dial the endpoint.
    c.workers[0].kill().await;
    let b = c.node(&["worker"]).await;
    for i in 1..=10 {
        let (status, _) = c
            .post(
                0,
                "/api/v1/events",
                &json!({"event_type": "order.created", "data": {"n": i}}),
            )
            .await;
        assert_eq!(status, 202);
    }
    // B takes up every delivery and defers it to the end of the open period.
    let deferred = eventually(WAIT, || async {
        let db = c.db().await;
        let later = aragora_core::time::now_ms() + 60_000;
        let n: i64 = aragora_store::sqlx::query(
            "SELECT COUNT(*) FROM jobs WHERE status = 'ready' AND run_at > $1",
        )
        .bind(later)
        .fetch_one(db.reader())
        .await
        .and_then(|r| aragora_store::Row::try_get(&r, 0))
        .unwrap();
        db.close().await;
        (n >= 11).then_some(n)
    })
    .await;
    assert!(
        deferred.is_some(),
        "the other worker deferred every delivery while open"
    );
    assert_eq!(
        rx.count(),
        failures,
        "nothing was dialled while the breaker was open"
    );
    drop(b);
}
