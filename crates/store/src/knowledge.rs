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

pub use aragora_knowledge::query::RANK_CANDIDATES;
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
    // SQLite gets anonymous `?` parameters: sqlx looks up each parameter's name, and for named
    // ones (`$n`) SQLite scans the statement's whole name list, which is quadratic in the number
    // of parameters (it took most of the time of a 500-row statement).
    let sqlite = dialect == Dialect::Sqlite;
    let mut written = 0;
    for chunk in distinct.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO knowledge_items (id, workspace, source_type, source_key, content, \
             metadata, confidence, created_at, updated_at) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            if sqlite {
                sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?)");
            } else {
                let b = i * 6 + 3;
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
        }
        sql.push_str(
            " ON CONFLICT (workspace, source_type, source_key) DO UPDATE SET \
             content = excluded.content, metadata = excluded.metadata, \
             confidence = excluded.confidence, updated_at = excluded.updated_at",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if !sqlite {
            q = q.bind(workspace).bind(now);
        }
        for item in chunk {
            q = q.bind(new_id(prefix::KNOWLEDGE));
            if sqlite {
                q = q.bind(workspace);
            }
            q = q
                .bind(&item.source_type)
                .bind(&item.source_key)
                .bind(&item.content)
                .bind(item.metadata.to_string())
                .bind(item.confidence);
            if sqlite {
                q = q.bind(now).bind(now);
            }
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

/// Deletes every item of `source_type` in `workspace` whose source key starts with `prefix`
/// (a deleted CDC connector's items: `<connector id>/…`). Compares an exact prefix of the key
/// (`substr`), not `LIKE`: no pattern characters to escape and no case folding. Returns how many
/// went.
pub async fn delete_by_source_prefix_in(
    conn: &mut AnyConnection,
    workspace: &str,
    source_type: &str,
    prefix: &str,
) -> Result<u64, sqlx::Error> {
    if prefix.is_empty() {
        return Ok(0);
    }
    // The length is a literal: PostgreSQL's substr takes an integer, and a bound i64 is int8.
    let len = prefix.chars().count();
    let res = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM knowledge_items WHERE workspace = $1 AND source_type = $2 \
         AND substr(source_key, 1, {len}) = $3"
    )))
    .bind(workspace)
    .bind(source_type)
    .bind(prefix)
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected())
}

/// Deletes the item `id` of `workspace`. Returns whether one existed (never another workspace's).
pub async fn delete(db: &Db, workspace: &str, id: &str) -> Result<bool, sqlx::Error> {
    let res = sqlx::query("DELETE FROM knowledge_items WHERE workspace = $1 AND id = $2")
        .bind(workspace)
        .bind(id)
        .execute(db.writer())
        .await?;
    Ok(res.rows_affected() > 0)
}

/// [`delete_by_source_in`] in a transaction of its own.
pub async fn delete_by_source(
    db: &Db,
    workspace: &str,
    source_type: &str,
    source_key: &str,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let gone = delete_by_source_in(&mut tx, workspace, source_type, source_key).await?;
    tx.commit().await?;
    Ok(gone)
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

/// One page of search hits.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// At most `query.limit` hits, from `query.offset` in the ranked list.
    pub hits: Vec<SearchHit>,
    /// More hits follow this page.
    pub more: bool,
}

