"""A stand-in for `aragora cdc run` that speaks the same line protocol, driven by a scenario, for the
unit tests of the Python side (the pump, acks/nacks, errors, stderr handling). The real engine is
exercised by the MySQL tests in test_cdc_connectors.py.

Scenario (a JSON file named by FAKE_CDC_SCENARIO): start_error, crash_before_ready, stderr_bytes, batches (lists
of events), max_nacks, after_batches ("wait_stop" | "fail"), rows, health, sync_error, slow_rows.
Everything the engine receives (argv, spec, replies) and whether the password showed up in its
argv or environment is appended as JSON lines to FAKE_CDC_RECORD.
"""

import json
import os
import sys
import time


def record(obj):
    path = os.environ.get("FAKE_CDC_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(obj) + "\n")


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read():
    line = sys.stdin.readline()
    if not line:
        return None
    msg = json.loads(line)
    record({"received": msg})
    return msg


def main():
    path = os.environ.get("FAKE_CDC_SCENARIO")
    scenario = {}
    if path:
        with open(path, encoding="utf-8") as f:
            scenario = json.load(f)
    record({"argv": sys.argv[1:]})
    spec = read()
    if spec is None:
        sys.exit(9)
    password = spec.get("password")
    if password:
        leaked = any(password in a for a in sys.argv) or any(password in v for v in os.environ.values())
        record({"password_in_argv_or_env": leaked})
    if scenario.get("stderr_bytes"):
        chunk = "INFO aragora_cdc: " + "x" * 100 + "\n"
        for _ in range(scenario["stderr_bytes"] // len(chunk) + 1):
            sys.stderr.write(chunk)
        sys.stderr.flush()
    cmd = spec["command"]
    if scenario.get("start_error"):
        sys.stderr.write("ERROR aragora_cdc: refusing\n")
        out({"error": scenario["start_error"]})
        sys.exit(2)
    if scenario.get("crash_before_ready"):
        sys.stderr.write("thread 'main' panicked at src/boom.rs:1:1\nsomething broke\n")
        sys.stderr.flush()
        sys.exit(101)
    if cmd == "health":
        out({"health": scenario.get("health", {"healthy": True, "latency_ms": 1.5, "details": {"fake": True}})})
        return
    if cmd == "sync":
        for i, row in enumerate(scenario.get("rows", [])):
            if scenario.get("sync_error") is not None and i == scenario["sync_error"]:
                out({"error": {"kind": "source", "field": None, "message": "lost the source mid-sync"}})
                sys.exit(3)
            out({"row": row})
            if scenario.get("slow_rows"):
                time.sleep(0.05)
        out({"done": True})
        return
    out({"ready": True})
    n = 0
    for events in scenario.get("batches", []):
        nacks = 0
        while True:
            n += 1
            out({"batch": n, "events": events})
            reply = read()
            if reply is None or reply.get("stop"):
                out({"stopped": True})
                return
            if "ack" in reply:
                assert reply["ack"] == n, reply
                break
            assert reply.get("nack") == n, reply
            nacks += 1
            if nacks > scenario.get("max_nacks", 5):
                out({"error": {"kind": "state", "field": None, "message": "handlers kept failing"}})
                sys.exit(4)
            time.sleep(0.02)
    if scenario.get("after_batches") == "fail":
        out({"error": {"kind": "source", "field": None, "message": "source went away"}})
        sys.exit(5)
    while True:
        msg = read()
        if msg is None or msg.get("stop"):
            out({"stopped": True})
            return


if __name__ == "__main__":
    main()
