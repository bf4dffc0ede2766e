//! CDC connectors through the real binary: the API (validation, secrets never echoed, RBAC),
//! trigger and logical capture into `cdc.change` events, a SIGKILL mid-stream with replay, lease
//! failover between two server processes on one PostgreSQL, and `aragora cdc install`. Aragora's
//! own database runs on SQLite and PostgreSQL; the source is always the harness's PostgreSQL,
//! a fresh database per test.

use aragora_store::{Db, Row, sqlx};
use aragora_testkit::{Backend, Server, ServerOptions, both_backends, eventually};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

mod cluster;

use cluster::{cdc_events, check_replays, mound_items, replay, resume_position};

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

struct Source {
    name: String,
    url: String,
    db: Db,
    host: String,
    port: u16,
}

impl Source {
    async fn new(ddl: &str) -> Source {
        let admin_url = aragora_testkit::pg_admin_url();
        let admin = Db::connect(&admin_url, &Default::default()).await.unwrap();
        let name = aragora_testkit::scratch_database_name("cdcsrc");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.writer())
            .await
            .unwrap();
        admin.close().await;
        let base = admin_url.rsplit_once('/').unwrap().0.to_string();
        let url = format!("{base}/{name}");
        let db = Db::connect(&url, &Default::default()).await.unwrap();
        for stmt in ddl.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
                .execute(db.writer())
                .await
                .unwrap();
        }
        let hostport = base.rsplit('@').next().unwrap();
        let (host, port) = hostport.split_once(':').unwrap();
        Source {
            name,
            url,
            db,
            host: host.to_string(),
            port: port.parse().unwrap(),
        }
    }

    async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self.db.writer())
            .await
            .unwrap();
    }

    async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(self.db.writer())
            .await
            .unwrap()
            .try_get(0)
            .unwrap()
    }

    /// id → row JSON.
    async fn rows(&self, table: &str) -> BTreeMap<i64, Value> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(id AS BIGINT), to_jsonb(t)::text FROM {table} t"
        )))
        .fetch_all(self.db.writer())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get::<i64, _>(0).unwrap(),
                serde_json::from_str(&r.try_get::<String, _>(1).unwrap()).unwrap(),
            )
        })
        .collect()
    }

    fn config(&self, mode: &str, tables: &[&str]) -> Value {
        json!({"host": self.host, "port": self.port, "database": self.name, "tables": tables,
               "mode": mode, "poll_interval_seconds": 0.2, "batch_size": 200})
    }

    async fn drop(self) {
        self.db.close().await;
        let admin = Db::connect(&aragora_testkit::pg_admin_url(), &Default::default())
            .await
            .unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '{}' AND NOT active",
            self.name
        )))
        .execute(admin.writer())
        .await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(admin.writer())
        .await
        .unwrap();
    }
}

fn cdc_env() -> ServerOptions {
    ServerOptions {
        args: vec![],
        env: vec![
            (
                "CDC_SOURCE_PASSWORD".into(),
                "not-needed-with-trust-auth".into(),
            ),
            ("ARAGORA_CDC_LEASE_SECS".into(), "2".into()),
        ],
    }
}

