//! `sync()`: the tables' rows in primary-key order, in keyset-paginated chunks. Each chunk is
//! one plain `SELECT … ORDER BY pk LIMIT n` (an InnoDB consistent non-locking read): no table
//! or row locks, no long transaction; memory stays bounded whatever the table size.

use super::decode::{self, Origin};
use super::{MySqlConfig, connect, load_tables, quote_ident};
use crate::CdcError;
use crate::connector::SyncRow;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Row, Value as My};
use serde_json::{Map, Value};
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
        let chunk = cfg.batch_size;
        for name in &cfg.tables {
            let Some(meta) = tables.get(name) else {
                continue;
            };
            let mut order: Vec<String> = Vec::new();
            if let Some(col) = &cfg.timestamp_column {
                if meta.column(col).is_none() {
                    return Err(CdcError::config(
                        "config.timestamp_column",
                        format!("table {name} has no column {col}"),
                    ));
                }
                order.push(col.clone());
            }
            for k in &meta.primary_key {
                if !order.contains(k) {
                    order.push(k.clone());
                }
            }
            let select: Vec<String> = meta.columns.iter().map(|c| quote_ident(&c.name)).collect();
            let order_sql: Vec<String> = order.iter().map(|c| quote_ident(c)).collect();
            let order_idx: Vec<usize> = order
                .iter()
                .map(|o| meta.columns.iter().position(|c| c.name == *o).unwrap_or(0))
                .collect();
            let mark = cfg
                .timestamp_column
                .as_ref()
                .and_then(|_| marks.get(name))
                .filter(|m| !m.is_null())
                .map(json_param);
            let mut after: Option<Vec<My>> = None;
            let mut last_mark: Option<Value> = None;
            loop {
                let mut conds = Vec::new();
                let mut params: Vec<My> = Vec::new();
                if let (Some(m), Some(col)) = (&mark, &cfg.timestamp_column) {
                    conds.push(format!("{} > ?", quote_ident(col)));
                    params.push(m.clone());
                }
                if let Some(key) = &after {
                    let marks: Vec<&str> = key.iter().map(|_| "?").collect();
                    conds.push(format!(
                        "({}) > ({})",
                        order_sql.join(", "),
                        marks.join(", ")
                    ));
                    params.extend(key.iter().cloned());
                }
                let sql = format!(
                    "SELECT {} FROM {}.{}{} ORDER BY {} LIMIT {chunk}",
                    select.join(", "),
                    quote_ident(&cfg.database),
                    quote_ident(name),
                    if conds.is_empty() {
                        String::new()
                    } else {
                        format!(" WHERE {}", conds.join(" AND "))
                    },
                    order_sql.join(", ")
                );
                let rows: Vec<Row> = conn.exec(sql, params).await?;
                let n = rows.len();
                for row in rows {
                    let values: Vec<My> = row.unwrap();
                    let mut data = Map::new();
                    for (c, v) in meta.columns.iter().zip(&values) {
                        data.insert(c.name.clone(), decode::to_json(v, Some(c), Origin::Query));
                    }
                    if let Some(col) = &cfg.timestamp_column {
                        last_mark = data.get(col).cloned();
                    }
                    after = Some(order_idx.iter().map(|i| values[*i].clone()).collect());
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
                if n < chunk {
                    break;
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
