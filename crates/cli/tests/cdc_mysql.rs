//! A server-managed MySQL/MariaDB connector through the real binary: created over the API with a
//! least-privilege replication user over a table that already holds rows (the initial snapshot
//! indexes them), binlog changes into `cdc.change` events and the knowledge mound, a SIGKILL
//! mid-stream with GTID resume (nothing lost, replays keep their ids), health once caught up.
//! The source is the harness's MariaDB (`scripts/test-services start mysql`), a fresh database
//! per test; Aragora's own database runs on SQLite and PostgreSQL.

use aragora_testkit::{Server, ServerOptions, both_backends, eventually};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

mod cluster;

use cluster::{cdc_events, check_replays, mound, replay};

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

/// The source, driven with the `mariadb` client.
struct Source {
    name: String,
    user: String,
    host: String,
    port: u16,
}

impl Source {
    fn hostport() -> (String, u16) {
        let url = aragora_testkit::mysql_url();
        let rest = url.split_once('@').map(|(_, r)| r).unwrap_or(&url);
        let hostport = rest.split('/').next().unwrap();
        let (h, p) = hostport.split_once(':').unwrap_or((hostport, "3306"));
        (h.to_string(), p.parse().unwrap())
    }

    fn sql(&self, sql: &str) -> String {
        let out = std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=tcp",
                "-h",
                &self.host,
                "-P",
                &self.port.to_string(),
                "-uroot",
                "-N",
                "-B",
                "-e",
                sql,
            ])
            .output()
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn new(ddl: &str) -> Source {
        let (host, port) = Source::hostport();
        let id = aragora_testkit::random_hex()[..16].to_string();
        let src = Source {
            name: format!("cdcsrc_{}", &id[..12]),
            user: format!("cdc_{}", &id[..10]),
            host,
            port,
        };
        src.sql(&format!(
            "CREATE DATABASE {db}; USE {db}; {ddl}; \
             CREATE USER '{u}'@'127.0.0.1' IDENTIFIED BY 'cdc-secret'; \
             GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{u}'@'127.0.0.1'; \
             GRANT SELECT ON {db}.* TO '{u}'@'127.0.0.1'",
            db = src.name,
            u = src.user
        ));
        src
    }

    /// id → row as JSON text values.
    fn rows(&self) -> BTreeMap<i64, Value> {
        self.sql(&format!(
            "SELECT id, owner, balance FROM {}.accounts ORDER BY id",
            self.name
        ))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let id: i64 = f[0].parse().unwrap();
            (
                id,
                json!({"id": id, "owner": f[1], "balance": f[2].parse::<i64>().unwrap()}),
            )
        })
        .collect()
    }

    fn drop(self) {
        self.sql(&format!(
            "DROP DATABASE {}; DROP USER '{}'@'127.0.0.1'",
            self.name, self.user
        ));
    }
}

/// The server, with the source user's password in its environment and a short connector lease.
async fn start_server(backend: aragora_testkit::Backend, lease_secs: &str) -> Server {
    Server::start_with(
        BIN,
        backend,
        ServerOptions {
            args: vec![],
            env: vec![
                ("MYSQL_CDC_PASSWORD".into(), "cdc-secret".into()),
                ("ARAGORA_CDC_LEASE_SECS".into(), lease_secs.into()),
            ],
        },
    )
    .await
}

