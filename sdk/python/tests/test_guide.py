"""Every "Python SDK Example" block of the guide, run as written against the live server (only the
token, base URL and real ids filled in)."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import aragora


def demo_debate(client, task="Design a rate limiter"):
    started = client.debates.start(task=task, agents=[{"name": n, "provider": "demo"} for n in ("a1", "a2", "a3")],
                                   rounds=2)
    debate_id = started["debate_id"]
    deadline = time.time() + 60
    while time.time() < deadline:
        d = client.debates.get(debate_id)
        if d.status in ("completed", "failed"):
            return d
        time.sleep(0.1)
    raise AssertionError("demo debate did not finish")


def test_marketplace_example(server):
    from aragora import AragonaClient

    client = AragonaClient(api_token=server["token"])
    my_workflow_config = {"nodes": [{"id": "scan", "type": "task"}, {"id": "report", "type": "task"}],
                          "edges": [{"source": "scan", "target": "report"}]}

    # List templates
    templates = client.marketplace.list_templates(category="workflow")

    # Publish a template
    template = client.marketplace.publish({
        "name": "My Workflow",
        "category": "workflow",
        "template_data": my_workflow_config,
    })

    # Download a template
    downloaded = client.marketplace.download(template_id=template.id)

    assert "items" in templates
    assert template.latest_version == "1.0.0"
    assert downloaded.template_data == my_workflow_config
    assert downloaded.checksum
    listed = client.marketplace.list_templates(category="workflow")
    assert any(t.id == template.id for t in listed.items)


def test_explainability_example(server):
    from aragora.client import AragoraClient

    client = AragoraClient(api_key=server["token"])
    ids = [demo_debate(client, f"Task {i}").id for i in range(3)]

    # Single explanation
    explanation = client.explainability.get_explanation(ids[0])

    # Batch processing
    batch = client.explainability.create_batch(
        debate_ids=ids,
        include_evidence=True,
    )

    # The guide's creation response.
    assert (batch.status, batch.total) == ("processing", 3)
    assert batch.batch_id.startswith("batch-")

    # Poll for completion
    deadline = time.time() + 60
    while batch.status != "completed":
        assert time.time() < deadline, f"batch stuck: {batch}"
        batch = client.explainability.get_batch_status(batch.batch_id)
        time.sleep(0.2)

    # Get results
    results = client.explainability.get_batch_results(batch.batch_id)

    assert batch.phase == "completed" and batch.succeeded == 3
    assert explanation.debate_id == ids[0]
    assert explanation.decision_id.startswith("dec-")
    for key in ("conclusion", "confidence", "consensus_reached", "evidence_chain", "vote_pivots", "counterfactuals"):
        assert key in explanation
    assert [r.debate_id for r in results["items"]] == ids
    assert all(r.status == "success" for r in results["items"])


def test_explainability_polling_loop_ends_when_an_id_is_missing(server):
    """The guide's polling loop, as written, on a batch whose ids are not all found: the batch
    ends ``completed`` (its phase and counts say what failed), so the loop finishes."""
    from aragora.client import AragoraClient

    client = AragoraClient(api_key=server["token"])
    found = demo_debate(client, "Task with a missing neighbour").id

    batch = client.explainability.create_batch(
        debate_ids=[found, "deb-missing", "deb-also-missing"],
        include_evidence=True,
    )
    assert (batch.status, batch.total) == ("processing", 3)
    assert batch.phase in ("pending", "processing")

    # Poll for completion (the guide's loop; the deadline only turns a hang into a failure)
    deadline = time.time() + 60
    while batch.status != "completed":
        assert time.time() < deadline, f"batch stuck: {batch}"
        assert batch.status == "processing" and batch.phase in ("pending", "processing"), batch
        batch = client.explainability.get_batch_status(batch.batch_id)
        time.sleep(0.2)

    # Get results
    results = client.explainability.get_batch_results(batch.batch_id)

    assert batch.phase == "partial", batch
    assert (batch.processed, batch.succeeded, batch.failed, batch.not_found) == (3, 1, 2, 2)
    assert (results.batch_status, results.batch_phase) == ("completed", "partial")
    assert [(r.debate_id, r.status) for r in results["items"]] == [
        (found, "success"), ("deb-missing", "not_found"), ("deb-also-missing", "not_found")]

    # Nothing found at all: still completed, phase failed.
    batch = client.explainability.create_batch(debate_ids=["deb-missing"])
    deadline = time.time() + 60
    while batch.status != "completed":
        assert time.time() < deadline, f"batch stuck: {batch}"
        batch = client.explainability.get_batch_status(batch.batch_id)
        time.sleep(0.2)
    assert (batch.phase, batch.succeeded, batch.failed) == ("failed", 0, 1)


class Receiver(BaseHTTPRequestHandler):
    secret = "your-secret"
    verified = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signature = self.headers.get("X-Signature-SHA256")
        # The guide's verifier, unchanged.
        expected = "sha256=" + hmac.new(Receiver.secret.encode(), body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(signature or "", expected)
        Receiver.verified.append((ok, json.loads(body)))
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def receiver():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Receiver.verified = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/webhooks"
    srv.shutdown()


def test_webhooks_example(server, receiver):
    from aragora import AragonaClient

    client = AragonaClient(api_token=server["token"])

    # Register webhook
    webhook = client.webhooks.register(
        url=receiver,
        secret="your-secret",
        event_types=["debate.completed"]
    )

    # Test delivery
    result = client.webhooks.test(webhook.id)
    print(f"Test delivery: {result.status}")

    # Check receipts
    receipts = client.webhooks.get_receipts(webhook.id, status="failed")

    assert result.status == "succeeded"
    assert receipts["items"] == []
    assert Receiver.verified and all(ok for ok, _ in Receiver.verified)

    # A real debate.completed event arrives signed, in the guide's payload shape.
    d = demo_debate(client)
    deadline = time.time() + 30
    while not any(e["event_type"] == "debate.completed" for _, e in Receiver.verified):
        assert time.time() < deadline, "debate.completed not delivered"
        time.sleep(0.1)
    event = next(e for _, e in Receiver.verified if e["event_type"] == "debate.completed")
    assert set(event) >= {"event_type", "event_id", "timestamp", "data"}
    assert event["data"]["debate_id"] == d.id
    client.webhooks.delete(webhook.id)


def test_errors_carry_status_and_code(server):
    client = aragora.AragoraClient(api_key=server["token"])
    with pytest.raises(aragora.NotFoundError) as e:
        client.marketplace.get("tmpl-does-not-exist")
    assert e.value.status == 404 and e.value.code == "not_found"
    with pytest.raises(aragora.ValidationError) as e:
        client.marketplace.rate("tmpl-does-not-exist-either", rating=9)
    assert e.value.status in (404, 422)
    anonymous = aragora.AragoraClient(api_key="ara_wrong")
    with pytest.raises(aragora.AuthenticationError):
        anonymous.workers.status()


def test_async_client(server):
    import asyncio

    async def main():
        async with aragora.AsyncAragoraClient(api_key=server["token"]) as c:
            status = await c.workers.status()
            assert "workers" in status and "queues" in status
            page = await c.marketplace.list_templates(limit=5)
            assert "items" in page

    asyncio.run(main())


def test_migrations_command(tmp_path, monkeypatch):
    """The guide's `python -m aragora.migrations` runs the binary's migrations (fresh database)."""
    import os
    import subprocess
    import sys

    from conftest import _binary

    env = dict(os.environ, ARAGORA_BIN=_binary())
    env.pop("DATABASE_URL", None)
    data = tmp_path / "data"

    def migrations(*args, environ=env):
        return subprocess.run([sys.executable, "-m", "aragora.migrations", "--data-dir", str(data), *args],
                              env=environ, capture_output=True, text=True, timeout=60)

    before = migrations("--status")
    assert before.returncode == 0, before.stderr
    assert "pending  v20260120100000_marketplace_webhooks_batch" in before.stdout
    applied = migrations()
    assert applied.returncode == 0, applied.stderr
    after = migrations("--status")
    assert "applied  v20260120100000_marketplace_webhooks_batch" in after.stdout
    assert "pending" not in after.stdout

    missing = migrations("--status", environ=dict(env, ARAGORA_BIN=str(tmp_path / "no-such-binary")))
    assert missing.returncode == 2
    assert "ARAGORA_BIN" in missing.stderr
