//! Marketplace templates, versions, downloads, ratings and reviews.
//!
//! Search sits behind [`SearchBackend`]: SQLite matches through FTS5 (terms) and an FTS5 trigram
//! table (name substrings); PostgreSQL through a weighted `tsvector` with a GIN index and pg_trgm.
//! Both index the same tokens (computed by `aragora_marketplace::search`) and rank with the same
//! integer field score, so results agree across databases.
//!
//! Counts: listed public templates per category live in `marketplace_category_counts`, updated in
//! the same transaction as every change, so an unfiltered list's total costs two index lookups
//! instead of a 100k-row count.

use crate::{Db, Dialect, Row};
use aragora_marketplace::list::{KeyColumn, ListRequest, Mode, Sort};
use aragora_marketplace::search::{self, Query, SearchFields};
use aragora_marketplace::{Canonical, KeyVal, Viewer, Visibility, rating};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

/// A template row (without its graph, which lives with each version).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub id: String,
    pub workspace: String,
    pub owner: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub visibility: Visibility,
    pub tags: Vec<String>,
    /// The version served by default (see `semver::default_version`), or the highest version when
    /// every version is yanked.
    pub latest_version: String,
    pub downloads: i64,
    pub rating_sum: i64,
    pub rating_count: i64,
    /// Bayesian average in micro-stars.
    pub rating_score: i64,
    pub unlisted: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

const TEMPLATE_COLS: &str = "t.id, t.workspace, t.owner, t.name, t.description, t.category, \
    t.visibility, t.tags, t.latest_version, t.downloads, t.rating_sum, t.rating_count, \
    t.rating_score, t.unlisted, t.created_at, t.updated_at";

fn decode_err(e: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

fn template_from_row(r: &AnyRow) -> Result<Template, sqlx::Error> {
    let vis: String = r.try_get("visibility")?;
    let tags: String = r.try_get("tags")?;
    Ok(Template {
        id: r.try_get("id")?,
        workspace: r.try_get("workspace")?,
        owner: r.try_get("owner")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        category: r.try_get("category")?,
        visibility: vis
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        tags: serde_json::from_str(&tags).map_err(decode_err)?,
        latest_version: r.try_get("latest_version")?,
        downloads: r.try_get("downloads")?,
        rating_sum: r.try_get("rating_sum")?,
        rating_count: r.try_get("rating_count")?,
        rating_score: r.try_get("rating_score")?,
        unlisted: r.try_get::<i64, _>("unlisted")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A template to create, with its first version.
#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub id: String,
    pub workspace: String,
    pub owner: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub visibility: Visibility,
    pub tags: Vec<String>,
    pub version: String,
    pub changelog: String,
    pub data: Canonical,
    pub now: i64,
}

/// Editable metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub name: String,
    pub description: String,
    pub category: String,
    pub visibility: Visibility,
    pub tags: Vec<String>,
}

impl Template {
    /// The template's editable metadata as it stands.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            name: self.name.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
            visibility: self.visibility,
            tags: self.tags.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Search backends

/// How a database finds templates for a query. Implementations return SQL fragments over the
/// alias `t` (marketplace_templates) with `$n` placeholders allocated from `sql`.
pub trait SearchBackend: Sync {
    /// Condition: every query term occurs (the last as a prefix).
    fn terms_match(&self, sql: &mut Sql, q: &Query) -> String;
    /// Condition: the name contains `needle` (lowercase, no LIKE metacharacters).
    fn name_contains(&self, sql: &mut Sql, needle: &str) -> String;
    /// Position of `needle` in `text` (0 when absent).
    fn position_fn(&self) -> &'static str;
    /// Appended to the subquery that selects the matching rows of a counted page, so it is planned
    /// on its own. PostgreSQL otherwise walks a sort index hoping the LIMIT stops it early, which
    /// `COUNT(*) OVER ()` never allows (a 1,000-row tag filter walked all 100k rows: 1.1 s).
    fn subquery_fence(&self) -> &'static str;
    /// Writes the search rows of a template after its row is inserted or changed.
    #[allow(async_fn_in_trait)]
    async fn index(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        fields: &SearchFields,
    ) -> Result<(), sqlx::Error>;
    /// Removes them (unlisting).
    #[allow(async_fn_in_trait)]
    async fn unindex(&self, conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error>;
}

/// SQLite: FTS5 tables keyed by `marketplace_templates.seq`.
pub struct Fts5;
/// PostgreSQL: the generated, weighted `search_vector` (GIN) and pg_trgm on `name_key`.
pub struct PgTsvector;

async fn seq_of(conn: &mut AnyConnection, id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT seq FROM marketplace_templates WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)
}

impl SearchBackend for Fts5 {
    fn terms_match(&self, sql: &mut Sql, q: &Query) -> String {
        let p = sql.arg(Arg::T(q.fts5()));
        format!(
            "t.seq IN (SELECT rowid FROM marketplace_templates_fts WHERE marketplace_templates_fts MATCH {p})"
        )
    }

    fn name_contains(&self, sql: &mut Sql, needle: &str) -> String {
        let p = sql.arg(Arg::T(format!("%{needle}%")));
        format!("t.seq IN (SELECT rowid FROM marketplace_templates_trgm WHERE name_key LIKE {p})")
    }

    fn position_fn(&self) -> &'static str {
        "instr"
    }

    // SQLite plans these subqueries well as they are.
    fn subquery_fence(&self) -> &'static str {
        ""
    }

    async fn index(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        f: &SearchFields,
    ) -> Result<(), sqlx::Error> {
        let seq = seq_of(conn, id).await?;
        self.unindex_seq(conn, seq).await?;
        sqlx::query(
            "INSERT INTO marketplace_templates_fts (rowid, name, tags, description) VALUES ($1, $2, $3, $4)",
        )
        .bind(seq)
        .bind(&f.name)
        .bind(&f.tags)
        .bind(&f.description)
        .execute(&mut *conn)
        .await?;
        sqlx::query("INSERT INTO marketplace_templates_trgm (rowid, name_key) VALUES ($1, $2)")
            .bind(seq)
            .bind(&f.name_key)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn unindex(&self, conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
        let seq = seq_of(conn, id).await?;
        self.unindex_seq(conn, seq).await
    }
}

impl Fts5 {
    async fn unindex_seq(&self, conn: &mut AnyConnection, seq: i64) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM marketplace_templates_fts WHERE rowid = $1")
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM marketplace_templates_trgm WHERE rowid = $1")
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

impl SearchBackend for PgTsvector {
    fn terms_match(&self, sql: &mut Sql, q: &Query) -> String {
        let p = sql.arg(Arg::T(q.tsquery()));
        format!("t.search_vector @@ to_tsquery('simple', {p})")
    }

    fn name_contains(&self, sql: &mut Sql, needle: &str) -> String {
        let p = sql.arg(Arg::T(format!("%{needle}%")));
        format!("t.name_key LIKE {p}")
    }

    fn position_fn(&self) -> &'static str {
        "strpos"
    }

    // `OFFSET 0` keeps the planner from pulling the subquery up into the outer ORDER BY/LIMIT.
    fn subquery_fence(&self) -> &'static str {
        " OFFSET 0"
    }

    // The vector is a generated column of the template row: nothing to write.
    async fn index(
        &self,
        _conn: &mut AnyConnection,
        _id: &str,
        _f: &SearchFields,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }

    async fn unindex(&self, _conn: &mut AnyConnection, _id: &str) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// Dispatch on the dialect (the trait uses async fns, so no `dyn`).
enum Backend {
    Sqlite(Fts5),
    Postgres(PgTsvector),
}

impl Backend {
    fn of(dialect: Dialect) -> Backend {
        match dialect {
            Dialect::Sqlite => Backend::Sqlite(Fts5),
            Dialect::Postgres => Backend::Postgres(PgTsvector),
        }
    }

    fn get(&self) -> &dyn SearchSql {
        match self {
            Backend::Sqlite(b) => b,
            Backend::Postgres(b) => b,
        }
    }

    async fn index(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        f: &SearchFields,
    ) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite(b) => b.index(conn, id, f).await,
            Backend::Postgres(b) => b.index(conn, id, f).await,
        }
    }

    async fn unindex(&self, conn: &mut AnyConnection, id: &str) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite(b) => b.unindex(conn, id).await,
            Backend::Postgres(b) => b.unindex(conn, id).await,
        }
    }
}

