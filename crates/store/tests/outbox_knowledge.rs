//! Store-level proofs on SQLite and PostgreSQL: the outbox (an event exists exactly when its
//! transaction commits, and the feed never skips an event that commits late), the debate fence,
//! and the Knowledge Mound (idempotent upsert by source key, delete, ranking, snippets).

use aragora_core::debate::{Agent, ConsensusConfig, Debate, DebateStatus};
use aragora_store::debates::{self, Fence, RunFacts};
use aragora_store::events::{self, NewEvent};
use aragora_store::knowledge::{self, NewItem, SearchQuery};
use aragora_store::{Db, DbOptions, migrate};
use aragora_testkit::{Backend, both_backends, eventually, fresh_database};
use serde_json::json;
use std::time::Duration;

async fn open(backend: Backend) -> (aragora_testkit::TestDb, Db) {
    let t = fresh_database(backend).await;
    let db = Db::connect(&t.url, &DbOptions::default()).await.unwrap();
    migrate::run(&db).await.unwrap();
    (t, db)
}

fn event(ws: &str, n: u32) -> NewEvent {
    NewEvent {
        workspace: ws.into(),
        event_type: "debate.completed".into(),
        data: json!({"n": n}),
    }
}

async fn feed(db: &Db, ws: &str, after: Option<&str>) -> Vec<u64> {
    events::list(db, ws, None, after, 100)
        .await
        .unwrap()
        .expect("known cursor")
        .events
        .iter()
        .map(|e| e.data["n"].as_u64().unwrap())
        .collect()
}

/// The feed once it shows `n` events. On PostgreSQL the feed shows a transaction's events once
/// every older transaction of the cluster has finished (other tests run beside this one).
async fn feed_of(db: &Db, ws: &str, after: Option<&str>, n: usize) -> Vec<u64> {
    eventually(Duration::from_secs(10), || async {
        let got = feed(db, ws, after).await;
        (got.len() >= n).then_some(got)
    })
    .await
    .unwrap_or_else(|| panic!("the feed did not show {n} event(s)"))
}

both_backends!(
    an_event_exists_exactly_when_its_transaction_commits,
    |backend| async move {
        let (_t, db) = open(backend).await;
        // Rolled back: the change and its event vanish together.
        let mut tx = db.begin().await.unwrap();
        events::publish_in(&mut tx, db.dialect(), &event("ws", 1))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        // Dropped mid-way (an error path returning early): same.
        {
            let mut tx = db.begin().await.unwrap();
            events::publish_in(&mut tx, db.dialect(), &event("ws", 2))
                .await
                .unwrap();
        }
        assert!(feed(&db, "ws", None).await.is_empty());
        let mut tx = db.begin().await.unwrap();
        let e = events::publish_in(&mut tx, db.dialect(), &event("ws", 3))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(feed_of(&db, "ws", None, 1).await, [3]);
        assert!(e.event_id.starts_with("evt-"));
        // Workspace-scoped, and an unknown cursor is reported rather than read as "from the start".
        assert!(feed(&db, "other", None).await.is_empty());
        assert!(
            events::list(&db, "other", None, Some(&e.event_id), 10)
                .await
                .unwrap()
                .is_none()
        );
        assert!(feed(&db, "ws", Some(&e.event_id)).await.is_empty());
    }
);

