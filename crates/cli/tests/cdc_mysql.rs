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

both_backends!(
    mysql_connector_streams_and_resumes_after_sigkill,
    |backend| async move {
        // 120 rows exist before the connector does: the initial snapshot delivers them.
        let src = Source::new(
            "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
             balance INT NOT NULL); \
             INSERT INTO accounts SELECT seq, CONCAT('owner ', seq), 100 FROM seq_1_to_120",
        );
        let mut s = Server::start_with(
            BIN,
            backend,
            ServerOptions {
                args: vec![],
                env: vec![
                    ("MYSQL_CDC_PASSWORD".into(), "cdc-secret".into()),
                    ("ARAGORA_CDC_LEASE_SECS".into(), "2".into()),
                ],
            },
        )
        .await;
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