/// The SQL-building half of [`SearchBackend`], object-safe.
trait SearchSql: Sync {
    fn terms_match(&self, sql: &mut Sql, q: &Query) -> String;
    fn name_contains(&self, sql: &mut Sql, needle: &str) -> String;
    fn position_fn(&self) -> &'static str;
    fn subquery_fence(&self) -> &'static str;
}

impl<T: SearchBackend> SearchSql for T {
    fn terms_match(&self, sql: &mut Sql, q: &Query) -> String {
        SearchBackend::terms_match(self, sql, q)
    }
    fn name_contains(&self, sql: &mut Sql, needle: &str) -> String {
        SearchBackend::name_contains(self, sql, needle)
    }
    fn position_fn(&self) -> &'static str {
        SearchBackend::position_fn(self)
    }
    fn subquery_fence(&self) -> &'static str {
        SearchBackend::subquery_fence(self)
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny SQL builder: text plus positional arguments.

#[derive(Debug, Clone)]
pub enum Arg {
    I(i64),
    T(String),
    R(f64),
}

#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
}

impl Sql {
    /// Adds an argument and returns its placeholder.
    pub fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(self.text.as_str()));
        for a in &self.args {
            q = match a {
                Arg::I(v) => q.bind(*v),
                Arg::T(v) => q.bind(v.as_str()),
                Arg::R(v) => q.bind(*v),
            };
        }
        q
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

async fn bump_public_count(
    conn: &mut AnyConnection,
    category: &str,
    delta: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO marketplace_category_counts (category, public_templates) VALUES ($1, $2) \
         ON CONFLICT (category) DO UPDATE SET public_templates = marketplace_category_counts.public_templates + $2",
    )
    .bind(category)
    .bind(delta)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

async fn write_tags(
    conn: &mut AnyConnection,
    id: &str,
    tags: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM marketplace_template_tags WHERE template_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for tag in tags {
        sqlx::query("INSERT INTO marketplace_template_tags (template_id, tag) VALUES ($1, $2)")
            .bind(id)
            .bind(tag)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).expect("strings serialise")
}

/// Creates a template with its first version, tags, search rows and counts.
pub async fn insert_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    t: &NewTemplate,
) -> Result<(), sqlx::Error> {
    let f = search::search_fields(&t.name, &t.tags, &t.description);
    let seq = match dialect {
        Dialect::Sqlite => "(SELECT COALESCE(MAX(seq), 0) + 1 FROM marketplace_templates), ",
        Dialect::Postgres => "",
    };
    let seq_col = match dialect {
        Dialect::Sqlite => "seq, ",
        Dialect::Postgres => "",
    };
    let sql = format!(
        "INSERT INTO marketplace_templates ({seq_col}id, workspace, owner, name, name_key, description, \
         category, visibility, tags, latest_version, rating_score, search_name, search_tags, search_desc, \
         created_at, updated_at) \
         VALUES ({seq}$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&t.id)
        .bind(&t.workspace)
        .bind(&t.owner)
        .bind(&t.name)
        .bind(&f.name_key)
        .bind(&t.description)
        .bind(&t.category)
        .bind(t.visibility.as_str())
        .bind(tags_json(&t.tags))
        .bind(&t.version)
        .bind(rating::bayesian_score(0, 0))
        .bind(&f.name)
        .bind(&f.tags)
        .bind(&f.description)
        .bind(t.now)
        .execute(&mut *conn)
        .await?;
    insert_version_in(
        conn,
        &NewVersion {
            template_id: t.id.clone(),
            version: t.version.clone(),
            changelog: t.changelog.clone(),
            data: t.data.clone(),
            published_by: t.owner.clone(),
            now: t.now,
        },
    )
    .await?;
    write_tags(conn, &t.id, &t.tags).await?;
    Backend::of(dialect).index(conn, &t.id, &f).await?;
    if t.visibility == Visibility::Public {
        bump_public_count(conn, &t.category, 1).await?;
    }
    Ok(())
}

/// Counters a bulk import may carry over (e.g. from another marketplace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub downloads: i64,
    pub rating_sum: i64,
    pub rating_count: i64,
}

