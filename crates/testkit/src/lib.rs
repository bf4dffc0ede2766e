//! Test harness shared by every suite.
//!
//! - [`Backend`] + [`fresh_database`]: an empty SQLite file or a new database on the throwaway
//!   PostgreSQL cluster (`ARAGORA_TEST_PG_URL`, else started with `scripts/test-services start`).
//! - [`Server`]: the real `aragora` binary on `127.0.0.1:0`, with its admin token, killed on drop.
//! - [`both_backends!`]: writes one test body once and runs it on SQLite and on PostgreSQL.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one async test body against both backends:
/// `both_backends!(name, |backend| async move { … });` defines `name_sqlite` and `name_postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::Backend::Postgres).await
            }
        }
    };
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Admin URL of the throwaway PostgreSQL cluster, starting it on first use when the environment
/// does not name one.
pub fn pg_admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("ARAGORA_TEST_PG_URL") {
            return url;
        }
        let out = std::process::Command::new(repo_root().join("scripts/test-services"))
            .arg("start")
            .output()
            .expect("run scripts/test-services start");
        assert!(
            out.status.success(),
            "scripts/test-services start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export ARAGORA_TEST_PG_URL="))
            .expect("test-services prints the URL")
            .to_string()
    })
    .clone()
}

/// URL of the MongoDB emulator (secantusdb, a separate process started by
/// `scripts/test-services start` when `ARAGORA_TEST_MONGO_URL` is not set).
pub fn mongo_test_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("ARAGORA_TEST_MONGO_URL") {
            return url;
        }
        let out = std::process::Command::new(repo_root().join("scripts/test-services"))
            .arg("start")
            .output()
            .expect("run scripts/test-services start");
        assert!(
            out.status.success(),
            "scripts/test-services start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export ARAGORA_TEST_MONGO_URL="))
            .expect("test-services prints the MongoDB URL")
            .trim_matches('\'')
            .to_string()
    })
    .clone()
}

/// CPU time this process (all its threads) has used so far: for benchmarks that report the work
/// per operation, which contention for the cores inflates far less than wall time.
pub fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// 32 random hex digits, for names tests must not share.
pub fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A PostgreSQL database name no other test uses, `t<unix seconds>_<label>_<random>`: the
/// creation time lets any later test process drop it (and its idle replication slots) if the test
/// that made it died before dropping it. For every database a test creates.
pub fn scratch_database_name(label: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    format!("t{now}_{label}_{}", random_hex())
}

/// An empty database for one test. Keep it alive as long as the URL is used.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

/// Test databases are not dropped when a test ends (a test's server may still hold connections);
/// instead the first test of each process drops those created more than three hours ago (their
/// name carries the creation time), so a developer's cluster does not fill the disk over days.
async fn drop_stale_test_databases(pool: &sqlx::AnyPool, now: u64) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 't%\\_%'")
                .fetch_all(pool)
                .await
                .unwrap_or_default();
        for name in names {
            let created = name[1..]
                .split('_')
                .next()
                .and_then(|t| t.parse::<u64>().ok());
            if created.is_some_and(|t| t + 3 * 3600 < now) {
                // A CDC test that died keeps its logical slot, which pins WAL and the database.
                let _ = sqlx::query(
                    "SELECT CAST(pg_drop_replication_slot(slot_name) AS TEXT) FROM pg_replication_slots \
                     WHERE NOT active AND database = $1",
                )
                .bind(&name)
                .fetch_all(pool)
                .await;
                // Fails harmlessly while something is still connected.
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name}"
                )))
                .execute(pool)
                .await;
            }
        }
    })
    .await;
}

pub async fn fresh_database(backend: Backend) -> TestDb {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            TestDb {
                url: format!("sqlite://{}", dir.path().join("aragora.db").display()),
                backend,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let admin = pg_admin_url();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs();
            let name = scratch_database_name("db");
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&admin)
                .await
                .expect("connect to test postgres");
            drop_stale_test_databases(&pool, now).await;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .expect("create test database");
            pool.close().await;
            let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
            TestDb {
                url: format!("{base}/{name}"),
                backend,
                _dir: None,
            }
        }
    }
}

