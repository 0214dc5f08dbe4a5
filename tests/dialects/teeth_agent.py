"""A TCP client that behaves on the wire exactly as teeth-agent b3ee1d8 does (PROTOCOLS.md
§4 and its appendix "teeth-agent b3ee1d8"):

* on connect, at once: `handshake` with `{"version": "0.1-dev", "id": "a:b:c:d"}`;
* once answered: `ping` with `{}` at once, then every `ping_interval` (20 s in the
  original; a parameter here so that tests need not wait);
* lines are Python's `json.dumps` (", " and ": " separators) in py2 key order, ended
  with `\\n`;
* the server's `status` gets `{"uptime", "version", "mode": "STANDBY"}`; `standby.*`
  commands get `null`, or a plain-string error for a missing parameter; any other method
  (the server's `ping` included) gets the fatal "unknown message method" and a close;
* a `fatal_error` from the server closes the connection.

`log` and `task_status` were client-side functions of the original; tests call them.
Server commands are kept in `commands` (after the answer went out) for tests to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import Iterable
from typing import Any

VERSION = "0.1-dev"
MAX_LENGTH = 512 * 1024  #: the original's LineReceiver.MAX_LENGTH
REQUIRED = {
    "standby.cache_images": ("task_id", "image_ids"),
    "standby.prepare_image": ("task_id", "image_id"),
    "standby.run_image": ("task_id", "image_id"),
}


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


class TeethAgent:
    def __init__(
        self,
        port: int,
        teeth_id: str = "a:b:c:d",
        ping_interval: float = 20.0,
        extra_commands: Iterable[str] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port
        self.teeth_id = teeth_id
        self.ping_interval = ping_interval
        self.accepts = {*REQUIRED, *extra_commands}
        self.tls = tls
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pings = 0
        self.fatal: str | None = None
        self.closed = asyncio.Event()
        self.handshake: dict[str, Any] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> dict[str, Any]:
        """Connects and shakes hands; returns the server's answer (result or error)."""
        self._reader, self._writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.tls, limit=MAX_LENGTH + 1
        )
        self._tasks.append(asyncio.create_task(self._read_forever(), name="teeth-agent-read"))
        self.handshake = await self.request("handshake", {"version": VERSION, "id": self.teeth_id})
        if "result" in self.handshake:
            self._tasks.append(asyncio.create_task(self._ping_forever(), name="teeth-agent-ping"))
        return self.handshake

    async def send(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Sends a command and returns the server's response line."""
        msg_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self.send(line({"version": "v1", "params": params, "id": msg_id, "method": method}))
        async with asyncio.timeout(10):  # not wait_for: on 3.11 it may swallow a cancel
            return await future

    async def log(self, message: str, time: float, **extra: Any) -> dict[str, Any]:
        return await self.request("log", {"message": message, "time": time, **extra})

    async def task_status(self, task_id: str, state: str, **fields: Any) -> dict[str, Any]:
        return await self.request("task_status", {"task_id": task_id, "state": state, **fields})

    async def next_command(self, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.commands.get()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    # -- what the original did by itself ------------------------------------------------

    async def _ping_forever(self) -> None:
        while True:
            response = await self.request("ping", {})
            if "result" in response:
                self.pings += 1
            await asyncio.sleep(self.ping_interval)

    async def _read_forever(self) -> None:
        assert self._reader is not None
        try:
            while raw := await self._reader.readline():
                message = json.loads(raw)
                if "fatal_error" in message:
                    self.fatal = message["fatal_error"]
                    return
                if "method" in message:
                    await self._answer(message)
                elif (future := self._pending.pop(message["id"], None)) is not None:
                    future.set_result(message)
        except OSError:
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("closed"))
                    future.exception()

    async def _answer(self, command: dict[str, Any]) -> None:
        method, params = command["method"], command["params"]
        reply: dict[str, Any] = {"version": "v1", "id": command["id"]}
        if method == "status":
            reply["result"] = {"uptime": 0.0034, "version": VERSION, "mode": "STANDBY"}
        elif method in self.accepts:
            missing = [p for p in REQUIRED.get(method, ("task_id",)) if p not in params]
            if missing:
                reply["error"] = f'missing parameter "{missing[0]}" in "{method}" command'
            else:
                reply["result"] = None
        else:
            await self.send(line({"fatal_error": "unknown message method"}))
            assert self._writer is not None
            self._writer.close()
            return
        await self.send(line(reply))
        await self.commands.put(command)