/// Rows per multi-row INSERT (keeps every statement under both databases' parameter limits).
const BULK_ROWS: usize = 400;

/// Imports many templates (each with its first version) in one transaction using multi-row
/// INSERTs: the same rows [`insert_in`] writes, built in bulk (for seeding, imports and the
/// benchmark). Search rows are filled from the inserted rows (SQLite) or generated (PostgreSQL),
/// and the public counts are bumped once per category.
pub async fn bulk_insert(db: &Db, templates: &[(NewTemplate, Stats)]) -> Result<(), sqlx::Error> {
    let dialect = db.dialect();
    let mut tx = db.begin().await?;
    let base_seq: i64 = match dialect {
        Dialect::Sqlite => sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM marketplace_templates")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?,
        Dialect::Postgres => 0,
    };
    let mut public: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for (chunk_no, part) in templates.chunks(BULK_ROWS).enumerate() {
        let mut sql = Sql::default();
        let mut rows = Vec::with_capacity(part.len());
        for (i, (t, st)) in part.iter().enumerate() {
            let f = search::search_fields(&t.name, &t.tags, &t.description);
            let mut vals: Vec<String> = Vec::new();
            if dialect == Dialect::Sqlite {
                vals.push(sql.arg(Arg::I(base_seq + (chunk_no * BULK_ROWS + i) as i64 + 1)));
            }
            for a in [
                Arg::T(t.id.clone()),
                Arg::T(t.workspace.clone()),
                Arg::T(t.owner.clone()),
                Arg::T(t.name.clone()),
                Arg::T(f.name_key),
                Arg::T(t.description.clone()),
                Arg::T(t.category.clone()),
                Arg::T(t.visibility.as_str().to_string()),
                Arg::T(tags_json(&t.tags)),
                Arg::T(t.version.clone()),
                Arg::I(st.downloads),
                Arg::I(st.rating_sum),
                Arg::I(st.rating_count),
                Arg::I(rating::bayesian_score(st.rating_sum, st.rating_count)),
                Arg::T(f.name),
                Arg::T(f.tags),
                Arg::T(f.description),
                Arg::I(t.now),
                Arg::I(t.now),
            ] {
                vals.push(sql.arg(a));
            }
            rows.push(format!("({})", vals.join(", ")));
            if t.visibility == Visibility::Public {
                *public.entry(t.category.as_str()).or_default() += 1;
            }
        }
        let seq_col = if dialect == Dialect::Sqlite {
            "seq, "
        } else {
            ""
        };
        sql.text = format!(
            "INSERT INTO marketplace_templates ({seq_col}id, workspace, owner, name, name_key, description, \
             category, visibility, tags, latest_version, downloads, rating_sum, rating_count, rating_score, \
             search_name, search_tags, search_desc, created_at, updated_at) VALUES {}",
            rows.join(", ")
        );
        sql.query().execute(&mut *tx).await?;

        let mut sql = Sql::default();
        let rows: Vec<String> = part
            .iter()
            .map(|(t, st)| {
                let vals = [
                    sql.arg(Arg::T(t.id.clone())),
                    sql.arg(Arg::T(t.version.clone())),
                    sql.arg(Arg::T(t.changelog.clone())),
                    sql.arg(Arg::T(t.data.json.clone())),
                    sql.arg(Arg::T(t.data.checksum.clone())),
                    sql.arg(Arg::I(t.data.json.len() as i64)),
                    sql.arg(Arg::I(st.downloads)),
                    sql.arg(Arg::T(t.owner.clone())),
                    sql.arg(Arg::I(t.now)),
                ];
                format!("({})", vals.join(", "))
            })
            .collect();
        sql.text = format!(
            "INSERT INTO marketplace_template_versions (template_id, version, changelog, template_data, \
             checksum, size_bytes, downloads, published_by, created_at) VALUES {}",
            rows.join(", ")
        );
        sql.query().execute(&mut *tx).await?;

        let mut sql = Sql::default();
        let rows: Vec<String> = part
            .iter()
            .flat_map(|(t, _)| t.tags.iter().map(move |tag| (t, tag)))
            .map(|(t, tag)| {
                format!(
                    "({}, {})",
                    sql.arg(Arg::T(t.id.clone())),
                    sql.arg(Arg::T(tag.clone()))
                )
            })
            .collect();
        if !rows.is_empty() {
            sql.text = format!(
                "INSERT INTO marketplace_template_tags (template_id, tag) VALUES {}",
                rows.join(", ")
            );
            sql.query().execute(&mut *tx).await?;
        }
    }
    if dialect == Dialect::Sqlite {
        sqlx::query(
            "INSERT INTO marketplace_templates_fts (rowid, name, tags, description) \
             SELECT seq, search_name, search_tags, search_desc FROM marketplace_templates WHERE seq > $1",
        )
        .bind(base_seq)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO marketplace_templates_trgm (rowid, name_key) \
             SELECT seq, name_key FROM marketplace_templates WHERE seq > $1",
        )
        .bind(base_seq)
        .execute(&mut *tx)
        .await?;
    }
    for (category, n) in public {
        bump_public_count(&mut tx, category, n).await?;
    }
    tx.commit().await
}

/// Replaces a template's metadata (and its search rows, tags and counts).
pub async fn update_metadata_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    old: &Template,
    new: &Metadata,
    now: i64,
) -> Result<(), sqlx::Error> {
    let f = search::search_fields(&new.name, &new.tags, &new.description);
    sqlx::query(
        "UPDATE marketplace_templates SET name = $1, name_key = $2, description = $3, category = $4, \
         visibility = $5, tags = $6, search_name = $7, search_tags = $8, search_desc = $9, updated_at = $10 \
         WHERE id = $11",
    )
    .bind(&new.name)
    .bind(&f.name_key)
    .bind(&new.description)
    .bind(&new.category)
    .bind(new.visibility.as_str())
    .bind(tags_json(&new.tags))
    .bind(&f.name)
    .bind(&f.tags)
    .bind(&f.description)
    .bind(now)
    .bind(&old.id)
    .execute(&mut *conn)
    .await?;
    if old.tags != new.tags {
        write_tags(conn, &old.id, &new.tags).await?;
    }
    Backend::of(dialect).index(conn, &old.id, &f).await?;
    if old.visibility == Visibility::Public {
        bump_public_count(conn, &old.category, -1).await?;
    }
    if new.visibility == Visibility::Public {
        bump_public_count(conn, &new.category, 1).await?;
    }
    Ok(())
}

