"""Background workers started from Python: the guide's "Starting Workers".

The workers are the server binary's own. ``BatchExplainabilityWorker`` and
``WebhookDeliveryWorker`` start one ``aragora worker --workers <kind> --worker-id <id>`` process on
the queue a :class:`JobQueue` names, and stop it with SIGTERM (in-flight jobs get the grace period,
then are released to other workers)::

    from aragora.queue import JobQueue
    from aragora.queue.batch_worker import BatchExplainabilityWorker

    job_queue = JobQueue(database_url="postgres://…")   # or JobQueue(data_dir="./aragora-data")
    batch_worker = BatchExplainabilityWorker(queue=job_queue, worker_id="batch-1",
                                             max_concurrent_debates=10)
    await batch_worker.start()
    ...
    await batch_worker.stop()

A worker id is refused while a live worker holds it. The binary is ``ARAGORA_BIN``, else
``aragora`` on ``PATH``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from typing import Deque, Dict, List, Optional

from aragora._binary import BinaryNotFound, binary

__all__ = ["JobQueue", "Worker", "WorkerStartError", "BinaryNotFound"]


class WorkerStartError(RuntimeError):
    """The worker process exited or stayed silent instead of starting."""


class JobQueue:
    """Where the jobs are: the server's database (PostgreSQL ``database_url``, or the SQLite
    database in ``data_dir``). With neither, the worker uses ``DATABASE_URL`` /
    ``ARAGORA_DATA_DIR`` from the environment, as the server does."""

    def __init__(self, database_url: Optional[str] = None, data_dir: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None):
        if database_url and data_dir:
            raise ValueError("give database_url or data_dir, not both")
        self.database_url = database_url
        self.data_dir = data_dir
        self.env = dict(env or {})

    def args(self) -> List[str]:
        if self.database_url:
            return ["--database-url", self.database_url]
        if self.data_dir:
            return ["--data-dir", str(self.data_dir)]
        return []


class Worker:
    """One ``aragora worker`` process running a single worker of :attr:`kind`."""

    kind = ""

    def __init__(self, queue: JobQueue, worker_id: str, flags: Optional[List[str]] = None):
        if not isinstance(queue, JobQueue):
            raise TypeError("queue must be an aragora.queue.JobQueue")
        if not worker_id:
            raise ValueError("worker_id is required")
        self.queue = queue
        self.worker_id = worker_id
        self._flags = list(flags or [])
        self._proc: Optional[asyncio.subprocess.Process] = None
        self._log: Deque[str] = collections.deque(maxlen=50)
        self._drains: List[asyncio.Task] = []

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def command(self) -> List[str]:
        return [binary(), "worker", "--workers", self.kind, "--worker-id", self.worker_id,
                *self.queue.args(), *self._flags]

    async def start(self, timeout: float = 60.0) -> None:
        """Starts the worker and returns once it runs; raises :class:`WorkerStartError` with the
        process's last log lines if it exits (e.g. the id is in use) or is not up in ``timeout``."""
        if self.running:
            return
        env = dict(os.environ, **self.queue.env)
        env.setdefault("RUST_LOG", "warn")
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._drains = [asyncio.ensure_future(self._drain(self._proc.stderr))]
        try:
            await asyncio.wait_for(self._until_running(), timeout)
        except (asyncio.TimeoutError, WorkerStartError) as e:
            await self._kill()
            detail = "\n".join(self._log) or "(no output)"
            if isinstance(e, asyncio.TimeoutError):
                raise WorkerStartError(f"worker {self.worker_id} did not start within {timeout} s:\n{detail}")
            raise WorkerStartError(f"worker {self.worker_id} did not start:\n{detail}") from None
        self._drains.append(asyncio.ensure_future(self._drain(self._proc.stdout)))

    async def _until_running(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                await self._proc.wait()
                raise WorkerStartError()
            text = line.decode(errors="replace").rstrip()
            self._log.append(text)
            if text.startswith("aragora worker running"):
                return

    async def _drain(self, stream) -> None:
        while stream is not None:
            line = await stream.readline()
            if not line:
                return
            self._log.append(line.decode(errors="replace").rstrip())

    async def stop(self, timeout: float = 60.0) -> Optional[int]:
        """SIGTERM, then waits for the process (its jobs finish or are released); returns its exit
        status."""
        if self._proc is None:
            return None
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except asyncio.TimeoutError:
                await self._kill()
        for d in self._drains:
            d.cancel()
        return self._proc.returncode

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def wait(self) -> Optional[int]:
        """Waits until the process exits on its own; returns its exit status."""
        if self._proc is None:
            return None
        return await self._proc.wait()

    def logs(self) -> List[str]:
        """The process's last output lines."""
        return list(self._log)

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()
