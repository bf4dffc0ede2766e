//! Bad input through the real binary: oversized bodies, deep JSON nesting, invalid UTF-8, NUL
//! characters, huge query strings and headers. Each gets a clear 4xx (the one error shape where
//! the application answers), never a 5xx, and the server keeps serving — on SQLite and PostgreSQL.

use aragora_testkit::{Server, both_backends};
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

/// A client that never reuses a connection: the server may close one after refusing a request
/// mid-body (413), and a pooled request racing that close would fail on the client side.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// Sends raw bytes as a JSON body and returns status and parsed body.
async fn raw_post(s: &Server, path: &str, token: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = fresh_client()
        .post(s.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn raw_get(s: &Server, path_and_query: &str, token: &str) -> (u16, Value) {
    let resp = fresh_client()
        .get(format!("{}{path_and_query}", s.base_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Sends one raw HTTP/1.1 request line (any length: no client-side URI limit) and returns the
/// response status.
async fn raw_status(s: &Server, target: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base_url.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // The server may answer and close before reading everything; a write error is fine then.
    let _ = sock.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf).await;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).to_string();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn field(body: &Value) -> &str {
    body["error"]["details"]["field"].as_str().unwrap_or("")
}

/// The server still answers, and a normal write and read work.
async fn still_serving(s: &Server, token: &str, round: usize) {
    let (status, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200, "healthz after bad input");
    let (status, item) = s
        .post(
            "/api/v1/knowledge/items",
            token,
            &json!({"content": format!("still serving after round {round}")}),
        )
        .await;
    assert_eq!(status, 201, "{item}");
    let id = item["id"].as_str().unwrap();
    let (status, got) = s.get(&format!("/api/v1/knowledge/items/{id}"), token).await;
    assert_eq!(status, 200, "{got}");
}

both_backends!(
    bad_input_gets_a_clear_4xx_and_leaves_the_server_unharmed,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let token = s.token("fuzz", "default", "member").await;
        let admin = s.admin_token.clone();

        // Oversized body (the default limit is 1 MiB): 413 with the error shape.
        let mut big = b"{\"content\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
        big.extend(b"\"}");
        let (status, body) = raw_post(&s, "/api/v1/knowledge/items", &token, big).await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(code(&body), "payload_too_large");
        still_serving(&s, &token, 1).await;

        // Deep nesting, inside a free-form field and as the whole document: serde's recursion limit
        // answers 400 (malformed) or 422 (wrong type) and no stack overflows.
        let depth = 100_000;
        let mut deep = b"{\"content\":\"x\",\"metadata\":".to_vec();
        deep.extend(std::iter::repeat_n(b"{\"a\":".as_slice(), depth).flatten());
        deep.push(b'1');
        deep.extend(std::iter::repeat_n(b'}', depth + 1));
        let (status, body) = raw_post(&s, "/api/v1/knowledge/items", &token, deep).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(code(&body), "malformed_json");
        let mut arrays = vec![b'['; depth];
        arrays.extend(vec![b']'; depth]);
        let (status, body) = raw_post(&s, "/api/v1/debates/import", &token, arrays).await;
        assert!(matches!(status, 400 | 422), "{status} {body}");
        still_serving(&s, &token, 2).await;

        // Invalid UTF-8: in a JSON string (400), in a path segment (400), in a query value (4xx).
        let (status, body) = raw_post(
            &s,
            "/api/v1/knowledge/items",
            &token,
            b"{\"content\":\"\xff\xfe\"}".to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(code(&body), "malformed_json");
        let (status, body) = raw_get(&s, "/api/v1/debates/%ff%fe", &token).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(code(&body), "bad_request");
        let (status, body) = raw_get(&s, "/api/v1/debates?status=%ff%fe", &token).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(field(&body), "status");
        still_serving(&s, &token, 3).await;

        // U+0000, which PostgreSQL cannot store in text: refused on both backends, naming the field.
        let (status, body) = s
            .post(
                "/api/v1/knowledge/items",
                &token,
                &json!({"content": "a\u{0}b"}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(field(&body), "content");
        let (status, body) = s
            .post(
                "/api/v1/knowledge/items",
                &token,
                &json!({"content": "ok", "metadata": {"k": ["v\u{0}"]}}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(field(&body), "metadata.k[0]");
        let (status, body) = s
            .post(
                "/api/v1/tokens",
                &admin,
                &json!({"name": "n\u{0}", "role": "viewer"}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(field(&body), "name");
        // An escaped backslash before `u0000` is ordinary text, not a NUL.
        let (status, body) = raw_post(
            &s,
            "/api/v1/knowledge/items",
            &token,
            br#"{"content":"a\\u0000b"}"#.to_vec(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["content"], "a\\u0000b");
        let (status, body) = raw_get(&s, "/api/v1/debates/a%00b", &token).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = raw_get(&s, "/api/v1/events?after=%00", &token).await;
        assert!((400..500).contains(&status), "{status} {body}");
        still_serving(&s, &token, 4).await;

        // Huge query strings: hyper refuses them before any handler (414 / 431); a long but
        // acceptable one reaches the handler and gets its 422.
        for size in [100_000usize, 1_000_000] {
            let q = "a".repeat(size);
            let status = raw_status(&s, &format!("/api/v1/knowledge/search?q={q}")).await;
            assert!(matches!(status, 414 | 431), "{size}-byte query: {status}");
        }
        let many = (0..20_000)
            .map(|i| format!("p{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        let status = raw_status(&s, &format!("/api/v1/debates?{many}")).await;
        assert!(matches!(status, 414 | 431), "20,000 parameters: {status}");
        let q = "word ".repeat(1_000);
        let (status, body) = raw_get(&s, &format!("/api/v1/knowledge/search?q={q}"), &token).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(field(&body), "q");
        still_serving(&s, &token, 5).await;

        // A huge header is refused or ignored, never a 5xx.
        let resp = fresh_client()
            .get(s.url("/api/v1/debates"))
            .bearer_auth(&token)
            .header("x-padding", "a".repeat(200_000))
            .send()
            .await;
        if let Ok(r) = resp {
            assert!(r.status().as_u16() < 500, "huge header: {}", r.status());
        }
        still_serving(&s, &token, 6).await;

        // Wrong content type and malformed JSON.
        let resp = s
            .http()
            .post(s.url("/api/v1/knowledge/items"))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body("{\"content\":\"x\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 415);
        let (status, body) = raw_post(
            &s,
            "/api/v1/knowledge/items",
            &token,
            b"{\"content\":".to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{body}");

        // No request above was answered with a 5xx.
        let metrics = s
            .http()
            .get(s.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let fives: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("aragora_http_requests_total") && l.contains("status=\"5"))
            .collect();
        assert!(fives.is_empty(), "5xx answered: {fives:?}");
    }
);
