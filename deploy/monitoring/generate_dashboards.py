#!/usr/bin/env python3
"""Generates the Grafana dashboards in grafana/ from the compact panel lists below.

Run after changing a panel: `python3 deploy/monitoring/generate_dashboards.py`. Every query uses
metrics the server emits (checked by crates/cli/tests/monitoring.rs against a live /metrics):
rate() on counters, histogram_quantile() on histogram buckets, raw values for gauges. Gauges
documented as shared (every node reports the same value) are aggregated with max, not sum, so a
cluster of N nodes does not show N times the value.
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent

DS = {"type": "prometheus", "uid": "${datasource}"}


def q(expr, legend=""):
    return {"expr": expr, "legendFormat": legend}


def quantile(phi, metric, by="", selector="", window="5m"):
    grp = f"le{',' + by if by else ''}"
    return f"histogram_quantile({phi}, sum by ({grp}) (rate({metric}_bucket{selector}[{window}])))"


def p95(metric, by="", selector="", window="5m"):
    return quantile(0.95, metric, by, selector, window)


DASHBOARDS = {
    "marketplace-metrics.json": ("Aragora · Marketplace", "aragora-marketplace", [
        ("Templates by category", "stat", [q("max by (category) (aragora_marketplace_templates_total)", "{{category}}")]),
        ("Downloads per second", "timeseries", [q("sum(rate(aragora_marketplace_downloads_total[5m]))", "downloads/s")]),
        ("Ratings submitted by stars", "timeseries", [q("sum by (le) (increase(aragora_marketplace_ratings_distribution_bucket[1h]))", "≤ {{le}}")]),
        ("Publish failures", "timeseries", [q("sum by (reason) (rate(aragora_marketplace_publish_failures_total[5m]))", "{{reason}}")]),
        ("Marketplace request latency p95", "timeseries", [q(p95("aragora_http_request_duration_seconds", "route", '{route=~"/api/marketplace.*"}'), "{{route}}")]),
        ("List/search page cache lookups by result", "timeseries", [q("sum by (result) (rate(aragora_marketplace_list_cache_total[5m]))", "{{result}}")]),
    ]),
    "batch-explainability.json": ("Aragora · Batch explainability", "aragora-batch-explainability", [
        ("Unfinished batches by status", "stat", [q("max by (status) (aragora_explainability_batch_jobs_active)", "{{status}}")]),
        ("Batch jobs finished by status", "timeseries", [q("sum by (status) (rate(aragora_explainability_batch_jobs_total[5m]))", "{{status}}")]),
        ("Per-debate explanation time p50 / p95", "timeseries", [
            q(quantile(0.5, "aragora_explainability_batch_processing_latency_seconds"), "p50"),
            q(p95("aragora_explainability_batch_processing_latency_seconds"), "p95"),
        ]),
        ("Debates explained per second", "timeseries", [q("sum(rate(aragora_explainability_batch_processing_latency_seconds_count[5m]))", "debates/s")]),
        ("Batch turnaround p95 (submitted → finished)", "timeseries", [q(p95("aragora_explainability_batch_duration_seconds", window="1h"), "p95")]),
        ("Batch queue depth", "timeseries", [q('max by (state) (aragora_queue_jobs{queue="explainability_batch"})', "{{state}}")]),
    ]),
    "webhooks-receipts.json": ("Aragora · Webhooks & receipts", "aragora-webhooks", [
        ("Delivery attempts by outcome", "timeseries", [q("sum by (outcome) (rate(aragora_webhook_deliveries_total[5m]))", "{{outcome}}")]),
        ("Delivery latency p95", "timeseries", [q(p95("aragora_webhook_delivery_latency_seconds"), "p95")]),
        ("Failures by endpoint", "timeseries", [q("sum by (webhook_id) (rate(aragora_webhook_failures_by_endpoint_total[5m]))", "{{webhook_id}}")]),
        ("Circuit breakers open or half-open", "stat", [q("count(max by (webhook_id) (aragora_webhook_circuit_breaker_state) > 0) or vector(0)", "not closed")]),
    ]),
    "cdc-workers.json": ("Aragora · CDC & workers", "aragora-cdc-workers", [
        ("Running workers", "stat", [q("max(aragora_workers_running)", "workers")]),
        ("Jobs by queue and state", "timeseries", [q("max by (queue, state) (aragora_queue_jobs)", "{{queue}} {{state}}")]),
        ("Jobs finished per second", "timeseries", [q("sum by (queue, outcome) (rate(aragora_jobs_total[5m]))", "{{queue}} {{outcome}}")]),
        ("Job claim delay p95", "timeseries", [q(p95("aragora_queue_claim_delay_seconds", "queue"), "{{queue}}")]),
        ("CDC events per second", "timeseries", [q("sum by (connector, operation) (rate(aragora_cdc_events_total[5m]))", "{{connector}} {{operation}}")]),
        ("CDC lag (seconds)", "timeseries", [q("max by (connector) (aragora_cdc_lag_seconds)", "{{connector}}")]),
        ("CDC handler errors", "timeseries", [q("sum by (connector) (rate(aragora_cdc_handler_errors_total[5m]))", "{{connector}}")]),
        ("HTTP requests by status class", "timeseries", [q("sum by (status) (rate(aragora_http_requests_total[5m]))", "{{status}}")]),
    ]),
}


def panel(i, title, kind, targets):
    return {
        "id": i + 1,
        "title": title,
        "type": kind,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "targets": [dict(t, refId=chr(ord("A") + j), datasource=DS) for j, t in enumerate(targets)],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }


def dashboard(title, uid, panels):
    return {
        "title": title,
        "uid": uid,
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "tags": ["aragora"],
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1,
        }]},
        "panels": [panel(i, *p) for i, p in enumerate(panels)],
    }


def main():
    """Writes the dashboards; with --check, exits 1 if a file differs from what it would write."""
    check = "--check" in sys.argv[1:]
    out = HERE / "grafana"
    out.mkdir(exist_ok=True)
    stale = []
    for name, (title, uid, panels) in DASHBOARDS.items():
        text = json.dumps(dashboard(title, uid, panels), indent=2, ensure_ascii=False) + "\n"
        path = out / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run {sys.argv[0]}): {', '.join(stale)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
