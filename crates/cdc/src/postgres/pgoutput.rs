//! A decoder for the pgoutput logical replication protocol (version 1): the messages inside
//! `XLogData` that `pgwire-replication` forwards raw (Relation, Type, Origin, Insert, Update,
//! Delete, Truncate), and the conversion of text-format column values to JSON.

use serde_json::{Map, Number, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput: {0}")]
pub struct DecodeError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(m.into()))
}

/// A column of a relation as the Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Part of the replica identity (every column under `REPLICA IDENTITY FULL`).
    pub identity: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value: the server did not send it.
    UnchangedToast,
    Text(String),
    Binary(Vec<u8>),
}

/// Which old tuple an Update/Delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: only the replica-identity key columns (others are null).
    Key,
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    Type {
        id: u32,
        namespace: String,
        name: String,
    },
    Origin {
        lsn: u64,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        old: Option<(OldKind, Vec<Datum>)>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: (OldKind, Vec<Datum>),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// Begin/Commit/Message are parsed by the transport; anything else is reported, not guessed.
    Other(u8),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return err(format!(
                "truncated message: wanted {n} bytes, {} left",
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| DecodeError("string without terminator".into()))?;
        let s = std::str::from_utf8(&self.buf[..end])
            .map_err(|_| DecodeError("string is not UTF-8".into()))?
            .to_string();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.i16()?;
        if n < 0 {
            return err("negative column count");
        }
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::UnchangedToast,
                b't' => {
                    let len = self.i32()?;
                    if len < 0 {
                        return err("negative value length");
                    }
                    let bytes = self.take(len as usize)?;
                    Datum::Text(
                        std::str::from_utf8(bytes)
                            .map_err(|_| DecodeError("text value is not UTF-8".into()))?
                            .to_string(),
                    )
                }
                b'b' => {
                    let len = self.i32()?;
                    if len < 0 {
                        return err("negative value length");
                    }
                    Datum::Binary(self.take(len as usize)?.to_vec())
                }
                other => return err(format!("unknown tuple value kind {:?}", other as char)),
            });
        }
        Ok(out)
    }
}

/// Decodes one pgoutput message.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf };
    let tag = r.u8()?;
    let msg = match tag {
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            if n < 0 {
                return err("negative column count");
            }
            let mut columns = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let type_modifier = r.i32()?;
                columns.push(Column {
                    name,
                    type_oid,
                    type_modifier,
                    identity: flags & 1 == 1,
                });
            }
            Message::Relation(Relation {
                id,
                namespace: if namespace.is_empty() {
                    "pg_catalog".into()
                } else {
                    namespace
                },
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type {
            id: r.u32()?,
            namespace: r.string()?,
            name: r.string()?,
        },
        b'O' => Message::Origin {
            lsn: r.u64()?,
            name: r.string()?,
        },
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert {
                    relation,
                    new: r.tuple()?,
                },
                other => return err(format!("insert: expected N, got {:?}", other as char)),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                let k = if kind == b'K' {
                    OldKind::Key
                } else {
                    OldKind::Full
                };
                old = Some((k, r.tuple()?));
                kind = r.u8()?;
            }
            if kind != b'N' {
                return err(format!("update: expected N, got {:?}", kind as char));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let k = match r.u8()? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                other => return err(format!("delete: expected K or O, got {:?}", other as char)),
            };
            Message::Delete {
                relation,
                old: (k, r.tuple()?),
            }
        }
        b'T' => {
            let n = r.i32()?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate {
                relations,
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
            }
        }
        other => Message::Other(other),
    };
    Ok(msg)
}

// Type oids with a JSON rendering other than a string.
const BOOL: u32 = 16;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const JSON: u32 = 114;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const NUMERIC: u32 = 1700;
const JSONB: u32 = 3802;
const DATE: u32 = 1082;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;

/// A text-format value as JSON, matching what `to_jsonb` gives for the same value where it
/// matters (numbers, booleans, JSON, ISO 8601 times), so both capture modes produce equal data.
pub fn text_to_json(type_oid: u32, text: &str) -> Value {
    match type_oid {
        BOOL => Value::Bool(text == "t"),
        INT2 | INT4 | INT8 | OID => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.into())),
        FLOAT4 | FLOAT8 | NUMERIC => {
            if let Ok(i) = text.parse::<i64>() {
                return Value::from(i);
            }
            text.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(text.into()))
        }
        JSON | JSONB => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
        TIMESTAMP | TIMESTAMPTZ | DATE => Value::String(iso_time(text)),
        _ => Value::String(text.into()),
    }
}

