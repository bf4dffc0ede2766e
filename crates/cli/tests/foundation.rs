//! The foundation through the real binary over HTTP: zero-config start, auth and RBAC on every
//! route, the error shape, tokens, workers status and migrations — on SQLite and PostgreSQL.

use aragora_testkit::{Backend, Server, both_backends};
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "error body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

both_backends!(
    every_route_requires_a_token_except_the_public_ones,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let (status, doc) = s.call(Method::GET, "/openapi.json", None, None).await;
        assert_eq!(status, 200);
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() >= 6, "the document lists the routes");
        let viewer = s.token("walker", "default", "viewer").await;
        let mut walked = 0;
        for (path, item) in paths {
            let concrete = path
                .split('/')
                .map(|seg| {
                    if seg.starts_with('{') {
                        "x-missing"
                    } else {
                        seg
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            for method in item.as_object().unwrap().keys() {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let body =
                    matches!(m, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
                let (status, resp) = s.call(m.clone(), &concrete, None, body.as_ref()).await;
                if aragora_server::PUBLIC_PATHS.contains(&path.as_str()) {
                    assert!(
                        status < 400,
                        "{method} {path} is public but answered {status}"
                    );
                    continue;
                }
                walked += 1;
                assert_eq!(
                    status, 401,
                    "{method} {path} without a token answered {status}: {resp}"
                );
                assert_error_shape(&resp, "unauthorized");
                // A garbage token is no better than none; X-API-Key is checked the same way.
                let resp = s
                    .http()
                    .request(m.clone(), s.url(&concrete))
                    .header("X-API-Key", "ara_nope")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 401, "{method} {path} with a bad key");
                // Admin-only routes refuse a viewer with 403.
                let security = &item[method.as_str()]["security"];
                let _ = security;
                if path.starts_with("/api/v1/tokens") || path.starts_with("/api/workers") {
                    let (status, resp) = s.call(m, &concrete, Some(&viewer), body.as_ref()).await;
                    assert_eq!(status, 403, "{method} {path} as viewer: {resp}");
                    assert_error_shape(&resp, "forbidden");
                }
            }
        }
        assert!(walked >= 4, "walked {walked} protected operations");
    }
);

both_backends!(
    zero_config_start_writes_a_private_admin_token,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let path = s.data_dir.join("admin-token");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(s.admin_token.starts_with("ara_"));
        let (status, body) = s.call(Method::GET, "/healthz", None, None).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
        let (status, body) = s.call(Method::GET, "/readyz", None, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["migrations"], "current");
        let (status, body) = s.get("/api/workers/status", &s.admin_token).await;
        assert_eq!(status, 200);
        // Idle queues are listed with zeros, not left out.
        let queues: Vec<&str> = body["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["queue"].as_str().unwrap())
            .collect();
        assert_eq!(
            queues,
            ["debates", "explainability_batch", "webhooks"],
            "{body}"
        );
        assert_eq!(body["queues"][1]["ready"], 0);
    }
);

both_backends!(
    errors_use_one_shape_and_name_the_field,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let t = s.admin_token.clone();
        let (status, body) = s.get("/api/nowhere", &t).await;
        assert_eq!(status, 404);
        assert_error_shape(&body, "not_found");

        let resp = s
            .http()
            .post(s.url("/api/v1/tokens"))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body("{\"name\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        assert_error_shape(&resp.json().await.unwrap(), "malformed_json");

        let (status, body) = s
            .post("/api/v1/tokens", &t, &json!({"name": 42, "role": "viewer"}))
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["details"]["field"], "name");

        let (status, body) = s
            .post(
                "/api/v1/tokens",
                &t,
                &json!({"name": "x", "role": "emperor"}),
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(body["error"]["details"]["field"], "role");

        let (status, body) = s
            .post(
                "/api/v1/tokens",
                &t,
                &json!({"name": "x", "permissions": ["admin", "fly:high"]}),
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(body["error"]["details"]["field"], "permissions[1]");

        // Like curl with a large body: announce it and wait for `100 Continue`; the server refuses
        // from the Content-Length alone.
        let (status, body) = oversized_post(&s, "/api/v1/tokens", &t, 2 * 1024 * 1024).await;
        assert_eq!(status, 413, "{body}");
        assert_error_shape(&body, "payload_too_large");

        let (status, body) = s
            .call(Method::PATCH, "/api/v1/tokens", Some(&t), Some(&json!({})))
            .await;
        assert_eq!(status, 405);
        assert_error_shape(&body, "method_not_allowed");
    }
);

both_backends!(
    tokens_are_created_scoped_and_revoked,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let (status, created) = s
            .post(
                "/api/v1/tokens",
                &s.admin_token,
                &json!({"name": "ci", "workspace": "team-a", "role": "member"}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let token = created["token"].as_str().unwrap().to_string();
        let id = created["id"].as_str().unwrap().to_string();
        assert_eq!(created["workspace"], "team-a");
        assert!(
            created["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "webhooks:write")
        );

        let (status, list) = s.get("/api/v1/tokens", &s.admin_token).await;
        assert_eq!(status, 200);
        let listed = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id.as_str())
            .expect("listed");
        assert!(listed.get("token").is_none(), "secrets are never listed");

        // A member is not an admin.
        let (status, _) = s.get("/api/workers/status", &token).await;
        assert_eq!(status, 403);

        // DELETE takes an id: a token's name is not one (it revoked every token so named).
        let (status, _) = s
            .call(
                Method::DELETE,
                "/api/v1/tokens/ci",
                Some(&s.admin_token),
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = s.get("/api/v1/debates", &token).await;
        assert_eq!(status, 200, "still live");
        let (status, body) = s
            .post(
                "/api/v1/tokens",
                &s.admin_token,
                &json!({"name": "x", "role": "viewer", "user": " "}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["details"]["field"], "user", "{body}");

        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/tokens/{id}"),
                Some(&s.admin_token),
                None,
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = s.get("/api/workers/status", &token).await;
        assert_eq!(
            status, 401,
            "a revoked token is refused at once on this node"
        );
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/tokens/{id}"),
                Some(&s.admin_token),
                None,
            )
            .await;
        assert_eq!(status, 404);
    }
);

both_backends!(
    migrate_status_lists_the_guide_migration,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let out = tokio::process::Command::new(BIN)
            .args(["migrate", "--status", "--data-dir"])
            .arg(&s.data_dir)
            .env("DATABASE_URL", &s.db.url)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.ends_with(" v20260120100000_marketplace_webhooks_batch"))
            .expect(&text);
        assert!(line.starts_with("applied"), "{line}");
        assert!(!text.contains("pending"), "{text}");
    }
);

both_backends!(graceful_shutdown_exits_cleanly, |backend| async move {
    let mut s = Server::start(BIN, backend).await;
    assert_eq!(s.terminate().await, Some(0));
    s.restart().await;
    let (status, _) = s.get("/api/workers/status", &s.admin_token).await;
    assert_eq!(
        status, 200,
        "restarts on the same database with the same admin token"
    );
});

#[tokio::test]
async fn cli_token_commands_work_without_a_server() {
    let dir = tempfile_dir();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&["token", "create", "--name", "bot", "--role", "viewer"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .starts_with("ara_")
    );
    let out = run(&["token", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("bot"));
    let out = run(&["token", "create", "--name", "bad", "--role", "wizard"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    let out = run(&["token", "revoke", "bot"]);
    assert!(out.status.success());
    let out = run(&["token", "revoke", "bot"]);
    assert!(!out.status.success(), "revoking twice fails clearly");
    let _ = Backend::Sqlite;
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("aragora-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn oversized_post(s: &Server, path: &str, token: &str, len: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base_url.trim_start_matches("http://").to_string();
    let conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    // Write the body concurrently and ignore write errors: the server may answer and close early.
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..len / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout(std::time::Duration::from_secs(10), rd.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    writer.abort();
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `--workers` / `--worker-id` mistakes stop the process at start with the flag named.
#[test]
fn worker_selection_flags_are_checked() {
    let data = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            vec!["--workers", "mailer"],
            "--workers: `mailer` is not one of",
        ),
        (vec!["--worker-id", "w-1"], "--worker-id names one worker"),
        (
            vec!["--workers", "debates,cdc", "--worker-id", "w-1"],
            "--worker-id names one worker",
        ),
        (
            vec!["--workers", "cdc", "--worker-id", "w-1"],
            "--worker-id names one worker",
        ),
        (
            vec!["--workers", "debates", "--worker-id", "bad id"],
            "--worker-id: `bad id` must be",
        ),
    ] {
        let out = std::process::Command::new(BIN)
            .arg("worker")
            .args(&args)
            .arg("--data-dir")
            .arg(data.path())
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