both_backends!(
    the_feed_does_not_skip_an_event_that_commits_late,
    |backend| async move {
        let (_t, db) = open(backend).await;
        if backend == Backend::Sqlite {
            // One writer: transactions cannot interleave, so commit order is rowid order. Check
            // the feed follows it and type filtering works.
            for n in 1..=3 {
                let mut tx = db.begin().await.unwrap();
                events::publish_in(&mut tx, db.dialect(), &event("ws", n))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            assert_eq!(feed_of(&db, "ws", None, 3).await, [1, 2, 3]);
            return;
        }
        // A takes its event id first but commits last.
        let mut a = db.begin().await.unwrap();
        events::publish_in(&mut a, db.dialect(), &event("ws", 1))
            .await
            .unwrap();
        let mut b = db.begin().await.unwrap();
        events::publish_in(&mut b, db.dialect(), &event("ws", 2))
            .await
            .unwrap();
        b.commit().await.unwrap();
        // While A is open, B is withheld: a reader paging past B would otherwise skip A forever.
        assert!(feed(&db, "ws", None).await.is_empty());
        a.commit().await.unwrap();
        assert_eq!(feed_of(&db, "ws", None, 2).await.len(), 2);
        let all = events::list(&db, "ws", None, None, 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(all.total, 2);
        // Paging one by one visits both, in commit-safe order.
        let first = events::list(&db, "ws", None, None, 1)
            .await
            .unwrap()
            .unwrap();
        let rest = feed(&db, "ws", Some(&first.events[0].event_id)).await;
        assert_eq!(rest.len(), 1);
    }
);

fn debate(id: &str) -> Debate {
    let agent = |n: &str| Agent {
        name: n.into(),
        provider: "demo".into(),
        model: None,
        weight: 1.0,
        base_url: None,
        api_key_env: None,
    };
    Debate {
        id: id.into(),
        task: "Design a rate limiter".into(),
        context: None,
        consensus: ConsensusConfig::default(),
        agents: vec![agent("a"), agent("b")],
        evidence: vec![],
        rounds: vec![],
        votes: vec![],
        judge: None,
        status: DebateStatus::Pending,
        final_answer: None,
        winner: None,
        consensus_reached: false,
        confidence: 0.0,
        consensus_strength: 0.0,
        rounds_used: 0,
        agent_failures: vec![],
    }
}

both_backends!(
    worker_writes_are_fenced_by_the_job_claim,
    |backend| async move {
        let (_t, db) = open(backend).await;
        let queue = aragora_queue::Queue::new(db.clone());
        let mut tx = db.begin().await.unwrap();
        let job = aragora_queue::enqueue_in(
            &mut tx,
            db.dialect(),
            &aragora_queue::NewJob::new("debates", json!({})),
        )
        .await
        .unwrap();
        debates::insert_run_in(&mut tx, "ws", &debate("deb-1"), "tester", &job)
            .await
            .unwrap();
        // A duplicate id in the same workspace is a unique violation (the import's 409).
        let dup = debates::insert_in(&mut tx, "ws", &debate("deb-1"), "tester")
            .await
            .unwrap_err();
        assert!(debates::is_unique_violation(&dup), "{dup:?}");
        tx.rollback().await.unwrap();

        let mut tx = db.begin().await.unwrap();
        let job = aragora_queue::enqueue_in(
            &mut tx,
            db.dialect(),
            &aragora_queue::NewJob::new("debates", json!({})),
        )
        .await
        .unwrap();
        debates::insert_run_in(&mut tx, "ws", &debate("deb-1"), "tester", &job)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            debates::stranded(&db, 10).await.unwrap(),
            Vec::<(String, String)>::new(),
            "a pending debate with a ready job is not stranded"
        );

        let claimed = queue
            .claim("debates", "w1", 1, std::time::Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let fence = Fence {
            job_id: &job,
            attempt: claimed[0].attempt,
        };
        let stale = Fence {
            job_id: &job,
            attempt: claimed[0].attempt + 1,
        };
        let mut d = debate("deb-1");
        d.status = DebateStatus::Running;
        let mut conn = db.writer().acquire().await.unwrap();
        assert!(!debates::start_in(&mut conn, "ws", &d, stale).await.unwrap());
        assert!(debates::start_in(&mut conn, "ws", &d, fence).await.unwrap());
        assert!(
            !debates::start_in(&mut conn, "ws", &d, fence).await.unwrap(),
            "only once"
        );
        assert!(
            debates::progress_in(&mut conn, "ws", &d, fence)
                .await
                .unwrap()
        );
        assert!(
            !debates::progress_in(&mut conn, "ws", &d, stale)
                .await
                .unwrap()
        );
        d.status = DebateStatus::Completed;
        assert!(
            !debates::finish_in(&mut conn, "ws", &d, &RunFacts::default(), Some(stale))
                .await
                .unwrap()
        );
        assert!(
            debates::finish_in(&mut conn, "ws", &d, &RunFacts::default(), Some(fence))
                .await
                .unwrap()
        );
        assert!(
            !debates::finish_in(&mut conn, "ws", &d, &RunFacts::default(), None)
                .await
                .unwrap(),
            "a finished debate is never finished again"
        );
        drop(conn);
        let row = debates::get_row(&db, "ws", "deb-1").await.unwrap().unwrap();
        assert_eq!(row.debate.status, DebateStatus::Completed);
        assert!(row.started_at.is_some() && row.completed_at.is_some());
        assert!(debates::get(&db, "other", "deb-1").await.unwrap().is_none());
    }
);

fn item(key: &str, content: &str) -> NewItem {
    NewItem {
        source_type: "manual".into(),
        source_key: key.into(),
        content: content.into(),
        metadata: json!({"key": key}),
        confidence: 0.9,
    }
}

both_backends!(
    upsert_by_source_key_never_duplicates,
    |backend| async move {
        let (_t, db) = open(backend).await;
        let mut conn = db.writer().acquire().await.unwrap();
        let first = knowledge::upsert_in(&mut conn, db.dialect(), "ws", &item("k1", "alpha bravo"))
            .await
            .unwrap();
        let second =
            knowledge::upsert_in(&mut conn, db.dialect(), "ws", &item("k1", "charlie delta"))
                .await
                .unwrap();
        assert_eq!(first.id, second.id, "same source, same item");
        assert_eq!(first.created_at, second.created_at);
        // The same key in another workspace or source type is another item.
        knowledge::upsert_in(&mut conn, db.dialect(), "other", &item("k1", "alpha"))
            .await
            .unwrap();
        let mut cdc = item("k1", "alpha");
        cdc.source_type = "cdc".into();
        knowledge::upsert_in(&mut conn, db.dialect(), "ws", &cdc)
            .await
            .unwrap();
        // A batch that names a source twice keeps the later one.
        let n = knowledge::upsert_many_in(
            &mut conn,
            db.dialect(),
            "ws",
            &[
                item("k2", "echo one"),
                item("k1", "foxtrot"),
                item("k2", "echo two"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(n, 2);
        drop(conn);
        assert_eq!(
            knowledge::count(&db, "ws", Some("manual")).await.unwrap(),
            2
        );
        assert_eq!(knowledge::count(&db, "ws", None).await.unwrap(), 3);
        let k1 = knowledge::get(&db, "ws", &first.id).await.unwrap().unwrap();
        assert_eq!(k1.content, "foxtrot");
        assert!(
            knowledge::get(&db, "other", &first.id)
                .await
                .unwrap()
                .is_none()
        );
        // The index follows the content: the old words no longer match, the new ones do.
        let search = |q: &str| {
            let db = db.clone();
            let q = SearchQuery::new(q, None, None).unwrap();
            async move { knowledge::search(&db, "ws", &q).await.unwrap() }
        };
        assert!(
            search("alpha")
                .await
                .iter()
                .all(|h| h.item.source_type == "cdc")
        );
        assert_eq!(search("foxtrot").await.len(), 1);
        let k2 = search("echo").await;
        assert_eq!(k2.len(), 1);
        assert_eq!(k2[0].item.content, "echo two");

        let mut conn = db.writer().acquire().await.unwrap();
        assert!(
            knowledge::delete_by_source_in(&mut conn, "ws", "manual", "k1")
                .await
                .unwrap()
        );
        assert!(
            !knowledge::delete_by_source_in(&mut conn, "ws", "manual", "k1")
                .await
                .unwrap()
        );
        drop(conn);
        assert!(search("foxtrot").await.is_empty());
        assert!(
            knowledge::get(&db, "ws", &first.id)
                .await
                .unwrap()
                .is_none()
        );
    }
);

both_backends!(
    exact_phrase_ranks_above_a_passing_mention,
    |backend| async move {
        let (_t, db) = open(backend).await;
        let mut conn = db.writer().acquire().await.unwrap();
        let filler = "The quarterly planning meeting covered hiring, budgets, office moves, the \
                      cafeteria menu, travel policy and a long list of unrelated operational topics. ";
        let docs = [
            (
                "focused",
                "Use a token bucket rate limiter per tenant: the rate limiter allows short bursts.",
            ),
            (
                "apart",
                "The exchange rate changed; separately, the team bought a torque limiter for the motor.",
            ),
            (
                "passing",
                &*format!(
                    "{}{}Someone mentioned a rate limiter once. {}",
                    filler, filler, filler
                ),
            ),
            (
                "unrelated",
                "Sourdough needs a mature starter and a long cold proof.",
            ),
        ];
        for (key, content) in docs {
            knowledge::upsert_in(&mut conn, db.dialect(), "ws", &item(key, content))
                .await
                .unwrap();
        }
        drop(conn);
        let q = SearchQuery::new("rate limiter", None, None).unwrap();
        let hits = knowledge::search(&db, "ws", &q).await.unwrap();
        let order: Vec<&str> = hits.iter().map(|h| h.item.source_key.as_str()).collect();
        assert_eq!(order, ["focused", "passing", "apart"], "{hits:#?}");
        let exact: Vec<bool> = hits.iter().map(|h| h.exact_phrase).collect();
        assert_eq!(exact, [true, true, false]);
        assert!(
            hits[0].score > hits[1].score,
            "focused above passing: {hits:#?}"
        );
        // SQLite marks the phrase as one span, PostgreSQL each word.
        let marked = hits[0].snippet.contains("<mark>rate limiter</mark>")
            || (hits[0].snippet.contains("<mark>rate</mark>")
                && hits[0].snippet.contains("<mark>limiter</mark>"));
        assert!(marked, "{}", hits[0].snippet);
        // Stemming: the plural finds the singular.
        let q = SearchQuery::new("limiters", None, Some(1)).unwrap();
        let hits = knowledge::search(&db, "ws", &q).await.unwrap();
        assert_eq!(hits.len(), 1);
        // Query syntax typed by the caller is just words.
        let q = SearchQuery::new("rate\" OR NOT limiter*", None, None).unwrap();
        knowledge::search(&db, "ws", &q).await.unwrap();
        // Source type filter and workspace scope.
        let q = SearchQuery::new("rate limiter", Some("debate"), None).unwrap();
        assert!(knowledge::search(&db, "ws", &q).await.unwrap().is_empty());
        let q = SearchQuery::new("rate limiter", None, None).unwrap();
        assert!(
            knowledge::search(&db, "other", &q)
                .await
                .unwrap()
                .is_empty()
        );
    }
);

both_backends!(
    ranking_work_is_bounded_to_the_newest_matches,
    |backend| async move {
        let (_t, db) = open(backend).await;
        let n = knowledge::RANK_CANDIDATES as usize + 5;
        // The oldest item is the best match by term frequency; the RANK_CANDIDATES newer ones mention the
        // word once.
        let mut items = vec![item("k0", "zebra zebra zebra zebra")];
        items.extend((1..n).map(|i| {
            item(
                &format!("k{i}"),
                &format!("a zebra walked past item {i} on a long and winding road"),
            )
        }));
        let mut tx = db.begin().await.unwrap();
        knowledge::upsert_many_in(&mut tx, db.dialect(), "ws", &items[..1])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        knowledge::upsert_many_in(&mut tx, db.dialect(), "ws", &items[1..])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let q = SearchQuery::new("zebra", None, Some(50)).unwrap();
        let hits = knowledge::search(&db, "ws", &q).await.unwrap();
        assert_eq!(hits.len(), 50);
        assert!(
            hits.iter().all(|h| h.item.source_key != "k0"),
            "more matches than RANK_CANDIDATES: only the newest are ranked"
        );
        // A selective query still finds it, ranked exactly.
        let mut tx = db.begin().await.unwrap();
        knowledge::upsert_in(
            &mut tx,
            db.dialect(),
            "ws",
            &item("k0", "zebra zebra okapi"),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let q = SearchQuery::new("zebra okapi", None, None).unwrap();
        let hits = knowledge::search(&db, "ws", &q).await.unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].item.source_key, "k0");
        assert!(hits[0].exact_phrase);
    }
);

both_backends!(
    purging_a_connector_deletes_its_knowledge_items_only,
    |backend| async move {
        use aragora_store::connectors::{self, ConnectorRecord};
        let (_t, db) = open(backend).await;
        // Ids with LIKE's wildcards and other cases: only the purged connector's own prefix goes.
        let record = |id: &str| ConnectorRecord {
            id: id.into(),
            workspace: "ws".into(),
            name: id.into(),
            kind: "mysql".into(),
            config: json!({}),
            credentials: json!({}),
            handlers: vec!["knowledge_mound".into()],
            desired_state: "running".into(),
            created_by: "u".into(),
            created_at: 1,
            updated_at: 1,
        };
        assert!(connectors::insert(&db, &record("conn-a_%")).await.unwrap());
        let cdc = |key: &str| {
            let mut i = item(key, "indexed row alpha");
            i.source_type = "cdc".into();
            i
        };
        let mut conn = db.writer().acquire().await.unwrap();
        let items = [
            cdc("conn-a_%/app.t/1"),
            cdc("conn-a_%/app.u/{\"id\":2}"),
            cdc("conn-ab%/app.t/1"),
            cdc("conn-a_%2/app.t/1"),
            cdc("CONN-A_%/app.t/1"),
            cdc("x/conn-a_%/app.t/1"),
            item("conn-a_%/app.t/1", "a manual item with the same key"),
        ];
        knowledge::upsert_many_in(&mut conn, db.dialect(), "ws", &items)
            .await
            .unwrap();
        knowledge::upsert_in(&mut conn, db.dialect(), "other", &cdc("conn-a_%/app.t/1"))
            .await
            .unwrap();
        drop(conn);

        connectors::purge(&db, "conn-a_%").await.unwrap();
        assert!(
            connectors::get_any(&db, "conn-a_%")
                .await
                .unwrap()
                .is_none()
        );
        let left = |ws: &'static str, st: &'static str, key: &'static str| {
            let db = db.clone();
            async move {
                knowledge::get_by_source(&db, ws, st, key)
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        assert!(!left("ws", "cdc", "conn-a_%/app.t/1").await);
        assert!(!left("ws", "cdc", "conn-a_%/app.u/{\"id\":2}").await);
        for key in [
            "conn-ab%/app.t/1",
            "conn-a_%2/app.t/1",
            "CONN-A_%/app.t/1",
            "x/conn-a_%/app.t/1",
        ] {
            assert!(left("ws", "cdc", key).await, "{key} was deleted");
        }
        assert!(left("ws", "manual", "conn-a_%/app.t/1").await);
        assert!(left("other", "cdc", "conn-a_%/app.t/1").await);
    }
);
