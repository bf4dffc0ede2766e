"""Starts the real aragora binary on a free loopback port with a fresh SQLite data dir."""

import os
import pathlib
import subprocess
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def _binary() -> str:
    path = os.environ.get("ARAGORA_BIN") or str(REPO / "target" / "debug" / "aragora")
    if not os.path.exists(path):
        raise RuntimeError(f"aragora binary not found at {path}: build it (cargo build -p aragora) or set ARAGORA_BIN")
    return path


def start_server(*args, prefix="aragora-sdk-"):
    """`aragora serve` on a free loopback port with a fresh SQLite data dir; returns the process and
    `{"base_url", "token", "data_dir"}`."""
    data = tempfile.mkdtemp(prefix=prefix)
    env = dict(os.environ, RUST_LOG="warn", ARAGORA_WEBHOOK_ALLOW_CIDRS="127.0.0.0/8")
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([_binary(), "serve", *args, "--bind", "127.0.0.1:0", "--data-dir", data],
                            stdout=subprocess.PIPE, text=True, env=env)
    base = None
    for line in proc.stdout:
        if "listening on " in line:
            base = line.split("listening on ", 1)[1].strip()
            break
    assert base, "server did not start"
    token = pathlib.Path(data, "admin-token").read_text().strip()
    return proc, {"base_url": base, "token": token, "data_dir": data}


def stop_server(proc):
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def server():
    proc, info = start_server()
    os.environ["ARAGORA_API_URL"] = info["base_url"]
    yield info
    stop_server(proc)


@pytest.fixture()
def client(server):
    from aragora import AragoraClient

    with AragoraClient(api_key=server["token"], base_url=server["base_url"]) as c:
        yield c
