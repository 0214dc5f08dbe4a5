"""The agent socket: `<prefix>/socket/{name}/{version}`, as task-agent-ng dials it.

Every message is a binary event frame (`wire.event_frame`); task-agent-ng panics on a text
frame, a frame under 9 bytes or a version byte other than 0, so nothing else is ever
sent. Per connection, three named tasks run until one ends: the reader (the agent sends
nothing, so it only notices the close), the heartbeat (`heartbeat` every 2 s), and the
syncer: `taskList` on connect and every 60 s (`null` when empty), and between them, when
the bus says schedules or this agent changed, `taskAdd`, `taskUpdate` and `taskRemove`
for the difference. Its state is the id, `updated` time, name and interval of each task
the agent has, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from taskfleet import loops
from taskfleet.api.agent_hub import Hub
from taskfleet.core import errors
from taskfleet.core.agents import agent_channel
from taskfleet.core.models import Agent, Schedule
from taskfleet.core.schedules import SCHEDULES_CHANNEL
from taskfleet.dialects.raintank import rest, wire
from taskfleet.services import Services

log = logging.getLogger(__name__)

GONE = (WebSocketDisconnect, WebSocketDisconnected)
DENIAL_STATUS = {errors.Unauthorized: 401, errors.Forbidden: 403}
PLATFORM = "raintank task-agent"


class Session:
    """One task-agent-ng connection: lean state, three named tasks."""

    __slots__ = ("_found", "_hub", "_send_lock", "_sent", "_started", "_ws", "agent")

    def __init__(self, ws: WebSocket, found: Services, hub: Hub, agent: Agent) -> None:
        self._ws = ws
        self._found = found
        self._hub = hub
        self.agent = agent
        #: the tasks the agent has: id -> (updated_at, name, interval)
        self._sent: dict[int, tuple[float, str, int]] = {}
        self._send_lock = asyncio.Lock()
        self._started = time.monotonic()

    async def serve(self, version: str) -> None:
        self.agent = await self._found.agents.hello(
            self.agent, version=version, platform=PLATFORM, runs_schedules=True
        )
        self._hub.attach(self.agent)
        try:
            await self._run_loops()
        finally:
            await self._hub.detach(self.agent)

    async def _run_loops(self) -> None:
        name = self.agent.name
        try:
            await loops.until_first_ends(
                {
                    f"taskfleet-raintank-read:{name}": self._guard(self._read_forever()),
                    f"taskfleet-raintank-beat:{name}": self._guard(self._heartbeat_forever()),
                    f"taskfleet-raintank-sync:{name}": self._guard(self._sync_forever()),
                }
            )
        finally:
            with contextlib.suppress(Exception):
                await self._ws.close()

    async def _guard(self, loop: Coroutine[Any, Any, None]) -> None:
        """Ends one loop cleanly; any end closes the connection."""
        try:
            await loop
        except GONE:
            pass
        except errors.NotFound:
            log.info("agent %s was deleted", self.agent.name, extra={"action": "raintank_close"})
        except Exception:
            log.exception("raintank agent connection failed", extra={"action": "raintank_error"})

    async def _emit(self, event: str, payload: str) -> None:
        frame = wire.event_frame(event, payload.encode())
        async with self._send_lock:
            await self._ws.send_bytes(frame)

    # -- the loops ------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            # task-agent-ng sends nothing; whatever else comes is ignored.

    async def _heartbeat_forever(self) -> None:
        interval = self._found.settings.raintank_heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            since = time.monotonic() - self._started
            await self._emit("heartbeat", wire.go_time_string(self._found.clock.now(), since))

    async def _sync_forever(self) -> None:
        period = self._found.settings.raintank_task_list_seconds
        channels = [SCHEDULES_CHANNEL, agent_channel(self.agent.name)]
        loop = asyncio.get_running_loop()
        deadline = 0.0
        while True:
            full = loop.time() >= deadline
            if full:
                deadline = loop.time() + period
            # Listen before reading, so that a change made during the read still wakes us.
            waiter = asyncio.create_task(
                self._found.bus.wait(channels, max(0.0, deadline - loop.time())),
                name=f"taskfleet-raintank-wait:{self.agent.name}",
            )
            try:
                await asyncio.sleep(0)
                await (self._send_task_list() if full else self._send_changes())
                await waiter
            finally:
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)

    # -- what the agent is told ---------------------------------------------------------------

    async def _routed(self) -> list[Schedule]:
        """The agent's tasks now. Raises `NotFound` once the agent is deleted."""
        self.agent = await self._found.agents.get(self.agent.name)
        routed = await self._found.schedules.for_agent(self.agent)
        usable = [s for s in routed if wire.agent_can_decode(s)]
        if len(usable) < len(routed):
            log.warning(
                "not sending %d tasks to %s: task-agent-ng cannot decode their config",
                len(routed) - len(usable),
                self.agent.name,
                extra={"action": "raintank_skip"},
            )
        return usable

    async def _send_task_list(self) -> None:
        routed = await self._routed()
        body = wire.go_json([wire.task_dto(s) for s in routed]) if routed else "null"
        await self._emit("taskList", body)
        self._sent = {s.id: (s.updated_at, s.name, s.interval) for s in routed}

    async def _send_changes(self) -> None:
        routed = {s.id: s for s in await self._routed()}
        for schedule_id, schedule in routed.items():
            before = self._sent.get(schedule_id)
            if before is None or before[0] != schedule.updated_at:
                event = "taskAdd" if before is None else "taskUpdate"
                await self._emit(event, wire.go_json(wire.task_dto(schedule)))
            self._sent[schedule_id] = (schedule.updated_at, schedule.name, schedule.interval)
        for schedule_id in sorted(set(self._sent) - set(routed)):
            _, name, interval = self._sent.pop(schedule_id)
            await self._emit("taskRemove", wire.go_json(_removed(schedule_id, name, interval)))


