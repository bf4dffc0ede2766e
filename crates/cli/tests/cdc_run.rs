//! `aragora cdc run` refuses bad specs with one JSON error line naming the field and exit
//! status 1 (the stream, sync and health paths run end to end against MariaDB in the Python SDK's
//! tests, sdk/python/tests/test_cdc_connectors.py).

use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

fn run_with(stdin: &str) -> (Option<i32>, Vec<Value>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aragora"))
        .args(["cdc", "run"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn aragora");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    (out.status.code(), lines)
}

fn error_of(stdin: &str) -> Value {
    let (code, lines) = run_with(stdin);
    assert_eq!(code, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0]["error"].clone()
}

#[test]
fn bad_specs_are_refused_naming_the_field() {
    let base = json!({"command": "sync", "id": "c1", "type": "mysql",
        "config": {"host": "127.0.0.1", "database": "app", "tables": ["t"]}, "username": "u"});

    let e = error_of("");
    assert_eq!(e["kind"], "config");
    assert_eq!(e["field"], "spec");

    let e = error_of("not json\n");
    assert_eq!(e["kind"], "config");

    let mut typo = base.clone();
    typo["typ"] = json!("mysql");
    let e = error_of(&format!("{typo}\n"));
    assert_eq!(e["field"], "typ", "{e}");

    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("config");
    let e = error_of(&format!("{missing}\n"));
    assert_eq!(e["field"], "config", "{e}");

    let mut kind = base.clone();
    kind["type"] = json!("oracle");
    let e = error_of(&format!("{kind}\n"));
    assert_eq!(e["field"], "type", "{e}");
    assert!(e["message"].as_str().unwrap().contains("mysql"), "{e}");

    let mut bad_config = base.clone();
    bad_config["config"]["tables"] = json!("t");
    let e = error_of(&format!("{bad_config}\n"));
    assert_eq!(e["field"], "config.tables", "{e}");

    let mut no_user = base.clone();
    no_user["username"] = Value::Null;
    let e = error_of(&format!("{no_user}\n"));
    assert_eq!(e["field"], "credentials.username", "{e}");

    let mut command = base.clone();
    command["command"] = json!("dance");
    let e = error_of(&format!("{command}\n"));
    assert_eq!(e["field"], "command", "{e}");
}

#[test]
fn an_unreachable_source_is_a_source_error() {
    // A port nothing listens on: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = json!({"command": "sync", "id": "c1", "type": "mysql",
        "config": {"host": "127.0.0.1", "port": port, "database": "app", "tables": ["t"]},
        "username": "u"});
    let e = error_of(&format!("{spec}\n"));
    assert_eq!(e["kind"], "source", "{e}");
    assert_eq!(e["field"], Value::Null);
}
