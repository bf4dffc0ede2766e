//! Server-managed SQL Server and Snowflake connectors through the real binary: the API accepts
//! both types (no "not available in this build"), validates their config naming the field, fills
//! defaults, never echoes secrets, and reports an unreachable source in health. No SQL Server or
//! Snowflake runs here: capture itself is tested in crates/cdc/tests/{sqlserver,snowflake}.rs.

use aragora_testkit::{Server, ServerOptions, both_backends};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_aragora");
const KEY: &str = include_str!("../../cdc/tests/data/snowflake_test_key.p8");

fn env() -> ServerOptions {
    ServerOptions {
        args: vec![],
        env: vec![
            ("MSSQL_TEST_PASSWORD".into(), "secret-not-echoed".into()),
            ("SNOWFLAKE_TEST_KEY".into(), KEY.into()),
        ],
    }
}

both_backends!(
    sqlserver_and_snowflake_connectors_are_managed,
    |backend| async move {
        let s = Server::start_with(BIN, backend, env()).await;
        let t = s.admin_token.clone();

        let mssql = json!({"name": "myapp-mssql", "type": "sqlserver",
        "config": {"host": "127.0.0.1", "port": 1, "database": "myapp",
                   "tables": ["users", "orders"], "use_cdc": true, "poll_interval_seconds": 5},
        "credentials": {"username": "sa", "password_env": "MSSQL_TEST_PASSWORD"},
        "start": false});
        let (status, created) = s.post("/api/v1/connectors", &t, &mssql).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["config"]["schema"], "dbo", "defaults filled in");
        assert_eq!(created["config"]["encrypt"], true);
        assert!(!created.to_string().contains("secret-not-echoed"));
        let id = created["id"].as_str().unwrap().to_string();
        let (status, health) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["healthy"], false, "{health}");
        assert_eq!(health["details"]["mode"], "cdc", "{health}");
        assert!(
            health["details"]["source_unreachable"]
                .as_str()
                .is_some_and(|m| m.contains("127.0.0.1:1")),
            "{health}"
        );

        let mut bad = mssql.clone();
        bad["name"] = json!("bad");
        bad["config"]["use_change_tracking"] = json!(true);
        let (status, resp) = s.post("/api/v1/connectors", &t, &bad).await;
        assert_eq!(status, 422, "{resp}");
        assert_eq!(
            resp["error"]["details"]["field"],
            "config.use_change_tracking"
        );
        bad["config"] = json!({"host": "h", "database": "d", "tables": ["no;pe"]});
        let (status, resp) = s.post("/api/v1/connectors", &t, &bad).await;
        assert_eq!(status, 422, "{resp}");
        assert_eq!(resp["error"]["details"]["field"], "config.tables[0]");

        // A Snowflake that refuses the key at once (one that does not answer at all is given up
        // after the health probe's timeout, without the details below).
        let refusing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", refusing.local_addr().unwrap());
        let app = axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                axum::Json(json!({"code": "390144", "message": "JWT token is invalid."})),
            )
        });
        tokio::spawn(async move { axum::serve(refusing, app).await });
        let sf = json!({"name": "warehouse", "type": "snowflake",
        "config": {"account": "testacct", "base_url": base_url, "database": "app",
                   "tables": ["users"], "primary_keys": {"users": ["id"]},
                   "mode": "stream", "snapshot": true},
        "credentials": {"username": "cdc_user", "password_env": "SNOWFLAKE_TEST_KEY"},
        "start": false});
        let (status, created) = s.post("/api/v1/connectors", &t, &sf).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["config"]["schema"], "PUBLIC");
        assert_eq!(created["config"]["mode"], "stream");
        assert_eq!(created["config"]["snapshot"], true);
        assert!(!created.to_string().contains("PRIVATE KEY"));
        let id = created["id"].as_str().unwrap().to_string();
        let (status, health) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["healthy"], false);
        assert!(
            health["details"]["source_unreachable"]
                .as_str()
                .is_some_and(|m| m.contains("JWT token is invalid")),
            "{health}"
        );
        assert_eq!(health["details"]["mode"], "stream", "{health}");
        assert!(
            health["details"]["key_fingerprint"]
                .as_str()
                .is_some_and(|f| f.starts_with("SHA256:")),
            "{health}"
        );
        let mut bad = sf.clone();
        bad["name"] = json!("bad-sf");
        bad["config"]["account"] = json!("has space");
        let (status, resp) = s.post("/api/v1/connectors", &t, &bad).await;
        assert_eq!(status, 422, "{resp}");
        assert_eq!(resp["error"]["details"]["field"], "config.account");
        bad["config"]["account"] = json!("testacct");
        bad["config"]["mode"] = json!("cdc");
        let (status, resp) = s.post("/api/v1/connectors", &t, &bad).await;
        assert_eq!(status, 422, "{resp}");
        assert_eq!(resp["error"]["details"]["field"], "config.mode");
    }
);
