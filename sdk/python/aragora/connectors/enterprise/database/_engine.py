"""The ``aragora cdc run`` child process and its line protocol (JSON objects, one per line, UTF-8).

Python writes one spec line to the child's stdin::

    {"command": "stream"|"sync"|"health", "id": ..., "type": ..., "config": {...},
     "username": ..., "password": ..., "checkpoint_file": ...}

then, for ``stream``, reads ``{"ready": true}``, ``{"batch": n, "events": [...]}`` (answered with
``{"ack": n}`` or ``{"nack": n, "error": "..."}``) and ``{"stopped": true}`` (after Python wrote
``{"stop": true}`` or closed stdin); for ``sync``, ``{"row": {...}}`` lines and ``{"done": true}``;
for ``health``, one ``{"health": {...}}`` line. ``{"error": {"kind", "field", "message"}}`` is
followed by a non-zero exit. The child's stderr is its log.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import re
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional

from aragora._binary import binary

from .cdc import CDCError

log = logging.getLogger("aragora.cdc")

#: Largest stdout line accepted (a batch of large rows is one line).
LINE_LIMIT = 256 * 1024 * 1024
STDERR_TAIL = 50

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_LEVEL = re.compile(r"\b(ERROR|WARN|WARNING|INFO|DEBUG|TRACE)\b")
_LEVELS = {"ERROR": logging.ERROR, "WARN": logging.WARNING, "WARNING": logging.WARNING, "INFO": logging.INFO,
           "DEBUG": logging.DEBUG, "TRACE": logging.DEBUG}


class Child:
    """One ``aragora cdc run`` process: spec written on start, stdout read line by line, stderr
    drained continuously into the ``aragora.cdc`` logger and a tail of the last lines."""

    def __init__(self, spec: Dict[str, Any], env: Optional[Dict[str, str]] = None):
        self.spec = spec
        self.env = env
        self.proc: Optional[asyncio.subprocess.Process] = None
        self.stderr_tail: Deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._stderr_task: Optional[asyncio.Task] = None
        self._write_lock = asyncio.Lock()
        self.error: Optional[CDCError] = None  # from an {"error": …} line

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def spawn(self) -> None:
        env = dict(os.environ)
        env.update(self.env or {})
        env.setdefault("RUST_LOG", "warn")
        self.proc = await asyncio.create_subprocess_exec(
            binary(), "cdc", "run",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, limit=LINE_LIMIT)
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())
        await self.send(self.spec)

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        prefix = f"[{self.spec.get('id')}] "
        while True:
            try:
                line = await self.proc.stderr.readline()
            except ValueError:  # an over-long line: skip what is buffered
                continue
            if not line:
                return
            text = _ANSI.sub("", line.decode("utf-8", errors="replace")).rstrip()
            if not text:
                continue
            self.stderr_tail.append(text)
            m = _LEVEL.search(text[:80])
            level = _LEVELS[m.group(1)] if m else logging.INFO
            if log.isEnabledFor(level):
                log.log(level, "%s%s", prefix, text)

    async def send(self, obj: Dict[str, Any]) -> bool:
        """Writes one line; False if the child no longer reads its stdin."""
        if self.proc is None or self.proc.stdin is None or self.proc.stdin.is_closing():
            return False
        data = (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
        async with self._write_lock:
            try:
                self.proc.stdin.write(data)
                await self.proc.stdin.drain()
                return True
            except (BrokenPipeError, ConnectionResetError, RuntimeError):
                return False

    async def close_stdin(self) -> None:
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.is_closing():
            try:
                self.proc.stdin.close()
                await self.proc.stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass

    async def read(self) -> Optional[Dict[str, Any]]:
        """The next stdout message; None at end of output. Non-JSON lines are a protocol error."""
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError as e:
                raise CDCError(f"the CDC engine wrote a line over {LINE_LIMIT} bytes: {e}", kind="protocol") from None
            if not line:
                return None
            text = line.strip()
            if not text:
                continue
            try:
                msg = json.loads(text)
            except ValueError:
                raise CDCError(f"the CDC engine wrote a line that is not JSON: {text[:200]!r}",
                               kind="protocol") from None
            if not isinstance(msg, dict):
                raise CDCError(f"the CDC engine wrote a message that is not a JSON object: {text[:200]!r}",
                               kind="protocol")
            if "error" in msg:
                self.error = CDCError.from_json(msg["error"], stderr=list(self.stderr_tail))
            return msg

    async def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Waits for the exit (killing the child after ``timeout``) and for its stderr; the exit code."""
        if self.proc is None:
            return None
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("[%s] the CDC engine did not exit in %s s; killing it", self.spec.get("id"), timeout)
            await self.kill()
        if self._stderr_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 5)
            except (asyncio.TimeoutError, Exception):
                self._stderr_task.cancel()
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            await self.proc.wait()

    async def terminate(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.terminate()
            except ProcessLookupError:
                pass
        await self.close_stdin()
        await self.wait(grace)

    async def failure(self, what: str, timeout: float = 30.0) -> CDCError:
        """The exception for a child that ended without finishing ``what``: its error line, or its
        exit code and last stderr lines."""
        code = await self.wait(timeout)
        if self.error is not None:
            self.error.exit_code = code
            self.error.stderr = list(self.stderr_tail)
            return self.error
        return CDCError(f"the CDC engine ({binary_name()} cdc run) exited with status {code} before {what}",
                        kind="exit", exit_code=code, stderr=list(self.stderr_tail))


def binary_name() -> str:
    try:
        return binary()
    except Exception:  # pragma: no cover - only for messages
        return "aragora"


Dispatch = Callable[[List[Dict[str, Any]]], Awaitable[None]]