def _removed(schedule_id: int, name: str, interval: int) -> wire.Struct:
    """A TaskDTO for a task the agent must drop (the agent reads only its id)."""
    return wire.Struct(
        id=schedule_id,
        name=name,
        taskType="",
        orgId=wire.ORG_ID,
        config={},
        interval=interval,
        route=wire.Struct(type="any", config={}),
        enabled=False,
        created=wire.ZERO_TIME,
        updated=wire.ZERO_TIME,
    )


# -- the route ------------------------------------------------------------------------------------


async def _agent_for(found: Services, name: str) -> Agent:
    """The connecting agent; created when unknown only if the settings allow it."""
    wire.check_agent_name(name)
    try:
        return await found.agents.get(name)
    except errors.NotFound:
        if not found.settings.raintank_auto_create_agents:
            raise errors.NotFound(
                f"agent {name!r} is not registered: create it first "
                f"(POST {found.settings.raintank_prefix}/agents), or set "
                "raintank_auto_create_agents"
            ) from None
    flags = {"raintank": {"enabled": True, "public": True}}  # as the original created them
    try:
        return await found.agents.add(name, metadata=flags, runs_schedules=True)
    except errors.Conflict:  # created meanwhile by another connection
        return await found.agents.get(name)


async def _deny(ws: WebSocket, exc: errors.Error) -> None:
    status = next((DENIAL_STATUS[k] for k in type(exc).__mro__ if k in DENIAL_STATUS), 400)
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        body = wire.error_envelope(status, exc.message)
        await ws.send_denial_response(
            Response(body, status_code=status, media_type=rest.MEDIA_TYPE)
        )
    else:
        await ws.close(1008, exc.message[:120])


async def endpoint(websocket: WebSocket) -> None:
    """Bearer auth and the agent's record before upgrading; refusals are HTTP answers."""
    try:
        found = await rest.authorize(websocket)
        agent = await _agent_for(found, websocket.path_params["name"])
    except errors.Error as exc:
        await _deny(websocket, exc)
        return
    await websocket.accept()
    hub: Hub = websocket.app.state.agent_hub
    try:
        await Session(websocket, found, hub, agent).serve(str(websocket.path_params["version"]))
    except errors.Error as exc:  # the agent was deleted while it connected
        log.info("closing agent %s: %s", agent.name, exc, extra={"action": "raintank_close"})
        with contextlib.suppress(Exception):
            await websocket.close(1011)
