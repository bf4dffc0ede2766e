"""``BatchExplainabilityWorker``: the guide's batch worker (see :mod:`aragora.queue`)."""

from __future__ import annotations

from aragora.queue import JobQueue, Worker

__all__ = ["BatchExplainabilityWorker"]


class BatchExplainabilityWorker(Worker):
    """Explains the debates of batch jobs, ``max_concurrent_debates`` at a time."""

    kind = "batch_explainability"

    def __init__(self, queue: JobQueue, worker_id: str, max_concurrent_debates: int = 10):
        if int(max_concurrent_debates) < 1:
            raise ValueError("max_concurrent_debates must be at least 1")
        super().__init__(queue, worker_id,
                         ["--batch-max-concurrent-debates", str(int(max_concurrent_debates))])
        self.max_concurrent_debates = int(max_concurrent_debates)
