"""The agent's side of the native websocket protocol (docs/agent-protocol.md).

The server pushes: `task.run` as soon as a task is queued and the agent has a free slot,
`task.cancel`, `status_change`, `status`, `ping` and `idle`. The agent sends its reports
(pipelined, up to `window` at a time), pings, and `capacity` when its appetite changes.
A message from the server that breaks the protocol gets `fatal_error` and a reconnect;
nothing the server sends can crash the agent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from taskfleet import loops
from taskfleet.agent import protocol as wire
from taskfleet.agent.transports import AuthFailed, Host, Offline, Refused, Reply, TaskSpec

log = logging.getLogger(__name__)

OPEN_TIMEOUT_SECONDS = 10.0
REPLY_TIMEOUT_SECONDS = 30.0
WINDOW = 32


def ws_url(server: str) -> str:
    """http(s)://host[:port][/prefix] -> ws(s)://host[:port][/prefix]/api/v1/agent/ws"""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"a server URL looks like http://host:port, not {server!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + wire.WS_PATH, "", ""))


def basic_auth(name: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()


async def open_session(
    server: str, name: str, secret: str, host: Host, max_message: int = wire.MAX_MESSAGE_BYTES
) -> WebSocketSession:
    """Connects and says hello. Raises `AuthFailed`, `Refused` (upgrade refused: try
    long-poll) or `Offline`."""
    try:
        ws = await connect(
            ws_url(server),
            additional_headers={"Authorization": basic_auth(name, secret)},
            user_agent_header="taskfleet-agent",
            compression=None,  # ~14 KiB per connection instead of ~64 KiB on the server
            max_size=max_message,
            ping_interval=None,  # the protocol's own pings, both ways
            open_timeout=OPEN_TIMEOUT_SECONDS,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == 401:
            raise AuthFailed("the server refused this agent's name and secret") from exc
        raise Refused(f"the websocket upgrade was answered with HTTP {status}") from exc
    except (InvalidHandshake, InvalidURI) as exc:
        raise Refused(f"websocket handshake failed: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise Offline(f"cannot reach {server}: {exc}") from exc
    session = WebSocketSession(ws, host, max_message)
    try:
        await session.hello()
    except BaseException:
        await session.aclose()
        raise
    return session


class WebSocketSession:
    window = WINDOW
    heartbeat_cap = float("inf")

    def __init__(self, ws: ClientConnection, host: Host, max_message: int) -> None:
        self._ws = ws
        self._host = host
        self._limit = max_message
        self._ids = itertools.count(1)
        self._writer = wire.Writer(ws.send, max_message)
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._heard = time.monotonic()
        self._ping_interval = 20.0
        self._idle_timeout = 60.0
        self._sent_capacity = host.capacity()
        self._methods: dict[str, Callable[[wire.Params], Awaitable[Any]]] = {
            "task.run": self._on_task_run,
            "task.cancel": self._on_task_cancel,
            "status": self._on_status,
            "status_change": self._on_status_change,
            "ping": self._on_ping,
            "idle": self._on_idle,
        }

    # -- connecting ---------------------------------------------------------------------

    async def hello(self) -> None:
        params = {**self._host.hello(), "concurrency": self._sent_capacity, "batch": True}
        reply = await self._call_before_serving("hello", params)
        if not reply.ok:
            if reply.code == wire.UNAUTHORIZED:
                raise AuthFailed(reply.message)
            raise Offline(f"the server refused hello: {reply.message}")
        result = reply.result if isinstance(reply.result, dict) else {}
        self._ping_interval = _positive(result.get("ping_interval"), self._ping_interval)
        self._idle_timeout = _positive(result.get("idle_timeout"), self._idle_timeout)
        self._writer.batch = result.get("batch") is True

    async def _call_before_serving(self, method: str, params: dict[str, Any]) -> Reply:
        msg_id = f"a{next(self._ids)}"
        try:
            await self._ws.send(wire.request(msg_id, method, params))
            async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
                frames = await self._next_frames()
        except (ConnectionClosed, TimeoutError) as exc:
            raise Offline(f"no answer to {method}: {exc}") from exc
        frame = frames[0]
        if isinstance(frame, wire.Fatal):
            raise Offline(f"the server said: {frame.message}")
        if len(frames) > 1 or not isinstance(frame, wire.Response) or frame.id != msg_id:
            await self._fatal(f"protocol violation: expected the response to {method}.")
        return _reply(frame)

    async def _next_frames(self) -> list[wire.Frame]:
        data = await self._ws.recv()
        self._heard = time.monotonic()
        try:
            return wire.decode(data, self._limit)
        except wire.ProtocolError as exc:
            await self._fatal(str(exc))

    async def _fatal(self, message: str) -> NoReturn:
        """Answers a bad message from the server: fatal_error, close, and reconnect later."""
        log.debug("answering fatal_error: %s", message, extra={"action": "ws_fatal"})
        with contextlib.suppress(Exception):
            self._writer.put(wire.fatal(message))
            await self._writer.flush()
        raise Offline(f"bad message from the server: {message}")

    # -- sending ------------------------------------------------------------------------

    async def submit(self, method: str, params: dict[str, Any]) -> asyncio.Future[Reply]:
        msg_id = f"a{next(self._ids)}"
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            self._writer.put(wire.request(msg_id, method, params))
        except ConnectionClosed as exc:
            self._pending.pop(msg_id, None)
            raise Offline(f"connection lost: {exc}") from exc
        return future

    async def sign_off(self) -> None:
        reply = await asyncio.wait_for(await self.submit("sign_off", {}), REPLY_TIMEOUT_SECONDS)
        if not reply.ok:
            raise Offline(f"sign-off refused: {reply.message}")

    async def aclose(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Offline("the connection closed"))
                future.exception()  # retrieved: nobody may be waiting any more
        self._pending.clear()
        self._writer.cancel()
        with contextlib.suppress(Exception):
            await self._ws.close()

    # -- serving ------------------------------------------------------------------------

    async def serve(self) -> None:
        await loops.until_first_ends(
            {
                "taskfleet-ws-read": self._read_forever(),
                "taskfleet-ws-ping": self._ping_forever(),
                "taskfleet-ws-capacity": self._capacity_forever(),
            }
        )
        raise Offline("the connection closed")

    async def _read_forever(self) -> None:
        try:
            while True:
                for frame in await self._next_frames():
                    if isinstance(frame, wire.Fatal):
                        raise Offline(f"the server closed the connection: {frame.message}")
                    if isinstance(frame, wire.Response):
                        await self._on_response(frame)
                    else:
                        await self._on_request(frame)
        except ConnectionClosed as exc:
            raise Offline(f"connection lost: {exc}") from exc

    async def _on_response(self, frame: wire.Response) -> None:
        future = self._pending.pop(frame.id, None)
        if future is None:
            await self._fatal("protocol violation: unknown message id referenced.")
        elif not future.done():
            future.set_result(_reply(frame))

    async def _on_request(self, frame: wire.Request) -> None:
        handler = self._methods.get(frame.method)
        if handler is None:
            await self._fatal(f"unknown message method {frame.method!r}.")
        try:
            value = await handler(wire.Params(frame.method, frame.params))
        except wire.ProtocolError as exc:
            await self._fatal(str(exc))
        except Exception as exc:
            log.exception("handling %s failed", frame.method, extra={"action": "ws_request"})
            self._writer.put(wire.error(frame.id, str(exc), wire.INTERNAL))
        else:
            self._writer.put(wire.result(frame.id, value))

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            silent = time.monotonic() - self._heard
            if silent > self._idle_timeout:
                raise Offline(f"the server has been silent for {silent:.1f} s")
            await self.submit("ping", {})

    async def _capacity_forever(self) -> None:
        while True:
            await self._host.changed.wait()
            self._host.changed.clear()
            wanted = self._host.capacity()
            if wanted != self._sent_capacity:
                self._sent_capacity = wanted
                await self.submit("capacity", {"concurrency": wanted})

    # -- the server's requests ------------------------------------------------------------

    async def _on_task_run(self, p: wire.Params) -> dict[str, Any]:
        spec = TaskSpec(
            task_id=p.integer("task_id"),
            attempt=p.integer("attempt"),
            type=p.text("type"),
            payload=p.value("payload", None),
            lease_seconds=p.number("lease_seconds") or 60.0,
            timeout_seconds=p.number("timeout_seconds"),
        )
        self._host.start_task(spec)
        return {"accepted": True}

    async def _on_task_cancel(self, p: wire.Params) -> dict[str, Any]:
        return {"running": self._host.cancel_task(p.integer("task_id"), p.integer("attempt"))}

    async def _on_status(self, p: wire.Params) -> dict[str, Any]:
        return self._host.status()

    async def _on_status_change(self, p: wire.Params) -> dict[str, Any]:
        lazy = p.value("lazy", False)
        return {"status": self._host.change_status(p.text("status"), lazy is True)}

    async def _on_ping(self, p: wire.Params) -> dict[str, Any]:
        return p.raw

    async def _on_idle(self, p: wire.Params) -> dict[str, Any]:
        self._host.idle()
        return {}


def _reply(frame: wire.Response) -> Reply:
    if frame.ok:
        return Reply(True, frame.result)
    return Reply(False, code=frame.code, message=frame.message)


def _positive(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default
