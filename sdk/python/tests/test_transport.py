"""Retries on 429/503 honouring Retry-After, and errors that carry status and code — against a
scripted loopback HTTP server."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aragora import AragoraClient, NotFoundError, RateLimitError, ValidationError


class Scripted(BaseHTTPRequestHandler):
    script = []
    seen = []

    def do_GET(self):
        Scripted.seen.append((time.monotonic(), self.path, self.headers.get("Authorization")))
        status, headers, body = Scripted.script.pop(0)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def scripted():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Scripted.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def err(code, message, details=None):
    return {"error": {"code": code, "message": message, "details": details}}


def test_retries_429_and_503_honouring_retry_after(scripted):
    Scripted.script = [
        (429, {"Retry-After": "1"}, err("rate_limited", "slow down")),
        (503, {}, err("unavailable", "db")),
        (200, {}, {"workers": [], "queues": []}),
    ]
    c = AragoraClient(api_key="ara_x", base_url=scripted)
    assert c.workers.status() == {"workers": [], "queues": []}
    times = [t for t, _, _ in Scripted.seen]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.95, "waited the Retry-After second"
    assert Scripted.seen[0][2] == "Bearer ara_x"


def test_gives_up_after_max_retries_with_a_rate_limit_error(scripted):
    Scripted.script = [(429, {"Retry-After": "0"}, err("rate_limited", "slow down"))] * 2
    c = AragoraClient(api_token="ara_x", base_url=scripted, max_retries=1)
    with pytest.raises(RateLimitError) as e:
        c.workers.status()
    assert e.value.status == 429 and e.value.code == "rate_limited" and e.value.retry_after == 0


def test_errors_carry_status_code_and_field(scripted):
    Scripted.script = [(404, {}, err("not_found", "template not found")),
                       (422, {}, err("validation_failed", "rating: must be 1-5", {"field": "rating"}))]
    c = AragoraClient(api_key="ara_x", base_url=scripted)
    with pytest.raises(NotFoundError) as e:
        c.marketplace.get("tmpl-nope")
    assert e.value.status == 404
    with pytest.raises(ValidationError) as e:
        c.marketplace.get("tmpl-bad")
    assert e.value.field == "rating"


# --- Retry-After: never retry early, raise at once past the cap, HTTP dates ---------------------

def test_retry_after_longer_than_max_retry_wait_raises_at_once_with_the_servers_value(scripted):
    """Retrying before the server's 75 s would fail for certain: raise at once, retry_after 75."""
    Scripted.script = [(429, {"Retry-After": "75"}, err("rate_limited", "slow down")),
                       (200, {}, {"workers": [], "queues": []})]
    c = AragoraClient(api_token="ara_x", base_url=scripted, max_retries=1)
    started = time.monotonic()
    with pytest.raises(RateLimitError) as e:
        c.workers.status()
    assert time.monotonic() - started < 5, "did not sleep before giving up"
    assert len(Scripted.seen) == 1, "no retry before the Retry-After"
    assert e.value.retry_after == 75.0 and e.value.status == 429
    assert c.max_retry_wait == 30.0


def test_max_retry_wait_is_the_cap_and_waits_within_it_are_full(scripted):
    Scripted.script = [(503, {"Retry-After": "2"}, err("unavailable", "db"))]
    c = AragoraClient(api_key="ara_x", base_url=scripted, max_retry_wait=1)
    with pytest.raises(Exception) as e:
        c.workers.status()
    assert (e.value.status, e.value.retry_after, len(Scripted.seen)) == (503, 2.0, 1)

    Scripted.seen = []
    Scripted.script = [(429, {"Retry-After": "1.5"}, err("rate_limited", "slow down")),
                       (200, {}, {"workers": [], "queues": []})]
    c = AragoraClient(api_key="ara_x", base_url=scripted, max_retry_wait=2)
    assert c.workers.status() == {"workers": [], "queues": []}
    times = [t for t, _, _ in Scripted.seen]
    assert times[1] - times[0] >= 1.45, "slept the whole Retry-After"