/// Full-text search in `workspace`: items containing every word of the query, exact-phrase
/// matches first, then by relevance, with a highlighted snippet each. The ranking considers the
/// newest [`RANK_CANDIDATES`] matches (all of them for any selective query; see [`SearchQuery`]).
/// The hits of [`search_page`] (the page at `query.offset`: the first unless set from a cursor).
pub async fn search(
    db: &Db,
    workspace: &str,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>, sqlx::Error> {
    Ok(search_page(db, workspace, query).await?.hits)
}

/// [`search`], one page: `query.limit` hits from `query.offset` of the ranked list, which is
/// totally ordered (ties broken by recency, then by item), so consecutive pages neither skip nor
/// repeat a hit while the items do not change. Reads `limit + 1` hits to tell whether more follow.
pub async fn search_page(
    db: &Db,
    workspace: &str,
    query: &SearchQuery,
) -> Result<SearchPage, sqlx::Error> {
    let mut hits = match db.dialect() {
        Dialect::Sqlite => sqlite_search(db, workspace, query).await?,
        Dialect::Postgres => postgres_search(db, workspace, query).await?,
    };
    let more = hits.len() > query.limit as usize;
    hits.truncate(query.limit as usize);
    Ok(SearchPage { hits, more })
}

/// SQLite: (1) the newest candidates with their BM25, FTS5 walking its index newest first and
/// stopping at the limit (CROSS JOIN keeps the FTS table as the outer loop); (2) which of them
/// contain the exact phrase, searched only within the candidates' rowid range; (3) order, then
/// the page and one hit more; (4) rows and `snippet()` for those.
async fn sqlite_search(
    db: &Db,
    workspace: &str,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>, sqlx::Error> {
    let source_type = query.source_type.as_deref().unwrap_or("");
    let terms = query.fts5_terms();
    let candidates = sqlx::query(
        "SELECT knowledge_fts.rowid AS seq, bm25(knowledge_fts) AS bm \
         FROM knowledge_fts CROSS JOIN knowledge_items k ON k.seq = knowledge_fts.rowid \
         WHERE knowledge_fts MATCH $1 AND k.workspace = $2 AND ($3 = '' OR k.source_type = $3) \
         ORDER BY knowledge_fts.rowid DESC LIMIT $4",
    )
    .bind(&terms)
    .bind(workspace)
    .bind(source_type)
    .bind(i64::from(RANK_CANDIDATES))
    .fetch_all(db.reader())
    .await?
    .iter()
    .map(|r| Ok((r.try_get::<i64, _>("seq")?, r.try_get::<f64, _>("bm")?)))
    .collect::<Result<Vec<(i64, f64)>, sqlx::Error>>()?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let exact: std::collections::HashSet<i64> = if query.has_phrase() {
        let lo = candidates.iter().map(|c| c.0).min().unwrap_or(0);
        let hi = candidates.iter().map(|c| c.0).max().unwrap_or(0);
        sqlx::query(
            "SELECT rowid FROM knowledge_fts WHERE knowledge_fts MATCH $1 \
             AND rowid >= $2 AND rowid <= $3",
        )
        .bind(query.fts5_phrase())
        .bind(lo)
        .bind(hi)
        .fetch_all(db.reader())
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?
    } else {
        candidates.iter().map(|c| c.0).collect()
    };
    // Phrase first, then BM25 (more negative is better), then newest.
    let mut ranked: Vec<(bool, f64, i64)> = candidates
        .iter()
        .map(|&(seq, bm)| (exact.contains(&seq), bm, seq))
        .collect();
    // (seq is unique, so the order is total and pages are stable.)
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)).then(b.2.cmp(&a.2)));
    let ranked: Vec<(bool, f64, i64)> = ranked
        .into_iter()
        .skip(query.offset as usize)
        .take(query.limit as usize + 1)
        .collect();
    if ranked.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = (0..ranked.len())
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT knowledge_fts.rowid AS seq, k.id, k.workspace, k.source_type, k.source_key, \
         k.content, k.metadata, k.confidence, k.created_at, k.updated_at, \
         snippet(knowledge_fts, 0, '{MARK_START}', '{MARK_END}', '…', 24) AS snippet \
         FROM knowledge_fts CROSS JOIN knowledge_items k ON k.seq = knowledge_fts.rowid \
         WHERE knowledge_fts MATCH $1 AND knowledge_fts.rowid IN ({placeholders})"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&terms);
    for (_, _, seq) in &ranked {
        q = q.bind(*seq);
    }
    let mut rows: std::collections::HashMap<i64, (Item, String)> = std::collections::HashMap::new();
    for r in q.fetch_all(db.reader()).await? {
        rows.insert(r.try_get("seq")?, (decode(&r)?, r.try_get("snippet")?));
    }
    Ok(ranked
        .into_iter()
        .filter_map(|(exact_phrase, bm, seq)| {
            rows.remove(&seq).map(|(item, snippet)| SearchHit {
                item,
                exact_phrase,
                score: -bm,
                snippet,
            })
        })
        .collect())
}

/// PostgreSQL: the newest candidates (GIN bitmap or a backward walk of the recency index,
/// whichever the planner finds cheaper), ranked in a CTE (the page and one hit more);
/// `ts_headline` (which re-parses the document, the expensive part) only for those rows.
async fn postgres_search(
    db: &Db,
    workspace: &str,
    query: &SearchQuery,
) -> Result<Vec<SearchHit>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH cand AS MATERIALIZED ( \
           SELECT id, created_at, tsv FROM knowledge_items \
           WHERE workspace = $1 AND tsv @@ plainto_tsquery('english', $2) \
           AND ($3 = '' OR source_type = $3) \
           ORDER BY created_at DESC, id DESC LIMIT $5), \
         ranked AS ( \
           SELECT id, created_at, \
           CAST(CASE WHEN tsv @@ phraseto_tsquery('english', $2) THEN 1 ELSE 0 END AS BIGINT) AS exact, \
           CAST(ts_rank_cd(tsv, plainto_tsquery('english', $2), 1) AS DOUBLE PRECISION) AS score \
           FROM cand ORDER BY exact DESC, score DESC, created_at DESC, id DESC LIMIT $4 OFFSET $6) \
         SELECT k.id, k.workspace, k.source_type, k.source_key, k.content, k.metadata, \
         k.confidence, k.created_at, k.updated_at, r.exact, r.score, \
         ts_headline('english', k.content, plainto_tsquery('english', $2), \
         'StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=30, MinWords=12, \
         MaxFragments=2, FragmentDelimiter=\" … \"') AS snippet \
         FROM ranked r JOIN knowledge_items k ON k.id = r.id \
         ORDER BY r.exact DESC, r.score DESC, r.created_at DESC, r.id DESC"
    )))
    .bind(workspace)
    .bind(query.plain_text())
    .bind(query.source_type.as_deref().unwrap_or(""))
    .bind(i64::from(query.limit) + 1)
    .bind(i64::from(RANK_CANDIDATES))
    .bind(i64::from(query.offset))
    // Planned with the actual words every time: a cached generic plan cannot tell a rare word
    // (GIN bitmap) from a common one (walk the recency index), and the wrong one is 10× slower.
    .persistent(false)
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
