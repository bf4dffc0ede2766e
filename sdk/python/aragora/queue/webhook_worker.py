"""``WebhookDeliveryWorker``: the guide's webhook worker (see :mod:`aragora.queue`)."""

from __future__ import annotations

from aragora.queue import JobQueue, Worker

__all__ = ["WebhookDeliveryWorker"]


class WebhookDeliveryWorker(Worker):
    """Delivers webhooks (signed, retried, circuit-broken), ``max_concurrent`` at a time."""

    kind = "webhook_delivery"

    def __init__(self, queue: JobQueue, worker_id: str, max_concurrent: int = 50):
        if int(max_concurrent) < 1:
            raise ValueError("max_concurrent must be at least 1")
        super().__init__(queue, worker_id, ["--webhook-max-concurrent", str(int(max_concurrent))])
        self.max_concurrent = int(max_concurrent)