def test_the_last_error_reports_the_servers_retry_after_uncapped(scripted):
    Scripted.script = [(429, {"Retry-After": "1"}, err("rate_limited", "slow down")),
                       (429, {"Retry-After": "120"}, err("rate_limited", "slow down"))]
    c = AragoraClient(api_key="ara_x", base_url=scripted, max_retries=3)
    with pytest.raises(RateLimitError) as e:
        c.workers.status()
    assert e.value.retry_after == 120.0 and len(Scripted.seen) == 2


def test_retry_after_as_an_http_date(scripted):
    from email.utils import formatdate

    Scripted.script = [(503, {"Retry-After": formatdate(time.time() + 2, usegmt=True)}, err("unavailable", "db")),
                       (200, {}, {"workers": [], "queues": []})]
    c = AragoraClient(api_key="ara_x", base_url=scripted)
    assert c.workers.status() == {"workers": [], "queues": []}
    times = [t for t, _, _ in Scripted.seen]
    # The date has whole seconds: 2 s ahead is 1 to 2 s from the request (the backoff would be 0.25 s).
    assert times[1] - times[0] >= 0.9

    Scripted.script = [(503, {"Retry-After": formatdate(time.time() + 2, usegmt=True)}, err("unavailable", "db"))]
    c = AragoraClient(api_key="ara_x", base_url=scripted, max_retries=0)
    with pytest.raises(Exception) as e:
        c.workers.status()
    assert e.value.status == 503 and 0.5 <= e.value.retry_after <= 2.01


def test_parse_retry_after():
    from aragora._http import parse_retry_after

    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert parse_retry_after("75", now) == 75.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:22 GMT", now) == 2.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now) == 0.0, "a past date: no wait"
    assert parse_retry_after("Tuesday, 14-Nov-23 22:14:20 GMT", now) == 60.0  # RFC 850, accepted by RFC 9110
    for bad in (None, "", "soon", "nan", "inf", "Tue, 99 Nov 2023 99:99:99 GMT"):
        assert parse_retry_after(bad, now) is None, bad


# --- environment: the CLI's variables, in the CLI's order -----------------------------------------

ENV_NAMES = ("ARAGORA_API_URL", "ARAGORA_URL", "ARAGORA_API_TOKEN", "ARAGORA_TOKEN")


