//! Table metadata and value conversion: binlog row images (and `sync()` rows read over the
//! binary protocol) to JSON, the same way for both paths.

use mysql_async::Value as My;
use mysql_async::binlog::jsonb;
use mysql_async::binlog::value::BinlogValue;
use serde_json::{Map, Value, json};

/// One column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMeta {
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, `datetime`, `enum` …).
    pub data_type: String,
    /// Labels of an ENUM or SET column, in declaration order.
    pub labels: Vec<String>,
    /// An UNSIGNED integer column (the binlog carries signedness only with
    /// `binlog_row_metadata`, so it comes from information_schema).
    pub unsigned: bool,
}

/// A captured table: columns in ordinal order and the primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableMeta {
    pub name: String,
    pub columns: Vec<ColumnMeta>,
    pub primary_key: Vec<String>,
}

impl TableMeta {
    pub fn column(&self, name: &str) -> Option<&ColumnMeta> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Picks the primary-key columns out of a row.
    pub fn key_of(&self, row: &Map<String, Value>) -> Map<String, Value> {
        self.primary_key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect()
    }
}

/// Labels out of `enum('a','b''c')` / `set('x','y')`.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[start + 1..column_type.rfind(')').unwrap_or(column_type.len())];
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = body.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        match (in_quote, c) {
            (false, '\'') => in_quote = true,
            (true, '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                cur.push('\'');
            }
            (true, '\'') => {
                in_quote = false;
                out.push(std::mem::take(&mut cur));
            }
            (true, c) => cur.push(c),
            (false, _) => {}
        }
    }
    out
}

fn is_binary(data_type: &str) -> bool {
    matches!(
        data_type,
        "binary"
            | "varbinary"
            | "tinyblob"
            | "blob"
            | "mediumblob"
            | "longblob"
            | "geometry"
            | "point"
            | "linestring"
            | "polygon"
            | "multipoint"
            | "multilinestring"
            | "multipolygon"
            | "geometrycollection"
    )
}

fn two(n: u8) -> String {
    format!("{n:02}")
}

