"""The lighter websocket protocol (api/ws_protocol.py) behaves as uvicorn's on real
sockets, and forgets the handshake once it is answered."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from taskfleet.api.ws_protocol import Flag, Inbox, LeanWebSocketProtocol

Seen = dict[str, Any]


def _echo_app(seen: Seen) -> Any:
    """Echoes text frames until the client closes; refuses /deny with a 403 body."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/deny":
            await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"no"})
            return
        await send({"type": "websocket.accept"})
        protocol = send.__self__
        seen["protocol"] = protocol
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
        seen["closed"] = message

    return app


@contextlib.asynccontextmanager
async def _serve(seen: Seen) -> AsyncIterator[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            _echo_app(seen),
            lifespan="off",
            log_config=None,
            ws=LeanWebSocketProtocol,
            ws_per_message_deflate=False,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            yield f"ws://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await serving


async def test_echo_and_the_handshake_is_forgotten() -> None:
    seen: Seen = {}
    async with _serve(seen) as base, connect(base + "/x", compression=None) as ws:
        for text in ("one", "two" * 1000):
            await ws.send(text)
            assert await ws.recv() == text
        protocol = seen["protocol"]
        assert isinstance(protocol, LeanWebSocketProtocol)
        assert not hasattr(protocol, "request")
        assert not hasattr(protocol, "response")
        assert protocol.scope["headers"]  # the app still has its own copy
        await ws.close()
        for _ in range(500):
            if "closed" in seen:
                break
            await asyncio.sleep(0.01)
        assert seen["closed"]["type"] == "websocket.disconnect"


async def test_a_denial_response_still_reaches_the_client() -> None:
    async with _serve({}) as base:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(base + "/deny"):
                pass
        assert refused.value.response.status_code == 403
        assert refused.value.response.body == b"no"


async def test_inbox_hands_items_over_in_order() -> None:
    inbox = Inbox()
    assert inbox.empty()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait({"type": "websocket.connect"})
    inbox.put_nowait({"type": "websocket.receive", "text": "a"})
    assert await getter == {"type": "websocket.connect"}
    assert not inbox.empty()
    assert await inbox.get() == {"type": "websocket.receive", "text": "a"}
    assert inbox.empty()


async def test_flag_blocks_only_while_cleared() -> None:
    flag = Flag()
    await asyncio.wait_for(flag.wait(), 1)  # set at first: no wait
    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert flag.is_set()
