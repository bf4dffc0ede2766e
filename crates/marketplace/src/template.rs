//! `template_data`: the workflow graph a template carries. Validation names the offending node or
//! edge by its JSON path (`template_data.edges[3].target`); the checksum is SHA-256 over the
//! canonical JSON, so a client can verify a download by re-canonicalising it.

use aragora_core::Error;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Size limits on a template graph (configurable by the operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest canonical JSON encoding, in bytes.
    pub max_bytes: usize,
    pub max_nodes: usize,
    pub max_edges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 * 1024,
            max_nodes: 5_000,
            max_edges: 20_000,
        }
    }
}

/// Longest node or edge id.
pub const MAX_ID_LEN: usize = 200;

const FIELD: &str = "template_data";

/// A validated graph in canonical form, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// Canonical JSON text (keys sorted, no insignificant whitespace).
    pub json: String,
    /// `sha256:<64 hex>` of `json`.
    pub checksum: String,
    pub nodes: usize,
    pub edges: usize,
}

fn id_of<'a>(v: &'a Value, path: &str, what: &str) -> Result<&'a str, Error> {
    match v {
        Value::String(s) if s.is_empty() => {
            Err(Error::invalid(path, format!("{what} must not be empty")))
        }
        Value::String(s) if s.len() > MAX_ID_LEN => Err(Error::invalid(
            path,
            format!("{what} is longer than {MAX_ID_LEN} bytes"),
        )),
        Value::String(s) => Ok(s),
        Value::Null => Err(Error::invalid(path, format!("{what} is required"))),
        other => Err(Error::invalid(
            path,
            format!("{what} must be a string, not {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the graph: an object whose `nodes` is a non-empty array of objects with unique string
/// `id`s, and whose optional `edges` is an array of objects whose `source` and `target` name
/// existing nodes (edge `id`s, when given, are unique too). Other keys are kept as they are.
pub fn validate(data: &Value, limits: &Limits) -> Result<Canonical, Error> {
    let Value::Object(obj) = data else {
        return Err(Error::invalid(
            FIELD,
            format!(
                "must be an object with `nodes` and `edges`, not {}",
                kind(data)
            ),
        ));
    };
    let nodes = match obj.get("nodes") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => {
            return Err(Error::invalid(
                "template_data.nodes",
                "is required: an array of nodes",
            ));
        }
        Some(other) => {
            return Err(Error::invalid(
                "template_data.nodes",
                format!("must be an array, not {}", kind(other)),
            ));
        }
    };
    if nodes.is_empty() {
        return Err(Error::invalid(
            "template_data.nodes",
            "must contain at least one node",
        ));
    }
    if nodes.len() > limits.max_nodes {
        return Err(Error::invalid(
            "template_data.nodes",
            format!(
                "has {} nodes; the limit is {}",
                nodes.len(),
                limits.max_nodes
            ),
        ));
    }
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let path = format!("template_data.nodes[{i}]");
        let Value::Object(n) = node else {
            return Err(Error::invalid(
                path,
                format!("must be an object, not {}", kind(node)),
            ));
        };
        let id_path = format!("{path}.id");
        let id = id_of(n.get("id").unwrap_or(&Value::Null), &id_path, "node id")?;
        if let Some(first) = ids.insert(id, i) {
            return Err(Error::invalid(
                id_path,
                format!("duplicate node id `{id}` (first used by template_data.nodes[{first}])"),
            ));
        }
    }
    let empty = Vec::new();
    let edges = match obj.get("edges") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => &empty,
        Some(other) => {
            return Err(Error::invalid(
                "template_data.edges",
                format!("must be an array, not {}", kind(other)),
            ));
        }
    };
    if edges.len() > limits.max_edges {
        return Err(Error::invalid(
            "template_data.edges",
            format!(
                "has {} edges; the limit is {}",
                edges.len(),
                limits.max_edges
            ),
        ));
    }
    let mut edge_ids: HashMap<&str, usize> = HashMap::new();
    for (i, edge) in edges.iter().enumerate() {
        let path = format!("template_data.edges[{i}]");
        let Value::Object(e) = edge else {
            return Err(Error::invalid(
                path,
                format!("must be an object, not {}", kind(edge)),
            ));
        };
        if let Some(idv) = e.get("id") {
            let id_path = format!("{path}.id");
            let id = id_of(idv, &id_path, "edge id")?;
            if let Some(first) = edge_ids.insert(id, i) {
                return Err(Error::invalid(
                    id_path,
                    format!(
                        "duplicate edge id `{id}` (first used by template_data.edges[{first}])"
                    ),
                ));
            }
        }
        for end in ["source", "target"] {
            let end_path = format!("{path}.{end}");
            let id = id_of(e.get(end).unwrap_or(&Value::Null), &end_path, end)?;
            if !ids.contains_key(id) {
                return Err(Error::invalid(
                    end_path,
                    format!("names node `{id}`, which is not in template_data.nodes"),
                ));
            }
        }
    }
    let json = canonical_json(data);
    if json.len() > limits.max_bytes {
        return Err(Error::invalid(
            FIELD,
            format!(
                "is {} bytes as canonical JSON; the limit is {} bytes",
                json.len(),
                limits.max_bytes
            ),
        ));
    }
    Ok(Canonical {
        checksum: checksum(&json),
        json,
        nodes: nodes.len(),
        edges: edges.len(),
    })
}

/// `sha256:<hex>` of the bytes.
pub fn checksum(canonical: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// Canonical JSON (keys sorted at every level, no whitespace): the one shared encoding.
pub use aragora_core::json::canonical_json;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(r: Result<Canonical, Error>) -> (String, String) {
        match r {
            Err(Error::Invalid { field, message }) => (field, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn graph() -> Value {
        json!({"nodes": [{"id": "a", "type": "scan"}, {"id": "b"}, {"id": "c"}],
               "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c"},
                         {"source": "c", "target": "a"}, {"id": "e4", "source": "a", "target": "c"}]})
    }

    #[test]
    fn accepts_a_valid_graph() {
        let c = validate(&graph(), &Limits::default()).unwrap();
        assert_eq!((c.nodes, c.edges), (3, 4));
        assert!(c.checksum.starts_with("sha256:") && c.checksum.len() == 7 + 64);
        // edges are optional
        assert!(validate(&json!({"nodes": [{"id": "x"}]}), &Limits::default()).is_ok());
    }

    #[test]
    fn names_the_offending_node_or_edge() {
        let l = Limits::default();
        let mut g = graph();
        g["edges"][3]["target"] = json!("zz");
        let (f, m) = field_of(validate(&g, &l));
        assert_eq!(f, "template_data.edges[3].target");
        assert!(m.contains("`zz`"), "{m}");

        let mut g = graph();
        g["nodes"][2]["id"] = json!("a");
        let (f, m) = field_of(validate(&g, &l));
        assert_eq!(f, "template_data.nodes[2].id");
        assert!(m.contains("nodes[0]"), "{m}");

        let mut g = graph();
        g["nodes"][1] = json!({"name": "no id"});
        assert_eq!(field_of(validate(&g, &l)).0, "template_data.nodes[1].id");
        let mut g = graph();
        g["nodes"][1]["id"] = json!(7);
        assert_eq!(field_of(validate(&g, &l)).0, "template_data.nodes[1].id");
        let mut g = graph();
        g["nodes"][0] = json!("a");
        assert_eq!(field_of(validate(&g, &l)).0, "template_data.nodes[0]");
        let mut g = graph();
        g["edges"][1] = json!({"target": "a"});
        assert_eq!(
            field_of(validate(&g, &l)).0,
            "template_data.edges[1].source"
        );
        let mut g = graph();
        g["edges"][0]["id"] = json!("e4");
        assert_eq!(field_of(validate(&g, &l)).0, "template_data.edges[3].id");
        let mut g = graph();
        g["edges"] = json!({});
        assert_eq!(field_of(validate(&g, &l)).0, "template_data.edges");
        assert_eq!(
            field_of(validate(&json!({"edges": []}), &l)).0,
            "template_data.nodes"
        );
        assert_eq!(
            field_of(validate(&json!({"nodes": []}), &l)).0,
            "template_data.nodes"
        );
        assert_eq!(field_of(validate(&json!([1]), &l)).0, "template_data");
    }

    #[test]
    fn enforces_limits() {
        let tight = Limits {
            max_bytes: 60,
            max_nodes: 2,
            max_edges: 1,
        };
        let (f, m) = field_of(validate(&graph(), &tight));
        assert_eq!(f, "template_data.nodes");
        assert!(m.contains("limit is 2"));
        let g = json!({"nodes": [{"id": "a"}], "edges": [{"source": "a", "target": "a"}, {"source": "a", "target": "a"}]});
        assert_eq!(field_of(validate(&g, &tight)).0, "template_data.edges");
        let g = json!({"nodes": [{"id": "a", "text": "x".repeat(100)}]});
        let (f, m) = field_of(validate(&g, &tight));
        assert_eq!(f, "template_data");
        assert!(m.contains("60 bytes"), "{m}");
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let a: Value = serde_json::from_str(
            r#"{ "b": 1, "a": {"z": [1, 2, {"y": "é\n", "x": null}], "m": true} }"#,
        )
        .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"m":true,"z":[1,2,{"x":null,"y":"é\n"}]},"b":1}"#)
                .unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"m":true,"z":[1,2,{"x":null,"y":"é\n"}]},"b":1}"#
        );
        assert_eq!(checksum(&canonical_json(&a)), checksum(&canonical_json(&b)));
        // Known vector: sha256("{}")
        assert_eq!(
            checksum("{}"),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
