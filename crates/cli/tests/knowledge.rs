//! The Knowledge Mound through the real binary over HTTP, on SQLite and PostgreSQL: manual
//! ingest (idempotent by source key), deletion by source or id, validation, ranking and snippets,
//! paging, permissions and workspace scoping.

use aragora_testkit::{Server, both_backends};
use reqwest::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

async fn search(s: &Server, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = s
        .get(&format!("/api/v1/knowledge/search?{query}"), token)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["total"].as_u64().unwrap() as usize,
        body["items"].as_array().unwrap().len()
    );
    body["items"].as_array().unwrap().clone()
}

both_backends!(ingest_is_idempotent_by_source_key, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let member = s.token("m", "default", "member").await;
    let body = json!({"source_type": "runbook", "source_key": "rb-7", "content": "Rotate the signing keys every ninety days.", "metadata": {"team": "sec"}, "confidence": 0.8});
    let (status, first) = s.post("/api/v1/knowledge/items", &member, &body).await;
    assert_eq!(status, 201, "{first}");
    assert!(first["id"].as_str().unwrap().starts_with("km-"));
    assert_eq!(first["workspace"], "default");
    assert_eq!(first["metadata"], json!({"team": "sec"}));
    let updated = json!({"source_type": "runbook", "source_key": "rb-7", "content": "Rotate the signing keys every thirty days.", "confidence": 0.9});
    for _ in 0..3 {
        let (status, again) = s.post("/api/v1/knowledge/items", &member, &updated).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["id"], first["id"], "same source key, same item");
        assert_eq!(again["created_at"], first["created_at"]);
    }
    assert!(
        search(&s, &member, "q=ninety").await.is_empty(),
        "old content is unindexed"
    );
    let hits = search(&s, &member, "q=signing%20keys").await;
    assert_eq!(hits.len(), 1, "never duplicated: {hits:?}");
    assert_eq!(
        hits[0]["content"],
        "Rotate the signing keys every thirty days."
    );
    assert_eq!(hits[0]["confidence"], 0.9);
    let (status, item) = s
        .get(
            &format!("/api/v1/knowledge/items/{}", first["id"].as_str().unwrap()),
            &member,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(item["source_key"], "rb-7");

    // Without a source key every ingest is a new item; the default source type is manual.
    for _ in 0..2 {
        let (status, it) = s
            .post(
                "/api/v1/knowledge/items",
                &member,
                &json!({"content": "signing ceremony notes"}),
            )
            .await;
        assert_eq!(status, 201);
        assert_eq!(it["source_type"], "manual");
    }
    assert_eq!(
        search(&s, &member, "q=signing&source_type=manual")
            .await
            .len(),
        2
    );
    assert_eq!(search(&s, &member, "q=signing").await.len(), 3);
    assert_eq!(search(&s, &member, "q=signing&limit=1").await.len(), 1);
});

