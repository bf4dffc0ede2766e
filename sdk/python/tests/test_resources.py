"""Namespaces beyond the guide's examples, against the live server: knowledge, connectors,
marketplace versions/reviews/ratings, webhook list/update, and ``verify_signature`` on real
deliveries received by a loopback receiver (both signature schemes, both kinds of secret)."""

import asyncio
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import aragora
from aragora import AragoraClient, AsyncAragoraClient
from aragora.models import Connector, KnowledgeItem, Rating, Review, Template, TemplateVersion, Webhook
from aragora.webhooks import verify_signature


def new_token(server, name, workspace, role):
    resp = httpx.post(f"{server['base_url']}/api/v1/tokens", headers={"Authorization": f"Bearer {server['token']}"},
                      json={"name": name, "workspace": workspace, "role": role}, trust_env=False)
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


@pytest.fixture()
def workspace(server):
    """Two members of a fresh workspace."""
    ws = f"ws-{uuid.uuid4().hex[:8]}"
    alice = AragoraClient(api_key=new_token(server, f"alice-{ws}", ws, "member"), base_url=server["base_url"])
    bob = AragoraClient(api_key=new_token(server, f"bob-{ws}", ws, "member"), base_url=server["base_url"])
    yield alice, bob
    alice.close()
    bob.close()


GRAPH = {"nodes": [{"id": "scan", "type": "scanner"}, {"id": "report", "type": "notify"}],
         "edges": [{"source": "scan", "target": "report"}]}


def test_knowledge_ingest_get_search_and_validation(workspace):
    alice, _ = workspace
    item = alice.knowledge.ingest("Use a token bucket for the public rate limiter", source_key="adr-7",
                                  metadata={"team": "edge"}, confidence=0.8)
    assert isinstance(item, KnowledgeItem)
    assert item.id.startswith("km-") and item.source_type == "manual" and item.source_key == "adr-7"
    assert item.metadata.team == "edge"
    assert alice.knowledge.get(item.id).content == item.content
    hits = alice.knowledge.search("token bucket")
    assert hits.items[0].id == item.id
    assert hits.items[0].exact_phrase and "<mark>" in hits.items[0].snippet
    # The same source key updates the item in place.
    again = alice.knowledge.ingest("Use a sliding window instead", source_key="adr-7")
    assert again.id == item.id and alice.knowledge.get(item.id).content == "Use a sliding window instead"
    with pytest.raises(aragora.ValidationError) as e:
        alice.knowledge.ingest("x", confidence=2)
    assert e.value.status == 422 and e.value.field == "confidence"
    with pytest.raises(aragora.NotFoundError):
        alice.knowledge.get("km-does-not-exist")


def test_knowledge_search_pages_with_a_cursor(workspace):
    alice, _ = workspace
    word = f"wombat{uuid.uuid4().hex[:8]}"
    for i in range(5):
        alice.knowledge.ingest(f"{word} note {i}", source_key=f"w-{i}")
    everything = [h.id for h in alice.knowledge.search(word, limit=50).items]
    assert len(everything) == 5
    first = alice.knowledge.search(word, limit=2)
    assert first.total == 2 and first.next_cursor
    ids, page = [h.id for h in first.items], first
    while page.next_cursor:
        page = alice.knowledge.search(word, limit=2, cursor=page.next_cursor)
        ids += [h.id for h in page.items]
    assert ids == everything and page.total == 1
    with pytest.raises(aragora.ValidationError) as e:
        alice.knowledge.search(f"{word} other", cursor=first.next_cursor)
    assert e.value.status == 422 and e.value.field == "cursor"


def test_knowledge_upsert_and_delete_by_source_key(workspace, server):
    alice, bob = workspace
    word = f"quokka{uuid.uuid4().hex[:8]}"
    item = alice.knowledge.upsert("shop/orders/{\"id\":1}", f"order 1 of {word}", {"table": "orders"})
    assert item.source_type == "cdc-client" and item.source_key == 'shop/orders/{"id":1}'
    again = alice.knowledge.upsert('shop/orders/{"id":1}', f"order 1 of {word}, shipped", confidence=0.5)
    assert again.id == item.id and again.confidence == 0.5
    assert [h.id for h in alice.knowledge.search(word).items] == [item.id]
    assert bob.knowledge.delete('shop/orders/{"id":1}', source_type="other") is False
    assert bob.knowledge.delete('shop/orders/{"id":1}') is True  # same workspace
    assert alice.knowledge.search(word).items == []
    assert alice.knowledge.delete('shop/orders/{"id":1}') is False  # already gone: not an error
    with pytest.raises(aragora.ValidationError) as e:
        alice.knowledge.delete("x", source_type="cdc")
    assert e.value.status == 422 and e.value.field == "source_type"
    with pytest.raises(aragora.ValidationError) as e:
        alice.knowledge.upsert("x", "y", source_type="debate")
    assert e.value.field == "source_type"
    # By id.
    other = alice.knowledge.upsert("k2", f"second {word}")
    assert alice.knowledge.delete_item(other.id) is None
    with pytest.raises(aragora.NotFoundError):
        alice.knowledge.delete_item(other.id)
    # A viewer may not delete.
    viewer = AragoraClient(api_key=new_token(server, f"viewer-{word}", "default", "viewer"),
                           base_url=server["base_url"])
    with pytest.raises(aragora.AragoraError) as e:
        viewer.knowledge.delete("k2")
    assert e.value.status == 403
    viewer.close()