both_backends!(
    connectors_api_validates_and_never_echoes_secrets,
    |backend| async move {
        let s = Server::start_with(BIN, backend, cdc_env()).await;
        let t = s.admin_token.clone();
        let good = json!({"name": "orders", "type": "postgresql",
            "config": {"host": "127.0.0.1", "database": "shop", "tables": ["orders"]},
            "credentials": {"username": "cdc", "password_env": "CDC_SOURCE_PASSWORD"},
            "handlers": ["webhook"], "start": false});
        let with = |path: &str, v: Value| {
            let mut b = good.clone();
            let mut cur = &mut b;
            let parts: Vec<&str> = path.split('.').collect();
            for p in &parts[..parts.len() - 1] {
                cur = &mut cur[*p];
            }
            cur[parts[parts.len() - 1]] = v;
            b
        };
        let cases = [
            (with("type", json!("oracle")), "type"),
            (with("name", json!("")), "name"),
            (with("config.tables", json!([])), "config.tables"),
            (
                with("config.tables", json!(["ok", "bad name"])),
                "config.tables[1]",
            ),
            (with("config.mode", json!("magic")), "config.mode"),
            (with("config.colour", json!("blue")), "config.colour"),
            (
                with("config.slot_name", json!("Has-Caps")),
                "config.slot_name",
            ),
            (
                with(
                    "credentials",
                    json!({"username": "u", "password": "hunter2"}),
                ),
                "credentials.password",
            ),
            (
                with(
                    "credentials",
                    json!({"username": "u", "password_env": "1BAD"}),
                ),
                "credentials.password_env",
            ),
            (
                with("credentials", json!({"password_env": "X"})),
                "credentials.username",
            ),
            (with("handlers", json!(["email"])), "handlers[0]"),
        ];
        for (body, field) in cases {
            let (status, resp) = s.post("/api/v1/connectors", &t, &body).await;
            assert_eq!(status, 422, "{body} → {resp}");
            assert_eq!(resp["error"]["details"]["field"], field, "{resp}");
            assert!(
                !resp.to_string().contains("hunter2"),
                "a refused secret is not echoed"
            );
        }

        let (status, created) = s.post("/api/v1/connectors", &t, &good).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("conn-"));
        assert_eq!(
            created["credentials"],
            json!({"username": "cdc", "password_env": "CDC_SOURCE_PASSWORD"})
        );
        assert_eq!(created["state"], "stopped");
        assert_eq!(
            created["config"]["mode"], "trigger",
            "defaults are filled in"
        );
        assert_eq!(created["config"]["port"], 5432);
        let (status, dup) = s.post("/api/v1/connectors", &t, &good).await;
        assert_eq!(status, 409, "{dup}");

        let (status, list) = s.get("/api/v1/connectors", &t).await;
        assert_eq!(status, 200);
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["id"], id.as_str());
        assert!(list["next_cursor"].is_null());
        let (status, one) = s.get(&format!("/api/v1/connectors/{id}"), &t).await;
        assert_eq!(status, 200);
        assert_eq!(one["name"], "orders");

        // RBAC: a viewer reads but cannot write; another workspace sees nothing.
        let viewer = s.token("v", "default", "viewer").await;
        let (status, _) = s
            .get(&format!("/api/v1/connectors/{id}/events"), &viewer)
            .await;
        assert_eq!(status, 200);
        let (status, _) = s
            .post(
                &format!("/api/v1/connectors/{id}/start"),
                &viewer,
                &json!({}),
            )
            .await;
        assert_eq!(status, 403);
        let (status, _) = s.post("/api/v1/connectors", &viewer, &good).await;
        assert_eq!(status, 403);
        let other = s.token("o", "elsewhere", "admin").await;
        let (status, _) = s.get(&format!("/api/v1/connectors/{id}"), &other).await;
        assert_eq!(status, 404);
        let (status, list) = s.get("/api/v1/connectors", &other).await;
        assert_eq!((status, list["total"].as_i64()), (200, Some(0)));

        // Health of an unreachable source says so, without a 5xx.
        let (status, health) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["healthy"], false);
        assert!(
            health["details"]["source_unreachable"].is_string(),
            "{health}"
        );
        assert!(health["latency_ms"].is_number());

        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/connectors/{id}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = s.get(&format!("/api/v1/connectors/{id}"), &t).await;
        assert_eq!(status, 404);
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/connectors/{id}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 404);
    }
);

