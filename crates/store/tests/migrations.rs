use aragora_store::{Db, DbOptions, migrate};
use aragora_testkit::{Backend, both_backends, fresh_database};

const GUIDE_TABLES: [&str; 6] = [
    "marketplace_templates",
    "marketplace_reviews",
    "webhook_registrations",
    "webhook_delivery_receipts",
    "batch_explainability_jobs",
    "batch_explainability_results",
];

async fn table_exists(db: &Db, table: &str) -> bool {
    // A portable probe: selecting from a missing table is an error on both dialects.
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(db.reader())
        .await
        .is_ok()
}

both_backends!(
    migrations_apply_once_and_report_status,
    |backend: Backend| async move {
        let t = fresh_database(backend).await;
        let db = Db::connect(&t.url, &DbOptions::default()).await.unwrap();

        let before = migrate::status(&db).await.unwrap();
        assert!(
            before.iter().all(|m| !m.applied),
            "fresh database has nothing applied"
        );
        assert!(!table_exists(&db, "marketplace_templates").await);

        migrate::run(&db).await.unwrap();
        migrate::run(&db)
            .await
            .expect("re-running migrations is a no-op");

        let after = migrate::status(&db).await.unwrap();
        let guide = after
            .iter()
            .find(|m| m.name == "v20260120100000_marketplace_webhooks_batch")
            .expect("the guide's migration is known");
        assert!(guide.applied);
        assert!(after.iter().all(|m| m.applied));
        assert!(migrate::is_current(&db).await.unwrap());
        for t in GUIDE_TABLES {
            assert!(table_exists(&db, t).await, "{t} exists after migrating");
        }
    }
);

both_backends!(
    unknown_newer_migration_is_refused,
    |backend: Backend| async move {
        let t = fresh_database(backend).await;
        let db = Db::connect(&t.url, &DbOptions::default()).await.unwrap();
        migrate::run(&db).await.unwrap();
        sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29990101000000, 'from the future', TRUE, $1, 0)",
    )
    .bind(vec![0u8; 48])
    .execute(db.writer())
    .await
    .unwrap();
        let err = migrate::run(&db).await.expect_err("newer database refused");
        assert!(err.to_string().contains("newer version"), "{err}");
        let status = migrate::status(&db).await.unwrap();
        assert!(
            status
                .iter()
                .any(|m| m.name.contains("unknown to this binary"))
        );
    }
);
