"""The loops of one connection (read, push, heartbeat…), run as a unit: on the server's
agent sockets and in the agent's transports alike."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs a program's main coroutine on uvloop where it is installed (it comes with the
    server's uvicorn[standard]), as uvicorn runs the server: its event loop and sockets
    are written in C, and an agent's work is mostly messages."""
    try:
        import uvloop
    except ImportError:  # a platform uvloop does not support
        return asyncio.run(main)
    return uvloop.run(main)


async def until_first_ends(loops: Mapping[str, Coroutine[Any, Any, None]]) -> None:
    """Runs named loops until any of them ends, then cancels the others and waits for
    them, so that no loop outlives its connection. The exception that ended the first
    loop, if any, is raised."""
    running = [asyncio.create_task(loop, name=name) for name, loop in loops.items()]
    try:
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
