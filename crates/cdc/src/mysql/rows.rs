//! Row images of a rows event decoded straight into JSON maps, in one pass over the event's bytes
//! with a plan computed once per table map. `mysql_common`'s `BinlogRow` iterator rebuilds the
//! optional-metadata parser and a column descriptor with owned schema/table/column names for
//! every column of every row, which cost more than the rest of the connector together.
//! Values are still decoded by `mysql_common` (`BinlogValue`), column by column.

use super::decode::{self, ColumnMeta};
use mysql_async::binlog::events::{OptionalMetaExtractor, RowsEventData, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_common::io::ParseBuf;
use serde_json::{Map, Value};

/// How to decode the rows of one table map.
pub(crate) struct Plan {
    cols: Vec<Col>,
    json_columns: usize,
}

struct Col {
    name: String,
    ty: ColumnType,
    /// Type metadata from the table map, padded to two bytes so a malformed map yields a decode
    /// error rather than an out-of-bounds read in the value parser.
    meta: Vec<u8>,
    unsigned: bool,
    col: Option<ColumnMeta>,
}

/// Before and after image of one row (`None` where the event has no such image).
pub(crate) type RowPair = (Option<Map<String, Value>>, Option<Map<String, Value>>);

impl Plan {
    /// `names` and `cols` are in table-map order, one per column of the map.
    pub(crate) fn new(
        tme: &TableMapEvent<'_>,
        names: &[String],
        cols: &[Option<ColumnMeta>],
    ) -> Result<Plan, String> {
        let count = tme.columns_count() as usize;
        if names.len() != count || cols.len() != count {
            return Err(format!(
                "table map has {count} columns but {} names",
                names.len()
            ));
        }
        let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())
            .map_err(|e| format!("table map: {e}"))?;
        // Signedness is listed for numeric columns only, in column order.
        let mut signedness = extractor.iter_signedness();
        let mut out = Vec::with_capacity(count);
        for (i, (name, col)) in names.iter().zip(cols).enumerate() {
            let ty = match tme.get_column_type(i) {
                Ok(Some(ty)) => ty,
                Ok(None) => return Err(format!("no type for column {name}")),
                Err(e) => return Err(format!("column {name}: {e}")),
            };
            let unsigned = ty.is_numeric_type() && signedness.next().unwrap_or(false);
            let mut meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
            if meta.len() < 2 {
                meta.resize(2, 0);
            }
            out.push(Col {
                name: name.clone(),
                ty,
                meta,
                unsigned,
                col: col.clone(),
            });
        }
        Ok(Plan {
            cols: out,
            json_columns: tme.json_column_count(),
        })
    }

    /// Whether `tme` has the column types and type metadata this plan was built from.
    pub(crate) fn matches(&self, tme: &TableMapEvent<'_>) -> bool {
        tme.columns_count() as usize == self.cols.len()
            && self.cols.iter().enumerate().all(|(i, c)| {
                let meta = tme.get_column_metadata(i).unwrap_or(&[]);
                matches!(tme.get_column_type(i), Ok(Some(ty)) if ty == c.ty)
                    && c.meta.starts_with(meta)
                    && c.meta[meta.len()..].iter().all(|b| *b == 0)
            })
    }

    /// Decodes every row of `re`, calling `f` with each (before, after) pair in order.
    pub(crate) fn for_each_row<E>(
        &self,
        re: &RowsEventData<'_>,
        mut f: impl FnMut(RowPair) -> Result<(), E>,
        err: impl Fn(String) -> E,
    ) -> Result<(), E> {
        if re.num_columns() as usize != self.cols.len() {
            return Err(err(format!(
                "rows event has {} columns but its table map {}",
                re.num_columns(),
                self.cols.len()
            )));
        }
        let shared_image = matches!(re, RowsEventData::PartialUpdateRowsEvent(_));
        // Column-presence bitmaps, once per event.
        let before: Option<Vec<bool>> = re
            .columns_before_image()
            .map(|b| b.iter().map(|x| *x).collect());
        let after: Option<Vec<bool>> = re
            .columns_after_image()
            .map(|b| b.iter().map(|x| *x).collect());
        let mut buf = ParseBuf(re.rows_data());
        while !buf.is_empty() {
            let b = match &before {
                Some(bits) => Some(self.image(&mut buf, bits, false).map_err(&err)?),
                None => None,
            };
            let a = match &after {
                Some(bits) => Some(self.image(&mut buf, bits, shared_image).map_err(&err)?),
                None => None,
            };
            f((b, a))?;
        }
        Ok(())
    }

    /// One row image: null bitmap over the present columns, then the non-null values.
    fn image<'a>(
        &'a self,
        buf: &mut ParseBuf<'a>,
        present: &[bool],
        shared_image: bool,
    ) -> Result<Map<String, Value>, String> {
        if shared_image {
            // MySQL's partial-JSON after image: value options, then which JSON columns are diffs.
            let options = buf.checked_eat_lenenc_int().ok_or("truncated row image")?;
            if options & 1 != 0 {
                let bits = buf
                    .checked_eat(self.json_columns.div_ceil(8))
                    .ok_or("truncated row image")?;
                if bits.iter().any(|b| *b != 0) {
                    return Err(
                        "partial JSON update in the binlog: set binlog_row_value_options='' on \
                         the source"
                            .into(),
                    );
                }
            }
        }
        let n = present.iter().filter(|p| **p).count();
        let nulls = buf
            .checked_eat(n.div_ceil(8))
            .ok_or("truncated row image")?;
        let mut out = Map::new();
        let mut k = 0usize;
        for (i, c) in self.cols.iter().enumerate() {
            if !present.get(i).copied().unwrap_or(false) {
                continue;
            }
            let null = nulls[k / 8] & (1 << (k % 8)) != 0;
            k += 1;
            let value = if null {
                Value::Null
            } else {
                let v: BinlogValue<'_> = buf
                    .parse((c.ty, c.meta.as_slice(), c.unsigned, false))
                    .map_err(|e| format!("{}: {e}", c.name))?;
                decode::binlog_into_json(v, c.col.as_ref())
                    .map_err(|e| format!("{}: {e}", c.name))?
            };
            out.insert(c.name.clone(), value);
        }
        Ok(out)
    }
}
