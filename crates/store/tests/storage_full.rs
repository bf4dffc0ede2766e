//! A full disk maps to one error kind on both dialects, and a SQLite writer connection whose
//! transaction SQLite rolled back by itself (after SQLITE_FULL) is not reused.

use aragora_store::{Db, DbOptions, Row, is_storage_full, sqlx, sqlx_to_core};
use aragora_testkit::{Backend, fresh_database};

#[tokio::test]
async fn postgres_disk_full_maps_to_storage_full() {
    let t = fresh_database(Backend::Postgres).await;
    let db = Db::connect(&t.url, &DbOptions::default()).await.unwrap();
    // 53100 is what PostgreSQL raises when it cannot extend a file.
    let e = sqlx::query(
        "DO $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' \
         USING ERRCODE = 'disk_full'; END $$",
    )
    .execute(db.writer())
    .await
    .unwrap_err();
    assert!(is_storage_full(&e), "{e}");
    let core = sqlx_to_core(e);
    assert_eq!(core.code(), "storage_full");
    assert!(core.to_string().starts_with("storage full"), "{core}");
    // Other database errors keep their mapping.
    let e = sqlx::query("SELECT * FROM no_such_table")
        .execute(db.writer())
        .await
        .unwrap_err();
    assert!(!is_storage_full(&e));
    assert_eq!(sqlx_to_core(e).code(), "internal");
    db.close().await;
}

#[tokio::test]
async fn sqlite_full_maps_to_storage_full_and_later_commits_are_durable() {
    let t = fresh_database(Backend::Sqlite).await;
    let setup = Db::connect(&t.url, &DbOptions::default()).await.unwrap();
    for sql in [
        "CREATE TABLE ballast (b BLOB)",
        "CREATE TABLE items (id INTEGER PRIMARY KEY, v BLOB)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 16) \
         INSERT INTO ballast SELECT randomblob(65536) FROM n",
    ] {
        sqlx::query(sql).execute(setup.writer()).await.unwrap();
    }
    let pages: i64 = sqlx::query("PRAGMA page_count")
        .fetch_one(setup.writer())
        .await
        .unwrap()
        .get(0);
    let db = Db::connect(
        &t.url,
        &DbOptions {
            sqlite_max_page_count: Some(pages as u64 + 8),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // Fill the file inside one transaction until SQLite refuses.
    let mut tx = db.begin().await.unwrap();
    let mut err = None;
    for i in 0..1000i64 {
        if let Err(e) = sqlx::query("INSERT INTO items (id, v) VALUES ($1, randomblob(8192))")
            .bind(i)
            .execute(&mut *tx)
            .await
        {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("the capped file filled up");
    assert!(is_storage_full(&e), "{e}");
    assert_eq!(sqlx_to_core(e).code(), "storage_full");
    drop(tx);

    // Space is freed elsewhere; the writer must work normally again.
    sqlx::query("DROP TABLE ballast")
        .execute(setup.writer())
        .await
        .unwrap();
    // A transaction that fails (duplicate key) and is dropped, then one that commits.
    sqlx::query("INSERT INTO items (id, v) VALUES (-1, x'00')")
        .execute(db.writer())
        .await
        .unwrap();
    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id, v) VALUES (-1, x'00')")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    drop(tx);
    let mut tx = db.begin().await.unwrap();
    sqlx::query("INSERT INTO items (id, v) VALUES (-2, x'00')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The committed rows are visible to another connection, i.e. really committed.
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM items WHERE id < 0")
        .fetch_one(setup.reader())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "both committed rows are durable");
    db.close().await;
    setup.close().await;
}
