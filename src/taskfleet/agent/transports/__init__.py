"""How the agent reaches the server: the websocket (push) or HTTP long-poll (pull).

Both give the agent a `Session` for one connection. The agent is the session's `Host`:
the session tells it about work and control messages, and asks it how much work it wants.
Library exceptions stop here: a transport raises `Offline`, `Refused` or `AuthFailed`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from taskfleet.core.models import JSONValue


class Offline(Exception):
    """The server cannot be reached, or the connection broke: reconnect after a backoff."""


class Refused(Offline):
    """The server (or a proxy) answered the websocket upgrade with an HTTP error."""


class AuthFailed(Exception):
    """The server refused the agent's name and secret."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The server's answer to one report."""

    ok: bool
    result: Any = None
    code: str = ""  #: for a refusal: invalid, too_large, forbidden, not_found, conflict, ...
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """A task the server handed to this agent."""

    task_id: int
    attempt: int
    type: str
    payload: JSONValue = None
    lease_seconds: float = 60.0
    timeout_seconds: float | None = None


class Host(Protocol):
    """The agent, as a session sees it."""

    name: str
    #: Set whenever the agent's appetite for work may have changed.
    changed: asyncio.Event

    def hello(self) -> dict[str, Any]:
        """What the agent says about itself: version, platform, task types, tags, ..."""

    def capacity(self) -> int:
        """How many tasks the agent takes at once right now (0 while paused)."""

    def free_slots(self) -> int: ...

    def start_task(self, spec: TaskSpec) -> None: ...

    def cancel_task(self, task_id: int, attempt: int) -> bool:
        """Cancels a running task; False when this agent has nothing to say about it."""

    def change_status(self, status: str, lazy: bool) -> str:
        """Applies a requested status (awake, asleep, shutdown); returns the status now."""

    def status(self) -> dict[str, Any]: ...

    def idle(self) -> None:
        """The server has no work for this agent right now."""


class Session(Protocol):
    #: How many reports may be on the way at once; replies come back in order.
    window: int
    #: The longest the runner may wait between heartbeats of a running task (seconds):
    #: long-poll learns of cancellation only from heartbeat replies.
    heartbeat_cap: float

    async def submit(self, method: str, params: dict[str, Any]) -> asyncio.Future[Reply]:
        """Sends a report; the future holds the reply (or raises `Offline`)."""

    async def serve(self) -> None:
        """Runs the connection until it ends; raises `Offline` when it breaks."""

    async def sign_off(self) -> None:
        """Tells the server the agent is leaving: whatever it still holds is requeued."""

    async def aclose(self) -> None: ...