fn frac(us: u32) -> String {
    if us == 0 {
        String::new()
    } else {
        format!(".{us:06}")
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` of a Unix time, UTC.
pub fn utc_datetime(secs: i64, us: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        frac(us)
    )
}

/// A binlog TIMESTAMP (seconds since the epoch): 0 is the zero date, which is also what the
/// column reads as (the epoch itself is outside TIMESTAMP's range).
fn binlog_timestamp(secs: i64, us: u32) -> String {
    if secs == 0 && us == 0 {
        return "0000-00-00 00:00:00".into();
    }
    utc_datetime(secs, us)
}

fn bytes_to_u64(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

fn text(b: &[u8], col: Option<&ColumnMeta>) -> Value {
    if col.is_some_and(|c| is_binary(&c.data_type)) {
        return json!(format!("\\x{}", hex::encode(b)));
    }
    match std::str::from_utf8(b) {
        Ok(s) => json!(s),
        Err(_) => json!(format!("\\x{}", hex::encode(b))),
    }
}

fn number_or_string(s: &str) -> Value {
    s.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| json!(s))
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| json!(f.to_string()))
}

/// Where a value came from: binlog images encode ENUM/SET/TIMESTAMP differently from rows read
/// over the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Binlog,
    Query,
}

/// JSON of one value. DECIMAL stays a string (no precision lost); binary strings are `\x` + hex;
/// dates are `YYYY-MM-DD`, datetimes and timestamps `YYYY-MM-DD HH:MM:SS[.ffffff]` (timestamps
/// in UTC); TIME is `[-]HH:MM:SS[.ffffff]`; ENUM/SET are their labels; BIT is a number.
pub fn to_json(v: &My, col: Option<&ColumnMeta>, origin: Origin) -> Value {
    let dt = col.map(|c| c.data_type.as_str()).unwrap_or("");
    match v {
        My::NULL => Value::Null,
        My::Int(i) => match (dt, origin) {
            ("enum", Origin::Binlog) => enum_label(*i as u64, col),
            ("timestamp", Origin::Binlog) => json!(binlog_timestamp(*i, 0)),
            _ if *i < 0 && col.is_some_and(|c| c.unsigned) => json!(as_unsigned(*i, dt)),
            _ => json!(i),
        },
        My::UInt(u) => match (dt, origin) {
            ("enum", Origin::Binlog) => enum_label(*u, col),
            _ => json!(u),
        },
        // Through its shortest decimal form: FLOAT 0.1 is 0.1, not 0.10000000149011612.
        My::Float(f) => float(f.to_string().parse().unwrap_or(f64::from(*f))),
        My::Double(f) => float(*f),
        My::Bytes(b) => match dt {
            "decimal" => json!(String::from_utf8_lossy(b)),
            "year" => number_or_string(&String::from_utf8_lossy(b)),
            "bit" => json!(bytes_to_u64(b)),
            "set" if origin == Origin::Binlog => set_labels(bytes_to_u64_le(b), col),
            "timestamp" if origin == Origin::Binlog => {
                let s = String::from_utf8_lossy(b);
                let (secs, us) = match s.split_once('.') {
                    Some((a, f)) => (a.parse().unwrap_or(0), f.parse().unwrap_or(0)),
                    None => (s.parse().unwrap_or(0), 0),
                };
                json!(binlog_timestamp(secs, us))
            }
            "json" => serde_json::from_slice(b).unwrap_or_else(|_| text(b, col)),
            _ => text(b, col),
        },
        My::Date(y, m, d, h, mi, s, us) => {
            if dt == "date" {
                json!(format!("{y:04}-{}-{}", two(*m), two(*d)))
            } else {
                json!(format!(
                    "{y:04}-{}-{} {}:{}:{}{}",
                    two(*m),
                    two(*d),
                    two(*h),
                    two(*mi),
                    two(*s),
                    frac(*us)
                ))
            }
        }
        My::Time(neg, days, h, mi, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            json!(format!(
                "{}{hours:02}:{}:{}{}",
                if *neg { "-" } else { "" },
                two(*mi),
                two(*s),
                frac(*us)
            ))
        }
    }
}

/// A negative value read as signed from an UNSIGNED column of the given width.
fn as_unsigned(i: i64, data_type: &str) -> u64 {
    match data_type {
        "tinyint" => u64::from(i as u8),
        "smallint" => u64::from(i as u16),
        "mediumint" => (i as u64) & 0xff_ffff,
        "int" | "integer" => u64::from(i as u32),
        _ => i as u64,
    }
}

fn bytes_to_u64_le(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

fn enum_label(i: u64, col: Option<&ColumnMeta>) -> Value {
    match col.and_then(|c| (i as usize).checked_sub(1).and_then(|k| c.labels.get(k))) {
        Some(l) => json!(l),
        None if i == 0 => json!(""),
        None => json!(i),
    }
}

fn set_labels(mask: u64, col: Option<&ColumnMeta>) -> Value {
    let Some(c) = col.filter(|c| !c.labels.is_empty()) else {
        return json!(mask);
    };
    let picked: Vec<&str> = c
        .labels
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < 64 && mask & (1u64 << i) != 0)
        .map(|(_, l)| l.as_str())
        .collect();
    json!(picked.join(","))
}

/// JSON of a binlog value: plain values as [`to_json`]; MySQL's binary JSON decoded.
pub fn binlog_to_json(v: &BinlogValue<'_>, col: Option<&ColumnMeta>) -> Result<Value, String> {
    match v {
        BinlogValue::Value(v) => Ok(to_json(v, col, Origin::Binlog)),
        BinlogValue::Jsonb(j) => jsonb_to_json(j.clone()),
        BinlogValue::JsonDiff(_) => Err(
            "partial JSON update in the binlog: set binlog_row_value_options='' on the source"
                .into(),
        ),
    }
}

/// [`binlog_to_json`] taking the value, so text moves into the JSON string without a copy.
pub fn binlog_into_json(v: BinlogValue<'_>, col: Option<&ColumnMeta>) -> Result<Value, String> {
    let plain_text = col.is_none_or(|c| {
        !is_binary(&c.data_type)
            && !matches!(
                c.data_type.as_str(),
                "decimal" | "year" | "bit" | "set" | "timestamp" | "json"
            )
    });
    match v {
        BinlogValue::Value(My::Bytes(b)) if plain_text => Ok(match String::from_utf8(b) {
            Ok(s) => Value::String(s),
            Err(e) => json!(format!("\\x{}", hex::encode(e.as_bytes()))),
        }),
        v => binlog_to_json(&v, col),
    }
}

pub fn jsonb_to_json(j: jsonb::Value<'_>) -> Result<Value, String> {
    serde_json::Value::try_from(j).map_err(|e| format!("binary JSON: {e}"))
}

/// A MariaDB GTID event (type 162): `domain-server-seq` and whether it opens a standalone
/// statement (DDL, no BEGIN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
    pub standalone: bool,
}

pub const MARIA_GTID_EVENT: u8 = 162;
pub const MARIA_GTID_LIST_EVENT: u8 = 163;
pub const MARIA_START_ENCRYPTION_EVENT: u8 = 164;
const FL_STANDALONE: u8 = 1;

/// Body of a MariaDB GTID event: seq (8 LE), domain (4 LE), flags (1), …
pub fn parse_maria_gtid_event(data: &[u8], server: u32) -> Result<MariaGtid, String> {
    if data.len() < 13 {
        return Err(format!("MariaDB GTID event of {} bytes", data.len()));
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
    let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
    Ok(MariaGtid {
        domain,
        server,
        seq,
        standalone: data[12] & FL_STANDALONE != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(dt: &str, labels: &[&str]) -> ColumnMeta {
        ColumnMeta {
            name: "c".into(),
            data_type: dt.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            unsigned: false,
        }
    }

    #[test]
    fn labels_parse_with_quotes() {
        assert_eq!(
            parse_labels("enum('a','b''c','d,e')"),
            vec!["a", "b'c", "d,e"]
        );
        assert!(parse_labels("int(11)").is_empty());
    }

    #[test]
    fn values_convert_like_the_protocol() {
        let e = col("enum", &["red", "green"]);
        assert_eq!(
            to_json(&My::Int(2), Some(&e), Origin::Binlog),
            json!("green")
        );
        assert_eq!(
            to_json(&My::Bytes(b"green".to_vec()), Some(&e), Origin::Query),
            json!("green")
        );
        let s = col("set", &["a", "b", "c"]);
        assert_eq!(
            to_json(&My::Bytes(vec![5]), Some(&s), Origin::Binlog),
            json!("a,c")
        );
        let ts = col("timestamp", &[]);
        assert_eq!(
            to_json(
                &My::Bytes(b"1700000000.000123".to_vec()),
                Some(&ts),
                Origin::Binlog
            ),
            json!("2023-11-14 22:13:20.000123")
        );
        assert_eq!(
            to_json(
                &My::Date(2023, 11, 14, 22, 13, 20, 123),
                Some(&ts),
                Origin::Query
            ),
            json!("2023-11-14 22:13:20.000123")
        );
        assert_eq!(
            to_json(
                &My::Date(2024, 2, 29, 0, 0, 0, 0),
                Some(&col("date", &[])),
                Origin::Query
            ),
            json!("2024-02-29")
        );
        assert_eq!(
            to_json(
                &My::Time(true, 1, 2, 3, 4, 0),
                Some(&col("time", &[])),
                Origin::Binlog
            ),
            json!("-26:03:04")
        );
        assert_eq!(
            to_json(
                &My::Bytes(b"12.50".to_vec()),
                Some(&col("decimal", &[])),
                Origin::Binlog
            ),
            json!("12.50")
        );
        assert_eq!(
            to_json(
                &My::Bytes(vec![0xff, 0]),
                Some(&col("varbinary", &[])),
                Origin::Binlog
            ),
            json!("\\xff00")
        );
        assert_eq!(
            to_json(
                &My::Bytes(vec![1, 1]),
                Some(&col("bit", &[])),
                Origin::Binlog
            ),
            json!(257)
        );
        assert_eq!(
            to_json(&My::UInt(u64::MAX), None, Origin::Binlog),
            json!(u64::MAX)
        );
        let mut u = col("int", &[]);
        u.unsigned = true;
        assert_eq!(
            to_json(&My::Int(-1), Some(&u), Origin::Binlog),
            json!(4_294_967_295u64)
        );
        u.data_type = "bigint".into();
        assert_eq!(
            to_json(&My::Int(-1), Some(&u), Origin::Binlog),
            json!(u64::MAX)
        );
        assert_eq!(utc_datetime(0, 0), "1970-01-01 00:00:00");
        assert_eq!(utc_datetime(951_782_400, 0), "2000-02-29 00:00:00");
    }

    #[test]
    fn owned_binlog_values_convert_like_borrowed_ones() {
        let cases: Vec<(My, Option<ColumnMeta>)> = vec![
            (My::Bytes(b"plain".to_vec()), Some(col("varchar", &[]))),
            (My::Bytes(b"plain".to_vec()), None),
            (My::Bytes(vec![0xff, 0x00]), Some(col("text", &[]))),
            (My::Bytes(vec![0xff, 0x00]), Some(col("blob", &[]))),
            (My::Bytes(b"12.50".to_vec()), Some(col("decimal", &[]))),
            (My::Bytes(vec![5]), Some(col("set", &["a", "b", "c"]))),
            (
                My::Bytes(b"1700000000".to_vec()),
                Some(col("timestamp", &[])),
            ),
            (My::Bytes(br#"{"a":1}"#.to_vec()), Some(col("json", &[]))),
            (My::Int(2), Some(col("enum", &["red", "green"]))),
        ];
        for (v, c) in cases {
            let borrowed = binlog_to_json(&BinlogValue::Value(v.clone()), c.as_ref()).unwrap();
            let owned = binlog_into_json(BinlogValue::Value(v), c.as_ref()).unwrap();
            assert_eq!(owned, borrowed);
        }
    }

    #[test]
    fn maria_gtid_events_parse() {
        let mut data = 42u64.to_le_bytes().to_vec();
        data.extend(3u32.to_le_bytes());
        data.push(1);
        let g = parse_maria_gtid_event(&data, 7).unwrap();
        assert_eq!(
            g,
            MariaGtid {
                domain: 3,
                server: 7,
                seq: 42,
                standalone: true
            }
        );
        assert!(parse_maria_gtid_event(&data[..5], 7).is_err());
    }
}
