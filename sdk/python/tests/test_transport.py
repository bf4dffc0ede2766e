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
