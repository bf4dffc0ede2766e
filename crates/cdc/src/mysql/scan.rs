//! Table reads in primary-key order, in keyset-paginated chunks: `sync()` and the initial
//! snapshot. Each chunk is one plain `SELECT … ORDER BY pk LIMIT n` (an InnoDB consistent
//! non-locking read): no table or row locks, no long transaction; memory stays bounded whatever
//! the table size.

use super::decode::{self, Origin, TableMeta};
use super::{MySqlConfig, connect, load_tables, quote_ident};
use crate::CdcError;
use crate::connector::SyncRow;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, Value as My};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

pub enum SyncItem {
    Row(SyncRow),
    /// Largest timestamp-column value seen for a table.
    Mark(String, Value),
}

fn json_param(v: &Value) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => My::Int(i),
            (None, Some(u)) => My::UInt(u),
            _ => My::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => My::Bytes(s.as_bytes().to_vec()),
        other => My::Bytes(other.to_string().into_bytes()),
    }
}

/// A read of one table in `order` (the primary key, or `(timestamp column, primary key)`), one
/// chunk per [`next`](TableScan::next).
pub(crate) struct TableScan<'a> {
    database: &'a str,
    meta: &'a TableMeta,
    /// `(column, lower bound)`: only rows whose column is greater.
    mark: Option<(String, My)>,
    select: Vec<String>,
    order_sql: Vec<String>,
    order_idx: Vec<usize>,
    chunk: usize,
    /// The order key of the last row read.
    after: Option<Vec<My>>,
    done: bool,
}

impl<'a> TableScan<'a> {
    /// `timestamp_column` orders by that column first; with `mark`, only rows past it are read.
    pub(crate) fn new(
        database: &'a str,
        meta: &'a TableMeta,
        timestamp_column: Option<&str>,
        mark: Option<&Value>,
        chunk: usize,
    ) -> Result<Self, CdcError> {
        let mut order: Vec<String> = Vec::new();
        if let Some(col) = timestamp_column {
            if meta.column(col).is_none() {
                return Err(CdcError::config(
                    "config.timestamp_column",
                    format!("table {} has no column {col}", meta.name),
                ));
            }
            order.push(col.to_string());
        }
        for k in &meta.primary_key {
            if !order.contains(k) {
                order.push(k.clone());
            }
        }
        Ok(TableScan {
            database,
            meta,
            mark: timestamp_column
                .zip(mark.filter(|m| !m.is_null()))
                .map(|(c, m)| (c.to_string(), json_param(m))),
            select: meta.columns.iter().map(|c| quote_ident(&c.name)).collect(),
            order_sql: order.iter().map(|c| quote_ident(c)).collect(),
            order_idx: order
                .iter()
                .map(|o| meta.columns.iter().position(|c| c.name == *o).unwrap_or(0))
                .collect(),
            chunk: chunk.max(1),
            after: None,
            done: false,
        })
    }

    /// Starts after the row whose order key is `key` (as [`last_key`](Self::last_key) gave it).
    pub(crate) fn after(mut self, key: Vec<My>) -> Self {
        if key.len() == self.order_sql.len() {
            self.after = Some(key);
        }
        self
    }

    /// The order key of the last row read, to go on after it later.
    pub(crate) fn last_key(&self) -> Option<&[My]> {
        self.after.as_deref()
    }

    /// The next chunk of rows (as the connector's JSON values, read in UTC when the session's
    /// time zone is UTC); `None` once the table is read.
    pub(crate) async fn next(
        &mut self,
        conn: &mut Conn,
    ) -> Result<Option<Vec<Map<String, Value>>>, CdcError> {
        if self.done {
            return Ok(None);
        }
        let mut conds = Vec::new();
        let mut params: Vec<My> = Vec::new();
        if let Some((col, m)) = &self.mark {
            conds.push(format!("{} > ?", quote_ident(col)));
            params.push(m.clone());
        }
        if let Some(key) = &self.after {
            let marks: Vec<&str> = key.iter().map(|_| "?").collect();
            conds.push(format!(
                "({}) > ({})",
                self.order_sql.join(", "),
                marks.join(", ")
            ));
            params.extend(key.iter().cloned());
        }
        let sql = format!(
            "SELECT {} FROM {}.{}{} ORDER BY {} LIMIT {}",
            self.select.join(", "),
            quote_ident(self.database),
            quote_ident(&self.meta.name),
            if conds.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conds.join(" AND "))
            },
            self.order_sql.join(", "),
            self.chunk
        );
        let rows: Vec<Row> = conn.exec(sql, params).await?;
        if rows.len() < self.chunk {
            self.done = true;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let values: Vec<My> = row.unwrap();
            let mut data = Map::new();
            for (c, v) in self.meta.columns.iter().zip(&values) {
                data.insert(c.name.clone(), decode::to_json(v, Some(c), Origin::Query));
            }
            self.after = Some(self.order_idx.iter().map(|i| values[*i].clone()).collect());
            out.push(data);
        }
        Ok(Some(out))
    }
}

