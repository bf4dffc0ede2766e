//! Canonical JSON: the one encoding used wherever JSON is hashed, compared or used as a key.
//!
//! `serde_json::Map` is sorted only while no crate in the build turns on serde_json's
//! `preserve_order` feature (which makes it insertion-ordered); anything that hashes JSON must
//! therefore sort keys itself rather than rely on `Value::to_string`.

use serde_json::{Map, Value};

/// Object keys sorted by code point at every level, no insignificant whitespace, strings and
/// numbers as serde_json writes them.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

/// [`canonical_json`] of an object given as its map.
pub fn canonical_object(map: &Map<String, Value>) -> String {
    let mut out = String::new();
    write_object(map, &mut out);
    out
}

/// Appends the canonical JSON of `v` to `out`.
pub fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => write_object(map, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_object(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Keys are escaped exactly as serde_json escapes strings.
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        write_canonical(v, out);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A map built in the given key order (insertion order matters only under `preserve_order`).
    fn obj(pairs: &[(&str, Value)]) -> Value {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert((*k).to_string(), v.clone());
        }
        Value::Object(m)
    }

    #[test]
    fn keys_are_sorted_at_every_level_whatever_the_insertion_order() {
        let inner_ba = obj(&[("b", json!(1)), ("a", json!([{"z": 1, "y": 2}]))]);
        let inner_ab = obj(&[("a", json!([{"y": 2, "z": 1}])), ("b", json!(1))]);
        let x = obj(&[("z", inner_ba), ("é", json!("\"q\"")), ("A", json!(null))]);
        let y = obj(&[("A", json!(null)), ("z", inner_ab), ("é", json!("\"q\""))]);
        let want = r#"{"A":null,"z":{"a":[{"y":2,"z":1}],"b":1},"é":"\"q\""}"#;
        assert_eq!(canonical_json(&x), want);
        assert_eq!(canonical_json(&y), want);
        assert_eq!(canonical_object(x.as_object().unwrap()), want);
    }

    #[test]
    fn scalars_and_arrays_keep_serde_json_spelling_and_order() {
        assert_eq!(
            canonical_json(&json!([3, 1.5, "\n", true])),
            r#"[3,1.5,"\n",true]"#
        );
        assert_eq!(canonical_json(&json!({})), "{}");
    }
}
