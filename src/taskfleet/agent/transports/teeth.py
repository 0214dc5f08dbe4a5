"""The agent's teeth transport: it speaks to a teeth server as teeth-agent did (seed 003,
PROTOCOLS.md §4), so that taskfleet's agent can stand in for it.

It dials HOST:PORT (`tls://HOST:PORT` for TLS), sends `handshake` with its id (the
primary MAC address unless `--name` says otherwise) at once, then `ping` at once and every
`ping_interval` seconds. The server's commands are checked as teeth-agent checked them: a
missing parameter gets a plain-string error, an unknown method (`ping` included) a fatal
error. `status` is answered at once; every other command is started as a task of the
runner and answered with `null`, and the runner's reports go out as teeth messages:
`task_status` (`running` with eta and percent, `error` with msg, `complete` with the
result, a taskfleet addition) and `log` (message, time, and the task's `task_id`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import Any, NoReturn

from taskfleet import __version__, loops
from taskfleet.agent import protocol as native
from taskfleet.agent.handlers import Handler, HandlerError, TaskContext
from taskfleet.agent.teeth import wire
from taskfleet.agent.teeth.config import TeethConfig
from taskfleet.agent.transports import Host, Offline, Reply, TaskSpec
from taskfleet.core.models import JSONValue

log = logging.getLogger(__name__)

OPEN_TIMEOUT_SECONDS = 10.0
WINDOW = 8  #: reports on their way at once
BUSY = "this agent takes no new work now (stopping, asleep, or its report spool is full)"


def address(server: str) -> tuple[str, int, bool]:
    """(host, port, tls) of `HOST:PORT`, `tcp://HOST:PORT` or `tls://HOST:PORT`."""
    scheme, sep, rest = server.partition("://")
    if not sep:
        scheme, rest = "tcp", server
    host, colon, port = rest.rstrip("/").rpartition(":")
    if scheme not in ("tcp", "tls") or not colon or not host or not port.isdecimal():
        raise ValueError(f"a teeth server looks like HOST:PORT or tls://HOST:PORT, not {server!r}")
    return host.strip("[]"), int(port), scheme == "tls"


def client_tls(config: TeethConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.tls_ca or None)
    if config.tls_cert:
        context.load_cert_chain(config.tls_cert, config.tls_key or None)
    return context


async def open_session(
    server: str, name: str, host: Host, handlers: Mapping[str, Handler], config: TeethConfig
) -> TeethSession:
    """Connects and shakes hands. Raises `Offline`."""
    hostname, port, tls = address(server)
    context = client_tls(config) if tls or config.tls else None
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
            reader, writer = await asyncio.open_connection(
                hostname, port, ssl=context, limit=wire.MAX_LINE_BYTES
            )
    except (OSError, TimeoutError) as exc:
        raise Offline(f"cannot reach {server}: {exc}") from exc
    session = TeethSession(wire.Channel(reader, writer), name, host, handlers, config)
    try:
        await session.handshake()
    except BaseException:
        await session.aclose()
        raise
    return session


class _Silent:
    """The reporter of a command answered at once: there is no task to report on."""

    async def progress(
        self, percent: float | None = None, eta: float | None = None, activity: str = ""
    ) -> None:
        pass

    async def log(self, text: str) -> None:
        pass

    async def output(self, data: JSONValue) -> None:
        pass

    async def event(self, data: JSONValue) -> None:
        pass


def _reply(response: wire.Response) -> Reply:
    if not response.failed:
        return Reply(True, response.result)
    code = response.error.get("code") if isinstance(response.error, dict) else None
    return Reply(False, code=str(code or native.INVALID), message=response.message)


class TeethSession:
    window = WINDOW
    heartbeat_cap = float("inf")

    def __init__(
        self,
        channel: wire.Channel,
        name: str,
        host: Host,
        handlers: Mapping[str, Handler],
        config: TeethConfig,
    ) -> None:
        self._channel = channel
        self._name = name
        self._host = host
        self._handlers = handlers
        self._ping_interval = config.ping_interval
        self._pending: dict[str, asyncio.Future[Reply]] = {}

    # -- connecting ---------------------------------------------------------------------

    async def handshake(self) -> None:
        msg_id = str(uuid.uuid4())
        params = {"id": self._name, "version": __version__}
        try:
            await self._channel.send(wire.command(msg_id, "handshake", params))
            async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
                frame = await self._next_frame()
        except (OSError, TimeoutError) as exc:
            raise Offline(f"no answer to the handshake: {exc}") from exc
        if isinstance(frame, wire.Fatal):
            raise Offline(f"the server refused the handshake: {frame.message}")
        if not isinstance(frame, wire.Response) or frame.id != msg_id:
            await self._fatal("protocol violation: expected the handshake's response.")
        if frame.failed:
            raise Offline(f"the server refused the handshake: {frame.message}")
        log.info("Handshake successful", extra={"action": "teeth_handshake"})
        if isinstance(frame.result, dict) and frame.result.get("accepted") is False:
            log.warning("the server holds this agent pending until an admin enables it")

    async def _next_frame(self) -> wire.Frame:
        """The next non-blank line's frame; a bad one gets a fatal error."""
        while True:
            try:
                frame = await self._channel.read(wire.IDLE_TIMEOUT_SECONDS)
            except wire.Violation as exc:
                await self._fatal(str(exc))
            if frame is not None:
                return frame

    async def _fatal(self, message: str) -> NoReturn:
        await self._channel.fatal(message)
        raise Offline(f"bad message from the server: {message}")

    # -- reports ------------------------------------------------------------------------

    async def submit(self, method: str, params: dict[str, Any]) -> asyncio.Future[Reply]:
        translated = self._translate(method, params)
        if translated is None:  # capacity, sign_off: teeth has no such message
            done: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            done.set_result(Reply(True))
            return done
        return await self._send(*translated)

    async def _send(self, method: str, params: dict[str, Any]) -> asyncio.Future[Reply]:
        msg_id = str(uuid.uuid4())
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            await self._channel.send(wire.command(msg_id, method, params))
        except OSError as exc:
            self._pending.pop(msg_id, None)
            raise Offline(f"connection lost: {exc}") from exc
        return future

    @staticmethod
    def _translate(method: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        if method == "task_status":
            return "task_status", _task_status(params)
        if method in ("log", "output", "event"):
            return "log", _log(method, params)
        return None

    async def sign_off(self) -> None:
        """teeth has no goodbye: the agent just closes (the server's grace requeues)."""

    async def aclose(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Offline("the connection closed"))
                future.exception()  # retrieved: nobody may be waiting any more
        self._pending.clear()
        await self._channel.close()

    # -- serving ------------------------------------------------------------------------

    async def serve(self) -> None:
        await loops.until_first_ends(
            {
                "taskfleet-teeth-read": self._read_forever(),
                "taskfleet-teeth-ping": self._ping_forever(),
            }
        )
        raise Offline("the connection closed")

    async def _read_forever(self) -> None:
        try:
            while True:
                frame = await self._next_frame()
                if isinstance(frame, wire.Fatal):
                    raise Offline(f"the server closed the connection: {frame.message}")
                if isinstance(frame, wire.Response):
                    await self._on_response(frame)
                else:
                    await self._on_command(frame)
        except TimeoutError:
            raise Offline(f"the server was silent for {wire.IDLE_TIMEOUT_SECONDS:g} s") from None
        except OSError as exc:
            raise Offline(f"connection lost: {exc}") from exc

    async def _ping_forever(self) -> None:
        """At once, then every interval, as teeth-agent (its replies need no waiting)."""
        while True:
            await self._send("ping", {})
            await asyncio.sleep(self._ping_interval)

    async def _on_response(self, response: wire.Response) -> None:
        future = self._pending.pop(response.id, None) if isinstance(response.id, str) else None
        if future is None:
            await self._fatal(wire.UNKNOWN_ID)
        if not future.done():
            future.set_result(_reply(response))

    # -- the server's commands ------------------------------------------------------------

    async def _on_command(self, command: wire.Command) -> None:
        try:
            wire.check_command(command, self._handlers)
        except wire.Violation as exc:
            await self._fatal(str(exc))
        try:
            value = await self._run(command, wire.method_of(command.method))
        except (wire.CommandError, HandlerError) as exc:
            await self._channel.send(wire.error(command, str(exc)))
        except Exception as exc:
            log.exception("handling %s failed", command.method, extra={"action": "teeth_command"})
            await self._channel.send(wire.error(command, f"{type(exc).__name__}: {exc}"))
        else:
            await self._channel.send(wire.result(command, value))

    async def _run(self, command: wire.Command, method: str) -> JSONValue:
        """Answers `status` at once; starts any other command as a task (result `null`)."""
        wire.require(command, *wire.REQUIRED.get(method, ()))
        if method in wire.IMMEDIATE:
            context = TaskContext(
                id=0, attempt=0, type=method, payload=command.params, agent=self._name
            )
            return await self._handlers[method](context, _Silent())
        task_id, attempt = wire.parse_task_ref(command.params["task_id"])
        if self._host.capacity() == 0:
            raise wire.CommandError(BUSY)
        spec = TaskSpec(task_id=task_id, attempt=attempt, type=method, payload=command.params)
        self._host.start_task(spec)
        return None


def _task_status(params: dict[str, Any]) -> dict[str, Any]:
    state = params["state"]
    message: dict[str, Any] = {
        "task_id": wire.task_ref(params["task_id"], params["attempt"]),
        "state": "error" if state == "cancelled" else state,
    }
    if state == "running":
        message.update(eta=params.get("eta"), percent=params.get("percent"))
        message["activity"] = params.get("activity", "")
    elif state == "complete":
        message["result"] = params.get("result")
    else:
        message["msg"] = params.get("msg") or state
    return message


def _log(method: str, params: dict[str, Any]) -> dict[str, Any]:
    data = params.get("data")
    if method == "log":
        text = str(params.get("text", ""))
    elif method == "output":
        text = "output: " + json.dumps(data)
    else:
        text = data if isinstance(data, str) else json.dumps(data)
    message: dict[str, Any] = {"message": text, "time": time.time()}
    if "task_id" in params and "attempt" in params:
        message["task_id"] = wire.task_ref(params["task_id"], params["attempt"])
    return message