/// Unlists a template: it stays in the database but is no longer served.
pub async fn unlist_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    t: &Template,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE marketplace_templates SET unlisted = 1, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(&t.id)
        .execute(&mut *conn)
        .await?;
    Backend::of(dialect).unindex(conn, &t.id).await?;
    if t.visibility == Visibility::Public {
        bump_public_count(conn, &t.category, -1).await?;
    }
    Ok(())
}

/// A template by id, listed or not; `None` when it does not exist. Visibility is the caller's job.
pub async fn get(db: &Db, id: &str) -> Result<Option<Template>, sqlx::Error> {
    let sql = format!("SELECT {TEMPLATE_COLS} FROM marketplace_templates t WHERE t.id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db.reader())
        .await?
        .as_ref()
        .map(template_from_row)
        .transpose()
}

/// The template inside a write transaction, locked on PostgreSQL so changes to one template
/// (new versions, yanks, metadata) are serialised.
pub async fn get_for_update_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    id: &str,
) -> Result<Option<Template>, sqlx::Error> {
    let lock = match dialect {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let sql = format!("SELECT {TEMPLATE_COLS} FROM marketplace_templates t WHERE t.id = $1{lock}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(template_from_row)
        .transpose()
}

// ---------------------------------------------------------------------------------------------
// Versions

#[derive(Debug, Clone)]
pub struct NewVersion {
    pub template_id: String,
    pub version: String,
    pub changelog: String,
    pub data: Canonical,
    pub published_by: String,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VersionRow {
    pub template_id: String,
    pub version: String,
    pub changelog: String,
    pub checksum: String,
    pub size_bytes: i64,
    pub downloads: i64,
    pub yanked: bool,
    pub published_by: String,
    pub created_at: i64,
    pub yanked_at: Option<i64>,
    /// Canonical JSON; only when asked for one version.
    pub template_data: Option<String>,
}

const VERSION_COLS: &str = "template_id, version, changelog, checksum, size_bytes, downloads, \
    yanked, published_by, created_at, yanked_at";

fn version_from_row(r: &AnyRow, with_data: bool) -> Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        template_id: r.try_get("template_id")?,
        version: r.try_get("version")?,
        changelog: r.try_get("changelog")?,
        checksum: r.try_get("checksum")?,
        size_bytes: r.try_get("size_bytes")?,
        downloads: r.try_get("downloads")?,
        yanked: r.try_get::<i64, _>("yanked")? != 0,
        published_by: r.try_get("published_by")?,
        created_at: r.try_get("created_at")?,
        yanked_at: r.try_get("yanked_at")?,
        template_data: if with_data {
            Some(r.try_get("template_data")?)
        } else {
            None
        },
    })
}

pub async fn insert_version_in(
    conn: &mut AnyConnection,
    v: &NewVersion,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO marketplace_template_versions (template_id, version, changelog, template_data, \
         checksum, size_bytes, published_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&v.template_id)
    .bind(&v.version)
    .bind(&v.changelog)
    .bind(&v.data.json)
    .bind(&v.data.checksum)
    .bind(v.data.json.len() as i64)
    .bind(&v.published_by)
    .bind(v.now)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Every version of a template (without graphs), in no particular order.
pub async fn versions_in(
    conn: &mut AnyConnection,
    template_id: &str,
) -> Result<Vec<VersionRow>, sqlx::Error> {
    let sql =
        format!("SELECT {VERSION_COLS} FROM marketplace_template_versions WHERE template_id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(template_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| version_from_row(r, false))
        .collect()
}

pub async fn versions(db: &Db, template_id: &str) -> Result<Vec<VersionRow>, sqlx::Error> {
    let mut conn = db.reader().acquire().await?;
    versions_in(&mut conn, template_id).await
}

/// One version with its graph.
pub async fn version(
    db: &Db,
    template_id: &str,
    version: &str,
) -> Result<Option<VersionRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {VERSION_COLS}, template_data FROM marketplace_template_versions \
         WHERE template_id = $1 AND version = $2"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(template_id)
        .bind(version)
        .fetch_optional(db.reader())
        .await?
        .as_ref()
        .map(|r| version_from_row(r, true))
        .transpose()
}

/// Sets or clears the yanked flag; false when the version does not exist.
pub async fn set_yanked_in(
    conn: &mut AnyConnection,
    template_id: &str,
    version: &str,
    yanked: bool,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "UPDATE marketplace_template_versions SET yanked = $1, yanked_at = $2 \
         WHERE template_id = $3 AND version = $4",
    )
    .bind(crate::flag(yanked))
    .bind(yanked.then_some(now))
    .bind(template_id)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() > 0)
}

/// Records the default version after versions changed.
pub async fn set_latest_in(
    conn: &mut AnyConnection,
    template_id: &str,
    latest: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE marketplace_templates SET latest_version = $1, updated_at = $2 WHERE id = $3",
    )
    .bind(latest)
    .bind(now)
    .bind(template_id)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// Downloads

/// UTC day number of a millisecond timestamp.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// Records a download; returns true when it counted (the first by this user for this version
/// today), in which case the template's and the version's counters went up by one.
pub async fn record_download_in(
    conn: &mut AnyConnection,
    template_id: &str,
    version: &str,
    user_key: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        "INSERT INTO marketplace_downloads (template_id, version, user_key, day, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(template_id)
    .bind(version)
    .bind(user_key)
    .bind(day_of(now))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("UPDATE marketplace_templates SET downloads = downloads + 1 WHERE id = $1")
        .bind(template_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE marketplace_template_versions SET downloads = downloads + 1 \
         WHERE template_id = $1 AND version = $2",
    )
    .bind(template_id)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Ratings and reviews

/// A user's rating of a template, and their review when `reviewed_at` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub id: String,
    pub template_id: String,
    pub workspace: String,
    pub user: String,
    pub rating: i64,
    pub title: Option<String>,
    pub content: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub reviewed_at: Option<i64>,
}

