//! A scale-out deployment on one PostgreSQL for the multi-process suites: N × `serve
//! --no-workers` + M × `worker`, plus the helpers those suites share (a CDC source database,
//! transcripts to import, reading events straight from the database).

#![allow(dead_code)]

use aragora_store::Db;
use aragora_store::{Row, sqlx};
use aragora_testkit::{Backend, Node, TestDb, fresh_database};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

pub const BIN: &str = env!("CARGO_BIN_EXE_aragora");

/// Short leases and fast retries so take-overs and failure paths finish in seconds.
pub const FAST_ENV: &[(&str, &str)] = &[
    ("ARAGORA_CDC_LEASE_SECS", "2"),
    ("ARAGORA_DEBATE_LEASE_SECS", "3"),
    ("ARAGORA_WEBHOOK_LEASE_SECS", "3"),
    ("ARAGORA_WEBHOOK_TIMEOUT_MS", "2000"),
    ("ARAGORA_WEBHOOK_RETRY_BASE_MS", "200"),
    ("ARAGORA_WEBHOOK_RETRY_MULTIPLIER", "2"),
    ("ARAGORA_WEBHOOK_RETRY_MAX_DELAY_SECS", "2"),
    ("ARAGORA_WEBHOOK_RETRY_MAX_ATTEMPTS", "30"),
    ("ARAGORA_SHUTDOWN_GRACE_SECS", "1"),
    ("CDC_SOURCE_PASSWORD", "not-needed-with-trust-auth"),
];

pub struct Cluster {
    pub db: TestDb,
    pub apis: Vec<Node>,
    pub workers: Vec<Node>,
    pub token: String,
    pub http: reqwest::Client,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// `apis` × `serve --no-workers` and `workers` × `worker` on a fresh PostgreSQL database.
    pub async fn start(apis: usize, workers: usize, extra_env: &[(&str, &str)]) -> Cluster {
        let db = fresh_database(Backend::Postgres).await;
        let mut env: Vec<(String, String)> = FAST_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in extra_env {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut c = Cluster {
            db,
            apis: Vec::new(),
            workers: Vec::new(),
            token: String::new(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            env,
        };
        // The first API node migrates and creates the admin token; the rest join it.
        for _ in 0..apis {
            let n = c.node(&["serve", "--no-workers"]).await;
            if c.token.is_empty() {
                c.token = std::fs::read_to_string(n.data_dir.join("admin-token"))
                    .unwrap()
                    .trim()
                    .to_string();
            }
            c.apis.push(n);
        }
        for _ in 0..workers {
            let n = c.node(&["worker"]).await;
            c.workers.push(n);
        }
        c
    }

    pub async fn node(&self, args: &[&str]) -> Node {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Node::start(BIN, &self.db.url, args, &env).await
    }

    /// A request to API node `i` (round-robin by caller), with the admin token.
    pub async fn call(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let base = self.apis[i % self.apis.len()]
            .base_url
            .clone()
            .expect("an API node");
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.token);
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

    pub async fn get(&self, i: usize, path: &str) -> (u16, Value) {
        self.call(i, Method::GET, path, None).await
    }

    pub async fn post(&self, i: usize, path: &str, body: &Value) -> (u16, Value) {
        self.call(i, Method::POST, path, Some(body)).await
    }

    pub async fn db(&self) -> Db {
        Db::connect(&self.db.url, &Default::default())
            .await
            .unwrap()
    }

    /// Jobs of a queue in the given status.
    pub async fn jobs(&self, status: &str) -> i64 {
        let db = self.db().await;
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM jobs WHERE status = $1")
            .bind(status)
            .fetch_one(db.reader())
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        db.close().await;
        n
    }
}

/// A finished debate transcript to import (three agents, votes 2:1).
pub fn transcript(id: &str) -> Value {
    json!({
        "id": id, "task": format!("Choose a queue ({id})"),
        "consensus": {"mode": "majority", "threshold": 0.6},
        "agents": [{"name": "alice", "provider": "openai", "model": "gpt-x"},
                   {"name": "bob", "provider": "anthropic", "model": "claude-x"},
                   {"name": "carol", "provider": "demo"}],
        "evidence": [{"id": "ev-1", "claim": "Kafka keeps ordered partitions", "source": "docs", "url": null}],
        "rounds": [{"round": 0,
            "positions": [
                {"agent": "alice", "answer": "Kafka", "reasoning": "ordering", "confidence": 0.8, "evidence_ids": ["ev-1"]},
                {"agent": "bob", "answer": "Outbox", "reasoning": "simple", "confidence": 0.7, "evidence_ids": []},
                {"agent": "carol", "answer": "SQS", "reasoning": "managed", "confidence": 0.5, "evidence_ids": []}],
            "critiques": []}],
        "votes": [{"agent": "alice", "choice": "alice", "confidence": 0.9, "reasoning": "r"},
                  {"agent": "bob", "choice": "alice", "confidence": 0.8, "reasoning": "r"},
                  {"agent": "carol", "choice": "bob", "confidence": 0.6, "reasoning": "r"}]
    })
}

/// A debate the server runs with the offline demo provider.
pub fn demo_debate(task: &str) -> Value {
    json!({
        "task": task,
        "agents": [{"name": "a1", "provider": "demo"}, {"name": "a2", "provider": "demo"},
                   {"name": "a3", "provider": "demo"}],
        "rounds": 2,
        "consensus": {"mode": "majority", "threshold": 0.6},
    })
}

/// Events of a type in the default workspace, in publication order, read from the database.
pub async fn events(db_url: &str, event_type: &str) -> Vec<(String, Value)> {
    let db = Db::connect(db_url, &Default::default()).await.unwrap();
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page =
            aragora_store::events::list(&db, "default", Some(event_type), after.as_deref(), 5000)
                .await
                .unwrap()
                .expect("the cursor is an event")
                .events;
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.event_id.clone());
        out.extend(page.into_iter().map(|e| (e.event_id, e.data)));
    }
    db.close().await;
    out
}