def test_knowledge_upsert_and_delete_with_the_async_client(server):
    word = f"wombat{uuid.uuid4().hex[:8]}"
    token = new_token(server, f"async-{word}", f"ws-{word}", "member")

    async def main():
        async with AsyncAragoraClient(api_key=token, base_url=server["base_url"]) as c:
            item = await c.knowledge.upsert("a/1", f"async {word}", {"n": 1})
            assert [h.id for h in (await c.knowledge.search(word)).items] == [item.id]
            assert await c.knowledge.delete("a/1") is True
            assert await c.knowledge.delete("a/1") is False
            other = await c.knowledge.upsert("a/2", f"async {word}")
            await c.knowledge.delete_item(other.id)
            with pytest.raises(aragora.NotFoundError):
                await c.knowledge.delete_item(other.id)
            assert (await c.knowledge.search(word)).items == []

    asyncio.run(main())


def test_connectors_list_create_validation_get_delete(server):
    admin = AragoraClient(api_key=server["token"], base_url=server["base_url"])
    name = f"orders-{uuid.uuid4().hex[:6]}"
    config = {"host": "127.0.0.1", "database": "shop", "tables": ["orders"]}
    credentials = {"username": "cdc", "password_env": "CDC_SOURCE_PASSWORD"}
    before = admin.connectors.list()
    assert "items" in before and before.next_cursor is None
    with pytest.raises(aragora.ValidationError) as e:
        admin.connectors.create(name, "oracle", config, credentials, start=False)
    assert e.value.status == 422 and e.value.code == "validation_failed" and e.value.field == "type"
    with pytest.raises(aragora.ValidationError) as e:
        admin.connectors.create(name, "postgresql", config, {"username": "u", "password": "hunter2"}, start=False)
    assert e.value.field == "credentials.password" and "hunter2" not in str(e.value.details)
    with pytest.raises(aragora.ValidationError) as e:
        admin.connectors.create(name, "postgresql", config, credentials, handlers=["email"], start=False)
    assert e.value.field == "handlers[0]"
    conn = admin.connectors.create(name, "postgresql", config, credentials, handlers=["webhook"], start=False)
    assert isinstance(conn, Connector)
    assert conn.id.startswith("conn-") and conn["type"] == "postgresql" and conn.state == "stopped"
    assert conn.credentials == credentials
    with pytest.raises(aragora.ConflictError) as e:
        admin.connectors.create(name, "postgresql", config, credentials, start=False)
    assert e.value.status == 409
    assert conn.id in [c.id for c in admin.connectors.list().items]
    assert admin.connectors.get(conn.id).name == name
    admin.connectors.delete(conn.id)
    with pytest.raises(aragora.NotFoundError):
        admin.connectors.get(conn.id)


