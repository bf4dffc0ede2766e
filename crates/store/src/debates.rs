//! Debate records, scoped by workspace.

use crate::{Db, Row};
use aragora_core::debate::Debate;
use aragora_core::time::now_ms;
use sqlx::AnyConnection;

fn encode(d: &Debate) -> String {
    serde_json::to_string(d).expect("a debate always serialises")
}

fn decode(text: &str) -> Result<Debate, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Inserts a new debate; fails with a unique violation if the id exists in the workspace.
pub async fn insert_in(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
    created_by: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO debates (workspace, id, task, status, consensus_mode, winner, consensus_reached, \
         confidence, record, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
    )
    .bind(workspace)
    .bind(&debate.id)
    .bind(&debate.task)
    .bind(debate.status.as_str())
    .bind(debate.consensus.mode.as_str())
    .bind(debate.winner.as_deref())
    .bind(crate::flag(debate.consensus_reached))
    .bind(debate.confidence)
    .bind(encode(debate))
    .bind(created_by)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Replaces a debate's record (progress or completion). Returns false if it does not exist.
pub async fn update_in(
    conn: &mut AnyConnection,
    workspace: &str,
    debate: &Debate,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "UPDATE debates SET task = $1, status = $2, winner = $3, consensus_reached = $4, \
         confidence = $5, record = $6, updated_at = $7 WHERE workspace = $8 AND id = $9",
    )
    .bind(&debate.task)
    .bind(debate.status.as_str())
    .bind(debate.winner.as_deref())
    .bind(crate::flag(debate.consensus_reached))
    .bind(debate.confidence)
    .bind(encode(debate))
    .bind(now_ms())
    .bind(workspace)
    .bind(&debate.id)
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() > 0)
}

/// The debate `id` of `workspace`, or `None` (also for another workspace's debate).
pub async fn get(db: &Db, workspace: &str, id: &str) -> Result<Option<Debate>, sqlx::Error> {
    let row = sqlx::query("SELECT record FROM debates WHERE workspace = $1 AND id = $2")
        .bind(workspace)
        .bind(id)
        .fetch_optional(db.reader())
        .await?;
    row.map(|r| decode(&r.try_get::<String, _>(0)?)).transpose()
}

/// Several debates of `workspace` by id in one query; missing ids are simply absent.
pub async fn get_many(
    db: &Db,
    workspace: &str,
    ids: &[String],
) -> Result<Vec<Debate>, sqlx::Error> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let placeholders = (0..chunk.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(",");
        let sql =
            format!("SELECT record FROM debates WHERE workspace = $1 AND id IN ({placeholders})");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(workspace);
        for id in chunk {
            q = q.bind(id);
        }
        for r in q.fetch_all(db.reader()).await? {
            out.push(decode(&r.try_get::<String, _>(0)?)?);
        }
    }
    Ok(out)
}
