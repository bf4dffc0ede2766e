//! Change-stream documents → the guide's events: insert/update/replace/delete become changes,
//! `drop`/`rename`/`dropDatabase`/`invalidate` become notices, everything else is skipped.

use crate::ChangeOperation;
use ::mongodb::bson::{Bson, Document};
use serde::Serialize;
use serde_json::{Map, Value};

/// A document as relaxed Extended JSON (`ObjectId` → `{"$oid": …}`, dates → `{"$date": …}`).
pub fn to_json_map(d: &Document) -> Map<String, Value> {
    match Bson::Document(d.clone()).into_relaxed_extjson() {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A resume token as the text stored in checkpoints and events.
pub fn token_text(t: &Document) -> String {
    Value::Object(to_json_map(t)).to_string()
}

/// Parses a stored token back into a document.
pub fn parse_token(s: &str) -> Result<Document, String> {
    let v: Value =
        serde_json::from_str(s).map_err(|e| format!("malformed MongoDB resume token: {e}"))?;
    match Bson::try_from(v) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(_) => Err("malformed MongoDB resume token: not a document".into()),
        Err(e) => Err(format!("malformed MongoDB resume token: {e}")),
    }
}

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Drop,
    Rename,
    DropDatabase,
    Invalidate,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Drop => "drop",
            NoticeKind::Rename => "rename",
            NoticeKind::DropDatabase => "drop_database",
            NoticeKind::Invalidate => "invalidate",
        }
    }
}

/// A data change, ready to become a `ChangeEvent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub operation: ChangeOperation,
    pub database: String,
    pub collection: String,
    pub data: Map<String, Value>,
    pub old_data: Map<String, Value>,
    pub primary_key: Map<String, Value>,
    /// The event's own token (`_id`).
    pub token: Document,
    /// Commit time in ms (wallTime, else clusterTime seconds), when the server sent one.
    pub time_ms: Option<i64>,
    /// `clusterTime` as (seconds, increment).
    pub cluster_time: Option<(u32, u32)>,
}

/// What one change-stream document means.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Change(Box<Change>),
    Notice {
        kind: NoticeKind,
        message: String,
        token: Document,
    },
    /// Events the connector does not act on (`create`, `createIndexes`, …), by type.
    Skip(String),
}

fn ns(d: &Document, field: &str) -> (String, String) {
    let n = d.get_document(field).ok();
    let db = n
        .and_then(|n| n.get_str("db").ok())
        .unwrap_or_default()
        .to_string();
    let coll = n
        .and_then(|n| n.get_str("coll").ok())
        .unwrap_or_default()
        .to_string();
    (db, coll)
}

fn doc_field(d: &Document, field: &str) -> Option<Document> {
    match d.get(field) {
        Some(Bson::Document(x)) => Some(x.clone()),
        _ => None,
    }
}

/// Sets `path` (dotted, array indexes as numbers) in `doc`, creating sub-documents.
fn set_path(doc: &mut Document, path: &str, value: Bson) {
    let mut parts = path.splitn(2, '.');
    let head = parts.next().unwrap_or_default();
    match parts.next() {
        None => {
            doc.insert(head, value);
        }
        Some(rest) => match doc.get_mut(head) {
            Some(Bson::Document(sub)) => set_path(sub, rest, value),
            Some(Bson::Array(arr)) => set_in_array(arr, rest, value),
            _ => {
                let mut sub = Document::new();
                set_path(&mut sub, rest, value);
                doc.insert(head, sub);
            }
        },
    }
}

fn set_in_array(arr: &mut Vec<Bson>, path: &str, value: Bson) {
    let mut parts = path.splitn(2, '.');
    let Some(i) = parts.next().and_then(|p| p.parse::<usize>().ok()) else {
        return;
    };
    while arr.len() <= i {
        arr.push(Bson::Null);
    }
    match parts.next() {
        None => arr[i] = value,
        Some(rest) => match &mut arr[i] {
            Bson::Document(sub) => set_path(sub, rest, value),
            Bson::Array(inner) => set_in_array(inner, rest, value),
            slot => {
                let mut sub = Document::new();
                set_path(&mut sub, rest, value);
                *slot = Bson::Document(sub);
            }
        },
    }
}

fn remove_path(doc: &mut Document, path: &str) {
    match path.split_once('.') {
        None => {
            doc.remove(path);
        }
        Some((head, rest)) => {
            if let Some(Bson::Document(sub)) = doc.get_mut(head) {
                remove_path(sub, rest);
            }
        }
    }
}