/// `2024-01-02 03:04:05.5+00` (DateStyle ISO) → `2024-01-02T03:04:05.5+00:00` (as `to_jsonb`).
fn iso_time(text: &str) -> String {
    let mut s = text.replacen(' ', "T", 1);
    // A bare `±HH` offset gets its minutes.
    let bytes = s.as_bytes();
    let n = bytes.len();
    if n >= 3 && (bytes[n - 3] == b'+' || bytes[n - 3] == b'-') && s.contains('T') {
        s.push_str(":00");
    }
    s
}

/// Column values of a tuple as a JSON object. `UnchangedToast` columns are taken from `fill`
/// (the old row) when it has them, else left out.
pub fn tuple_to_map(
    relation: &Relation,
    tuple: &[Datum],
    fill: Option<&Map<String, Value>>,
) -> Result<Map<String, Value>, DecodeError> {
    if tuple.len() != relation.columns.len() {
        return err(format!(
            "relation {} has {} columns but the tuple has {}",
            relation.name,
            relation.columns.len(),
            tuple.len()
        ));
    }
    let mut out = Map::with_capacity(tuple.len());
    for (col, d) in relation.columns.iter().zip(tuple) {
        match d {
            Datum::Null => {
                out.insert(col.name.clone(), Value::Null);
            }
            Datum::Text(t) => {
                out.insert(col.name.clone(), text_to_json(col.type_oid, t));
            }
            Datum::Binary(b) => {
                out.insert(col.name.clone(), Value::String(hex::encode(b)));
            }
            Datum::UnchangedToast => {
                if let Some(v) = fill.and_then(|f| f.get(&col.name)) {
                    out.insert(col.name.clone(), v.clone());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }

    fn relation_msg() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        s(&mut m, "public");
        s(&mut m, "users");
        m.push(b'f');
        m.extend_from_slice(&3i16.to_be_bytes());
        for (flags, name, oid) in [(1u8, "id", INT4), (0, "name", 25), (0, "bio", 25)] {
            m.push(flags);
            s(&mut m, name);
            m.extend_from_slice(&oid.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes());
        }
        m
    }

    fn tuple(out: &mut Vec<u8>, vals: &[Option<Option<&str>>]) {
        out.extend_from_slice(&(vals.len() as i16).to_be_bytes());
        for v in vals {
            match v {
                None => out.push(b'u'),
                Some(None) => out.push(b'n'),
                Some(Some(t)) => {
                    out.push(b't');
                    out.extend_from_slice(&(t.len() as i32).to_be_bytes());
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
    }

    fn rel() -> Relation {
        match decode(&relation_msg()).unwrap() {
            Message::Relation(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relation_messages_decode() {
        let r = rel();
        assert_eq!(
            (r.id, r.namespace.as_str(), r.name.as_str()),
            (16384, "public", "users")
        );
        assert_eq!(r.replica_identity, b'f');
        assert_eq!(r.columns.len(), 3);
        assert!(r.columns[0].identity && !r.columns[1].identity);
        assert_eq!(r.columns[0].type_oid, INT4);
    }

    #[test]
    fn insert_update_delete_decode_with_nulls_and_unchanged_toast() {
        let r = rel();
        let mut ins = vec![b'I'];
        ins.extend_from_slice(&16384u32.to_be_bytes());
        ins.push(b'N');
        tuple(&mut ins, &[Some(Some("7")), Some(Some("Ann")), Some(None)]);
        let Message::Insert { relation, new } = decode(&ins).unwrap() else {
            panic!()
        };
        assert_eq!(relation, 16384);
        let row = tuple_to_map(&r, &new, None).unwrap();
        assert_eq!(
            Value::Object(row),
            json!({"id": 7, "name": "Ann", "bio": null})
        );

        // UPDATE with the full old row and an unchanged TOAST column in the new one.
        let mut upd = vec![b'U'];
        upd.extend_from_slice(&16384u32.to_be_bytes());
        upd.push(b'O');
        tuple(
            &mut upd,
            &[Some(Some("7")), Some(Some("Ann")), Some(Some("long text"))],
        );
        upd.push(b'N');
        tuple(&mut upd, &[Some(Some("7")), Some(Some("Bo")), None]);
        let Message::Update {
            old: Some((OldKind::Full, old)),
            new,
            ..
        } = decode(&upd).unwrap()
        else {
            panic!()
        };
        let old = tuple_to_map(&r, &old, None).unwrap();
        let new_filled = tuple_to_map(&r, &new, Some(&old)).unwrap();
        assert_eq!(
            new_filled["bio"],
            json!("long text"),
            "filled from the old row"
        );
        let new_bare = tuple_to_map(&r, &new, None).unwrap();
        assert!(
            !new_bare.contains_key("bio"),
            "left out when no old row has it"
        );

        // UPDATE without old tuple.
        let mut upd = vec![b'U'];
        upd.extend_from_slice(&16384u32.to_be_bytes());
        upd.push(b'N');
        tuple(&mut upd, &[Some(Some("7")), Some(Some("Cy")), Some(None)]);
        assert!(matches!(
            decode(&upd).unwrap(),
            Message::Update { old: None, .. }
        ));

        let mut del = vec![b'D'];
        del.extend_from_slice(&16384u32.to_be_bytes());
        del.push(b'K');
        tuple(&mut del, &[Some(Some("7")), Some(None), Some(None)]);
        let Message::Delete {
            old: (OldKind::Key, old),
            ..
        } = decode(&del).unwrap()
        else {
            panic!()
        };
        assert_eq!(tuple_to_map(&r, &old, None).unwrap()["id"], json!(7));
    }

    #[test]
    fn truncate_and_unknown_messages() {
        let mut t = vec![b'T'];
        t.extend_from_slice(&2i32.to_be_bytes());
        t.push(3);
        t.extend_from_slice(&1u32.to_be_bytes());
        t.extend_from_slice(&2u32.to_be_bytes());
        assert_eq!(
            decode(&t).unwrap(),
            Message::Truncate {
                relations: vec![1, 2],
                cascade: true,
                restart_identity: true
            }
        );
        assert_eq!(decode(b"Zxyz").unwrap(), Message::Other(b'Z'));
    }

    #[test]
    fn truncated_and_malformed_input_is_an_error_not_a_panic() {
        let full = relation_msg();
        for cut in 1..full.len() {
            assert!(decode(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[]).is_err());
        let mut bad = vec![b'I'];
        bad.extend_from_slice(&1u32.to_be_bytes());
        bad.push(b'X');
        assert!(decode(&bad).is_err());
        let mut neg = vec![b'I'];
        neg.extend_from_slice(&1u32.to_be_bytes());
        neg.push(b'N');
        neg.extend_from_slice(&1i16.to_be_bytes());
        neg.push(b't');
        neg.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(decode(&neg).is_err());
        // Column count mismatch between relation and tuple.
        assert!(tuple_to_map(&rel(), &[Datum::Null], None).is_err());
    }

    #[test]
    fn text_values_become_json_like_to_jsonb() {
        assert_eq!(text_to_json(BOOL, "t"), json!(true));
        assert_eq!(text_to_json(INT8, "-9000000000"), json!(-9000000000i64));
        assert_eq!(text_to_json(NUMERIC, "12.50"), json!(12.5));
        assert_eq!(text_to_json(NUMERIC, "NaN"), json!("NaN"));
        assert_eq!(text_to_json(JSONB, r#"{"a": [1]}"#), json!({"a": [1]}));
        assert_eq!(text_to_json(25, "hello"), json!("hello"));
        assert_eq!(
            text_to_json(TIMESTAMPTZ, "2024-01-02 03:04:05.5+00"),
            json!("2024-01-02T03:04:05.5+00:00")
        );
        assert_eq!(
            text_to_json(TIMESTAMPTZ, "2024-01-02 03:04:05+05:30"),
            json!("2024-01-02T03:04:05+05:30")
        );
        assert_eq!(
            text_to_json(TIMESTAMP, "2024-01-02 03:04:05"),
            json!("2024-01-02T03:04:05")
        );
        assert_eq!(text_to_json(DATE, "2024-01-02"), json!("2024-01-02"));
    }
}
