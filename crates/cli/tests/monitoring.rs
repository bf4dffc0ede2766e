//! The monitoring package is checked against the running server: exercise the features (a CDC
//! connector in trigger mode included), scrape `/metrics`, and fail if a dashboard panel or alert
//! rule queries a metric the server does not emit, selects or groups by a label the metric does not
//! have, or uses the wrong PromQL function for its type; and if a promtool unit test feeds a series
//! whose label set the server never produces.

use aragora_store::{Db, sqlx};
use aragora_testkit::{Backend, Server, ServerOptions, both_backends, eventually};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// What a scrape exposes: `name → type` (from `# TYPE`) and `name → label names` (union over its
/// series; a histogram's labels are its buckets' labels without `le`).
struct Exposition {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
    /// `(metric, label) → values seen`, for the labels in [`ENUMERATED`].
    values: BTreeMap<(String, String), BTreeSet<String>>,
}

/// Labels with a fixed set of values: a selector or test series naming any other value is a typo
/// or a value the server never produces (every value of these is exercised before the scrape).
const ENUMERATED: [&str; 5] = ["status", "outcome", "state", "reason", "operation"];

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let types: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_string(), t.trim().to_string()))
            .collect();
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut values: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, _) = line.rsplit_once(' ').expect("sample value");
            let (name, set) = parse_series(series);
            let base = histogram_base(&name, &types).unwrap_or(name);
            for (k, v) in set {
                if ENUMERATED.contains(&k.as_str()) {
                    values
                        .entry((base.clone(), k.clone()))
                        .or_default()
                        .insert(v);
                }
                if k != "le" {
                    labels.entry(base.clone()).or_default().insert(k);
                }
            }
            labels.entry(base).or_default();
        }
        Exposition {
            types,
            labels,
            values,
        }
    }

    /// A problem if `metric{label="value"}` names a value of an enumerated label the server did
    /// not produce.
    fn check_value(&self, metric: &str, label: &str, value: &str) -> Option<String> {
        let seen = self.values.get(&(metric.to_string(), label.to_string()))?;
        (!seen.contains(value))
            .then(|| format!("`{metric}` never has {label}=\"{value}\" (seen: {seen:?})"))
    }

    /// The metric a series name belongs to (a histogram's `_bucket`/`_count`/`_sum` → the
    /// histogram), if the server exposes it.
    fn metric_of(&self, name: &str) -> Option<String> {
        histogram_base(name, &self.types)
            .or_else(|| self.types.contains_key(name).then(|| name.to_string()))
    }
}

fn histogram_base(name: &str, types: &BTreeMap<String, String>) -> Option<String> {
    ["_bucket", "_count", "_sum"]
        .into_iter()
        .find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (types.get(base).map(String::as_str) == Some("histogram")).then(|| base.to_string())
        })
}

/// `name{a="x",b="y"}` → (name, {a: x, b: y}).
fn parse_series(series: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.trim().to_string(), BTreeMap::new());
    };
    let body = rest.trim_end().strip_suffix('}').expect("closing brace");
    (name.trim().to_string(), parse_matchers(body))
}

