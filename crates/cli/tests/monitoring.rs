//! The monitoring package is checked against the running server: exercise the features, scrape
//! `/metrics`, and fail if a dashboard panel or alert rule queries a metric the server does not
//! emit, or uses the wrong PromQL function for its type.

use aragora_testkit::{Backend, Server, both_backends, eventually};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_aragora");

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// `name → type` from the exposition's `# TYPE` lines.
fn metric_types(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect()
}

/// Every `aragora_…` metric name in a PromQL expression, with the function applied to it
/// (`rate`, `increase`, `histogram_quantile` or none).
fn referenced(expr: &str) -> Vec<(String, Option<String>)> {
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
        out.push((name, func));
        i = end;
    }
    out
}

fn check_expr(
    expr: &str,
    types: &BTreeMap<String, String>,
    origin: &str,
    problems: &mut Vec<String>,
) {
    for (name, func) in referenced(expr) {
        let (base, is_bucket) = ["_bucket", "_count", "_sum"]
            .into_iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram"))
                    .then(|| (base.to_string(), true))
            })
            .unwrap_or_else(|| (name.clone(), false));
        // CDC series exist only while a connector runs on this node; their names are checked
        // against the CDC crate's emitters by `cdc_metric_names_match_the_code` below.
        if base.starts_with("aragora_cdc_") {
            continue;
        }
        let Some(kind) = types.get(&base) else {
            problems.push(format!("{origin}: `{name}` is not emitted by the server"));
            continue;
        };
        match (kind.as_str(), is_bucket, func.as_deref()) {
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
        matches!(
            b["status"].as_str(),
            Some("completed" | "partial" | "failed")
        )
        .then_some(())
    })
    .await
    .expect("batch finishes");

    // Marketplace: publish, a failed publish, download, rate.
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

both_backends!(
    dashboards_and_alerts_only_query_emitted_metrics,
    |backend: Backend| async move {
        let s = Server::start(BIN, backend).await;
        exercise(&s).await;
        // Failed deliveries and breaker state are recorded by the worker: wait until they show.
        let scrape = eventually(Duration::from_secs(30), || async {
            let text = s
                .http()
                .get(s.url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.contains("aragora_webhook_failures_by_endpoint_total")
                && text.contains("aragora_explainability_batch_jobs_total"))
            .then_some(text)
        })
        .await
        .expect("metrics from every capability appear");
        let types = metric_types(&scrape);
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();

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
                        &types,
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
                check_expr(&expr, &types, "alerts.yaml", &mut problems);
                seen.insert(expr.clone());
                in_expr = false;
            } else if in_expr {
                expr.push(' ');
                expr.push_str(trimmed);
            }
        }
        assert!(seen.len() >= 20, "checked {} expressions", seen.len());
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
            assert!(types.contains_key(name), "guide metric {name} is emitted");
        }
        assert!(
            problems.is_empty(),
            "monitoring problems:\n{}",
            problems.join("\n")
        );
    }
);

/// The CDC metrics the dashboards and alerts query are the ones the CDC pipeline emits.
#[test]
fn cdc_metric_names_match_the_code() {
    let code = std::fs::read_to_string(repo().join("crates/cdc/src/pipeline.rs")).unwrap();
    let mut queried = BTreeSet::new();
    for f in [
        "deploy/monitoring/alerts.yaml",
        "deploy/monitoring/grafana/cdc-workers.json",
    ] {
        let text = std::fs::read_to_string(repo().join(f)).unwrap();
        for (name, _) in referenced(&text) {
            if name.starts_with("aragora_cdc_") {
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 3, "{queried:?}");
    for name in queried {
        assert!(
            code.contains(&format!("\"{name}\"")),
            "{name} is not emitted by crates/cdc"
        );
    }
}
