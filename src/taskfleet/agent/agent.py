"""The agent: connects, takes work, runs it, reports it, and leaves cleanly.

`Agent.run()` keeps one session at a time (websocket first, HTTP long-poll when the
upgrade is refused), reconnecting with jittered exponential backoff. A session runs the
transport, the outbox's flusher and a watcher that signs off once the agent is done.

SIGTERM or SIGINT (or a `shutdown` status change) stops claiming, lets running tasks
finish for `drain_seconds`, hands the rest back, delivers the spool and signs off, then
`run()` returns 0; a second signal hands back at once. In burst mode the agent leaves the
same way as soon as the server has no work for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import random
import signal
import time
from collections.abc import Mapping
from typing import Any

from taskfleet import __version__
from taskfleet.agent.handlers import Handler
from taskfleet.agent.outbox import Outbox
from taskfleet.agent.runner import Runner
from taskfleet.agent.settings import AgentSettings
from taskfleet.agent.spool import Spool
from taskfleet.agent.transports import (
    AuthFailed,
    Offline,
    Refused,
    Session,
    TaskSpec,
    longpoll,
    teeth,
    websocket,
)
from taskfleet.core import crypto

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 1  #: the server refused the agent's credentials


class Backoff:
    """Exponential delays with jitter, so a fleet does not reconnect in step."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self._tries = base, cap, 0

    def next(self) -> float:
        delay: float = min(self.cap, self.base * 2.0 ** min(self._tries, 30))
        self._tries += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._tries = 0


