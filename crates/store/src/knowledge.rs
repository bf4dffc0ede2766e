//! The Knowledge Mound's storage: idempotent upsert and delete by source key, lookup, and
//! full-text search with ranking and snippets (SQLite FTS5 with BM25 and `snippet()`;
//! PostgreSQL `tsvector` + GIN with `ts_rank_cd` and `ts_headline`).
//!
//! Items are unique per `(workspace, source_type, source_key)`: an upsert of a known source
//! updates content, metadata and confidence in place and keeps the item's `id` and `created_at`.
//! Callers validate with [`NewItem::validate`] first (the HTTP route does; CDC handlers should).
//! The `_in` functions take the caller's connection, so the item changes in the same transaction
//! as whatever caused it (a debate's completion, a CDC batch and its checkpoint).

use crate::{Db, Dialect, Row};
use aragora_core::ids::{new_id, prefix};
use aragora_core::time::now_ms;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

pub use aragora_knowledge::{Item, MARK_END, MARK_START, NewItem, SearchHit, SearchQuery};

const COLUMNS: &str = "id, workspace, source_type, source_key, content, metadata, confidence, \
                       created_at, updated_at";

fn decode(r: &AnyRow) -> Result<Item, sqlx::Error> {
    Ok(Item {
        id: r.try_get("id")?,
        workspace: r.try_get("workspace")?,
        source_type: r.try_get("source_type")?,
        source_key: r.try_get("source_key")?,
        content: r.try_get("content")?,
        metadata: serde_json::from_str(&r.try_get::<String, _>("metadata")?)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        confidence: r.try_get("confidence")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Inserts the item, or updates the item with the same `(workspace, source_type, source_key)`
/// (same id, same `created_at`). Returns the stored item.
pub async fn upsert_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    workspace: &str,
    item: &NewItem,
) -> Result<Item, sqlx::Error> {
    let _ = dialect; // Same SQL on both: INSERT … ON CONFLICT … DO UPDATE … RETURNING.
    let now = now_ms();
    let metadata = item.metadata.to_string();
    let row = sqlx::query(
        "INSERT INTO knowledge_items (id, workspace, source_type, source_key, content, metadata, \
         confidence, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         ON CONFLICT (workspace, source_type, source_key) DO UPDATE SET \
         content = excluded.content, metadata = excluded.metadata, \
         confidence = excluded.confidence, updated_at = excluded.updated_at \
         RETURNING id, created_at, updated_at",
    )
    .bind(new_id(prefix::KNOWLEDGE))
    .bind(workspace)
    .bind(&item.source_type)
    .bind(&item.source_key)
    .bind(&item.content)
    .bind(&metadata)
    .bind(item.confidence)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Item {
        id: row.try_get("id")?,
        workspace: workspace.to_string(),
        source_type: item.source_type.clone(),
        source_key: item.source_key.clone(),
        content: item.content.clone(),
        metadata: item.metadata.clone(),
        confidence: item.confidence,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// [`upsert_in`] for many items in few statements (CDC batches). When a batch names the same
/// source twice, the later item wins. Returns how many distinct sources were written.
pub async fn upsert_many_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    workspace: &str,
    items: &[NewItem],
) -> Result<u64, sqlx::Error> {
    let _ = dialect;
    // Last write wins within the batch (one statement may not update a row twice on PostgreSQL).
    let mut seen = std::collections::HashSet::new();
    let mut distinct: Vec<&NewItem> = Vec::with_capacity(items.len());
    for item in items.iter().rev() {
        if seen.insert((item.source_type.as_str(), item.source_key.as_str())) {
            distinct.push(item);
        }
    }
    distinct.reverse();
    let now = now_ms();
    let mut written = 0;
    for chunk in distinct.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO knowledge_items (id, workspace, source_type, source_key, content, \
             metadata, confidence, created_at, updated_at) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 6 + 3;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, $1, ${}, ${}, ${}, ${}, ${}, $2, $2)",
                b,
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            ));
        }
        sql.push_str(
            " ON CONFLICT (workspace, source_type, source_key) DO UPDATE SET \
             content = excluded.content, metadata = excluded.metadata, \
             confidence = excluded.confidence, updated_at = excluded.updated_at",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(workspace)
            .bind(now);
        for item in chunk {
            q = q
                .bind(new_id(prefix::KNOWLEDGE))
                .bind(&item.source_type)
                .bind(&item.source_key)
                .bind(&item.content)
                .bind(item.metadata.to_string())
                .bind(item.confidence);
        }
        written += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(written)
}

/// Deletes the item of a source (CDC deletes, retractions). Returns whether one existed.
pub async fn delete_by_source_in(
    conn: &mut AnyConnection,
    workspace: &str,
    source_type: &str,
    source_key: &str,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "DELETE FROM knowledge_items WHERE workspace = $1 AND source_type = $2 AND source_key = $3",
    )
    .bind(workspace)
    .bind(source_type)
    .bind(source_key)
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() > 0)
}

/// Whether the item of a source exists (inside the caller's transaction).
pub async fn exists_in(
    conn: &mut AnyConnection,
    workspace: &str,
    source_type: &str,
    source_key: &str,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT 1 FROM knowledge_items WHERE workspace = $1 AND source_type = $2 AND source_key = $3",
    )
    .bind(workspace)
    .bind(source_type)
    .bind(source_key)
    .fetch_optional(&mut *conn)
    .await?
    .is_some())
}