/// The `cdc.change` events' payloads of the default workspace, in publication order.
pub async fn cdc_events(db_url: &str) -> Vec<Value> {
    events(db_url, "cdc.change")
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// Applies change events in order: primary key column `key` → row.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a Value>, key: &str) -> BTreeMap<i64, Value> {
    let mut state = BTreeMap::new();
    for e in events {
        let id = e["primary_key"][key].as_i64().unwrap();
        match e["operation"].as_str().unwrap() {
            "DELETE" => {
                state.remove(&id);
            }
            _ => {
                state.insert(id, e["data"].clone());
            }
        }
    }
    state
}

/// The replay position of a CDC event as [`check_replays`] takes it: its resume token, except for
/// snapshot rows, which all carry the token `snapshot`.
pub fn resume_position(e: &Value) -> Option<String> {
    (e["resume_token"] != "snapshot").then(|| e["resume_token"].to_string())
}

/// Checks that a crash's replays are identical: the same source position (`position`, when the
/// event has one) always carries the same id, and the same id always the same change (as far as
/// `comparable` keeps it; `sequence_number` is always left out). Returns how many events were
/// replays.
pub fn check_replays(
    events: &[Value],
    position: impl Fn(&Value) -> Option<String>,
    comparable: impl Fn(&Value, &mut serde_json::Map<String, Value>),
) -> usize {
    let mut by_position: HashMap<String, String> = HashMap::new();
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut replayed = 0;
    for e in events {
        let eid = e["id"].as_str().unwrap().to_string();
        if let Some(pos) = position(e)
            && let Some(prev) = by_position.insert(pos.clone(), eid.clone())
        {
            assert_eq!(prev, eid, "source position {pos} carried two ids");
        }
        let mut change = e.as_object().unwrap().clone();
        change.remove("sequence_number");
        comparable(e, &mut change);
        let change = Value::Object(change);
        if let Some(prev) = by_id.insert(eid, change.clone()) {
            assert_eq!(prev, change, "a replayed event differs from the original");
            replayed += 1;
        }
    }
    replayed
}