/// `a="x", b!~"y"` → {a: x, b: y} (values may contain commas).
fn parse_matchers(body: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!']).expect("matcher operator");
        let key = rest[..op_at].trim().to_string();
        let q1 = rest.find('"').expect("quoted value");
        let mut end = q1 + 1;
        let bytes = rest.as_bytes();
        while bytes[end] != b'"' || bytes[end - 1] == b'\\' {
            end += 1;
        }
        out.insert(key, rest[q1 + 1..end].to_string());
        rest = rest[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    out
}

/// Label names in `by (…)` / `without (…)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in ["by", "without"] {
        let mut i = 0;
        while let Some(pos) = expr[i..].find(kw) {
            let at = i + pos;
            i = at + kw.len();
            let word_start = at == 0 || !expr.as_bytes()[at - 1].is_ascii_alphanumeric();
            let after = expr[i..].trim_start();
            if !word_start || !after.starts_with('(') {
                continue;
            }
            let close = after.find(')').expect("closing paren");
            out.extend(
                after[1..close]
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    out
}

/// Every `aragora_…` metric name in a PromQL expression, with the function applied to it
/// (`rate`, `increase`, `irate` or none) and its label matchers.
fn referenced(expr: &str) -> Vec<(String, Option<String>, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("aragora_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = expr[start..end].to_string();
        let before = expr[..start].trim_end_matches(|c: char| c == '(' || c.is_whitespace());
        let func = ["rate", "increase", "irate"]
            .into_iter()
            .find(|f| before.ends_with(f))
            .map(str::to_string);
        let mut matchers = BTreeMap::new();
        if expr[end..].starts_with('{') {
            let close = end + expr[end..].find('}').expect("closing brace");
            matchers = parse_matchers(&expr[end + 1..close]);
            end = close + 1;
        }
        out.push((name, func, matchers));
        i = end;
    }
    out
}

fn check_expr(expr: &str, exp: &Exposition, origin: &str, problems: &mut Vec<String>) {
    let mut available: BTreeSet<String> = BTreeSet::new();
    for (name, func, matchers) in referenced(expr) {
        let Some(base) = exp.metric_of(&name) else {
            problems.push(format!("{origin}: `{name}` is not emitted by the server"));
            continue;
        };
        let labels = exp.labels.get(&base).cloned().unwrap_or_default();
        available.extend(labels.iter().cloned());
        let kind = exp.types[&base].as_str();
        let is_series = name != base;
        if is_series && name.ends_with("_bucket") {
            available.insert("le".into());
        }
        for (label, value) in &matchers {
            if !labels.contains(label) {
                problems.push(format!(
                    "{origin}: `{name}` has no label `{label}` (it has {labels:?})"
                ));
            }
            // Regex matchers (`=~`) may name alternatives; plain values must exist.
            let regex = value.contains(['|', '.', '*', '+']);
            if !regex && let Some(p) = exp.check_value(&base, label, value) {
                problems.push(format!("{origin}: {p}"));
            }
        }
        match (kind, is_series, func.as_deref()) {
            ("histogram", true, Some(_)) => {}
            ("histogram", true, None) => problems.push(format!(
                "{origin}: histogram series `{name}` used without rate()/increase()"
            )),
            ("histogram", false, _) => problems.push(format!(
                "{origin}: histogram `{name}` used without _bucket/_count/_sum"
            )),
            ("counter", _, Some(_)) => {}
            ("counter", _, None) => problems.push(format!(
                "{origin}: counter `{name}` used without rate()/increase()"
            )),
            ("gauge", _, Some(f)) => {
                problems.push(format!("{origin}: {f}() applied to gauge `{name}`"))
            }
            _ => {}
        }
    }
    for label in grouping_labels(expr) {
        if !available.contains(&label) {
            problems.push(format!(
                "{origin}: groups by `{label}`, which no metric in the expression has"
            ));
        }
    }
}

/// Every `input_series` of the promtool unit tests must have a name and label set the server
/// really exposes.
fn check_alert_tests(exp: &Exposition, problems: &mut Vec<String>) {
    let text =
        std::fs::read_to_string(repo().join("deploy/monitoring/tests/alerts_test.yaml")).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let Some(series) = line.trim().strip_prefix("- series: ") else {
            continue;
        };
        n += 1;
        let (name, labels) = parse_series(series.trim_matches('\''));
        let Some(base) = exp.metric_of(&name) else {
            problems.push(format!(
                "alerts_test.yaml: `{name}` is not emitted by the server"
            ));
            continue;
        };
        for (label, value) in &labels {
            if let Some(p) = exp.check_value(&base, label, value) {
                problems.push(format!("alerts_test.yaml: {p}"));
            }
        }
        let mut given: BTreeSet<String> = labels.into_keys().collect();
        if name.ends_with("_bucket") && !given.remove("le") {
            problems.push(format!("alerts_test.yaml: bucket `{series}` has no `le`"));
        }
        let exposed = exp.labels.get(&base).cloned().unwrap_or_default();
        if given != exposed {
            problems.push(format!(
                "alerts_test.yaml: `{series}` has labels {given:?}; the server's `{base}` has {exposed:?}"
            ));
        }
    }
    assert!(n >= 20, "found {n} input series");
}

async fn exercise(s: &Server) {
    let t = &s.admin_token;
    // Debates (demo), explanations and a batch.
    let (status, started) = s
        .post(
            "/api/v1/debates",
            t,
            &json!({"task": "Pick a cache", "agents": [{"name": "a", "provider": "demo"}, {"name": "b", "provider": "demo"}, {"name": "c", "provider": "demo"}], "rounds": 2}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["debate_id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), || async {
        let (_, d) = s.get(&format!("/api/v1/debates/{id}"), t).await;
        (d["status"] == "completed").then_some(())
    })
    .await
    .expect("demo debate completes");
    let (status, _) = s.get(&format!("/api/v1/debates/{id}/explanation"), t).await;
    assert_eq!(status, 200);
    let (status, batch) = s
        .post(
            "/api/v1/explainability/batch",
            t,
            &json!({"debate_ids": [id, "deb-missing"]}),
        )
        .await;
    assert_eq!(status, 202, "{batch}");
    let batch_id = batch["batch_id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), || async {
        let (_, b) = s
            .get(
                &format!("/api/v1/explainability/batch/{batch_id}/status"),
                t,
            )
            .await;
        (b["status"] == "completed").then_some(())
    })
    .await
    .expect("batch finishes");

    // Marketplace: publish, a failed publish, download, rate, a search (list cache).
    let alice = s.token("alice", "default", "member").await;
    let (status, tmpl) = s
        .post(
            "/api/marketplace/templates",
            &alice,
            &json!({"name": "Scanner", "category": "workflow", "visibility": "public", "template_data": {"nodes": [{"id": "a"}], "edges": []}}),
        )
        .await;
    assert_eq!(status, 201, "{tmpl}");
    let (status, _) = s
        .post("/api/marketplace/templates", &alice, &json!({"name": "Bad", "category": "workflow", "template_data": {"nodes": [{"id": "a"}], "edges": [{"source": "a", "target": "zz"}]}}))
        .await;
    assert_eq!(status, 422);
    let tid = tmpl["id"].as_str().unwrap();
    let (status, _) = s
        .post(
            &format!("/api/marketplace/templates/{tid}/download"),
            t,
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .post(
            &format!("/api/marketplace/templates/{tid}/rate"),
            t,
            &json!({"rating": 4}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s.get("/api/marketplace/templates?q=scanner", &alice).await;
    assert_eq!(status, 200);

    // Webhooks: a delivery that succeeds and one to an endpoint that fails.
    let good = aragora_webhooks::receiver::Receiver::start(
        aragora_webhooks::receiver::ReceiverConfig::new("s3cret-value"),
    )
    .await
    .unwrap();
    let bad = aragora_webhooks::receiver::Receiver::start(
        aragora_webhooks::receiver::ReceiverConfig::new("s3cret-value"),
    )
    .await
    .unwrap();
    bad.set_behaviour(aragora_webhooks::receiver::Behaviour::Status(500));
    for url in [good.url(), bad.url()] {
        let (status, body) = s
            .post(
                "/api/webhooks",
                t,
                &json!({"url": url, "secret": "s3cret-value", "event_types": ["*"]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = s
        .post(
            "/api/v1/events",
            t,
            &json!({"event_type": "monitoring.check", "data": {"n": 1}}),
        )
        .await;
    assert!(status == 201 || status == 202, "{status} {body}");
    assert!(good.wait_for(1, Duration::from_secs(30)).await, "delivered");
}

/// A throwaway source database on the harness's PostgreSQL for a CDC connector.
struct Source {
    name: String,
    db: Db,
    host: String,
    port: u16,
}

impl Source {
    async fn new() -> Source {
        let admin_url = aragora_testkit::pg_admin_url();
        let admin = Db::connect(&admin_url, &Default::default()).await.unwrap();
        let name = aragora_testkit::scratch_database_name("monsrc");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(admin.writer())
            .await
            .unwrap();
        admin.close().await;
        let base = admin_url.rsplit_once('/').unwrap().0.to_string();
        let db = Db::connect(&format!("{base}/{name}"), &Default::default())
            .await
            .unwrap();
        let (host, port) = base.rsplit('@').next().unwrap().split_once(':').unwrap();
        let src = Source {
            name,
            db,
            host: host.to_string(),
            port: port.parse().unwrap(),
        };
        src.exec("CREATE TABLE items (id bigint PRIMARY KEY, title text NOT NULL)")
            .await;
        src.exec("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g")
            .await;
        src
    }

    async fn exec(&self, sql: &str) {
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self.db.writer())
            .await
            .unwrap();
    }

    async fn drop(self) {
        self.db.close().await;
        let admin = Db::connect(&aragora_testkit::pg_admin_url(), &Default::default())
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(admin.writer())
        .await
        .unwrap();
        admin.close().await;
    }
}

async fn scrape(s: &Server) -> Option<String> {
    s.http()
        .get(s.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

both_backends!(
    dashboards_and_alerts_only_query_emitted_metrics,
    |backend: Backend| async move {
        // The connector's credentials name an environment variable of the server process.
        let opts = ServerOptions {
            args: vec![],
            env: vec![("CDC_SOURCE_PASSWORD".into(), "trust-auth-ignores-it".into())],
        };
        let s = Server::start_with(BIN, backend, opts).await;
        let src = Source::new().await;
        let (status, conn) = s
            .post(
                "/api/v1/connectors",
                &s.admin_token,
                &json!({"name": "items", "type": "postgresql",
                    "config": {"host": src.host, "port": src.port, "database": src.name,
                        "tables": ["items"], "mode": "trigger", "poll_interval_seconds": 0.2},
                    "credentials": {"username": "postgres", "password_env": "CDC_SOURCE_PASSWORD"},
                    "handlers": ["knowledge_mound"]}),
            )
            .await;
        assert_eq!(status, 201, "{conn}");
        let connector = conn["id"].as_str().unwrap().to_string();
        exercise(&s).await;
        // Changes made before the snapshot would be folded into it: wait for the 20 rows first.
        let snapshot = format!(
            "aragora_cdc_events_total{{connector=\"{connector}\",operation=\"INSERT\"}} 20"
        );
        eventually(Duration::from_secs(60), || async {
            scrape(&s).await?.contains(&snapshot).then_some(())
        })
        .await
        .expect("the connector's snapshot is counted");
        src.exec("UPDATE items SET title = title || '!' WHERE id <= 5")
            .await;
        src.exec("DELETE FROM items WHERE id = 20").await;

        // Failed deliveries, breaker state and the connector's updates are recorded in the
        // background: wait until they show.
        let selector = format!("connector=\"{connector}\"");
        let scraped = eventually(Duration::from_secs(60), || async {
            let text = scrape(&s).await?;
            let has = |prefix: &str| {
                text.lines()
                    .any(|l| l.starts_with(prefix) && l.contains(&selector) && !l.ends_with(" 0"))
            };
            (text.contains("aragora_webhook_failures_by_endpoint_total")
                && text.contains("aragora_explainability_batch_duration_seconds")
                && has("aragora_cdc_events_total{")
                && text.contains(&format!(
                    "aragora_cdc_events_total{{{selector},operation=\"UPDATE\"}} 5"
                ))
                && text.contains(&format!(
                    "aragora_cdc_events_total{{{selector},operation=\"DELETE\"}} 1"
                ))
                && text.contains(&format!("aragora_cdc_lag_seconds{{{selector}}}"))
                && text.contains(&format!("aragora_cdc_handler_errors_total{{{selector}}} 0")))
            .then_some(text)
        })
        .await;
        let Some(text) = scraped else {
            panic!(
                "metrics of every capability appear:\n{}",
                scrape(&s).await.unwrap_or_default()
            );
        };
        let exp = Exposition::parse(&text);
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();

        // Every metric carries help text, and promtool (installed by .ci/run) finds nothing to lint.
        for name in exp.types.keys() {
            if !text.contains(&format!("# HELP {name} ")) {
                problems.push(format!("{name} has no # HELP line"));
            }
        }
        if let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            // The guide names this gauge `…_total`; promtool's naming lint about it is expected.
            let expected =
                "aragora_marketplace_templates_total non-counter metrics should not have";
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let unexpected: Vec<&str> = report
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.contains(expected))
                .collect();
            if !unexpected.is_empty() {
                problems.push(format!("promtool check metrics: {}", unexpected.join("\n")));
            }
        }

        for entry in std::fs::read_dir(repo().join("deploy/monitoring/grafana")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let dash: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let vars = dash["templating"]["list"].as_array().expect("templating");
            assert!(
                vars.iter()
                    .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
                "{name}: datasource variable"
            );
            let panels = dash["panels"].as_array().expect("panels");
            assert!(!panels.is_empty(), "{name}: has panels");
            for p in panels {
                assert_eq!(
                    p["datasource"]["uid"], "${datasource}",
                    "{name}: panel uses the variable"
                );
                let targets = p["targets"].as_array().expect("targets");
                assert!(
                    !targets.is_empty(),
                    "{name}: panel {} has targets",
                    p["title"]
                );
                for t in targets {
                    let expr = t["expr"].as_str().expect("expr");
                    seen.insert(expr.to_string());
                    check_expr(
                        expr,
                        &exp,
                        &format!("{name} / {}", p["title"]),
                        &mut problems,
                    );
                }
            }
        }
        let alerts = std::fs::read_to_string(repo().join("deploy/monitoring/alerts.yaml")).unwrap();
        let mut in_expr = false;
        let mut expr = String::new();
        for line in alerts.lines().chain(std::iter::once("- alert: end")) {
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("expr:") {
                in_expr = true;
                expr = rest.trim().trim_start_matches('|').to_string();
            } else if in_expr
                && (trimmed.starts_with("for:")
                    || trimmed.starts_with("labels:")
                    || trimmed.starts_with("- alert:"))
            {
                check_expr(&expr, &exp, "alerts.yaml", &mut problems);
                seen.insert(expr.clone());
                in_expr = false;
            } else if in_expr {
                expr.push(' ');
                expr.push_str(trimmed);
            }
        }
        assert!(seen.len() >= 25, "checked {} expressions", seen.len());
        check_alert_tests(&exp, &mut problems);
        // The guide's metric names exist under exactly those names.
        for name in [
            "aragora_marketplace_templates_total",
            "aragora_marketplace_downloads_total",
            "aragora_marketplace_ratings_distribution",
            "aragora_explainability_batch_jobs_active",
            "aragora_explainability_batch_jobs_total",
            "aragora_explainability_batch_processing_latency_seconds",
            "aragora_webhook_deliveries_total",
            "aragora_webhook_delivery_latency_seconds",
            "aragora_webhook_failures_by_endpoint_total",
            "aragora_webhook_circuit_breaker_state",
        ] {
            assert!(
                exp.types.contains_key(name),
                "guide metric {name} is emitted"
            );
        }
        assert!(
            problems.is_empty(),
            "monitoring problems:\n{}",
            problems.join("\n")
        );

        let (status, _) = s
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/connectors/{connector}"),
                Some(&s.admin_token),
                None,
            )
            .await;
        assert!(status == 200 || status == 204, "delete connector: {status}");
        src.drop().await;
    }
);

/// The checker itself: a wrong label, a counter without rate() and an unknown metric are caught.
#[test]
fn checker_rejects_wrong_labels_functions_and_names() {
    let exp = Exposition::parse(
        "# TYPE aragora_jobs_total counter\naragora_jobs_total{queue=\"q\",outcome=\"completed\"} 3\n\
         # TYPE aragora_x_seconds histogram\naragora_x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 1\n\
         aragora_x_seconds_sum{route=\"/a\"} 0.1\naragora_x_seconds_count{route=\"/a\"} 1\n",
    );
    let check = |e: &str| {
        let mut p = Vec::new();
        check_expr(e, &exp, "t", &mut p);
        p
    };
    assert!(check("sum by (queue) (rate(aragora_jobs_total{queue=~\"q|r\"}[5m]))").is_empty());
    assert!(
        check("histogram_quantile(0.95, sum by (le, route) (rate(aragora_x_seconds_bucket[5m])))")
            .is_empty()
    );
    assert!(check("sum(rate(aragora_x_seconds_count[5m]))").is_empty());
    assert_eq!(
        check("sum(rate(aragora_jobs_total{status=\"x\"}[5m]))").len(),
        1
    );
    assert_eq!(
        check("sum by (status) (rate(aragora_jobs_total[5m]))").len(),
        1
    );
    assert_eq!(check("sum(aragora_jobs_total)").len(), 1);
    assert_eq!(check("sum(aragora_nope)").len(), 1);
    assert_eq!(check("aragora_x_seconds").len(), 1);
    assert!(check("sum(rate(aragora_jobs_total{outcome=\"completed\"}[5m]))").is_empty());
    assert_eq!(
        check("sum(rate(aragora_jobs_total{outcome=\"complete\"}[5m]))").len(),
        1,
        "a value the server never produces"
    );
}

/// With `--metrics-token`, `/metrics` answers 401 without it (or with an API token) and 200 with it;
/// health endpoints stay public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_protects_the_scrape_endpoint() {
    let opts = ServerOptions {
        args: vec!["--metrics-token".into(), "scrape-s3cret".into()],
        env: vec![],
    };
    let s = Server::start_with(BIN, Backend::Sqlite, opts).await;
    let get = |auth: Option<&'static str>| {
        let mut req = s.http().get(s.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { req.send().await.unwrap() }
    };
    let r = get(None).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert_eq!(get(Some("Bearer wrong")).await.status(), 401);
    assert_eq!(
        get(Some("scrape-s3cret")).await.status(),
        401,
        "scheme required"
    );
    let admin = s
        .http()
        .get(s.url("/metrics"))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 401, "an API token is not the metrics token");
    let ok = get(Some("Bearer scrape-s3cret")).await;
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    let text = ok.text().await.unwrap();
    assert!(
        text.contains("# TYPE aragora_http_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("status=\"4xx\""),
        "the 401s were counted: {text}"
    );
    let (status, _) = s.call(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
    // A request no route matches is counted too, as route `unmatched`.
    let (status, _) = s
        .call(reqwest::Method::GET, "/no/such/route", None, None)
        .await;
    assert_eq!(status, 404);
    let text = get(Some("Bearer scrape-s3cret"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("aragora_http_requests_total{")
                && l.contains("route=\"unmatched\"")
                && l.contains("status=\"4xx\"")),
        "{text}"
    );
}