/// Deletes the connectors, gives their binlog sessions time to end, then drops the source.
async fn delete_then_drop(s: &Server, token: &str, ids: &[&str], src: Source) {
    for id in ids {
        s.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/connectors/{id}"),
            Some(token),
            None,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    src.drop();
}

both_backends!(
    mysql_connector_streams_and_resumes_after_sigkill,
    |backend| async move {
        // 120 rows exist before the connector does: the initial snapshot delivers them.
        let src = Source::new(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
             balance INT NOT NULL); \
             INSERT INTO accounts SELECT seq, CONCAT('owner ', seq), 100 FROM seq_1_to_120",
        );
        let mut s = start_server(backend, "2").await;
        let t = s.admin_token.clone();
        let config = json!({"host": src.host, "port": src.port, "database": src.name,
            "tables": ["accounts"], "batch_size": 50, "checkpoint_interval_ms": 2000,
            "heartbeat_seconds": 1.0, "snapshot": "initial"});
        // Validation names the field.
        let (status, resp) = s
            .post(
                "/api/v1/connectors",
                &t,
                &json!({"name": "bad", "type": "mysql",
                    "config": {"host": "h", "database": "d", "tables": ["t"], "server_id": 0},
                    "credentials": {"username": "u"}}),
            )
            .await;
        assert_eq!(status, 422, "{resp}");
        assert_eq!(resp["error"]["details"]["field"], "config.server_id");
        // A misspelt top-level field is refused too (it would silently default `handlers`).
        let (status, resp) = s
            .post(
                "/api/v1/connectors",
                &t,
                &json!({"name": "typo", "type": "mysql",
                    "config": {"host": "h", "database": "d", "tables": ["t"]},
                    "credentials": {"username": "u", "password_env": "MYSQL_CDC_PASSWORD"},
                    "handler": ["webhook"]}),
            )
            .await;
        assert_eq!(status, 422, "{resp}");
        assert_eq!(resp["error"]["details"]["field"], "handler", "{resp}");

        let (status, created) = s
            .post(
                "/api/v1/connectors",
                &t,
                &json!({"name": "accounts", "type": "mysql", "config": config,
                    "credentials": {"username": src.user, "password_env": "MYSQL_CDC_PASSWORD"},
                    "handlers": ["knowledge_mound", "webhook"]}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        assert!(created["config"]["server_id"].as_u64().unwrap() >= 1000);
        let running = eventually(Duration::from_secs(30), || async {
            let (_, h) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
            (h["details"]["phase"] == "streaming").then_some(())
        })
        .await;
        assert!(running.is_some(), "the connector streams");
        assert_eq!(created["config"]["snapshot"], "initial");

        // The pre-existing rows, indexed into the knowledge mound by the snapshot.
        let indexed = eventually(Duration::from_secs(60), || async {
            (mound(&s.db.url, &id, "accounts", "id").await == src.rows()).then_some(())
        })
        .await;
        assert!(
            indexed.is_some(),
            "the knowledge mound holds the rows that existed before the connector"
        );
        let published = eventually(Duration::from_secs(30), || async {
            (cdc_events(&s.db.url).await.len() >= 120).then_some(())
        })
        .await;
        assert!(published.is_some(), "the snapshot as cdc.change events");
        let snap = cdc_events(&s.db.url).await;
        assert_eq!(snap.len(), 120);
        assert!(
            snap.iter()
                .all(|e| e["resume_token"] == "snapshot" && e["operation"] == "INSERT")
        );

        for i in 121..=300 {
            src.sql(&format!(
                "INSERT INTO {}.accounts VALUES ({i}, 'owner {i}', 100)",
                src.name
            ));
        }
        let got = eventually(Duration::from_secs(60), || async {
            (cdc_events(&s.db.url).await.len() >= 300).then_some(())
        })
        .await;
        if got.is_none() {
            let (_, h) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
            panic!("inserts not delivered: {h}");
        }

        // Writes continue across a SIGKILL of the server.
        let (db, host, port) = (src.name.clone(), src.host.clone(), src.port);
        let writer = tokio::task::spawn_blocking(move || {
            let w = Source {
                name: db.clone(),
                user: String::new(),
                host,
                port,
            };
            for i in 0..150i64 {
                w.sql(&format!(
                    "UPDATE {db}.accounts SET balance = balance + 1 WHERE id = {}; \
                     DELETE FROM {db}.accounts WHERE id = {}; \
                     INSERT INTO {db}.accounts VALUES ({}, 'new', 1)",
                    1 + (i * 3) % 300,
                    2 + (i * 5) % 300,
                    5000 + i
                ));
            }
        });
        let mid = eventually(Duration::from_secs(60), || async {
            (cdc_events(&s.db.url).await.len() >= 360).then_some(())
        })
        .await;
        assert!(mid.is_some(), "streaming before the kill");
        s.kill().await;
        s.restart().await;
        writer.await.unwrap();

        let expected = src.rows();
        let converged = eventually(Duration::from_secs(90), || async {
            (replay(&cdc_events(&s.db.url).await, "id") == expected).then_some(())
        })
        .await;
        let events = cdc_events(&s.db.url).await;
        assert!(
            converged.is_some(),
            "after the SIGKILL the events reproduce the table ({} events)",
            events.len()
        );
        // The snapshot's end was persisted as soon as it was acknowledged, long before the kill:
        // the restart streams and does not copy the table again.
        let copied = events
            .iter()
            .filter(|e| e["resume_token"] == "snapshot")
            .count();
        assert_eq!(
            copied, 120,
            "the snapshot was not taken again after the SIGKILL"
        );
        // Same binlog position (GTID:row) → same id, and the same change.
        let replayed = check_replays(
            &events,
            |e| {
                let pos = e["resume_token"].as_str().unwrap().to_string();
                if pos == "snapshot" {
                    return None;
                }
                assert!(pos.starts_with("0-1-"), "GTID positions: {pos}");
                Some(pos)
            },
            |e, change| {
                if e["resume_token"] == "snapshot" {
                    // A snapshot taken again carries the new snapshot's time.
                    change.remove("timestamp");
                }
            },
        );
        // The knowledge mound equals the table.
        let mound_ok = eventually(Duration::from_secs(60), || async {
            (mound(&s.db.url, &id, "accounts", "id").await == expected).then_some(())
        })
        .await;
        assert!(mound_ok.is_some(), "the knowledge mound equals the table");
        eprintln!(
            "{} events, {replayed} replayed after the SIGKILL",
            events.len()
        );

        // Health once every change is acknowledged: the connector's checkpoint is the source's
        // end of binlog, and the node running it reports how far it read.
        let caught_up = eventually(Duration::from_secs(90), || async {
            let (_, h) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
            let d = &h["details"];
            (d["caught_up"] == true && d["read_file"].is_string() && d["resume_token"].is_string())
                .then_some(h)
        })
        .await;
        let (status, last) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
        assert_eq!(status, 200);
        let health = caught_up.unwrap_or_else(|| panic!("never caught up: {last}"));
        let d = &health["details"];
        assert_eq!(d["lag_bytes"], 0, "{health}");
        assert_eq!(
            d["checkpoint"]["file"], d["server_position"]["file"],
            "{health}"
        );
        assert_eq!(
            d["checkpoint"]["pos"], d["server_position"]["pos"],
            "{health}"
        );
        assert!(d["read_pos"].is_u64(), "{health}");
        assert!(d["seconds_since_last_binlog_event"].is_i64(), "{health}");
        assert_eq!(d["snapshot_done"], true, "{health}");
        assert!(
            d["resume_token"]
                .as_str()
                .unwrap()
                .starts_with("flavor=mariadb;gtid=0-1-"),
            "{health}"
        );
        assert_eq!(health["healthy"], true, "{health}");
        assert_eq!(health["details"]["flavor"], "mariadb");
        assert_eq!(health["details"]["positioning"], "gtid");
        assert!(health["details"]["server_position"]["gtid"].is_string());
        assert!(health["latency_ms"].as_f64().unwrap() > 0.0);
        src.drop();
    }
);

both_backends!(
    a_connector_that_fails_stays_failed_until_started,
    |backend| async move {
        // Two connectors with one server_id, as a user with exactly the guide's grants (who may
        // not list the source's replicas, so the start-up check cannot see the clash): the source
        // lets the newer one in and ends the older one's dump. The older one must stay `failed`
        // instead of being restarted, which would knock the newer one off in turn, forever.
        let src = Source::new(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
             balance INT NOT NULL)",
        );
        let s = start_server(backend, "1").await;
        let t = s.admin_token.clone();
        let server_id =
            700_000 + u32::from_str_radix(&aragora_testkit::random_hex()[..4], 16).unwrap();
        let create = |name: &str| {
            json!({"name": name, "type": "mysql",
                "config": {"host": src.host, "port": src.port, "database": src.name,
                    "tables": ["accounts"], "server_id": server_id, "heartbeat_seconds": 1.0},
                "credentials": {"username": src.user, "password_env": "MYSQL_CDC_PASSWORD"},
                "handlers": ["knowledge_mound"]})
        };
        let phase = |id: String| {
            let s = &s;
            let t = t.clone();
            async move {
                let (_, h) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
                h
            }
        };
        let (status, first) = s.post("/api/v1/connectors", &t, &create("first")).await;
        assert_eq!(status, 201, "{first}");
        let first = first["id"].as_str().unwrap().to_string();
        let streaming = eventually(Duration::from_secs(30), || async {
            (phase(first.clone()).await["details"]["phase"] == "streaming").then_some(())
        })
        .await;
        assert!(streaming.is_some(), "the first connector streams");

        let (status, second) = s.post("/api/v1/connectors", &t, &create("second")).await;
        assert_eq!(status, 201, "{second}");
        let second = second["id"].as_str().unwrap().to_string();
        let failed = eventually(Duration::from_secs(30), || async {
            let (_, c) = s.get(&format!("/api/v1/connectors/{first}"), &t).await;
            (c["state"] == "failed").then_some(c)
        })
        .await;
        assert!(failed.is_some(), "the displaced connector is failed");
        let h = phase(first.clone()).await;
        assert_eq!(h["healthy"], false, "{h}");
        assert_eq!(h["details"]["state"], "failed", "{h}");
        assert_eq!(h["details"]["phase"], "failed", "{h}");
        assert!(
            h["details"]["source_error"]
                .as_str()
                .unwrap_or_default()
                .contains("config.server_id"),
            "{h}"
        );

        // Several lease periods later: still failed, and the other one was never knocked off.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, c) = s.get(&format!("/api/v1/connectors/{first}"), &t).await;
        assert_eq!(c["state"], "failed", "not restarted: {c}");
        let h2 = phase(second.clone()).await;
        assert_eq!(h2["details"]["phase"], "streaming", "{h2}");
        assert_eq!(h2["details"]["reconnects"], 0, "{h2}");
        src.sql(&format!(
            "INSERT INTO {}.accounts VALUES (1, 'after the clash', 5)",
            src.name
        ));
        let delivered = eventually(Duration::from_secs(30), || async {
            (mound(&s.db.url, &second, "accounts", "id").await.len() == 1).then_some(())
        })
        .await;
        assert!(
            delivered.is_some(),
            "the remaining connector still delivers"
        );

        // Starting it again is the way out (here it displaces the other, which then fails).
        let (status, _) = s
            .post(&format!("/api/v1/connectors/{first}/start"), &t, &json!({}))
            .await;
        assert!(status == 200 || status == 202, "start: {status}");
        let swapped = eventually(Duration::from_secs(30), || async {
            let (_, c) = s.get(&format!("/api/v1/connectors/{second}"), &t).await;
            (c["state"] == "failed").then_some(())
        })
        .await;
        assert!(swapped.is_some(), "the newer session wins again");
        delete_then_drop(&s, &t, &[&first, &second], src).await;
    }
);

both_backends!(
    a_source_that_does_not_answer_does_not_hold_up_the_others,
    |backend| async move {
        // A "MySQL" that accepts connections and never says a word: its connector's start waits
        // for the 10 s connect timeout. Started first, it must not delay the next connector.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in silent.incoming().flatten() {
                held.push(s);
            }
        });
        let src = Source::new(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
             balance INT NOT NULL)",
        );
        let s = start_server(backend, "2").await;
        let t = s.admin_token.clone();
        let body = |name: &str, port: u16| {
            json!({"name": name, "type": "mysql",
                "config": {"host": src.host, "port": port, "database": src.name,
                    "tables": ["accounts"], "heartbeat_seconds": 1.0},
                "credentials": {"username": src.user, "password_env": "MYSQL_CDC_PASSWORD"}})
        };
        let (status, dead) = s
            .post("/api/v1/connectors", &t, &body("silent", silent_port))
            .await;
        assert_eq!(status, 201, "{dead}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let began = std::time::Instant::now();
        let (status, good) = s
            .post("/api/v1/connectors", &t, &body("good", src.port))
            .await;
        assert_eq!(status, 201, "{good}");
        let good = good["id"].as_str().unwrap().to_string();
        let streaming = eventually(Duration::from_secs(30), || async {
            let (_, h) = s
                .get(&format!("/api/v1/connectors/{good}/health"), &t)
                .await;
            (h["details"]["phase"] == "streaming").then_some(())
        })
        .await;
        assert!(streaming.is_some(), "the reachable connector streams");
        assert!(
            began.elapsed() < Duration::from_secs(8),
            "it did not wait for the silent source's start: {:?}",
            began.elapsed()
        );
        delete_then_drop(&s, &t, &[dead["id"].as_str().unwrap(), &good], src).await;
    }
);

