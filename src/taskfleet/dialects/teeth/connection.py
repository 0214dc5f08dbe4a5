"""One teeth agent's connection: the handshake, then a reader and a pusher.

The handshake's `params.id` (the agent's primary MAC address) names the agent; colons
become dashes, so `a:b:c:d` is the agent `a-b-c-d`. The agent is admitted as the
registration policy allows (`AccountService.admit_agent`): a pending agent stays
connected and is answered, but gets no commands until an admin enables it.

The reader serves the agent's commands (`handshake`, `ping`, `log`, `task_status`) and
its responses to ours. The pusher claims the tasks queued for the agent and sends each as
a command whose params are the task's payload plus `task_id` (`"<task>.<attempt>"`);
`status` is settled by its response, every other command by the `task_status` reports
that follow it. The agent's pings are the heartbeat of every task it holds. Each step
goes to the task's log, so `taskfleet task logs` shows the whole exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskfleet import loops
from taskfleet.agent import protocol as native
from taskfleet.agent.teeth import wire
from taskfleet.api.agent_hub import Hub, wake_or_kick
from taskfleet.core import errors
from taskfleet.core.agents import agent_channel
from taskfleet.core.models import Agent, AgentStatus, Progress, Task, TaskFilter, TaskStatus
from taskfleet.core.tasks import QUEUE_CHANNEL, check_progress
from taskfleet.services import Services

if TYPE_CHECKING:
    from taskfleet.dialects.teeth.listener import Listener

log = logging.getLogger(__name__)

PLATFORM = "teeth-agent"
#: What a teeth agent may ask of the server.
AGENT_METHODS = ("handshake", "ping", "log", "task_status")
HANDSHAKE_FIRST = "protocol violation: the first message must be a handshake."
OTHER_AGENT = "protocol violation: a connection speaks for one agent only."
REPLACED = "protocol violation: a newer connection of this agent replaced this one."
CANCEL_SCAN = 100  #: cancel-requested tasks looked at per wake-up
NOTE_CHARS = 2000  #: of a result or error quoted in the task's log


@dataclass(frozen=True, slots=True)
class Sent:
    """A command sent and not answered yet."""

    task_id: int
    attempt: int
    method: str


def agent_name(teeth_id: object) -> str:
    """The taskfleet name of the agent behind a handshake id (checked by the engine)."""
    if not isinstance(teeth_id, str):
        raise errors.Invalid("the handshake id must be a string")
    return teeth_id.replace(":", "-")


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= NOTE_CHARS else text[:NOTE_CHARS] + "…"


def _number(params: dict[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wire.CommandError(f'parameter "{key}" in "task_status" command must be a number')
    return float(value)


class Connection:
    """One agent's TCP connection: lean state, two named tasks."""

    __slots__ = ("_found", "_hub", "_id", "_kick", "_listener", "_pending", "agent", "channel")

    def __init__(
        self, channel: wire.Channel, found: Services, hub: Hub, listener: Listener
    ) -> None:
        self.channel = channel
        self._found = found
        self._hub = hub
        self._listener = listener
        self._id = str(uuid.uuid4())  #: the AgentConnection id the overlord answered with
        self._pending: dict[str, Sent] = {}
        self._kick = asyncio.Event()
        self.agent: Agent | None = None

    @property
    def teeth_id(self) -> str:
        metadata = self.agent.metadata if self.agent else {}
        return str(metadata.get("teeth_id", ""))

    # -- lifetime -------------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            agent = await self._handshake()
        except (wire.Violation, wire.CommandError) as exc:
            return await self.channel.fatal(str(exc))
        except errors.Error as exc:
            log.info("teeth agent refused: %s", exc.message, extra={"action": "teeth_refused"})
            return await self.channel.fatal(exc.message)
        except (OSError, TimeoutError):
            return await self.channel.close()
        self._hub.attach(agent)
        try:
            await self._listener.claim_name(self)
            await self._run_loops(agent.name)
        finally:
            self._listener.release_name(self)
            await self._hub.detach(agent)

    async def _run_loops(self, name: str) -> None:
        try:
            await loops.until_first_ends(
                {
                    f"taskfleet-teeth-read:{name}": self._guard(self._read_forever()),
                    f"taskfleet-teeth-push:{name}": self._guard(self._push_forever()),
                }
            )
        finally:
            await self.channel.close()

    async def _guard(self, loop: Coroutine[Any, Any, None]) -> None:
        """Ends one loop cleanly: a violation or failure closes the connection, nothing more."""
        try:
            await loop
        except wire.Violation as exc:
            await self.channel.fatal(str(exc))
        except errors.Error as exc:
            await self.channel.fatal(exc.message)
        except OSError:
            pass  # gone
        except Exception:
            log.exception("teeth connection failed", extra={"action": "teeth_error"})
            await self.channel.fatal("internal error; the server log has the details")

    async def replaced(self) -> None:
        """A newer connection speaks for this agent now: this one closes."""
        await self.channel.fatal(REPLACED)

    # -- the handshake --------------------------------------------------------------------

    async def _handshake(self) -> Agent:
        command = await self._first_command()
        if command.method != "handshake":
            raise wire.Violation(HANDSHAKE_FIRST)
        try:
            wire.require(command, "id", "version")
        except wire.CommandError as exc:
            raise wire.Violation(str(exc)) from None  # fatal, as in the overlord
        teeth_id, version = command.params["id"], command.params["version"]
        agent = await self._found.accounts.admit_agent(
            agent_name(teeth_id), platform=PLATFORM, metadata={"teeth_id": teeth_id}
        )
        self.agent = await self._found.agents.hello(
            agent, version=str(version), platform=PLATFORM, task_types=wire.TASK_TYPES
        )
        await self.channel.send(wire.result(command, self._welcome()))
        log.info(
            "teeth agent %s connected from %s%s",
            self.agent.name,
            self.channel.peer,
            "" if self.agent.enabled else " (pending: an admin has to enable it)",
            extra={"action": "teeth_connect", "agent": self.agent.name},
        )
        return self.agent

    async def _first_command(self) -> wire.Command:
        while True:
            frame = await self.channel.read(self._found.settings.teeth_idle_timeout)
            if isinstance(frame, wire.Fatal):
                raise wire.Closed(frame.message)
            if isinstance(frame, wire.Response):
                raise wire.Violation(wire.UNKNOWN_ID)  # nothing was sent yet
            if frame is not None:
                wire.check_command(frame, AGENT_METHODS)
                return frame

    def _welcome(self) -> dict[str, Any]:
        assert self.agent is not None
        settings = self._found.settings
        return {
            "id": self._id,
            "primary_mac_address": self.teeth_id,
            "endpoint_rpc_host": settings.host,
            "endpoint_rpc_port": settings.port,
            "agent": self.agent.name,
            "accepted": self.agent.enabled,
        }

    # -- the reader -----------------------------------------------------------------------

    async def _read_forever(self) -> None:
        idle = self._found.settings.teeth_idle_timeout
        while True:
            try:
                frame = await self.channel.read(idle)
            except TimeoutError:
                raise wire.Violation(f"protocol error: nothing received for {idle:g} s.") from None
            if isinstance(frame, wire.Fatal):
                log.info("teeth agent sent fatal_error: %s", frame.message)
                return
            if isinstance(frame, wire.Response):
                await self._on_response(frame)
            elif frame is not None:
                await self._on_command(frame)

    async def _on_command(self, command: wire.Command) -> None:
        wire.check_command(command, AGENT_METHODS)
        handler = getattr(self, f"_on_{command.method}")
        try:
            value = await handler(command)
        except wire.CommandError as exc:
            await self.channel.send(wire.error(command, {"msg": str(exc), "code": native.INVALID}))
        except errors.Error as exc:
            reply = {"msg": exc.message, "code": native.code_of(exc)}
            await self.channel.send(wire.error(command, reply))
        else:
            await self.channel.send(wire.result(command, value))

    async def _on_handshake(self, command: wire.Command) -> dict[str, Any]:
        if command.params.get("id") != self.teeth_id:
            raise wire.Violation(OTHER_AGENT)
        return self._welcome()

    async def _on_ping(self, command: wire.Command) -> dict[str, Any]:
        assert self.agent is not None
        self.agent = await self._found.agents.seen(self.agent)
        await self._found.tasks.keep_alive(self.agent, self._found.settings.teeth_lease_seconds)
        return command.params

    async def _on_log(self, command: wire.Command) -> None:
        assert self.agent is not None
        wire.require(command, "message", "time")
        await self._found.agents.post_event(self.agent, command.params)
        if "task_id" in command.params:
            with contextlib.suppress(wire.CommandError):
                task_id, attempt = wire.parse_task_ref(command.params["task_id"])
                await self._note(task_id, attempt, str(command.params["message"]), prefix="")

    async def _on_task_status(self, command: wire.Command) -> dict[str, Any]:
        wire.require(command, "task_id", "state")
        params = command.params
        task_id, attempt = wire.parse_task_ref(params["task_id"])
        state = params["state"]
        if state == "running":
            task = await self._running(task_id, attempt, params)
        elif state == "complete":
            task = await self._done(task_id, attempt, params.get("result"))
        elif state == "error":
            task = await self._failed(task_id, attempt, params.get("msg"))
        else:
            raise wire.CommandError(
                f'unknown state {state!r} in "task_status" command: '
                "it is running, error or complete"
            )
        return {"status": task.status.value}

    async def _running(self, task_id: int, attempt: int, params: dict[str, Any]) -> Task:
        assert self.agent is not None
        percent, eta = _number(params, "percent"), _number(params, "eta")
        activity = params.get("activity")
        progress = check_progress(percent, eta, activity if isinstance(activity, str) else "")
        lease = self._found.settings.teeth_lease_seconds
        task = await self._found.tasks.heartbeat(self.agent, task_id, attempt, progress, lease)
        shown = [f"{percent:g}%" if percent is not None else "", f"eta {eta:g} s" if eta else ""]
        await self._note(task_id, attempt, " ".join(["running", *filter(None, shown)]))
        return task

    async def _done(self, task_id: int, attempt: int, result: Any) -> Task:
        assert self.agent is not None
        task = await self._found.tasks.complete(self.agent, task_id, attempt, result)
        await self._note(task_id, attempt, f"complete: {_quote(result)}")
        return task

    async def _failed(self, task_id: int, attempt: int, message: Any) -> Task:
        assert self.agent is not None
        text = _quote(message) if message else "the agent reported an error without a msg"
        task = await self._found.tasks.fail(self.agent, task_id, attempt, text)
        await self._note(task_id, attempt, f"error: {text}")
        return task

    async def _note(self, task_id: int, attempt: int, text: str, prefix: str = "teeth: ") -> None:
        """A line in the task's log (while this agent holds the attempt)."""
        assert self.agent is not None
        with contextlib.suppress(errors.Error):
            await self._found.tasks.log(self.agent, task_id, attempt, f"{prefix}{text}\n")

    # -- responses to our commands --------------------------------------------------------

    async def _on_response(self, response: wire.Response) -> None:
        sent = self._pending.pop(response.id, None) if isinstance(response.id, str) else None
        if sent is None:
            raise wire.Violation(wire.UNKNOWN_ID)
        self._kick.set()  # a slot in the window is free
        with contextlib.suppress(errors.Conflict, errors.NotFound):
            if response.failed:
                await self._failed(sent.task_id, sent.attempt, response.message)
            elif sent.method in wire.IMMEDIATE:
                await self._done(sent.task_id, sent.attempt, response.result)
            else:
                await self._accepted(sent, response.result)

    async def _accepted(self, sent: Sent, result: Any) -> None:
        """The agent took the command; its `task_status` reports will settle the task."""
        assert self.agent is not None
        progress = Progress(activity=f"{sent.method} accepted by the agent")
        lease = self._found.settings.teeth_lease_seconds
        await self._found.tasks.heartbeat(self.agent, sent.task_id, sent.attempt, progress, lease)
        await self._note(sent.task_id, sent.attempt, f"accepted: {_quote(result)}")

    # -- the pusher ---------------------------------------------------------------------

    async def _push_forever(self) -> None:
        assert self.agent is not None
        channels = [QUEUE_CHANNEL, agent_channel(self.agent.name)]
        refresh = True
        while True:
            if refresh:
                await self._control()
            await self._fill()
            refresh = await wake_or_kick(
                self._found.bus, channels, self._kick, self._found.tasks.poll_interval
            )

    async def _control(self) -> None:
        """Re-reads the agent (an admin may have enabled it) and settles cancel requests:
        teeth has no cancel command, so the server confirms them itself."""
        assert self.agent is not None
        self.agent = agent = await self._found.agents.get(self.agent.name)
        query = TaskFilter(status=TaskStatus.CANCEL_REQUESTED, agent_id=agent.id, limit=CANCEL_SCAN)
        for task in await self._found.tasks.find(query):
            with contextlib.suppress(errors.Conflict, errors.NotFound):
                await self._found.tasks.confirm_cancel(agent, task.id, task.attempt)
                note = "cancelled on the server; teeth cannot stop the command on the agent"
                await self._note(task.id, task.attempt, note)

    async def _fill(self) -> None:
        """Claims and sends tasks while the window has room and the agent may take work."""
        assert self.agent is not None
        window = self._found.settings.teeth_window
        lease = self._found.settings.teeth_lease_seconds
        while len(self._pending) < window and self._takes_work(self.agent):
            task = await self._found.tasks.claim(self.agent, lease)
            if task is None:
                return
            await self._send(task)

    @staticmethod
    def _takes_work(agent: Agent) -> bool:
        return agent.enabled and agent.status is AgentStatus.AWAKE

    async def _send(self, task: Task) -> None:
        assert self.agent is not None
        payload = {} if task.payload is None else task.payload
        method = wire.method_of(task.type)
        if not isinstance(payload, dict):
            reason = "the payload of a teeth command must be a JSON object (its params)"
            await self._found.tasks.fail(self.agent, task.id, task.attempt, reason)
            return
        msg_id = str(uuid.uuid4())
        params = {**payload, "task_id": wire.task_ref(task.id, task.attempt)}
        line = wire.command(msg_id, method, params)
        if len(line) > wire.MAX_LINE_BYTES:
            reason = f"the command is over teeth's line limit of {wire.MAX_LINE_BYTES} bytes"
            await self._found.tasks.fail(self.agent, task.id, task.attempt, reason)
            return
        self._pending[msg_id] = Sent(task.id, task.attempt, method)
        await self._note(task.id, task.attempt, f"sent {method} as {params['task_id']}")
        await self.channel.send(line)
