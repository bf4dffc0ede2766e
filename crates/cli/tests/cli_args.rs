//! Local CLI commands refuse bad arguments before they change anything: `token create` checks its
//! options as `POST /api/v1/tokens` does, `token revoke` never revokes more than one token,
//! `serve` binds its address before migrating, `migrate --status` is read-only and reports
//! modified migrations, `--log-format` and config file keys are checked. SQLite only, no server.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

/// `aragora <args> --data-dir <dir>` with no inherited database or config settings.
fn run(dir: &Path, args: &[&str]) -> Output {
    run_env(dir, &[], args)
}

fn run_env(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg("--data-dir").arg(dir);
    for var in [
        "DATABASE_URL",
        "ARAGORA_CONFIG",
        "ARAGORA_BIND",
        "ARAGORA_LOG_FORMAT",
        "ARAGORA_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_BACKTRACE", "0").env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A command that should have been refused may start serving instead: stop it after a while.
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(out) => out,
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let out = rx.recv().unwrap();
            panic!(
                "aragora {args:?} still ran after 60 s: {}{}",
                stdout(&out),
                stderr(&out)
            );
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn token_create_checks_options_like_the_http_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let long = "x".repeat(300);
    for (args, expected) in [
        (
            vec!["--name", "", "--role", "viewer"],
            "--name: must be 1 to 100 characters",
        ),
        (
            vec!["--name", "   ", "--role", "viewer"],
            "--name: must be 1 to 100 characters",
        ),
        (
            vec!["--name", long.as_str(), "--role", "viewer"],
            "--name: must be 1 to 100 characters",
        ),
        (
            vec!["--name", "ok", "--workspace", "bad ws!", "--role", "viewer"],
            "--workspace: must be 1 to 128 characters of [A-Za-z0-9._:-]",
        ),
        (
            vec!["--name", "ok", "--workspace", "", "--role", "viewer"],
            "--workspace: must be 1 to 128 characters",
        ),
        (
            vec!["--name", "ok", "--user", "", "--role", "viewer"],
            "--user: must not be empty",
        ),
        (
            vec!["--name", "ok", "--role", "wizard"],
            "--role: unknown role",
        ),
        (
            vec!["--name", "ok", "--permission", "nope"],
            "--permission: unknown permission",
        ),
        (vec!["--name", "ok"], "--role: give a role"),
    ] {
        let mut all = vec!["token", "create"];
        all.extend(&args);
        let out = run(&dir, &all);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!dir.exists(), "a refused token create creates nothing");

    // Valid options still work; the name is trimmed as over HTTP.
    let out = run(
        &dir,
        &[
            "token",
            "create",
            "--name",
            " bot ",
            "--workspace",
            "team-a.1",
            "--role",
            "viewer",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).trim().starts_with("ara_"));
    let list = stdout(&run(&dir, &["token", "list"]));
    assert!(
        list.contains(" bot ") && list.contains("team-a.1"),
        "{list}"
    );
}

