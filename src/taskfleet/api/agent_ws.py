"""The native agent protocol over a websocket at /api/v1/agent/ws (docs/agent-protocol.md).

One `Connection` per socket. It authenticates (HTTP Basic on the upgrade, or name and
secret in the first `hello`), then reads: the agent's requests and responses, in order, in
the socket's own task. Everything the server starts is done by a pusher task that exists
only while there is something to do: claiming work while the agent has free slots and
sending `task.run`, sending `task.cancel` and `status_change`, pinging, and closing a
connection that stayed silent too long. The bus (new tasks, control news) and the `Hub`'s
shared timer (api/agent_hub.py) say what is due; an idle connection has no task of its
own, which is what lets one server hold thousands of agents.

Domain errors become `error` responses; protocol violations and unexpected failures become
`fatal_error` and a close. Nothing an agent sends can take the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from taskfleet import __version__
from taskfleet.agent import protocol as wire
from taskfleet.api.agent_hub import Hub
from taskfleet.api.auth import basic_credentials
from taskfleet.api.problems import problem
from taskfleet.core import errors
from taskfleet.core.agents import agent_channel, control_channel, is_control_channel
from taskfleet.core.models import Agent, AgentStatus, Principal, Progress, Task, TaskFilter
from taskfleet.core.models import TaskStatus as TS
from taskfleet.core.tasks import QUEUE_CHANNEL, check_progress
from taskfleet.services import Services

log = logging.getLogger(__name__)

WS_PATH = wire.WS_PATH
HELLO_TIMEOUT_SECONDS = 10.0
MAX_UNANSWERED = 1000  #: requests awaiting the agent's response before we give up on it
MAX_CONCURRENCY = 1000
CANCEL_SCAN = 100  #: cancel-requested tasks looked at per wake-up
FINAL_STATES = frozenset({"complete", "error", "cancelled"})
CLAIM_AT_ONCE = 64  #: tasks claimed for one agent in one go
GONE = (WebSocketDisconnect, WebSocketDisconnected)
#: The agent's requests, by method, to the `Connection` method serving each.
METHODS = {
    "capacity": "_on_capacity",
    "task_status": "_on_task_status",
    "log": "_on_log",
    "output": "_on_output",
    "event": "_on_event",
    "ping": "_on_ping",
    "sign_off": "_on_sign_off",
}


class Connection:
    """One agent's websocket: lean per-connection state, a pusher task only when needed."""

    __slots__ = (
        "_cancels_sent",
        "_closed",
        "_concurrency",
        "_control_due",
        "_expired",
        "_fill_due",
        "_found",
        "_handed",
        "_heard",
        "_hub",
        "_idle_sent",
        "_ids",
        "_in_flight",
        "_limit",
        "_pending",
        "_ping_due",
        "_pinged",
        "_pusher",
        "_stand_down",
        "_status_sent",
        "_writer",
        "_ws",
        "agent",
    )

    def __init__(self, ws: WebSocket, found: Services, hub: Hub) -> None:
        self._ws = ws
        self._found = found
        self._hub = hub
        self._limit = found.settings.agent_max_message_bytes
        self.agent: Agent | None = None
        self._concurrency = 0
        self._in_flight: dict[int, int] = {}  #: task id -> attempt pushed and not finished
        self._cancels_sent: set[tuple[int, int]] = set()
        self._status_sent: AgentStatus | None = None
        self._idle_sent = False
        #: our requests awaiting the agent's response: id -> (method, task id, attempt)
        self._pending: dict[str, tuple[str, int, int]] = {}
        self._ids = itertools.count(1)
        self._writer = wire.Writer(ws.send_text, self._limit)
        self._heard = self._pinged = time.monotonic()
        # What the pusher has to do next (see `_push`).
        self._fill_due = self._control_due = self._ping_due = False
        self._expired: str | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._closed = False
        #: Tasks a submit leased to this agent while it was on standby, to push.
        self._handed: list[Task] | None = None
        self._stand_down: Callable[[], bool] | None = None  #: ends the standby

    # -- lifetime -------------------------------------------------------------------------

    async def serve(self, principal: Principal | None) -> None:
        try:
            agent = await self._greet(principal)
        except wire.ProtocolError as exc:
            await self._fatal(str(exc))
            return
        except errors.Error as exc:
            await self._fatal(exc.message)
            return
        except GONE:
            return
        self._hub.attach(agent)
        try:
            await self._run(agent.name)
        finally:
            await self._hub.detach(agent)

    async def _run(self, name: str) -> None:
        unsubscribe = self._hub.subscribe(
            [QUEUE_CHANNEL, agent_channel(name), control_channel(name)], self._on_bus
        )
        self._hub.keep_time(self)
        try:
            self._due(fill=True, control=True)
            await self._guard(self._read_forever())
        finally:
            self._closed = True
            self._end_standby()
            unsubscribe()
            self._hub.stop_time(self)
            if (pusher := self._pusher) is not None:
                pusher.cancel()
                await asyncio.gather(pusher, return_exceptions=True)
            self._writer.cancel()
            with contextlib.suppress(Exception):
                await self._ws.close()

    async def _guard(self, loop: Coroutine[Any, Any, None]) -> None:
        """Ends a loop cleanly: a violation or failure closes the connection, nothing more."""
        try:
            await loop
        except wire.ProtocolError as exc:
            await self._fatal(str(exc))
        except errors.Error as exc:
            await self._fatal(exc.message)
        except GONE:
            pass
        except Exception:
            log.exception("agent connection failed", extra={"action": "agent_ws_error"})
            await self._fatal("internal error; the server log has the details", code=1011)

    async def _fatal(self, message: str, code: int = 1008) -> None:
        self._closed = True
        name = self.agent.name if self.agent else "?"
        log.info("closing agent %s: %s", name, message, extra={"action": "agent_ws_fatal"})
        with contextlib.suppress(Exception):
            self._send(wire.fatal(message))
            await self._writer.flush()
            await self._ws.close(code)

    # -- framing ------------------------------------------------------------------------

    async def _receive(self) -> list[wire.Frame]:
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        self._heard = time.monotonic()
        text = message.get("text")
        return wire.decode(text if text is not None else message.get("bytes") or b"", self._limit)

    def _send(self, text: str, urgent: bool = False) -> None:
        """Queues a message: those of a few loop iterations go out together (`wire.Writer`)."""
        self._writer.put(text, urgent)

    def _request(self, method: str, params: dict[str, Any], urgent: bool = False) -> None:
        if len(self._pending) >= MAX_UNANSWERED:
            raise wire.ProtocolError("protocol violation: too many requests left unanswered.")
        msg_id = f"s{next(self._ids)}"
        self._pending[msg_id] = (method, params.get("task_id", 0), params.get("attempt", 0))
        self._send(wire.request(msg_id, method, params), urgent)

    # -- hello --------------------------------------------------------------------------

    async def _greet(self, principal: Principal | None) -> Agent:
        try:
            frames = await asyncio.wait_for(self._receive(), HELLO_TIMEOUT_SECONDS)
        except TimeoutError:
            raise wire.ProtocolError("protocol violation: no hello received in time.") from None
        frame = frames[0]
        if len(frames) > 1 or not isinstance(frame, wire.Request) or frame.method != "hello":
            raise wire.ProtocolError("protocol violation: the first message must be a hello.")
        p = wire.Params("hello", frame.params)
        principal = await self._authenticate(principal, p)
        agents = self._found.agents
        agent = await agents.for_principal(principal)
        self.agent = agent = await agents.hello(
            agent,
            version=p.text("version", ""),
            platform=p.text("platform", ""),
            task_types=p.strings("task_types"),
            tags=p.strings("tags"),
        )
        self._concurrency = self._checked_concurrency(p)
        for item in p.value("running", []) or []:
            held = wire.Params("hello.running", item if isinstance(item, dict) else {})
            self._in_flight[held.integer("task_id")] = held.integer("attempt")
        self._send(wire.result(frame.id, self._welcome(agent)))
        await self._writer.flush()  # the hello result travels alone; arrays come after
        self._writer.batch = p.value("batch", False) is True
        self._request("status", {})
        return agent

    def _welcome(self, agent: Agent) -> dict[str, Any]:
        settings = self._found.settings
        return {
            "agent": agent.name,
            "server_version": __version__,
            "ping_interval": settings.agent_ping_interval,
            "idle_timeout": settings.agent_idle_timeout,
            "lease_seconds": self._found.tasks.lease_seconds,
            "batch": True,
        }

    async def _authenticate(self, principal: Principal | None, p: wire.Params) -> Principal:
        name, secret = p.text("name", ""), p.text("secret", "")
        if principal is None:
            if not name or not secret:
                raise errors.Unauthorized(
                    "send HTTP Basic credentials with the upgrade, or name and secret in hello"
                )
            return await self._found.accounts.authenticate(name, secret)
        if name and name != principal.name:
            raise errors.Unauthorized("the name in hello does not match the credentials")
        return principal

    @staticmethod
    def _checked_concurrency(p: wire.Params) -> int:
        value = p.integer("concurrency", 1)
        if not 0 <= value <= MAX_CONCURRENCY:
            raise wire.ProtocolError(f"concurrency must be between 0 and {MAX_CONCURRENCY}")
        return value

    # -- the reader: the agent's requests, and its responses to ours -----------------------

    async def _read_forever(self) -> None:
        while True:
            for run in _runs(await self._receive()):
                first = run[0]
                if isinstance(first, wire.Fatal):
                    message = first.message
                    log.info("agent sent fatal_error: %s", message, extra={"action": "agent_ws"})
                    return
                if isinstance(first, wire.Response):
                    await self._on_response(first)
                elif len(run) > 1:
                    await self._on_outcomes(run)
                else:
                    await self._on_request(first)

    async def _on_outcomes(self, run: list[wire.Frame]) -> None:
        """Outcomes of several tasks, sent together: recorded together (one transaction,
        `core.batches`), answered in order."""
        frames = [f for f in run if isinstance(f, wire.Request)]
        done = await asyncio.gather(*map(self._on_request, frames), return_exceptions=True)
        for failure in done:
            if failure is not None:
                raise failure

    async def _on_request(self, frame: wire.Request) -> None:
        if frame.method == "hello":
            raise wire.ProtocolError("protocol violation: hello was already sent.")
        if frame.method not in METHODS:
            raise wire.ProtocolError(f"unknown message method {frame.method!r}.")
        handler = getattr(self, METHODS[frame.method])
        try:
            value = await handler(wire.Params(frame.method, frame.params))
        except errors.Error as exc:
            self._send(wire.error(frame.id, exc.message, wire.code_of(exc)))
            return
        self._send(wire.result(frame.id, value))

    async def _on_response(self, frame: wire.Response) -> None:
        pending = self._pending.pop(frame.id, None)
        if pending is None:
            raise wire.ProtocolError("protocol violation: unknown message id referenced.")
        method, task_id, attempt = pending
        result = frame.result if isinstance(frame.result, dict) else {}
        if not frame.ok:
            log.info("agent answered %s with an error: %s", method, frame.message)
            if method == "task.run":
                self._forget(task_id)  # its lease runs out and it is requeued
        elif method == "task.cancel" and result.get("running") is False:
            await self._confirm_cancel(task_id, attempt)
        elif method == "status_change":
            await self._acknowledge(result.get("status"))
        elif method == "status":
            name = self.agent.name if self.agent else "?"
            log.debug("agent %s status: %s", name, result, extra={"action": "agent_status"})

    async def _confirm_cancel(self, task_id: int, attempt: int) -> None:
        """The agent does not run it (any more): nobody else will confirm the cancel."""
        assert self.agent is not None
        self._forget(task_id)
        with contextlib.suppress(errors.Conflict, errors.NotFound):
            await self._found.tasks.confirm_cancel(self.agent, task_id, attempt)

    async def _acknowledge(self, status: object) -> None:
        assert self.agent is not None
        try:
            applied = AgentStatus(str(status))
        except ValueError:
            raise wire.ProtocolError(f"status_change answered with {status!r}") from None
        current = await self._found.agents.get(self.agent.name)
        self.agent = await self._found.agents.acknowledge_status(current, applied)
        self._due(control=True)

    def _forget(self, task_id: int) -> None:
        if self._in_flight.pop(task_id, None) is not None:
            self._due(fill=True)

    def _due(self, *, fill: bool = False, control: bool = False, ping: bool = False) -> None:
        """Notes what is due and starts the pusher unless it runs already."""
        self._fill_due |= fill or control  # a changed agent may take other work
        self._control_due |= control
        self._ping_due |= ping
        if self._pusher is None and not self._closed:
            name = self.agent.name if self.agent else "?"
            self._pusher = asyncio.create_task(self._push(), name=f"taskfleet-ws-push:{name}")

    def _on_bus(self, channel: str) -> None:
        self._due(fill=True, control=is_control_channel(channel))

    def on_tick(self, now: float, queued: bool) -> None:
        settings = self._found.settings
        silent = now - self._heard
        if silent > settings.agent_idle_timeout:
            timeout = settings.agent_idle_timeout
            self._expired = f"no message for {silent:.1f} s (timeout {timeout:g} s)"
            self._due()
        elif now - self._pinged >= settings.agent_ping_interval:
            self._pinged = now
            self._due(ping=True)
        if queued and len(self._in_flight) < self._concurrency:
            self._due(fill=True)

    # -- agent -> server methods ----------------------------------------------------------

    async def _on_capacity(self, p: wire.Params) -> dict[str, Any]:
        self._concurrency = self._checked_concurrency(p)
        self._due(fill=True)
        return {"concurrency": self._concurrency}

    async def _on_task_status(self, p: wire.Params) -> dict[str, Any]:
        assert self.agent is not None
        task_id, attempt, state = p.integer("task_id"), p.integer("attempt"), p.text("state")
        tasks = self._found.tasks
        try:
            if state == "running":
                task = await tasks.heartbeat(self.agent, task_id, attempt, _progress(p))
                cancelling = task.status is TS.CANCEL_REQUESTED
                return {"status": task.status.value, "cancel_requested": cancelling}
            if state == "complete":
                task = await tasks.complete(self.agent, task_id, attempt, p.value("result", None))
            elif state == "error":
                task = await tasks.fail(self.agent, task_id, attempt, p.text("msg", ""))
            elif state == "cancelled":
                task = await tasks.confirm_cancel(self.agent, task_id, attempt)
            else:
                raise p.invalid("state", "one of running, complete, error, cancelled")
        except (errors.Conflict, errors.NotFound):
            self._forget(task_id)
            raise
        self._forget(task_id)
        return {"status": task.status.value}

    async def _on_log(self, p: wire.Params) -> dict[str, Any]:
        assert self.agent is not None
        task_id = p.integer("task_id")
        try:
            await self._found.tasks.log(self.agent, task_id, p.integer("attempt"), p.text("text"))
        except errors.Conflict:
            self._forget(task_id)
            raise
        return {}

    async def _on_output(self, p: wire.Params) -> dict[str, Any]:
        assert self.agent is not None
        task_id, attempt = p.integer("task_id"), p.integer("attempt")
        output = await self._found.tasks.add_output(self.agent, task_id, attempt, p.value("data"))
        return {"id": output.id}

    async def _on_event(self, p: wire.Params) -> dict[str, Any]:
        assert self.agent is not None
        event = await self._found.agents.post_event(self.agent, p.value("data"))
        return {"id": event.id}

    async def _on_ping(self, p: wire.Params) -> dict[str, Any]:
        return p.raw

    async def _on_sign_off(self, p: wire.Params) -> dict[str, Any]:
        assert self.agent is not None
        self._concurrency = 0
        self._in_flight.clear()
        self._end_standby()
        released = await self._found.tasks.sign_off(self.agent)
        return {"released": [t.id for t in released]}

    # -- the pusher ---------------------------------------------------------------------

    async def _push(self) -> None:
        """Does what is due, then ends; `_due` starts it again when more comes up."""
        await self._guard(self._push_due())

    async def _push_due(self) -> None:
        try:
            while not self._closed and (
                self._expired or self._ping_due or self._fill_due or self._handed
            ):
                if self._expired:
                    raise wire.ProtocolError(self._expired)
                if self._handed:
                    self._run_handed()
                if self._ping_due:
                    self._ping_due = False
                    self._request("ping", {})
                if self._control_due:
                    self._control_due = False
                    await self._control()
                if self._fill_due:
                    self._fill_due = False
                    await self._fill()
        finally:
            self._pusher = None

    async def _control(self) -> None:
        """Re-reads the agent; sends a pending status change and new cancel requests."""
        assert self.agent is not None
        self.agent = agent = await self._found.agents.get(self.agent.name)
        wanted = agent.requested_status
        if wanted is not None and wanted is not self._status_sent:
            self._request("status_change", {"status": wanted.value, "lazy": agent.requested_lazy})
        self._status_sent = wanted
        query = TaskFilter(status=TS.CANCEL_REQUESTED, agent_id=agent.id, limit=CANCEL_SCAN)
        current = {(t.id, t.attempt) for t in await self._found.tasks.find(query)}
        self._cancels_sent &= current
        for task_id, attempt in sorted(current - self._cancels_sent):
            self._cancels_sent.add((task_id, attempt))
            self._request("task.cancel", {"task_id": task_id, "attempt": attempt})

    async def _fill(self) -> None:
        """Claims and pushes tasks while the agent has free slots and may take work; with
        a slot left and nothing to claim, the agent goes on standby (core/standby.py)."""
        assert self.agent is not None
        if not self._end_standby():
            return  # a submit took the standby: its hand-over comes, and fills again
        while (free := self._concurrency - len(self._in_flight)) > 0:
            if not self._takes_work(self.agent):
                return
            tasks = await self._found.tasks.claim_many(self.agent, min(free, CLAIM_AT_ONCE))
            if not tasks:
                self._stand_down = self._found.tasks.standby(self.agent, self._hand_over)
                if not self._in_flight and not self._idle_sent:
                    self._idle_sent = True
                    self._request("idle", {})
                return
            self._idle_sent = False
            for task in tasks:
                self._in_flight[task.id] = task.attempt
                self._request("task.run", self._run_params(task))

    def _end_standby(self) -> bool:
        """Ends the standby (woken: claim in queue order, as any agent). False when a
        submit took it and its task is on the way."""
        stand_down, self._stand_down = self._stand_down, None
        return stand_down is None or stand_down()

    def _hand_over(self, task: Task | None) -> bool:
        """A submit leased `task` to this agent while it was on standby: push it (None:
        the submit failed, so claim again)."""
        if self._closed:
            return False
        self._stand_down = None  # a hand-over ends the standby
        if task is None:
            self._due(fill=True)  # the fill skipped while a task seemed on its way
            return True
        self._in_flight[task.id] = task.attempt
        if self._handed is None:
            self._handed = []
        self._handed.append(task)
        self._due(fill=True)  # a fill skipped while the task was on its way
        return True

    def _run_handed(self) -> None:
        handed, self._handed = self._handed or [], None
        self._idle_sent = False
        for task in handed:  # just submitted: out at once, not with what comes next
            self._request("task.run", self._run_params(task), urgent=True)

    @staticmethod
    def _takes_work(agent: Agent) -> bool:
        return agent.enabled and agent.status is AgentStatus.AWAKE

    def _run_params(self, task: Task) -> dict[str, Any]:
        lease = self._found.tasks.lease_seconds
        return {
            "task_id": task.id,
            "attempt": task.attempt,
            "type": task.type,
            "payload": task.payload,
            "lease_seconds": lease,
            "timeout_seconds": task.timeout_seconds,
        }


