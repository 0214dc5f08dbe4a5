"""Live agent websocket connections of one app, their shared timer, and the grace period
of lost agents.

One task per app, not one per connection, keeps time for every native connection: it
asks each to ping when its interval is up, to close when it stayed silent too long, and,
once per poll interval when the queue holds anything, to try a claim (the fallback for
work that became runnable without a wake-up). Idle connections wait on bus subscriptions,
which cost no task or future; at thousands of agents per server that is most of its
memory and CPU.

When an agent's last connection closes, the agent is marked offline; if it has not come
back (here or on another replica) after `agent_grace_seconds`, its active tasks go back
in the queue (`TaskService.sign_off`). One `Hub` per app, opened and closed by the
lifespan in `app.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from taskfleet.core import errors
from taskfleet.core.agents import agent_channel, control_channel, is_control_channel
from taskfleet.core.models import Agent, Task
from taskfleet.core.ports import Bus
from taskfleet.core.tasks import QUEUE_CHANNEL
from taskfleet.services import Services

log = logging.getLogger(__name__)

MAX_TICK_SECONDS = 1.0  #: how late a ping or an idle timeout may be
#: How long a long-poll whose standby a submit took waits for the hand-over that
#: follows the submit's insert (a failed insert hands over None at once: this bounds
#: only the unforeseen).
HAND_OVER_SECONDS = 10.0


class Subscriptions(Protocol):
    """A bus that calls listeners back (`LocalBus.subscribe`)."""

    def subscribe(
        self, channels: Sequence[str], listener: Callable[[str], None]
    ) -> Callable[[], None]: ...


class Timed(Protocol):
    """A connection the hub keeps time for."""

    def on_tick(self, now: float, queued: bool) -> None:
        """`now` is `time.monotonic()`; `queued` is True once per poll interval when the
        queue holds a task. Must not block: it only notes what is due."""


class LongPoll:
    """The wake-ups of one long-poll: its agent's bus channels and the hub's queue poll.
    A wake-up that comes while it claims is kept, so none is lost between two claims."""

    __slots__ = ("_sleeper", "answered", "control", "handed", "lost", "woken")

    def __init__(self) -> None:
        self.woken = False
        self.control = False  #: the agent's record may have changed: re-read it
        self.handed: Task | None = None  #: leased to it by a submit (core/standby.py)
        self.lost = False  #: the submit that took its standby failed: nothing comes
        self.answered = False
        self._sleeper: asyncio.Future[None] | None = None

    def hand_over(self, task: Task | None) -> bool:
        if self.answered or self.handed is not None:
            return False
        if task is None:
            self.lost = True
        self.handed = task
        self._wake()
        return True

    def on_bus(self, channel: str) -> None:
        self.control |= is_control_channel(channel)
        self._wake()

    def on_tick(self, now: float, queued: bool) -> None:
        if queued:
            self._wake()

    def _wake(self) -> None:
        self.woken = True
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(None)

    async def handed_within(self, seconds: float, stopping: Callable[[], bool]) -> None:
        """Sleeps until a task is handed over, `seconds` pass or the server stops,
        whatever else wakes it."""
        limit = time.monotonic() + seconds
        while self.handed is None and not self.lost and not stopping():
            if (left := limit - time.monotonic()) <= 0:
                return
            await self.sleep(left)

    async def sleep(self, seconds: float) -> None:
        """Until a wake-up (or at once, if one came since the last sleep) or `seconds`."""
        if not self.woken:
            loop = asyncio.get_running_loop()
            self._sleeper = sleeper = loop.create_future()
            timer = loop.call_later(seconds, _settle, sleeper)
            try:
                await sleeper
            finally:
                timer.cancel()
                self._sleeper = None
        self.woken = False


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wake_or_kick(bus: Bus, channels: list[str], kick: asyncio.Event, timeout: float) -> bool:
    """Sleeps until the bus wakes one of `channels`, `timeout` seconds pass, or `kick` is
    set (a connection's own news, such as a freed slot), and clears `kick`. Returns True
    when the bus or the timeout ended the sleep (re-read the database), False for a kick."""
    if kick.is_set():
        kick.clear()
        return False
    woken = asyncio.ensure_future(bus.wait(channels, timeout))
    kicked = asyncio.ensure_future(kick.wait())
    try:
        done, _ = await asyncio.wait({woken, kicked}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        kicked.cancel()
    kick.clear()
    return woken in done


class Hub:
    """Live agent connections of this app, their timer, and the grace timers of lost ones."""

    def __init__(self, found: Services, bus: Subscriptions) -> None:
        self._found = found
        self._bus = bus
        self._live: dict[str, int] = {}
        self._ids: dict[str, int] = {}  #: live agent name -> id, for `last_seen`
        self._leaving: list[int] = []  #: agents whose sockets closed as the server stops
        self._grace: dict[str, asyncio.Task[None]] = {}
        self._timed: set[Timed] = set()
        self._ticker: asyncio.Task[None] | None = None

    def subscribe(
        self, channels: Sequence[str], listener: Callable[[str], None]
    ) -> Callable[[], None]:
        """Calls `listener(channel)` on each notification until the returned function is
        called."""
        return self._bus.subscribe(channels, listener)

    def keep_time(self, conn: Timed) -> None:
        self._timed.add(conn)
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick_forever(), name="taskfleet-agent-hub")

    def stop_time(self, conn: Timed) -> None:
        self._timed.discard(conn)

    async def claim_wait(
        self, agent: Agent, timeout: float, lease_seconds: float | None = None
    ) -> Task | None:
        """`TaskService.claim_wait` for long-polls held by the thousand: a subscription
        misses no wake-up, so instead of a claim of its own every poll interval it relies
        on the hub's single queue poll. While it sleeps the agent is on standby: a
        submit hands it a task directly (core/standby.py)."""
        tasks, poll = self._found.tasks, LongPoll()
        channels = [QUEUE_CHANNEL, agent_channel(agent.name), control_channel(agent.name)]
        unsubscribe = self.subscribe(channels, poll.on_bus)
        self.keep_time(poll)
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while True:
                if poll.control:
                    poll.control = False
                    with contextlib.suppress(errors.NotFound):
                        agent = await self._found.agents.get_by_id(agent.id)
                task = await tasks.claim(agent, lease_seconds)
                remaining = deadline - time.monotonic()
                if task is not None or remaining <= 0 or tasks.stopping:
                    return task
                stand_down = tasks.standby(agent, poll.hand_over, lease_seconds)
                try:
                    await poll.sleep(remaining)
                finally:
                    unused = stand_down()
                if not unused:  # a submit leased it a task: wait for the hand-over
                    await poll.handed_within(HAND_OVER_SECONDS, lambda: tasks.stopping)
                    poll.lost = False  # the submit failed: claim again
                if poll.handed is not None:
                    return poll.handed
                if tasks.stopping:  # woken by the shutdown: answer, claim nothing more
                    return None
        finally:
            poll.answered = True
            unsubscribe()
            self.stop_time(poll)

    def attach(self, agent: Agent) -> None:
        self._live[agent.name] = self._live.get(agent.name, 0) + 1
        self._ids[agent.name] = agent.id
        if (timer := self._grace.pop(agent.name, None)) is not None:
            timer.cancel()
        self._found.metrics.connected_agents.inc()

    async def detach(self, agent: Agent) -> None:
        """Marks the agent offline when its last connection closes and starts its grace."""
        self._found.metrics.connected_agents.dec()
        left = self._live.pop(agent.name, 1) - 1
        if left > 0:
            self._live[agent.name] = left
            return
        self._ids.pop(agent.name, None)
        if self._found.tasks.stopping:
            # Every socket closes at once: `close` marks them offline in one write (one
            # write each kept thousands waiting for the pool past the graceful timeout).
            # No grace timer either: the next start's agents reconnect or time out.
            self._leaving.append(agent.id)
            return
        try:
            await self._found.agents.seen(agent, online=False)
        except Exception:
            log.exception("could not mark %s offline", agent.name, extra={"action": "agent_lost"})
        self._grace[agent.name] = asyncio.create_task(
            self._expire(agent), name=f"taskfleet-agent-grace:{agent.name}"
        )

    async def _expire(self, agent: Agent) -> None:
        try:
            await asyncio.sleep(self._found.settings.agent_grace_seconds)
            current = await self._found.agents.get(agent.name)
            if current.online:  # it came back, here or on another replica
                return
            released = await self._found.tasks.sign_off(current)
            log.info(
                "agent %s did not come back: %d tasks requeued",
                agent.name,
                len(released),
                extra={"action": "agent_grace_expired", "agent": agent.name},
            )
        except asyncio.CancelledError:
            raise
        except errors.NotFound:
            pass
        except Exception:
            log.exception("grace expiry failed", extra={"action": "agent_grace_expired"})
        finally:
            if self._grace.get(agent.name) is asyncio.current_task():
                del self._grace[agent.name]

    async def _tick_forever(self) -> None:
        settings = self._found.settings
        tick = min(
            MAX_TICK_SECONDS, settings.agent_ping_interval / 4, settings.agent_idle_timeout / 4
        )
        polled = touched = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            queued = False
            if now - polled >= self._found.tasks.poll_interval and self._timed:
                polled = now
                queued = await self._queued()
            if now - touched >= settings.agent_ping_interval:
                touched = now
                await self._touch()
            for conn in list(self._timed):
                conn.on_tick(time.monotonic(), queued)

    async def _touch(self) -> None:
        """`last_seen` of every connected agent, once per ping interval, in one write."""
        try:
            await self._found.agents.touch(list(self._ids.values()))
        except Exception:
            log.exception("could not note the agents as seen", extra={"action": "agent_seen"})

    async def _queued(self) -> bool:
        """One query for the whole hub, so that an idle fleet does not poll claim by claim."""
        try:
            return await self._found.tasks.any_queued()
        except Exception:
            log.exception("queue poll failed", extra={"action": "agent_hub_poll"})
            return True  # let every connection look for itself

    async def close(self) -> None:
        try:
            await self._found.agents.left(self._leaving)
        except Exception:
            log.exception("could not mark agents offline", extra={"action": "agent_lost"})
        self._leaving.clear()
        timers = list(self._grace.values())
        if self._ticker is not None:
            timers.append(self._ticker)
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