#[test]
fn token_revoke_refuses_an_ambiguous_or_empty_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for _ in 0..2 {
        let out = run(
            dir,
            &["token", "create", "--name", "cli1", "--role", "viewer"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let live = |dir: &Path| {
        stdout(&run(dir, &["token", "list"]))
            .lines()
            .filter(|l| !l.contains("(revoked)"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let ids = live(dir);
    assert_eq!(ids.len(), 2);

    let out = run(dir, &["token", "revoke", "cli1"]);
    assert!(!out.status.success(), "an ambiguous name is refused");
    let err = stderr(&out);
    assert!(err.contains("2 live tokens are named `cli1`"), "{err}");
    assert!(
        ids.iter().all(|id| err.contains(id)),
        "lists the ids: {err}"
    );
    assert_eq!(live(dir).len(), 2, "nothing was revoked");

    let out = run(dir, &["token", "revoke", ""]);
    assert!(!out.status.success(), "an empty argument is refused");
    assert!(
        stderr(&out).contains("not an empty string"),
        "{}",
        stderr(&out)
    );
    assert_eq!(live(dir).len(), 2);

    // By id: exactly that token.
    let out = run(dir, &["token", "revoke", &ids[0]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(live(dir), vec![ids[1].clone()]);
    // Now the name is unambiguous: the one live token goes.
    let out = run(dir, &["token", "revoke", "cli1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&ids[1]), "{}", stdout(&out));
    assert!(live(dir).is_empty());
    let out = run(dir, &["token", "revoke", "cli1"]);
    assert!(!out.status.success(), "nothing left to revoke");
}

#[test]
fn serve_checks_its_listen_address_before_anything_else() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    for bind in ["nonsense", "127.0.0.1:99999", "", taken_addr.as_str()] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let out = run(&dir, &["serve", "--bind", bind]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "--bind {bind:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("--bind"),
            "--bind {bind:?}: {}",
            stderr(&out)
        );
        assert!(
            !stdout(&out).contains("admin token"),
            "--bind {bind:?} created a token first: {}",
            stdout(&out)
        );
        assert!(
            !dir.exists(),
            "--bind {bind:?}: the data folder was created"
        );
    }
    drop(taken);
}

#[test]
fn migrate_status_is_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("missing");
    let out = run(&dir, &["migrate", "--status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no database at"), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("pending  v20260101000000_base"), "{text}");
    assert!(!text.contains("applied"), "{text}");
    assert!(!dir.exists(), "--status created the data folder");

    // An existing folder without a database gets no database file either.
    let out = run(tmp.path(), &["migrate", "--status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!tmp.path().join("aragora.db").exists());
}

#[tokio::test]
async fn migrate_status_reports_a_modified_migration() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = run(dir, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(dir, &["migrate", "--status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("modified"));

    let url = aragora_store::Db::sqlite_url_in(dir);
    let db = aragora_store::Db::connect(&url, &Default::default())
        .await
        .unwrap();
    aragora_store::sqlx::query(
        "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 20260110000000",
    )
    .bind(vec![0u8; 48])
    .execute(db.writer())
    .await
    .unwrap();
    db.close().await;

    let applying = run(dir, &["migrate"]);
    assert!(!applying.status.success(), "migrate refuses the database");
    let out = run(dir, &["migrate", "--status"]);
    assert!(!out.status.success(), "--status fails as migrate does");
    let text = stdout(&out);
    assert!(text.contains("modified v20260110000000_debates"), "{text}");
    assert!(text.contains("applied  v20260101000000_base"), "{text}");
    assert!(
        stderr(&out).contains("previously applied but has been modified"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_log_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = run(
        &dir,
        &["serve", "--log-format", "xml", "--bind", "127.0.0.1:0"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("'xml'"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--log-format"), "{}", stderr(&out));
    let out = run_env(
        &dir,
        &[("ARAGORA_LOG_FORMAT", "xml")],
        &["migrate", "--status"],
    );
    assert!(!out.status.success(), "the environment is checked too");
    assert!(!dir.exists());
}

#[test]
fn config_file_keys_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let config = tmp.path().join("aragora.toml");
    let config_str = config.to_str().unwrap();

    std::fs::write(&config, "bnd = \"127.0.0.1:1\"\n").unwrap();
    let out = run_env(
        &dir,
        &[("ARAGORA_CONFIG", config_str)],
        &["migrate", "--status"],
    );
    assert!(!out.status.success(), "a typo'd key is refused");
    assert!(
        stderr(&out).contains("unknown key `bnd`"),
        "{}",
        stderr(&out)
    );

    // Every key the README's configuration table documents is accepted, as are the client
    // commands' `url` and `token`.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let mut keys: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `--"))
        .map(|l| l.split('`').next().unwrap().replace('-', "_"))
        .collect();
    assert!(keys.len() >= 15, "{keys:?}");
    keys.extend(["url".to_string(), "token".to_string()]);
    let mut toml = String::new();
    for key in &keys {
        let value = match key.as_str() {
            "data_dir" => dir.to_str().unwrap().to_string(),
            "database_url" => String::new(),
            "log_format" => "json".to_string(),
            _ => "1".to_string(),
        };
        toml.push_str(&format!("{key} = {value:?}\n"));
    }
    std::fs::write(&config, &toml).unwrap();
    let out = run_env(
        &dir,
        &[("ARAGORA_CONFIG", config_str)],
        &["migrate", "--status"],
    );
    assert!(out.status.success(), "{toml}\n{}", stderr(&out));
}