both_backends!(
    trigger_connector_survives_sigkill_with_identical_replay_ids,
    |backend| async move {
        let src = Source::new(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance int NOT NULL);
             INSERT INTO accounts SELECT g, 'owner ' || g, 100 FROM generate_series(1, 1500) g",
        )
        .await;
        let mut s = Server::start_with(BIN, backend, cdc_env()).await;
        let t = s.admin_token.clone();
        let (status, created) = s
            .post(
                "/api/v1/connectors",
                &t,
                &json!({"name": "accounts", "type": "postgresql",
                    "config": {"checkpoint_interval_ms": 3000, "host": src.host, "port": src.port,
                        "database": src.name, "tables": ["accounts"], "poll_interval_seconds": 0.2,
                        "batch_size": 50},
                    "credentials": {"username": "postgres", "password_env": "CDC_SOURCE_PASSWORD"},
                    "handlers": ["knowledge_mound", "webhook"]}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();

        // The snapshot arrives.
        let got = eventually(Duration::from_secs(60), || async {
            (cdc_events(&s.db.url).await.len() >= 1500).then_some(())
        })
        .await;
        assert!(got.is_some(), "snapshot of 1500 rows delivered");

        // Writes keep coming while the server is killed and restarted.
        let writer_url = src.url.clone();
        let writer = tokio::spawn(async move {
            let db = Db::connect(&writer_url, &Default::default()).await.unwrap();
            for i in 0..300i64 {
                let sql = format!(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = {}; \
                     DELETE FROM accounts WHERE id = {}; \
                     INSERT INTO accounts VALUES ({}, 'new', 1)",
                    1 + (i * 3) % 1500,
                    2 + (i * 5) % 1500,
                    5000 + i
                );
                for stmt in sql.split("; ") {
                    sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
                        .execute(db.writer())
                        .await
                        .unwrap();
                }
                tokio::task::yield_now().await;
            }
            db.close().await;
        });
        let mid = eventually(Duration::from_secs(60), || async {
            (cdc_events(&s.db.url).await.len() >= 1700).then_some(())
        })
        .await;
        assert!(mid.is_some(), "streaming started");
        s.kill().await;
        s.restart().await;
        writer.await.unwrap();

        let expected = src.rows("accounts").await;
        let converged = eventually(Duration::from_secs(90), || async {
            (replay(&cdc_events(&s.db.url).await, "id") == expected).then_some(())
        })
        .await;
        let events = cdc_events(&s.db.url).await;
        if converged.is_none() {
            let got = replay(&events, "id");
            for (k, v) in &expected {
                if got.get(k) != Some(v) {
                    eprintln!("row {k}: source {v} events {:?}", got.get(k));
                }
            }
            for k in got.keys().filter(|k| !expected.contains_key(k)) {
                eprintln!("row {k}: deleted in source, events have {}", got[k]);
            }
            for e in events.iter().filter(|e| e["primary_key"]["id"] == 1) {
                eprintln!("{e}");
            }
        }
        assert!(
            converged.is_some(),
            "after the crash the events reproduce the table exactly ({} events)",
            events.len()
        );

        // The knowledge mound equals the table: one `cdc` item per row, holding the row.
        let mound_ok = eventually(Duration::from_secs(60), || async {
            let items = mound_items(&s.db.url, &id, "accounts", "id").await;
            for (_, content) in items.values() {
                assert!(content.contains("owner: "), "{content}");
            }
            let rows: BTreeMap<i64, Value> =
                items.into_iter().map(|(k, (row, _))| (k, row)).collect();
            (rows == expected).then_some(())
        })
        .await;
        assert!(
            mound_ok.is_some(),
            "the knowledge mound equals the source table after the crash"
        );

        // Same source position → same id; same id → same change (replays are identical).
        let duplicates = check_replays(&events, resume_position, |e, change| {
            if e["resume_token"] == "snapshot" {
                // A snapshot taken again carries the new snapshot's time.
                change.remove("timestamp");
            }
        });
        eprintln!(
            "{} events, {duplicates} replayed after the SIGKILL",
            events.len()
        );
        assert!(
            duplicates > 0,
            "the events after the last checkpoint were delivered again"
        );

        // The changelog is pruned as checkpoints advance.
        let slot = created["config"]["slot_name"].as_str().unwrap().to_string();
        let pruned = eventually(Duration::from_secs(30), || async {
            (src.scalar(&format!("SELECT count(*) FROM aragora_cdc.\"{slot}_log\""))
                .await
                < 100)
                .then_some(())
        })
        .await;
        assert!(pruned.is_some(), "acknowledged changelog rows are pruned");

        // Health, recent events and metrics.
        let (status, health) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
        assert_eq!(status, 200);
        assert_eq!(health["healthy"], true, "{health}");
        assert_eq!(health["details"]["running"], true);
        assert_eq!(health["details"]["changelog_installed"], true);
        let (status, recent) = s
            .get(&format!("/api/v1/connectors/{id}/events?limit=5"), &t)
            .await;
        assert_eq!(status, 200);
        assert_eq!(recent["items"].as_array().unwrap().len(), 5);
        assert_eq!(recent["items"][0]["connector_id"], id.as_str());
        // The list shape: the ring's size as `total`, a cursor to older events, no repeats.
        let total = recent["total"].as_i64().unwrap();
        assert!(total > 5, "{recent}");
        let cursor = recent["next_cursor"].as_str().expect("older events follow");
        let (status, older) = s
            .get(
                &format!("/api/v1/connectors/{id}/events?limit=5&cursor={cursor}"),
                &t,
            )
            .await;
        assert_eq!(status, 200, "{older}");
        assert_eq!(older["total"], total);
        let seq = |v: &Value| v["sequence_number"].as_i64().unwrap();
        assert!(
            seq(&older["items"][0]) < seq(&recent["items"][4]),
            "the next page is older"
        );
        let (status, body) = s
            .get(&format!("/api/v1/connectors/{id}/events?cursor=%25%25"), &t)
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["details"]["field"], "cursor");
        let text = s.metrics().await;
        assert!(
            text.contains("aragora_cdc_events_total{connector=\""),
            "metrics list CDC events"
        );

        // Stop keeps the position; changes made while stopped arrive on start.
        let (status, _) = s
            .post(&format!("/api/v1/connectors/{id}/stop"), &t, &json!({}))
            .await;
        assert_eq!(status, 200);
        let stopped = eventually(Duration::from_secs(20), || async {
            let (_, h) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
            (h["details"]["running"] == false).then_some(())
        })
        .await;
        assert!(stopped.is_some());
        src.exec("INSERT INTO accounts VALUES (99999, 'while stopped', 5)")
            .await;
        let (status, _) = s
            .post(&format!("/api/v1/connectors/{id}/start"), &t, &json!({}))
            .await;
        assert_eq!(status, 200);
        let expected = src.rows("accounts").await;
        let caught_up = eventually(Duration::from_secs(60), || async {
            (replay(&cdc_events(&s.db.url).await, "id") == expected).then_some(())
        })
        .await;
        assert!(
            caught_up.is_some(),
            "nothing is lost while the connector is stopped"
        );

        // Delete removes the capture objects from the source.
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/connectors/{id}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let removed = eventually(Duration::from_secs(30), || async {
            (src.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'aragora_cdc_%'")
                .await
                == 0)
                .then_some(())
        })
        .await;
        assert!(
            removed.is_some(),
            "triggers are removed when the connector is deleted"
        );
        drop(s);
        src.drop().await;
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_connector_streams_reports_slot_lag_and_cleans_up() {
    let src = Source::new("CREATE TABLE events (id bigint PRIMARY KEY, kind text)").await;
    let s = Server::start_with(BIN, Backend::Postgres, cdc_env()).await;
    let t = s.admin_token.clone();
    let (status, created) = s
        .post(
            "/api/v1/connectors",
            &t,
            &json!({"name": "ev", "type": "postgresql",
                "config": src.config("logical", &["events"]),
                "credentials": {"username": "postgres", "password_env": "CDC_SOURCE_PASSWORD"},
                "handlers": ["webhook"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let slot = created["config"]["slot_name"].as_str().unwrap().to_string();
    let has_slot = eventually(Duration::from_secs(30), || async {
        (src.scalar(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' AND active"
        ))
        .await
            == 1)
            .then_some(())
    })
    .await;
    assert!(has_slot.is_some(), "the connector holds its slot");
    src.exec("INSERT INTO events SELECT g, 'k' || g FROM generate_series(1, 3000) g")
        .await;
    src.exec("UPDATE events SET kind = 'changed' WHERE id <= 10")
        .await;
    src.exec("DELETE FROM events WHERE id > 2990").await;
    let expected = src.rows("events").await;
    let converged = eventually(Duration::from_secs(60), || async {
        (replay(&cdc_events(&s.db.url).await, "id") == expected).then_some(())
    })
    .await;
    assert!(converged.is_some(), "logical events reproduce the table");
    let (status, health) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
    assert_eq!(status, 200);
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["details"]["slot_exists"], true);
    assert!(health["details"]["slot_lag_bytes"].is_i64(), "{health}");
    assert!(health["details"]["retained_wal_bytes"].is_i64(), "{health}");
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/connectors/{id}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let gone = eventually(Duration::from_secs(30), || async {
        (src.scalar(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ))
        .await
            == 0
            && src.scalar("SELECT count(*) FROM pg_publication").await == 0)
            .then_some(())
    })
    .await;
    assert!(gone.is_some(), "slot and publication are dropped on delete");
    drop(s);
    src.drop().await;
}

/// A second server process on the same database, sharing the first one's tokens.
struct Peer {
    child: tokio::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

async fn start_peer(db_url: &str) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .env("ARAGORA_CDC_LEASE_SECS", "2")
        .env("CDC_SOURCE_PASSWORD", "x")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.split("listening on ").nth(1) {
                return url.trim().to_string();
            }
        }
        panic!("peer exited before listening")
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Peer {
        child,
        base,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_moves_to_the_other_server_when_the_holder_dies() {
    let src = Source::new("CREATE TABLE jobs (id bigint PRIMARY KEY, v int)").await;
    let mut a = Server::start_with(BIN, Backend::Postgres, cdc_env()).await;
    let t = a.admin_token.clone();
    let (status, created) = a
        .post(
            "/api/v1/connectors",
            &t,
            &json!({"name": "jobs", "type": "postgresql",
                "config": src.config("trigger", &["jobs"]),
                "credentials": {"username": "postgres", "password_env": "CDC_SOURCE_PASSWORD"},
                "handlers": ["webhook"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let pid_a = a.pid().unwrap();
    let on_a = eventually(Duration::from_secs(30), || async {
        holder(&a, &id, &t).await
    })
    .await
    .unwrap();
    assert!(on_a.contains(&format!(":{pid_a}-")), "{on_a}");
    let mut b = start_peer(&a.db.url).await;
    src.exec("INSERT INTO jobs SELECT g, 1 FROM generate_series(1, 100) g")
        .await;
    let first = eventually(Duration::from_secs(30), || async {
        (cdc_events(&a.db.url).await.len() >= 100).then_some(())
    })
    .await;
    assert!(first.is_some());
    let (_, h) = a.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
    let token_a = h["details"]["fencing_token"].as_i64().unwrap();

    // Exactly one runner: B does not take a live lease.
    let pid_b = b.child.id().unwrap();
    a.kill().await;
    src.exec("INSERT INTO jobs SELECT g, 2 FROM generate_series(101, 200) g")
        .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: String| {
        let client = client.clone();
        let base = b.base.clone();
        let t = t.clone();
        async move {
            let r = client
                .get(format!("{base}{path}"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let on_b = eventually(Duration::from_secs(30), || async {
        get(format!("/api/v1/connectors/{id}")).await["running_on"]
            .as_str()
            .filter(|h| h.contains(&format!(":{pid_b}-")))
            .map(str::to_string)
    })
    .await;
    assert!(on_b.is_some(), "the other server took the lease over");
    let h = get(format!("/api/v1/connectors/{id}/health")).await;
    assert!(
        h["details"]["fencing_token"].as_i64().unwrap() > token_a,
        "{h}"
    );
    let expected = src.rows("jobs").await;
    let caught_up = eventually(Duration::from_secs(60), || async {
        (replay(&cdc_events(&a.db.url).await, "id") == expected).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the new holder delivered what the dead one had not"
    );
    let _ = b.child.kill().await;
    drop(a);
    src.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_install_command_installs_prints_and_removes_capture() {
    let src = Source::new("CREATE TABLE t1 (id int PRIMARY KEY, v text)").await;
    let run = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(BIN)
            .arg("cdc")
            .args(&args)
            .env("PGPASSWORD", "x")
            .env("RUST_LOG", "warn")
            .output()
            .await
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let target = |verb: &str, extra: &[&str]| {
        let mut v: Vec<String> = vec![
            verb.into(),
            "--host".into(),
            src.host.clone(),
            "--port".into(),
            src.port.to_string(),
            "--database".into(),
            src.name.clone(),
            "--tables".into(),
            "t1".into(),
            "--slot".into(),
            "cli_slot".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let (ok, sql, err) = run(target("install", &["--print-sql"])).await;
    assert!(ok, "{err}");
    assert!(
        sql.contains("CREATE TRIGGER \"aragora_cdc_cli_slot\""),
        "{sql}"
    );
    assert_eq!(
        src.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'aragora_cdc_%'")
            .await,
        0,
        "print-sql changes nothing"
    );
    let (ok, _, err) = run(target("install", &[])).await;
    assert!(ok, "{err}");
    assert_eq!(
        src.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'aragora_cdc_cli_slot%'")
            .await,
        2
    );
    // Captured while no connector runs: the changelog keeps it.
    src.exec("INSERT INTO t1 VALUES (1, 'before any connector')")
        .await;
    assert_eq!(
        src.scalar("SELECT count(*) FROM aragora_cdc.\"cli_slot_log\"")
            .await,
        1
    );
    let (ok, _, err) = run(target("install", &[])).await;
    assert!(ok, "install is idempotent: {err}");
    let (ok, _, err) = run(target("install", &["--mode", "sideways"])).await;
    assert!(!ok && err.contains("--mode"), "{err}");
    let (ok, _, err) = run(vec!["install".into(), "--host".into(), src.host.clone()]).await;
    assert!(!ok && err.contains("--database"), "{err}");
    let (ok, _, err) = run(target("uninstall", &[])).await;
    assert!(ok, "{err}");
    assert_eq!(
        src.scalar("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'aragora_cdc_%'")
            .await,
        0
    );
    src.drop().await;
}

async fn holder(s: &Server, id: &str, t: &str) -> Option<String> {
    let (_, c) = s.get(&format!("/api/v1/connectors/{id}"), t).await;
    c["running_on"].as_str().map(str::to_string)
}

/// A "PostgreSQL" on loopback that accepts connections and never says a word: a client waits for
/// the answer to its startup message as it would for a source that hangs. Returns its port.
fn silent_source() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

both_backends!(
    health_of_a_source_that_never_answers_is_cut_off_at_the_probe_timeout,
    |backend| async move {
        let port = silent_source();
        let s = Server::start_with(BIN, backend, cdc_env()).await;
        let t = s.admin_token.clone();
        let (status, created) = s
            .post(
                "/api/v1/connectors",
                &t,
                &json!({"name": "silent", "type": "postgresql",
                    "config": {"host": "127.0.0.1", "port": port, "database": "shop",
                        "tables": ["orders"]},
                    "credentials": {"username": "cdc", "password_env": "CDC_SOURCE_PASSWORD"}}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        // Its start waits on the silent source too, holding the lease meanwhile.
        let held = eventually(Duration::from_secs(10), || async {
            holder(&s, &id, &t).await
        })
        .await;
        assert!(held.is_some(), "a node took the connector's lease");

        let began = std::time::Instant::now();
        let (status, health) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
        let waited = began.elapsed();
        assert_eq!(status, 200, "{health}");
        assert!(
            waited < Duration::from_secs(7),
            "the probe is given up after 5 s; the answer took {waited:?}: {health}"
        );
        assert_eq!(health["healthy"], false, "{health}");
        assert_eq!(
            health["details"]["source_unreachable"], "no answer from the source within 5 s",
            "{health}"
        );
        let latency = health["latency_ms"].as_f64().unwrap();
        assert!(
            (5000.0..7000.0).contains(&latency),
            "latency_ms is the time waited: {health}"
        );
        // The rest of the answer is as before: what was asked for and the lease holder's report.
        assert_eq!(health["details"]["state"], "running", "{health}");
        assert_eq!(health["details"]["running"], true, "{health}");
        assert_eq!(
            health["details"]["running_on"].as_str(),
            held.as_deref(),
            "{health}"
        );
        assert!(health["details"]["fencing_token"].is_i64(), "{health}");
    }
);

both_backends!(
    deleting_a_connector_whose_source_never_answers_holds_up_no_other_connector,
    |backend| async move {
        use aragora_store::connectors;
        let port = silent_source();
        let src =
            Source::new("CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL)").await;
        let mut opts = cdc_env();
        // Long enough for the other connector's start and stop to happen inside it.
        opts.env
            .push(("ARAGORA_CDC_TEARDOWN_TIMEOUT_SECS".into(), "15".into()));
        let s = Server::start_with(BIN, backend, opts).await;
        let t = s.admin_token.clone();
        let db = Db::connect(&s.db.url, &Default::default()).await.unwrap();
        let create = |name: &str, config: Value| {
            json!({"name": name, "type": "postgresql", "config": config, "start": false,
                "credentials": {"username": "postgres", "password_env": "CDC_SOURCE_PASSWORD"}})
        };
        let (status, dead) = s
            .post(
                "/api/v1/connectors",
                &t,
                &create(
                    "silent",
                    json!({"host": "127.0.0.1", "port": port, "database": "shop",
                        "tables": ["orders"]}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{dead}");
        let dead = dead["id"].as_str().unwrap().to_string();
        let (status, good) = s
            .post(
                "/api/v1/connectors",
                &t,
                &create("good", src.config("trigger", &["accounts"])),
            )
            .await;
        assert_eq!(status, 201, "{good}");
        let good = good["id"].as_str().unwrap().to_string();

        // Deleted: the supervisor takes its lease and tries to remove its capture objects from
        // a source that never answers.
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/connectors/{dead}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = s.get(&format!("/api/v1/connectors/{dead}"), &t).await;
        assert_eq!(
            status, 404,
            "a deleted connector is gone from the API at once"
        );
        let tearing_down = eventually(Duration::from_secs(10), || async {
            connectors::lease(&db, &dead).await.unwrap().map(|_| ())
        })
        .await;
        assert!(tearing_down.is_some(), "the deletion began");
        let still_tearing_down = || async {
            let now = aragora_core::time::now_ms();
            let record = connectors::get_any(&db, &dead).await.unwrap();
            let lease = connectors::lease(&db, &dead).await.unwrap();
            record.is_some() && lease.is_some_and(|l| l.expires_at >= now)
        };

        // Meanwhile the other connector starts and stops as usual.
        let (status, _) = s
            .post(&format!("/api/v1/connectors/{good}/start"), &t, &json!({}))
            .await;
        assert_eq!(status, 200);
        let started = eventually(Duration::from_secs(10), || async {
            let (_, h) = s
                .get(&format!("/api/v1/connectors/{good}/health"), &t)
                .await;
            (h["healthy"] == true).then_some(())
        })
        .await;
        assert!(
            started.is_some(),
            "the other connector started while the deleted one's source was not answering"
        );
        assert!(
            still_tearing_down().await,
            "it started before the teardown ended (the deleted connector still holds its lease)"
        );
        let (status, _) = s
            .post(&format!("/api/v1/connectors/{good}/stop"), &t, &json!({}))
            .await;
        assert_eq!(status, 200);
        let stopped = eventually(Duration::from_secs(10), || async {
            let (_, h) = s
                .get(&format!("/api/v1/connectors/{good}/health"), &t)
                .await;
            (h["details"]["running"] == false).then_some(())
        })
        .await;
        assert!(stopped.is_some(), "the other connector stopped");
        assert!(
            still_tearing_down().await,
            "it stopped before the teardown ended"
        );

        // The teardown gives up after its timeout and the deleted connector's rows go.
        let purged = eventually(Duration::from_secs(40), || async {
            (connectors::get_any(&db, &dead).await.unwrap().is_none()
                && connectors::lease(&db, &dead).await.unwrap().is_none())
            .then_some(())
        })
        .await;
        assert!(purged.is_some(), "the deleted connector's rows are removed");
        let (status, _) = s.get(&format!("/api/v1/connectors/{dead}"), &t).await;
        assert_eq!(status, 404);
        let (status, g) = s.get(&format!("/api/v1/connectors/{good}"), &t).await;
        assert_eq!((status, g["state"].as_str()), (200, Some("stopped")), "{g}");
        db.close().await;
        drop(s);
        src.drop().await;
    }
);

both_backends!(
    a_missing_table_fails_the_connector_and_an_unreachable_source_is_retried,
    |backend| async move {
        // A configuration error at start (a configured table that does not exist) fails the
        // connector; a source that refuses connections is retried and stays `running`.
        let src = Source::new("CREATE TABLE orders (id BIGINT PRIMARY KEY, item TEXT)").await;
        let s = Server::start_with(BIN, backend, cdc_env()).await;
        let t = s.admin_token.clone();
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let create = |name: &str, config: Value| {
            json!({"name": name, "type": "postgresql", "config": config,
                "credentials": {"username": "postgres", "password_env": "CDC_SOURCE_PASSWORD"}})
        };
        let (status, missing) = s
            .post(
                "/api/v1/connectors",
                &t,
                &create("missing", src.config("trigger", &["orders", "nosuch"])),
            )
            .await;
        assert_eq!(status, 201, "{missing}");
        let missing = missing["id"].as_str().unwrap().to_string();
        let mut refused_config = src.config("trigger", &["orders"]);
        refused_config["host"] = json!("127.0.0.1");
        refused_config["port"] = json!(closed_port);
        let (status, refused) = s
            .post("/api/v1/connectors", &t, &create("refused", refused_config))
            .await;
        assert_eq!(status, 201, "{refused}");
        let refused = refused["id"].as_str().unwrap().to_string();

        let failed = eventually(Duration::from_secs(30), || async {
            let (_, c) = s.get(&format!("/api/v1/connectors/{missing}"), &t).await;
            (c["state"] == "failed").then_some(())
        })
        .await;
        assert!(
            failed.is_some(),
            "the connector on a missing table is failed"
        );
        let (_, h) = s
            .get(&format!("/api/v1/connectors/{missing}/health"), &t)
            .await;
        assert_eq!(h["healthy"], false, "{h}");
        assert_eq!(h["details"]["phase"], "failed", "{h}");
        assert!(
            h["details"]["source_error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("config.tables[1]: "),
            "{h}"
        );

        let retried = eventually(Duration::from_secs(30), || async {
            let (_, h) = s
                .get(&format!("/api/v1/connectors/{refused}/health"), &t)
                .await;
            h["details"]["source_error"].is_string().then_some(h)
        })
        .await;
        let h = retried.expect("the refused start reports its error");
        assert_eq!(h["healthy"], false, "{h}");
        assert_eq!(h["details"]["phase"], "reconnecting", "{h}");
        assert_eq!(h["details"]["state"], "running", "{h}");
        let (_, c) = s.get(&format!("/api/v1/connectors/{refused}"), &t).await;
        assert_eq!(c["state"], "running", "still retried: {c}");
        for id in [&missing, &refused] {
            s.call(
                reqwest::Method::DELETE,
                &format!("/api/v1/connectors/{id}"),
                Some(&t),
                None,
            )
            .await;
        }
        src.drop().await;
    }
);
