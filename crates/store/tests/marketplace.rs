//! Marketplace repository and rate-limit buckets on SQLite and PostgreSQL: the bulk import writes
//! what single inserts write, SQL scores agree with the domain's reference implementation, and
//! concurrent takes never overspend a bucket.

use aragora_marketplace::{ListRequest, RawList, Viewer, Visibility, rating, template};
use aragora_store::marketplace::{self as mp, NewTemplate, Stats};
use aragora_store::rate_limit::{self, Decision, Limit};
use aragora_store::{Db, DbOptions, migrate};
use aragora_testkit::{Backend, both_backends, fresh_database};
use serde_json::json;
use std::time::Duration;

async fn db(backend: Backend) -> (Db, aragora_testkit::TestDb) {
    let t = fresh_database(backend).await;
    let db = Db::connect(&t.url, &DbOptions::default()).await.unwrap();
    migrate::run(&db).await.unwrap();
    (db, t)
}

fn new(id: &str, name: &str, tags: &[&str], description: &str) -> NewTemplate {
    NewTemplate {
        id: id.into(),
        workspace: "w1".into(),
        owner: "alice".into(),
        name: name.into(),
        description: description.into(),
        category: "workflow".into(),
        visibility: Visibility::Public,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        version: "1.0.0".into(),
        changelog: String::new(),
        data: template::validate(
            &json!({"nodes": [{"id": "a"}]}),
            &template::Limits::default(),
        )
        .unwrap(),
        now: 1_700_000_000_000,
    }
}

fn viewer() -> Viewer {
    Viewer {
        workspace: "w2".into(),
        user: "carol".into(),
        admin: false,
    }
}

fn search(q: &str) -> ListRequest {
    ListRequest::parse(&RawList {
        q: Some(q.into()),
        ..Default::default()
    })
    .unwrap()
}

both_backends!(
    bulk_import_writes_what_single_inserts_write,
    |backend| async move {
        let (db, _t) = db(backend).await;
        let one = new(
            "tmpl-a",
            "Secret Scanner",
            &["security"],
            "Finds leaked keys",
        );
        let mut tx = db.begin().await.unwrap();
        mp::insert_in(&mut tx, db.dialect(), &one).await.unwrap();
        tx.commit().await.unwrap();
        let mut two = new(
            "tmpl-b",
            "Secret Scanner",
            &["security"],
            "Finds leaked keys",
        );
        two.visibility = Visibility::Public;
        let stats = Stats {
            downloads: 7,
            rating_sum: 9,
            rating_count: 2,
        };
        mp::bulk_insert(&db, &[(two, stats)]).await.unwrap();

        let a = mp::get(&db, "tmpl-a").await.unwrap().unwrap();
        let b = mp::get(&db, "tmpl-b").await.unwrap().unwrap();
        assert_eq!((b.downloads, b.rating_sum, b.rating_count), (7, 9, 2));
        assert_eq!(b.rating_score, rating::bayesian_score(9, 2));
        assert_eq!(
            mp::Template {
                id: a.id.clone(),
                downloads: a.downloads,
                rating_sum: a.rating_sum,
                rating_count: a.rating_count,
                rating_score: a.rating_score,
                ..b.clone()
            },
            a
        );
        for q in ["secret", "leaked keys", "secur", "scanner secret"] {
            let page = mp::list(&db, &search(q), &viewer()).await.unwrap();
            let ids: Vec<&str> = page.items.iter().map(|t| t.id.as_str()).collect();
            assert_eq!(page.total, 2, "{q}");
            assert_eq!(
                ids,
                ["tmpl-b", "tmpl-a"],
                "{q}: equal score, more downloads first"
            );
        }
        assert_eq!(
            mp::categories(&db, &viewer()).await.unwrap(),
            [("workflow".to_string(), 2)]
        );
        let v = mp::version(&db, "tmpl-b", "1.0.0").await.unwrap().unwrap();
        assert_eq!(
            v.template_data.as_deref(),
            Some(r#"{"nodes":[{"id":"a"}]}"#)
        );
        assert_eq!(v.checksum, template::checksum(r#"{"nodes":[{"id":"a"}]}"#));
    }
);

both_backends!(sql_rating_score_matches_the_domain, |backend| async move {
    let (db, _t) = db(backend).await;
    let mut tx = db.begin().await.unwrap();
    mp::insert_in(&mut tx, db.dialect(), &new("tmpl-r", "Rated", &[], ""))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut sum = 0;
    for (i, stars) in [5, 1, 4, 4, 2, 5, 3].into_iter().enumerate() {
        let mut tx = db.begin().await.unwrap();
        let out = mp::rate_in(
            &mut tx,
            db.dialect(),
            "tmpl-r",
            "w2",
            &format!("u{i}"),
            stars,
            None,
            1,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        sum += stars;
        assert_eq!((out.rating_sum, out.rating_count), (sum, i as i64 + 1));
        let t = mp::get(&db, "tmpl-r").await.unwrap().unwrap();
        assert_eq!(t.rating_score, rating::bayesian_score(sum, i as i64 + 1));
    }
    // Re-rating moves the sum by the difference only.
    let mut tx = db.begin().await.unwrap();
    let out = mp::rate_in(&mut tx, db.dialect(), "tmpl-r", "w2", "u0", 1, None, 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (out.rating_sum, out.rating_count, out.first_rating),
        (sum - 4, 7, false)
    );
});

both_backends!(rate_limit_buckets_never_overspend, |backend| async move {
    let (db, _t) = db(backend).await;
    let limit = Limit::new(5, Duration::from_secs(3600));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { rate_limit::take(&db, "test:alice", &limit).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    let mut retry = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Decision::Allowed { .. } => allowed += 1,
            d @ Decision::Limited { .. } => retry.push(d.retry_after_secs().unwrap()),
        }
    }
    assert_eq!(allowed, 5, "exactly the capacity is granted");
    assert!(retry.iter().all(|s| (1..=720).contains(s)), "{retry:?}");
    // Buckets are independent, and a zero capacity disables the limit.
    assert!(matches!(
        rate_limit::take(&db, "test:bob", &limit).await.unwrap(),
        Decision::Allowed { remaining: 4 }
    ));
    let off = Limit::new(0, Duration::from_secs(1));
    for _ in 0..10 {
        assert!(matches!(
            rate_limit::take(&db, "test:carol", &off).await.unwrap(),
            Decision::Allowed { .. }
        ));
    }
});
