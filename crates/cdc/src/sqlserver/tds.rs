//! [`SqlServerSource`] over TDS with tiberius (tokio, rustls).

use super::lsn::Lsn;
use super::source::{
    CaptureInstance, CaptureJob, CdcRow, CtRow, SqlServerSource, TableRef, TrackedTable,
};
use super::{SqlServerConfig, sql};
use crate::CdcError;
use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tiberius::{AuthMethod, Client, ColumnData, Config, EncryptionLevel, FromSql, Row, ToSql};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type Conn = Client<Compat<TcpStream>>;

impl From<tiberius::error::Error> for CdcError {
    fn from(e: tiberius::error::Error) -> Self {
        match &e {
            tiberius::error::Error::Server(t) => {
                CdcError::Source(format!("error {}: {}", t.code(), t.message()))
            }
            _ => CdcError::Source(e.to_string()),
        }
    }
}

/// One TDS session; calls are serialized on it.
pub struct TdsSource {
    conn: Mutex<Conn>,
}

impl TdsSource {
    pub async fn connect(
        cfg: &SqlServerConfig,
        username: &str,
        password: &str,
    ) -> Result<TdsSource, CdcError> {
        let mut c = Config::new();
        c.host(&cfg.host);
        c.port(cfg.port);
        c.database(&cfg.database);
        c.application_name("aragora-cdc");
        c.authentication(AuthMethod::sql_server(username, password));
        c.encryption(if cfg.encrypt {
            EncryptionLevel::Required
        } else {
            EncryptionLevel::Off
        });
        if cfg.trust_server_certificate {
            c.trust_cert();
        }
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            TcpStream::connect(c.get_addr()),
        )
        .await
        .map_err(|_| CdcError::Source(format!("connecting to {} timed out", c.get_addr())))?
        .map_err(|e| CdcError::Source(format!("connecting to {}: {e}", c.get_addr())))?;
        tcp.set_nodelay(true)
            .map_err(|e| CdcError::Source(e.to_string()))?;
        let conn = Client::connect(c, tcp.compat_write()).await?;
        Ok(TdsSource {
            conn: Mutex::new(conn),
        })
    }

    /// Runs T-SQL without results (setup in tests and tools).
    pub async fn execute_batch(&self, sql: &str) -> Result<(), CdcError> {
        let mut conn = self.conn.lock().await;
        conn.simple_query(sql).await?.into_results().await?;
        Ok(())
    }

    async fn rows(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<Row>, CdcError> {
        let mut conn = self.conn.lock().await;
        let stream = conn.query(sql, params).await?;
        Ok(stream.into_first_result().await?)
    }

    async fn one(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Option<Row>, CdcError> {
        Ok(self.rows(sql, params).await?.into_iter().next())
    }

    async fn strings(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<String>, CdcError> {
        self.rows(sql, params)
            .await?
            .iter()
            .map(|r| {
                r.try_get::<&str, _>(0)?
                    .map(str::to_string)
                    .ok_or_else(|| CdcError::Source("unexpected NULL name".into()))
            })
            .collect()
    }

    async fn lsn(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Lsn, CdcError> {
        match self.one(sql, params).await? {
            Some(r) => match r.try_get::<&[u8], _>(0)? {
                Some(b) => Lsn::from_bytes(b),
                None => Ok(Lsn::ZERO),
            },
            None => Ok(Lsn::ZERO),
        }
    }
}

fn lsn_col(row: &Row, name: &str) -> Result<Lsn, CdcError> {
    match row.try_get::<&[u8], _>(name)? {
        Some(b) => Lsn::from_bytes(b),
        None => Err(CdcError::Source(format!("{name} is NULL"))),
    }
}

/// A TDS value as JSON: numbers stay numbers (decimals become strings to keep their precision),
/// binary becomes `0x…` hex, times RFC 3339 / ISO 8601.
pub fn to_json(data: &ColumnData<'static>) -> Value {
    match data {
        ColumnData::U8(v) => json!(v),
        ColumnData::I16(v) => json!(v),
        ColumnData::I32(v) => json!(v),
        ColumnData::I64(v) => json!(v),
        ColumnData::F32(v) => json!(v),
        ColumnData::F64(v) => json!(v),
        ColumnData::Bit(v) => json!(v),
        ColumnData::String(v) => json!(v.as_deref()),
        ColumnData::Guid(v) => json!(v.map(|g| g.to_string())),
        ColumnData::Binary(v) => json!(v.as_deref().map(|b| format!("0x{}", hex::encode_upper(b)))),
        ColumnData::Numeric(v) => json!(v.map(|n| n.to_string())),
        ColumnData::Xml(v) => json!(v.as_deref().map(|x| x.to_string())),
        ColumnData::DateTime(_) | ColumnData::SmallDateTime(_) | ColumnData::DateTime2(_) => {
            match chrono::NaiveDateTime::from_sql(data) {
                Ok(Some(t)) => json!(t.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
                _ => Value::Null,
            }
        }
        ColumnData::Date(_) => match chrono::NaiveDate::from_sql(data) {
            Ok(Some(d)) => json!(d.to_string()),
            _ => Value::Null,
        },
        ColumnData::Time(_) => match chrono::NaiveTime::from_sql(data) {
            Ok(Some(t)) => json!(t.to_string()),
            _ => Value::Null,
        },
        ColumnData::DateTimeOffset(_) => {
            match chrono::DateTime::<chrono::FixedOffset>::from_sql(data) {
                Ok(Some(t)) => json!(t.to_rfc3339()),
                _ => Value::Null,
            }
        }
    }
}

/// The row's columns as JSON, leaving out `__$` metadata columns.
fn row_map(row: &Row) -> Map<String, Value> {
    row.cells()
        .filter(|(c, _)| !c.name().starts_with("__$"))
        .map(|(c, d)| (c.name().to_string(), to_json(d)))
        .collect()
}

#[async_trait]
impl SqlServerSource for TdsSource {
    async fn ping(&self) -> Result<(), CdcError> {
        self.rows(sql::PING, &[]).await.map(|_| ())
    }

    async fn database_flags(&self) -> Result<(bool, bool), CdcError> {
        let r = self
            .one(sql::DATABASE_FLAGS, &[])
            .await?
            .ok_or_else(|| CdcError::Source("the database is not in sys.databases".into()))?;
        Ok((
            r.try_get::<i32, _>(0)?.unwrap_or(0) == 1,
            r.try_get::<i32, _>(1)?.unwrap_or(0) == 1,
        ))
    }

    async fn capture_instances(
        &self,
        schema: &str,
        tables: &[String],
    ) -> Result<Vec<CaptureInstance>, CdcError> {
        let rows = self.rows(sql::CAPTURE_INSTANCES, &[&schema]).await?;
        let mut out = Vec::new();
        for r in rows {
            let name: &str = r.try_get(0)?.unwrap_or_default();
            let s: &str = r.try_get(1)?.unwrap_or_default();
            let t: &str = r.try_get(2)?.unwrap_or_default();
            if !tables.is_empty() && !tables.iter().any(|x| x == t) {
                continue;
            }
            let start_lsn =
                lsn_col(&r, "start_lsn").or_else(|_| match r.try_get::<&[u8], _>(3)? {
                    Some(b) => Lsn::from_bytes(b),
                    None => Ok(Lsn::ZERO),
                })?;
            let object_id: i32 = r.try_get(4)?.unwrap_or(0);
            let key_columns = self
                .strings(sql::INSTANCE_KEY_COLUMNS, &[&object_id])
                .await?;
            let captured_columns = self.strings(sql::INSTANCE_COLUMNS, &[&object_id]).await?;
            out.push(CaptureInstance {
                name: name.to_string(),
                table: TableRef::new(s, t),
                start_lsn,
                key_columns,
                captured_columns,
            });
        }
        Ok(out)
    }

    async fn capture_job(&self) -> Result<CaptureJob, CdcError> {
        match self.one(sql::CAPTURE_JOB, &[]).await {
            Ok(Some(r)) => {
                let running = r.try_get::<i32, _>(0)?.unwrap_or(0) == 1;
                let jobs = r.try_get::<i32, _>(1)?.unwrap_or(0);
                Ok(if running {
                    CaptureJob::Running
                } else if jobs == 0 {
                    CaptureJob::NotRunning(
                        "the database has no CDC capture job (msdb.dbo.cdc_jobs): run \
                         sys.sp_cdc_add_job @job_type = N'capture'"
                            .into(),
                    )
                } else {
                    CaptureJob::NotRunning(
                        "the CDC capture job is not executing: start SQL Server Agent (or \
                         sys.sp_cdc_start_job)"
                            .into(),
                    )
                })
            }
            Ok(None) => Ok(CaptureJob::Unknown("no answer from msdb".into())),
            Err(e) => Ok(CaptureJob::Unknown(format!("cannot read msdb: {e}"))),
        }
    }

    async fn max_lsn(&self) -> Result<Lsn, CdcError> {
        self.lsn(sql::MAX_LSN, &[]).await
    }

    async fn min_lsn(&self, instance: &str) -> Result<Lsn, CdcError> {
        self.lsn(sql::MIN_LSN, &[&instance]).await
    }

    async fn window_end(&self, after: Lsn, max: Lsn, transactions: u32) -> Result<Lsn, CdcError> {
        let (a, m) = (&after.0[..], &max.0[..]);
        let end = self.lsn(&sql::window_end(transactions), &[&a, &m]).await?;
        Ok(if end.is_zero() { max } else { end })
    }

    async fn cdc_changes(
        &self,
        instance: &CaptureInstance,
        after: Lsn,
        to: Lsn,
    ) -> Result<Vec<CdcRow>, CdcError> {
        let (a, t) = (&after.0[..], &to.0[..]);
        let rows = self
            .rows(&sql::all_changes(&instance.name), &[&a, &t])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CdcRow {
                    start_lsn: lsn_col(r, "__$start_lsn")?,
                    seqval: lsn_col(r, "__$seqval")?,
                    operation: r.try_get::<i32, _>("__$operation")?.unwrap_or(0) as u8,
                    commit_ms: r.try_get::<i64, _>("__$aragora_commit_ms")?,
                    row: row_map(r),
                })
            })
            .collect()
    }

    async fn tracked_tables(
        &self,
        schema: &str,
        tables: &[String],
    ) -> Result<Vec<TrackedTable>, CdcError> {
        let names: Vec<String> = if tables.is_empty() {
            self.rows(sql::TRACKED_TABLES, &[&schema])
                .await?
                .iter()
                .filter_map(|r| r.try_get::<&str, _>(1).ok().flatten().map(str::to_string))
                .collect()
        } else {
            tables.to_vec()
        };
        let mut out = Vec::new();
        for n in names {
            let table = TableRef::new(schema, n);
            let key_columns = self.primary_key(&table).await?;
            out.push(TrackedTable { table, key_columns });
        }
        Ok(out)
    }

    async fn ct_current_version(&self) -> Result<Option<i64>, CdcError> {
        Ok(match self.one(sql::CT_CURRENT_VERSION, &[]).await? {
            Some(r) => r.try_get::<i64, _>(0)?,
            None => None,
        })
    }

    async fn ct_min_valid_version(&self, table: &TableRef) -> Result<Option<i64>, CdcError> {
        let q = table.quoted();
        Ok(
            match self.one(sql::CT_MIN_VALID_VERSION, &[&q.as_str()]).await? {
                Some(r) => r.try_get::<i64, _>(0)?,
                None => None,
            },
        )
    }

    async fn ct_changes(
        &self,
        table: &TrackedTable,
        since: i64,
        upto: i64,
    ) -> Result<Vec<CtRow>, CdcError> {
        let rows = self
            .rows(
                &sql::ct_changes(&table.table, &table.key_columns),
                &[&since, &upto],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let op: &str = r.try_get("__$operation")?.unwrap_or("U");
                let mut key = Map::new();
                for (i, k) in table.key_columns.iter().enumerate() {
                    let name = format!("__$key_{i}");
                    let v = r
                        .cells()
                        .find(|(c, _)| c.name() == name)
                        .map(|(_, d)| to_json(d))
                        .unwrap_or(Value::Null);
                    key.insert(k.clone(), v);
                }
                let row = row_map(r);
                // A LEFT JOIN miss leaves every table column NULL: the row is gone.
                let present = table
                    .key_columns
                    .first()
                    .and_then(|k| row.get(k))
                    .is_some_and(|v| !v.is_null());
                Ok(CtRow {
                    version: r.try_get::<i64, _>("__$version")?.unwrap_or(0),
                    operation: op.chars().next().unwrap_or('U'),
                    key,
                    row: present.then_some(row),
                })
            })
            .collect()
    }

    async fn primary_key(&self, table: &TableRef) -> Result<Vec<String>, CdcError> {
        let q = table.quoted();
        self.strings(sql::PRIMARY_KEY, &[&q.as_str()]).await
    }

    async fn scan(
        &self,
        table: &TableRef,
        key_columns: &[String],
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Map<String, Value>>, CdcError> {
        let (o, l) = (offset as i64, limit as i32);
        let rows = self.rows(&sql::scan(table, key_columns), &[&o, &l]).await?;
        Ok(rows.iter().map(row_map).collect())
    }
}
