"""Task handlers: the one-method contract, the built-in handlers, and plugins.

A handler runs one task type:

    async def run(task: TaskContext, report: Reporter) -> JSONValue

It returns the task's result (any JSON value), reports progress, log text, outputs and
events through `report`, and learns of cancellation the asyncio way: the coroutine is
cancelled (clean up, then let `CancelledError` propagate). An exception fails the task
with the exception's message. The runner, not the handler, sets the task's status.

Plugins come from the `taskfleet.handlers` entry-point group: the entry point's name is
the task type and it points at a handler function, or at any object with a `run`
attribute that is one (a module, an instance). See docs/agent.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from taskfleet.core.models import JSONValue

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "taskfleet.handlers"
SLEEP_MAX_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskContext:
    """What a handler knows about the task it runs."""

    id: int
    attempt: int
    type: str
    payload: JSONValue
    agent: str  #: this agent's name
    timeout_seconds: float | None = None


class Reporter(Protocol):
    """How a handler talks to the server. Every report is spooled before it is sent."""

    async def progress(
        self, percent: float | None = None, eta: float | None = None, activity: str = ""
    ) -> None:
        """Percent done (0-100), seconds left, and what is going on. Throttled."""

    async def log(self, text: str) -> None:
        """Appends text to the task's log."""

    async def output(self, data: JSONValue) -> None:
        """Records something the task produced (a file's path and size, a URL, ...)."""

    async def event(self, data: JSONValue) -> None:
        """Records an event for this agent (not tied to the task)."""


Handler = Callable[[TaskContext, Reporter], Awaitable[JSONValue]]


class HandlerError(Exception):
    """A failure whose message is meant for the operator, such as a bad payload."""


async def echo(task: TaskContext, report: Reporter) -> JSONValue:
    """Returns the payload."""
    return task.payload


def _seconds(payload: JSONValue) -> float:
    value = payload.get("seconds") if isinstance(payload, dict) else payload
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HandlerError('sleep needs a number of seconds, or {"seconds": n}')
    if not 0 <= value <= SLEEP_MAX_SECONDS:
        raise HandlerError(f"sleep takes 0 to {SLEEP_MAX_SECONDS} seconds")
    return float(value)


async def sleep(task: TaskContext, report: Reporter) -> JSONValue:
    """Sleeps for the payload's seconds, reporting progress about every tenth of the way."""
    seconds = _seconds(task.payload)
    step = min(5.0, max(1.0, seconds / 10))
    loop = asyncio.get_running_loop()
    start = loop.time()
    while (left := seconds - (loop.time() - start)) > 0:
        await asyncio.sleep(min(step, left))
        done = min(seconds, loop.time() - start)
        await report.progress(100 * done / seconds, max(0.0, seconds - done), "sleeping")
    return {"slept": seconds}


def builtins() -> dict[str, Handler]:
    # Imported here: the shell handler imports this module's contract.
    from taskfleet.agent import shell

    return {"echo": echo, "sleep": sleep, "shell": shell.run}


def as_handler(obj: Any) -> Handler:
    """A handler function, or the `run` of an object; raises TypeError for anything else."""
    candidate = obj if inspect.iscoroutinefunction(obj) else getattr(obj, "run", None)
    if candidate is None or not inspect.iscoroutinefunction(candidate):
        raise TypeError(f"{obj!r} is not an async handler (async def run(task, report))")
    return candidate  # type: ignore[no-any-return]


def plugins(group: str = ENTRY_POINT_GROUP) -> dict[str, Handler]:
    """Handlers from installed packages; a broken plugin is logged and skipped."""
    found: dict[str, Handler] = {}
    for point in entry_points(group=group):
        try:
            found[point.name] = as_handler(point.load())
        except Exception as exc:
            log.error(
                "skipping handler %r (%s): %s",
                point.name,
                point.value,
                exc,
                extra={"action": "load_handler"},
            )
    return found


def registry(extra: Mapping[str, Handler] | None = None) -> dict[str, Handler]:
    """Built-ins, then plugins (which may not replace a built-in), then `extra`."""
    handlers = builtins()
    for name, handler in plugins().items():
        if name in handlers:
            log.warning("plugin handler %r ignored: that is a built-in", name)
            continue
        handlers[name] = handler
    handlers.update(extra or {})
    return handlers