/// A running `aragora` server process.
pub struct Server {
    pub base_url: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    pub db: TestDb,
    child: Option<Child>,
    _data: tempfile::TempDir,
    http: reqwest::Client,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Server {
    /// Starts `bin serve` on a fresh database of `backend`.
    pub async fn start(bin: &str, backend: Backend) -> Server {
        Self::start_with(bin, backend, ServerOptions::default()).await
    }

    pub async fn start_with(bin: &str, backend: Backend, opts: ServerOptions) -> Server {
        let db = fresh_database(backend).await;
        let data = tempfile::tempdir().expect("tempdir");
        let mut server = Server {
            base_url: String::new(),
            admin_token: String::new(),
            data_dir: data.path().to_path_buf(),
            db,
            child: None,
            _data: data,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            bin: PathBuf::from(bin),
            args: opts.args,
            env: opts.env,
        };
        server.spawn(None).await;
        server
    }

    /// (Re)starts the process on the same database and data dir; `port` reuses an address.
    async fn spawn(&mut self, port: Option<u16>) {
        let bind = format!("127.0.0.1:{}", port.unwrap_or(0));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .args(["--bind", &bind])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .env("ARAGORA_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8")
            .env("ARAGORA_PROVIDER_ALLOW_CIDRS", "127.0.0.0/8")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        cmd.env("DATABASE_URL", &self.db.url);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aragora");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(url) = line.split("listening on ").nth(1) {
                    return url.trim().to_string();
                }
            }
            panic!("aragora exited before listening");
        })
        .await
        .expect("server did not start within 60s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.base_url = base;
        self.admin_token = std::fs::read_to_string(self.data_dir.join("admin-token"))
            .expect("admin-token file")
            .trim()
            .to_string();
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill");
        }
    }

    /// SIGTERM and wait for a graceful exit; returns the exit status code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        if let Some(pid) = c.id() {
            // SAFETY: sending a signal to our own child process id.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let status = tokio::time::timeout(Duration::from_secs(30), c.wait())
            .await
            .expect("graceful shutdown within 30s")
            .expect("wait");
        status.code()
    }

    /// Starts the process again (after `kill`/`terminate`) on the same port, database and data.
    pub async fn restart(&mut self) {
        let port = self
            .base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok());
        self.spawn(port).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request with `token` (if any) and returns status and JSON body (`Null` if empty or
    /// not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The Prometheus text of `/metrics` (no token: tests run without `--metrics-token`).
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.expect("metrics text")
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// Creates a token through the admin API and returns the secret.
    pub async fn token(&self, name: &str, workspace: &str, role: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/tokens",
                &self.admin_token,
                &serde_json::json!({"name": name, "workspace": workspace, "role": role}),
            )
            .await;
        assert_eq!(status, 201, "create token: {body}");
        body["token"].as_str().expect("token").to_string()
    }
}

/// Polls `check` until it returns `Some`, up to `timeout`; the poll interval starts at 5 ms and
/// doubles to 200 ms. For waiting on work done by another process, where no notification exists.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut wait = Duration::from_millis(5);
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(200));
    }
}

/// One more `aragora` process on an existing database, for scale-out tests: `serve`,
/// `serve --no-workers` or `worker`. Killed on drop.
pub struct Node {
    /// `http://127.0.0.1:port` for API processes; `None` for `worker`.
    pub base_url: Option<String>,
    pub data_dir: PathBuf,
    child: Option<Child>,
    bin: PathBuf,
    db_url: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    _data: tempfile::TempDir,
}

impl Node {
    /// Starts `bin <args…>` (e.g. `["serve", "--no-workers"]` or `["worker"]`) on `db_url` and
    /// waits until it listens (API) or reports its workers running (worker).
    pub async fn start(bin: &str, db_url: &str, args: &[&str], env: &[(&str, &str)]) -> Node {
        let data = tempfile::tempdir().expect("tempdir");
        let mut node = Node {
            base_url: None,
            data_dir: data.path().to_path_buf(),
            child: None,
            bin: PathBuf::from(bin),
            db_url: db_url.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _data: data,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .env("DATABASE_URL", &self.db_url)
            .env("RUST_LOG", "warn")
            .env("ARAGORA_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8")
            .env("ARAGORA_PROVIDER_ALLOW_CIDRS", "127.0.0.0/8")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aragora");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(url) = line.split("listening on ").nth(1) {
                    return Some(url.trim().to_string());
                }
                if line.contains("worker running") {
                    return None;
                }
            }
            panic!("aragora {:?} exited before it was ready", self.args);
        })
        .await
        .expect("node did not start within 60s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.base_url = base;
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill");
        }
    }

    /// Starts the same command again (an API node gets a new port).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

/// Admin URL (`mysql://root@127.0.0.1:port/mysql`) of the throwaway MariaDB server (ROW binlog,
/// GTID), from `ARAGORA_TEST_MYSQL_URL` or started with `scripts/test-services start mysql`.
pub fn mysql_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("ARAGORA_TEST_MYSQL_URL") {
            return url;
        }
        let out = std::process::Command::new(repo_root().join("scripts/test-services"))
            .args(["start", "mysql"])
            .output()
            .expect("run scripts/test-services start mysql");
        assert!(
            out.status.success(),
            "scripts/test-services start mysql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("export ARAGORA_TEST_MYSQL_URL="))
            .expect("test-services prints the MySQL URL")
            .to_string()
    })
    .clone()
}
