"""Live agent websocket connections of one app, and the grace period of lost agents.

When an agent's last connection closes, the agent is marked offline; if it has not come
back (here or on another replica) after `agent_grace_seconds`, its active tasks go back
in the queue (`TaskService.sign_off`). One `Hub` per app, opened and closed by the
lifespan in `app.py`.
"""

from __future__ import annotations

import asyncio
import logging

from taskfleet.core import errors
from taskfleet.core.models import Agent
from taskfleet.core.ports import Bus
from taskfleet.services import Services

log = logging.getLogger(__name__)


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
    """Live agent connections of this app, and the grace timers of lost ones."""

    def __init__(self, found: Services) -> None:
        self._found = found
        self._live: dict[str, int] = {}
        self._grace: dict[str, asyncio.Task[None]] = {}

    def attach(self, agent: Agent) -> None:
        self._live[agent.name] = self._live.get(agent.name, 0) + 1
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

    async def close(self) -> None:
        timers = list(self._grace.values())
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
