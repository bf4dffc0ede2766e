"""The guide's "Starting Workers" example: the batch and webhook workers started from Python as
separate `aragora worker` processes on the API server's queue (the API runs with --no-workers)."""

import asyncio
import time

import pytest

from conftest import _binary, start_server, stop_server


@pytest.fixture()
def api_only():
    proc, info = start_server("--no-workers", prefix="aragora-sdk-workers-")
    yield info
    stop_server(proc)


def imported_debate(client, debate_id):
    client.debates.import_debate({
        "id": debate_id, "task": "Pick a queue",
        "consensus": {"mode": "majority", "threshold": 0.5},
        "agents": [{"name": n, "provider": "demo"} for n in ("a", "b", "c")],
        "rounds": [{"round": 0, "positions": [
            {"agent": "a", "answer": "Postgres", "confidence": 0.8},
            {"agent": "b", "answer": "Redis", "confidence": 0.6},
            {"agent": "c", "answer": "Postgres", "confidence": 0.7}]}],
        "votes": [{"agent": "a", "choice": "a", "confidence": 0.9},
                  {"agent": "b", "choice": "b", "confidence": 0.6},
                  {"agent": "c", "choice": "a", "confidence": 0.7}],
    })
    return debate_id


def test_guide_workers_process_the_queue(api_only, monkeypatch):
    monkeypatch.setenv("ARAGORA_BIN", _binary())
    from aragora import AragoraClient
    from aragora.queue import JobQueue, WorkerStartError
    from aragora.queue.batch_worker import BatchExplainabilityWorker
    from aragora.queue.webhook_worker import WebhookDeliveryWorker

    client = AragoraClient(api_key=api_only["token"], base_url=api_only["base_url"])
    debate = imported_debate(client, "deb-workers-1")
    batch = client.explainability.create_batch(debate_ids=[debate], include_evidence=True)
    time.sleep(0.5)
    assert client.explainability.get_batch_status(batch.batch_id).phase == "pending", "no worker yet"

    job_queue = JobQueue(data_dir=api_only["data_dir"])

    async def main():
        # Start batch worker
        batch_worker = BatchExplainabilityWorker(
            queue=job_queue,
            worker_id="batch-1",
            max_concurrent_debates=10,
        )
        await batch_worker.start()

        # Start webhook worker
        webhook_worker = WebhookDeliveryWorker(
            queue=job_queue,
            worker_id="webhook-1",
            max_concurrent=50,
        )
        await webhook_worker.start()

        try:
            status = client.workers.status()
            mine = {w["id"]: w for w in status["workers"]}
            assert mine["batch-1"]["kind"] == "batch_explainability" and mine["batch-1"]["state"] == "running"
            assert mine["webhook-1"]["kind"] == "webhook_delivery" and mine["webhook-1"]["state"] == "running"
            assert len(mine) == 2, "each process runs only its own worker"

            # An id a live worker holds is refused, with the reason.
            twin = BatchExplainabilityWorker(queue=job_queue, worker_id="batch-1")
            with pytest.raises(WorkerStartError, match="batch-1"):
                await twin.start()

            deadline = time.time() + 60
            b = client.explainability.get_batch_status(batch.batch_id)
            while b.status != "completed":
                assert time.time() < deadline, b
                await asyncio.sleep(0.2)
                b = client.explainability.get_batch_status(batch.batch_id)
            assert b.succeeded == 1
        finally:
            assert await batch_worker.stop() == 0
            assert await webhook_worker.stop() == 0
        states = {w["id"]: w["state"] for w in client.workers.status()["workers"]}
        assert states["batch-1"] == "stopped" and states["webhook-1"] == "stopped"
        # A cleanly stopped id can be used again at once.
        async with BatchExplainabilityWorker(queue=job_queue, worker_id="batch-1") as again:
            assert again.running

    asyncio.run(main())


def test_worker_arguments_are_checked(monkeypatch, tmp_path):
    from aragora.queue import JobQueue
    from aragora.queue.batch_worker import BatchExplainabilityWorker
    from aragora.queue.webhook_worker import WebhookDeliveryWorker

    with pytest.raises(ValueError):
        JobQueue(database_url="postgres://x", data_dir="/tmp/x")
    with pytest.raises(TypeError):
        BatchExplainabilityWorker(queue="postgres://x", worker_id="b")
    with pytest.raises(ValueError):
        WebhookDeliveryWorker(queue=JobQueue(), worker_id="w", max_concurrent=0)
    monkeypatch.setenv("ARAGORA_BIN", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))
    from aragora.queue import BinaryNotFound
    with pytest.raises(BinaryNotFound):
        BatchExplainabilityWorker(queue=JobQueue(), worker_id="b").command()