def test_marketplace_get_versions_rate_review(workspace):
    alice, bob = workspace
    t = alice.marketplace.publish({"name": "Versioned", "category": "workflow", "template_data": GRAPH})
    assert isinstance(t, Template) and t.latest_version == "1.0.0"
    got = bob.marketplace.get(t.id)
    assert got.name == "Versioned" and got.template_data == GRAPH
    v2 = {**GRAPH, "nodes": [GRAPH["nodes"][0], {"id": "report", "type": "email"}]}
    published = alice.marketplace.publish_version(t.id, "1.1.0", v2, changelog="email instead")
    assert isinstance(published, TemplateVersion) and published.version == "1.1.0"
    versions = bob.marketplace.versions(t.id)
    assert sorted(v.version for v in versions.items) == ["1.0.0", "1.1.0"]
    assert all(isinstance(v, TemplateVersion) for v in versions.items)
    assert bob.marketplace.get_version(t.id, "1.0.0").template_data == GRAPH
    assert bob.marketplace.get(t.id).latest_version == "1.1.0"
    assert alice.marketplace.yank(t.id, "1.1.0").yanked is True
    assert bob.marketplace.download(template_id=t.id).version == "1.0.0"
    assert alice.marketplace.unyank(t.id, "1.1.0").yanked is False
    with pytest.raises(aragora.PermissionDeniedError):
        bob.marketplace.publish_version(t.id, "2.0.0", GRAPH)

    rating = bob.marketplace.rate(t.id, rating=4)
    assert isinstance(rating, Rating) and (rating.rating, rating.rating_count, rating.rating_average) == (4, 1, 4.0)
    with pytest.raises(aragora.PermissionDeniedError) as e:
        alice.marketplace.rate(t.id, rating=5)
    assert e.value.status == 403
    with pytest.raises(aragora.ValidationError) as e:
        bob.marketplace.rate(t.id, rating=9)
    assert e.value.field == "rating"
    review = bob.marketplace.review(t.id, rating=5, title="Great", content="Saved hours")
    assert isinstance(review, Review) and (review.rating, review.title) == (5, "Great")
    assert [r.id for r in bob.marketplace.reviews(t.id).items] == [review.id]
    assert bob.marketplace.get(t.id).rating_count >= 1
    with pytest.raises(aragora.NotFoundError):
        bob.marketplace.versions("tmpl-does-not-exist")


class Capture(BaseHTTPRequestHandler):
    """Keeps every request's raw body and headers; answers 200."""

    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Capture.got.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def capture():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Capture.got = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook"
    srv.shutdown()


def test_webhooks_list_update_delete(workspace, capture):
    alice, _ = workspace
    w = alice.webhooks.register(url=capture, secret="s3cret-value", event_types=["debate.completed"])
    assert isinstance(w, Webhook) and w.enabled and w.secret == "s3cret-value"
    assert w.id in [x.id for x in alice.webhooks.list().items]
    updated = alice.webhooks.update(w.id, description="ops channel", event_types=["*"], enabled=False)
    assert (updated.description, updated.event_types, updated.enabled) == ("ops channel", ["*"], False)
    assert "secret" not in updated
    assert alice.webhooks.get(w.id).enabled is False
    with pytest.raises(aragora.ValidationError) as e:
        alice.webhooks.update(w.id, url="not a url")
    assert e.value.field == "url"
    with pytest.raises(aragora.ValidationError):
        alice.webhooks.update(w.id, colour="blue")
    alice.webhooks.delete(w.id)
    with pytest.raises(aragora.NotFoundError):
        alice.webhooks.get(w.id)


@pytest.mark.parametrize("secret", [None, "plain-receiver-secret"], ids=["generated-whsec", "custom"])
def test_verify_signature_on_a_real_delivery(workspace, capture, secret):
    from standardwebhooks import Webhook as StandardWebhook

    alice, _ = workspace
    w = alice.webhooks.register(url=capture, secret=secret, event_types=["debate.completed"])
    secret = w.secret
    assert secret and (secret.startswith("whsec_") or secret == "plain-receiver-secret")
    receipt = alice.webhooks.test(w.id)
    assert receipt.status == "succeeded", receipt
    assert len(Capture.got) == 1
    headers, body = Capture.got[0]
    h = {k.lower(): v for k, v in headers.items()}

    # Guide scheme: X-Signature-SHA256.
    assert verify_signature(body, h["x-signature-sha256"], secret)
    assert not verify_signature(body + b" ", h["x-signature-sha256"], secret)
    assert not verify_signature(body, h["x-signature-sha256"], secret + "x")
    # Standard Webhooks: webhook-signature over id.timestamp.body.
    std = dict(msg_id=h["webhook-id"], timestamp=h["webhook-timestamp"])
    assert verify_signature(body, h["webhook-signature"], secret, **std)
    assert not verify_signature(body.replace(b"webhook.test", b"webhook.tset"), h["webhook-signature"], secret, **std)
    assert not verify_signature(body, h["webhook-signature"], secret, msg_id="other-id",
                                timestamp=h["webhook-timestamp"])
    # The reference implementation agrees (it needs a whsec_ key).
    if secret.startswith("whsec_"):
        StandardWebhook(secret).verify(body, {"webhook-id": h["webhook-id"],
                                              "webhook-timestamp": h["webhook-timestamp"],
                                              "webhook-signature": h["webhook-signature"]})
    alice.webhooks.delete(w.id)
