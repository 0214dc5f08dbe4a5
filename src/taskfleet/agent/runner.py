"""Runs tasks through their handlers, up to the agent's concurrency at once.

The runner, not the handler, decides how a task ends: a returned value completes it, an
exception fails it with the exception's message, a cancel the server asked for ends it as
cancelled. A task handed back (the agent is leaving) or gone stale (the server gave the
attempt up) is stopped without a report. While tasks run, a heartbeat keeps their leases,
every 0.3-0.6 of the lease (jittered, so a fleet does not beat in step).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from taskfleet.agent.handlers import Handler, HandlerError, TaskContext
from taskfleet.agent.outbox import Outbox
from taskfleet.agent.transports import TaskSpec
from taskfleet.core import crypto, errors
from taskfleet.core.models import JSONValue

log = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL = 0.5  #: seconds between two progress reports of one task
MAX_RESULT_BYTES = 1024 * 1024  #: of JSON, as the server takes
MAX_LOG_CHUNK = 200 * 1024  #: characters per log report, under the server's chunk limit
MAX_MESSAGE = 10_000


def _check_result(value: JSONValue) -> None:
    """Refuses, here, a result the server could not store (it would be refused there)."""
    size = len(json.dumps(value))
    if size > MAX_RESULT_BYTES:
        raise HandlerError(f"the result is {size} bytes of JSON; at most {MAX_RESULT_BYTES}")


class TaskReporter:
    """The `Reporter` a handler gets: every report goes to the outbox (the spool)."""

    def __init__(self, outbox: Outbox, task: TaskContext) -> None:
        self._outbox = outbox
        self._task = task
        self._progress: dict[str, Any] = {}
        self._sent = 0.0

    def _put(self, method: str, params: dict[str, Any], coalesce: str | None = None) -> None:
        task = self._task
        params = {"task_id": task.id, "attempt": task.attempt, **params}
        self._outbox.put(method, params, task.id, task.attempt, coalesce)

    async def progress(
        self, percent: float | None = None, eta: float | None = None, activity: str = ""
    ) -> None:
        if percent is not None:
            percent = min(100.0, max(0.0, float(percent)))
        if eta is not None:
            eta = max(0.0, float(eta))
        self._progress = {"percent": percent, "eta": eta, "activity": str(activity)[:1000]}
        if time.monotonic() - self._sent >= PROGRESS_MIN_INTERVAL:
            self.heartbeat()

    def heartbeat(self) -> None:
        """Sends the latest progress; it also extends the lease."""
        self._sent = time.monotonic()
        key = f"progress:{self._task.id}:{self._task.attempt}"
        self._put("task_status", {"state": "running", **self._progress}, key)

    async def log(self, text: str) -> None:
        for start in range(0, len(text), MAX_LOG_CHUNK):
            self._put("log", {"text": text[start : start + MAX_LOG_CHUNK]})

    async def output(self, data: JSONValue) -> None:
        self._put("output", {"data": data})

    async def event(self, data: JSONValue) -> None:
        self._outbox.put("event", {"data": data})

    def finish(self, state: str, **fields: Any) -> None:
        self._put("task_status", {"state": state, **fields})


@dataclass(eq=False)
class _Running:
    context: TaskContext
    reporter: TaskReporter
    lease_seconds: float
    job: asyncio.Task[None] | None = None
    outcome: str = field(default="")  #: "cancel" or "drop" once decided from outside


class Runner:
    def __init__(
        self,
        handlers: Mapping[str, Handler],
        outbox: Outbox,
        agent: str,
        on_change: Callable[[], None],
        private_key: crypto.PrivateKey | None = None,
    ) -> None:
        self.handlers = dict(handlers)
        self._private_key = private_key
        self._outbox = outbox
        self._agent = agent
        self._on_change = on_change
        self._running: dict[int, _Running] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._rethink = asyncio.Event()
        self.heartbeat_cap = math.inf
        self._heartbeats: asyncio.Task[None] | None = None

    # -- what runs ----------------------------------------------------------------------

    @property
    def running(self) -> list[tuple[int, int]]:
        return [(r.context.id, r.context.attempt) for r in self._running.values()]

    def __len__(self) -> int:
        return len(self._running)

    def runs(self, task_id: int, attempt: int) -> bool:
        found = self._running.get(task_id)
        return found is not None and found.context.attempt == attempt

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until nothing runs; False when `timeout` seconds passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- starting and stopping tasks ------------------------------------------------------

    def start(self, spec: TaskSpec) -> None:
        if (old := self._running.get(spec.task_id)) is not None:
            if old.context.attempt >= spec.attempt:
                return  # a repeated push of what already runs
            self._stop(old, "drop")  # the server moved on to a newer attempt
        context = TaskContext(
            id=spec.task_id,
            attempt=spec.attempt,
            type=spec.type,
            payload=spec.payload,
            agent=self._agent,
            timeout_seconds=spec.timeout_seconds,
        )
        record = _Running(context, TaskReporter(self._outbox, context), spec.lease_seconds)
        self._running[spec.task_id] = record
        self._idle.clear()
        record.job = asyncio.create_task(
            self._run(record), name=f"taskfleet-task:{spec.task_id}/{spec.attempt}"
        )
        self._rethink.set()

    def cancel(self, task_id: int, attempt: int) -> bool:
        """Cancels the handler of this attempt; it ends as cancelled. False if not running."""
        found = self._running.get(task_id)
        if found is None or found.context.attempt != attempt:
            return False
        self._stop(found, "cancel")
        return True

    def drop(self, task_id: int, attempt: int) -> None:
        """Stops the handler without a report (the attempt is stale)."""
        found = self._running.get(task_id)
        if found is not None and found.context.attempt == attempt:
            self._stop(found, "drop")

    async def hand_back(self) -> None:
        """Stops every handler without a report: the server requeues them on sign-off."""
        for record in list(self._running.values()):
            self._stop(record, "drop")
        await self._idle.wait()

    @staticmethod
    def _stop(record: _Running, outcome: str) -> None:
        if not record.outcome:
            record.outcome = outcome
        if record.job is not None:
            record.job.cancel()

    async def _run(self, record: _Running) -> None:
        context, reporter = record.context, record.reporter
        handler = self.handlers.get(context.type)
        try:
            if handler is None:
                raise HandlerError(f"this agent has no handler for task type {context.type!r}")
            if crypto.is_sealed(context.payload):
                context = replace(context, payload=self._unseal(context.payload))
            value = await handler(context, reporter)
            _check_result(value)
        except asyncio.CancelledError:
            if record.outcome == "cancel":
                reporter.finish("cancelled")
            raise
        except Exception as exc:
            self._finish_failed(record, exc)
        else:
            if record.outcome == "cancel":
                reporter.finish("cancelled")
            elif not record.outcome:
                reporter.finish("complete", result=value)
        finally:
            self._ended(record)

    def _unseal(self, payload: JSONValue) -> JSONValue:
        """Opens a payload the server sealed to this agent's public key; only the private
        key, which never leaves this host, can."""
        if self._private_key is None:
            raise HandlerError("the payload is sealed, and this agent has no --private-key")
        try:
            return crypto.unseal(self._private_key, payload)
        except errors.Invalid as exc:
            raise HandlerError(f"cannot open the sealed payload: {exc.message}") from exc

    def _finish_failed(self, record: _Running, exc: Exception) -> None:
        if record.outcome == "drop":
            return
        if record.outcome == "cancel":
            record.reporter.finish("cancelled")
            return
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, HandlerError | TypeError | ValueError):
            message = f"{type(exc).__name__}: {message}"
        log.info("task %s failed: %s", record.context.id, message, extra={"action": "task_failed"})
        record.reporter.finish("error", msg=message[:MAX_MESSAGE])

    def _ended(self, record: _Running) -> None:
        if self._running.get(record.context.id) is record:
            del self._running[record.context.id]
        if not self._running:
            self._idle.set()
        self._on_change()

    # -- heartbeats -----------------------------------------------------------------------

    def start_heartbeats(self) -> None:
        self._heartbeats = asyncio.create_task(self._beat_forever(), name="taskfleet-heartbeat")

    def set_heartbeat_cap(self, seconds: float) -> None:
        self.heartbeat_cap = seconds
        self._rethink.set()

    def _interval(self) -> float:
        leases = [r.lease_seconds for r in self._running.values()] or [60.0]
        return min(min(leases) * random.uniform(0.3, 0.6), self.heartbeat_cap)

    async def _beat_forever(self) -> None:
        due = time.monotonic() + self._interval()
        while True:
            self._rethink.clear()
            try:
                async with asyncio.timeout(max(0.0, due - time.monotonic())):
                    await self._rethink.wait()
                # A task started (its lease may be shorter) or the cap changed.
                due = min(due, time.monotonic() + self._interval())
                continue
            except TimeoutError:
                pass
            for record in list(self._running.values()):
                record.reporter.heartbeat()
            due = time.monotonic() + self._interval()

    async def close(self) -> None:
        """Stops the heartbeat and any handler still running (without reports)."""
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            await asyncio.gather(self._heartbeats, return_exceptions=True)
        await self.hand_back()
