//! The SQL the connector sends (T-SQL; `@P1`, `@P2` are tiberius' parameter names). Identifiers
//! are bracket-quoted; values are always parameters. Golden-tested in tests/sqlserver.rs.

use super::source::TableRef;

/// `[name]` with `]` doubled.
pub fn quote(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

/// `N'text'` with quotes doubled (only for names the server itself returned or validated).
pub fn nliteral(s: &str) -> String {
    format!("N'{}'", s.replace('\'', "''"))
}

pub const PING: &str = "SELECT 1";

pub const DATABASE_FLAGS: &str = "SELECT CAST(d.is_cdc_enabled AS int), \
     CAST(CASE WHEN EXISTS (SELECT 1 FROM sys.change_tracking_databases c \
     WHERE c.database_id = d.database_id) THEN 1 ELSE 0 END AS int) \
     FROM sys.databases d WHERE d.database_id = DB_ID()";

/// Capture instances with their source table; @P1 = schema.
pub const CAPTURE_INSTANCES: &str = "SELECT ct.capture_instance, s.name, t.name, ct.start_lsn, \
     ct.object_id \
     FROM cdc.change_tables ct \
     JOIN sys.tables t ON t.object_id = ct.source_object_id \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     WHERE s.name = @P1 \
     ORDER BY ct.start_lsn, ct.capture_instance";

/// Key columns of a capture instance; @P1 = the change table's object_id.
pub const INSTANCE_KEY_COLUMNS: &str =
    "SELECT column_name FROM cdc.index_columns WHERE object_id = @P1 ORDER BY index_ordinal";

/// Captured columns of a capture instance; @P1 = the change table's object_id.
pub const INSTANCE_COLUMNS: &str =
    "SELECT column_name FROM cdc.captured_columns WHERE object_id = @P1 ORDER BY column_ordinal";

/// 1 when the database's capture job is executing in the current SQL Server Agent session.
pub const CAPTURE_JOB: &str = "SELECT CAST(CASE WHEN EXISTS (\
     SELECT 1 FROM msdb.dbo.cdc_jobs c \
     JOIN msdb.dbo.sysjobactivity a ON a.job_id = c.job_id \
     WHERE c.database_id = DB_ID() AND c.job_type = N'capture' \
     AND a.session_id = (SELECT MAX(session_id) FROM msdb.dbo.syssessions) \
     AND a.start_execution_date IS NOT NULL AND a.stop_execution_date IS NULL) \
     THEN 1 ELSE 0 END AS int), \
     (SELECT COUNT(*) FROM msdb.dbo.cdc_jobs c WHERE c.database_id = DB_ID() AND c.job_type = N'capture')";

pub const MAX_LSN: &str = "SELECT sys.fn_cdc_get_max_lsn()";

/// @P1 = capture instance name.
pub const MIN_LSN: &str = "SELECT sys.fn_cdc_get_min_lsn(@P1)";

/// The commit LSN `transactions` transactions after @P1, at most @P2.
pub fn window_end(transactions: u32) -> String {
    format!(
        "SELECT MAX(w.start_lsn) FROM (SELECT TOP ({transactions}) m.start_lsn \
         FROM cdc.lsn_time_mapping m WHERE m.start_lsn > @P1 AND m.start_lsn <= @P2 \
         ORDER BY m.start_lsn) AS w"
    )
}

/// Every change of one capture instance after @P1 (exclusive) up to @P2, updates with their
/// before image, plus the commit time in UTC ms. The function name is built from the instance
/// name the server listed in `cdc.change_tables`.
pub fn all_changes(instance: &str) -> String {
    format!(
        "SELECT c.*, DATEDIFF_BIG(millisecond, '19700101', \
         DATEADD(minute, DATEDIFF(minute, SYSDATETIME(), SYSUTCDATETIME()), \
         sys.fn_cdc_map_lsn_to_time(c.__$start_lsn))) AS [__$aragora_commit_ms] \
         FROM cdc.{}(sys.fn_cdc_increment_lsn(@P1), @P2, N'all update old') AS c \
         ORDER BY c.__$start_lsn, c.__$seqval, c.__$operation",
        quote(&format!("fn_cdc_get_all_changes_{instance}"))
    )
}

/// Tables with Change Tracking in schema @P1.
pub const TRACKED_TABLES: &str = "SELECT s.name, t.name FROM sys.change_tracking_tables c \
     JOIN sys.tables t ON t.object_id = c.object_id \
     JOIN sys.schemas s ON s.schema_id = t.schema_id \
     WHERE s.name = @P1 ORDER BY t.name";

pub const CT_CURRENT_VERSION: &str = "SELECT CHANGE_TRACKING_CURRENT_VERSION()";

/// @P1 = `[schema].[table]`.
pub const CT_MIN_VALID_VERSION: &str = "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(@P1))";

/// Net changes of a table after version @P1 up to @P2, joined to the current rows. Key columns
/// come back as `__$key_<n>` so they survive the join whatever their names.
pub fn ct_changes(table: &TableRef, key_columns: &[String]) -> String {
    let keys: Vec<String> = key_columns
        .iter()
        .enumerate()
        .map(|(i, k)| format!("ct.{} AS [__$key_{i}]", quote(k)))
        .collect();
    let join: Vec<String> = key_columns
        .iter()
        .map(|k| format!("t.{q} = ct.{q}", q = quote(k)))
        .collect();
    format!(
        "SELECT ct.SYS_CHANGE_VERSION AS [__$version], ct.SYS_CHANGE_OPERATION AS [__$operation], \
         {keys}, t.* \
         FROM CHANGETABLE(CHANGES {table}, @P1) AS ct \
         LEFT OUTER JOIN {table} AS t ON {join} \
         WHERE ct.SYS_CHANGE_VERSION <= @P2 \
         ORDER BY ct.SYS_CHANGE_VERSION, {order}",
        keys = keys.join(", "),
        table = table.quoted(),
        join = join.join(" AND "),
        order = key_columns
            .iter()
            .map(|k| format!("ct.{}", quote(k)))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Primary-key columns of @P1 (`[schema].[table]`) in key order.
pub const PRIMARY_KEY: &str = "SELECT c.name FROM sys.indexes i \
     JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id \
     JOIN sys.columns c ON c.object_id = ic.object_id AND c.column_id = ic.column_id \
     WHERE i.is_primary_key = 1 AND i.object_id = OBJECT_ID(@P1) ORDER BY ic.key_ordinal";

/// One page of a table in key order; @P1 = offset, @P2 = page size.
pub fn scan(table: &TableRef, key_columns: &[String]) -> String {
    let order: Vec<String> = key_columns.iter().map(|k| quote(k)).collect();
    format!(
        "SELECT * FROM {} ORDER BY {} OFFSET @P1 ROWS FETCH NEXT @P2 ROWS ONLY",
        table.quoted(),
        order.join(", ")
    )
}

/// The guide's setup SQL for CDC on the configured tables (for `install_sql`, run by a DBA).
pub fn cdc_setup(database: &str, tables: &[TableRef]) -> String {
    let mut out = format!("USE {};\nEXEC sys.sp_cdc_enable_db;\n", quote(database));
    for t in tables {
        out.push_str(&format!(
            "EXEC sys.sp_cdc_enable_table\n    @source_schema = {},\n    @source_name = {},\n    \
             @role_name = NULL,\n    @supports_net_changes = 1;\n",
            nliteral(&t.schema),
            nliteral(&t.name)
        ));
    }
    out
}

/// The guide's setup SQL for Change Tracking.
pub fn change_tracking_setup(database: &str, tables: &[TableRef]) -> String {
    let mut out = format!(
        "ALTER DATABASE {} SET CHANGE_TRACKING = ON\n    (CHANGE_RETENTION = 2 DAYS, AUTO_CLEANUP = ON);\n",
        quote(database)
    );
    for t in tables {
        out.push_str(&format!(
            "ALTER TABLE {} ENABLE CHANGE_TRACKING\n    WITH (TRACK_COLUMNS_UPDATED = ON);\n",
            t.quoted()
        ));
    }
    out
}