def _runs(frames: list[wire.Frame]) -> Iterator[list[wire.Frame]]:
    """The frames of one message, one at a time, except that a run of final `task_status`
    reports of distinct tasks comes as one: those may be recorded together. Everything
    else keeps the order it was sent in."""
    run: list[wire.Frame] = []
    ids: set[int] = set()
    for frame in frames:
        task_id = _outcome_of(frame)
        if run and (task_id is None or task_id in ids):
            yield run
            run, ids = [], set()
        if task_id is None:
            yield [frame]
        else:
            run.append(frame)
            ids.add(task_id)
    if run:
        yield run


def _outcome_of(frame: wire.Frame) -> int | None:
    """The task a final `task_status` report is about; None for any other frame."""
    if isinstance(frame, wire.Request) and frame.method == "task_status":
        task_id = frame.params.get("task_id")
        if frame.params.get("state") in FINAL_STATES and isinstance(task_id, int):
            return task_id
    return None


def _progress(p: wire.Params) -> Progress:
    return check_progress(p.number("percent"), p.number("eta"), p.text("activity", ""))


async def _basic_principal(ws: WebSocket, found: Services) -> Principal | None:
    scheme, _, value = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    return await found.accounts.authenticate(*basic_credentials(value.strip()))


async def endpoint(websocket: WebSocket) -> None:
    """The route: refuses bad Basic credentials with 401 before upgrading."""
    found: Services = websocket.app.state.services
    try:
        principal = await _basic_principal(websocket, found)
    except errors.Unauthorized as exc:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(problem(401, exc.message))
        else:
            await websocket.close(1008, exc.message)
        return
    await websocket.accept()
    await Connection(websocket, found, websocket.app.state.agent_hub).serve(principal)


async def serve_socket(scope: Scope, receive: Receive, send: Send) -> None:
    """`endpoint` as a plain ASGI app, for `app.App`, which serves the agent socket ahead
    of the routing stack."""
    await endpoint(WebSocket(scope, receive, send))
