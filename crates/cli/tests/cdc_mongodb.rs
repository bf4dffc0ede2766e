//! A server-managed MongoDB connector through the real binary, against the secantusdb emulator
//! (`scripts/test-services`): API validation for `type: "mongodb"`, SCRAM credentials from the
//! server's environment, snapshot then change stream into `cdc.change` events and the knowledge
//! mound, a SIGKILL mid-stream with replay, stop/start without loss, health details. Aragora's own
//! database runs on SQLite and PostgreSQL.

use aragora_cdc::mongodb::driver as mongodb;

use aragora_testkit::{Server, ServerOptions, both_backends, eventually};
use mongodb::bson::{Bson, Document, doc};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

mod cluster;

use cluster::{cdc_events, check_replays, mound, replay, resume_position};

const BIN: &str = env!("CARGO_BIN_EXE_aragora");
const PASSWORD: &str = "emulator-only-secret";

fn unique() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

fn cdc_env() -> ServerOptions {
    ServerOptions {
        args: vec![],
        env: vec![
            ("CDC_MONGO_PASSWORD".into(), PASSWORD.into()),
            ("ARAGORA_CDC_LEASE_SECS".into(), "2".into()),
        ],
    }
}

/// The collection as `_id` → document JSON.
async fn contents(coll: &mongodb::Collection<Document>) -> BTreeMap<i64, Value> {
    use futures::TryStreamExt;
    let docs: Vec<Document> = coll
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    docs.into_iter()
        .map(|d| {
            let id = match d.get("_id") {
                Some(Bson::Int32(i)) => *i as i64,
                Some(Bson::Int64(i)) => *i,
                other => panic!("unexpected _id {other:?}"),
            };
            (id, Bson::Document(d).into_relaxed_extjson())
        })
        .collect()
}

