//! Embedded migrations, one directory per dialect, applied with sqlx's migrator.

use crate::{Db, Dialect, StoreError};
use sqlx::Row;
use sqlx::migrate::{MigrateError, Migrator};

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

fn migrator(dialect: Dialect) -> &'static Migrator {
    match dialect {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    }
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i64,
    /// `<version>_<description>`, e.g. `20260120100000_marketplace_webhooks_batch`.
    pub name: String,
    pub applied: bool,
    /// Applied, but this binary's copy of the migration differs from the one that was applied
    /// (checksum mismatch): `run` refuses such a database.
    pub modified: bool,
}

/// `v<version>_<description>`: the guide's spelling (`v20260120100000_marketplace_webhooks_batch`).
fn name_of(version: i64, description: &str) -> String {
    format!("v{version}_{}", description.replace(' ', "_"))
}

/// Applies pending migrations. Re-running is a no-op. A database that has a migration this binary
/// does not know (it was migrated by a newer Aragora) is refused.
pub async fn run(db: &Db) -> Result<(), StoreError> {
    match migrator(db.dialect()).run(db.writer()).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(v)) => Err(StoreError::Other(format!(
            "the database has migration {v}, which this aragora binary does not know: it was \
             migrated by a newer version; run that version (or restore a backup) instead"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Every migration known to this binary plus any unknown applied ones, in version order.
pub async fn status(db: &Db) -> Result<Vec<MigrationStatus>, StoreError> {
    let applied: Vec<(i64, String, Vec<u8>)> = match sqlx::query(
        "SELECT version, description, checksum FROM _sqlx_migrations WHERE success = TRUE \
         ORDER BY version",
    )
    .fetch_all(db.reader())
    .await
    {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>(0)?,
                    r.try_get::<String, _>(1)?,
                    r.try_get::<Vec<u8>, _>(2)?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?,
        // No migrations table yet: nothing applied.
        Err(sqlx::Error::Database(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut out: Vec<MigrationStatus> = migrator(db.dialect())
        .iter()
        .map(|m| {
            let done = applied.iter().find(|(v, _, _)| *v == m.version);
            MigrationStatus {
                version: m.version,
                name: name_of(m.version, &m.description),
                applied: done.is_some(),
                modified: done.is_some_and(|(_, _, sum)| sum.as_slice() != &*m.checksum),
            }
        })
        .collect();
    for (v, d, _) in &applied {
        if !out.iter().any(|m| m.version == *v) {
            out.push(MigrationStatus {
                version: *v,
                name: format!("{} (unknown to this binary)", name_of(*v, d)),
                applied: true,
                modified: false,
            });
        }
    }
    out.sort_by_key(|m| m.version);
    Ok(out)
}

/// Every migration this binary knows for `dialect`, none applied: the status of a database that
/// does not exist yet.
pub fn known(dialect: Dialect) -> Vec<MigrationStatus> {
    migrator(dialect)
        .iter()
        .map(|m| MigrationStatus {
            version: m.version,
            name: name_of(m.version, &m.description),
            applied: false,
            modified: false,
        })
        .collect()
}

/// True when every known migration is applied (used by `/readyz`).
pub async fn is_current(db: &Db) -> Result<bool, StoreError> {
    Ok(status(db).await?.iter().all(|m| m.applied))
}