both_backends!(
    a_configuration_error_at_start_fails_the_connector,
    |backend| async move {
        // Errors start() refuses with, naming the field, that no retry can get past: a missing
        // table, the source's own server_id. Each connector becomes `failed` at once, stays so,
        // and runs once the cause is fixed and it is started again.
        let src = Source::new("CREATE TABLE other (id BIGINT PRIMARY KEY)");
        let s = start_server(backend, "1").await;
        let t = s.admin_token.clone();
        let source_server_id: u64 = src.sql("SELECT @@server_id").parse().unwrap();
        let create = |name: &str, server_id: Option<u64>| {
            let mut config = json!({"host": src.host, "port": src.port, "database": src.name,
                "tables": ["accounts"], "heartbeat_seconds": 1.0});
            if let Some(id) = server_id {
                config["server_id"] = json!(id);
            }
            json!({"name": name, "type": "mysql", "config": config,
                "credentials": {"username": src.user, "password_env": "MYSQL_CDC_PASSWORD"},
                "handlers": ["knowledge_mound"]})
        };
        let failed_health = |id: String| {
            let (s, t) = (&s, t.clone());
            async move {
                eventually(Duration::from_secs(30), || async {
                    let (_, c) = s.get(&format!("/api/v1/connectors/{id}"), &t).await;
                    (c["state"] == "failed").then_some(())
                })
                .await
                .unwrap_or_else(|| panic!("connector {id} did not become failed"));
                let (_, h) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
                h
            }
        };

        let (status, missing) = s
            .post("/api/v1/connectors", &t, &create("missing", None))
            .await;
        assert_eq!(status, 201, "{missing}");
        let missing = missing["id"].as_str().unwrap().to_string();
        let (status, own_id) = s
            .post(
                "/api/v1/connectors",
                &t,
                &create("own-id", Some(source_server_id)),
            )
            .await;
        assert_eq!(status, 201, "{own_id}");
        let own_id = own_id["id"].as_str().unwrap().to_string();

        let h = failed_health(missing.clone()).await;
        assert_eq!(h["healthy"], false, "{h}");
        assert_eq!(h["details"]["state"], "failed", "{h}");
        assert_eq!(h["details"]["phase"], "failed", "{h}");
        let error = h["details"]["source_error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("config.tables[0]: ") && error.contains("does not exist"),
            "{h}"
        );
        let h = failed_health(own_id.clone()).await;
        assert_eq!(h["healthy"], false, "{h}");
        assert_eq!(h["details"]["phase"], "failed", "{h}");
        assert!(
            h["details"]["source_error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("config.server_id: "),
            "{h}"
        );

        // Several lease periods later: not started again (the lease is not taken again).
        let token_before = h["details"]["fencing_token"].clone();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (_, h) = s
            .get(&format!("/api/v1/connectors/{own_id}/health"), &t)
            .await;
        assert_eq!(h["details"]["state"], "failed", "{h}");
        assert_eq!(h["details"]["phase"], "failed", "{h}");
        assert_eq!(
            h["details"]["fencing_token"], token_before,
            "restarted: {h}"
        );

        // Fixed and started again: it runs.
        src.sql(&format!(
            "CREATE TABLE {db}.accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
             balance INT NOT NULL); INSERT INTO {db}.accounts VALUES (1, 'first', 10)",
            db = src.name
        ));
        let (status, c) = s
            .post(
                &format!("/api/v1/connectors/{missing}/start"),
                &t,
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["state"], "running", "{c}");
        let streaming = eventually(Duration::from_secs(30), || async {
            let (_, h) = s
                .get(&format!("/api/v1/connectors/{missing}/health"), &t)
                .await;
            (h["details"]["phase"] == "streaming" && h["healthy"] == true).then_some(())
        })
        .await;
        assert!(streaming.is_some(), "the fixed connector streams");
        let indexed = eventually(Duration::from_secs(30), || async {
            (mound(&s.db.url, &missing, "accounts", "id").await.len() == 1).then_some(())
        })
        .await;
        assert!(indexed.is_some(), "the fixed connector indexes the table");
        delete_then_drop(&s, &t, &[&missing, &own_id], src).await;
    }
);