class Agent:
    def __init__(
        self, settings: AgentSettings, spool: Spool, handlers: Mapping[str, Handler]
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.changed = asyncio.Event()
        self.outbox = Outbox(spool, settings.spool_limit, self, settings.max_message_bytes)
        self.runner = Runner(
            handlers, self.outbox, settings.name, self.changed.set, _private_key(settings)
        )
        self._backoff = Backoff(settings.backoff_seconds, settings.backoff_max_seconds)
        self._started = time.monotonic()
        self._asleep = False
        self._stopping = False
        self._handing_back = False
        self._hurry = asyncio.Event()
        self._drained = asyncio.Event()
        self._drain: asyncio.Task[None] | None = None
        self._give_up_at = float("inf")
        self._signed_off = False

    # -- the session's view (transports.Host) --------------------------------------------

    def hello(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": __version__,
            "platform": platform.platform()[:200],
            "task_types": sorted(self.runner.handlers),
            "tags": list(self.settings.tags),
            "concurrency": self.capacity(),
            "running": [{"task_id": t, "attempt": a} for t, a in self.runner.running],
        }

    def capacity(self) -> int:
        paused = self._stopping or self._asleep or self.outbox.over_limit
        return 0 if paused else self.settings.concurrency

    def free_slots(self) -> int:
        return max(0, self.capacity() - len(self.runner))

    def start_task(self, spec: TaskSpec) -> None:
        if self._handing_back:
            return  # the sign-off puts it back in the queue
        log.debug("running task %s", spec.task_id, extra={"action": "task_start"})
        self.runner.start(spec)

    def cancel_task(self, task_id: int, attempt: int) -> bool:
        # An outcome still in the spool counts: it will settle the task when delivered.
        found = self.runner.cancel(task_id, attempt)
        return found or self.outbox.spool.has_final(task_id, attempt)

    def change_status(self, status: str, lazy: bool) -> str:
        log.info("status change requested: %s", status, extra={"action": "status_change"})
        if status == "shutdown":
            self.stop(self.settings.drain_seconds if lazy else 0.0)
        elif status in ("asleep", "awake"):
            self._asleep = status == "asleep"
        self.changed.set()
        return status

    def status(self) -> dict[str, Any]:
        mode = "stopping" if self._stopping else "asleep" if self._asleep else "awake"
        return {
            "version": __version__,
            "uptime": round(time.monotonic() - self._started, 3),
            "mode": mode,
            "running": [t for t, _ in self.runner.running],
            "spool": len(self.outbox.spool),
        }

    def idle(self) -> None:
        if self.settings.burst and not len(self.runner):
            log.info("no more work: leaving (burst mode)", extra={"action": "burst_done"})
            self.stop(0.0)

    # -- the outbox's view (outbox.Listener) ----------------------------------------------

    def task_stale(self, task_id: int, attempt: int) -> None:
        self.runner.drop(task_id, attempt)

    def cancel_requested(self, task_id: int, attempt: int) -> None:
        self.runner.cancel(task_id, attempt)

    def spool_changed(self) -> None:
        self.changed.set()

    # -- stopping -------------------------------------------------------------------------

    def stop(self, grace: float) -> None:
        """Stops taking work; running tasks get `grace` seconds, then are handed back.
        A second call hands them back at once."""
        if self._drain is not None:
            self._hurry.set()
            return
        self._stopping = True
        self.changed.set()
        self._drain = asyncio.create_task(self._drain_tasks(grace), name="taskfleet-agent-drain")

    async def _drain_tasks(self, grace: float) -> None:
        idle = asyncio.ensure_future(self.runner.wait_idle())
        hurry = asyncio.ensure_future(self._hurry.wait())
        try:
            await asyncio.wait({idle, hurry}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            hurry.cancel()
        if len(self.runner):
            log.info("handing back %d running tasks", len(self.runner))
        self._handing_back = True
        await self.runner.hand_back()
        self._give_up_at = time.monotonic() + self.settings.flush_seconds
        self._drained.set()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._drain is None:
            log.info("%s: finishing running tasks (up to %g s)", name, self.settings.drain_seconds)
        else:
            log.info("%s again: handing running tasks back now", name)
        self.stop(self.settings.drain_seconds)

    # -- running --------------------------------------------------------------------------

    async def run(self) -> int:
        """Serves until stopped; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        self.runner.start_heartbeats()
        try:
            return await self._connect_forever()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            await self.runner.close()
            if self._drain is not None:
                self._drain.cancel()
                await asyncio.gather(self._drain, return_exceptions=True)
            self.outbox.spool.close()

    async def _connect_forever(self) -> int:
        while not self._signed_off:
            try:
                await self._serve(await self._open())
            except AuthFailed as exc:
                log.error("%s", exc, extra={"action": "auth_failed"})
                return EXIT_REFUSED
            except Offline as exc:
                log.warning("%s", exc, extra={"action": "offline"})
            except Exception:
                log.exception("session failed", extra={"action": "session_failed"})
            if self._signed_off or self._may_leave_unsigned():
                return EXIT_OK
            await self._pause(self._backoff.next())
        return EXIT_OK

    def _may_leave_unsigned(self) -> bool:
        """Done, but the server is away: leave when nothing waits to be sent, or when
        delivering it has taken `flush_seconds` (the spool keeps it for the next start)."""
        if not self._drained.is_set():
            return False
        left = len(self.outbox.spool)
        if left and time.monotonic() < self._give_up_at:
            return False
        log.warning(
            "leaving without signing off; %d reports stay in the spool",
            left,
            extra={"action": "leave_unsigned"},
        )
        return True

    async def _pause(self, delay: float) -> None:
        """The backoff before a reconnect; cut short when the agent becomes ready to leave."""
        delay = min(delay, max(0.0, self._give_up_at - time.monotonic()))
        if self._drained.is_set():
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), delay)

    async def _open(self) -> Session:
        s = self.settings
        if s.protocol == "teeth":
            return await teeth.open_session(s.server, s.name, self, self.runner.handlers, s.teeth)
        if s.transport != "http":
            try:
                return await websocket.open_session(
                    s.server, s.name, s.secret, self, s.max_message_bytes
                )
            except Refused as exc:
                if s.transport == "ws":
                    raise
                log.warning("%s: using HTTP long-poll", exc, extra={"action": "fallback"})
        return await longpoll.open_session(
            s.server, s.name, s.secret, self, s.long_poll_seconds, s.burst
        )

    async def _serve(self, session: Session) -> None:
        kind = "websocket" if session.window > 1 else "HTTP long-poll"
        kind = "teeth" if self.settings.protocol == "teeth" else kind
        log.info("connected to %s (%s)", self.settings.server, kind, extra={"action": "connect"})
        self._backoff.reset()
        self.runner.set_heartbeat_cap(session.heartbeat_cap)
        self.changed.set()
        loops = [
            asyncio.create_task(session.serve(), name="taskfleet-agent-session"),
            asyncio.create_task(self.outbox.flush_forever(session), name="taskfleet-agent-flush"),
            asyncio.create_task(self._sign_off_when_done(session), name="taskfleet-agent-finish"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for loop in done:
                loop.result()
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            with contextlib.suppress(Exception):
                await session.aclose()

    async def _sign_off_when_done(self, session: Session) -> None:
        await self._drained.wait()
        await self.outbox.wait_empty()
        await session.sign_off()
        self._signed_off = True
        log.info("signed off", extra={"action": "sign_off"})


def _private_key(settings: AgentSettings) -> crypto.PrivateKey | None:
    if settings.private_key is None:
        return None
    return crypto.load_private_key(settings.private_key.read_bytes())