def test_environment_names_and_precedence_match_the_cli(scripted, monkeypatch):
    from aragora import AsyncAragoraClient

    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    assert AragoraClient().base_url == "http://127.0.0.1:8080"

    monkeypatch.setenv("ARAGORA_URL", scripted + "/")
    monkeypatch.setenv("ARAGORA_TOKEN", "ara_old")
    Scripted.script = [(200, {}, {"workers": [], "queues": []})]
    c = AragoraClient()
    assert c.base_url == scripted and AsyncAragoraClient().base_url == scripted
    c.workers.status()
    assert Scripted.seen[-1][2] == "Bearer ara_old"

    monkeypatch.setenv("ARAGORA_API_URL", scripted)
    monkeypatch.setenv("ARAGORA_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("ARAGORA_API_TOKEN", "ara_new")
    Scripted.script = [(200, {}, {"workers": [], "queues": []})]
    AragoraClient().workers.status()
    assert Scripted.seen[-1][2] == "Bearer ara_new", "the SDK's names come first"

    Scripted.script = [(200, {}, {"workers": [], "queues": []})]
    AragoraClient(api_key="ara_arg", base_url=scripted).workers.status()
    assert Scripted.seen[-1][2] == "Bearer ara_arg", "an explicit argument wins"
    assert AragoraClient(base_url="http://example.test:9/").base_url == "http://example.test:9"

    # Blank values are skipped, as the CLI skips them.
    monkeypatch.setenv("ARAGORA_API_URL", "  ")
    monkeypatch.setenv("ARAGORA_URL", scripted)
    monkeypatch.setenv("ARAGORA_API_TOKEN", "")
    Scripted.script = [(200, {}, {"workers": [], "queues": []})]
    c = AragoraClient()
    assert c.base_url == scripted
    c.workers.status()
    assert Scripted.seen[-1][2] == "Bearer ara_old"


# --- the async client has the sync client's public attributes -----------------------------------

def test_async_client_has_the_same_public_attributes(monkeypatch):
    import asyncio

    from aragora import AsyncAragoraClient

    aio = AsyncAragoraClient(base_url="http://127.0.0.1:9/")
    assert aio.base_url == "http://127.0.0.1:9"
    asyncio.run(aio.aclose())
    kwargs = dict(api_key="ara_x", base_url="http://127.0.0.1:9/", timeout=7.0, max_retries=2, max_retry_wait=5)
    sync, aio = AragoraClient(**kwargs), AsyncAragoraClient(**kwargs)
    lifecycle = {"close", "aclose"}
    assert {a for a in dir(sync) if not a.startswith("_")} - lifecycle == \
        {a for a in dir(aio) if not a.startswith("_")} - lifecycle
    for attr in ("base_url", "timeout", "max_retries", "max_retry_wait"):
        assert getattr(aio, attr) == getattr(sync, attr), attr
    assert aio.base_url == "http://127.0.0.1:9"
    sync.close()
    asyncio.run(aio.aclose())


# --- every list-shaped body is a Page, sync and async --------------------------------------------

LISTS = [
    # (call, body, item class name, extra keys kept)
    (lambda c: c.explainability.get_batch_results("batch-1"),
     {"items": [{"position": 0, "debate_id": "deb-1", "status": "success", "explanation": {"conclusion": "x"}}],
      "total": 1, "next_cursor": None, "batch_id": "batch-1", "batch_status": "completed",
      "batch_phase": "completed"},
     "BatchResult", {"batch_id": "batch-1", "batch_status": "completed", "batch_phase": "completed"}),
    (lambda c: c.events.list(type="debate.completed"),
     {"items": [{"event_type": "debate.completed", "event_id": "evt-1", "timestamp": "t", "data": {"a": 1}}],
      "total": 1, "next_cursor": "evt-1"},
     "Event", {"next_cursor": "evt-1"}),
    (lambda c: c.marketplace.categories(),
     {"items": [{"name": "workflow", "count": 2}], "total": 1, "next_cursor": None},
     "Category", {}),
    (lambda c: c.connectors.events("conn-1", limit=1),
     {"items": [{"id": "ev-1", "operation": "insert", "table": "users", "data": {"id": 1}}],
      "total": 5, "next_cursor": "MQ", "limit": 1},
     "ConnectorEvent", {"limit": 1}),
]


def _check_page(page, body, cls_name, extra):
    import json as _json

    from aragora.models import Page

    assert isinstance(page, Page), type(page)
    items = list(page)
    assert len(items) == len(body["items"]) and all(type(i).__name__ == cls_name for i in items)
    assert page.items == items and page.total == body["total"] and page.next_cursor == body["next_cursor"]
    for k, v in extra.items():
        assert page[k] == v and getattr(page, k) == v
    first = items[0]
    key = next(iter(body["items"][0]))
    assert getattr(first, key) == body["items"][0][key]
    assert _json.loads(_json.dumps(page)) == body


def test_list_methods_return_pages(scripted):
    Scripted.script = [(200, {}, body) for _, body, _, _ in LISTS]
    c = AragoraClient(api_key="ara_x", base_url=scripted)
    for call, body, cls_name, extra in LISTS:
        _check_page(call(c), body, cls_name, extra)
    paths = [p for _, p, _ in Scripted.seen]
    assert paths[0].startswith("/api/v1/explainability/batch/batch-1/results")
    assert paths[1].startswith("/api/v1/events?") and "type=debate.completed" in paths[1]
    assert paths[2].startswith("/api/marketplace/categories")
    assert paths[3].startswith("/api/v1/connectors/conn-1/events") and "limit=1" in paths[3]


def test_list_methods_return_pages_async(scripted):
    import asyncio

    from aragora import AsyncAragoraClient

    async def main():
        async with AsyncAragoraClient(api_key="ara_x", base_url=scripted) as c:
            for call, body, cls_name, extra in LISTS:
                Scripted.script = [(200, {}, body)]
                _check_page(await call(c), body, cls_name, extra)

    asyncio.run(main())
