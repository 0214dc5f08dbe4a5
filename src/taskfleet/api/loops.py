"""The loops of one connection (read, push, heartbeat…), run as a unit."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any


async def until_first_ends(loops: Mapping[str, Coroutine[Any, Any, None]]) -> None:
    """Runs named loops until any of them ends, then cancels the others and waits for
    them, so that no loop outlives its connection."""
    running = [asyncio.create_task(loop, name=name) for name, loop in loops.items()]
    try:
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