/// The new document of an update event whose `fullDocument` is missing (deleted since, or no
/// lookup asked): the pre-image with the update description applied, else the key plus the
/// changed fields.
fn reconstruct(key: &Document, pre: Option<&Document>, ud: Option<&Document>) -> Document {
    let mut out = match pre {
        Some(p) => p.clone(),
        None => key.clone(),
    };
    if let Some(ud) = ud {
        if let Ok(removed) = ud.get_array("removedFields") {
            for f in removed.iter().filter_map(Bson::as_str) {
                remove_path(&mut out, f);
            }
        }
        if let Ok(truncated) = ud.get_array("truncatedArrays") {
            for t in truncated.iter().filter_map(Bson::as_document) {
                let (Ok(field), Some(size)) = (
                    t.get_str("field"),
                    t.get("newSize").and_then(|v| match v {
                        Bson::Int32(n) => Some(*n as usize),
                        Bson::Int64(n) => Some(*n as usize),
                        _ => None,
                    }),
                ) else {
                    continue;
                };
                if let Some(Bson::Array(a)) = get_path_mut(&mut out, field) {
                    a.truncate(size);
                }
            }
        }
        if let Ok(updated) = ud.get_document("updatedFields") {
            for (k, v) in updated {
                set_path(&mut out, k, v.clone());
            }
        }
    }
    out
}

fn get_path_mut<'a>(doc: &'a mut Document, path: &str) -> Option<&'a mut Bson> {
    match path.split_once('.') {
        None => doc.get_mut(path),
        Some((head, rest)) => match doc.get_mut(head) {
            Some(Bson::Document(sub)) => get_path_mut(sub, rest),
            _ => None,
        },
    }
}

fn time_ms(d: &Document) -> (Option<i64>, Option<(u32, u32)>) {
    let cluster = match d.get("clusterTime") {
        Some(Bson::Timestamp(t)) => Some((t.time, t.increment)),
        _ => None,
    };
    let wall = match d.get("wallTime") {
        Some(Bson::DateTime(t)) => Some(t.timestamp_millis()),
        _ => None,
    };
    (wall.or(cluster.map(|(s, _)| s as i64 * 1000)), cluster)
}