both_backends!(
    deleting_a_connector_removes_its_knowledge_items,
    |backend| async move {
        // Two connectors index the same rows; deleting one removes its items from the mound (and
        // so from search), and leaves the other's.
        let word = format!("zebra{}", &aragora_testkit::random_hex()[..8]);
        let src = Source::new(&format!(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
             balance INT NOT NULL); \
             INSERT INTO accounts VALUES (1, '{word} one', 1), (2, '{word} two', 2), \
             (3, '{word} three', 3)"
        ));
        let s = start_server(backend, "1").await;
        let t = s.admin_token.clone();
        let create = |name: &str| {
            json!({"name": name, "type": "mysql",
                "config": {"host": src.host, "port": src.port, "database": src.name,
                    "tables": ["accounts"], "heartbeat_seconds": 1.0, "snapshot": "initial"},
                "credentials": {"username": src.user, "password_env": "MYSQL_CDC_PASSWORD"},
                "handlers": ["knowledge_mound"]})
        };
        let mut ids = Vec::new();
        for name in ["gone", "kept"] {
            let (status, c) = s.post("/api/v1/connectors", &t, &create(name)).await;
            assert_eq!(status, 201, "{c}");
            ids.push(c["id"].as_str().unwrap().to_string());
        }
        let (gone, kept) = (ids[0].clone(), ids[1].clone());
        let search = || async {
            let (status, body) = s
                .get(
                    &format!("/api/v1/knowledge/search?q={word}&source_type=cdc&limit=50"),
                    &t,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["source_key"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let of = |keys: &[String], id: &str| {
            keys.iter()
                .filter(|k| k.starts_with(&format!("{id}/")))
                .count()
        };
        let indexed = eventually(Duration::from_secs(60), || async {
            let keys = search().await;
            (of(&keys, &gone) == 3 && of(&keys, &kept) == 3).then_some(())
        })
        .await;
        assert!(indexed.is_some(), "both connectors indexed the rows");

        let (status, _) = s
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/connectors/{gone}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let removed = eventually(Duration::from_secs(30), || async {
            let keys = search().await;
            (of(&keys, &gone) == 0).then_some(keys)
        })
        .await;
        let keys = removed.expect("the deleted connector's items leave the search");
        assert_eq!(
            of(&keys, &kept),
            3,
            "the other connector's items stay: {keys:?}"
        );
        assert!(mound(&s.db.url, &gone, "accounts", "id").await.is_empty());
        assert_eq!(mound(&s.db.url, &kept, "accounts", "id").await.len(), 3);
        delete_then_drop(&s, &t, &[&kept], src).await;
    }
);
