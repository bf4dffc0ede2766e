//! What the connector asks of a SQL Server: one method per query it runs. The real
//! implementation ([`super::tds::TdsSource`]) sends the SQL of [`super::sql`] over TDS; the
//! simulator ([`super::sim::Simulator`]) answers the same questions from memory with the same
//! semantics, so the connector's logic above this trait is tested once for both.

use super::lsn::Lsn;
use crate::CdcError;
use async_trait::async_trait;
use serde_json::{Map, Value};

/// A table as the connector names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableRef {
    pub schema: String,
    pub name: String,
}

impl TableRef {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableRef {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// `[schema].[name]`.
    pub fn quoted(&self) -> String {
        format!(
            "{}.{}",
            super::sql::quote(&self.schema),
            super::sql::quote(&self.name)
        )
    }

    /// `schema.name`, what events carry in `table`.
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A CDC capture instance (a row of `cdc.change_tables`).
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureInstance {
    pub name: String,
    pub table: TableRef,
    /// When the instance became valid: it holds every change with an LSN at or above this.
    pub start_lsn: Lsn,
    /// Columns of the instance's unique index (the table's primary key by default).
    pub key_columns: Vec<String>,
    pub captured_columns: Vec<String>,
}

/// A table under Change Tracking, with its primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedTable {
    pub table: TableRef,
    pub key_columns: Vec<String>,
}

/// One row of `cdc.fn_cdc_get_all_changes_<instance>(…, N'all update old')`.
#[derive(Debug, Clone, PartialEq)]
pub struct CdcRow {
    pub start_lsn: Lsn,
    pub seqval: Lsn,
    /// `__$operation`: 1 delete, 2 insert, 3 update (before image), 4 update (after image).
    pub operation: u8,
    /// Commit time of the transaction (UTC ms) from `cdc.lsn_time_mapping`, when known.
    pub commit_ms: Option<i64>,
    /// The captured columns, without the `__$` metadata columns.
    pub row: Map<String, Value>,
}

/// One row of `CHANGETABLE(CHANGES t, @since)` joined to the table.
#[derive(Debug, Clone, PartialEq)]
pub struct CtRow {
    pub version: i64,
    /// `SYS_CHANGE_OPERATION`: `I`, `U` or `D` (net of everything since `@since`).
    pub operation: char,
    pub key: Map<String, Value>,
    /// The current row (`None` for deletes, and when the row is gone by the time it is read).
    pub row: Option<Map<String, Value>>,
}

/// Whether the SQL Server Agent job that fills the change tables runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureJob {
    Running,
    NotRunning(String),
    /// The state cannot be read (no access to msdb, Azure SQL Database's scheduler, …).
    Unknown(String),
}

#[async_trait]
pub trait SqlServerSource: Send + Sync {
    /// `SELECT 1` round trip.
    async fn ping(&self) -> Result<(), CdcError>;

    /// `is_cdc_enabled` of the database and whether Change Tracking is on for it.
    async fn database_flags(&self) -> Result<(bool, bool), CdcError>;

    /// Capture instances of the tables in `schema` (all of them when `tables` is empty), oldest
    /// first (by `start_lsn`).
    async fn capture_instances(
        &self,
        schema: &str,
        tables: &[String],
    ) -> Result<Vec<CaptureInstance>, CdcError>;

    async fn capture_job(&self) -> Result<CaptureJob, CdcError>;

    /// `sys.fn_cdc_get_max_lsn()`; zero when nothing was captured yet.
    async fn max_lsn(&self) -> Result<Lsn, CdcError>;

    /// `sys.fn_cdc_get_min_lsn(instance)`; zero when the instance does not exist.
    async fn min_lsn(&self, instance: &str) -> Result<Lsn, CdcError>;

    /// The commit LSN of the `transactions`-th transaction after `after`, capped at `max`
    /// (from `cdc.lsn_time_mapping`): bounds how much one poll reads.
    async fn window_end(&self, after: Lsn, max: Lsn, transactions: u32) -> Result<Lsn, CdcError>;

    /// Changes of `instance` with `after < __$start_lsn <= to`, in (start_lsn, seqval,
    /// operation) order.
    async fn cdc_changes(
        &self,
        instance: &CaptureInstance,
        after: Lsn,
        to: Lsn,
    ) -> Result<Vec<CdcRow>, CdcError>;

    /// Tables in `schema` with Change Tracking enabled (all of them when `tables` is empty); a
    /// listed table without it is returned too, with `Ok(None)` from `ct_min_valid_version`.
    async fn tracked_tables(
        &self,
        schema: &str,
        tables: &[String],
    ) -> Result<Vec<TrackedTable>, CdcError>;

    /// `CHANGE_TRACKING_CURRENT_VERSION()`; `None` when Change Tracking is off.
    async fn ct_current_version(&self) -> Result<Option<i64>, CdcError>;

    /// `CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(table))`; `None` when the table is not
    /// tracked.
    async fn ct_min_valid_version(&self, table: &TableRef) -> Result<Option<i64>, CdcError>;

    /// Net changes of `table` with `since < SYS_CHANGE_VERSION <= upto`, in version order.
    async fn ct_changes(
        &self,
        table: &TrackedTable,
        since: i64,
        upto: i64,
    ) -> Result<Vec<CtRow>, CdcError>;

    /// Primary-key columns of a table (empty when it has none).
    async fn primary_key(&self, table: &TableRef) -> Result<Vec<String>, CdcError>;

    /// One page of the table in key order.
    async fn scan(
        &self,
        table: &TableRef,
        key_columns: &[String],
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Map<String, Value>>, CdcError>;
}