const REVIEW_COLS: &str = "id, template_id, workspace, user_name, rating, title, content, \
    created_at, updated_at, reviewed_at";

fn review_from_row(r: &AnyRow) -> Result<Review, sqlx::Error> {
    Ok(Review {
        id: r.try_get("id")?,
        template_id: r.try_get("template_id")?,
        workspace: r.try_get("workspace")?,
        user: r.try_get("user_name")?,
        rating: r.try_get("rating")?,
        title: r.try_get("title")?,
        content: r.try_get("content")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        reviewed_at: r.try_get("reviewed_at")?,
    })
}

/// What a rating or review did.
#[derive(Debug, Clone, PartialEq)]
pub struct RatingOutcome {
    pub review: Review,
    /// The user had not rated this template before.
    pub first_rating: bool,
    /// The user had not reviewed it before (for reviews).
    pub first_review: bool,
    pub rating_sum: i64,
    pub rating_count: i64,
}

/// Sets the user's rating (and, with `review = Some((title, content))`, their review) of a
/// template. One row per user: a second call updates it, and the template's sum and count move by
/// the difference, so a rating is never counted twice.
#[allow(clippy::too_many_arguments)]
pub async fn rate_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    template_id: &str,
    workspace: &str,
    user: &str,
    stars: i64,
    review: Option<(&str, &str)>,
    now: i64,
) -> Result<RatingOutcome, sqlx::Error> {
    let lock = match dialect {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let select = format!(
        "SELECT {REVIEW_COLS} FROM marketplace_reviews \
         WHERE template_id = $1 AND workspace = $2 AND user_name = $3{lock}"
    );
    let (title, content) = match review {
        Some((t, c)) => (Some(t), Some(c)),
        None => (None, None),
    };
    // Two passes at most: a concurrent first rating by the same user makes our insert a no-op,
    // and the second pass updates the row it created.
    let mut outcome = None;
    for _ in 0..2 {
        let existing = sqlx::query(sqlx::AssertSqlSafe(select.as_str()))
            .bind(template_id)
            .bind(workspace)
            .bind(user)
            .fetch_optional(&mut *conn)
            .await?
            .as_ref()
            .map(review_from_row)
            .transpose()?;
        match existing {
            Some(old) => {
                let first_review = review.is_some() && old.reviewed_at.is_none();
                let mut new = old.clone();
                new.rating = stars;
                new.updated_at = now;
                if review.is_some() {
                    new.title = title.map(str::to_string);
                    new.content = content.map(str::to_string);
                    new.reviewed_at = old.reviewed_at.or(Some(now));
                }
                sqlx::query(
                    "UPDATE marketplace_reviews SET rating = $1, title = $2, content = $3, \
                     updated_at = $4, reviewed_at = $5 WHERE id = $6",
                )
                .bind(new.rating)
                .bind(new.title.as_deref())
                .bind(new.content.as_deref())
                .bind(now)
                .bind(new.reviewed_at)
                .bind(&new.id)
                .execute(&mut *conn)
                .await?;
                outcome = Some((new, stars - old.rating, 0, false, first_review));
                break;
            }
            None => {
                let new = Review {
                    id: aragora_core::ids::new_id(aragora_core::ids::prefix::REVIEW),
                    template_id: template_id.to_string(),
                    workspace: workspace.to_string(),
                    user: user.to_string(),
                    rating: stars,
                    title: title.map(str::to_string),
                    content: content.map(str::to_string),
                    created_at: now,
                    updated_at: now,
                    reviewed_at: review.map(|_| now),
                };
                let res = sqlx::query(
                    "INSERT INTO marketplace_reviews (id, template_id, workspace, user_name, rating, \
                     title, content, created_at, updated_at, reviewed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) ON CONFLICT DO NOTHING",
                )
                .bind(&new.id)
                .bind(template_id)
                .bind(workspace)
                .bind(user)
                .bind(stars)
                .bind(new.title.as_deref())
                .bind(new.content.as_deref())
                .bind(now)
                .bind(new.reviewed_at)
                .execute(&mut *conn)
                .await?;
                if res.rows_affected() == 1 {
                    outcome = Some((new, stars, 1, true, review.is_some()));
                    break;
                }
            }
        }
    }
    let Some((review, d_sum, d_count, first_rating, first_review)) = outcome else {
        return Err(sqlx::Error::Protocol(
            "rating row vanished while being written".into(),
        ));
    };
    // The Bayesian score is computed from the new sum and count in the same statement
    // (integer division, as in aragora_marketplace::rating::bayesian_score).
    let row = sqlx::query(
        "UPDATE marketplace_templates SET rating_sum = rating_sum + $1, rating_count = rating_count + $2, \
         rating_score = (rating_sum + $1 + $3) * $4 / (rating_count + $2 + $5) \
         WHERE id = $6 RETURNING rating_sum, rating_count",
    )
    .bind(d_sum)
    .bind(d_count)
    .bind(rating::PRIOR_WEIGHT * rating::PRIOR_MEAN)
    .bind(rating::SCALE)
    .bind(rating::PRIOR_WEIGHT)
    .bind(template_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(RatingOutcome {
        review,
        first_rating,
        first_review,
        rating_sum: row.try_get(0)?,
        rating_count: row.try_get(1)?,
    })
}

/// Reviews of a template, newest first (by when the review was first written), after the cursor
/// position `(reviewed_at, id)`; also returns the total.
pub async fn reviews(
    db: &Db,
    template_id: &str,
    after: Option<(i64, String)>,
    limit: u32,
) -> Result<(Vec<Review>, i64), sqlx::Error> {
    let mut sql = Sql::default();
    let p_t = sql.arg(Arg::T(template_id.to_string()));
    let mut text = format!(
        "SELECT {REVIEW_COLS} FROM marketplace_reviews WHERE template_id = {p_t} AND reviewed_at IS NOT NULL"
    );
    if let Some((at, id)) = after {
        let a = sql.arg(Arg::I(at));
        let i = sql.arg(Arg::T(id));
        text.push_str(&format!(
            " AND reviewed_at <= {a} AND (reviewed_at < {a} OR id < {i})"
        ));
    }
    let l = sql.arg(Arg::I(i64::from(limit) + 1));
    text.push_str(&format!(" ORDER BY reviewed_at DESC, id DESC LIMIT {l}"));
    sql.text = text;
    let items = sql
        .query()
        .fetch_all(db.reader())
        .await?
        .iter()
        .map(review_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let total: i64 = sqlx::query(
        "SELECT COUNT(*) FROM marketplace_reviews WHERE template_id = $1 AND reviewed_at IS NOT NULL",
    )
    .bind(template_id)
    .fetch_one(db.reader())
    .await?
    .try_get(0)?;
    Ok((items, total))
}

// ---------------------------------------------------------------------------------------------
// Lists, search and counts

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<Template>,
    pub total: i64,
    /// The last item's sort key when another page follows.
    pub next_key: Option<Vec<KeyVal>>,
    /// How the query matched (`Terms` without a query).
    pub mode: Mode,
}

/// Condition on what `viewer` may see (none for admins).
fn visible_to(sql: &mut Sql, viewer: &Viewer) -> Option<String> {
    if viewer.admin {
        return None;
    }
    let ws = sql.arg(Arg::T(viewer.workspace.clone()));
    let user = sql.arg(Arg::T(viewer.user.clone()));
    Some(format!(
        "(t.visibility = 'public' OR (t.workspace = {ws} AND (t.visibility = 'workspace' OR t.owner = {user})))"
    ))
}

/// The WHERE clause over `t` for a request (without the keyset position).
fn where_clause(
    sql: &mut Sql,
    backend: &dyn SearchSql,
    req: &ListRequest,
    viewer: &Viewer,
    mode: Mode,
) -> String {
    let mut conds = vec!["t.unlisted = 0".to_string()];
    if let Some(q) = &req.query {
        conds.push(match mode {
            Mode::Terms if q.terms.is_empty() => "1 = 0".to_string(),
            Mode::Terms => backend.terms_match(sql, q),
            Mode::Substring => match q.substring() {
                Some(s) => backend.name_contains(sql, s),
                None => "1 = 0".to_string(),
            },
        });
    }
    if let Some(v) = visible_to(sql, viewer) {
        conds.push(v);
    }
    if let Some(c) = &req.category {
        let p = sql.arg(Arg::T(c.clone()));
        conds.push(format!("t.category = {p}"));
    }
    if let Some(v) = req.visibility {
        let p = sql.arg(Arg::T(v.as_str().to_string()));
        conds.push(format!("t.visibility = {p}"));
    }
    for tag in &req.tags {
        let p = sql.arg(Arg::T(tag.clone()));
        conds.push(format!(
            "t.id IN (SELECT template_id FROM marketplace_template_tags WHERE tag = {p})"
        ));
    }
    if let Some(min) = req.min_rating {
        let p = sql.arg(Arg::R(min));
        conds.push(format!(
            "t.rating_count > 0 AND t.rating_sum >= {p} * t.rating_count"
        ));
    }
    conds.join(" AND ")
}

async fn count(
    db: &Db,
    backend: &dyn SearchSql,
    req: &ListRequest,
    viewer: &Viewer,
    mode: Mode,
) -> Result<i64, sqlx::Error> {
    count_sql(backend, req, viewer, mode)
        .query()
        .fetch_one(db.reader())
        .await?
        .try_get(0)
}

fn count_sql(backend: &dyn SearchSql, req: &ListRequest, viewer: &Viewer, mode: Mode) -> Sql {
    let mut sql = Sql::default();
    if req.query.is_none() && req.tags.is_empty() && req.min_rating.is_none() {
        // Public templates from the maintained counts, the rest counted (few, indexed).
        let mut parts = Vec::new();
        if matches!(req.visibility, None | Some(Visibility::Public)) {
            let cat = match &req.category {
                Some(c) => {
                    let p = sql.arg(Arg::T(c.clone()));
                    format!(" WHERE category = {p}")
                }
                None => String::new(),
            };
            parts.push(format!(
                "COALESCE((SELECT CAST(SUM(public_templates) AS BIGINT) FROM marketplace_category_counts{cat}), 0)"
            ));
        }
        if req.visibility != Some(Visibility::Public) {
            let mut conds = vec![
                "t.unlisted = 0".to_string(),
                "t.visibility <> 'public'".to_string(),
            ];
            if !viewer.admin {
                let ws = sql.arg(Arg::T(viewer.workspace.clone()));
                let user = sql.arg(Arg::T(viewer.user.clone()));
                conds.push(format!(
                    "t.workspace = {ws} AND (t.visibility = 'workspace' OR t.owner = {user})"
                ));
            }
            if let Some(v) = req.visibility {
                let p = sql.arg(Arg::T(v.as_str().to_string()));
                conds.push(format!("t.visibility = {p}"));
            }
            if let Some(c) = &req.category {
                let p = sql.arg(Arg::T(c.clone()));
                conds.push(format!("t.category = {p}"));
            }
            parts.push(format!(
                "(SELECT COUNT(*) FROM marketplace_templates t WHERE {})",
                conds.join(" AND ")
            ));
        }
        sql.text = format!("SELECT CAST({} AS BIGINT)", parts.join(" + "));
    } else {
        let w = where_clause(&mut sql, backend, req, viewer, mode);
        sql.text = format!("SELECT COUNT(*) FROM marketplace_templates t WHERE {w}");
    }
    sql
}

/// SQL for a key column of the relation `alias`.
fn key_expr(c: &KeyColumn, alias: &str) -> String {
    format!("{alias}.{}", c.name)
}

fn keyset(sql: &mut Sql, cols: &[KeyColumn], values: &[KeyVal], alias: &str) -> String {
    let args: Vec<String> = values
        .iter()
        .map(|v| match v {
            KeyVal::Int(i) => sql.arg(Arg::I(*i)),
            KeyVal::Str(s) => sql.arg(Arg::T(s.clone())),
        })
        .collect();
    // (c0 op v0) OR (c0 = v0 AND ((c1 op v1) OR (c1 = v1 AND …))), plus `c0 <=/>= v0` so the
    // database can seek into the index instead of scanning from the start.
    let mut inner = String::new();
    for (i, c) in cols.iter().enumerate().rev() {
        let e = key_expr(c, alias);
        let op = if c.descending { "<" } else { ">" };
        inner = if inner.is_empty() {
            format!("{e} {op} {}", args[i])
        } else {
            format!("({e} {op} {a} OR ({e} = {a} AND ({inner})))", a = args[i])
        };
    }
    let first = key_expr(&cols[0], alias);
    let seek = if cols[0].descending { "<=" } else { ">=" };
    format!("{first} {seek} {} AND {inner}", args[0])
}

fn order_by(cols: &[KeyColumn], alias: &str) -> String {
    cols.iter()
        .map(|c| {
            format!(
                "{} {}",
                key_expr(c, alias),
                if c.descending { "DESC" } else { "ASC" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CAST(… AS BIGINT)` field score of `q` over `t.search_*` (see `aragora_marketplace::search`).
fn score_expr(sql: &mut Sql, backend: &dyn SearchSql, q: &Query) -> String {
    if q.terms.is_empty() {
        return "CAST(0 AS BIGINT)".to_string();
    }
    let pos = backend.position_fn();
    let mut parts = Vec::new();
    for i in 0..q.terms.len() {
        let n = sql.arg(Arg::T(q.needle(i)));
        for (col, w) in [
            ("search_name", search::WEIGHT_NAME),
            ("search_tags", search::WEIGHT_TAGS),
            ("search_desc", search::WEIGHT_DESCRIPTION),
        ] {
            parts.push(format!(
                "CASE WHEN {pos}(t.{col}, {n}) > 0 THEN {w} ELSE 0 END"
            ));
        }
    }
    format!("CAST({} AS BIGINT)", parts.join(" + "))
}

/// The page query. Two shapes:
///
/// - plain (`with_total == false`, not relevance): one indexed scan in sort order, stopping after
///   `limit + 1` rows;
/// - ranked: the sort key (and, with `with_total`, `COUNT(*) OVER ()`, the total in the same pass)
///   is computed over the narrow key columns of every candidate, and only the rows of the page
///   are then read in full. Used for relevance and for filtered lists whose candidates must all
///   be visited anyway.
fn page_sql(
    backend: &dyn SearchSql,
    req: &ListRequest,
    viewer: &Viewer,
    mode: Mode,
    with_total: bool,
) -> Sql {
    let cols = req.sort.key();
    let relevance = req.sort == Sort::Relevance;
    let mut sql = Sql::default();
    if !relevance && !with_total {
        let w = where_clause(&mut sql, backend, req, viewer, mode);
        let pos = req
            .after
            .as_ref()
            .map(|(_, k)| format!(" AND {}", keyset(&mut sql, cols, k, "t")))
            .unwrap_or_default();
        let limit = sql.arg(Arg::I(i64::from(req.limit) + 1));
        let offset = sql.arg(Arg::I(req.offset as i64));
        sql.text = format!(
            "SELECT {TEMPLATE_COLS} FROM marketplace_templates t WHERE {w}{pos} \
             ORDER BY {} LIMIT {limit} OFFSET {offset}",
            order_by(cols, "t")
        );
        return sql;
    }
    let mut keys = "t.id, t.downloads, t.rating_score, t.created_at, t.updated_at".to_string();
    let mut extra = String::new();
    if let (true, Some(q)) = (relevance, &req.query) {
        let k = sql.arg(Arg::T(q.name_key.clone()));
        keys.push_str(&format!(
            ", CAST(CASE WHEN t.name_key = {k} THEN 1 ELSE 0 END AS BIGINT) AS exact, {} AS score",
            score_expr(&mut sql, backend, q)
        ));
        extra.push_str(", k.exact, k.score");
    }
    let w = where_clause(&mut sql, backend, req, viewer, mode);
    let pos = req
        .after
        .as_ref()
        .map(|(_, k)| format!(" WHERE {}", keyset(&mut sql, cols, k, "s")))
        .unwrap_or_default();
    let limit = sql.arg(Arg::I(i64::from(req.limit) + 1));
    let offset = sql.arg(Arg::I(req.offset as i64));
    let (total, fence) = if with_total {
        extra.push_str(", k.total");
        (
            ", CAST(COUNT(*) OVER () AS BIGINT) AS total",
            backend.subquery_fence(),
        )
    } else {
        ("", "")
    };
    sql.text = format!(
        "SELECT {TEMPLATE_COLS}{extra} FROM (\
           SELECT s.*{total} FROM (SELECT {keys} FROM marketplace_templates t WHERE {w}{fence}) s{pos} \
           ORDER BY {} LIMIT {limit} OFFSET {offset}\
         ) k JOIN marketplace_templates t ON t.id = k.id ORDER BY {}",
        order_by(cols, "s"),
        order_by(cols, "k")
    );
    sql
}

/// One page: the items, the next key, and the total when the query computed it.
async fn page(
    db: &Db,
    backend: &dyn SearchSql,
    req: &ListRequest,
    viewer: &Viewer,
    mode: Mode,
    with_total: bool,
) -> Result<(Vec<Template>, Option<Vec<KeyVal>>, Option<i64>), sqlx::Error> {
    let cols = req.sort.key();
    let rows = page_sql(backend, req, viewer, mode, with_total)
        .query()
        .fetch_all(db.reader())
        .await?;
    let total = match rows.first() {
        Some(r) if with_total => Some(r.try_get::<i64, _>("total")?),
        _ => None,
    };
    let more = rows.len() > req.limit as usize;
    let rows = &rows[..rows.len().min(req.limit as usize)];
    let items = rows
        .iter()
        .map(template_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_key = match (more, rows.last(), items.last()) {
        (true, Some(row), Some(t)) => Some(
            cols.iter()
                .map(|c| {
                    Ok(match c.name {
                        "id" => KeyVal::Str(t.id.clone()),
                        "downloads" => KeyVal::Int(t.downloads),
                        "rating_score" => KeyVal::Int(t.rating_score),
                        "created_at" => KeyVal::Int(t.created_at),
                        "updated_at" => KeyVal::Int(t.updated_at),
                        other => KeyVal::Int(row.try_get::<i64, _>(other)?),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
        ),
        _ => None,
    };
    Ok((items, next_key, total))
}

/// Whether the total must be counted row by row (it cannot come from the maintained counts).
fn filtered(req: &ListRequest) -> bool {
    req.query.is_some() || !req.tags.is_empty() || req.min_rating.is_some()
}

/// Lists or searches the templates `viewer` may see.
///
/// Unfiltered lists take their total from the maintained counts and read one index range.
/// Filtered first pages compute the total in the same pass as the page (window count); cursor
/// pages count separately, since their page query sees only the rows after the cursor.
pub async fn list(db: &Db, req: &ListRequest, viewer: &Viewer) -> Result<ListPage, sqlx::Error> {
    let backend = Backend::of(db.dialect());
    let backend = backend.get();
    if filtered(req) && req.after.is_none() {
        let mut mode = Mode::Terms;
        let (mut items, mut next_key, mut total) =
            page(db, backend, req, viewer, mode, true).await?;
        if total.is_none() && req.offset == 0 {
            total = Some(0);
            if let Some(q) = &req.query
                && q.substring().is_some()
            {
                mode = Mode::Substring;
                (items, next_key, total) = page(db, backend, req, viewer, mode, true).await?;
                total = total.or(Some(0));
            }
        }
        let total = match total {
            Some(t) => t,
            // A page past the end: count (and pick the mode) the long way.
            None => {
                let n = count(db, backend, req, viewer, Mode::Terms).await?;
                if n == 0 && req.query.as_ref().is_some_and(|q| q.substring().is_some()) {
                    mode = Mode::Substring;
                    (items, next_key, _) = page(db, backend, req, viewer, mode, false).await?;
                    count(db, backend, req, viewer, mode).await?
                } else {
                    n
                }
            }
        };
        return Ok(ListPage {
            items,
            total,
            next_key,
            mode,
        });
    }
    let mode = req.after.as_ref().map(|(m, _)| *m).unwrap_or(Mode::Terms);
    let total = count(db, backend, req, viewer, mode).await?;
    let (items, next_key, _) = page(db, backend, req, viewer, mode, false).await?;
    Ok(ListPage {
        items,
        total,
        next_key,
        mode,
    })
}

/// The query plans of the statements [`list`] runs for `req` (count, then page): SQLite's
/// `EXPLAIN QUERY PLAN`, PostgreSQL's `EXPLAIN (ANALYZE, BUFFERS)`. For tuning and the benchmark.
pub async fn explain(
    db: &Db,
    req: &ListRequest,
    viewer: &Viewer,
) -> Result<Vec<String>, sqlx::Error> {
    let page = list(db, req, viewer).await?;
    let backend = Backend::of(db.dialect());
    let backend = backend.get();
    let mut out = Vec::new();
    for (what, mut sql) in [
        ("count", count_sql(backend, req, viewer, page.mode)),
        (
            "page",
            page_sql(backend, req, viewer, page.mode, filtered(req)),
        ),
    ] {
        out.push(format!("-- {what}: {}", sql.text));
        sql.text = match db.dialect() {
            Dialect::Sqlite => format!("EXPLAIN QUERY PLAN {}", sql.text),
            Dialect::Postgres => format!("EXPLAIN (ANALYZE, BUFFERS) {}", sql.text),
        };
        for r in sql.query().fetch_all(db.reader()).await? {
            out.push(match db.dialect() {
                Dialect::Sqlite => r.try_get::<String, _>(3)?,
                Dialect::Postgres => r.try_get::<String, _>(0)?,
            });
        }
    }
    Ok(out)
}

/// Categories with the number of listed templates `viewer` may see, by name.
pub async fn categories(db: &Db, viewer: &Viewer) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut counts: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for r in sqlx::query(
        "SELECT category, public_templates FROM marketplace_category_counts WHERE public_templates > 0",
    )
    .fetch_all(db.reader())
    .await?
    {
        counts.insert(r.try_get(0)?, r.try_get(1)?);
    }
    let mut sql = Sql::default();
    let mut conds = vec![
        "t.unlisted = 0".to_string(),
        "t.visibility <> 'public'".to_string(),
    ];
    if !viewer.admin {
        let ws = sql.arg(Arg::T(viewer.workspace.clone()));
        let user = sql.arg(Arg::T(viewer.user.clone()));
        conds.push(format!(
            "t.workspace = {ws} AND (t.visibility = 'workspace' OR t.owner = {user})"
        ));
    }
    sql.text = format!(
        "SELECT t.category, COUNT(*) FROM marketplace_templates t WHERE {} GROUP BY t.category",
        conds.join(" AND ")
    );
    for r in sql.query().fetch_all(db.reader()).await? {
        *counts.entry(r.try_get(0)?).or_default() += r.try_get::<i64, _>(1)?;
    }
    Ok(counts.into_iter().collect())
}

/// Listed templates per category, whatever their visibility (for the metrics gauge).
pub async fn category_totals(db: &Db) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query(
        "SELECT category, COUNT(*) FROM marketplace_templates WHERE unlisted = 0 GROUP BY category",
    )
    .fetch_all(db.reader())
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_seeks_then_breaks_ties() {
        let mut sql = Sql::default();
        let k = keyset(
            &mut sql,
            Sort::Downloads.key(),
            &[KeyVal::Int(5), KeyVal::Str("tmpl-1".into())],
            "t",
        );
        assert_eq!(
            k,
            "t.downloads <= $1 AND (t.downloads < $1 OR (t.downloads = $1 AND (t.id > $2)))"
        );
        assert_eq!(
            order_by(Sort::Newest.key(), "t"),
            "t.created_at DESC, t.id DESC"
        );
        assert_eq!(
            order_by(Sort::Relevance.key(), "s"),
            "s.exact DESC, s.score DESC, s.downloads DESC, s.id ASC"
        );
    }
}