/// A row's order key as JSON that [`decode_key`] turns back into the same protocol values (a
/// snapshot's progress in the checkpoint): `{"i": n}`, `{"u": n}`, `{"f": x}`, `{"b": "<hex>"}`,
/// `{"d": [y, m, d, h, mi, s, us]}`, `{"t": [negative, days, h, mi, s, us]}` or `null`.
pub(crate) fn encode_key(key: &[My]) -> Value {
    Value::Array(
        key.iter()
            .map(|v| match v {
                My::NULL => Value::Null,
                My::Int(i) => json!({"i": i}),
                My::UInt(u) => json!({"u": u}),
                My::Float(f) => json!({"f": f64::from(*f)}),
                My::Double(f) => json!({"f": f}),
                My::Bytes(b) => json!({"b": hex::encode(b)}),
                My::Date(y, m, d, h, mi, s, us) => json!({"d": [y, m, d, h, mi, s, us]}),
                My::Time(neg, d, h, mi, s, us) => json!({"t": [neg, d, h, mi, s, us]}),
            })
            .collect(),
    )
}

/// The values [`encode_key`] encoded; `None` if `v` is not such an encoding.
pub(crate) fn decode_key(v: &Value) -> Option<Vec<My>> {
    fn num<T: TryFrom<u64>>(a: &[Value], i: usize) -> Option<T> {
        a.get(i)?.as_u64().and_then(|n| T::try_from(n).ok())
    }
    v.as_array()?
        .iter()
        .map(|x| {
            if x.is_null() {
                return Some(My::NULL);
            }
            let (tag, val) = x.as_object()?.iter().next()?;
            Some(match tag.as_str() {
                "i" => My::Int(val.as_i64()?),
                "u" => My::UInt(val.as_u64()?),
                "f" => My::Double(val.as_f64()?),
                "b" => My::Bytes(hex::decode(val.as_str()?).ok()?),
                "d" => {
                    let a = val.as_array()?;
                    My::Date(
                        num(a, 0)?,
                        num(a, 1)?,
                        num(a, 2)?,
                        num(a, 3)?,
                        num(a, 4)?,
                        num(a, 5)?,
                        num(a, 6)?,
                    )
                }
                "t" => {
                    let a = val.as_array()?;
                    My::Time(
                        a.first()?.as_bool()?,
                        num(a, 1)?,
                        num(a, 2)?,
                        num(a, 3)?,
                        num(a, 4)?,
                        num(a, 5)?,
                    )
                }
                _ => return None,
            })
        })
        .collect()
}

pub(crate) async fn sync_rows(
    opts: Opts,
    cfg: MySqlConfig,
    marks: Map<String, Value>,
    tx: mpsc::Sender<Result<SyncItem, CdcError>>,
) {
    let res = async {
        let mut conn = connect(&opts).await?;
        // Timestamps read in UTC, as the binlog carries them.
        conn.query_drop("SET SESSION time_zone = '+00:00'").await?;
        let tables = load_tables(&mut conn, &cfg.database, &cfg.tables).await?;
        for name in &cfg.tables {
            let Some(meta) = tables.get(name) else {
                continue;
            };
            let mut scan = TableScan::new(
                &cfg.database,
                meta,
                cfg.timestamp_column.as_deref(),
                marks.get(name),
                cfg.batch_size,
            )?;
            let mut last_mark: Option<Value> = None;
            while let Some(rows) = scan.next(&mut conn).await? {
                for data in rows {
                    if let Some(col) = &cfg.timestamp_column {
                        last_mark = data.get(col).cloned();
                    }
                    let primary_key = meta.key_of(&data);
                    let row = SyncRow {
                        evidence_id: format!(
                            "mysql:{}.{}:{}",
                            cfg.database,
                            name,
                            crate::canonical_key(&primary_key)
                        ),
                        table: name.clone(),
                        content: crate::render_row(name, &primary_key, &data),
                        primary_key,
                        data,
                    };
                    if tx.send(Ok(SyncItem::Row(row))).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if let Some(v) = last_mark.filter(|v| !v.is_null()) {
                let _ = tx.send(Ok(SyncItem::Mark(name.clone(), v))).await;
            }
        }
        let _ = conn.disconnect().await;
        Ok::<(), CdcError>(())
    }
    .await;
    if let Err(e) = res {
        let _ = tx.send(Err(e)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_survive_the_checkpoint() {
        let key = vec![
            My::NULL,
            My::Int(-7),
            My::UInt(u64::MAX),
            My::Double(1.5),
            My::Bytes(vec![0, 0xff, b';', b'=']),
            My::Date(2026, 11, 27, 13, 5, 9, 123_456),
            My::Time(true, 2, 3, 4, 5, 6),
        ];
        let json = encode_key(&key);
        let text = serde_json::to_string(&json).unwrap();
        let back = decode_key(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, key);
        assert!(decode_key(&json!([{"x": 1}])).is_none());
        assert!(decode_key(&json!({"i": 1})).is_none());
        assert!(decode_key(&json!([{"d": [2026, 13]}])).is_none());
    }
}