/// The item `id` of `workspace`, or `None` (also for another workspace's item).
pub async fn get(db: &Db, workspace: &str, id: &str) -> Result<Option<Item>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM knowledge_items WHERE workspace = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace)
        .bind(id)
        .fetch_optional(db.reader())
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// The item of a source, or `None`.
pub async fn get_by_source(
    db: &Db,
    workspace: &str,
    source_type: &str,
    source_key: &str,
) -> Result<Option<Item>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM knowledge_items WHERE workspace = $1 AND source_type = $2 \
         AND source_key = $3"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(workspace)
        .bind(source_type)
        .bind(source_key)
        .fetch_optional(db.reader())
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Items of `workspace` (of one source type, if given).
pub async fn count(
    db: &Db,
    workspace: &str,
    source_type: Option<&str>,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(*) FROM knowledge_items WHERE workspace = $1 AND ($2 = '' OR source_type = $2)",
    )
    .bind(workspace)
    .bind(source_type.unwrap_or(""))
    .fetch_one(db.reader())
    .await?
    .try_get(0)
}

/// Full-text search in `workspace`: items containing every word of the query, exact-phrase
/// matches first, then by relevance (see [`SearchQuery`]), with a highlighted snippet each.
pub async fn search(
    db: &Db,
    workspace: &str,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>, sqlx::Error> {
    match db.dialect() {
        Dialect::Sqlite => {
            let limit = query.limit as usize;
            let mut hits =
                sqlite_tier(db, workspace, query, &query.fts5_phrase(), limit, true).await?;
            if query.has_phrase() && hits.len() < limit {
                let rest = limit - hits.len();
                hits.extend(
                    sqlite_tier(db, workspace, query, &query.fts5_rest(), rest, false).await?,
                );
            }
            Ok(hits)
        }
        Dialect::Postgres => postgres_search(db, workspace, query).await,
    }
}

/// One ranking tier on SQLite. CROSS JOIN keeps the FTS table as the outer loop, so FTS5 hands
/// rows over in rank order and `snippet()` runs only for the rows returned.
async fn sqlite_tier(
    db: &Db,
    workspace: &str,
    query: &SearchQuery,
    fts: &str,
    limit: usize,
    exact_phrase: bool,
) -> Result<Vec<SearchHit>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT k.id, k.workspace, k.source_type, k.source_key, k.content, k.metadata, \
         k.confidence, k.created_at, k.updated_at, \
         -knowledge_fts.rank AS score, \
         snippet(knowledge_fts, 0, '{MARK_START}', '{MARK_END}', '…', 24) AS snippet \
         FROM knowledge_fts CROSS JOIN knowledge_items k ON k.seq = knowledge_fts.rowid \
         WHERE knowledge_fts MATCH $1 AND k.workspace = $2 \
         AND ($3 = '' OR k.source_type = $3) \
         ORDER BY knowledge_fts.rank LIMIT $4"
    )))
    .bind(fts)
    .bind(workspace)
    .bind(query.source_type.as_deref().unwrap_or(""))
    .bind(limit as i64)
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SearchHit {
                item: decode(r)?,
                exact_phrase: exact_phrase || !query.has_phrase(),
                score: r.try_get("score")?,
                snippet: r.try_get("snippet")?,
            })
        })
        .collect()
}

/// PostgreSQL: rank the GIN matches in an inner query; headline only the rows returned
/// (`ts_headline` re-parses the document, so it is the expensive part).
async fn postgres_search(
    db: &Db,
    workspace: &str,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT k.id, k.workspace, k.source_type, k.source_key, k.content, k.metadata, \
         k.confidence, k.created_at, k.updated_at, t.exact, t.score, \
         ts_headline('english', k.content, plainto_tsquery('english', $2), \
         'StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=30, MinWords=12, \
         MaxFragments=2, FragmentDelimiter=\" … \"') AS snippet \
         FROM (SELECT id, \
         CAST(CASE WHEN tsv @@ phraseto_tsquery('english', $2) THEN 1 ELSE 0 END AS BIGINT) AS exact, \
         CAST(ts_rank_cd(tsv, plainto_tsquery('english', $2), 1) AS DOUBLE PRECISION) AS score \
         FROM knowledge_items WHERE workspace = $1 \
         AND tsv @@ plainto_tsquery('english', $2) AND ($3 = '' OR source_type = $3) \
         ORDER BY exact DESC, score DESC, id LIMIT $4) t \
         JOIN knowledge_items k ON k.id = t.id ORDER BY t.exact DESC, t.score DESC, t.id"
    )))
    .bind(workspace)
    .bind(query.plain_text())
    .bind(query.source_type.as_deref().unwrap_or(""))
    .bind(i64::from(query.limit))
    .fetch_all(db.reader())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SearchHit {
                item: decode(r)?,
                exact_phrase: r.try_get::<i64, _>("exact")? != 0,
                score: r.try_get("score")?,
                snippet: r.try_get("snippet")?,
            })
        })
        .collect()
}