both_backends!(mongodb_connector_through_the_api, |backend| async move {
    let url = aragora_testkit::mongo_test_url();
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    let dbname = format!("api_{}", unique());
    let user = format!("cdc_{}", unique());
    client
        .database("admin")
        .run_command(doc! { "createUser": &user, "pwd": PASSWORD,
        "roles": [{ "role": "read", "db": &dbname }] })
        .await
        .unwrap();
    let db = client.database(&dbname);
    db.run_command(
        doc! { "create": "accounts", "changeStreamPreAndPostImages": { "enabled": true } },
    )
    .await
    .unwrap();
    let accounts = db.collection::<Document>("accounts");
    let seed: Vec<Document> = (1..=200)
        .map(|i| doc! { "_id": i, "owner": format!("owner {i}"), "balance": 100 })
        .collect();
    accounts.insert_many(seed).await.unwrap();

    let mut s = Server::start_with(BIN, backend, cdc_env()).await;
    let t = s.admin_token.clone();
    let good = json!({"name": "accounts", "type": "mongodb",
        "config": {"uri": url, "database": dbname, "collections": ["accounts"],
            "max_await_ms": 200, "batch_size": 50, "checkpoint_interval_ms": 500},
        "credentials": {"username": user, "password_env": "CDC_MONGO_PASSWORD"},
        "handlers": ["knowledge_mound", "webhook"]});

    // Validation names the field; the type is available in this build.
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b["config"][k] = v;
        b
    };
    for (body, field) in [
        (with("uri", json!("mongodb://u:pw@db/")), "config.uri"),
        (
            with("collections", json!(["ok", "$bad"])),
            "config.collections[1]",
        ),
        (with("database", json!("no/slash")), "config.database"),
        (
            with("full_document", json!("always")),
            "config.full_document",
        ),
        (with("colour", json!("blue")), "config.colour"),
    ] {
        let (status, resp) = s.post("/api/v1/connectors", &t, &body).await;
        assert_eq!(status, 422, "{body} → {resp}");
        assert_eq!(resp["error"]["details"]["field"], field, "{resp}");
        assert!(!resp.to_string().contains("not available"), "{resp}");
    }

    let (status, created) = s.post("/api/v1/connectors", &t, &good).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["config"]["full_document"], "updateLookup");
    assert_eq!(created["config"]["snapshot"], "initial");

    // The snapshot, then changes.
    let snap = eventually(Duration::from_secs(60), || async {
        (cdc_events(&s.db.url).await.len() >= 200).then_some(())
    })
    .await;
    assert!(snap.is_some(), "snapshot of 200 documents delivered");
    accounts
        .update_one(doc! { "_id": 1 }, doc! { "$inc": { "balance": 5 } })
        .await
        .unwrap();
    let upd = eventually(Duration::from_secs(30), || async {
        cdc_events(&s.db.url)
            .await
            .into_iter()
            .find(|e| e["operation"] == "UPDATE")
    })
    .await
    .expect("update delivered");
    assert_eq!(upd["source_type"], "mongodb");
    assert_eq!(upd["table"], "accounts");
    assert_eq!(upd["database"], dbname.as_str());
    assert_eq!(upd["primary_key"], json!({"_id": 1}));
    assert_eq!(upd["data"]["balance"], 105);
    assert_eq!(upd["old_data"]["balance"], 100, "pre-image as old_data");

    // Writes keep coming while the server is killed and restarted.
    let writer_coll = accounts.clone();
    let writer = tokio::spawn(async move {
        for i in 0..150i32 {
            writer_coll
                .update_one(
                    doc! { "_id": 1 + (i * 3) % 200 },
                    doc! { "$inc": { "balance": 1 } },
                )
                .await
                .unwrap();
            writer_coll
                .delete_one(doc! { "_id": 2 + (i * 5) % 200 })
                .await
                .unwrap();
            writer_coll
                .insert_one(doc! { "_id": 5000 + i, "owner": "new", "balance": 1 })
                .await
                .unwrap();
        }
    });
    let mid = eventually(Duration::from_secs(60), || async {
        (cdc_events(&s.db.url).await.len() >= 260).then_some(())
    })
    .await;
    assert!(mid.is_some(), "streaming started");
    s.kill().await;
    s.restart().await;
    writer.await.unwrap();

    let expected = contents(&accounts).await;
    let converged = eventually(Duration::from_secs(90), || async {
        (replay(&cdc_events(&s.db.url).await, "_id") == expected).then_some(())
    })
    .await;
    let events = cdc_events(&s.db.url).await;
    assert!(
        converged.is_some(),
        "after the crash the events reproduce the collection exactly ({} events)",
        events.len()
    );
    let mound_ok = eventually(Duration::from_secs(60), || async {
        (mound(&s.db.url, &id, "accounts", "_id").await == expected).then_some(())
    })
    .await;
    assert!(
        mound_ok.is_some(),
        "the knowledge mound equals the collection"
    );

    // Same resume token → same id; same id → same change.
    let duplicates = check_replays(&events, resume_position, |e, change| {
        // A snapshot taken again (the SIGKILL may come before its end was checkpointed)
        // copies the documents as they are then; updateLookup reads the current document,
        // so a replayed update may carry a newer one. Everything else is identical.
        if e["resume_token"] == "snapshot" {
            change.remove("timestamp");
            change.remove("data");
        }
        if e["operation"] == "UPDATE" {
            change.remove("data");
        }
    });
    eprintln!(
        "{} events, {duplicates} replayed after the SIGKILL",
        events.len()
    );

    // Health (the running node reports its status periodically) and recent events.
    let health = eventually(Duration::from_secs(30), || async {
        let (status, h) = s.get(&format!("/api/v1/connectors/{id}/health"), &t).await;
        assert_eq!(status, 200);
        (h["details"]["phase"] == "streaming" && h["details"]["resume_token"].is_string())
            .then_some(h)
    })
    .await
    .expect("the running node reports a streaming connector");
    assert_eq!(health["healthy"], true, "{health}");
    assert!(
        health["details"]["stream_position"]["cluster_time"].is_object(),
        "{health}"
    );
    assert_eq!(health["details"]["notices"], json!([]));
    assert_eq!(health["details"]["running"], true);
    assert_eq!(health["details"]["topology"], "replica_set");
    assert_eq!(health["details"]["history_lost"], false);
    assert!(health["details"]["resume_token"].is_string(), "{health}");
    assert!(health["latency_ms"].is_number());
    let (status, recent) = s
        .get(&format!("/api/v1/connectors/{id}/events?limit=5"), &t)
        .await;
    assert_eq!(status, 200);
    assert_eq!(recent["items"].as_array().unwrap().len(), 5);

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
    accounts
        .insert_one(doc! { "_id": 99_999, "owner": "while stopped", "balance": 5 })
        .await
        .unwrap();
    let (status, _) = s
        .post(&format!("/api/v1/connectors/{id}/start"), &t, &json!({}))
        .await;
    assert_eq!(status, 200);
    let expected = contents(&accounts).await;
    let caught_up = eventually(Duration::from_secs(60), || async {
        (replay(&cdc_events(&s.db.url).await, "_id") == expected).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "nothing is lost while the connector is stopped"
    );

    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/api/v1/connectors/{id}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 204);
    drop(s);
    db.drop().await.unwrap();
});
