"""uvicorn's websocket protocol (websockets' sans-I/O implementation), lighter per socket.

A server holding thousands of agent sockets pays for every object uvicorn keeps per
connection for hours. Measured with `tracemalloc`, the stock protocol keeps, besides what
the socket needs, the handshake's request and response (their header maps, 4-5 KiB) for
the whole connection (websockets' parser, a generator as long-lived as the socket, holds
the request in a local variable), and an `asyncio.Queue` and an `asyncio.Event` (five
deques of 600+ bytes each, about 4 KiB) where a list and a flag do. This subclass changes
only those: the wire behaviour and the ASGI messages are uvicorn's.

Passed to uvicorn as `ws=` (`app.UVICORN_OPTIONS`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.http11 import Request


class Inbox:
    """What `asyncio.Queue` does for uvicorn's protocol (`put_nowait`, `get`, `empty`)
    for its single reader, in a list and at most one future."""

    __slots__ = ("_getter", "_items")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._getter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        if self._getter is not None and not self._getter.done():
            self._getter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        return self._items.pop(0)


class Flag:
    """What `asyncio.Event` does for uvicorn's protocol (`set`, `clear`, `wait`): a
    future only while someone waits for the flag to be set."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's protocol with a lighter queue and flag, which forgets the handshake once
    it is answered."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue: Any = Inbox()
        self.writable: Any = Flag()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The scope has its own copy of the headers, and the answer is computed: nothing
        # reads the request again, but websockets' parser keeps it, so empty it.
        event.headers.clear()
        del self.request

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if self.handshake_complete and hasattr(self, "response"):
            # Only the answer to the handshake reads it (uvicorn's `send` for
            # `websocket.accept`), and once the handshake is complete that never runs again.
            del self.response