/// Interprets one change-stream document.
pub fn map_event(d: &Document) -> Result<Mapped, String> {
    let token = doc_field(d, "_id").ok_or("change event without a resume token (_id)")?;
    let op = d
        .get_str("operationType")
        .map_err(|_| "change event without operationType".to_string())?;
    let (db, coll) = ns(d, "ns");
    let notice = |kind: NoticeKind, message: String| Mapped::Notice {
        kind,
        message,
        token: token.clone(),
    };
    let operation = match op {
        "insert" => ChangeOperation::Insert,
        "update" | "replace" => ChangeOperation::Update,
        "delete" => ChangeOperation::Delete,
        "drop" => {
            return Ok(notice(
                NoticeKind::Drop,
                format!(
                    "collection {db}.{coll} was dropped: its documents are gone from the source \
                     and no DELETE events are emitted for them"
                ),
            ));
        }
        "rename" => {
            let (to_db, to_coll) = ns(d, "to");
            return Ok(notice(
                NoticeKind::Rename,
                format!("collection {db}.{coll} was renamed to {to_db}.{to_coll}"),
            ));
        }
        "dropDatabase" => {
            return Ok(notice(
                NoticeKind::DropDatabase,
                format!("database {db} was dropped"),
            ));
        }
        "invalidate" => {
            return Ok(notice(
                NoticeKind::Invalidate,
                "the change stream was invalidated (its database or collection was dropped or \
                 renamed); capture continues after the invalidate event (startAfter)"
                    .to_string(),
            ));
        }
        other => return Ok(Mapped::Skip(other.to_string())),
    };
    let key = doc_field(d, "documentKey").ok_or("change event without documentKey")?;
    let full = doc_field(d, "fullDocument");
    let pre = doc_field(d, "fullDocumentBeforeChange");
    let data = match (op, full) {
        ("delete", _) => Document::new(),
        (_, Some(f)) => f,
        ("update", None) => reconstruct(
            &key,
            pre.as_ref(),
            doc_field(d, "updateDescription").as_ref(),
        ),
        (_, None) => key.clone(),
    };
    let (time_ms, cluster_time) = time_ms(d);
    Ok(Mapped::Change(Box::new(Change {
        operation,
        database: db,
        collection: coll,
        data: to_json_map(&data),
        old_data: pre.as_ref().map(to_json_map).unwrap_or_default(),
        primary_key: to_json_map(&key),
        token,
        time_ms,
        cluster_time,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::mongodb::bson::{doc, oid::ObjectId};
    use serde_json::json;

    fn tok(n: i32) -> Document {
        doc! { "_data": format!("82{n:08}") }
    }

    #[test]
    fn tokens_round_trip_through_text() {
        let t = doc! { "_data": "8263A1B2C3000000012B022C0100296E5A1004" };
        let s = token_text(&t);
        assert_eq!(s, r#"{"_data":"8263A1B2C3000000012B022C0100296E5A1004"}"#);
        assert_eq!(parse_token(&s).unwrap(), t);
        assert!(parse_token("nope").unwrap_err().contains("malformed"));
        assert!(parse_token("[1]").unwrap_err().contains("not a document"));
    }

    #[test]
    fn insert_maps_document_key_and_full_document() {
        let oid = ObjectId::parse_str("6b08342e25dd2a85b6edd589").unwrap();
        let d = doc! {
            "_id": tok(1), "operationType": "insert",
            "ns": { "db": "app", "coll": "users" },
            "documentKey": { "_id": oid },
            "fullDocument": { "_id": oid, "name": "Ann", "n": 5_i64 },
            "wallTime": ::mongodb::bson::DateTime::from_millis(1_700_000_000_123),
        };
        let Mapped::Change(c) = map_event(&d).unwrap() else {
            panic!("not a change")
        };
        assert_eq!(c.operation, ChangeOperation::Insert);
        assert_eq!(
            Value::Object(c.primary_key.clone()),
            json!({"_id": {"$oid": "6b08342e25dd2a85b6edd589"}})
        );
        assert_eq!(c.data["name"], json!("Ann"));
        assert_eq!(c.data["n"], json!(5));
        assert!(c.old_data.is_empty());
        assert_eq!(c.time_ms, Some(1_700_000_000_123));
        assert_eq!(
            (c.database.as_str(), c.collection.as_str()),
            ("app", "users")
        );
    }

    #[test]
    fn update_without_full_document_applies_the_description_to_the_pre_image() {
        let d = doc! {
            "_id": tok(2), "operationType": "update",
            "ns": { "db": "app", "coll": "users" },
            "documentKey": { "_id": 1 },
            "fullDocument": Bson::Null,
            "fullDocumentBeforeChange": { "_id": 1, "a": { "b": 1, "c": 2 }, "gone": true, "arr": [1, 2, 3] },
            "updateDescription": {
                "updatedFields": { "a.b": 5, "x": "new", "arr.0": 9 },
                "removedFields": ["gone"],
                "truncatedArrays": [{ "field": "arr", "newSize": 2 }],
            },
        };
        let Mapped::Change(c) = map_event(&d).unwrap() else {
            panic!()
        };
        assert_eq!(c.operation, ChangeOperation::Update);
        assert_eq!(
            Value::Object(c.data),
            json!({"_id": 1, "a": {"b": 5, "c": 2}, "arr": [9, 2], "x": "new"})
        );
        assert_eq!(c.old_data["gone"], json!(true));
    }

    #[test]
    fn update_without_any_image_carries_key_and_changed_fields() {
        let d = doc! {
            "_id": tok(3), "operationType": "update",
            "ns": { "db": "app", "coll": "users" },
            "documentKey": { "_id": "k" },
            "updateDescription": { "updatedFields": { "v": 2 }, "removedFields": [] },
        };
        let Mapped::Change(c) = map_event(&d).unwrap() else {
            panic!()
        };
        assert_eq!(Value::Object(c.data), json!({"_id": "k", "v": 2}));
    }

    #[test]
    fn replace_is_an_update_and_delete_keeps_the_pre_image() {
        let r = doc! {
            "_id": tok(4), "operationType": "replace", "ns": { "db": "d", "coll": "c" },
            "documentKey": { "_id": 1 }, "fullDocument": { "_id": 1, "y": 3 },
            "fullDocumentBeforeChange": { "_id": 1, "x": 2 },
        };
        let Mapped::Change(c) = map_event(&r).unwrap() else {
            panic!()
        };
        assert_eq!(c.operation, ChangeOperation::Update);
        assert_eq!(Value::Object(c.data), json!({"_id": 1, "y": 3}));
        assert_eq!(Value::Object(c.old_data), json!({"_id": 1, "x": 2}));
        let del = doc! {
            "_id": tok(5), "operationType": "delete", "ns": { "db": "d", "coll": "c" },
            "documentKey": { "_id": 1 }, "fullDocumentBeforeChange": { "_id": 1, "y": 3 },
        };
        let Mapped::Change(c) = map_event(&del).unwrap() else {
            panic!()
        };
        assert_eq!(c.operation, ChangeOperation::Delete);
        assert!(c.data.is_empty());
        assert_eq!(Value::Object(c.old_data), json!({"_id": 1, "y": 3}));
    }

    #[test]
    fn structural_events_are_notices_and_others_skipped() {
        let drop =
            doc! { "_id": tok(6), "operationType": "drop", "ns": { "db": "d", "coll": "c" } };
        assert!(matches!(
            map_event(&drop).unwrap(),
            Mapped::Notice {
                kind: NoticeKind::Drop,
                ..
            }
        ));
        let ren = doc! { "_id": tok(7), "operationType": "rename", "ns": { "db": "d", "coll": "c" }, "to": { "db": "d", "coll": "e" } };
        match map_event(&ren).unwrap() {
            Mapped::Notice { kind, message, .. } => {
                assert_eq!(kind, NoticeKind::Rename);
                assert!(message.contains("d.c was renamed to d.e"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let inv = doc! { "_id": tok(8), "operationType": "invalidate" };
        assert!(matches!(
            map_event(&inv).unwrap(),
            Mapped::Notice {
                kind: NoticeKind::Invalidate,
                ..
            }
        ));
        let create =
            doc! { "_id": tok(9), "operationType": "create", "ns": { "db": "d", "coll": "c" } };
        assert_eq!(map_event(&create).unwrap(), Mapped::Skip("create".into()));
        assert!(map_event(&doc! { "operationType": "insert" }).is_err());
    }
}