both_backends!(knowledge_requests_are_validated, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let member = s.token("m", "default", "member").await;
    let viewer = s.token("v", "default", "viewer").await;
    for (body, field) in [
        (json!({"content": "  "}), "content"),
        (json!({}), "content"),
        (json!({"content": "x", "confidence": 1.5}), "confidence"),
        (json!({"content": "x", "metadata": [1, 2]}), "metadata"),
        (
            json!({"content": "x", "source_type": "Bad Type"}),
            "source_type",
        ),
        (
            json!({"content": "x", "source_type": "debate"}),
            "source_type",
        ),
        (json!({"content": "x", "source_type": "cdc"}), "source_type"),
        (json!({"content": "x", "source_key": ""}), "source_key"),
    ] {
        let (status, resp) = s.post("/api/v1/knowledge/items", &member, &body).await;
        assert_eq!(status, 422, "{body} → {resp}");
        assert_eq!(resp["error"]["details"]["field"], field, "{body} → {resp}");
    }
    for (query, field) in [
        ("", "q"),
        ("q=", "q"),
        ("q=%22%2A%22", "q"),
        ("q=x&source_type=NO", "source_type"),
        ("q=x&limit=-1", "limit"),
    ] {
        let (status, resp) = s
            .get(&format!("/api/v1/knowledge/search?{query}"), &member)
            .await;
        assert_eq!(status, 422, "{query} → {resp}");
        assert_eq!(resp["error"]["details"]["field"], field, "{query} → {resp}");
    }
    let (status, _) = s
        .post("/api/v1/knowledge/items", &viewer, &json!({"content": "x"}))
        .await;
    assert_eq!(status, 403, "ingest needs knowledge:write");
    assert!(
        search(&s, &viewer, "q=x").await.is_empty(),
        "a viewer may search"
    );
    let (status, _) = s
        .call(Method::GET, "/api/v1/knowledge/search?q=x", None, None)
        .await;
    assert_eq!(status, 401);
    let (status, resp) = s.get("/api/v1/knowledge/items/km-missing", &viewer).await;
    assert_eq!(
        (status, resp["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
});

both_backends!(
    exact_phrase_ranks_above_a_passing_mention,
    |backend| async move {
        let s = Server::start(BIN, backend).await;
        let member = s.token("m", "default", "member").await;
        let other = s.token("o", "elsewhere", "member").await;
        let filler = "Minutes of the weekly sync: hiring plans, budget review, office move, travel \
                  policy, onboarding checklist, and the holiday calendar were discussed at length. ";
        let docs = [
            (
                "mention",
                "The exchange rate moved again; separately, we replaced the torque limiter on the press.",
            ),
            (
                "phrase",
                "Put a token bucket rate limiter in front of the API; the rate limiter sheds bursts.",
            ),
            (
                "long",
                &*format!(
                    "{filler}{filler}Somebody asked whether we need a rate limiter. {filler}"
                ),
            ),
            ("noise", "Sourdough needs a mature starter."),
        ];
        for (key, content) in docs {
            let (status, _) = s
                .post(
                    "/api/v1/knowledge/items",
                    &member,
                    &json!({"source_key": key, "content": content}),
                )
                .await;
            assert_eq!(status, 201);
        }
        let (status, _) = s
            .post(
                "/api/v1/knowledge/items",
                &other,
                &json!({"source_key": "phrase", "content": docs[1].1}),
            )
            .await;
        assert_eq!(status, 201);

        let hits = search(&s, &member, "q=rate%20limiter").await;
        let keys: Vec<&str> = hits
            .iter()
            .map(|h| h["source_key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["phrase", "long", "mention"], "{hits:#?}");
        let exact: Vec<bool> = hits
            .iter()
            .map(|h| h["exact_phrase"].as_bool().unwrap())
            .collect();
        assert_eq!(exact, [true, true, false]);
        assert!(hits[0]["score"].as_f64().unwrap() > hits[1]["score"].as_f64().unwrap());
        for h in &hits {
            assert!(h["snippet"].as_str().unwrap().contains("<mark>"), "{h}");
            assert_eq!(h["workspace"], "default");
        }
        // Stemmed, case-insensitive, and what looks like query syntax is just words.
        assert_eq!(search(&s, &member, "q=LIMITERS").await.len(), 3);
        assert_eq!(
            search(&s, &member, "q=rate%22%20OR%20limiter%2A")
                .await
                .len(),
            3
        );
        assert_eq!(search(&s, &other, "q=rate%20limiter").await.len(), 1);
        let (status, resp) = s
            .get(
                &format!(
                    "/api/v1/knowledge/items/{}",
                    hits[0]["id"].as_str().unwrap()
                ),
                &other,
            )
            .await;
        assert_eq!(status, 404, "another workspace's item: {resp}");
    }
);

both_backends!(items_are_deleted_by_source_or_id, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let member = s.token("m", "default", "member").await;
    let other = s.token("o", "elsewhere", "member").await;
    let viewer = s.token("v", "default", "viewer").await;
    let delete = |path: String, token: String| {
        let s = &s;
        async move { s.call(Method::DELETE, &path, Some(&token), None).await }
    };
    let ingest = |key: &str| json!({"source_type": "cdc-client", "source_key": key, "content": format!("Quarterly capacity plan {key}")});
    for key in ["orders/1", "orders/2"] {
        let (status, item) = s
            .post("/api/v1/knowledge/items", &member, &ingest(key))
            .await;
        assert_eq!(status, 201, "{item}");
    }
    // The same source in another workspace is a different item.
    let (status, theirs) = s
        .post("/api/v1/knowledge/items", &other, &ingest("orders/1"))
        .await;
    assert_eq!(status, 201, "{theirs}");

    let by_source = "/api/v1/knowledge/items?source_type=cdc-client&source_key=orders%2F1";
    let (status, resp) = delete(by_source.into(), viewer.clone()).await;
    assert_eq!(status, 403, "deleting needs knowledge:write: {resp}");
    let (status, resp) = delete(by_source.into(), member.clone()).await;
    assert_eq!(status, 204, "{resp}");
    let (status, resp) = delete(by_source.into(), member.clone()).await;
    assert_eq!(
        (status, resp["error"]["code"].as_str()),
        (404, Some("not_found")),
        "already gone: {resp}"
    );
    let keys: Vec<Value> = search(&s, &member, "q=capacity")
        .await
        .iter()
        .map(|h| h["source_key"].clone())
        .collect();
    assert_eq!(keys, [json!("orders/2")], "unindexed too");
    assert_eq!(
        search(&s, &other, "q=capacity").await.len(),
        1,
        "the other workspace keeps its item"
    );
    let (status, _) = s
        .call(
            Method::GET,
            "/api/v1/knowledge/items?source_type=cdc-client&source_key=orders%2F1",
            Some(&member),
            None,
        )
        .await;
    assert_eq!(status, 405, "only DELETE on the collection by source");

    // By id: another workspace's item is not found, ours is deleted once.
    let theirs_path = format!("/api/v1/knowledge/items/{}", theirs["id"].as_str().unwrap());
    let (status, _) = delete(theirs_path.clone(), member.clone()).await;
    assert_eq!(status, 404, "another workspace's item");
    let (status, _) = delete(theirs_path.clone(), viewer.clone()).await;
    assert_eq!(status, 403);
    let (status, _) = delete(theirs_path.clone(), other.clone()).await;
    assert_eq!(status, 204);
    let (status, _) = delete(theirs_path.clone(), other.clone()).await;
    assert_eq!(status, 404);
    let (status, _) = s.get(&theirs_path, &other).await;
    assert_eq!(status, 404);
    assert!(search(&s, &other, "q=capacity").await.is_empty());
    let (status, _) = delete("/api/v1/knowledge/items/km-missing".into(), member.clone()).await;
    assert_eq!(status, 404);

    // Validation: both parameters required and non-empty; the system's source types are refused.
    for (query, field) in [
        ("", "source_type"),
        ("source_key=orders%2F2", "source_type"),
        ("source_type=&source_key=orders%2F2", "source_type"),
        ("source_type=cdc-client", "source_key"),
        ("source_type=cdc-client&source_key=", "source_key"),
        ("source_type=debate&source_key=x", "source_type"),
        ("source_type=cdc&source_key=x", "source_type"),
        ("source_type=Bad%20Type&source_key=x", "source_type"),
        ("source_type=cdc-client&source_key=a%0Ab", "source_key"),
    ] {
        let (status, resp) =
            delete(format!("/api/v1/knowledge/items?{query}"), member.clone()).await;
        assert_eq!(status, 422, "{query} → {resp}");
        assert_eq!(resp["error"]["details"]["field"], field, "{query} → {resp}");
    }
    assert_eq!(search(&s, &member, "q=capacity").await.len(), 1);
});

both_backends!(search_pages_with_a_cursor, |backend| async move {
    let s = Server::start(BIN, backend).await;
    let member = s.token("m", "default", "member").await;
    // Scores repeat (ties the order must break) and two tiers: the exact phrase "zephyr note"
    // only where no filler separates the words.
    for i in 0..25 {
        let filler = "filler ".repeat(i % 4);
        let content = format!("zephyr {filler}note {i}");
        let (status, resp) = s
            .post(
                "/api/v1/knowledge/items",
                &member,
                &json!({"source_key": format!("z-{i}"), "content": content}),
            )
            .await;
        assert_eq!(status, 201, "{resp}");
    }
    let page = |query: String| {
        let s = &s;
        let member = &member;
        async move {
            let (status, body) = s
                .get(&format!("/api/v1/knowledge/search?{query}"), member)
                .await;
            assert_eq!(status, 200, "{query} → {body}");
            let items = body["items"].as_array().unwrap().clone();
            assert_eq!(body["total"].as_u64().unwrap() as usize, items.len());
            let ids: Vec<String> = items
                .iter()
                .map(|h| h["id"].as_str().unwrap().to_string())
                .collect();
            (ids, body["next_cursor"].as_str().map(str::to_string))
        }
    };
    let (all, none) = page("q=zephyr%20note&limit=50".into()).await;
    assert_eq!(all.len(), 25);
    assert!(none.is_none(), "one page holds every hit");

    let mut paged: Vec<String> = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    let mut first_cursor = None;
    loop {
        let query = match &cursor {
            None => "q=zephyr%20note&limit=10".to_string(),
            Some(c) => format!("q=zephyr%20note&limit=10&cursor={c}"),
        };
        let (ids, next) = page(query).await;
        sizes.push(ids.len());
        paged.extend(ids);
        if first_cursor.is_none() {
            first_cursor = next.clone();
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(sizes.len() < 10, "paging must end");
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(paged, all, "pages follow the single-request order");
    let distinct: std::collections::HashSet<&String> = paged.iter().collect();
    assert_eq!(distinct.len(), 25, "no duplicates");

    // The limit may change between pages: the rest in one page.
    let first_cursor = first_cursor.unwrap();
    let (rest, next) = page(format!("q=zephyr%20note&limit=50&cursor={first_cursor}")).await;
    assert_eq!(rest, all[10..]);
    assert!(next.is_none());
    // An empty cursor is the first page.
    let (first, _) = page("q=zephyr%20note&limit=10&cursor=".into()).await;
    assert_eq!(first, all[..10]);

    // A cursor belongs to its search (q and source_type); anything else is not a cursor.
    for query in [
        format!("q=zephyr&limit=10&cursor={first_cursor}"),
        format!("q=zephyr%20note&source_type=manual&cursor={first_cursor}"),
        "q=zephyr%20note&cursor=garbage%21".to_string(),
        "q=zephyr%20note&cursor=AAAA".to_string(),
        "q=zephyr%20note&cursor=czEuMTIzLjQ".to_string(),
    ] {
        let (status, resp) = s
            .get(&format!("/api/v1/knowledge/search?{query}"), &member)
            .await;
        assert_eq!(status, 422, "{query} → {resp}");
        assert_eq!(
            resp["error"]["details"]["field"], "cursor",
            "{query} → {resp}"
        );
    }
});