/// A source database for a PostgreSQL CDC connector, on the throwaway cluster.
pub struct Source {
    pub name: String,
    pub db: Db,
    pub host: String,
    pub port: u16,
}

impl Source {
    pub async fn new(ddl: &str) -> Source {
        let admin_url = aragora_testkit::pg_admin_url();
        let admin = Db::connect(&admin_url, &Default::default()).await.unwrap();
        let name = aragora_testkit::scratch_database_name("relsrc");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.writer())
            .await
            .unwrap();
        admin.close().await;
        let base = admin_url.rsplit_once('/').unwrap().0.to_string();
        let db = Db::connect(&format!("{base}/{name}"), &Default::default())
            .await
            .unwrap();
        for stmt in ddl.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(sqlx::AssertSqlSafe(stmt.to_string()))
                .execute(db.writer())
                .await
                .unwrap();
        }
        let hostport = base.rsplit('@').next().unwrap();
        let (host, port) = hostport.split_once(':').unwrap();
        Source {
            name,
            db,
            host: host.to_string(),
            port: port.parse().unwrap(),
        }
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self.db.writer())
            .await
            .unwrap();
    }

    /// id → row JSON.
    pub async fn rows(&self, table: &str) -> BTreeMap<i64, Value> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT CAST(id AS BIGINT), to_jsonb(t)::text FROM {table} t"
        )))
        .fetch_all(self.db.writer())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get::<i64, _>(0).unwrap(),
                serde_json::from_str(&r.try_get::<String, _>(1).unwrap()).unwrap(),
            )
        })
        .collect()
    }

    /// A trigger-mode connector body for these tables, publishing `cdc.change` events and
    /// indexing rows into the knowledge mound.
    pub fn connector(&self, name: &str, tables: &[&str]) -> Value {
        json!({"name": name, "type": "postgresql",
            "config": {"host": self.host, "port": self.port, "database": self.name, "tables": tables,
                       "mode": "trigger", "poll_interval_seconds": 0.2, "batch_size": 200},
            "credentials": {"username": "postgres", "password_env": "CDC_SOURCE_PASSWORD"},
            "handlers": ["webhook", "knowledge_mound"]})
    }

    pub async fn drop(self) {
        self.db.close().await;
        let admin = Db::connect(&aragora_testkit::pg_admin_url(), &Default::default())
            .await
            .unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(admin.writer())
        .await;
    }
}

/// The `cdc` knowledge items of a connector's table: primary key column `key` → (row, content).
pub async fn mound_items(
    db_url: &str,
    connector: &str,
    table: &str,
    key: &str,
) -> BTreeMap<i64, (Value, String)> {
    let db = Db::connect(db_url, &Default::default()).await.unwrap();
    let rows = sqlx::query(
        "SELECT source_key, metadata, content FROM knowledge_items WHERE workspace = 'default' AND source_type = 'cdc'",
    )
    .fetch_all(db.reader())
    .await
    .unwrap();
    db.close().await;
    rows.iter()
        .filter_map(|r| {
            let source_key: String = r.try_get(0).unwrap();
            let meta: Value = serde_json::from_str(&r.try_get::<String, _>(1).unwrap()).unwrap();
            source_key
                .starts_with(&format!("{connector}/{table}/"))
                .then(|| {
                    (
                        meta["primary_key"][key].as_i64().unwrap(),
                        (meta["data"].clone(), r.try_get(2).unwrap()),
                    )
                })
        })
        .collect()
}

/// The `cdc` knowledge items of a connector's table: primary key column `key` → row.
pub async fn mound(db_url: &str, connector: &str, table: &str, key: &str) -> BTreeMap<i64, Value> {
    mound_items(db_url, connector, table, key)
        .await
        .into_iter()
        .map(|(k, (row, _))| (k, row))
        .collect()
}

/// A small deterministic generator for fault timing (the seed is printed for replay).
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("ARAGORA_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("reliability seed: ARAGORA_RELIABILITY_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}
